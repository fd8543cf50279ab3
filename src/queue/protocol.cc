// msgpack codec for TransferQueue message bodies.
#include "queue/protocol.h"

namespace tq::internal {

using tqds::wire::MapReader;
using tqds::wire::Message;
using tqds::wire::MsgType;

namespace {

Result<const msgpack::object_array*> AsArray(const msgpack::object& o, const std::string& what,
                                             int expected = -1) {
  if (o.type != msgpack::type::ARRAY) return Status::Invalid(what, " must be an array");
  if (expected >= 0 && o.via.array.size != static_cast<uint32_t>(expected)) {
    return Status::Invalid(what, " must have ", expected, " elements, got ", o.via.array.size);
  }
  return &o.via.array;
}

template <typename T>
Result<T> As(const msgpack::object& o, const std::string& what) {
  try {
    return o.as<T>();
  } catch (const std::exception&) {
    return Status::Invalid(what, " has the wrong type");
  }
}

void PackFieldInfo(Packer& pk, const FieldInfo& f) {
  pk.pack_array(5);
  pk.pack(f.produced);
  pk.pack_uint8(static_cast<uint8_t>(f.kind));
  pk.pack_uint8(static_cast<uint8_t>(f.dtype));
  pk.pack(f.shape);
  pk.pack_uint64(f.nbytes);
}

Result<FieldInfo> UnpackFieldInfo(const msgpack::object& o, const std::string& what) {
  TQDS_ASSIGN_OR_RETURN(auto a, AsArray(o, what, 5));
  FieldInfo f;
  TQDS_ASSIGN_OR_RETURN(f.produced, As<bool>(a->ptr[0], what + ".produced"));
  TQDS_ASSIGN_OR_RETURN(uint8_t kind, As<uint8_t>(a->ptr[1], what + ".kind"));
  TQDS_ASSIGN_OR_RETURN(uint8_t dtype, As<uint8_t>(a->ptr[2], what + ".dtype"));
  if (kind >= kNumFieldKinds) return Status::Invalid(what, ": unknown field kind ", int(kind));
  if (dtype >= kNumDTypes) return Status::Invalid(what, ": unknown dtype id ", int(dtype));
  f.kind = static_cast<FieldKind>(kind);
  f.dtype = static_cast<DType>(dtype);
  TQDS_ASSIGN_OR_RETURN(f.shape, As<Shape>(a->ptr[3], what + ".shape"));
  if (f.shape.size() > 64) return Status::Invalid(what, ": shape has more than 64 dimensions");
  TQDS_ASSIGN_OR_RETURN(f.nbytes, As<uint64_t>(a->ptr[4], what + ".nbytes"));
  if (f.kind == FieldKind::kTensor && f.produced) {
    TQDS_ASSIGN_OR_RETURN(int64_t numel, NumElements(f.shape));
    if (static_cast<uint64_t>(numel) * DTypeSize(f.dtype) != f.nbytes) {
      return Status::Invalid(what, ": nbytes ", f.nbytes, " does not match shape ",
                             ShapeToString(f.shape), " of ", DTypeName(f.dtype));
    }
  }
  return f;
}

}  // namespace

Status ValidateName(const std::string& name, const char* what) {
  if (name.empty()) return Status::Invalid(what, " must not be empty");
  if (name.size() > 256) return Status::Invalid(what, " is longer than 256 bytes");
  if (name.find('\0') != std::string::npos) return Status::Invalid(what, " contains a NUL byte");
  return Status::OK();
}

void PackCustomMeta(Packer& pk, const CustomMeta& custom) {
  pk.pack_map(static_cast<uint32_t>(custom.size()));
  for (const auto& [k, v] : custom) {
    pk.pack(k);
    if (const auto* d = std::get_if<double>(&v)) {
      pk.PackFloat64(*d);
    } else {
      std::visit([&](const auto& x) { pk.pack(x); }, v);
    }
  }
}

Result<CustomMeta> UnpackCustomMeta(const msgpack::object& o, const std::string& what) {
  if (o.type == msgpack::type::NIL) return CustomMeta{};
  if (o.type != msgpack::type::MAP) return Status::Invalid(what, " must be a map");
  CustomMeta out;
  for (uint32_t i = 0; i < o.via.map.size; ++i) {
    const auto& kv = o.via.map.ptr[i];
    if (kv.key.type != msgpack::type::STR) return Status::Invalid(what, ": keys must be strings");
    std::string key(kv.key.via.str.ptr, kv.key.via.str.size);
    switch (kv.val.type) {
      case msgpack::type::POSITIVE_INTEGER:
        out[key] = static_cast<int64_t>(kv.val.via.u64);
        break;
      case msgpack::type::NEGATIVE_INTEGER:
        out[key] = kv.val.via.i64;
        break;
      case msgpack::type::FLOAT32:
      case msgpack::type::FLOAT64:
        out[key] = kv.val.via.f64;
        break;
      case msgpack::type::STR:
        out[key] = std::string(kv.val.via.str.ptr, kv.val.via.str.size);
        break;
      case msgpack::type::BOOLEAN:
        out[key] = static_cast<int64_t>(kv.val.via.boolean);
        break;
      default:
        return Status::Invalid(what, ": value of '", key, "' must be an integer, float or string");
    }
  }
  return out;
}

void PackBatchMeta(Packer& pk, const BatchMeta& meta) {
  pk.pack_map(2);
  pk.pack("fields");
  pk.pack(meta.field_names());
  pk.pack("samples");
  pk.pack_array(static_cast<uint32_t>(meta.size()));
  for (const auto& s : meta.samples()) {
    pk.pack_array(5);
    pk.pack_int64(s.global_index);
    pk.pack_uint64(s.generation);
    pk.pack(s.partition_id);
    pk.pack_array(static_cast<uint32_t>(s.fields.size()));
    for (const auto& f : s.fields) PackFieldInfo(pk, f);
    PackCustomMeta(pk, s.custom);
  }
}

Result<BatchMeta> UnpackBatchMeta(const msgpack::object& obj, const std::string& what) {
  TQDS_ASSIGN_OR_RETURN(auto r, MapReader::Of(obj, what));
  TQDS_ASSIGN_OR_RETURN(auto names, r.Get<std::vector<std::string>>("fields"));
  const msgpack::object* so = r.Find("samples");
  if (so == nullptr) return Status::Invalid(what, ": missing field 'samples'");
  TQDS_ASSIGN_OR_RETURN(auto arr, AsArray(*so, what + ".samples"));
  std::vector<SampleMeta> samples;
  samples.reserve(arr->size);
  for (uint32_t i = 0; i < arr->size; ++i) {
    std::string sw = what + ".samples[" + std::to_string(i) + "]";
    TQDS_ASSIGN_OR_RETURN(auto a, AsArray(arr->ptr[i], sw, 5));
    SampleMeta s;
    TQDS_ASSIGN_OR_RETURN(s.global_index, As<int64_t>(a->ptr[0], sw + ".global_index"));
    TQDS_ASSIGN_OR_RETURN(s.generation, As<uint64_t>(a->ptr[1], sw + ".generation"));
    TQDS_ASSIGN_OR_RETURN(s.partition_id, As<std::string>(a->ptr[2], sw + ".partition_id"));
    TQDS_ASSIGN_OR_RETURN(auto fa, AsArray(a->ptr[3], sw + ".fields"));
    if (fa->size != names.size()) {
      return Status::Invalid(sw, " has ", fa->size, " field records for ", names.size(), " fields");
    }
    s.fields.reserve(fa->size);
    for (uint32_t f = 0; f < fa->size; ++f) {
      TQDS_ASSIGN_OR_RETURN(FieldInfo fi, UnpackFieldInfo(fa->ptr[f], sw + "." + names[f]));
      s.fields.push_back(std::move(fi));
    }
    TQDS_ASSIGN_OR_RETURN(s.custom, UnpackCustomMeta(a->ptr[4], sw + ".custom"));
    samples.push_back(std::move(s));
  }
  return BatchMeta(std::move(names), std::move(samples));
}

std::string EncodeGetMeta(const GetMetaRequest& req) {
  return tqds::wire::PackBody([&](Packer& pk) {
    pk.pack_map(7);
    pk.pack("partition_id");
    pk.pack(req.partition_id);
    pk.pack("task_name");
    pk.pack(req.task_name);
    pk.pack("fields");
    pk.pack(req.fields);
    pk.pack("batch_size");
    pk.pack_int64(req.batch_size);
    pk.pack("mode");
    pk.pack_uint8(static_cast<uint8_t>(req.mode));
    pk.pack("timeout_ms");
    pk.pack_int64(req.timeout_ms);
    pk.pack("sampling");
    PackCustomMeta(pk, req.sampling);
  });
}

Result<GetMetaRequest> DecodeGetMeta(const msgpack::object& body) {
  TQDS_ASSIGN_OR_RETURN(auto r, MapReader::Of(body, "GetMeta"));
  GetMetaRequest req;
  TQDS_ASSIGN_OR_RETURN(req.partition_id, r.Get<std::string>("partition_id"));
  TQDS_ASSIGN_OR_RETURN(req.task_name, r.GetOr<std::string>("task_name", ""));
  TQDS_ASSIGN_OR_RETURN(req.fields, r.Get<std::vector<std::string>>("fields"));
  TQDS_ASSIGN_OR_RETURN(req.batch_size, r.Get<int64_t>("batch_size"));
  TQDS_ASSIGN_OR_RETURN(uint8_t mode, r.GetOr<uint8_t>("mode", 0));
  if (mode > 2) return Status::Invalid("GetMeta: unknown mode ", int(mode));
  req.mode = static_cast<FetchMode>(mode);
  TQDS_ASSIGN_OR_RETURN(req.timeout_ms, r.GetOr<int64_t>("timeout_ms", 0));
  if (const msgpack::object* s = r.Find("sampling")) {
    TQDS_ASSIGN_OR_RETURN(req.sampling, UnpackCustomMeta(*s, "GetMeta.sampling"));
  }
  return req;
}

Message MetaMessage(MsgType type, const BatchMeta& meta) {
  Message m(type, 0);
  m.set_body(tqds::wire::PackBody([&](Packer& pk) { PackBatchMeta(pk, meta); }));
  return m;
}

Result<BatchMeta> MetaFromMessage(const Message& m) {
  return UnpackBatchMeta(m.body(), "BatchMeta");
}

std::string EncodeKeys(const std::vector<std::string>& keys) {
  return tqds::wire::PackBody([&](Packer& pk) {
    pk.pack_map(1);
    pk.pack("keys");
    pk.pack(keys);
  });
}

Result<std::vector<std::string>> DecodeKeys(const msgpack::object& body, const std::string& what) {
  TQDS_ASSIGN_OR_RETURN(auto r, MapReader::Of(body, what));
  return r.Get<std::vector<std::string>>("keys");
}

}  // namespace tq::internal
