// Bindings of the TransferQueue core: Controller, Client, BatchMeta.
// Blocking calls release the GIL; statuses become registered exceptions.
#include <pybind11/stl.h>

#include <cstring>

#include "convert.h"
#include "ds_binding.h"
#include "errors.h"
#include "queue/protocol.h"
#include "tq/client.h"
#include "tq/controller.h"
#include "tq/storage_unit.h"

namespace tqds::py_binding {

namespace {

using tq::BatchMeta;
using tq::KvListing;
using tq::Value;

// Custom metadata: None, bool, int (int64 range), float, str, bytes, list
// and dict with str keys (exact types, nested up to tq::kMaxMetaDepth)
// cross the wire natively; a numpy scalar as its Python value (samplers read
// numbers); any other object (tuples, arrays, subclasses, deeper nesting)
// pickled, and unpickled on the way out. Pickle lives only here.
py::bytes PickleValue(py::handle v, const std::string& key) {
  try {
    return py::module_::import("pickle").attr("dumps")(v, py::arg("protocol") = -1);
  } catch (py::error_already_set& e) {
    Throw(Status::TypeError("custom meta / sampling value '", key, "' of type ",
                            std::string(py::str(py::type::of(v).attr("__qualname__"))),
                            " is neither a plain value nor picklable: ", e.what()));
  }
}

bool IsNumpyScalar(py::handle v) {
  auto numpy = py::module_::import("sys").attr("modules").attr("get")("numpy");
  return !numpy.is_none() && py::isinstance(v, numpy.attr("generic"));
}

tq::MetaValue ToMetaValue(py::handle v, const std::string& key, int depth = 0) {
  PyObject* o = v.ptr();
  if (o == Py_None) return tq::MetaValue();
  if (PyBool_Check(o)) return o == Py_True;
  if (PyLong_CheckExact(o)) {
    int overflow = 0;
    long long i = PyLong_AsLongLongAndOverflow(o, &overflow);
    if (overflow == 0) return static_cast<int64_t>(i);
  } else if (PyFloat_CheckExact(o)) {
    return PyFloat_AS_DOUBLE(o);
  } else if (PyUnicode_CheckExact(o)) {
    return v.cast<std::string>();
  } else if (PyBytes_CheckExact(o)) {
    return tq::MetaBytes{std::string(PyBytes_AS_STRING(o), PyBytes_GET_SIZE(o))};
  } else if (PyList_CheckExact(o) && depth < tq::kMaxMetaDepth) {
    tq::MetaList list;
    list.reserve(PyList_GET_SIZE(o));
    for (auto item : py::reinterpret_borrow<py::list>(v)) list.push_back(ToMetaValue(item, key, depth + 1));
    return list;
  } else if (PyDict_CheckExact(o) && depth < tq::kMaxMetaDepth) {
    auto d = py::reinterpret_borrow<py::dict>(v);
    bool str_keys = true;
    for (auto [k, _] : d) str_keys = str_keys && PyUnicode_CheckExact(k.ptr());
    if (str_keys) {
      tq::MetaMap map;
      map.reserve(d.size());
      for (auto [k, item] : d) map.emplace_back(k.cast<std::string>(), ToMetaValue(item, key, depth + 1));
      return map;
    }
  } else if (IsNumpyScalar(v)) {
    return ToMetaValue(v.attr("item")(), key, depth);
  }
  return tq::MetaPickled{PickleValue(v, key)};
}

py::object FromMetaValue(const tq::MetaValue& v) {
  struct Visitor {
    py::object operator()(std::monostate) const { return py::none(); }
    py::object operator()(bool b) const { return py::bool_(b); }
    py::object operator()(int64_t i) const { return py::int_(i); }
    py::object operator()(double d) const { return py::float_(d); }
    py::object operator()(const std::string& s) const { return py::str(s); }
    py::object operator()(const tq::MetaBytes& b) const { return py::bytes(b.data); }
    py::object operator()(const tq::MetaPickled& p) const {
      try {
        return py::module_::import("pickle").attr("loads")(py::bytes(p.data));
      } catch (py::error_already_set& e) {
        Throw(Status::Invalid("a pickled custom meta value cannot be unpickled here: ", e.what()));
      }
    }
    py::object operator()(const tq::MetaList& l) const {
      py::list out(l.size());
      for (size_t i = 0; i < l.size(); ++i) out[i] = FromMetaValue(l[i]);
      return out;
    }
    py::object operator()(const tq::MetaMap& m) const {
      py::dict out;
      for (const auto& [k, item] : m) out[py::str(k)] = FromMetaValue(item);
      return out;
    }
  };
  return std::visit(Visitor{}, v);
}

tq::CustomMeta ToCustom(const py::dict& d) {
  tq::CustomMeta out;
  for (auto [k, v] : d) {
    std::string key = py::str(k);
    out[key] = ToMetaValue(v, key);
  }
  return out;
}

py::dict FromCustom(const tq::CustomMeta& c) {
  py::dict d;
  for (const auto& [k, v] : c) d[py::str(k)] = FromMetaValue(v);
  return d;
}

tq::Shape ToShape(py::handle h) {
  tq::Shape s;
  for (auto d : h) s.push_back(d.cast<int64_t>());
  return s;
}

tq::DType ToDType(py::handle h) { return Unwrap(tq::ParseDType(h.cast<std::string>())); }

// A put's fields, read from Python with the GIL held. A dense field keeps
// one view of the whole tensor (no copy, no per-sample Python objects);
// TakeBatch() splits it into per-sample views with the GIL released.
// `python_buffers` references every Python buffer used, so the Batch can be
// dropped without the GIL; the buffers are released when this is destroyed,
// by the binding, with the GIL held (not reacquired once per buffer).
struct PendingBatch {
  struct Field {
    std::string name;
    bool dense = false;
    tq::DType dtype = tq::DType::kUInt8;
    tq::Shape shape;    // dense: [batch_size, ...]
    Buffer data;        // dense: the whole tensor
    tq::Column column;  // ragged / objects: one value per sample
  };
  size_t batch_size = 0;
  std::vector<Field> fields;
  std::vector<Buffer> python_buffers;

  Buffer FromPython(py::handle obj) {
    python_buffers.push_back(BufferFromPython(obj));
    return python_buffers.back();
  }
  Buffer FromStr(py::handle str, const std::string& field, size_t sample) {
    auto utf8 = Utf8FromPython(str);
    if (!utf8.ok()) Throw(utf8.status().WithContext("field '" + field + "' sample " + std::to_string(sample)));
    python_buffers.push_back(utf8.MoveValue());
    return python_buffers.back();
  }

  // The Batch (per-sample views, no copy); moves the columns out. No GIL.
  tq::Result<tq::Batch> TakeBatch() {
    tq::Batch b(batch_size);
    for (Field& f : fields) {
      TQDS_RETURN_NOT_OK(f.dense ? b.AddTensor(f.name, f.dtype, f.shape, f.data)
                                 : b.AddField(f.name, std::move(f.column)));
    }
    return b;
  }
};

// fields: [("dense", name, buffer, dtype, shape) | ("ragged", name, [buffer], dtype, [shape])
//          | ("jagged", name, buffer, dtype, [shape]) | ("objects", name, [bytes | str], [kind])]
// "jagged" is a ragged field whose samples lie back to back in one buffer (a
// jagged nested tensor's values): each sample is a view of its slice.
PendingBatch GatherBatch(size_t batch_size, const py::list& fields) {
  PendingBatch p;
  p.batch_size = batch_size;
  p.fields.reserve(fields.size());
  for (auto item : fields) {
    auto t = item.cast<py::tuple>();
    std::string form = t[0].cast<std::string>();
    PendingBatch::Field& f = p.fields.emplace_back();
    f.name = t[1].cast<std::string>();
    if (form == "dense") {
      f.dense = true;
      f.dtype = ToDType(t[3]);
      f.shape = ToShape(t[4]);
      f.data = p.FromPython(t[2]);
    } else if (form == "ragged") {
      auto bufs = t[2].cast<py::list>();
      auto shapes = t[4].cast<py::list>();
      tq::DType dt = ToDType(t[3]);
      f.column.reserve(bufs.size());
      for (size_t i = 0; i < bufs.size(); ++i) {
        auto v = tq::Value::Tensor(dt, ToShape(shapes[i]), p.FromPython(bufs[i]));
        if (!v.ok()) {
          Throw(v.status().WithContext("field '" + f.name + "' sample " + std::to_string(i)));
        }
        f.column.push_back(v.MoveValue());
      }
    } else if (form == "jagged") {
      Buffer all = p.FromPython(t[2]);
      auto shapes = t[4].cast<py::list>();
      tq::DType dt = ToDType(t[3]);
      f.column.reserve(shapes.size());
      size_t offset = 0;
      for (size_t i = 0; i < shapes.size(); ++i) {
        tq::Shape shape = ToShape(shapes[i]);
        auto numel = tq::NumElements(shape);
        size_t nbytes = numel.ok() ? static_cast<size_t>(*numel) * tq::DTypeSize(dt) : 0;
        if (!numel.ok() || nbytes > all.size() - offset) {
          Throw(Status::Invalid("field '", f.name, "' sample ", i, ": shape ", tq::ShapeToString(shape),
                                " runs past the end of its values (", all.size(), " bytes)"));
        }
        auto v = tq::Value::Tensor(dt, std::move(shape), all.Slice(offset, nbytes));
        if (!v.ok()) Throw(v.status().WithContext("field '" + f.name + "' sample " + std::to_string(i)));
        f.column.push_back(v.MoveValue());
        offset += nbytes;
      }
      if (offset != all.size()) {
        Throw(Status::Invalid("field '", f.name, "': the sample shapes cover ", offset, " of its ", all.size(),
                              " value bytes"));
      }
    } else if (form == "objects") {
      auto vals = t[2].cast<py::list>();
      auto kinds = t[3].cast<py::list>();
      f.column.reserve(vals.size());
      for (size_t i = 0; i < vals.size(); ++i) {
        int kind = kinds[i].cast<int>();
        if (kind < 1 || kind >= tq::kNumFieldKinds) Throw(Status::TypeError("invalid object kind ", kind));
        auto k = static_cast<tq::FieldKind>(kind);
        // A str is stored as its UTF-8 bytes, read in place (no encode).
        bool str = k == tq::FieldKind::kString && PyUnicode_Check(vals[i].ptr());
        f.column.push_back(tq::Value::Object(str ? p.FromStr(vals[i], f.name, i) : p.FromPython(vals[i]), k));
      }
    } else {
      Throw(Status::Invalid("unknown field form '", form, "'"));
    }
  }
  return p;
}

// The samples of a tensor column back to back in one buffer: a view when
// they already lie so in one holder (a storage reply that packed them in
// order), else one copy. Call without the GIL.
tqds::Result<Buffer> Concatenate(const tq::Column& col) {
  size_t total = 0;
  bool adjacent = !col.empty() && col[0].data().holder() != nullptr;
  for (size_t i = 0; i < col.size(); ++i) {
    total += col[i].nbytes();
    if (adjacent && i > 0) {
      const Value& prev = col[i - 1];
      adjacent = col[i].data().holder() == col[0].data().holder() &&
                 col[i].data().data() == prev.data().data() + prev.nbytes();
    }
  }
  if (adjacent) return Buffer::Wrap(col[0].data().data(), total, col[0].data().holder());
  TQDS_ASSIGN_OR_RETURN(auto mb, tqds::MutableBuffer::Allocate(total));
  uint8_t* out = mb.mutable_data();
  for (const Value& v : col) {
    if (v.nbytes() > 0) std::memcpy(out, v.data().data(), v.nbytes());
    out += v.nbytes();
  }
  return std::move(mb).Freeze();
}

// The keys of a kv call, read by the datasystem binding's key-list loader
// (ds_binding.h: one pass over each str's UTF-8 into this thread's kept
// strings). What it refuses is said here: a str with no UTF-8 (a lone
// surrogate) as Python's own UnicodeEncodeError, anything else as a
// TypeError naming the type.
// A key of a list or tuple that is no str: the TypeError naming it.
[[noreturn]] void ThrowKeyNotStr(PyObject* seq, Py_ssize_t i, PyObject* item) {
  throw py::type_error(std::string("keys must be a list of str, got ") + Py_TYPE(seq)->tp_name + " (key " +
                       std::to_string(i) + " is " + Py_TYPE(item)->tp_name + ")");
}

KeyList KeysFromPython(py::handle keys) {
  PyObject* seq = keys.ptr();
  if (PyList_Check(seq) || PyTuple_Check(seq)) {  // str only: the key list loader also takes bytes
    for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(seq); ++i) {
      PyObject* item = PySequence_Fast_ITEMS(seq)[i];
      if (!PyUnicode_Check(item)) ThrowKeyNotStr(seq, i, item);
    }
  }
  KeyList out;
  if (py::detail::LoadKeyList(keys, /*convert=*/true, out, [](std::string_view) {})) return out;
  if (PyList_Check(seq) || PyTuple_Check(seq)) {
    for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(seq); ++i) {
      PyObject* item = PySequence_Fast_ITEMS(seq)[i];
      Py_ssize_t size = 0;
      if (PyUnicode_Check(item) && PyUnicode_AsUTF8AndSize(item, &size) == nullptr) throw py::error_already_set();
    }
  }
  throw py::type_error(std::string("keys must be a list of str, got ") + Py_TYPE(seq)->tp_name);
}

// The keys of a kv call as columns (tq::KeyColumns), in buffers this thread
// keeps between calls (no allocation and no string per key once warm); a
// call made while another holds them (a finalizer that runs a kv call)
// gets buffers of its own.
struct PooledKeyColumns {
  PooledKeyColumns() : v(std::move(Pool())) { v.Clear(); }
  ~PooledKeyColumns() {
    if (v.bytes.capacity() <= (size_t{64} << 20)) Pool() = std::move(v);
  }
  PooledKeyColumns(const PooledKeyColumns&) = delete;
  PooledKeyColumns& operator=(const PooledKeyColumns&) = delete;
  static tq::KeyColumns& Pool() {
    thread_local tq::KeyColumns pool;
    return pool;
  }
  tq::KeyColumns v;
};

// A list or tuple of str read in one pass, refused as KeysFromPython
// refuses; any other sequence through KeysFromPython.
void KeyColumnsFromPython(py::handle keys, PooledKeyColumns& out) {
  tq::KeyColumns& kept = out.v;
  PyObject* seq = keys.ptr();
  if (!PyList_Check(seq) && !PyTuple_Check(seq)) {
    kept = tq::KeyColumns::Of(KeysFromPython(keys).v);
    return;
  }
  const Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
  PyObject** items = PySequence_Fast_ITEMS(seq);
  kept.ends.reserve(static_cast<size_t>(n));
  for (Py_ssize_t i = 0; i < n; ++i) {
    PyObject* item = items[i];
    if (!PyUnicode_Check(item)) ThrowKeyNotStr(seq, i, item);
    Py_ssize_t size = 0;
    const char* utf8 = PyUnicode_AsUTF8AndSize(item, &size);
    if (utf8 == nullptr) throw py::error_already_set();  // no UTF-8 (a lone surrogate): Python's own error
    kept.Append(std::string_view(utf8, static_cast<size_t>(size)));
  }
}

// Returns [(name, "dense", array, dtype)            uniform tensors, stacked
//          | (name, "ragged", values, dtype, [shape])  one dtype, shapes differ:
//                                                      every sample's elements in
//                                                      one flat array, in order
//          | (name, "tensors", [array], [dtype])     tensors of several dtypes
//          | (name, "objects", [bytes | str], [kind])]: strings decoded here.
// With read_only, arrays that view storage memory (not copies made here)
// are read-only.
py::list BatchToPython(const tq::Batch& b, bool stack_uniform, bool read_only) {
  py::list out;
  for (size_t f = 0; f < b.num_fields(); ++f) {
    const std::string& name = b.keys()[f];
    if (const tq::Value* whole = b.Dense(f); whole != nullptr && stack_uniform && b.batch_size() > 0) {
      // Kept as one tensor (a storage read of one range): a view, read-only as below.
      out.append(py::make_tuple(name, "dense", ArrayFromBuffer(whole->data(), whole->dtype(), whole->shape(), read_only),
                                tq::DTypeName(whole->dtype())));
      continue;
    }
    const tq::Column& col = b.column(f);
    bool all_tensors = !col.empty();
    bool one_dtype = true;
    for (const auto& v : col) {
      all_tensors = all_tensors && v.is_tensor();
      one_dtype = one_dtype && v.dtype() == col[0].dtype();
    }
    if (all_tensors && stack_uniform && b.IsUniform(name)) {
      tq::Result<tq::Value> stacked = Status::Internal("unset");
      {
        py::gil_scoped_release nogil;
        stacked = b.Stack(name);
      }
      const tq::Value& v = Unwrap(std::move(stacked));
      // A zero-copy view of storage memory stays read-only, like ragged views.
      bool view = v.data().holder() == col[0].data().holder();
      out.append(py::make_tuple(name, "dense", ArrayFromBuffer(v.data(), v.dtype(), v.shape(), view && read_only),
                                tq::DTypeName(v.dtype())));
    } else if (all_tensors && one_dtype) {
      tq::Result<Buffer> values = Status::Internal("unset");
      {
        py::gil_scoped_release nogil;
        values = Concatenate(col);
      }
      Buffer all = Unwrap(std::move(values));
      bool view = all.holder() == col[0].data().holder();
      tq::DType dt = col[0].dtype();
      int64_t numel = static_cast<int64_t>(all.size() / tq::DTypeSize(dt));
      py::list shapes;
      for (const auto& v : col) shapes.append(ShapeTuple(v.shape()));
      out.append(py::make_tuple(name, "ragged", ArrayFromBuffer(all, dt, {numel}, view && read_only),
                                tq::DTypeName(dt), shapes));
    } else if (all_tensors) {
      py::list arrays, dtypes;
      for (const auto& v : col) {
        arrays.append(ArrayFromBuffer(v.data(), v.dtype(), v.shape(), read_only));
        dtypes.append(tq::DTypeName(v.dtype()));
      }
      out.append(py::make_tuple(name, "tensors", arrays, dtypes));
    } else {
      // Objects, or a field whose samples were written as tensors by one put
      // and as objects by another: each value by its own kind.
      py::list vals, kinds;
      for (size_t i = 0; i < col.size(); ++i) {
        const tq::Value& v = col[i];
        if (v.is_tensor()) {
          vals.append(py::make_tuple(ArrayFromBuffer(v.data(), v.dtype(), v.shape(), read_only),
                                     tq::DTypeName(v.dtype())));
        } else if (v.kind() == tq::FieldKind::kString) {
          // Decoded straight from storage memory: one copy, not a bytes
          // object and then its decode.
          PyObject* s = PyUnicode_DecodeUTF8(reinterpret_cast<const char*>(v.data().data()),
                                             static_cast<Py_ssize_t>(v.nbytes()), "strict");
          if (s == nullptr) {
            py::error_already_set why;
            Throw(Status::Invalid("field '", name, "' sample ", i, " of the batch: the stored string is not UTF-8 (",
                                  why.what(), ")"));
          }
          vals.append(py::reinterpret_steal<py::object>(s));
        } else {
          vals.append(py::bytes(reinterpret_cast<const char*>(v.data().data()), v.nbytes()));
        }
        kinds.append(static_cast<int>(v.kind()));
      }
      out.append(py::make_tuple(name, "objects", vals, kinds));
    }
  }
  return out;
}

// A sampling config dict; a key whose value is None counts as absent (as
// upstream's samplers read them: kwargs.get("batch_index", None)).
tq::SamplingConfig ToSampling(const py::object& o) {
  if (o.is_none()) return {};
  py::dict present;
  for (auto [k, v] : o.cast<py::dict>()) {
    if (!v.is_none()) present[k] = v;
  }
  return ToCustom(present);
}

py::bytes PickleMeta(const BatchMeta& m) {
  std::string body = tqds::wire::PackBody([&](tq::internal::Packer& pk) { tq::internal::PackBatchMeta(pk, m); });
  return py::bytes(body);
}

BatchMeta UnpickleMeta(const py::bytes& b) {
  std::string s = b;
  msgpack::object_handle h;
  try {
    h = msgpack::unpack(s.data(), s.size());
  } catch (const std::exception& e) {
    Throw(Status::Invalid("cannot unpickle BatchMeta: ", e.what()));
  }
  return Unwrap(tq::internal::UnpackBatchMeta(h.get(), "BatchMeta"));
}

// A meta over the given samples whose fields are all recorded as not
// produced: for Python code that assembles metas itself.
BatchMeta BuildMeta(const std::vector<int64_t>& global_indexes, const std::vector<std::string>& partition_ids,
                    const std::vector<uint64_t>& generations, const std::vector<std::string>& field_names,
                    const py::object& custom) {
  size_t n = global_indexes.size();
  if (partition_ids.size() != n || generations.size() != n) {
    Throw(Status::Invalid("BatchMeta.build: ", n, " global_indexes, ", partition_ids.size(), " partition_ids and ",
                          generations.size(), " generations (the lengths must match)"));
  }
  for (size_t i = 0; i < field_names.size(); ++i) {
    for (size_t j = 0; j < i; ++j) {
      if (field_names[i] == field_names[j]) {
        Throw(Status::Invalid("BatchMeta.build: field '", field_names[i], "' is listed twice"));
      }
    }
  }
  py::list customs;
  if (!custom.is_none()) {
    customs = custom.cast<py::list>();
    if (customs.size() != n) {
      Throw(Status::Invalid("BatchMeta.build: ", customs.size(), " custom dicts for ", n, " samples"));
    }
  }
  std::vector<tq::SampleMeta> samples(n);
  for (size_t i = 0; i < n; ++i) {
    samples[i].global_index = global_indexes[i];
    samples[i].partition_id = partition_ids[i];
    samples[i].generation = generations[i];
    samples[i].fields.assign(field_names.size(), tq::FieldInfo{});
    if (!custom.is_none() && !customs[i].is_none()) samples[i].custom = ToCustom(customs[i].cast<py::dict>());
  }
  return BatchMeta(field_names, std::move(samples));
}

void InitMeta(py::module_& m) {
  py::class_<BatchMeta>(m, "BatchMeta", "Metadata of a set of samples (no payload bytes).")
      .def(py::init<>())
      .def_static("build", &BuildMeta, py::arg("global_indexes"), py::arg("partition_ids"), py::arg("generations"),
                  py::arg("field_names") = std::vector<std::string>{}, py::arg("custom") = py::none(),
                  "A meta over these samples, every field recorded as not produced. Lengths must match; "
                  "custom: one dict (or None) per sample.")
      .def_static("union", [](const BatchMeta& a, const BatchMeta& b) { return Unwrap(BatchMeta::Union(a, b)); },
                  py::arg("a"), py::arg("b"),
                  "The fields of both metas of the same samples (b's records win for a field both hold).")
      .def("field_shapes",
           [](const BatchMeta& m, const std::string& name) {
             int f = m.FieldIndex(name);
             if (f < 0) Throw(Status::NotFound("field '", name, "' is not in this BatchMeta"));
             py::list out;
             for (const auto& s : m.samples()) {
               if (static_cast<size_t>(f) < s.fields.size() && s.fields[f].produced) {
                 out.append(ShapeTuple(s.fields[f].shape));
               } else {
                 out.append(py::none());
               }
             }
             return out;
           },
           py::arg("name"), "Each sample's shape of the field (None where it is not produced).")
      .def("__len__", &BatchMeta::size)
      .def_property_readonly("size", &BatchMeta::size)
      .def_property_readonly("global_indexes", &BatchMeta::global_indexes)
      .def(
          "same_indexes",
          [](const BatchMeta& m, const BatchMeta& o) {
            if (m.size() != o.size()) return false;
            for (size_t i = 0; i < m.size(); ++i) {
              if (m.samples()[i].global_index != o.samples()[i].global_index) return false;
            }
            return true;
          },
          py::arg("other"), "Whether other lists the same global indexes in the same order (no lists built).")
      .def_property_readonly("partition_ids", &BatchMeta::partition_ids)
      .def_property_readonly("field_names", &BatchMeta::field_names)
      .def_property_readonly("generations",
                             [](const BatchMeta& m) {
                               std::vector<uint64_t> g;
                               for (const auto& s : m.samples()) g.push_back(s.generation);
                               return g;
                             })
      .def_property_readonly("production_status",
                             [](const BatchMeta& m) {
                               std::vector<int> out;
                               out.reserve(m.size());
                               for (const auto& s : m.samples()) {
                                 bool all = !m.field_names().empty();
                                 for (size_t f = 0; f < m.field_names().size(); ++f) {
                                   all = all && f < s.fields.size() && s.fields[f].produced;
                                 }
                                 out.push_back(all ? 1 : 0);
                               }
                               return out;
                             },
                             "Per sample: 1 when every field of the meta is produced for it, else 0 "
                             "(upstream's BatchMeta.production_status; 0 when the meta has no fields).")
      .def_property_readonly("field_schema",
                             [](const BatchMeta& m) {
                               py::dict d;
                               for (const auto& s : m.schema()) {
                                 py::dict e;
                                 e["kind"] = static_cast<int>(s.kind);
                                 e["dtype"] = tq::DTypeName(s.dtype);
                                 e["shape"] = ShapeTuple(s.shape);
                                 e["ragged"] = s.ragged;
                                 e["produced"] = s.produced;
                                 d[py::str(s.name)] = e;
                               }
                               return d;
                             })
      .def("get_custom_meta",
           [](const BatchMeta& m) {
             py::list l;
             for (const auto& s : m.samples()) l.append(FromCustom(s.custom));
             return l;
           },
           "One dict of custom metadata per sample.")
      .def("set_custom_meta",
           [](BatchMeta& m, const py::list& values) {
             if (values.size() != m.size()) {
               Throw(Status::Invalid("set_custom_meta: ", values.size(), " dicts for ", m.size(), " samples"));
             }
             for (size_t i = 0; i < m.size(); ++i) m.mutable_samples()[i].custom = ToCustom(values[i].cast<py::dict>());
           },
           py::arg("values"), "Replaces each sample's custom metadata (local; send with client.set_custom_meta).")
      .def("select_samples", [](const BatchMeta& m, const std::vector<size_t>& p) { return Unwrap(m.SelectSamples(p)); },
           py::arg("positions"))
      .def("select_fields",
           [](const BatchMeta& m, const std::vector<std::string>& f) { return Unwrap(m.SelectFields(f)); },
           py::arg("fields"))
      .def("chunk", &BatchMeta::Chunk, py::arg("chunks"))
      .def_static("concat", &BatchMeta::Concat, py::arg("metas"))
      .def("__eq__", [](const BatchMeta& a, const BatchMeta& b) { return a == b; })
      .def("__repr__",
           [](const BatchMeta& m) {
             std::string s = "BatchMeta(size=" + std::to_string(m.size()) + ", fields=[";
             for (size_t i = 0; i < m.field_names().size(); ++i) s += (i ? ", " : "") + m.field_names()[i];
             s += "], global_indexes=[";
             for (size_t i = 0; i < m.size() && i < 8; ++i) s += (i ? ", " : "") + std::to_string(m.samples()[i].global_index);
             if (m.size() > 8) s += ", ...";
             return s + "])";
           })
      .def(py::pickle([](const BatchMeta& m) { return PickleMeta(m); },
                      [](const py::bytes& b) { return UnpickleMeta(b); }));
}

// What a Python sampler gets as `partition=`: upstream's DataPartitionStatus
// as far as samplers use it (partition_id, get_custom_meta). It reads the
// controller's state, so it works only during the sampler call.
class SamplerPartition {
 public:
  SamplerPartition(std::string partition_id, const tq::CustomSampler::Call* call)
      : partition_id_(std::move(partition_id)), call_(call) {}
  const std::string& partition_id() const { return partition_id_; }
  // {global_index: custom meta dict} for the indexes that have some.
  py::dict GetCustomMeta(const std::vector<int64_t>& indexes) const {
    if (call_ == nullptr) {
      Throw(Status::Invalid("partition '", partition_id_,
                            "': a sampler's partition object works only during that sampler call"));
    }
    py::dict out;
    for (const auto& [gi, custom] : call_->custom_meta(indexes)) out[py::int_(gi)] = FromCustom(custom);
    return out;
  }
  void Expire() { call_ = nullptr; }

 private:
  std::string partition_id_;
  const tq::CustomSampler::Call* call_;  // borrowed; null once the call returned
};

// A transfer_queue.sampler.BaseSampler (any callable with its signature)
// as the controller's CustomSampler: called on the controller thread with the
// GIL taken; a Python exception becomes an Invalid status naming the sampler.
class PySampler : public tq::CustomSampler {
 public:
  explicit PySampler(py::object sampler)
      : sampler_(std::move(sampler)), name_(py::str(py::type::of(sampler_).attr("__qualname__"))) {}
  ~PySampler() override {
    if (!Py_IsInitialized()) {
      sampler_.release();  // the interpreter is gone: nothing left to free it with
      return;
    }
    py::gil_scoped_acquire gil;
    sampler_ = py::object();
  }

  tq::Result<Choice> Sample(const Call& call) override {
    py::gil_scoped_acquire gil;
    auto* part = new SamplerPartition(call.partition_id, &call);
    py::object part_obj = py::cast(part, py::return_value_policy::take_ownership);
    tq::Result<Choice> out = Status::Internal("unset");
    try {
      py::dict kwargs = FromCustom(*call.config);
      kwargs["partition"] = part_obj;
      out = ParseChoice(sampler_(py::cast(call.ready), call.batch_size, **kwargs));
    } catch (py::error_already_set& e) {
      out = Status::Invalid("sampler ", name_, " raised ", e.what());
    } catch (const std::exception& e) {
      out = Status::Invalid("sampler ", name_, " failed: ", e.what());
    }
    part->Expire();
    return out;
  }

  bool HasCachedResult(const std::string& partition_id, const std::string& task_name,
                       const tq::SamplingConfig& config) override {
    py::gil_scoped_acquire gil;
    try {
      if (!py::hasattr(sampler_, "has_cached_result")) return false;
      return py::bool_(sampler_.attr("has_cached_result")(partition_id, task_name, FromCustom(config)));
    } catch (py::error_already_set& e) {
      e.discard_as_unraisable(sampler_.attr("has_cached_result"));  // no cached answer, the call goes on
      return false;
    }
  }

  void ClearCache(const std::string& partition_id) override {
    py::gil_scoped_acquire gil;
    try {
      if (py::hasattr(sampler_, "clear_cache")) sampler_.attr("clear_cache")(partition_id);
    } catch (py::error_already_set& e) {
      e.discard_as_unraisable(sampler_.attr("clear_cache"));  // a clear must not fail over a sampler's cache
    }
  }

 private:
  // (sampled, consumed): two iterables of integers (numpy ones too).
  tq::Result<Choice> ParseChoice(const py::object& r) const {
    if (!py::isinstance<py::sequence>(r) || py::len(r) != 2) {
      return Status::Invalid("sampler ", name_, " must return (sampled, consumed), got ",
                             std::string(py::str(py::type::of(r).attr("__qualname__"))));
    }
    auto indexes = [](py::handle seq) {
      std::vector<int64_t> v;
      auto index = py::module_::import("operator").attr("index");
      for (auto item : py::iter(seq)) v.push_back(index(item).cast<int64_t>());
      return v;
    };
    py::sequence seq = py::reinterpret_borrow<py::sequence>(r);
    return Choice{indexes(seq[0]), indexes(seq[1])};
  }

  py::object sampler_;
  std::string name_;
};

// Deletes a controller with the GIL released: stopping joins the server
// thread, which may be waiting for the GIL to call a Python sampler.
struct DeleteWithoutGil {
  void operator()(tq::TransferQueueController* c) const {
    if (PyGILState_Check()) {
      py::gil_scoped_release nogil;
      delete c;
    } else {
      delete c;
    }
  }
};

void InitController(py::module_& m) {
  py::class_<SamplerPartition>(m, "_SamplerPartition",
                               "The `partition=` a custom sampler gets (valid during its call only).")
      .def_property_readonly("partition_id", &SamplerPartition::partition_id)
      .def("get_custom_meta", &SamplerPartition::GetCustomMeta, py::arg("global_indexes"),
           "{global_index: custom meta dict} of those indexes that have custom meta.");
  using Holder = std::unique_ptr<tq::TransferQueueController, DeleteWithoutGil>;
  py::class_<tq::TransferQueueController, Holder>(m, "Controller", "An in-process TransferQueue controller.")
      .def(py::init([](const std::string& address, int storage_units, uint64_t unit_capacity_mb,
                       bool polling_mode, const py::object& default_sampling, const py::object& sampler,
                       int64_t pre_alloc_samples, int64_t max_allocate_per_request, int64_t max_samples_per_partition,
                       int64_t max_samples_total, uint64_t unit_capacity_samples) {
             tq::ControllerOptions o;
             o.max_allocate_per_request = max_allocate_per_request;
             o.max_samples_per_partition = max_samples_per_partition;
             o.max_samples_total = max_samples_total;
             o.address = address;
             o.embedded_storage_units = storage_units;
             o.storage_unit_capacity_bytes = unit_capacity_mb << 20;
             o.storage_unit_capacity_samples = unit_capacity_samples;
             o.polling_mode = polling_mode;
             o.pre_alloc_samples = pre_alloc_samples;
             o.default_sampling = ToSampling(default_sampling);
             if (!sampler.is_none()) {
               if (!PyCallable_Check(sampler.ptr())) {
                 Throw(Status::Invalid("sampler must be callable (a BaseSampler instance), got ",
                                       std::string(py::str(py::type::of(sampler).attr("__qualname__")))));
               }
               o.custom_sampler = std::make_shared<PySampler>(sampler);
             }
             return Holder(Unwrap(tq::TransferQueueController::Start(o)).release());
           }),
           py::arg("address") = "tcp://127.0.0.1:0", py::arg("storage_units") = 2,
           py::arg("unit_capacity_mb") = 8192, py::kw_only(), py::arg("polling_mode") = false,
           py::arg("default_sampling") = py::none(), py::arg("sampler") = py::none(),
           py::arg("pre_alloc_samples") = 1,
           py::arg("max_allocate_per_request") = tq::ControllerOptions{}.max_allocate_per_request,
           py::arg("max_samples_per_partition") = tq::ControllerOptions{}.max_samples_per_partition,
           py::arg("max_samples_total") = tq::ControllerOptions{}.max_samples_total,
           py::arg("unit_capacity_samples") = 0,
           "polling_mode: get_meta mode 'fetch' answers at once, like 'poll_all'. pre_alloc_samples: "
           "indexes each new partition reserves (upstream's TQ_PRE_ALLOC_SAMPLE_NUM). default_sampling: "
           "a sampling config (dict) for calls whose sampling_config names no 'sampler'. sampler: a "
           "Python sampler (a transfer_queue.sampler.BaseSampler instance) that picks the samples of "
           "every fetch/poll, called as sampler(ready_indexes, batch_size, partition=..., "
           "**sampling_config) on the controller's thread (it must not call this controller). "
           "max_allocate_per_request / max_samples_per_partition / max_samples_total: allocation limits "
           "(a larger allocate is InvalidArgumentError, one past a partition's or the total limit an "
           "out-of-space error naming the limit).")
      .def_property_readonly("address", &tq::TransferQueueController::address)
      .def_property_readonly("storage_units", &tq::TransferQueueController::storage_units)
      .def("stop", &tq::TransferQueueController::Stop, py::call_guard<py::gil_scoped_release>());
}

// None, or (global indexes, status bytes).
py::object StatusMatrixToPython(const std::optional<tq::SampleStatusMatrix>& m) {
  if (!m) return py::none();
  return py::make_tuple(py::cast(m->global_indexes),
                        py::bytes(reinterpret_cast<const char*>(m->status.data()), m->status.size()));
}

void InitClient(py::module_& m) {
  using Client = tq::TransferQueueClient;
  py::class_<Client>(m, "Client", "The C++ TransferQueueClient (thread-safe).")
      .def(py::init<std::string, std::string>(), py::arg("client_id"), py::arg("controller_address"))
      .def("initialize_storage_manager",
           [](Client& c, const std::string& type, const std::string& config_json) {
             tq::Config cfg;
             try {
               cfg = tq::Config::parse(config_json);
             } catch (const std::exception& e) {
               Throw(Status::Invalid("storage config is not valid JSON: ", e.what()));
             }
             Status st;
             {
               py::gil_scoped_release nogil;
               st = c.initialize_storage_manager(type, cfg);
             }
             ThrowIfError(st);
           },
           py::arg("manager_type"), py::arg("config_json") = "{}")
      .def("put",
           [](Client& c, size_t batch_size, const py::list& fields, const std::string& partition_id,
              const BatchMeta* meta) {
             // GIL held only to read the field list; the Batch is built,
             // sent and dropped without it. `pending` releases the Python
             // buffers afterwards, with the GIL held again.
             PendingBatch pending = GatherBatch(batch_size, fields);
             tq::Result<BatchMeta> r = Status::Internal("unset");
             {
               py::gil_scoped_release nogil;
               tq::Result<tq::Batch> b = pending.TakeBatch();
               if (!b.ok()) {
                 r = b.status();
               } else {
                 r = meta ? c.put(*b, *meta) : c.put(*b, partition_id);
               }
             }
             return Unwrap(std::move(r));
           },
           py::arg("batch_size"), py::arg("fields"), py::arg("partition_id") = "", py::arg("meta") = nullptr)
      .def("allocate",
           [](Client& c, const std::string& partition_id, int64_t count) {
             tq::Result<BatchMeta> r = Status::Internal("unset");
             {
               py::gil_scoped_release nogil;
               r = c.allocate(partition_id, count);
             }
             return Unwrap(std::move(r));
           },
           py::arg("partition_id"), py::arg("count"),
           "Reserves `count` new samples of the partition (created if needed), nothing produced yet "
           "(upstream's get_meta mode 'insert'); fill them with put(..., meta=).")
      .def("get_meta",
           [](Client& c, const std::vector<std::string>& fields, int64_t batch_size, const std::string& partition_id,
              const std::string& task_name, const py::object& sampling, const std::string& mode, double timeout_s) {
             auto cfg = ToSampling(sampling);
             auto fm = Unwrap(tq::ParseFetchMode(mode));
             // nan: InvalidArgumentError; inf or huge: tq::kMaxGetMetaTimeout.
             const auto timeout = Unwrap(tq::TimeoutFromSeconds(timeout_s, "get_meta timeout"));
             tq::Result<BatchMeta> r = Status::Internal("unset");
             {
               py::gil_scoped_release nogil;
               r = c.get_meta(fields, batch_size, partition_id, task_name, cfg, fm, timeout);
             }
             return Unwrap(std::move(r));
           },
           py::arg("data_fields"), py::arg("batch_size"), py::arg("partition_id"), py::arg("task_name"),
           py::arg("sampling_config") = py::none(), py::arg("mode") = "fetch", py::arg("timeout") = 60.0,
           "timeout: seconds (nan or negative: InvalidArgumentError; inf or above 30 days: 30 days). "
           "mode: fetch (wait up to timeout), poll (what is ready now, maybe fewer), poll_all (batch_size "
           "or an empty meta at once), force_fetch (produced samples, marks nothing), force_fetch_all (every "
           "live sample, produced or not; unknown partition: NotFoundError).")
      .def("get_data",
           [](Client& c, const BatchMeta& meta, bool stack_uniform) {
             tq::Result<tq::Batch> r = Status::Internal("unset");
             {
               py::gil_scoped_release nogil;
               r = c.get_data(meta);
             }
             return BatchToPython(Unwrap(std::move(r)), stack_uniform, true);
           },
           py::arg("meta"), py::arg("stack_uniform") = true)
      .def("clear_partition",
           [](Client& c, const std::string& p) { CallWithoutGil([&] { return c.clear_partition(p); }); },
           py::arg("partition_id"))
      .def("clear_samples",
           [](Client& c, const BatchMeta& m) { CallWithoutGil([&] { return c.clear_samples(m); }); },
           py::arg("meta"))
      .def("get_production_status",
           [](Client& c, const std::string& p) {
             tq::Result<tq::ProductionStatus> r = Status::Internal("unset");
             {
               py::gil_scoped_release nogil;
               r = c.get_production_status(p);
             }
             auto st = Unwrap(std::move(r));
             py::dict d;
             d["num_samples"] = st.num_samples;
             d["produced"] = py::cast(st.produced);
             return d;
           },
           py::arg("partition_id"))
      .def("get_consumption_status",
           [](Client& c, const std::string& p, const std::string& t) {
             tq::Result<tq::ConsumptionStatus> r = Status::Internal("unset");
             {
               py::gil_scoped_release nogil;
               r = c.get_consumption_status(p, t);
             }
             auto st = Unwrap(std::move(r));
             py::dict d;
             d["num_samples"] = st.num_samples;
             d["consumed"] = st.consumed;
             return d;
           },
           py::arg("partition_id"), py::arg("task_name"))
      .def("production_status",
           [](Client& c, const std::string& p, const std::vector<std::string>& fields) -> py::object {
             tq::Result<std::optional<tq::SampleStatusMatrix>> r = Status::Internal("unset");
             {
               py::gil_scoped_release nogil;
               r = c.production_status(p, fields);
             }
             return StatusMatrixToPython(Unwrap(std::move(r)));
           },
           py::arg("partition_id"), py::arg("fields"),
           "Upstream-shaped production status: None when the partition is unknown, fields is empty or a "
           "field was never produced in it; else (sorted global indexes of the live samples, row-major "
           "int8 matrix N x F as bytes, 1 = produced), columns in the partition's field registration order.")
      .def("consumption_status",
           [](Client& c, const std::string& p, const std::string& task) -> py::object {
             tq::Result<std::optional<tq::SampleStatusMatrix>> r = Status::Internal("unset");
             {
               py::gil_scoped_release nogil;
               r = c.consumption_status(p, task);
             }
             return StatusMatrixToPython(Unwrap(std::move(r)));
           },
           py::arg("partition_id"), py::arg("task_name"),
           "Upstream-shaped consumption status: None when the partition is unknown; else (sorted global "
           "indexes of the live samples, one byte per sample, 1 = consumed by the task).")
      .def("reset_consumption",
           [](Client& c, const std::string& p, const std::string& t) {
             CallWithoutGil([&] { return c.reset_consumption(p, t); });
           },
           py::arg("partition_id"), py::arg("task_name") = "")
      .def("snapshot_controller",
           [](Client& c) {
             tq::Result<std::string> r = Status::Internal("unset");
             {
               py::gil_scoped_release nogil;
               r = c.snapshot_controller();
             }
             return py::bytes(Unwrap(std::move(r)));
           },
           "The controller's whole metadata state as opaque bytes (checkpoint save).")
      .def("restore_controller",
           [](Client& c, const py::bytes& snapshot, bool dry_run) {
             std::string bytes = snapshot;
             CallWithoutGil([&] { return c.restore_controller(bytes, dry_run); });
           },
           py::arg("snapshot"), py::arg("dry_run") = false,
           "Replaces the controller's whole metadata state by a snapshot_controller() result; "
           "dry_run only checks it. Malformed bytes raise and change nothing.")
      .def("list_partitions",
           [](Client& c) {
             tq::Result<std::vector<std::string>> r = Status::Internal("unset");
             {
               py::gil_scoped_release nogil;
               r = c.list_partitions();
             }
             return Unwrap(std::move(r));
           })
      .def("set_custom_meta",
           [](Client& c, const BatchMeta& m) { CallWithoutGil([&] { return c.set_custom_meta(m); }); },
           py::arg("meta"))
      .def("get_custom_meta",
           [](Client& c, const std::string& p, const std::vector<int64_t>& idx) {
             tq::Result<BatchMeta> r = Status::Internal("unset");
             {
               py::gil_scoped_release nogil;
               r = c.get_custom_meta(p, idx);
             }
             return Unwrap(std::move(r));
           },
           py::arg("partition_id"), py::arg("global_indexes"))
      .def("kv_retrieve",
           [](Client& c, const std::string& p, py::handle key_list, bool create) {
             const KeyList keys = KeysFromPython(key_list);
             return CallWithoutGil([&] { return c.kv_retrieve(p, keys.v, create); });
           },
           py::arg("partition_id"), py::arg("keys"), py::arg("create") = false,
           "The samples of `keys` in request order (fields: those all of them produced; custom meta: their "
           "tags). create: missing keys get fresh samples; else they are left out.")
      .def("kv_get",
           [](Client& c, const std::string& p, py::handle key_list, std::optional<std::vector<std::string>> fields) {
             PooledKeyColumns pooled;
             KeyColumnsFromPython(key_list, pooled);
             const tq::KeyColumns& keys = pooled.v;
             tq::Result<tq::KvGetResult> r = Status::Internal("unset");
             {
               py::gil_scoped_release nogil;
               r = c.kv_get(p, keys, fields);
             }
             tq::KvGetResult out = Unwrap(std::move(r));
             py::list names;
             for (const auto& f : out.fields) names.append(py::str(f));
             py::object items = out.batch ? py::object(BatchToPython(*out.batch, true, true)) : py::none();
             return py::make_tuple(names, out.found, items);
           },
           py::arg("partition_id"), py::arg("keys"), py::arg("fields") = py::none(),
           "(fields every found key's sample has, keys found, get_data's items of `fields` or of all those "
           "fields; None when no key was found or a field of `fields` is not among them)")
      .def("kv_put",
           [](Client& c, const std::string& p, py::handle key_list, size_t batch_size, const py::list& fields) {
             PooledKeyColumns pooled;
             KeyColumnsFromPython(key_list, pooled);
             const tq::KeyColumns& keys = pooled.v;
             PendingBatch pending = GatherBatch(batch_size, fields);  // as put
             tq::Result<tq::KvPutResult> r = Status::Internal("unset");
             {
               py::gil_scoped_release nogil;
               tq::Result<tq::Batch> b = pending.TakeBatch();
               r = b.ok() ? c.kv_put(p, keys, *b) : tq::Result<tq::KvPutResult>(b.status());
             }
             tq::KvPutResult out = Unwrap(std::move(r));
             py::list names;
             for (const auto& f : out.fields) names.append(py::str(f));
             if (out.tags.empty()) return py::tuple(py::make_tuple(names, py::none()));
             py::list tags(out.tags.size());
             for (size_t i = 0; i < out.tags.size(); ++i) tags[i] = FromCustom(out.tags[i]);
             return py::tuple(py::make_tuple(names, tags));
           },
           py::arg("partition_id"), py::arg("keys"), py::arg("batch_size"), py::arg("fields"),
           "Writes row i of the fields as key i's sample (created when missing). Returns (the fields every "
           "key's sample holds now, each key's tags or None when no key has any).")
      .def("kv_keys",
           [](Client& c, const std::string& p, const std::vector<int64_t>& idx) {
             auto keys = CallWithoutGil([&] { return c.kv_keys(p, idx); });
             py::list out(keys.size());
             for (size_t i = 0; i < keys.size(); ++i) {
               out[i] = keys[i] ? py::object(py::str(*keys[i])) : py::object(py::none());
             }
             return out;
           },
           py::arg("partition_id"), py::arg("global_indexes"),
           "The key of each index, or None (no key, or not in the partition). Unknown partition: NotFoundError.")
      .def("kv_list",
           [](Client& c, const std::optional<std::string>& p) {
             KvListing listing = CallWithoutGil([&] { return c.kv_list(p); });
             py::dict out;
             for (const auto& part : listing) {
               py::dict keys;
               for (const auto& e : part.entries) keys[py::str(e.key)] = FromCustom(e.tags);
               out[py::str(part.partition_id)] = keys;
             }
             return out;
           },
           py::arg("partition_id") = py::none(),
           "{partition_id: {key: tags}} for one partition (unknown: {}) or every partition (None).")
      .def("kv_clear",
           [](Client& c, const std::string& p, py::handle key_list) {
             PooledKeyColumns pooled;
             KeyColumnsFromPython(key_list, pooled);
             const tq::KeyColumns& keys = pooled.v;
             CallWithoutGil([&] { return c.kv_clear(p, keys); });
           },
           py::arg("partition_id"), py::arg("keys"),
           "Frees the samples of `keys`; missing keys or partition: nothing happens.")
      .def_property_readonly("client_id", &Client::client_id)
      .def_property_readonly("controller_address", &Client::controller_address);
}

}  // namespace

void InitQueue(py::module_& m) {
  InitMeta(m);
  InitController(m);
  InitClient(m);
  m.def("registered_storage_managers", &tq::RegisteredStorageManagers);
}

}  // namespace tqds::py_binding
