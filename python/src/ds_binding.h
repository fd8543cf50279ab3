// Pieces of the datasystem bindings shared by datasystem.cc (module
// `datasystem`) and yr_datasystem.cc (module `yr.datasystem`): argument
// casters, the value reader, the client wrapper and the buffer objects.
#pragma once

#include <pybind11/stl.h>

#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "ds/kv_client.h"
#include "errors.h"

namespace tqds::py_binding {

// Arguments converted without pybind11's generic sequence casters (one
// handle, refcount and caster per item): a list or tuple of str/bytes keys,
// and of int sizes. Anything else goes through the generic casters.
//
// The key strings are assigned into strings kept from the previous call on
// this thread (when it is not inside another call), so that a batch of keys
// that do not fit std::string's inline buffer costs no allocation per key.
struct KeyList {
  KeyList() = default;
  KeyList(KeyList&& o) noexcept : v(std::move(o.v)), pooled(o.pooled) { o.pooled = false; }
  KeyList& operator=(KeyList&& o) noexcept {
    if (this != &o) {
      GiveBack();
      v = std::move(o.v);
      pooled = o.pooled;
      o.pooled = false;
    }
    return *this;
  }
  ~KeyList() { GiveBack(); }

  // Takes the thread's kept strings when no other call on this thread holds them.
  void TakePooled() {
    if (Busy()) return;
    Busy() = true;
    pooled = true;
    v.swap(Pool());
  }

  std::vector<std::string> v;

 private:
  static constexpr size_t kKeepAtMost = 1 << 16;
  static std::vector<std::string>& Pool() {
    static thread_local std::vector<std::string> pool;
    return pool;
  }
  static bool& Busy() {
    static thread_local bool busy = false;
    return busy;
  }
  void GiveBack() {
    if (!pooled) return;
    pooled = false;
    if (v.size() <= kKeepAtMost) v.swap(Pool());
    v = {};
    Busy() = false;
  }
  bool pooled = false;
};
struct SizeList {
  std::vector<uint64_t> v;
};

// Whether `key` follows openYuanrong's key rules (1 to 255 bytes, each a
// letter, a digit or one of - _ ! @ # % ^ * ( ) + = : ;); yr_datasystem.cc.
bool YrKeyIsValid(std::string_view key);

// The keys of a yr.datasystem call: a KeyList whose keys were checked
// against openYuanrong's rules while they were copied (`valid`: all pass),
// which costs a third of a pass over the converted strings afterwards.
struct YrKeyList : KeyList {
  bool valid = false;
};

}  // namespace tqds::py_binding

namespace pybind11::detail {

// Loads a list or tuple of str/bytes keys into `out` (through the generic
// caster for any other sequence), calling each(key) on every key.
template <typename Each>
bool LoadKeyList(handle src, bool convert, tqds::py_binding::KeyList& out, Each&& each) {
  PyObject* o = src.ptr();
  if (!PyList_Check(o) && !PyTuple_Check(o)) {
    make_caster<std::vector<std::string>> generic;
    if (!generic.load(src, convert)) return false;
    out.v = cast_op<std::vector<std::string>&&>(std::move(generic));
    for (const auto& key : out.v) each(std::string_view(key));
    return true;
  }
  const Py_ssize_t n = PySequence_Fast_GET_SIZE(o);
  PyObject** items = PySequence_Fast_ITEMS(o);
  out.TakePooled();
  out.v.resize(static_cast<size_t>(n));
  for (Py_ssize_t i = 0; i < n; ++i) {
    PyObject* item = items[i];
    std::string_view bytes;
    if (PyUnicode_Check(item)) {
      Py_ssize_t len = 0;
      const char* p = PyUnicode_AsUTF8AndSize(item, &len);
      if (p == nullptr) {
        PyErr_Clear();
        return false;
      }
      bytes = std::string_view(p, static_cast<size_t>(len));
    } else if (PyBytes_Check(item)) {
      bytes = std::string_view(PyBytes_AS_STRING(item),
                               static_cast<size_t>(PyBytes_GET_SIZE(item)));
    } else {
      return false;
    }
    out.v[static_cast<size_t>(i)].assign(bytes.data(), bytes.size());
    each(bytes);
  }
  return true;
}

template <>
struct type_caster<tqds::py_binding::KeyList> {
  PYBIND11_TYPE_CASTER(tqds::py_binding::KeyList, const_name("list[str]"));
  bool load(handle src, bool convert) {
    return LoadKeyList(src, convert, value, [](std::string_view) {});
  }
};

template <>
struct type_caster<tqds::py_binding::YrKeyList> {
  PYBIND11_TYPE_CASTER(tqds::py_binding::YrKeyList, const_name("list[str]"));
  bool load(handle src, bool convert) {
    bool valid = true;
    auto check = [&](std::string_view key) { valid &= tqds::py_binding::YrKeyIsValid(key); };
    if (!LoadKeyList(src, convert, value, check)) return false;
    value.valid = valid;
    return true;
  }
};

template <>
struct type_caster<tqds::py_binding::SizeList> {
  PYBIND11_TYPE_CASTER(tqds::py_binding::SizeList, const_name("list[int]"));
  bool load(handle src, bool convert) {
    PyObject* o = src.ptr();
    if (!PyList_Check(o) && !PyTuple_Check(o)) {
      make_caster<std::vector<uint64_t>> generic;
      if (!generic.load(src, convert)) return false;
      value.v = cast_op<std::vector<uint64_t>&&>(std::move(generic));
      return true;
    }
    const Py_ssize_t n = PySequence_Fast_GET_SIZE(o);
    PyObject** items = PySequence_Fast_ITEMS(o);
    value.v.resize(static_cast<size_t>(n));
    for (Py_ssize_t i = 0; i < n; ++i) {
      if (!PyLong_CheckExact(items[i])) {  // bool, numpy ints, ...: the generic caster decides
        make_caster<std::vector<uint64_t>> generic;
        if (!generic.load(src, convert)) return false;
        value.v = cast_op<std::vector<uint64_t>&&>(std::move(generic));
        return true;
      }
      value.v[static_cast<size_t>(i)] = PyLong_AsUnsignedLongLong(items[i]);
      if (PyErr_Occurred()) {  // negative or too large
        PyErr_Clear();
        return false;
      }
    }
    return true;
  }
};

}  // namespace pybind11::detail

namespace tqds::py_binding {

std::string TypeNameOf(py::handle v);

// The bytes of a value to write, read in place: a str (its UTF-8, cached by
// Python) or a C-contiguous buffer (bytes, bytearray, memoryview, numpy
// array). Keeps the object alive and its buffer exported until destroyed.
// Create and destroy with the GIL held; bytes() may be read without it.
class ValueBytes {
 public:
  ValueBytes() = default;
  ValueBytes(const ValueBytes&) = delete;
  ValueBytes& operator=(const ValueBytes&) = delete;
  ~ValueBytes() {
    if (exported_) PyBuffer_Release(&view_);
  }

  void Acquire(py::handle v) {
    if (PyUnicode_Check(v.ptr())) {
      Py_ssize_t n = 0;
      const char* p = PyUnicode_AsUTF8AndSize(v.ptr(), &n);
      if (p == nullptr) throw py::error_already_set();
      str_ = py::reinterpret_borrow<py::object>(v);
      bytes_ = std::string_view(p, static_cast<size_t>(n));
      return;
    }
    if (!PyObject_CheckBuffer(v.ptr())) {
      Throw(Status::TypeError("a value must be bytes, str or a C-contiguous buffer (bytearray, "
                              "memoryview, numpy array), got ", TypeNameOf(v)));
    }
    if (PyObject_GetBuffer(v.ptr(), &view_, PyBUF_C_CONTIGUOUS) != 0) throw py::error_already_set();
    exported_ = true;
    bytes_ = std::string_view(static_cast<const char*>(view_.buf), static_cast<size_t>(view_.len));
  }
  std::string_view bytes() const { return bytes_; }

 private:
  py::object str_;
  Py_buffer view_{};
  bool exported_ = false;
  std::string_view bytes_;
};

// A KVClient that remembers its worker's address, so a broken connection
// surfaces as UnavailableError naming the worker.
struct PyKVClient {
  PyKVClient(const std::string& host, int port, ds::ClientOptions options = {})
      : address(host + ":" + std::to_string(port)), client(host, port, options) {}
  std::string address;
  ds::KVClient client;

  // Runs fn(client) without the GIL and raises its error (a TQDSError).
  template <typename Fn>
  auto Call(Fn&& fn) {
    return CallWithoutGil([&] { return Explain(fn(client)); });
  }

  // An I/O error as Unavailable naming the worker; other statuses as they are.
  Status Explain(Status st) const {
    if (st.ok() || !st.IsIOError()) return st;
    return Status::Unavailable("datasystem worker at ", address, " is not reachable (", st.message(), ")");
  }
  template <typename T>
  Result<T> Explain(Result<T> r) const {
    if (r.ok()) return r;
    return Explain(r.status());
  }
};

// A new datasystem.WriteBuffer object owning `b`, created with `param` (a new reference).
PyObject* NewWriteBuffer(ds::WriteBuffer b, const ds::SetParam& param);

// Read-only memoryviews of `bufs` (None for a missing key).
py::list MemoryViews(std::vector<std::optional<Buffer>>& bufs);

// The objects behind those memoryviews (None for a missing key): each
// exports the value read-only and has GetSize().
py::list SharedMemoryObjects(std::vector<std::optional<Buffer>>& bufs);

// Raises a Python exception for a failed status (Throw, or a module's own).
using RaiseFn = void (*)(const Status&);

// Reads `keys` into new bytes objects (null for a missing key); an error is
// raised by `raise` (null: Throw). GIL held.
std::vector<py::object> ReadBytes(PyKVClient& c, const std::vector<std::string>& keys,
                                  int32_t timeout_ms, RaiseFn raise = nullptr);

// Seals the WriteBuffer objects of `buffers` (any sequence) by calling
// `seal` with their buffers moved out (with the GIL held; it releases the
// GIL itself and may raise): each object is marked busy while its buffer is
// out, and gets it back, sealed or not, also when `seal` raises. An object
// whose memory is still exported is sealed through a copy made by `create`
// (see SealWriteBuffers in datasystem.cc).
using SealFn = std::function<void(std::vector<ds::WriteBuffer>&)>;
// A new pending write of one key (MCreate), raising as the module does.
using CreateFn = std::function<ds::WriteBuffer(const std::string& key, uint64_t size, const ds::SetParam&)>;
void SealWriteBuffers(py::handle buffers, const char* what, const SealFn& seal, const CreateFn& create);

// The SetParam of a set / mset / mcreate call's keyword arguments.
inline ds::SetParam Param(bool evictable, uint32_t ttl, bool if_absent) {
  ds::SetParam p;
  p.evictable = evictable;
  p.ttl_seconds = ttl;
  p.if_absent = if_absent;
  return p;
}

// Adds _tqds.YrKVClient, the core of yr.datasystem.KVClient (yr_datasystem.cc).
void InitYrDatasystem(py::module_& m);

}  // namespace tqds::py_binding
