// Bodies of the TransferQueue messages (controller and storage units) and
// their msgpack codec. Socket-free: tested on bytes alone. The layouts are
// documented in docs/wire_format.md.
#pragma once

#include <algorithm>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/wire/message.h"
#include "queue/controller_state.h"
#include "tq/batch.h"
#include "tq/batch_meta.h"
#include "tq/partition_status.h"

namespace tq {
struct Placement;  // tq/storage.h
}  // namespace tq

namespace tq::internal {

using Packer = tqds::wire::BodyPacker;

// Checked msgpack reads: an array (of `expected` elements, when given) and
// a value of type T; a mismatch is an Invalid status naming `what`.
inline Result<const msgpack::object_array*> AsArray(const msgpack::object& o, const std::string& what,
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

// BatchMeta bodies (docs/wire_format.md): written in the column form, read
// in the column or the older row form. A column-form body may describe at
// most kMaxMetaFieldRecords sample x field records.
inline constexpr size_t kMaxMetaFieldRecords = size_t{1} << 23;
// Names (partitions, fields, tasks): at most this many bytes (ValidateName).
inline constexpr size_t kMaxNameBytes = 256;
void PackBatchMeta(Packer& pk, const BatchMeta& meta);
// The same bytes as PackBatchMeta(pk, ControllerState::MakeMeta(rows)).
void PackBatchMeta(Packer& pk, const SampleRows& rows);
// The field record of a value just written: produced, with the value's
// kind, dtype, shape and size (pack 0: set its place where it has one).
FieldInfo ProducedRecord(const Value& v);
// The same bytes as PackBatchMeta of the meta a put of `batch` into
// `partition_id` records (no sample named yet: global index -1, generation
// 0; every value produced, stored where `placed[f][i]` says), without
// making that meta's records.
void PackBatchMeta(Packer& pk, const Batch& batch, const std::string& partition_id,
                   const std::vector<std::vector<Placement>>& placed);
Result<BatchMeta> UnpackBatchMeta(const msgpack::object& obj, const std::string& what);

// A column of integers as the column form carries it: every value, or a
// sequence first, first + step, ... with step >= 0 (docs/wire_format.md),
// which stays two numbers: neither the encoder (push_back) nor the decoder
// (Sequence) writes a column of 16384 values for a batch. The decoder has
// checked that every value of a sequence it reads fits T.
template <typename T>
class IntColumn {
 public:
  IntColumn() = default;  // empty: a sequence until a value breaks it
  IntColumn(std::vector<T> values)  // NOLINT: a column of them
      : values_(std::move(values)), sequence_(false), n_(values_.size()) {}
  static IntColumn Sequence(T first, T step, size_t n) {
    IntColumn c;
    c.first_ = first;
    c.step_ = step;
    c.n_ = n;
    c.last_ = n > 0 ? c[n - 1] : T{};
    return c;
  }
  T operator[](size_t i) const { return sequence_ ? static_cast<T>(first_ + static_cast<T>(i) * step_) : values_[i]; }
  size_t size() const { return n_; }
  bool empty() const { return n_ == 0; }
  // The step between consecutive values when the column is a sequence
  // (0 for fewer than two values).
  std::optional<T> step() const { return sequence_ ? std::optional<T>(step_) : std::nullopt; }
  // Two values or more counting up: [first, step] on the wire.
  bool IsSequence() const { return sequence_ && n_ >= 2; }
  bool AllEqual() const { return n_ <= 1 || (sequence_ && step_ == T{}); }
  bool AnyNonZero() const {
    if (sequence_) return n_ > 0 && (first_ != T{} || (n_ > 1 && step_ != T{}));
    return std::any_of(values_.begin(), values_.end(), [](T v) { return v != T{}; });
  }
  // The values when they are written out (not a sequence), else null.
  const std::vector<T>* values() const { return sequence_ ? nullptr : &values_; }
  // Appends v; the column stays a sequence while v continues it.
  void push_back(T v) {
    if (sequence_ && n_ > 0 && !Continues(v)) Expand();
    if (sequence_) {
      if (n_ == 0) first_ = v;
      if (n_ == 1) step_ = static_cast<T>(static_cast<uint64_t>(v) - static_cast<uint64_t>(first_));
      last_ = v;
    } else {
      values_.push_back(v);
    }
    ++n_;
  }

 private:
  // Whether v is the next value (the second fixes the step; differences
  // in uint64 are exact for any two values with v >= the last).
  bool Continues(T v) const {
    if (v < last_) return false;
    const uint64_t d = static_cast<uint64_t>(v) - static_cast<uint64_t>(last_);
    return n_ == 1 ? d <= static_cast<uint64_t>(std::numeric_limits<T>::max()) : d == static_cast<uint64_t>(step_);
  }
  void Expand() {
    values_.resize(n_);
    for (size_t i = 0; i < n_; ++i) values_[i] = (*this)[i];
    sequence_ = false;
  }
  std::vector<T> values_;
  bool sequence_ = true;
  T first_{}, step_{};
  T last_{};  // of a sequence: its last value (push_back compares with it)
  size_t n_ = 0;
};

// The field records of a meta's samples as its column form carries them,
// not made into SampleMetas: per field one record that every sample shares
// or one per sample, and where each sample's value lies. What a KV put
// needs (its samples have no index, generation or partition of their own
// yet), at a fraction of the memory of one SampleMeta per sample.
class MetaRecords {
 public:
  // Where a field's values lie: none given (the records' own), one pack
  // for all or one per sample, and one offset per sample.
  struct Places {
    bool present = false;
    bool single = false;
    uint64_t one = 0;
    IntColumn<uint64_t> packs, offsets;
  };

  MetaRecords() = default;
  // The records of `meta`, each sample holding one per field (Invalid,
  // naming the sample, otherwise); its custom meta is kept, its indexes
  // and partitions are not.
  static Result<MetaRecords> Of(BatchMeta meta);

  size_t size() const { return n_; }
  const std::vector<std::string>& field_names() const { return names_; }
  // Sample i's record of field f, in its place.
  FieldInfo Record(size_t i, size_t f) const {
    FieldInfo fi = rows_[f].empty() ? shared_[f] : rows_[f][i];
    Place(i, f, &fi);
    return fi;
  }
  // Sets a copy of that record's place (where the columns give one).
  void Place(size_t i, size_t f, FieldInfo* fi) const {
    const Places& p = places_[f];
    if (p.present) {
      fi->pack = p.single ? p.one : p.packs[i];
      fi->offset = fi->pack == 0 ? 0 : p.offsets[i];
    }
  }
  // Sample i's custom meta, moved out (empty when there is none).
  CustomMeta TakeCustom(size_t i) { return custom_.empty() ? CustomMeta() : std::move(custom_[i]); }
  // Field f's record when every sample shares it (its place aside), else null.
  const FieldInfo* Shared(size_t f) const { return rows_[f].empty() ? &shared_[f] : nullptr; }
  const Places& places(size_t f) const { return places_[f]; }

 private:
  friend struct MetaRecordsAccess;  // protocol.cc's decoder
  std::vector<std::string> names_;
  size_t n_ = 0;
  std::vector<FieldInfo> shared_;              // by field: the record all samples share (when rows_[f] is empty)
  std::vector<std::vector<FieldInfo>> rows_;   // by field: one record per sample, or none
  std::vector<Places> places_;                 // by field
  std::vector<CustomMeta> custom_;             // one per sample, or none
};
// A BatchMeta body's records (the column form read without making samples;
// the row form through UnpackBatchMeta). The same checks as UnpackBatchMeta:
// what one refuses, the other refuses with the same error.
Result<MetaRecords> UnpackMetaRecords(const msgpack::object& obj, const std::string& what);

// A BatchMeta body read in full, its samples not made yet: their indexes,
// generations and partitions as columns, and their records.
struct MetaColumns {
  IntColumn<int64_t> gidx;
  IntColumn<uint64_t> gen;
  IntColumn<uint32_t> pidx;  // into partitions
  std::vector<std::string> partitions;
  MetaRecords records;

  size_t size() const { return records.size(); }
  // The samples as a BatchMeta of the fields at `fields` (positions in
  // records.field_names(), in that order).
  BatchMeta TakeMeta(const std::vector<size_t>& fields) &&;
};
// Either form, with UnpackBatchMeta's checks.
Result<MetaColumns> UnpackMetaColumns(const msgpack::object& obj, const std::string& what);

// Custom metadata values: nil, bool, int64, float64 (always float64), str,
// bin (MetaBytes), ext type kMetaPickledExt (MetaPickled), arrays and
// string-keyed maps, nested at most kMaxMetaDepth deep.
inline constexpr int8_t kMetaPickledExt = 1;
void PackMetaValue(Packer& pk, const MetaValue& value);
Result<MetaValue> UnpackMetaValue(const msgpack::object& obj, const std::string& what);

void PackCustomMeta(Packer& pk, const CustomMeta& custom);
Result<CustomMeta> UnpackCustomMeta(const msgpack::object& obj, const std::string& what);

std::string EncodeGetMeta(const GetMetaRequest& req);
Result<GetMetaRequest> DecodeGetMeta(const msgpack::object& body);

// A message whose body is a BatchMeta (NotifyProduced, replies, clears).
tqds::wire::Message MetaMessage(tqds::wire::MsgType type, const BatchMeta& meta);
tqds::wire::Message MetaMessage(tqds::wire::MsgType type, const SampleRows& rows);
Result<BatchMeta> MetaFromMessage(const tqds::wire::Message& m);

// A compact list of sample identities (no field records) for clears:
// {"fields": [str], "partitions": [str], "samples": [p, index, generation, ...]}
// where p indexes "partitions".
// A clear's victims (identities only), with the packs that the clear left
// without users (ControllerState::TakeDeadPacks), for the client to free.
// `keyed` (ControllerState::TakeClearKeyed, one flag per sample) goes along
// when some sample has nothing stored under its own keys.
tqds::wire::Message SampleListMessage(tqds::wire::MsgType type, const BatchMeta& meta,
                                      const std::vector<uint64_t>& dead_packs = {},
                                      const std::vector<uint8_t>& keyed = {});
Result<BatchMeta> SampleListFromMessage(const tqds::wire::Message& m);
// The samples of a SampleList (of n) that may have values under their own
// keys: the "keyed" flags, or all n when it has none.
Result<std::vector<uint8_t>> KeyedFromMessage(const tqds::wire::Message& m, size_t n);
// A NotifyProduced reply: {"dead_packs": bin of uint64} (the packs the
// put's overwrites emptied), or an empty body when there are none.
std::string EncodeDeadPacks(const std::vector<uint64_t>& dead_packs);
// The "dead_packs" entry of a reply map (key and bytes column), which
// DeadPacksFromMessage reads.
void PackDeadPacksEntry(Packer& pk, const std::vector<uint64_t>& dead_packs);
// The "dead_packs" of a SampleList or NotifyProduced reply (none: empty).
Result<std::vector<uint64_t>> DeadPacksFromMessage(const tqds::wire::Message& m);

// Per-sample status replies (ProductionStatus with "fields", ConsumptionStatus
// with "per_sample"): {"found": false} when there is no answer (upstream's
// None), else {"found": true, "global_indexes": [int64], "columns": [str],
// "status": bin of rows x columns bytes}.
std::string EncodeSampleStatus(const std::optional<SampleStatusMatrix>& m);
Result<std::optional<SampleStatusMatrix>> DecodeSampleStatus(const msgpack::object& body);

// Storage unit bodies: {"keys": [str...]} (+ one payload frame per key for a
// put); get replies {"found": [bool...]} + one frame per key (empty if missing).
std::string EncodeKeys(const std::vector<std::string>& keys);
Result<std::vector<std::string>> DecodeKeys(const msgpack::object& body, const std::string& what);

// One FieldInfo as [produced, kind, dtype, shape, nbytes] (the record inside
// PackBatchMeta), for other documents such as the controller snapshot.
void PackFieldInfoRecord(Packer& pk, const FieldInfo& f);
Result<FieldInfo> UnpackFieldInfoRecord(const msgpack::object& o, const std::string& what);

// Validates a name (partition, field, task): non-empty, <= 256 bytes, no NUL.
Status ValidateName(std::string_view name, const char* what);
// The body's "partition_id", a valid name (errors name the reader's message).
Result<std::string> ValidPartitionOf(const tqds::wire::MapReader& r);

}  // namespace tq::internal
