// Zero-copy conversions between Python buffers / numpy arrays and Buffers.
// Holders of Python objects take the GIL when they are released, from
// whatever thread drops the last reference.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include "tq/types.h"

namespace tqds::py_binding {

namespace py = pybind11;

// A view (no copy) of a C-contiguous Python buffer (numpy array, bytes,
// memoryview), or of a contiguous CPU torch.Tensor's memory (found through
// data_ptr(), so any dtype and requires_grad are fine, and no torch call
// gives up the GIL), that keeps the object alive. Raises DTypeError for
// anything else (a non-contiguous array or tensor, a device tensor).
Buffer BufferFromPython(py::handle obj);
// A str's UTF-8 bytes in place (kept alive by the Buffer; for a non-ASCII
// str, Python's cached UTF-8 form). Invalid for a str with lone surrogates.
Result<Buffer> Utf8FromPython(py::handle str);

// A numpy array over `data` (no copy) that keeps the Buffer alive. bfloat16
// comes back as int16 (the Python layer views it as torch.bfloat16).
// read_only: for views of shared memory that no one may write.
py::array ArrayFromBuffer(const Buffer& data, tq::DType dtype, const tq::Shape& shape, bool read_only);

// A shape as Python's tuple of ints (what torch and numpy give).
py::tuple ShapeTuple(const tq::Shape& shape);

// A memoryview over `data` (no copy) that keeps the Buffer alive.
py::object MemoryViewFromBuffer(const Buffer& data);

}  // namespace tqds::py_binding
