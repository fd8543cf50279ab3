// msgpack codec for TransferQueue message bodies.
#include "queue/protocol.h"

#include <algorithm>
#include <bit>
#include <cstring>
#include <limits>
#include <string_view>
#include <type_traits>
#include <unordered_map>

#include "tq/client.h"
#include "tq/storage.h"

namespace tq::internal {

using tqds::wire::MapReader;
using tqds::wire::Message;
using tqds::wire::MsgType;

namespace {

// A packed value's record has two more elements: [..., pack, offset],
// those of `at` (pack 0: none).
void PackFieldInfo(Packer& pk, const FieldInfo& f, Placement at) {
  const bool placed = at.pack != 0;
  pk.pack_array(placed ? 7 : 5);
  pk.pack(f.produced);
  pk.pack_uint8(static_cast<uint8_t>(f.kind));
  pk.pack_uint8(static_cast<uint8_t>(f.dtype));
  pk.pack_array(static_cast<uint32_t>(f.shape.size()));
  for (int64_t d : f.shape) pk.pack_int64(d);
  pk.pack_uint64(f.nbytes);
  if (placed) {
    pk.pack_uint64(at.pack);
    pk.pack_uint64(at.offset);
  }
}
void PackFieldInfo(Packer& pk, const FieldInfo& f, bool with_place = true) {
  PackFieldInfo(pk, f, with_place ? Placement{f.pack, f.offset} : Placement{});
}

// A placement's end must be representable: offset + nbytes <= 2^64 - 1.
bool PlacementFits(const FieldInfo& f) { return f.pack == 0 || f.offset <= UINT64_MAX - f.nbytes; }

// The detailed (allocating) decoder: used only to explain a failure.
Result<FieldInfo> UnpackFieldInfo(const msgpack::object& o, const std::string& what) {
  if (o.type == msgpack::type::ARRAY && o.via.array.size != 5 && o.via.array.size != 7) {
    return Status::Invalid(what, " must be an array of 5 (or 7, with pack and offset), got ", o.via.array.size,
                           " elements");
  }
  TQDS_ASSIGN_OR_RETURN(auto a, AsArray(o, what));
  FieldInfo f;
  TQDS_ASSIGN_OR_RETURN(f.produced, As<bool>(a->ptr[0], what + ".produced"));
  TQDS_ASSIGN_OR_RETURN(uint8_t kind, As<uint8_t>(a->ptr[1], what + ".kind"));
  TQDS_ASSIGN_OR_RETURN(uint8_t dtype, As<uint8_t>(a->ptr[2], what + ".dtype"));
  if (kind >= kNumFieldKinds) return Status::Invalid(what, ": unknown field kind ", int(kind));
  if (dtype >= kNumDTypes) return Status::Invalid(what, ": unknown dtype id ", int(dtype));
  f.kind = static_cast<FieldKind>(kind);
  f.dtype = static_cast<DType>(dtype);
  TQDS_ASSIGN_OR_RETURN(auto dims, As<std::vector<int64_t>>(a->ptr[3], what + ".shape"));
  f.shape.assign(dims.begin(), dims.end());
  if (f.shape.size() > 64) return Status::Invalid(what, ": shape has more than 64 dimensions");
  TQDS_ASSIGN_OR_RETURN(f.nbytes, As<uint64_t>(a->ptr[4], what + ".nbytes"));
  if (a->size == 7) {
    TQDS_ASSIGN_OR_RETURN(f.pack, As<uint64_t>(a->ptr[5], what + ".pack"));
    TQDS_ASSIGN_OR_RETURN(f.offset, As<uint64_t>(a->ptr[6], what + ".offset"));
    if (f.pack == 0) return Status::Invalid(what, ": pack 0 is not a pack (leave pack and offset out)");
    if (!PlacementFits(f)) return Status::Invalid(what, ": offset ", f.offset, " + nbytes ", f.nbytes, " overflows");
  }
  if (f.kind == FieldKind::kTensor && f.produced) {
    TQDS_ASSIGN_OR_RETURN(int64_t numel, NumElements(f.shape));
    if (static_cast<uint64_t>(numel) * DTypeSize(f.dtype) != f.nbytes) {
      return Status::Invalid(what, ": nbytes ", f.nbytes, " does not match shape ",
                             ShapeToString(f.shape), " of ", DTypeName(f.dtype));
    }
  }
  return f;
}

// Fast readers for the hot decode path: no allocation unless it fails.
bool ReadU64(const msgpack::object& o, uint64_t* out) {
  if (o.type != msgpack::type::POSITIVE_INTEGER) return false;
  *out = o.via.u64;
  return true;
}

bool ReadI64(const msgpack::object& o, int64_t* out) {
  if (o.type == msgpack::type::POSITIVE_INTEGER) {
    if (o.via.u64 > static_cast<uint64_t>(INT64_MAX)) return false;
    *out = static_cast<int64_t>(o.via.u64);
    return true;
  }
  if (o.type == msgpack::type::NEGATIVE_INTEGER) {
    *out = o.via.i64;
    return true;
  }
  return false;
}

// Decodes a FieldInfo; on failure returns what was wrong (static text).
const char* ReadFieldInfo(const msgpack::object& o, FieldInfo* f) {
  if (o.type != msgpack::type::ARRAY || (o.via.array.size != 5 && o.via.array.size != 7)) {
    return "must be an array of 5 (or 7, with pack and offset)";
  }
  const msgpack::object* a = o.via.array.ptr;
  if (a[0].type != msgpack::type::BOOLEAN) return "produced must be a bool";
  f->produced = a[0].via.boolean;
  uint64_t kind, dtype;
  if (!ReadU64(a[1], &kind) || kind >= static_cast<uint64_t>(kNumFieldKinds)) return "unknown field kind";
  if (!ReadU64(a[2], &dtype) || dtype >= static_cast<uint64_t>(kNumDTypes)) return "unknown dtype id";
  f->kind = static_cast<FieldKind>(kind);
  f->dtype = static_cast<DType>(dtype);
  if (a[3].type != msgpack::type::ARRAY) return "shape must be an array";
  if (a[3].via.array.size > 64) return "shape has more than 64 dimensions";
  f->shape.resize(a[3].via.array.size);
  for (uint32_t i = 0; i < a[3].via.array.size; ++i) {
    if (!ReadI64(a[3].via.array.ptr[i], &f->shape[i])) return "shape must hold integers";
  }
  if (!ReadU64(a[4], &f->nbytes)) return "nbytes must be an unsigned integer";
  f->pack = f->offset = 0;
  if (o.via.array.size == 7) {
    if (!ReadU64(a[5], &f->pack) || f->pack == 0) return "pack must be an unsigned integer other than 0";
    if (!ReadU64(a[6], &f->offset)) return "offset must be an unsigned integer";
    if (!PlacementFits(*f)) return "offset + nbytes overflows";
  }
  if (f->kind == FieldKind::kTensor && f->produced) {
    auto numel = NumElements(f->shape);
    if (!numel.ok()) return "invalid shape";
    if (static_cast<uint64_t>(*numel) * DTypeSize(f->dtype) != f->nbytes) {
      return "nbytes does not match shape and dtype";
    }
  }
  return nullptr;
}

}  // namespace

void PackFieldInfoRecord(Packer& pk, const FieldInfo& f) { PackFieldInfo(pk, f); }

Result<FieldInfo> UnpackFieldInfoRecord(const msgpack::object& o, const std::string& what) {
  return UnpackFieldInfo(o, what);
}

Result<std::string> ValidPartitionOf(const tqds::wire::MapReader& r) {
  TQDS_ASSIGN_OR_RETURN(std::string p, r.Get<std::string>("partition_id"));
  TQDS_RETURN_NOT_OK(ValidateName(p, "partition_id").WithContext(r.what()));
  return p;
}

Status ValidateName(std::string_view name, const char* what) {
  if (name.empty()) return Status::Invalid(what, " must not be empty");
  if (name.size() > kMaxNameBytes) return Status::Invalid(what, " is longer than ", kMaxNameBytes, " bytes");
  if (name.find('\0') != std::string_view::npos) return Status::Invalid(what, " contains a NUL byte");
  return Status::OK();
}

void PackMetaValue(Packer& pk, const MetaValue& value) {
  struct Visitor {
    Packer& pk;
    void operator()(std::monostate) const { pk.pack_nil(); }
    void operator()(bool b) const { b ? pk.pack_true() : pk.pack_false(); }
    void operator()(int64_t i) const { pk.pack_int64(i); }
    void operator()(double d) const { pk.PackFloat64(d); }  // stays a float, even 1.0
    void operator()(const std::string& s) const { pk.pack(s); }
    void operator()(const MetaBytes& b) const {
      pk.pack_bin(static_cast<uint32_t>(b.data.size()));
      pk.pack_bin_body(b.data.data(), static_cast<uint32_t>(b.data.size()));
    }
    void operator()(const MetaPickled& p) const {
      pk.pack_ext(p.data.size(), kMetaPickledExt);
      pk.pack_ext_body(p.data.data(), static_cast<uint32_t>(p.data.size()));
    }
    void operator()(const MetaList& l) const {
      pk.pack_array(static_cast<uint32_t>(l.size()));
      for (const auto& v : l) PackMetaValue(pk, v);
    }
    void operator()(const MetaMap& m) const {
      pk.pack_map(static_cast<uint32_t>(m.size()));
      for (const auto& [k, v] : m) {
        pk.pack(k);
        PackMetaValue(pk, v);
      }
    }
  };
  std::visit(Visitor{pk}, value);
}

namespace {
// `depth`: lists/maps around `o` (the CustomMeta map itself not counted).
Result<MetaValue> ReadMetaValue(const msgpack::object& o, int depth, const std::string& what) {
  switch (o.type) {
    case msgpack::type::NIL:
      return MetaValue();
    case msgpack::type::BOOLEAN:
      return MetaValue(o.via.boolean);
    case msgpack::type::POSITIVE_INTEGER:
      if (o.via.u64 > static_cast<uint64_t>(INT64_MAX)) {
        return Status::Invalid(what, ": integer ", o.via.u64, " is out of the int64 range");
      }
      return MetaValue(static_cast<int64_t>(o.via.u64));
    case msgpack::type::NEGATIVE_INTEGER:
      return MetaValue(o.via.i64);
    case msgpack::type::FLOAT32:
    case msgpack::type::FLOAT64:
      return MetaValue(o.via.f64);
    case msgpack::type::STR:
      return MetaValue(std::string(o.via.str.ptr, o.via.str.size));
    case msgpack::type::BIN:
      return MetaValue(MetaBytes{std::string(o.via.bin.ptr, o.via.bin.size)});
    case msgpack::type::EXT:
      if (o.via.ext.type() != kMetaPickledExt) {
        return Status::Invalid(what, ": unknown extension type ", int(o.via.ext.type()));
      }
      return MetaValue(MetaPickled{std::string(o.via.ext.data(), o.via.ext.size)});
    case msgpack::type::ARRAY:
    case msgpack::type::MAP:
      break;
    default:
      return Status::Invalid(what, ": unsupported msgpack type");
  }
  if (depth >= kMaxMetaDepth) {
    return Status::Invalid(what, ": lists/maps nested deeper than ", kMaxMetaDepth, " levels");
  }
  if (o.type == msgpack::type::ARRAY) {
    MetaList list;
    list.reserve(o.via.array.size);
    for (uint32_t i = 0; i < o.via.array.size; ++i) {
      TQDS_ASSIGN_OR_RETURN(MetaValue v, ReadMetaValue(o.via.array.ptr[i], depth + 1, what));
      list.push_back(std::move(v));
    }
    return MetaValue(std::move(list));
  }
  MetaMap map;
  map.reserve(o.via.map.size);
  for (uint32_t i = 0; i < o.via.map.size; ++i) {
    const auto& kv = o.via.map.ptr[i];
    if (kv.key.type != msgpack::type::STR) return Status::Invalid(what, ": nested map keys must be strings");
    TQDS_ASSIGN_OR_RETURN(MetaValue v, ReadMetaValue(kv.val, depth + 1, what));
    map.emplace_back(std::string(kv.key.via.str.ptr, kv.key.via.str.size), std::move(v));
  }
  return MetaValue(std::move(map));
}
}  // namespace

Result<MetaValue> UnpackMetaValue(const msgpack::object& obj, const std::string& what) {
  return ReadMetaValue(obj, 0, what);
}

void PackCustomMeta(Packer& pk, const CustomMeta& custom) {
  pk.pack_map(static_cast<uint32_t>(custom.size()));
  for (const auto& [k, v] : custom) {
    pk.pack(k);
    PackMetaValue(pk, v);
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
    TQDS_ASSIGN_OR_RETURN(out[key], ReadMetaValue(kv.val, 0, what + "['" + key + "']"));
  }
  return out;
}

namespace {

static_assert(std::endian::native == std::endian::little, "BatchMeta's bin columns are little-endian");

template <typename T>
void PackBinColumn(Packer& pk, const std::vector<T>& v) {
  const auto bytes = static_cast<uint32_t>(v.size() * sizeof(T));
  pk.pack_bin(bytes);
  pk.pack_bin_body(reinterpret_cast<const char*>(v.data()), bytes);
}

// A bin column of exactly n values of T; false when it is not one.
template <typename T>
bool ReadBinColumn(const msgpack::object* o, size_t n, std::vector<T>* out) {
  if (o == nullptr || o->type != msgpack::type::BIN || o->via.bin.size != n * sizeof(T)) return false;
  out->resize(n);
  if (n > 0) std::memcpy(out->data(), o->via.bin.ptr, n * sizeof(T));
  return true;
}

// A body whose gidx is a sequence says its number of samples in a few
// bytes: it may stand for at most this many samples x (fields + 1), so
// that a tiny hostile body cannot make its receiver build millions of
// records (a bigger meta carries gidx as bytes, 8 a sample).
constexpr uint64_t kMaxSequenceRecords = uint64_t{1} << 18;

// A value of T from a msgpack integer, when T holds it.
template <typename T>
bool ReadInt(const msgpack::object& o, T* out) {
  static_assert(sizeof(T) <= sizeof(int64_t));
  if constexpr (std::is_signed_v<T>) {
    int64_t v = 0;
    if (!ReadI64(o, &v)) return false;
    if constexpr (sizeof(T) < sizeof(int64_t)) {
      if (v < std::numeric_limits<T>::min() || v > std::numeric_limits<T>::max()) return false;
    }
    *out = static_cast<T>(v);
  } else {
    uint64_t v = 0;
    if (!ReadU64(o, &v)) return false;
    if constexpr (sizeof(T) < sizeof(uint64_t)) {
      if (v > std::numeric_limits<T>::max()) return false;
    }
    *out = static_cast<T>(v);
  }
  return true;
}

// A column as the decoder reads it: [first, step] when it is a sequence
// (and `as_sequence`), else a bin column of its values.
template <typename T>
void PackColumn(Packer& pk, const IntColumn<T>& c, bool as_sequence = true) {
  if (as_sequence && c.IsSequence()) {
    pk.pack_array(2);
    pk.pack(c[0]);
    pk.pack(*c.step());
    return;
  }
  if (const std::vector<T>* v = c.values()) return PackBinColumn(pk, *v);
  std::vector<T> all(c.size());  // fewer than two values, or a sequence written out
  for (size_t i = 0; i < all.size(); ++i) all[i] = c[i];
  PackBinColumn(pk, all);
}

// A column of exactly n values of T, as PackColumn writes it: a bin
// column, or [first, step] (step >= 0, the last value first + (n - 1) x
// step within T), kept as the sequence; false when it is neither.
template <typename T>
bool ReadColumn(const msgpack::object* o, size_t n, IntColumn<T>* out) {
  if (o == nullptr) return false;
  if (o->type != msgpack::type::ARRAY) {
    std::vector<T> values;
    if (!ReadBinColumn(o, n, &values)) return false;
    *out = IntColumn<T>(std::move(values));
    return true;
  }
  T first{}, step{};
  if (o->via.array.size != 2 || !ReadInt(o->via.array.ptr[0], &first) || !ReadInt(o->via.array.ptr[1], &step)) {
    return false;
  }
  if constexpr (std::is_signed_v<T>) {
    if (step < 0) return false;
  }
  T span{}, last{};
  if (n > 0 && (__builtin_mul_overflow(static_cast<T>(n - 1), step, &span) ||
                __builtin_add_overflow(first, span, &last))) {
    return false;
  }
  *out = IntColumn<T>::Sequence(first, step, n);
  return true;
}

// The row form: {"fields", "samples": [[index, generation, partition,
// [FieldInfo...], custom]...]}: read from older builds' pickles and
// hand-built bodies, written for what the column form cannot carry.
Result<BatchMeta> UnpackRowBatchMeta(std::vector<std::string> names, const msgpack::object& so,
                                     const std::string& what) {
  TQDS_ASSIGN_OR_RETURN(auto arr, AsArray(so, what + ".samples"));
  std::vector<SampleMeta> samples(arr->size);
  auto bad = [&](uint32_t i, const std::string& part, const char* why) {
    return Status::Invalid(what, ".samples[", i, "]", part.empty() ? "" : ".", part, ": ", why);
  };
  for (uint32_t i = 0; i < arr->size; ++i) {
    const msgpack::object& so_i = arr->ptr[i];
    if (so_i.type != msgpack::type::ARRAY || so_i.via.array.size != 5) {
      return AsArray(so_i, what + ".samples[" + std::to_string(i) + "]", 5).status();
    }
    const msgpack::object* a = so_i.via.array.ptr;
    SampleMeta& s = samples[i];
    if (!ReadI64(a[0], &s.global_index)) return bad(i, "global_index", "must be an integer");
    if (!ReadU64(a[1], &s.generation)) return bad(i, "generation", "must be an unsigned integer");
    if (a[2].type != msgpack::type::STR) return bad(i, "partition_id", "must be a string");
    std::string_view pid(a[2].via.str.ptr, a[2].via.str.size);
    if (i > 0 && samples[i - 1].partition_id == pid) {
      s.partition_id = samples[i - 1].partition_id;
    } else {
      s.partition_id.assign(pid);
    }
    if (a[3].type != msgpack::type::ARRAY) return bad(i, "fields", "must be an array");
    if (a[3].via.array.size != names.size()) {
      return Status::Invalid(what, ".samples[", i, "] has ", a[3].via.array.size, " field records for ",
                             names.size(), " fields");
    }
    s.fields.resize(names.size());
    for (uint32_t f = 0; f < names.size(); ++f) {
      if (const char* why = ReadFieldInfo(a[3].via.array.ptr[f], &s.fields[f])) {
        std::string fw = what + ".samples[" + std::to_string(i) + "]." + names[f];
        auto detailed = UnpackFieldInfo(a[3].via.array.ptr[f], fw);
        return detailed.ok() ? bad(i, names[f], why) : detailed.status();
      }
    }
    if (a[4].type != msgpack::type::NIL && !(a[4].type == msgpack::type::MAP && a[4].via.map.size == 0)) {
      TQDS_ASSIGN_OR_RETURN(s.custom, UnpackCustomMeta(a[4], what + ".samples[" + std::to_string(i) + "].custom"));
    }
  }
  return BatchMeta(std::move(names), std::move(samples));
}

// Partition names that each sample refers to by index (column form,
// SampleList) and that the decoder copies into every sample: no longer
// than a valid name (ValidateName), so a small body cannot expand by its
// names.
Status CheckPartitionNames(const std::vector<std::string>& partitions, const std::string& what) {
  for (size_t i = 0; i < partitions.size(); ++i) {
    if (partitions[i].size() > kMaxNameBytes) {
      return Status::Invalid(what, ".partitions[", i, "] is ", partitions[i].size(), " bytes, more than ",
                             kMaxNameBytes);
    }
  }
  return Status::OK();
}

// The distinct partitions of `meta` in order of first appearance, and each
// sample's index into them (the column form and SampleList).
struct PartitionIndex {
  std::vector<std::string> partitions;
  IntColumn<uint32_t> of_sample;  // one partition: [0, 0], no value per sample
};
// A BatchMeta's samples through the interface PackBatchMetaOf reads (that
// of SampleRows, controller_state.h).
struct MetaSamples {
  const BatchMeta& meta;
  size_t size() const { return meta.size(); }
  const std::vector<std::string>& field_names() const { return meta.field_names(); }
  size_t field_count(size_t i) const { return meta.samples()[i].fields.size(); }
  const FieldInfo& field(size_t i, size_t f) const { return meta.samples()[i].fields[f]; }
  int64_t global_index(size_t i) const { return meta.samples()[i].global_index; }
  uint64_t generation(size_t i) const { return meta.samples()[i].generation; }
  const std::string& partition_id(size_t i) const { return meta.samples()[i].partition_id; }
  const CustomMeta& custom(size_t i) const { return meta.samples()[i].custom; }
};

}  // namespace

FieldInfo ProducedRecord(const Value& v) {
  FieldInfo fi;
  fi.produced = true;
  fi.kind = v.kind();
  fi.dtype = v.dtype();
  fi.shape = v.shape();
  fi.nbytes = v.nbytes();
  return fi;
}

namespace {

// A batch's values as the samples of a put that names no sample yet (the
// request of a KV put, whose controller makes the samples): global index
// -1, generation 0, one partition, no custom meta; every value produced,
// where `placed` says. The same interface as MetaSamples, without a record
// per sample of a field whose samples all share one (a dense column); the
// records carry no place: place() says it.
class BatchSamples {
 public:
  BatchSamples(const Batch& batch, const std::string& partition_id,
               const std::vector<std::vector<Placement>>& placed)
      : batch_(batch), partition_id_(partition_id), placed_(placed), shared_(batch.num_fields()),
        rows_(batch.num_fields()) {
    for (size_t f = 0; f < batch.num_fields(); ++f) {
      if (const Value* whole = batch.Dense(f); whole != nullptr && batch.batch_size() > 0) {
        // Kept whole (AddTensor): every sample is one row of it.
        FieldInfo& r = shared_[f].emplace();
        r.produced = true;
        r.kind = FieldKind::kTensor;
        r.dtype = whole->dtype();
        r.shape.assign(whole->shape().begin() + 1, whole->shape().end());
        r.nbytes = whole->nbytes() / batch.batch_size();
        continue;
      }
      const Column& col = batch.column(f);
      bool same = !col.empty();
      for (size_t i = 1; i < col.size() && same; ++i) {
        same = col[i].kind() == col[0].kind() && col[i].dtype() == col[0].dtype() &&
               col[i].nbytes() == col[0].nbytes() && col[i].shape() == col[0].shape();
      }
      if (same) {
        shared_[f] = ProducedRecord(col[0]);
        continue;
      }
      rows_[f].reserve(col.size());
      for (const Value& v : col) rows_[f].push_back(ProducedRecord(v));
    }
  }
  size_t size() const { return batch_.batch_size(); }
  const std::vector<std::string>& field_names() const { return batch_.keys(); }
  size_t field_count(size_t) const { return batch_.num_fields(); }
  const FieldInfo& field(size_t i, size_t f) const { return shared_[f] ? *shared_[f] : rows_[f][i]; }
  const FieldInfo* shared(size_t f) const { return shared_[f] ? &*shared_[f] : nullptr; }
  Placement place(size_t i, size_t f) const {
    return f < placed_.size() && i < placed_[f].size() ? placed_[f][i] : Placement{};
  }
  int64_t global_index(size_t) const { return -1; }
  uint64_t generation(size_t) const { return 0; }
  const std::string& partition_id(size_t) const { return partition_id_; }
  const CustomMeta& custom(size_t) const { return no_custom_; }

 private:
  const Batch& batch_;
  const std::string& partition_id_;
  const std::vector<std::vector<Placement>>& placed_;
  std::vector<std::optional<FieldInfo>> shared_;
  std::vector<std::vector<FieldInfo>> rows_;  // of the fields not shared
  CustomMeta no_custom_;
};

// Where sample i's value of field f lies.
template <typename Samples>
Placement PlaceOf(const Samples& m, size_t i, size_t f) {
  if constexpr (requires { m.place(i, f); }) {
    return m.place(i, f);
  } else {
    const FieldInfo& fi = m.field(i, f);
    return Placement{fi.pack, fi.offset};
  }
}

template <typename Samples>
PartitionIndex IndexPartitionsOf(const Samples& m) {
  const size_t n = m.size();
  PartitionIndex out;
  std::unordered_map<std::string_view, uint32_t> index_of;  // views of the samples' own names
  for (size_t i = 0; i < n; ++i) {
    // The same string object (one partition's rows, a batch's one id) is
    // known equal without comparing its bytes.
    if (i > 0 && (&m.partition_id(i) == &m.partition_id(i - 1) || m.partition_id(i) == m.partition_id(i - 1))) {
      out.of_sample.push_back(out.of_sample[i - 1]);
      continue;
    }
    auto [it, fresh] = index_of.try_emplace(m.partition_id(i), static_cast<uint32_t>(out.partitions.size()));
    if (fresh) out.partitions.push_back(m.partition_id(i));
    out.of_sample.push_back(it->second);
  }
  return out;
}
PartitionIndex IndexPartitions(const BatchMeta& meta) { return IndexPartitionsOf(MetaSamples{meta}); }

// What a column-form meta of n samples expands to in field records: one
// per sample and field, plus one per dimension of each shape a shared
// record copies into every sample (a per-sample record is paid for by its
// own bytes on the wire).
uint64_t SharedRecordCost(uint64_t n, size_t dims) { return n * (1 + dims); }

// The row form, for metas the column form cannot carry (see PackBatchMeta).
template <typename Samples>
void PackRowBatchMeta(Packer& pk, const Samples& m) {
  pk.pack_map(2);
  pk.pack("fields");
  pk.pack(m.field_names());
  pk.pack("samples");
  pk.pack_array(static_cast<uint32_t>(m.size()));
  for (size_t i = 0; i < m.size(); ++i) {
    pk.pack_array(5);
    pk.pack_int64(m.global_index(i));
    pk.pack_uint64(m.generation(i));
    pk.pack(m.partition_id(i));
    const size_t nf = m.field_count(i);
    pk.pack_array(static_cast<uint32_t>(nf));
    for (size_t f = 0; f < nf; ++f) PackFieldInfo(pk, m.field(i, f), PlaceOf(m, i, f));
    PackCustomMeta(pk, m.custom(i));
  }
}

// The column form's "place" of one field: one pack id for every sample or
// a column of them, and a column of offsets.
using FieldPlaces = MetaRecords::Places;

Status ReadPlaceColumns(const msgpack::object& po, const std::vector<std::string>& names, const std::string& what,
                        size_t n, std::vector<FieldPlaces>* out) {
  TQDS_ASSIGN_OR_RETURN(auto places, AsArray(po, what + ".place"));
  if (places->size != names.size()) {
    return Status::Invalid(what, ".place has ", places->size, " entries for ", names.size(), " fields");
  }
  out->assign(names.size(), FieldPlaces{});
  for (uint32_t f = 0; f < names.size(); ++f) {
    const msgpack::object& e = places->ptr[f];
    if (e.type == msgpack::type::NIL) continue;
    const std::string fw = what + ".place." + names[f];
    TQDS_ASSIGN_OR_RETURN(auto pair, AsArray(e, fw, 2));
    FieldPlaces& fp = (*out)[f];
    fp.present = true;
    fp.single = ReadU64(pair->ptr[0], &fp.one);
    if (!fp.single && !ReadColumn(&pair->ptr[0], n, &fp.packs)) {
      return Status::Invalid(fw, "[0] must be a pack id, bytes holding ", n, " uint64 pack ids, or [first, step] of them");
    }
    if (!ReadColumn(&pair->ptr[1], n, &fp.offsets)) {
      return Status::Invalid(fw, "[1] must be bytes holding ", n, " uint64 offsets, or [first, step] of them");
    }
  }
  return Status::OK();
}

// Whether sample i's place in field f's columns holds a value of `nbytes`
// (its end must not overflow).
Status CheckPlace(const FieldPlaces& fp, uint64_t nbytes, const std::string& name, const std::string& what,
                  size_t i) {
  const uint64_t pack = fp.single ? fp.one : fp.packs[i];
  const uint64_t offset = pack == 0 ? 0 : fp.offsets[i];
  if (pack != 0 && offset > UINT64_MAX - nbytes) {
    return Status::Invalid(what, ".place.", name, ": sample ", i, "'s offset ", offset, " + nbytes ", nbytes,
                           " overflows");
  }
  return Status::OK();
}

}  // namespace

namespace {

template <typename Samples>
void PackBatchMetaOf(Packer& pk, const Samples& m) {
  const auto& names = m.field_names();
  const size_t n = m.size();
  bool rows = n * sizeof(int64_t) > tqds::wire::DefaultLimits().max_str;
  for (size_t i = 0; i < n && !rows; ++i) {
    rows = m.field_count(i) != names.size() || m.partition_id(i).size() > kMaxNameBytes;
  }
  if (rows) return PackRowBatchMeta(pk, m);
  // One pass over the samples gathers their identities and, per field,
  // whether every record is the same one and where each value lies: a
  // controller's records (cold, one cache line or more apart) are each
  // read once.
  const size_t nf = names.size();
  constexpr bool kShareGiven = requires { m.shared(size_t{0}); };
  std::vector<uint8_t> shared(nf, n > 0 ? 1 : 0);
  if constexpr (kShareGiven) {
    for (size_t f = 0; f < nf; ++f) shared[f] = m.shared(f) != nullptr;
  }
  std::vector<IntColumn<uint64_t>> packs(nf), offsets(nf);
  IntColumn<int64_t> gidx;
  IntColumn<uint64_t> gen;
  bool any_custom = false;
  // Each record is looked up once (a controller's SampleRows finds it
  // through the row's position and the field's id) and compared with a copy
  // of the first row's.
  constexpr bool kPlaceGiven = requires { m.place(size_t{0}, size_t{0}); };
  std::vector<FieldInfo> first;
  if constexpr (!kShareGiven) {
    for (size_t f = 0; f < nf && n > 0; ++f) first.push_back(m.field(0, f));
  }
  auto add_place = [&](size_t f, const Placement& at) {
    packs[f].push_back(at.pack);
    offsets[f].push_back(at.pack == 0 ? 0 : at.offset);
  };
  for (size_t i = 0; i < n; ++i) {
    gidx.push_back(m.global_index(i));
    gen.push_back(m.generation(i));
    any_custom = any_custom || !m.custom(i).empty();
    for (size_t f = 0; f < nf; ++f) {
      if constexpr (kShareGiven && kPlaceGiven) {
        add_place(f, m.place(i, f));
      } else {
        const FieldInfo& fi = m.field(i, f);
        if constexpr (!kShareGiven) {
          if (shared[f] && i > 0) shared[f] = fi.SameValue(first[f]);
        }
        if constexpr (kPlaceGiven) {
          add_place(f, m.place(i, f));
        } else {
          add_place(f, Placement{fi.pack, fi.offset});
        }
      }
    }
  }
  std::vector<uint8_t> placed(nf, 0);  // shared, with packed values: a "place" entry
  uint64_t cost = 0;
  for (size_t f = 0; f < nf; ++f) {
    placed[f] = shared[f] && packs[f].AnyNonZero();
    cost += SharedRecordCost(n, shared[f] ? m.field(0, f).shape.size() : 0);
    if (cost > kMaxMetaFieldRecords) return PackRowBatchMeta(pk, m);
  }
  const PartitionIndex parts = IndexPartitionsOf(m);
  const bool any_placed = std::find(placed.begin(), placed.end(), 1) != placed.end();
  const bool gidx_sequence =  // then "n" says how many
      static_cast<uint64_t>(n) * (nf + 1) <= kMaxSequenceRecords && gidx.IsSequence();
  pk.pack_map(6 + (gidx_sequence ? 1 : 0) + (any_custom ? 1 : 0) + (any_placed ? 1 : 0));
  pk.pack("fields");
  pk.pack(names);
  pk.pack("partitions");
  pk.pack(parts.partitions);
  pk.pack("pidx");
  PackColumn(pk, parts.of_sample);
  pk.pack("gidx");
  PackColumn(pk, gidx, gidx_sequence);
  if (gidx_sequence) {
    pk.pack("n");
    pk.pack(static_cast<uint64_t>(n));
  }
  pk.pack("gen");
  PackColumn(pk, gen);
  pk.pack("finfo");
  pk.pack_array(static_cast<uint32_t>(nf));
  for (size_t f = 0; f < nf; ++f) {
    if (shared[f]) {
      pk.pack_array(1);
      PackFieldInfo(pk, m.field(0, f), /*with_place=*/false);
    } else {
      pk.pack_array(static_cast<uint32_t>(n));
      for (size_t i = 0; i < n; ++i) PackFieldInfo(pk, m.field(i, f), Placement{packs[f][i], offsets[f][i]});
    }
  }
  if (any_placed) {
    // Where a shared record's values lie: per field nil, or [packs, offsets]
    // with packs one id for every sample or a column (0: not packed).
    pk.pack("place");
    pk.pack_array(static_cast<uint32_t>(nf));
    for (size_t f = 0; f < nf; ++f) {
      if (!placed[f]) {
        pk.pack_nil();
        continue;
      }
      pk.pack_array(2);
      if (packs[f].AllEqual()) {
        pk.pack_uint64(packs[f][0]);
      } else {
        PackColumn(pk, packs[f]);
      }
      PackColumn(pk, offsets[f]);
    }
  }
  if (any_custom) {
    pk.pack("custom");
    pk.pack_array(static_cast<uint32_t>(n));
    for (size_t i = 0; i < n; ++i) {
      if (m.custom(i).empty()) {
        pk.pack_nil();
      } else {
        PackCustomMeta(pk, m.custom(i));
      }
    }
  }
}

}  // namespace

// The column form (docs/wire_format.md): identities as little-endian bin
// columns, one FieldInfo per field when every sample has the same record,
// custom maps only when one is not empty; 16384 samples of dense fields
// decode from a few dozen msgpack objects instead of about 400000. Metas
// it cannot carry go in the row form: a sample whose field records do not
// match the field names (the receiver says so), a partition name longer
// than a valid one, more samples than a bin column holds (2^21), or more
// field records than a receiver accepts.
void PackBatchMeta(Packer& pk, const BatchMeta& meta) { PackBatchMetaOf(pk, MetaSamples{meta}); }
void PackBatchMeta(Packer& pk, const SampleRows& rows) { PackBatchMetaOf(pk, rows); }
void PackBatchMeta(Packer& pk, const Batch& batch, const std::string& partition_id,
                   const std::vector<std::vector<Placement>>& placed) {
  PackBatchMetaOf(pk, BatchSamples(batch, partition_id, placed));
}

// The decoder's way into MetaRecords.
struct MetaRecordsAccess {
  static std::vector<std::string>& names(MetaRecords& m) { return m.names_; }
  static size_t& n(MetaRecords& m) { return m.n_; }
  static std::vector<FieldInfo>& shared(MetaRecords& m) { return m.shared_; }
  static std::vector<std::vector<FieldInfo>>& rows(MetaRecords& m) { return m.rows_; }
  static std::vector<MetaRecords::Places>& places(MetaRecords& m) { return m.places_; }
  static std::vector<CustomMeta>& custom(MetaRecords& m) { return m.custom_; }
};

namespace {

using RA = MetaRecordsAccess;

// A column-form body read and checked in full, its samples not made yet.
Result<MetaColumns> ReadMetaColumns(const tqds::wire::MapReader& r, std::vector<std::string> names,
                                    const std::string& what) {
  const msgpack::object* gi = r.Find("gidx");
  if (gi == nullptr) return Status::Invalid(what, ": missing field 'samples' (or the columns 'gidx', ...)");
  // The number of samples: gidx's length, or "n" when gidx is a sequence.
  size_t n = 0;
  if (gi->type == msgpack::type::ARRAY) {
    uint64_t count = 0;
    const msgpack::object* no = r.Find("n");
    const uint64_t most = kMaxSequenceRecords / (names.size() + 1);
    if (no == nullptr || !ReadU64(*no, &count) || count > most) {
      return Status::Invalid(what, ".n must be the number of samples (at most ", most, " for ", names.size(),
                             " fields) when gidx is [first, step]");
    }
    n = count;
  } else if (gi->type != msgpack::type::BIN || gi->via.bin.size % sizeof(int64_t) != 0) {
    return Status::Invalid(what, ".gidx must be bytes holding int64 values, or [first, step] of them");
  } else {
    n = gi->via.bin.size / sizeof(int64_t);
  }
  MetaColumns out;
  TQDS_ASSIGN_OR_RETURN(out.partitions, r.Get<std::vector<std::string>>("partitions"));
  TQDS_RETURN_NOT_OK(CheckPartitionNames(out.partitions, what));
  if (!ReadColumn(gi, n, &out.gidx)) {
    return Status::Invalid(what, ".gidx must be bytes holding int64 values, or [first, step] of them "
                           "(step >= 0, every value an int64)");
  }
  if (!ReadColumn(r.Find("gen"), n, &out.gen)) {
    return Status::Invalid(what, ".gen must be bytes holding ", n,
                           " uint64 values (one per gidx), or [first, step] of them");
  }
  if (!ReadColumn(r.Find("pidx"), n, &out.pidx)) {
    return Status::Invalid(what, ".pidx must be bytes holding ", n,
                           " uint32 values (one per gidx), or [first, step] of them");
  }
  // One field record per field can stand for every sample: bound what a
  // small body may expand to (the encoder writes the row form past this).
  if (!names.empty() && n > kMaxMetaFieldRecords / names.size()) {
    return Status::Invalid(what, ": ", n, " samples x ", names.size(), " fields is more than ",
                           kMaxMetaFieldRecords, " field records");
  }
  uint64_t cost = static_cast<uint64_t>(n) * names.size();
  const msgpack::object* fo = r.Find("finfo");
  if (fo == nullptr) return Status::Invalid(what, ": missing field 'finfo'");
  TQDS_ASSIGN_OR_RETURN(auto columns, AsArray(*fo, what + ".finfo"));
  if (columns->size != names.size()) {
    return Status::Invalid(what, ".finfo has ", columns->size, " columns for ", names.size(), " fields");
  }
  auto read_record = [&](uint32_t f, uint32_t j, FieldInfo* fi) -> Status {
    if (const char* why = ReadFieldInfo(columns->ptr[f].via.array.ptr[j], fi)) {
      const std::string rw = what + ".finfo." + names[f] + "[" + std::to_string(j) + "]";
      auto detailed = UnpackFieldInfo(columns->ptr[f].via.array.ptr[j], rw);
      return detailed.ok() ? Status::Invalid(rw, ": ", why) : detailed.status();
    }
    return Status::OK();
  };
  MetaRecords& rec = out.records;
  auto& shared = RA::shared(rec);
  auto& rows = RA::rows(rec);
  auto& places = RA::places(rec);
  shared.assign(names.size(), FieldInfo{});
  rows.assign(names.size(), {});
  places.assign(names.size(), FieldPlaces{});
  std::vector<uint32_t> per_sample;  // fields with a record per sample
  for (uint32_t f = 0; f < names.size(); ++f) {
    const std::string fw = what + ".finfo." + names[f];
    TQDS_ASSIGN_OR_RETURN(auto col, AsArray(columns->ptr[f], fw));
    if (col->size != n && col->size != 1) {
      return Status::Invalid(fw, " has ", col->size, " records for ", n, " samples (give 1 or ", n, ")");
    }
    if (col->size == n && n != 1) {  // one sample's one record is its shared record
      per_sample.push_back(f);
      continue;
    }
    TQDS_RETURN_NOT_OK(read_record(f, 0, &shared[f]));
    cost += SharedRecordCost(n, shared[f].shape.size()) - n;
    if (cost > kMaxMetaFieldRecords) {
      return Status::Invalid(fw, ": shared records of ", n, " samples with their shapes' dimensions are more than ",
                             kMaxMetaFieldRecords, " field records");
    }
  }
  if (const msgpack::object* po = r.Find("place"); po != nullptr && po->type != msgpack::type::NIL) {
    TQDS_RETURN_NOT_OK(ReadPlaceColumns(*po, names, what, n, &places));
  }
  std::vector<uint32_t> placed_shared;  // shared fields with places
  for (uint32_t f = 0; f < names.size(); ++f) {
    if (places[f].present && std::find(per_sample.begin(), per_sample.end(), f) == per_sample.end()) {
      placed_shared.push_back(f);
    }
  }
  // Each sample's partition and the places of shared records, sample by
  // sample; then the per-sample records, field by field. A sequence never
  // decreases: its last value is its largest, and when that one passes,
  // every sample does (else the loop names the first that fails).
  const bool pidx_known = n == 0 || (out.pidx.step() && out.pidx[n - 1] < out.partitions.size());
  std::vector<uint32_t> look;  // placed shared fields whose places are checked sample by sample
  for (uint32_t f : placed_shared) {
    const FieldPlaces& fp = places[f];
    const bool known = fp.single && fp.offsets.step() &&
                       (fp.one == 0 || n == 0 || fp.offsets[n - 1] <= UINT64_MAX - shared[f].nbytes);
    if (!known) look.push_back(f);
  }
  for (size_t i = 0; i < n && (!pidx_known || !look.empty()); ++i) {
    if (out.pidx[i] >= out.partitions.size()) {
      return Status::Invalid(what, ".pidx[", i, "] is ", out.pidx[i], " but there are ", out.partitions.size(),
                             " partitions");
    }
    for (uint32_t f : look) TQDS_RETURN_NOT_OK(CheckPlace(places[f], shared[f].nbytes, names[f], what, i));
  }
  for (uint32_t f : per_sample) {
    rows[f].resize(n);
    for (uint32_t j = 0; j < n; ++j) {
      TQDS_RETURN_NOT_OK(read_record(f, j, &rows[f][j]));
      if (places[f].present) TQDS_RETURN_NOT_OK(CheckPlace(places[f], rows[f][j].nbytes, names[f], what, j));
    }
  }
  if (const msgpack::object* co = r.Find("custom"); co != nullptr && co->type != msgpack::type::NIL) {
    TQDS_ASSIGN_OR_RETURN(auto cs, AsArray(*co, what + ".custom"));
    if (cs->size != n) return Status::Invalid(what, ".custom has ", cs->size, " entries for ", n, " samples");
    auto& custom = RA::custom(rec);
    custom.resize(n);
    for (uint32_t i = 0; i < n; ++i) {
      if (cs->ptr[i].type == msgpack::type::NIL) continue;
      TQDS_ASSIGN_OR_RETURN(custom[i], UnpackCustomMeta(cs->ptr[i], what + ".custom[" + std::to_string(i) + "]"));
    }
  }
  RA::names(rec) = std::move(names);
  RA::n(rec) = n;
  return out;
}

}  // namespace

Result<MetaRecords> MetaRecords::Of(BatchMeta meta) {
  MetaRecords out;
  const size_t n = meta.size(), nf = meta.field_names().size();
  out.n_ = n;
  out.names_ = meta.field_names();
  out.shared_.assign(nf, FieldInfo{});
  out.rows_.assign(nf, std::vector<FieldInfo>(n));
  out.places_.assign(nf, Places{});
  for (size_t i = 0; i < n; ++i) {
    SampleMeta& s = meta.mutable_samples()[i];
    if (s.fields.size() != nf) {
      return Status::Invalid("sample ", i, " carries ", s.fields.size(), " field records for ", nf, " fields");
    }
    for (size_t f = 0; f < nf; ++f) out.rows_[f][i] = std::move(s.fields[f]);
  }
  bool any_custom = false;
  for (const SampleMeta& s : meta.samples()) any_custom = any_custom || !s.custom.empty();
  if (any_custom) {
    out.custom_.resize(n);
    for (size_t i = 0; i < n; ++i) out.custom_[i] = std::move(meta.mutable_samples()[i].custom);
  }
  return out;
}

BatchMeta MetaColumns::TakeMeta(const std::vector<size_t>& fields) && {
  MetaRecords& rec = records;
  const size_t n = rec.size();
  std::vector<std::string> names;
  FieldInfos shared;  // every sample starts as a copy of these (one pass), then takes its places and own records
  std::vector<uint32_t> placed_shared, per_sample;  // positions in `fields`
  for (uint32_t k = 0; k < fields.size(); ++k) {
    const size_t f = fields[k];
    names.push_back(rec.field_names()[f]);
    shared.push_back(RA::shared(rec)[f]);
    if (!RA::rows(rec)[f].empty()) {
      per_sample.push_back(k);
    } else if (RA::places(rec)[f].present) {
      placed_shared.push_back(k);
    }
  }
  std::vector<SampleMeta> samples;
  samples.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    SampleMeta& sm = samples.emplace_back();
    sm.global_index = gidx[i];
    sm.generation = gen[i];
    sm.partition_id = partitions[pidx[i]];
    sm.fields = shared;
    for (uint32_t k : placed_shared) rec.Place(i, fields[k], &sm.fields[k]);
  }
  for (uint32_t k : per_sample) {
    auto& rows = RA::rows(rec)[fields[k]];
    for (size_t j = 0; j < n; ++j) {
      samples[j].fields[k] = std::move(rows[j]);
      rec.Place(j, fields[k], &samples[j].fields[k]);
    }
  }
  for (size_t i = 0; i < n && !RA::custom(rec).empty(); ++i) samples[i].custom = rec.TakeCustom(i);
  return BatchMeta(std::move(names), std::move(samples));
}

Result<BatchMeta> UnpackBatchMeta(const msgpack::object& obj, const std::string& what) {
  TQDS_ASSIGN_OR_RETURN(auto r, MapReader::Of(obj, what));
  TQDS_ASSIGN_OR_RETURN(auto names, r.Get<std::vector<std::string>>("fields"));
  if (const msgpack::object* so = r.Find("samples")) return UnpackRowBatchMeta(std::move(names), *so, what);
  TQDS_ASSIGN_OR_RETURN(MetaColumns c, ReadMetaColumns(r, std::move(names), what));
  std::vector<size_t> all(c.records.field_names().size());
  for (size_t f = 0; f < all.size(); ++f) all[f] = f;
  return std::move(c).TakeMeta(all);
}

Result<MetaColumns> UnpackMetaColumns(const msgpack::object& obj, const std::string& what) {
  TQDS_ASSIGN_OR_RETURN(auto r, MapReader::Of(obj, what));
  TQDS_ASSIGN_OR_RETURN(auto names, r.Get<std::vector<std::string>>("fields"));
  if (const msgpack::object* so = r.Find("samples")) {
    TQDS_ASSIGN_OR_RETURN(BatchMeta meta, UnpackRowBatchMeta(std::move(names), *so, what));
    MetaColumns c;
    PartitionIndex index = IndexPartitions(meta);
    c.partitions = std::move(index.partitions);
    c.pidx = std::move(index.of_sample);
    for (const SampleMeta& s : meta.samples()) {
      c.gidx.push_back(s.global_index);
      c.gen.push_back(s.generation);
    }
    TQDS_ASSIGN_OR_RETURN(c.records, MetaRecords::Of(std::move(meta)));
    return c;
  }
  return ReadMetaColumns(r, std::move(names), what);
}

Result<MetaRecords> UnpackMetaRecords(const msgpack::object& obj, const std::string& what) {
  TQDS_ASSIGN_OR_RETURN(MetaColumns c, UnpackMetaColumns(obj, what));
  return std::move(c.records);
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
  if (mode > static_cast<uint8_t>(FetchMode::kForceFetchAll)) {
    return Status::Invalid("GetMeta: unknown mode ", int(mode));
  }
  req.mode = static_cast<FetchMode>(mode);
  TQDS_ASSIGN_OR_RETURN(req.timeout_ms, r.GetOr<int64_t>("timeout_ms", 0));
  // Hostile or huge values: no wait below 0, at most kMaxGetMetaTimeout, so
  // the controller's deadline (now + timeout) cannot overflow.
  req.timeout_ms = std::clamp<int64_t>(req.timeout_ms, 0, kMaxGetMetaTimeout.count());
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

Message MetaMessage(MsgType type, const SampleRows& rows) {
  Message m(type, 0);
  m.set_body(tqds::wire::PackBody([&](Packer& pk) { PackBatchMeta(pk, rows); }));
  return m;
}

Result<BatchMeta> MetaFromMessage(const Message& m) {
  return UnpackBatchMeta(m.body(), "BatchMeta");
}

Message SampleListMessage(MsgType type, const BatchMeta& meta, const std::vector<uint64_t>& dead_packs,
                          const std::vector<uint8_t>& keyed) {
  const PartitionIndex parts = IndexPartitions(meta);
  const bool with_keyed = keyed.size() == meta.size() && std::find(keyed.begin(), keyed.end(), 0) != keyed.end();
  Message m(type, 0);
  m.set_body(tqds::wire::PackBody([&](Packer& pk) {
    pk.pack_map(3 + (dead_packs.empty() ? 0 : 1) + (with_keyed ? 1 : 0));
    if (!dead_packs.empty()) {
      pk.pack("dead_packs");
      PackBinColumn(pk, dead_packs);
    }
    if (with_keyed) {
      pk.pack("keyed");
      PackBinColumn(pk, keyed);
    }
    pk.pack("fields");
    pk.pack(meta.field_names());
    pk.pack("partitions");
    pk.pack(parts.partitions);
    pk.pack("samples");
    pk.pack_array(static_cast<uint32_t>(3 * meta.size()));
    for (size_t i = 0; i < meta.size(); ++i) {
      pk.pack_uint32(parts.of_sample[i]);
      pk.pack_int64(meta.samples()[i].global_index);
      pk.pack_uint64(meta.samples()[i].generation);
    }
  }));
  return m;
}

Result<BatchMeta> SampleListFromMessage(const Message& m) {
  TQDS_ASSIGN_OR_RETURN(auto r, MapReader::Of(m.body(), "SampleList"));
  TQDS_ASSIGN_OR_RETURN(auto fields, r.Get<std::vector<std::string>>("fields"));
  TQDS_ASSIGN_OR_RETURN(auto partitions, r.Get<std::vector<std::string>>("partitions"));
  TQDS_RETURN_NOT_OK(CheckPartitionNames(partitions, "SampleList"));
  const msgpack::object* so = r.Find("samples");
  if (so == nullptr) return Status::Invalid("SampleList: missing field 'samples'");
  TQDS_ASSIGN_OR_RETURN(auto arr, AsArray(*so, "SampleList.samples"));
  if (arr->size % 3 != 0) return Status::Invalid("SampleList.samples must hold triples");
  std::vector<SampleMeta> samples(arr->size / 3);
  for (size_t i = 0; i < samples.size(); ++i) {
    uint64_t p;
    const msgpack::object* t = arr->ptr + 3 * i;
    if (!ReadU64(t[0], &p) || p >= partitions.size() || !ReadI64(t[1], &samples[i].global_index) ||
        !ReadU64(t[2], &samples[i].generation)) {
      return Status::Invalid("SampleList.samples[", i, "] must be [partition, index, generation]");
    }
    samples[i].partition_id = partitions[p];
  }
  return BatchMeta(std::move(fields), std::move(samples));
}

Result<std::vector<uint8_t>> KeyedFromMessage(const Message& m, size_t n) {
  std::vector<uint8_t> out;
  TQDS_ASSIGN_OR_RETURN(auto r, MapReader::Of(m.body(), "SampleList"));
  const msgpack::object* k = r.Find("keyed");
  if (k == nullptr) {
    out.assign(n, 1);
  } else if (!ReadBinColumn(k, n, &out)) {
    return Status::Invalid("SampleList.keyed must be bytes holding ", n, " flags (one per sample)");
  }
  return out;
}

void PackDeadPacksEntry(Packer& pk, const std::vector<uint64_t>& dead_packs) {
  pk.pack("dead_packs");
  PackBinColumn(pk, dead_packs);
}

std::string EncodeDeadPacks(const std::vector<uint64_t>& dead_packs) {
  if (dead_packs.empty()) return {};
  return tqds::wire::PackBody([&](Packer& pk) {
    pk.pack_map(1);
    PackDeadPacksEntry(pk, dead_packs);
  });
}

Result<std::vector<uint64_t>> DeadPacksFromMessage(const Message& m) {
  std::vector<uint64_t> out;
  const msgpack::object& body = m.body();
  if (body.type == msgpack::type::NIL) return out;
  TQDS_ASSIGN_OR_RETURN(auto r, MapReader::Of(body, "dead packs"));
  const msgpack::object* d = r.Find("dead_packs");
  if (d == nullptr) return out;
  if (d->type != msgpack::type::BIN || d->via.bin.size % sizeof(uint64_t) != 0 ||
      !ReadBinColumn(d, d->via.bin.size / sizeof(uint64_t), &out)) {
    return Status::Invalid("dead_packs must be bytes holding uint64 pack ids");
  }
  return out;
}

std::string EncodeSampleStatus(const std::optional<SampleStatusMatrix>& m) {
  return tqds::wire::PackBody([&](Packer& pk) {
    if (!m) {
      pk.pack_map(1);
      pk.pack("found");
      pk.pack(false);
      return;
    }
    pk.pack_map(4);
    pk.pack("found");
    pk.pack(true);
    pk.pack("global_indexes");
    pk.pack(m->global_indexes);
    pk.pack("columns");
    pk.pack(m->columns);
    pk.pack("status");
    pk.pack_bin(static_cast<uint32_t>(m->status.size()));
    pk.pack_bin_body(reinterpret_cast<const char*>(m->status.data()), static_cast<uint32_t>(m->status.size()));
  });
}

Result<std::optional<SampleStatusMatrix>> DecodeSampleStatus(const msgpack::object& body) {
  TQDS_ASSIGN_OR_RETURN(auto r, MapReader::Of(body, "SampleStatus"));
  TQDS_ASSIGN_OR_RETURN(bool found, r.Get<bool>("found"));
  if (!found) return std::optional<SampleStatusMatrix>();
  SampleStatusMatrix m;
  TQDS_ASSIGN_OR_RETURN(m.global_indexes, r.Get<std::vector<int64_t>>("global_indexes"));
  TQDS_ASSIGN_OR_RETURN(m.columns, r.Get<std::vector<std::string>>("columns"));
  const msgpack::object* st = r.Find("status");
  if (st == nullptr || st->type != msgpack::type::BIN) {
    return Status::Invalid("SampleStatus: 'status' must be bytes");
  }
  m.status.assign(reinterpret_cast<const uint8_t*>(st->via.bin.ptr),
                  reinterpret_cast<const uint8_t*>(st->via.bin.ptr) + st->via.bin.size);
  if (m.status.size() != m.global_indexes.size() * m.columns.size()) {
    return Status::Invalid("SampleStatus: ", m.status.size(), " status bytes for ", m.global_indexes.size(),
                           " samples x ", m.columns.size(), " columns");
  }
  return std::optional<SampleStatusMatrix>(std::move(m));
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
