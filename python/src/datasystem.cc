// Bindings of the datasystem client: datasystem.KVClient. Blocking calls
// release the GIL; get_buffers returns read-only memoryviews of shared memory.
//
// Speed: a value crosses this layer with at most the one copy the C++ client
// makes. set/mset read Python buffers in place; get/mget copy each value once,
// from the worker's reply or its shared memory, straight into a new bytes
// object (large copies without the GIL); a memoryview of get_buffers wraps a
// small exporter object, and a WriteBuffer exports its own memory (no numpy
// array per view).
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <optional>

#include "convert.h"
#include "ds_binding.h"

namespace tqds::py_binding {

// Copies of at least this many bytes (in one call) run without the GIL.
constexpr uint64_t kCopyWithoutGil = 1 << 20;

std::string TypeNameOf(py::handle v) { return Py_TYPE(v.ptr())->tp_name; }

// Pauses Python's cyclic garbage collector while a call makes many
// container objects that cannot form cycles (a memoryview and its managed
// buffer per key): with it running, 1000 views cost two or three young
// collections, each walking every view made so far. Run with the GIL held,
// calling no Python code.
class GcPause {
 public:
  GcPause() : was_enabled_(PyGC_Disable() != 0) {}
  ~GcPause() {
    if (was_enabled_) PyGC_Enable();
  }
  GcPause(const GcPause&) = delete;
  GcPause& operator=(const GcPause&) = delete;

 private:
  const bool was_enabled_;
};

// ------------------------------------------------------------ memoryviews

// The object behind one memoryview of get_buffers: a Buffer, whose holder
// keeps the call's pins in the worker (ds::KVClient ends them when the last
// Buffer of the call goes). Cheaper to make than a numpy array per view.
struct ViewObject {
  PyObject_HEAD
  Buffer buffer;  // constructed in place
};

int ViewGetBuffer(PyObject* self, Py_buffer* view, int flags) {
  const Buffer& b = reinterpret_cast<ViewObject*>(self)->buffer;
  static const uint8_t kEmpty = 0;  // a buffer needs a pointer even when empty
  void* data = const_cast<uint8_t*>(b.size() > 0 ? b.data() : &kEmpty);
  return PyBuffer_FillInfo(view, self, data, static_cast<Py_ssize_t>(b.size()), /*readonly=*/1, flags);
}

void ViewDealloc(PyObject* self) {
  Buffer& b = reinterpret_cast<ViewObject*>(self)->buffer;
  if (b.holder() && b.holder().use_count() == 1) {
    // The last view of its call: ending the pins sends a message on the
    // client's connection, which may be busy; wait for it without the GIL.
    Buffer last = std::move(b);
    Py_BEGIN_ALLOW_THREADS
    last = Buffer();
    Py_END_ALLOW_THREADS
  }
  b.~Buffer();
  PyTypeObject* type = Py_TYPE(self);
  type->tp_free(self);
  Py_DECREF(type);  // a heap type: every instance holds a reference
}

PyTypeObject* g_view_type = nullptr;  // made at import, kept for the process

PyObject* ViewGetSize(PyObject* self, PyObject*) {
  return PyLong_FromSize_t(reinterpret_cast<ViewObject*>(self)->buffer.size());
}

PyTypeObject* MakeViewType() {
  static PyMethodDef methods[] = {
      {"GetSize", ViewGetSize, METH_NOARGS, "GetSize(self) -> int\n\nSize of the value in bytes."},
      {nullptr, nullptr, 0, nullptr}};
  static PyType_Slot slots[] = {
      {Py_tp_dealloc, reinterpret_cast<void*>(ViewDealloc)},
      {Py_bf_getbuffer, reinterpret_cast<void*>(ViewGetBuffer)},
      {Py_tp_methods, methods},
      {Py_tp_doc, const_cast<char*>("Read-only shared memory of one value, behind a get_buffers memoryview.")},
      {0, nullptr}};
  static PyType_Spec spec = {"datasystem.SharedMemoryView", sizeof(ViewObject), 0,
                             Py_TPFLAGS_DEFAULT | Py_TPFLAGS_DISALLOW_INSTANTIATION, slots};
  PyObject* t = PyType_FromSpec(&spec);
  if (t == nullptr) throw py::error_already_set();
  return reinterpret_cast<PyTypeObject*>(t);
}

// ------------------------------------------------------ get_buffers' views

// The one object behind all memoryviews of one get_buffers call: it owns the
// call's Buffers and exports, once, a read-only span from the lowest value
// to the end of the highest; each key's memoryview shares that export
// (one managed buffer for the call) and is narrowed to its value, so a key
// costs one Python object instead of three. The pins of a call end when
// its last Buffer goes, so holding the call's Buffers together ends them
// when they ended before: with the call's last view.
//
// Nothing reads the span itself: it may cross memory between the values
// that is not mapped, so a second export (memoryview(view.obj)) is refused.
struct CallViewsObject {
  PyObject_HEAD
  std::vector<std::optional<Buffer>> buffers;  // the call's result, constructed in place
  const uint8_t* lo;
  size_t span;
  bool exported;
};

PyTypeObject* g_call_views_type = nullptr;  // made at import, kept for the process

int CallViewsGetBuffer(PyObject* self, Py_buffer* view, int flags) {
  auto* o = reinterpret_cast<CallViewsObject*>(self);
  if (o->exported) {
    view->obj = nullptr;
    PyErr_SetString(PyExc_BufferError,
                    "the values of a get_buffers call are read through the memoryviews it returned");
    return -1;
  }
  o->exported = true;
  return PyBuffer_FillInfo(view, self, const_cast<uint8_t*>(o->lo), static_cast<Py_ssize_t>(o->span),
                           /*readonly=*/1, flags);
}

void CallViewsDealloc(PyObject* self) {
  auto* o = reinterpret_cast<CallViewsObject*>(self);
  {
    // Ending the pins sends a message on the client's connection, which may
    // be busy: wait for it without the GIL.
    std::vector<std::optional<Buffer>> last = std::move(o->buffers);
    Py_BEGIN_ALLOW_THREADS
    last.clear();
    Py_END_ALLOW_THREADS
  }
  o->buffers.~vector();
  PyTypeObject* type = Py_TYPE(self);
  type->tp_free(self);
  Py_DECREF(type);  // a heap type: every instance holds a reference
}

PyTypeObject* MakeCallViewsType() {
  static PyType_Slot slots[] = {
      {Py_tp_dealloc, reinterpret_cast<void*>(CallViewsDealloc)},
      {Py_bf_getbuffer, reinterpret_cast<void*>(CallViewsGetBuffer)},
      {Py_tp_doc, const_cast<char*>("The shared memory behind the memoryviews of one get_buffers call.")},
      {0, nullptr}};
  static PyType_Spec spec = {"datasystem.SharedMemoryViews", sizeof(CallViewsObject), 0,
                             Py_TPFLAGS_DEFAULT | Py_TPFLAGS_DISALLOW_INSTANTIATION, slots};
  PyObject* t = PyType_FromSpec(&spec);
  if (t == nullptr) throw py::error_already_set();
  return reinterpret_cast<PyTypeObject*>(t);
}

py::list MemoryViews(std::vector<std::optional<Buffer>>& bufs) {
  py::list out(bufs.size());
  auto* calls = reinterpret_cast<CallViewsObject*>(g_call_views_type->tp_alloc(g_call_views_type, 0));
  if (calls == nullptr) throw py::error_already_set();
  new (&calls->buffers) std::vector<std::optional<Buffer>>();
  py::object owner = py::reinterpret_steal<py::object>(reinterpret_cast<PyObject*>(calls));
  static const uint8_t kEmpty = 0;  // an export needs a pointer even when every value is empty
  auto address = [](const Buffer& b) {
    return reinterpret_cast<uintptr_t>(b.size() > 0 ? b.data() : &kEmpty);
  };
  uintptr_t lo = UINTPTR_MAX, hi = 0;  // the values lie in [lo, hi)
  bool any = false;
  for (const auto& b : bufs) {
    if (!b) continue;
    any = true;
    lo = std::min(lo, address(*b));
    hi = std::max(hi, address(*b) + b->size());
  }
  calls->lo = any ? reinterpret_cast<const uint8_t*>(lo) : nullptr;
  calls->span = any ? hi - lo : 0;
  calls->exported = false;
  py::object base;
  if (any) {
    base = py::reinterpret_steal<py::object>(PyMemoryView_FromObject(owner.ptr()));
    if (!base) throw py::error_already_set();
  }
  calls->buffers = std::move(bufs);
  GcPause no_gc;  // a container object per key
  for (size_t i = 0; i < calls->buffers.size(); ++i) {
    PyObject* v = Py_None;
    if (const auto& b = calls->buffers[i]) {
      // A view of the call's export (its managed buffer, no new export),
      // narrowed to this value as a slice of it would be: 1-D, bytes,
      // contiguous, read-only (the flags the export gave it).
      v = PyMemoryView_FromObject(base.ptr());
      if (v == nullptr) throw py::error_already_set();
      Py_buffer& view = reinterpret_cast<PyMemoryViewObject*>(v)->view;
      view.buf = reinterpret_cast<void*>(address(*b));
      view.len = static_cast<Py_ssize_t>(b->size());
      view.shape[0] = view.len;
    } else {
      Py_INCREF(v);
    }
    PyList_SET_ITEM(out.ptr(), static_cast<Py_ssize_t>(i), v);
  }
  return out;
}

py::list SharedMemoryObjects(std::vector<std::optional<Buffer>>& bufs) {
  py::list out(bufs.size());
  for (size_t i = 0; i < bufs.size(); ++i) {
    PyObject* v = Py_None;
    if (bufs[i]) {
      v = g_view_type->tp_alloc(g_view_type, 0);
      if (v == nullptr) throw py::error_already_set();
      new (&reinterpret_cast<ViewObject*>(v)->buffer) Buffer(std::move(*bufs[i]));
    } else {
      Py_INCREF(v);
    }
    PyList_SET_ITEM(out.ptr(), static_cast<Py_ssize_t>(i), v);
  }
  return out;
}

// ------------------------------------------------------------- WriteBuffer

// datasystem.WriteBuffer: a plain CPython type rather than a pybind11 class,
// because mcreate makes one per key and a fill loop calls write() once per
// key: with 1000 small keys, pybind11's instance registry and argument
// dispatch cost more than the C++ MCreate + fill + MSetBuffer itself.
struct WriteBufferObject {
  PyObject_HEAD
  ds::WriteBuffer buffer;  // constructed in place
  int writers;             // write() calls copying without the GIL and mset_buffer calls in flight (each refuses the other)
  Py_ssize_t exports;      // live buffer exports (memoryviews, numpy arrays, ...): sealing seals a copy while > 0
  ds::SetParam param;      // what mcreate asked for, for a sealed copy
  bool sealed_copy;        // a copy of `buffer` was sealed (its memory was exported): sealed for the caller
};

PyTypeObject* g_write_buffer_type = nullptr;

// Runs fn() (returning a new reference) and turns C++ exceptions into Python ones.
template <typename Fn>
PyObject* Guard(Fn&& fn) noexcept {
  try {
    return fn();
  } catch (py::error_already_set& e) {
    e.restore();
  } catch (const std::exception& e) {
    PyErr_SetString(PyExc_RuntimeError, e.what());
  }
  return nullptr;
}

ds::WriteBuffer& BufferOf(PyObject* self) { return reinterpret_cast<WriteBufferObject*>(self)->buffer; }
// Sealed as the caller sees it: its own memory, or a copy of it.
bool SealedOf(PyObject* self) {
  auto* o = reinterpret_cast<WriteBufferObject*>(self);
  return o->buffer.sealed() || o->sealed_copy;
}

void WriteBufferDealloc(PyObject* self) {
  ds::WriteBuffer& b = BufferOf(self);
  if (!b.sealed() && b.data() != nullptr) {
    // Unsealed: destroying it sends an abort on the client's connection,
    // which may be busy; wait for it without the GIL.
    ds::WriteBuffer last = std::move(b);
    Py_BEGIN_ALLOW_THREADS
    last = ds::WriteBuffer();
    Py_END_ALLOW_THREADS
  }
  b.~WriteBuffer();
  PyTypeObject* type = Py_TYPE(self);
  type->tp_free(self);
  Py_DECREF(type);
}

PyObject* WriteBufferKey(PyObject* self, void*) {
  const std::string& k = BufferOf(self).key();
  return PyUnicode_DecodeUTF8(k.data(), static_cast<Py_ssize_t>(k.size()), "surrogateescape");
}
PyObject* WriteBufferSize(PyObject* self, void*) { return PyLong_FromSize_t(BufferOf(self).size()); }
PyObject* WriteBufferGetSize(PyObject* self, PyObject*) { return PyLong_FromSize_t(BufferOf(self).size()); }
PyObject* WriteBufferSealed(PyObject* self, void*) { return PyBool_FromLong(SealedOf(self)); }

// The buffer protocol: the writable shared memory, until sealed.
int WriteBufferGetBuffer(PyObject* self, Py_buffer* view, int flags) {
  ds::WriteBuffer& w = BufferOf(self);
  if (SealedOf(self) || w.data() == nullptr) {
    view->obj = nullptr;
    try {
      Throw(Status::Invalid("buffer of '", w.key(), "' is sealed"));
    } catch (py::error_already_set& e) {
      e.restore();
    }
    return -1;
  }
  if (PyBuffer_FillInfo(view, self, w.data(), static_cast<Py_ssize_t>(w.size()), /*readonly=*/0, flags) != 0) {
    return -1;
  }
  ++reinterpret_cast<WriteBufferObject*>(self)->exports;
  return 0;
}

// Counts exports down. A sealed value must be immutable, so sealing seals a
// copy while any export lives (see SealWriteBuffers).
void WriteBufferReleaseBuffer(PyObject* self, Py_buffer* /*view*/) {
  --reinterpret_cast<WriteBufferObject*>(self)->exports;
}

PyObject* WriteBufferMemoryView(PyObject* self, PyObject*) { return PyMemoryView_FromObject(self); }

// ImmutableData(with_latch=False, timeout_sec=60): a read-only memoryview.
// The arguments are accepted for openYuanrong's signature; a created value
// has one writer and no latch to take.
PyObject* WriteBufferImmutableData(PyObject* self, PyObject* const* /*args*/, Py_ssize_t nargs,
                                   PyObject* kwnames) {
  return Guard([&]() -> PyObject* {
    const Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    if (nargs + nkw > 2) Throw(Status::TypeError("ImmutableData() takes at most 2 arguments"));
    for (Py_ssize_t i = 0; i < nkw; ++i) {
      PyObject* name = PyTuple_GET_ITEM(kwnames, i);
      if (PyUnicode_CompareWithASCIIString(name, "with_latch") != 0 &&
          PyUnicode_CompareWithASCIIString(name, "timeout_sec") != 0) {
        Throw(Status::TypeError("ImmutableData() got an unexpected keyword argument '",
                                PyUnicode_AsUTF8(name), "'"));
      }
    }
    py::object mv = py::reinterpret_steal<py::object>(PyMemoryView_FromObject(self));
    if (!mv) throw py::error_already_set();
    return mv.attr("toreadonly")().release().ptr();
  });
}

// write(data, offset=0)
PyObject* WriteBufferWrite(PyObject* self, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
  return Guard([&]() -> PyObject* {
    PyObject* data = nargs > 0 ? args[0] : nullptr;
    PyObject* offset_obj = nargs > 1 ? args[1] : nullptr;
    if (nargs > 2) Throw(Status::TypeError("write() takes at most 2 arguments (", nargs, " given)"));
    const Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    for (Py_ssize_t i = 0; i < nkw; ++i) {
      PyObject* name = PyTuple_GET_ITEM(kwnames, i);
      PyObject** slot = nullptr;
      if (PyUnicode_CompareWithASCIIString(name, "data") == 0) {
        slot = &data;
      } else if (PyUnicode_CompareWithASCIIString(name, "offset") == 0) {
        slot = &offset_obj;
      } else {
        Throw(Status::TypeError("write() got an unexpected keyword argument '", PyUnicode_AsUTF8(name), "'"));
      }
      if (*slot != nullptr) Throw(Status::TypeError("write() got multiple values for argument '",
                                                    PyUnicode_AsUTF8(name), "'"));
      *slot = args[nargs + i];
    }
    if (data == nullptr) Throw(Status::TypeError("write() missing required argument 'data'"));
    size_t offset = 0;
    if (offset_obj != nullptr) {
      offset = PyLong_AsSize_t(offset_obj);
      if (offset == static_cast<size_t>(-1) && PyErr_Occurred()) throw py::error_already_set();
    }
    ds::WriteBuffer& w = BufferOf(self);
    ValueBytes value;
    value.Acquire(data);
    auto v = value.bytes();
    const bool sealed = SealedOf(self);
    if (offset > w.size() || v.size() > w.size() - offset || w.data() == nullptr || sealed) {
      Throw(Status::Invalid("write of ", v.size(), " bytes at offset ", offset, " exceeds the ", w.size(),
                            "-byte buffer of '", w.key(), "'", sealed ? " (sealed)" : ""));
    }
    if (v.size() >= kCopyWithoutGil) {
      int& writers = reinterpret_cast<WriteBufferObject*>(self)->writers;
      ++writers;
      Py_BEGIN_ALLOW_THREADS
      std::memmove(w.data() + offset, v.data(), v.size());  // the source may be this very buffer
      Py_END_ALLOW_THREADS
      --writers;
    } else if (!v.empty()) {
      std::memmove(w.data() + offset, v.data(), v.size());
    }
    Py_RETURN_NONE;
  });
}

PyTypeObject* MakeWriteBufferType() {
  static PyGetSetDef getset[] = {
      {"key", WriteBufferKey, nullptr, "The key.", nullptr},
      {"size", WriteBufferSize, nullptr, "Size in bytes.", nullptr},
      {"sealed", WriteBufferSealed, nullptr, "Sealed (or refused) by mset_buffer.", nullptr},
      {nullptr, nullptr, nullptr, nullptr, nullptr}};
  static PyMethodDef methods[] = {
      {"memoryview", WriteBufferMemoryView, METH_NOARGS,
       "memoryview(self) -> memoryview\n\nA writable memoryview of the shared memory. mset_buffer seals a "
       "copy while it, or any other export of this buffer, is alive: later writes through it never reach "
       "the stored value."},
      {"write", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(WriteBufferWrite)),
       METH_FASTCALL | METH_KEYWORDS,
       "write(self, data, offset=0)\n\nCopies data (bytes, str or a C-contiguous buffer) to offset."},
      // openYuanrong's names (yr.datasystem): the same memory.
      {"MutableData", WriteBufferMemoryView, METH_NOARGS,
       "MutableData(self) -> memoryview\n\nA writable memoryview of the shared memory. mset_buffer seals a "
       "copy while it, or any other export of this buffer, is alive: later writes through it never reach "
       "the stored value."},
      {"ImmutableData",
       reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(WriteBufferImmutableData)),
       METH_FASTCALL | METH_KEYWORDS,
       "ImmutableData(self, with_latch=False, timeout_sec=60) -> memoryview\n\n"
       "A read-only memoryview of the shared memory (valid until sealed)."},
      {"GetSize", WriteBufferGetSize, METH_NOARGS, "GetSize(self) -> int\n\nSize in bytes."},
      {nullptr, nullptr, 0, nullptr}};
  static PyType_Slot slots[] = {
      {Py_tp_dealloc, reinterpret_cast<void*>(WriteBufferDealloc)},
      {Py_bf_getbuffer, reinterpret_cast<void*>(WriteBufferGetBuffer)},
      {Py_bf_releasebuffer, reinterpret_cast<void*>(WriteBufferReleaseBuffer)},
      {Py_tp_getset, getset},
      {Py_tp_methods, methods},
      {Py_tp_doc, const_cast<char*>("Writable shared memory of one created key (from KVClient.mcreate).")},
      {0, nullptr}};
  static PyType_Spec spec = {"datasystem.WriteBuffer", sizeof(WriteBufferObject), 0,
                             Py_TPFLAGS_DEFAULT | Py_TPFLAGS_DISALLOW_INSTANTIATION,
                             slots};
  PyObject* t = PyType_FromSpec(&spec);
  if (t == nullptr) throw py::error_already_set();
  return reinterpret_cast<PyTypeObject*>(t);
}

// A new WriteBuffer object owning `b`, created with `param`.
PyObject* NewWriteBuffer(ds::WriteBuffer b, const ds::SetParam& param) {
  PyObject* obj = g_write_buffer_type->tp_alloc(g_write_buffer_type, 0);  // zeroed
  if (obj == nullptr) throw py::error_already_set();
  new (&BufferOf(obj)) ds::WriteBuffer(std::move(b));
  reinterpret_cast<WriteBufferObject*>(obj)->param = param;
  return obj;
}

// ------------------------------------------------------------------ client

// Reads `keys` into new bytes objects (null for a missing key): each value is
// copied once, from the worker's reply or its shared memory, into a bytes
// object made for it; a read of kCopyWithoutGil bytes or more copies without
// the GIL. Called with the GIL held.
std::vector<py::object> ReadBytes(PyKVClient& c, const std::vector<std::string>& keys,
                                  int32_t timeout_ms, RaiseFn raise) {
  std::vector<py::object> out;  // assigned and destroyed with the GIL held
  std::optional<py::error_already_set> py_error;
  auto visit = [&](const std::vector<std::optional<std::string_view>>& values) -> Status {
    uint64_t total = 0;
    for (const auto& v : values) total += v ? v->size() : 0;
    const bool copy_later = total >= kCopyWithoutGil;
    try {
      py::gil_scoped_acquire gil;
      out.resize(values.size());
      for (size_t i = 0; i < values.size(); ++i) {
        if (!values[i]) continue;
        // Large values: allocated here, filled below without the GIL (no one
        // else holds a reference to them yet).
        PyObject* b = PyBytes_FromStringAndSize(copy_later ? nullptr : values[i]->data(),
                                                static_cast<Py_ssize_t>(values[i]->size()));
        if (b == nullptr) throw py::error_already_set();
        out[i] = py::reinterpret_steal<py::object>(b);
      }
    } catch (py::error_already_set& e) {
      py_error.emplace(std::move(e));
      return Status::Internal("Python error");  // replaced by py_error below
    } catch (const std::exception& e) {
      return Status::Internal("reading into bytes: ", e.what());
    }
    if (copy_later) {
      for (size_t i = 0; i < values.size(); ++i) {
        if (values[i] && !values[i]->empty()) {
          std::memcpy(PyBytes_AS_STRING(out[i].ptr()), values[i]->data(), values[i]->size());
        }
      }
    }
    return Status::OK();
  };
  Status st;
  {
    py::gil_scoped_release nogil;
    st = c.Explain(c.client.MGetVisit(keys, timeout_ms, visit));
  }
  if (py_error) throw std::move(*py_error);
  if (!st.ok()) (raise != nullptr ? raise : &Throw)(st);
  return out;
}

void SealWriteBuffers(py::handle buffers, const char* what, const SealFn& seal, const CreateFn& create) {
  // A list of our own: the caller's sequence may change while the GIL is
  // released, and the objects must stay alive until their buffers are back.
  py::object seq = py::reinterpret_steal<py::object>(PySequence_List(buffers.ptr()));
  if (!seq) {
    PyErr_Clear();
    Throw(Status::TypeError(what, ": buffers must be a sequence of WriteBuffer, got a ",
                            Py_TYPE(buffers.ptr())->tp_name));
  }
  const Py_ssize_t n = PyList_GET_SIZE(seq.ptr());
  PyObject** items = reinterpret_cast<PyListObject*>(seq.ptr())->ob_item;
  for (Py_ssize_t i = 0; i < n; ++i) {
    if (Py_TYPE(items[i]) != g_write_buffer_type) {
      Throw(Status::TypeError(what, ": item ", i, " is a ", Py_TYPE(items[i])->tp_name,
                              ", not a WriteBuffer from mcreate"));
    }
  }
  // Each object is marked busy (as write() does) until its buffer is back:
  // an object listed twice, or one another thread is writing or sealing, is
  // refused before anything moves.
  for (Py_ssize_t i = 0; i < n; ++i) {
    auto* obj = reinterpret_cast<WriteBufferObject*>(items[i]);
    if (obj->writers > 0) {
      const std::string key = obj->buffer.key();
      for (Py_ssize_t j = 0; j < i; ++j) --reinterpret_cast<WriteBufferObject*>(items[j])->writers;
      Throw(Status::Invalid(what, ": the buffer of '", key,
                            "' is listed twice, or being written or sealed by another thread"));
    }
    ++obj->writers;
  }
  // What is sealed per object: its own buffer; or, while its memory is
  // exported (a memoryview from MutableData() or memoryview(), a numpy
  // array), a copy of it in a new buffer of the same key: the holder of an
  // export may go on writing, and that must never change the stored value
  // (openYuanrong keeps the two apart too). The exported buffer stays the
  // object's, unsealed, and goes back to the worker with the object, which
  // its exports keep alive. An object sealed by a copy has nothing to seal.
  struct Entry {
    PyObject* item;
    bool copy;
  };
  std::vector<Entry> entries;
  std::vector<ds::WriteBuffer> bufs;  // entries[j] is sealed through bufs[j]
  entries.reserve(static_cast<size_t>(n));
  bufs.reserve(static_cast<size_t>(n));
  // Back into their objects, sealed or not, also on failure.
  struct PutBack {
    PyObject** items;
    Py_ssize_t n;
    std::vector<Entry>& entries;
    std::vector<ds::WriteBuffer>& bufs;
    ~PutBack() {
      for (size_t j = 0; j < entries.size(); ++j) {
        auto* obj = reinterpret_cast<WriteBufferObject*>(entries[j].item);
        if (!entries[j].copy) {
          obj->buffer = std::move(bufs[j]);
        } else if (bufs[j].sealed()) {
          obj->sealed_copy = true;  // a copy left unsealed goes back to the worker with `bufs`
        }
      }
      for (Py_ssize_t i = 0; i < n; ++i) --reinterpret_cast<WriteBufferObject*>(items[i])->writers;
    }
  } put_back{items, n, entries, bufs};
  for (Py_ssize_t i = 0; i < n; ++i) {
    auto* obj = reinterpret_cast<WriteBufferObject*>(items[i]);
    if (obj->sealed_copy) continue;
    if (obj->exports > 0 && !obj->buffer.sealed() && obj->buffer.data() != nullptr) {
      ds::WriteBuffer copy = create(obj->buffer.key(), obj->buffer.size(), obj->param);
      // With the GIL held: no Python code writes through an export meanwhile.
      if (obj->buffer.size() > 0) std::memcpy(copy.data(), obj->buffer.data(), obj->buffer.size());
      bufs.push_back(std::move(copy));
      entries.push_back({items[i], true});
    } else {
      bufs.push_back(std::move(obj->buffer));
      entries.push_back({items[i], false});
    }
  }
  if (!bufs.empty()) seal(bufs);
}

void InitDatasystem(py::module_& m) {
  // torch cannot mark a tensor read-only, so an in-place op on a tensor over
  // a zero-copy view would fault: make every view in this process
  // copy-on-write (the stored value never changes).
  ds::EnableCopyOnWriteViews();
  if (g_view_type == nullptr) g_view_type = MakeViewType();
  if (g_call_views_type == nullptr) g_call_views_type = MakeCallViewsType();

  if (g_write_buffer_type == nullptr) g_write_buffer_type = MakeWriteBufferType();
  Py_INCREF(g_write_buffer_type);
  m.add_object("WriteBuffer", py::handle(reinterpret_cast<PyObject*>(g_write_buffer_type)));

  using KV = PyKVClient;
  py::class_<KV>(m, "KVClient", "Client of the datasystem worker at host:port.")
      .def(py::init([](const std::string& host, int port) { return std::make_unique<KV>(host, port); }),
           py::arg("host"), py::arg("port"))
      .def("init", [](KV& c) { c.Call([&](ds::KVClient& k) { return k.Init(); }); })
      .def("set",
           [](KV& c, const std::string& key, py::handle value, bool evictable, uint32_t ttl,
              bool if_absent) {
             ValueBytes v;
             v.Acquire(value);
             c.Call([&](ds::KVClient& k) { return k.Set(key, v.bytes(), Param(evictable, ttl, if_absent)); });
           },
           py::arg("key"), py::arg("value"), py::arg("evictable") = false, py::arg("ttl_seconds") = 0,
           py::arg("if_absent") = false)
      .def("get",
           [](KV& c, const std::string& key, int32_t timeout_ms) {
             auto out = ReadBytes(c, {key}, timeout_ms);
             if (!out[0]) {
               // As ds::KVClient::Get says it.
               if (timeout_ms > 0) Throw(Status::NotFound("key '", key, "' not found (waited ", timeout_ms, " ms)"));
               Throw(Status::NotFound("key '", key, "' not found"));
             }
             return std::move(out[0]);
           },
           py::arg("key"), py::arg("timeout_ms") = 0)
      .def("mset",
           [](KV& c, const KeyList& key_list, const py::list& values, bool evictable, uint32_t ttl) {
             const auto& keys = key_list.v;
             if (keys.size() != values.size()) {
               Throw(Status::Invalid("mset: ", keys.size(), " keys but ", values.size(), " values"));
             }
             std::vector<ValueBytes> held(values.size());
             std::vector<std::string_view> views(values.size());
             for (size_t i = 0; i < values.size(); ++i) {
               held[i].Acquire(PyList_GET_ITEM(values.ptr(), static_cast<Py_ssize_t>(i)));
               views[i] = held[i].bytes();
             }
             c.Call([&](ds::KVClient& k) { return k.MSet(keys, views, Param(evictable, ttl, false)); });
           },
           py::arg("keys"), py::arg("values"), py::arg("evictable") = false, py::arg("ttl_seconds") = 0)
      .def("mget",
           [](KV& c, const KeyList& keys, int32_t timeout_ms) {
             auto vals = ReadBytes(c, keys.v, timeout_ms);
             py::list out(vals.size());
             for (size_t i = 0; i < vals.size(); ++i) {
               PyObject* v = vals[i] ? vals[i].release().ptr() : (Py_INCREF(Py_None), Py_None);
               PyList_SET_ITEM(out.ptr(), static_cast<Py_ssize_t>(i), v);
             }
             return out;
           },
           py::arg("keys"), py::arg("timeout_ms") = 0)
      .def("mcreate",
           [](KV& c, const KeyList& keys, const SizeList& sizes, bool evictable, uint32_t ttl) {
             auto bufs = c.Call([&](ds::KVClient& k) { return k.MCreate(keys.v, sizes.v, Param(evictable, ttl, false)); });
             py::list out(bufs.size());
             for (size_t i = 0; i < bufs.size(); ++i) {
               PyList_SET_ITEM(out.ptr(), static_cast<Py_ssize_t>(i),
                               NewWriteBuffer(std::move(bufs[i]), Param(evictable, ttl, false)));
             }
             return out;
           },
           py::arg("keys"), py::arg("sizes"), py::arg("evictable") = false, py::arg("ttl_seconds") = 0)
      .def("mset_buffer",
           [](KV& c, py::handle buffers) {
             SealWriteBuffers(
                 buffers, "mset_buffer",
                 [&](std::vector<ds::WriteBuffer>& bufs) {
                   c.Call([&](ds::KVClient& k) { return k.MSetBuffer(bufs); });
                 },
                 [&](const std::string& key, uint64_t size, const ds::SetParam& param) {
                   auto one = c.Call([&](ds::KVClient& k) { return k.MCreate({key}, {size}, param); });
                   return std::move(one.at(0));
                 });
           },
           py::arg("buffers"))
      .def("get_buffers",
           [](KV& c, const KeyList& keys, int32_t timeout_ms) {
             auto bufs = c.Call([&](ds::KVClient& k) { return k.GetBuffers(keys.v, timeout_ms); });
             return MemoryViews(bufs);
           },
           py::arg("keys"), py::arg("timeout_ms") = 0,
           "Zero-copy read-only memoryviews (None for a missing key).")
      .def("delete", [](KV& c, const KeyList& keys) {
             return c.Call([&](ds::KVClient& k) { return k.Delete(keys.v); });
           }, py::arg("keys"))
      .def("exist", [](KV& c, const KeyList& keys) {
             return c.Call([&](ds::KVClient& k) { return k.Exist(keys.v); });
           }, py::arg("keys"))
      .def("stats", [](KV& c) {
        auto s = c.Call([&](ds::KVClient& k) { return k.Stats(); });
        py::dict d;
        d["capacity"] = s.capacity;
        d["used"] = s.used;
        d["objects"] = s.objects;
        d["spilled_objects"] = s.spilled_objects;
        d["spill_used"] = s.spill_used;
        d["pid"] = s.pid;
        d["pending_creates"] = s.pending_creates;
        d["pinned_blocks"] = s.pinned_blocks;
        d["memory_populated"] = s.memory_populated;
        d["worker"] = s.worker;
        d["metrics"] = s.metrics;
        d["clients"] = s.clients;
        d["coordination"] = s.coordination;
        d["peers"] = s.peers;
        d["pulls"] = s.pulls;
        d["pulled_bytes"] = s.pulled_bytes;
        d["pull_failures"] = s.pull_failures;
        d["evictions"] = s.evictions;
        return d;
      });
  InitYrDatasystem(m);
}

}  // namespace tqds::py_binding
