// Python buffer <-> Buffer.
#include "convert.h"

#include "errors.h"

namespace tqds::py_binding {

namespace {
struct PyBufferHolder {
  Py_buffer view{};
  ~PyBufferHolder() {
    if (!Py_IsInitialized()) return;  // interpreter gone: leak rather than crash
    py::gil_scoped_acquire gil;
    PyBuffer_Release(&view);
  }
};

const char* NumpyTypeStr(tq::DType d) {
  switch (d) {
    case tq::DType::kBool: return "|b1";
    case tq::DType::kUInt8: return "|u1";
    case tq::DType::kInt8: return "|i1";
    case tq::DType::kInt16: return "<i2";
    case tq::DType::kInt32: return "<i4";
    case tq::DType::kInt64: return "<i8";
    case tq::DType::kFloat16: return "<f2";
    case tq::DType::kBFloat16: return "<i2";
    case tq::DType::kFloat32: return "<f4";
    case tq::DType::kFloat64: return "<f8";
  }
  return "|u1";
}

// Keeps a Buffer alive for a capsule's lifetime (no Python object inside, so
// no GIL is needed to free it).
py::capsule Keep(const Buffer& data) {
  auto* keep = new Buffer(data);
  return py::capsule(keep, [](void* p) { delete static_cast<Buffer*>(p); });
}
}  // namespace

Buffer BufferFromPython(py::handle obj) {
  auto holder = std::make_shared<PyBufferHolder>();
  if (PyObject_GetBuffer(obj.ptr(), &holder->view, PyBUF_C_CONTIGUOUS) != 0) {
    PyErr_Clear();
    Throw(Status::TypeError("expected a C-contiguous buffer (numpy array, bytes, CPU tensor), got ",
                            std::string(py::str(py::type::of(obj).attr("__name__")))));
  }
  const void* data = holder->view.buf;
  size_t size = static_cast<size_t>(holder->view.len);
  return Buffer::Wrap(data, size, std::shared_ptr<const void>(holder, holder.get()));
}

py::array ArrayFromBuffer(const Buffer& data, tq::DType dtype, const tq::Shape& shape, bool read_only) {
  py::dtype dt(std::string(NumpyTypeStr(dtype)));
  std::vector<py::ssize_t> dims(shape.begin(), shape.end());
  // numpy needs a non-null pointer even for empty arrays.
  static const uint64_t kEmpty = 0;
  const void* ptr = data.size() ? static_cast<const void*>(data.data()) : static_cast<const void*>(&kEmpty);
  py::array arr(dt, dims, ptr, Keep(data));
  if (read_only) {
    py::detail::array_proxy(arr.ptr())->flags &= ~py::detail::npy_api::NPY_ARRAY_WRITEABLE_;
  }
  return arr;
}

py::object MemoryViewFromBuffer(const Buffer& data) {
  py::array arr = ArrayFromBuffer(data, tq::DType::kUInt8, {static_cast<int64_t>(data.size())}, true);
  return py::memoryview(arr);
}

}  // namespace tqds::py_binding
