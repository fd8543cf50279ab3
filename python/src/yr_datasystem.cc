// _tqds.YrKVClient: the native core of yr.datasystem.KVClient, the client
// API of openYuanrong datasystem's Python package (python/yr/datasystem/
// kv_client.py checks argument types and fills in defaults, then calls this).
//
// It follows that API where ours (datasystem.KVClient) differs: keys of 1 to
// 255 characters from [a-zA-Z0-9-_!@#%^*()+=:;], empty values refused, batch
// writes and expire report the keys that failed instead of raising, a read
// of several keys raises only when none is found, and every failure is a
// plain RuntimeError whose text starts with "code: [<openYuanrong's code
// name>], msg: [...]" (TypeError for a value of the wrong type). Blocking
// calls release the GIL; values move with the same copies as in
// datasystem.cc (whose objects, casters and readers this file shares).
#include <algorithm>
#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <tuple>
#include <unordered_set>

#include "ds_binding.h"

namespace tqds::py_binding {

constexpr size_t kYrMaxKeyBytes = 255;

// Which bytes a key may hold: letters, digits and - _ ! @ # % ^ * ( ) + = : ;
// (1 in the table). The YrKeyList caster checks every key of a call as it
// copies it, so a scan ANDs one table entry per byte with no early exit.
constexpr std::array<uint8_t, 256> MakeKeyChars() {
  std::array<uint8_t, 256> t{};
  for (int c = '0'; c <= '9'; ++c) t[c] = 1;
  for (int c = 'a'; c <= 'z'; ++c) t[c] = 1;
  for (int c = 'A'; c <= 'Z'; ++c) t[c] = 1;
  for (char c : {'-', '_', '!', '@', '#', '%', '^', '*', '(', ')', '+', '=', ':', ';'}) {
    t[static_cast<unsigned char>(c)] = 1;
  }
  return t;
}
constexpr std::array<uint8_t, 256> kKeyChars = MakeKeyChars();

bool YrKeyIsValid(std::string_view key) {
  if (key.empty() || key.size() > kYrMaxKeyBytes) return false;
  // Four independent lanes: the plain loop, which -O3 vectorizes with a
  // long prologue, took 15 ns for 18 bytes; this one 7.
  const auto* p = reinterpret_cast<const unsigned char*>(key.data());
  const size_t n = key.size();
  unsigned a = 1, b = 1, c = 1, d = 1;
  size_t i = 0;
  for (; i + 4 <= n; i += 4) {
    a &= kKeyChars[p[i]];
    b &= kKeyChars[p[i + 1]];
    c &= kKeyChars[p[i + 2]];
    d &= kKeyChars[p[i + 3]];
  }
  for (; i < n; ++i) a &= kKeyChars[p[i]];
  return (a & b & c & d) != 0;
}

namespace {

// openYuanrong's name of each failure, as its messages start.
const char* CodeLabel(const Status& st) {
  switch (st.code()) {
    case StatusCode::kInvalid:
      return st.message().rfind("out of range", 0) == 0 ? "Out of range" : "Invalid parameter";
    case StatusCode::kNotFound: return "Key not found";
    case StatusCode::kAlreadyExists: return "Object already exist error";
    case StatusCode::kOutOfSpace: return "Out of memory";
    case StatusCode::kTimeout: return "RPC deadline exceeded";
    case StatusCode::kIOError:
    case StatusCode::kUnavailable: return "RPC unavailable";
    default: return "Runtime error";
  }
}

std::string Formatted(const char* label, const std::string& message) {
  return std::string("code: [") + label + "], msg: [" + message + "]";
}

[[noreturn]] void RaiseYr(const Status& st) {
  if (st.code() == StatusCode::kTypeError) {
    PyErr_SetString(PyExc_TypeError, st.message().c_str());
  } else {
    PyErr_SetString(PyExc_RuntimeError, Formatted(CodeLabel(st), st.message()).c_str());
  }
  throw py::error_already_set();
}

// Runs fn(), raising a TypeError of ours (DTypeError, a TypeError subclass)
// as a plain TypeError, as openYuanrong raises it.
template <typename Fn>
void PlainTypeErrors(Fn&& fn) {
  try {
    fn();
  } catch (py::error_already_set& e) {
    if (!e.matches(PyExc_TypeError)) throw;
    const std::string message = py::str(e.value());
    PyErr_SetString(PyExc_TypeError, message.c_str());
    throw py::error_already_set();
  }
}

[[noreturn]] void RaiseNotReady() {
  PyErr_SetString(PyExc_RuntimeError,
                  Formatted("Not ready", "the client is not initialised: call init() first").c_str());
  throw py::error_already_set();
}

Status CheckKey(const std::string& key) {
  if (YrKeyIsValid(key)) return Status::OK();
  if (key.empty()) return Status::Invalid("a key is empty: keys have 1 to ", kYrMaxKeyBytes, " characters");
  const std::string shown = key.size() > 64 ? key.substr(0, 64) + "..." : key;
  return Status::Invalid("key '", shown, "' (", key.size(),
                         " bytes) is not valid: keys have 1 to ", kYrMaxKeyBytes,
                         " characters, each a letter, a digit or one of - _ ! @ # % ^ * ( ) + = : ;");
}

// Raises for an empty list or the first key that breaks the rules (the
// caster checked them all while copying).
void CheckKeys(const YrKeyList& keys) {
  if (keys.v.empty()) RaiseYr(Status::Invalid("the list of keys is empty"));
  if (keys.valid) return;
  for (const auto& k : keys.v) {
    Status st = CheckKey(k);
    if (!st.ok()) RaiseYr(st);
  }
}

struct YrClient {
  YrClient(const std::string& host, int port, ds::ClientOptions options)
      : kv(host, port, options) {}
  PyKVClient kv;
  bool ready = false;  // Init succeeded (set and read with the GIL held)

  void CheckReady() const {
    if (!ready) RaiseNotReady();
  }
  // Runs fn(client) without the GIL; raises its error as openYuanrong does.
  template <typename Fn>
  auto Run(Fn&& fn) {
    using R = decltype(fn(kv.client));
    if constexpr (std::is_same_v<R, Status>) {
      Status st;
      {
        py::gil_scoped_release nogil;
        st = kv.Explain(fn(kv.client));
      }
      if (!st.ok()) RaiseYr(st);
    } else {
      std::optional<R> r;
      {
        py::gil_scoped_release nogil;
        r.emplace(kv.Explain(fn(kv.client)));
      }
      if (!r->ok()) RaiseYr(r->status());
      return r->MoveValue();
    }
  }
};

py::str Str(const std::string& s) {
  return py::reinterpret_steal<py::str>(
      PyUnicode_DecodeUTF8(s.data(), static_cast<Py_ssize_t>(s.size()), "surrogateescape"));
}

// Raises NotFound when no key of a read was found (a partial read returns None
// for the missing ones).
template <typename Values>
void RaiseIfNoneFound(const Values& values) {
  for (const auto& v : values) {
    if (v) return;
  }
  RaiseYr(Status::NotFound("none of the ", values.size(), " keys was found"));
}

// mset: writes what it can, returns the keys that failed. A bad key, an
// empty value or a repeated key (the first one is written) fails that key
// only; the call raises when no key was written.
py::list MSet(YrClient& c, const YrKeyList& key_list, const py::list& values, bool evictable,
              uint32_t ttl, bool nx) {
  c.CheckReady();
  const auto& keys = key_list.v;
  if (keys.empty()) RaiseYr(Status::Invalid("the list of keys is empty"));
  if (keys.size() != values.size()) {
    RaiseYr(Status::Invalid("mset: ", keys.size(), " keys but ", values.size(), " values"));
  }
  const size_t n = keys.size();
  std::vector<ValueBytes> held(n);
  std::vector<std::string_view> views(n);
  std::vector<Status> outcome(n);
  bool all_valid = true;
  for (size_t i = 0; i < n; ++i) {
    PlainTypeErrors([&] { held[i].Acquire(PyList_GET_ITEM(values.ptr(), static_cast<Py_ssize_t>(i))); });
    views[i] = held[i].bytes();
    if (!key_list.valid) outcome[i] = CheckKey(keys[i]);
    if (outcome[i].ok() && views[i].empty()) {
      outcome[i] = Status::Invalid("the value of key '", keys[i], "' is empty: values have at least 1 byte");
    }
    all_valid = all_valid && outcome[i].ok();
  }
  const ds::SetParam param = Param(evictable, ttl, nx);
  // The common case, every key valid and distinct, is one call with the
  // caller's keys; the worker refuses a repeated key (the whole request),
  // and only then are the keys sorted out here.
  bool written = false;
  if (all_valid) {
    std::optional<Result<std::vector<Status>>> each;
    {
      py::gil_scoped_release nogil;
      each.emplace(c.kv.client.MSetEach(keys, views, param));
    }
    if (each->ok()) {
      outcome = std::move(*each).MoveValue();
      written = true;
    } else if (!each->status().IsInvalid()) {
      RaiseYr(c.kv.Explain(each->status()));
    }
  }
  if (!written) {
    std::vector<std::string> good_keys;
    std::vector<std::string_view> good_values;
    std::vector<size_t> good_index;
    std::unordered_set<std::string_view> seen(n);
    for (size_t i = 0; i < n; ++i) {
      if (!outcome[i].ok()) continue;
      if (!seen.insert(keys[i]).second) {
        outcome[i] = Status::Invalid("key '", keys[i], "' appears twice in one mset");
        continue;
      }
      good_keys.push_back(keys[i]);
      good_values.push_back(views[i]);
      good_index.push_back(i);
    }
    if (!good_keys.empty()) {
      auto each = c.Run([&](ds::KVClient& k) { return k.MSetEach(good_keys, good_values, param); });
      for (size_t j = 0; j < each.size(); ++j) outcome[good_index[j]] = std::move(each[j]);
    }
  }
  py::list failed;
  const Status* first = nullptr;
  for (size_t i = 0; i < n; ++i) {
    if (outcome[i].ok()) continue;
    if (first == nullptr) first = &outcome[i];
    failed.append(Str(keys[i]));
  }
  if (first != nullptr && static_cast<size_t>(py::len(failed)) == n) RaiseYr(*first);
  return failed;
}

py::list MCreate(YrClient& c, const YrKeyList& keys, const SizeList& sizes, bool evictable,
                 uint32_t ttl) {
  c.CheckReady();
  CheckKeys(keys);
  if (keys.v.size() != sizes.v.size()) {
    RaiseYr(Status::Invalid("mcreate: ", keys.v.size(), " keys but ", sizes.v.size(), " sizes"));
  }
  for (size_t i = 0; i < sizes.v.size(); ++i) {
    if (sizes.v[i] == 0) {
      RaiseYr(Status::Invalid("mcreate: the size of key '", keys.v[i], "' is 0: values have at least 1 byte"));
    }
  }
  // A key given twice is refused by the worker (the whole call), naming it.
  auto bufs = c.Run([&](ds::KVClient& k) { return k.MCreate(keys.v, sizes.v, Param(evictable, ttl, false)); });
  py::list out(bufs.size());
  for (size_t i = 0; i < bufs.size(); ++i) {
    PyList_SET_ITEM(out.ptr(), static_cast<Py_ssize_t>(i),
                    NewWriteBuffer(std::move(bufs[i]), Param(evictable, ttl, false)));
  }
  return out;
}

py::list Read(YrClient& c, const std::vector<std::tuple<std::string, uint64_t, uint64_t>>& params) {
  c.CheckReady();
  if (params.empty()) RaiseYr(Status::Invalid("the list of read parameters is empty"));
  std::vector<ds::ReadRange> ranges(params.size());
  for (size_t i = 0; i < params.size(); ++i) {
    const auto& [key, offset, size] = params[i];
    Status st = CheckKey(key);
    if (!st.ok()) RaiseYr(st);
    ranges[i] = ds::ReadRange{key, offset, size};
  }
  auto bufs = c.Run([&](ds::KVClient& k) { return k.Read(ranges); });
  RaiseIfNoneFound(bufs);
  return SharedMemoryObjects(bufs);
}

}  // namespace

void InitYrDatasystem(py::module_& m) {
  py::class_<YrClient>(m, "YrKVClient",
                       "Native core of yr.datasystem.KVClient (use that class; it checks argument types).")
      .def(py::init([](const std::string& host, int port, int connect_timeout_ms, int request_timeout_ms,
                       const std::string& client_public_key, const std::string& client_private_key,
                       const std::string& server_public_key) {
             ds::ClientOptions o;
             if (connect_timeout_ms > 0) o.connect_timeout_ms = connect_timeout_ms;
             o.request_timeout_ms = std::max(request_timeout_ms, 0);
             o.client_public_key = client_public_key;
             o.client_secret_key = client_private_key;
             o.server_public_key = server_public_key;
             return std::make_unique<YrClient>(host, port, o);
           }),
           py::arg("host"), py::arg("port"), py::arg("connect_timeout_ms"), py::arg("request_timeout_ms"),
           py::arg("client_public_key") = "", py::arg("client_private_key") = "",
           py::arg("server_public_key") = "")
      .def("init",
           [](YrClient& c) {
             c.Run([](ds::KVClient& k) { return k.Init(); });
             c.ready = true;
           })
      .def("set",
           [](YrClient& c, const std::string& key, py::handle value, bool evictable, uint32_t ttl) {
             c.CheckReady();
             Status st = CheckKey(key);
             if (!st.ok()) RaiseYr(st);
             ValueBytes v;
             PlainTypeErrors([&] { v.Acquire(value); });
             if (v.bytes().empty()) RaiseYr(Status::Invalid("the value is empty: values have at least 1 byte"));
             c.Run([&](ds::KVClient& k) { return k.Set(key, v.bytes(), Param(evictable, ttl, false)); });
           },
           py::arg("key"), py::arg("value"), py::arg("evictable"), py::arg("ttl_second"))
      .def("set_value",
           [](YrClient& c, py::handle value, bool evictable, uint32_t ttl) -> py::str {
             c.CheckReady();
             ValueBytes v;
             PlainTypeErrors([&] { v.Acquire(value); });
             if (v.bytes().empty()) return py::str("");  // as openYuanrong: no key for no value
             return Str(c.Run([&](ds::KVClient& k) -> Result<std::string> {
               TQDS_ASSIGN_OR_RETURN(auto key, k.GenerateKey());
               TQDS_RETURN_NOT_OK(k.Set(key, v.bytes(), Param(evictable, ttl, false)));
               return key;
             }));
           },
           py::arg("value"), py::arg("evictable"), py::arg("ttl_second"))
      .def("mset", &MSet, py::arg("keys"), py::arg("values"), py::arg("evictable"), py::arg("ttl_second"),
           py::arg("nx"))
      .def("msettx",
           [](YrClient& c, const YrKeyList& key_list, const py::list& values, bool evictable,
              uint32_t ttl, bool nx) {
             c.CheckReady();
             const auto& keys = key_list.v;
             if (keys.size() != values.size()) {
               RaiseYr(Status::Invalid("msettx: ", keys.size(), " keys but ", values.size(), " values"));
             }
             std::vector<ValueBytes> held(keys.size());
             std::vector<std::string_view> views(keys.size());
             for (size_t i = 0; i < keys.size(); ++i) {
               PlainTypeErrors(
                   [&] { held[i].Acquire(PyList_GET_ITEM(values.ptr(), static_cast<Py_ssize_t>(i))); });
               views[i] = held[i].bytes();
               if (auto st = CheckKey(keys[i]); !st.ok()) RaiseYr(st);
               if (views[i].empty()) {
                 RaiseYr(Status::Invalid("the value of key '", keys[i], "' is empty: values have at least 1 byte"));
               }
             }
             c.Run([&](ds::KVClient& k) { return k.MSetTx(keys, views, Param(evictable, ttl, nx)); });
           },
           py::arg("keys"), py::arg("values"), py::arg("evictable"), py::arg("ttl_second"), py::arg("nx"))
      .def("get",
           [](YrClient& c, const YrKeyList& keys, int32_t timeout_ms) {
             c.CheckReady();
             CheckKeys(keys);
             auto vals = ReadBytes(c.kv, keys.v, timeout_ms, &RaiseYr);
             RaiseIfNoneFound(vals);
             py::list out(vals.size());
             for (size_t i = 0; i < vals.size(); ++i) {
               PyObject* v = vals[i] ? vals[i].release().ptr() : (Py_INCREF(Py_None), Py_None);
               PyList_SET_ITEM(out.ptr(), static_cast<Py_ssize_t>(i), v);
             }
             return out;
           },
           py::arg("keys"), py::arg("timeout_ms"))
      .def("mcreate", &MCreate, py::arg("keys"), py::arg("sizes"), py::arg("evictable"), py::arg("ttl_second"))
      .def("mset_buffer",
           [](YrClient& c, const py::list& buffers) {
             c.CheckReady();
             if (py::len(buffers) == 0) RaiseYr(Status::Invalid("the list of buffers is empty"));
             PlainTypeErrors([&] {
               SealWriteBuffers(
                   buffers, "mset_buffer",
                   [&](std::vector<ds::WriteBuffer>& bufs) {
                     c.Run([&](ds::KVClient& k) { return k.MSetBuffer(bufs); });
                   },
                   [&](const std::string& key, uint64_t size, const ds::SetParam& param) {
                     auto one = c.Run([&](ds::KVClient& k) { return k.MCreate({key}, {size}, param); });
                     return std::move(one.at(0));
                   });
             });
           },
           py::arg("buffers"))
      .def("get_buffers",
           [](YrClient& c, const YrKeyList& keys, int32_t timeout_ms) {
             c.CheckReady();
             CheckKeys(keys);
             auto bufs = c.Run([&](ds::KVClient& k) { return k.GetBuffers(keys.v, timeout_ms); });
             RaiseIfNoneFound(bufs);
             return SharedMemoryObjects(bufs);
           },
           py::arg("keys"), py::arg("timeout_ms"))
      .def("read", &Read, py::arg("ranges"))
      .def("delete",
           [](YrClient& c, const YrKeyList& keys) {
             c.CheckReady();
             CheckKeys(keys);
             c.Run([&](ds::KVClient& k) { return k.Delete(keys.v); });
             return py::list();  // a missing key is deleted already: nothing fails
           },
           py::arg("keys"))
      .def("exist",
           [](YrClient& c, const YrKeyList& keys) {
             c.CheckReady();
             CheckKeys(keys);
             return c.Run([&](ds::KVClient& k) { return k.Exist(keys.v); });
           },
           py::arg("keys"))
      .def("expire",
           [](YrClient& c, const YrKeyList& keys, uint32_t ttl) {
             c.CheckReady();
             CheckKeys(keys);
             auto exist = c.Run([&](ds::KVClient& k) { return k.Expire(keys.v, ttl); });
             py::list failed;
             for (size_t i = 0; i < exist.size(); ++i) {
               if (!exist[i]) failed.append(Str(keys.v[i]));
             }
             if (static_cast<size_t>(py::len(failed)) == keys.v.size()) {
               RaiseYr(Status::NotFound("expire: none of the ", keys.v.size(), " keys exists"));
             }
             return failed;
           },
           py::arg("keys"), py::arg("ttl_second"))
      .def("generate_key",
           [](YrClient& c, const std::string& prefix) {
             c.CheckReady();
             if (!prefix.empty()) {
               Status st = CheckKey(prefix);
               if (!st.ok()) RaiseYr(st);
             }
             auto key = c.Run([&](ds::KVClient& k) { return k.GenerateKey(prefix); });
             if (key.size() > kYrMaxKeyBytes) {
               RaiseYr(Status::Invalid("generate_key: prefix of ", prefix.size(),
                                       " characters makes a key longer than ", kYrMaxKeyBytes));
             }
             return Str(key);
           },
           py::arg("prefix"))
      .def("health_check",
           [](YrClient& c) {
             // (ok, text) for a Status object; never raises for an unhealthy worker.
             if (!c.ready) return py::make_tuple(false, Formatted("Not ready", "the client is not initialised"));
             Status st;
             {
               py::gil_scoped_release nogil;
               st = c.kv.Explain(c.kv.client.HealthCheck());
             }
             if (st.ok()) return py::make_tuple(true, Formatted("OK", ""));
             return py::make_tuple(false, Formatted(CodeLabel(st), st.message()));
           });
}

}  // namespace tqds::py_binding
