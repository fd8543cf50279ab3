// Bindings of the datasystem client: datasystem.KVClient. Blocking calls
// release the GIL; get_buffers returns read-only memoryviews of shared memory.
#include <pybind11/stl.h>

#include "convert.h"
#include "ds/kv_client.h"
#include "errors.h"

namespace tqds::py_binding {

namespace {

// Python-side handle of a created, unsealed value.
struct PyWriteBuffer {
  ds::WriteBuffer buffer;
};

std::string_view BytesView(const py::handle& v, std::string& scratch) {
  if (py::isinstance<py::str>(v)) {
    scratch = v.cast<std::string>();
    return scratch;
  }
  py::buffer_info info = py::buffer(py::reinterpret_borrow<py::object>(v)).request();
  return std::string_view(static_cast<const char*>(info.ptr), static_cast<size_t>(info.size * info.itemsize));
}

// A KVClient that remembers its worker's address, so a broken connection
// surfaces as UnavailableError naming the worker.
struct PyKVClient {
  PyKVClient(const std::string& host, int port)
      : address(host + ":" + std::to_string(port)), client(host, port) {}
  std::string address;
  ds::KVClient client;

  template <typename Fn>
  auto Call(Fn&& fn) {
    return CallWithoutGil([&] { return Explain(fn(client)); });
  }

 private:
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

ds::SetParam Param(bool evictable, uint32_t ttl, bool if_absent) {
  ds::SetParam p;
  p.evictable = evictable;
  p.ttl_seconds = ttl;
  p.if_absent = if_absent;
  return p;
}

}  // namespace

void InitDatasystem(py::module_& m) {
  // torch cannot mark a tensor read-only, so an in-place op on a tensor over
  // a zero-copy view would fault: make every view in this process
  // copy-on-write (the stored value never changes).
  ds::EnableCopyOnWriteViews();
  py::class_<PyWriteBuffer, std::shared_ptr<PyWriteBuffer>>(m, "WriteBuffer",
                                                            "Writable shared memory of one created key.")
      .def_property_readonly("key", [](const PyWriteBuffer& w) { return w.buffer.key(); })
      .def_property_readonly("size", [](const PyWriteBuffer& w) { return w.buffer.size(); })
      .def_property_readonly("sealed", [](const PyWriteBuffer& w) { return w.buffer.sealed(); })
      .def("memoryview",
           [](std::shared_ptr<PyWriteBuffer> w) {
             if (w->buffer.sealed() || w->buffer.data() == nullptr) {
               Throw(Status::Invalid("buffer of '", w->buffer.key(), "' is sealed"));
             }
             // A writable numpy view whose base keeps this WriteBuffer alive.
             py::array arr(py::dtype("uint8"), {static_cast<py::ssize_t>(w->buffer.size())}, w->buffer.data(),
                           py::cast(w));
             return py::memoryview(arr);
           },
           "A writable memoryview of the shared memory (valid until sealed).")
      .def("write",
           [](PyWriteBuffer& w, const py::object& data, size_t offset) {
             std::string scratch;
             auto v = BytesView(data, scratch);
             if (offset + v.size() > w.buffer.size() || w.buffer.data() == nullptr) {
               Throw(Status::Invalid("write of ", v.size(), " bytes at offset ", offset, " exceeds the ",
                                     w.buffer.size(), "-byte buffer of '", w.buffer.key(), "'"));
             }
             std::memcpy(w.buffer.data() + offset, v.data(), v.size());
           },
           py::arg("data"), py::arg("offset") = 0);

  using KV = PyKVClient;
  py::class_<KV>(m, "KVClient", "Client of the datasystem worker at host:port.")
      .def(py::init([](const std::string& host, int port) { return std::make_unique<KV>(host, port); }),
           py::arg("host"), py::arg("port"))
      .def("init", [](KV& c) { c.Call([&](ds::KVClient& k) { return k.Init(); }); })
      .def("set",
           [](KV& c, const std::string& key, const py::object& value, bool evictable, uint32_t ttl,
              bool if_absent) {
             std::string scratch;
             auto v = BytesView(value, scratch);
             c.Call([&](ds::KVClient& k) { return k.Set(key, v, Param(evictable, ttl, if_absent)); });
           },
           py::arg("key"), py::arg("value"), py::arg("evictable") = false, py::arg("ttl_seconds") = 0,
           py::arg("if_absent") = false)
      .def("get",
           [](KV& c, const std::string& key, int32_t timeout_ms) {
             std::string v = c.Call([&](ds::KVClient& k) { return k.Get(key, timeout_ms); });
             return py::bytes(v);
           },
           py::arg("key"), py::arg("timeout_ms") = 0)
      .def("mset",
           [](KV& c, const std::vector<std::string>& keys, const py::list& values, bool evictable,
              uint32_t ttl) {
             if (keys.size() != values.size()) {
               Throw(Status::Invalid("mset: ", keys.size(), " keys but ", values.size(), " values"));
             }
             std::vector<std::string> scratch(values.size());
             std::vector<std::string_view> views;
             for (size_t i = 0; i < values.size(); ++i) views.push_back(BytesView(values[i], scratch[i]));
             c.Call([&](ds::KVClient& k) { return k.MSet(keys, views, Param(evictable, ttl, false)); });
           },
           py::arg("keys"), py::arg("values"), py::arg("evictable") = false, py::arg("ttl_seconds") = 0)
      .def("mget",
           [](KV& c, const std::vector<std::string>& keys, int32_t timeout_ms) {
             auto vals = c.Call([&](ds::KVClient& k) { return k.MGet(keys, timeout_ms); });
             py::list out;
             for (auto& v : vals) out.append(v ? py::object(py::bytes(*v)) : py::object(py::none()));
             return out;
           },
           py::arg("keys"), py::arg("timeout_ms") = 0)
      .def("mcreate",
           [](KV& c, const std::vector<std::string>& keys, const std::vector<uint64_t>& sizes,
              bool evictable, uint32_t ttl) {
             auto bufs = c.Call([&](ds::KVClient& k) { return k.MCreate(keys, sizes, Param(evictable, ttl, false)); });
             py::list out;
             for (auto& b : bufs) {
               auto w = std::make_shared<PyWriteBuffer>();
               w->buffer = std::move(b);
               out.append(py::cast(w));
             }
             return out;
           },
           py::arg("keys"), py::arg("sizes"), py::arg("evictable") = false, py::arg("ttl_seconds") = 0)
      .def("mset_buffer",
           [](KV& c, const std::vector<std::shared_ptr<PyWriteBuffer>>& buffers) {
             std::vector<ds::WriteBuffer> bufs;
             for (auto& w : buffers) bufs.push_back(std::move(w->buffer));
             try {
               c.Call([&](ds::KVClient& k) { return k.MSetBuffer(bufs); });
             } catch (...) {
               for (size_t i = 0; i < buffers.size(); ++i) buffers[i]->buffer = std::move(bufs[i]);
               throw;
             }
             for (size_t i = 0; i < buffers.size(); ++i) buffers[i]->buffer = std::move(bufs[i]);
           },
           py::arg("buffers"))
      .def("get_buffers",
           [](KV& c, const std::vector<std::string>& keys, int32_t timeout_ms) {
             auto bufs = c.Call([&](ds::KVClient& k) { return k.GetBuffers(keys, timeout_ms); });
             py::list out;
             for (auto& b : bufs) out.append(b ? MemoryViewFromBuffer(*b) : py::object(py::none()));
             return out;
           },
           py::arg("keys"), py::arg("timeout_ms") = 0,
           "Zero-copy read-only memoryviews (None for a missing key).")
      .def("delete", [](KV& c, const std::vector<std::string>& keys) {
             return c.Call([&](ds::KVClient& k) { return k.Delete(keys); });
           }, py::arg("keys"))
      .def("exist", [](KV& c, const std::vector<std::string>& keys) {
             return c.Call([&](ds::KVClient& k) { return k.Exist(keys); });
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
        return d;
      });
}

}  // namespace tqds::py_binding
