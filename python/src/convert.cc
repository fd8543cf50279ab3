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

// A reference to a Python object (a tensor whose memory a Buffer borrows).
struct PyObjectHolder {
  py::object obj;
  ~PyObjectHolder() {
    if (!Py_IsInitialized()) {  // interpreter gone: leak rather than crash
      obj.release();
      return;
    }
    py::gil_scoped_acquire gil;
    obj = py::object();
  }
};

std::string TypeName(py::handle obj) { return py::str(py::type::of(obj).attr("__name__")); }

// A torch.Tensor (duck-typed: torch is not linked): its bytes, in place.
Buffer BufferFromTensor(py::handle t) {
  bool contiguous = t.attr("is_contiguous")().cast<bool>();
  if (!contiguous || t.attr("device").attr("type").cast<std::string>() != "cpu") {
    Throw(Status::TypeError("expected a contiguous CPU tensor, got one on ",
                            std::string(py::str(t.attr("device"))),
                            contiguous ? "" : " (not contiguous)"));
  }
  size_t size = t.attr("numel")().cast<size_t>() * t.attr("element_size")().cast<size_t>();
  auto ptr = t.attr("data_ptr")().cast<uintptr_t>();
  static const uint64_t kEmpty = 0;  // an empty tensor may have no memory at all
  const void* data = ptr ? reinterpret_cast<const void*>(ptr) : static_cast<const void*>(&kEmpty);
  auto holder = std::make_shared<PyObjectHolder>();
  holder->obj = py::reinterpret_borrow<py::object>(t);
  return Buffer::Wrap(data, size, std::shared_ptr<const void>(holder, holder.get()));
}

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
  bool tensor = py::hasattr(obj, "data_ptr") && py::hasattr(obj, "element_size");
  if (!PyObject_CheckBuffer(obj.ptr()) && tensor) {
    return BufferFromTensor(obj);
  }
  auto holder = std::make_shared<PyBufferHolder>();
  if (PyObject_GetBuffer(obj.ptr(), &holder->view, PyBUF_C_CONTIGUOUS) != 0) {
    PyErr_Clear();
    Throw(Status::TypeError("expected a C-contiguous buffer (numpy array, bytes, CPU tensor), got ",
                            TypeName(obj)));
  }
  const void* data = holder->view.buf;
  size_t size = static_cast<size_t>(holder->view.len);
  return Buffer::Wrap(data, size, std::shared_ptr<const void>(holder, holder.get()));
}

Result<Buffer> Utf8FromPython(py::handle str) {
  Py_ssize_t n = 0;
  const char* utf8 = PyUnicode_AsUTF8AndSize(str.ptr(), &n);
  if (utf8 == nullptr) {
    py::error_already_set why;
    return Status::Invalid("the string cannot be encoded as UTF-8 (", why.what(), ")");
  }
  auto holder = std::make_shared<PyObjectHolder>();
  holder->obj = py::reinterpret_borrow<py::object>(str);
  return Buffer::Wrap(utf8, static_cast<size_t>(n), std::shared_ptr<const void>(holder, holder.get()));
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

py::tuple ShapeTuple(const tq::Shape& shape) {
  py::tuple t(shape.size());
  for (size_t i = 0; i < shape.size(); ++i) t[i] = py::int_(shape[i]);
  return t;
}

py::object MemoryViewFromBuffer(const Buffer& data) {
  py::array arr = ArrayFromBuffer(data, tq::DType::kUInt8, {static_cast<int64_t>(data.size())}, true);
  return py::memoryview(arr);
}

}  // namespace tqds::py_binding
