// ControllerState: all TransferQueue metadata, with no sockets and no
// threads. The controller server owns one and calls it from its single
// thread, so nothing here locks (not thread-safe by design).
//
// Invariants:
// - a global index belongs to at most one live or clearing sample;
// - a sample's generation is unique over the controller's lifetime, and
//   storage keys include (partition, index, generation), so no reader can
//   see another partition's or an earlier sample's bytes;
// - clearing is two-phase: Begin* hides samples and returns what storage must
//   free; ReleaseSamples (after storage freed them) returns the indexes;
// - a KV key names exactly one live, visible sample of its partition; every
//   Begin* clear erases the keys of the samples it hides (KV API:
//   controller_state_kv.cc).
#pragma once

#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include <absl/container/flat_hash_map.h>
#include <absl/container/flat_hash_set.h>
#include <absl/hash/hash.h>

#include "queue/index_pool.h"
#include "tq/batch_meta.h"
#include "tq/kv.h"
#include "tq/partition_status.h"
#include "tq/sampling.h"

namespace tq::internal {

class Sampler;      // queue/sampler.h
class MetaRecords;  // queue/protocol.h

// The field records a put gives its samples, one sample after another
// (ControllerState::ApplyProduced reads each once).
class ProducedSource {
 public:
  virtual ~ProducedSource() = default;
  virtual const std::vector<std::string>& field_names() const = 0;
  virtual size_t size() const = 0;
  virtual FieldInfo Peek(size_t i, size_t f) const = 0;  // sample i's record of field f, left in place
  virtual FieldInfo Take(size_t i, size_t f) = 0;        // the same, taken
  virtual void TakeAll(size_t i, FieldInfos* out) = 0;   // all of sample i's, in field order
  virtual CustomMeta TakeCustom(size_t i) = 0;
};

// A sample's custom meta (tags), held out of line: most samples have none,
// and a pointer instead of a std::map's 48 bytes makes every record 40
// bytes smaller (a put of 16384 keys writes 640 KiB of records less, a get
// reads that much less, both mostly out of the caches after a pause).
class RecordTags {
 public:
  RecordTags() = default;
  RecordTags(const RecordTags& o) { *this = o; }
  RecordTags(RecordTags&&) noexcept = default;
  RecordTags& operator=(const RecordTags& o) {
    if (this != &o) map_ = o.empty() ? nullptr : std::make_unique<CustomMeta>(*o.map_);
    return *this;
  }
  RecordTags& operator=(RecordTags&&) noexcept = default;
  RecordTags& operator=(CustomMeta m) {
    map_ = m.empty() ? nullptr : std::make_unique<CustomMeta>(std::move(m));
    return *this;
  }
  bool empty() const { return map_ == nullptr || map_->empty(); }
  const CustomMeta& get() const { return map_ != nullptr ? *map_ : kNone; }
  CustomMeta& mutable_get() {
    if (map_ == nullptr) map_ = std::make_unique<CustomMeta>();
    return *map_;
  }
  void clear() { map_.reset(); }

 private:
  static inline const CustomMeta kNone{};
  std::unique_ptr<CustomMeta> map_;
};

struct SampleRecord {
  int64_t global_index = -1;
  uint64_t generation = 0;
  bool live = true;       // false once released (tombstone)
  bool clearing = false;  // hidden: storage is being freed
  FieldInfos fields;  // by partition field id
  RecordTags custom;
  std::string key;  // KV API: the key naming this sample, empty for none
};

struct CachedSelection {
  std::vector<std::vector<size_t>> per_rank;  // positions for each rank (or one shared list)
  size_t served = 0;
  size_t expected = 1;
};

struct TaskState {
  std::vector<uint8_t> consumed;  // by position
  size_t cursor = 0;              // every position before it is consumed or dead
  size_t consumed_count = 0;
  std::map<std::string, CachedSelection> cache;       // shared selections (rank-aware group mode)
  std::map<std::string, int64_t> call_counters;       // per-rank call counts
  // Upstream-mode sampler selections (positions) by sampler key, e.g. a
  // rank-aware (dp_rank, batch_index). Kept across reset_consumption, dropped
  // when the partition is cleared (upstream's sampler cache lifetime).
  std::map<std::string, std::vector<size_t>> sticky;
};

// KV keys -> positions of a partition's records. The table holds only
// positions (4 bytes a slot); a position's key is its record's
// (SampleRecord::key), or, while a request's new keys are entered before
// their records are made, the request's (SetPending). A put of 16384 new
// keys writes a table of 128 KiB instead of 1.3 MiB of key copies: what the
// controller touches after it sat idle is out of the caches, and that cost
// it more than the hashing (kv_state_bench --pause-ms).
class KeyIndex {
 public:
  static constexpr size_t kNone = SIZE_MAX;
  explicit KeyIndex(const std::vector<SampleRecord>& records)
      : ctx_(std::make_unique<Ctx>()), set_(0, Hash{ctx_.get()}, Eq{ctx_.get()}) {
    ctx_->records = &records;
  }
  KeyIndex(const KeyIndex&) = delete;
  KeyIndex& operator=(const KeyIndex&) = delete;

  size_t size() const { return set_.size(); }
  void reserve(size_t n) { set_.reserve(n); }
  // The position holding `key`, or kNone.
  size_t Find(std::string_view key) const {
    auto it = set_.find(key);
    return it == set_.end() ? kNone : *it;
  }
  // Enters `pos` under its key; false (nothing changes) when another
  // position holds that key.
  bool Insert(size_t pos) { return set_.insert(static_cast<uint32_t>(pos)).second; }
  // Takes `pos` out; its key must still be the one it was entered under.
  void Erase(size_t pos) { set_.erase(static_cast<uint32_t>(pos)); }
  // Positions first + j (no record yet) have the key keys[which[j]] until
  // ClearPending; both vectors must outlive that.
  void SetPending(size_t first, const std::vector<std::string>* keys, const std::vector<size_t>* which) {
    ctx_->pending_first = first;
    ctx_->pending_keys = keys;
    ctx_->pending_which = which;
  }
  void ClearPending() { SetPending(0, nullptr, nullptr); }
  // Made again from the records' keys (after their positions changed).
  void Rebuild() {
    set_ = Set(0, Hash{ctx_.get()}, Eq{ctx_.get()});
    const auto& records = *ctx_->records;
    size_t keyed = 0;
    for (const SampleRecord& r : records) keyed += r.key.empty() ? 0 : 1;
    set_.reserve(keyed);
    for (size_t pos = 0; pos < records.size(); ++pos) {
      if (!records[pos].key.empty()) set_.insert(static_cast<uint32_t>(pos));
    }
  }

 private:
  struct Ctx {
    const std::vector<SampleRecord>* records = nullptr;
    size_t pending_first = 0;
    const std::vector<std::string>* pending_keys = nullptr;
    const std::vector<size_t>* pending_which = nullptr;
    std::string_view KeyAt(uint32_t pos) const {
      if (pending_keys != nullptr && pos >= pending_first) return (*pending_keys)[(*pending_which)[pos - pending_first]];
      return (*records)[pos].key;
    }
  };
  struct Hash {
    using is_transparent = void;
    const Ctx* ctx;
    size_t operator()(uint32_t pos) const { return absl::Hash<std::string_view>{}(ctx->KeyAt(pos)); }
    size_t operator()(std::string_view key) const { return absl::Hash<std::string_view>{}(key); }
  };
  struct Eq {
    using is_transparent = void;
    const Ctx* ctx;
    bool operator()(uint32_t a, uint32_t b) const { return a == b || ctx->KeyAt(a) == ctx->KeyAt(b); }
    bool operator()(uint32_t a, std::string_view key) const { return ctx->KeyAt(a) == key; }
    bool operator()(std::string_view key, uint32_t a) const { return ctx->KeyAt(a) == key; }
  };
  using Set = absl::flat_hash_set<uint32_t, Hash, Eq>;
  std::unique_ptr<Ctx> ctx_;  // the functors' view: stays put
  Set set_;
};

// Global index -> position of a partition's live and clearing samples.
// The index pool hands indexes out lowest first, in runs (IndexPool), so a
// partition's indexes mostly lie close together: the map is a window of
// slots over [base, base + slots), a position (4 bytes) per index and no
// node, hash or allocation per entry; a put of 16384 samples writes 64 KiB
// in order. An index that would stretch the window past 4 slots an entry
// (and past kMinWindow slots), a negative index, or a position past
// 2^32 - 2 moves the map to a hash table until it is emptied.
class PositionMap {
 public:
  static constexpr size_t kNone = SIZE_MAX;
  static constexpr size_t kMinWindow = 4096;

  size_t Find(int64_t gi) const {
    if (sparse_) {
      auto it = table_.find(gi);
      return it == table_.end() ? kNone : it->second;
    }
    if (gi < base_ || static_cast<uint64_t>(gi - base_) >= slots_.size()) return kNone;
    const uint32_t pos = slots_[gi - base_];
    return pos == kEmpty ? kNone : pos;
  }
  bool Contains(int64_t gi) const { return Find(gi) != kNone; }
  // Enters or moves `gi`.
  void Set(int64_t gi, size_t pos);
  // Whether `gi` was there.
  bool Erase(int64_t gi);
  size_t size() const { return sparse_ ? table_.size() : count_; }
  bool empty() const { return size() == 0; }
  // Every entry's position becomes fn(position), which must not be larger
  // (compaction moves records down).
  template <typename Fn>
  void Remap(Fn&& fn) {
    if (sparse_) {
      for (auto& [gi, pos] : table_) pos = fn(pos);
      return;
    }
    for (uint32_t& pos : slots_) {
      if (pos != kEmpty) pos = static_cast<uint32_t>(fn(pos));
    }
  }
  // Gives back memory held for entries that are gone.
  void Shrink();

 private:
  static constexpr uint32_t kEmpty = UINT32_MAX;
  void ToTable();

  bool sparse_ = false;
  int64_t base_ = 0;
  std::vector<uint32_t> slots_;  // by gi - base_; kEmpty: no entry
  size_t count_ = 0;             // slots that hold an entry
  std::unordered_map<int64_t, size_t> table_;
};

struct Partition {
  Partition() = default;
  Partition(const Partition&) = delete;  // position_of_key views `samples`
  Partition& operator=(const Partition&) = delete;

  std::string name;
  std::vector<SampleRecord> samples;  // by position (allocation order)
  PositionMap position_of;  // live + clearing samples
  std::vector<std::string> field_names;
  std::vector<FieldInfo> field_types;  // by field id: the first samples' kind and dtype (later ones may differ)
  std::unordered_map<std::string, int> field_id;
  std::unordered_map<std::string, TaskState> tasks;
  size_t live_count = 0;  // live and not clearing
  // KV API: the keys of keyed samples, both ways (SampleRecord::key the
  // other way; records are in position order, i.e. in key creation order,
  // a key always getting a fresh sample). A key is erased when its
  // sample's clear begins (phase 1). See KeyIndex.
  KeyIndex position_of_key{samples};
  // Indexes reserved when the partition was created (upstream's
  // TQ_PRE_ALLOC_SAMPLE_NUM) that no sample holds yet: allocations take them
  // first, smallest first; the status matrices show them as rows not yet
  // produced or consumed, so a consumer sees the expected size early.
  std::set<int64_t> reserved;
  // A partition stays (listed, empty) when its last sample is released, as
  // upstream's does; only clear_partition drops it.
  bool keep_when_empty = true;
  uint64_t created = 0;  // creation order: partitions are listed in it

  static constexpr size_t kNoPosition = SIZE_MAX;
  // The position of `key`, or kNoPosition. The keys of a batch often come
  // in the order they were created (a get or a clear of what one put
  // wrote): `hint`, the position after the previous key's, is tried first,
  // which spares such a batch the table lookups (a cache miss each).
  size_t FindKey(const std::string& key, size_t hint) const {
    if (!key.empty() && hint < samples.size() && samples[hint].key == key) return hint;
    return position_of_key.Find(key);
  }
  int FieldId(const std::string& name) const {
    auto it = field_id.find(name);
    return it == field_id.end() ? -1 : it->second;
  }
  bool IsVisible(size_t pos) const { return samples[pos].live && !samples[pos].clearing; }
  bool IsProduced(size_t pos, const std::vector<int>& fids) const;
};

// Samples of a partition as a reply lists them, read in place: the
// interface of a BatchMeta's samples that PackBatchMeta reads, without
// building one (a record per sample and field, each with its own shape).
// Valid until the state changes: pack it at once.
struct SampleRows {
  const Partition* partition = nullptr;
  std::vector<size_t> positions;
  std::vector<int> fids;           // partition field id of each listed field (-1: none)
  std::vector<std::string> names;  // the listed fields

  size_t size() const { return positions.size(); }
  const std::vector<std::string>& field_names() const { return names; }
  size_t field_count(size_t) const { return names.size(); }
  // A field the sample has no record of reads as FieldInfo{} (not produced).
  const FieldInfo& field(size_t i, size_t f) const {
    const auto& fields = partition->samples[positions[i]].fields;
    const int id = fids[f];
    return id >= 0 && static_cast<size_t>(id) < fields.size() ? fields[id] : kNoFieldInfo;
  }
  static inline const FieldInfo kNoFieldInfo{};
  int64_t global_index(size_t i) const { return partition->samples[positions[i]].global_index; }
  uint64_t generation(size_t i) const { return partition->samples[positions[i]].generation; }
  const std::string& partition_id(size_t) const { return partition->name; }
  const CustomMeta& custom(size_t i) const { return partition->samples[positions[i]].custom.get(); }
};

// Marks `positions` consumed by `task` and advances its cursor.
void MarkConsumed(const Partition& p, TaskState& task, const std::vector<size_t>& positions);

// Drops the records of released samples (tombstones) once they are at least
// half of the partition's records and more than kCompactAbove, renumbering
// the positions of the rest everywhere they are held (keys, tasks, cached
// selections). Without it a partition that is put to and cleared over and
// over keeps a record for every sample it ever had, and every scan of it
// slows down.
inline constexpr size_t kCompactAbove = 1024;
void CompactPartition(Partition& p);

struct GetMetaRequest {
  std::string partition_id;
  std::string task_name;
  std::vector<std::string> fields;
  int64_t batch_size = 0;
  FetchMode mode = FetchMode::kFetch;
  int64_t timeout_ms = 0;
  SamplingConfig sampling;
};

// Bounds on allocation (from ControllerOptions), so that no request can make
// the controller do unbounded work or commit unbounded memory. A sample
// "held" is live, being cleared, or a reserved index.
struct AllocationLimits {
  size_t per_request = size_t{1} << 16;     // samples one Allocate / KvRetrieve may create
  size_t per_partition = size_t{1} << 22;   // samples one partition may hold
  size_t total = size_t{1} << 24;           // samples all partitions together may hold
};

// Controller-wide get_meta behaviour (from ControllerOptions).
struct GetMetaDefaults {
  bool polling_mode = false;        // mode fetch behaves like poll_all
  SamplingConfig default_sampling;  // laid under a call's config that names no sampler
};

class ControllerState {
 public:
  void set_get_meta_defaults(GetMetaDefaults d) { defaults_ = std::move(d); }
  const GetMetaDefaults& get_meta_defaults() const { return defaults_; }
  // A sampler used for every fetch/poll instead of the built-ins (an
  // embedding program's: MakeCustomSamplerAdapter); null: the built-ins.
  void set_custom_sampler(std::shared_ptr<Sampler> s) { custom_sampler_ = std::move(s); }

  // Indexes a new partition reserves (upstream's TQ_PRE_ALLOC_SAMPLE_NUM;
  // default 1, which the first allocation always takes).
  void set_pre_alloc_samples(size_t n) { pre_alloc_samples_ = n; }
  void set_allocation_limits(AllocationLimits l) { limits_ = l; }
  // Reserves `count` fresh samples in `partition_id` (created on first use).
  // Beyond the allocation limits: InvalidArgument (per request) or
  // OutOfSpace (partition, total) naming the limit, with nothing changed.
  Result<BatchMeta> Allocate(const std::string& partition_id, size_t count);
  // Samples held by all partitions (indexes in use, reserved included).
  size_t held_samples() const { return static_cast<size_t>(indexes_.next()) - indexes_.free_count(); }
  // Records fields of samples as produced; every sample must be live with the
  // same generation. Returns the names of partitions that changed.
  Status MarkProduced(BatchMeta meta);
  // Answers a get_meta, or returns std::nullopt when a fetch must wait.
  Result<std::optional<BatchMeta>> TryGetMeta(const GetMetaRequest& req);
  // The same answer, unbuilt (the controller packs it into its reply).
  Result<std::optional<SampleRows>> TryGetMetaRows(const GetMetaRequest& req);

  // Phase 1 of a clear: hides the samples and returns them (with the fields
  // that are in storage). Unknown partition or indexes: empty, not an error.
  BatchMeta BeginClearPartition(const std::string& partition_id);
  BatchMeta BeginClearSamples(const std::string& partition_id, const std::vector<int64_t>& indexes);
  // Phase 2: storage has freed these samples; release their indexes.
  Status ReleaseSamples(const BatchMeta& meta);

  Result<ProductionStatus> GetProductionStatus(const std::string& partition_id) const;
  Result<ConsumptionStatus> GetConsumptionStatus(const std::string& partition_id,
                                                 const std::string& task_name) const;
  Status ResetConsumption(const std::string& partition_id, const std::string& task_name);
  // Upstream-shaped per-sample status. std::nullopt when the partition is
  // unknown, `fields` is empty or a requested field was never produced in it.
  std::optional<SampleStatusMatrix> ProductionMatrix(const std::string& partition_id,
                                                     const std::vector<std::string>& fields) const;
  // std::nullopt for an unknown partition; an unknown task gets zeros and
  // from then on exists (as upstream's).
  std::optional<SampleStatusMatrix> ConsumptionMatrix(const std::string& partition_id,
                                                      const std::string& task_name);
  std::vector<std::string> ListPartitions() const;
  // Every partition in creation order, with production per field and
  // consumption per task (see PartitionSummary).
  std::vector<PartitionSummary> Summaries() const;
  Status SetCustomMeta(const BatchMeta& meta);  // takes samples' custom maps
  Result<BatchMeta> GetSamples(const std::string& partition_id,
                               const std::vector<int64_t>& indexes) const;

  // KV API. The samples named by `keys`, in request order. Missing keys get
  // fresh samples (and a missing partition is created) with `create`, else
  // they are left out. The meta's fields are those every returned sample has
  // produced (registration order); custom maps are the stored tags. A key
  // listed twice is Invalid.
  Result<BatchMeta> KvRetrieve(const std::string& partition_id, const std::vector<std::string>& keys,
                               bool create);
  // The same samples, unbuilt (the controller packs them into its reply).
  Result<SampleRows> KvRetrieveRows(const std::string& partition_id, const std::vector<std::string>& keys,
                                    bool create);
  // A KV put in one step: the samples of `keys` (missing ones created, as
  // KvRetrieve with create) take the field records of `meta`, one sample per
  // key in order (its samples' indexes, generations and partition ids are
  // not read), as MarkProduced would. A bad request (a key listed twice, a
  // sample with the wrong number of records, a field name that is not a
  // name or is listed twice) is Invalid with nothing changed. Returns the
  // fields every one of these samples holds now and their tags.
  Result<KvPutResult> KvPut(const std::string& partition_id, const std::vector<std::string>& keys,
                            BatchMeta meta);
  // The same for a KV put request's records (KvPutRequest), as decoded.
  Result<KvPutResult> KvPut(const std::string& partition_id, const std::vector<std::string>& keys,
                            MetaRecords records);
  // The key of each index (nullopt: no key, or not in the partition).
  // Unknown partition: NotFound.
  Result<std::vector<std::optional<std::string>>> KvKeys(const std::string& partition_id,
                                                         const std::vector<int64_t>& indexes) const;
  // Keys and tags of one partition (nullopt: of every partition). An unknown
  // partition lists nothing.
  KvListing KvList(const std::optional<std::string>& partition_id) const;
  // Phase 1 of clearing the samples of `keys` (missing keys or partition: none).
  // Their keys vanish at once; the partition stays, even when emptied.
  BatchMeta BeginKvClear(const std::string& partition_id, const std::vector<std::string>& keys);

  // Sample records a partition holds: its live and clearing samples and the
  // released ones not compacted away yet (CompactPartition); 0 for an
  // unknown partition.
  size_t RecordCount(const std::string& partition_id) const {
    const Partition* p = FindPartition(partition_id);
    return p == nullptr ? 0 : p->samples.size();
  }

  // Checkpoint (controller_state_snapshot.cc; layout in docs/wire_format.md).
  // The whole metadata state (partitions, samples with index, generation,
  // fields and custom meta, keys, per-task consumption, the index pool) as
  // one msgpack document. The controller-wide get_meta defaults are not part
  // of it.
  std::string Snapshot() const;
  // Replaces the whole state by a Snapshot's. The bytes are hostile: every
  // count, index and position is checked and any inconsistency is Invalid,
  // with the state unchanged. `dry_run` only checks. The generation counter
  // never goes back (max of both), so generations stay unique. Samples that
  // were being cleared come back released (their indexes free), since the
  // clear that began may never be finished against the restored state.
  // RestoreMode::kExact (the controller's own state directory, whose journal
  // goes on to finish those clears) keeps them as they were.
  enum class RestoreMode { kCheckpoint, kExact };
  Status Restore(std::string_view bytes, bool dry_run = false, RestoreMode mode = RestoreMode::kCheckpoint);

  // Packs (FieldInfo::pack) that lost their last user since the last call:
  // no visible sample's produced field lies in them any more (cleared or
  // overwritten), so storage may free them. Each is named once.
  std::vector<uint64_t> TakeDeadPacks() { return std::exchange(dead_packs_, {}); }
  // For each sample the last Begin* clear returned: 1 when storage may hold
  // some field of it under the sample's own key (a produced value that is
  // not packed, or a field not recorded produced), 0 when every field is a
  // produced, packed value (nothing to delete by key).
  std::vector<uint8_t> TakeClearKeyed() { return std::exchange(clear_keyed_, {}); }
  // How many produced, visible field records lie in `pack` (0: none).
  uint64_t pack_users(uint64_t pack) const {
    auto it = pack_users_.find(pack);
    return it == pack_users_.end() ? 0 : it->second;
  }

  size_t free_index_count() const { return indexes_.free_count(); }
  int64_t next_index() const { return indexes_.next(); }
  const Partition* FindPartition(const std::string& id) const;

 private:
  // Partition `id` (null if none), for a request whose samples come in runs
  // of one partition: `last`, the previous sample's, when it is that one.
  Partition* PartitionOfRun(Partition* last, const std::string& id);
  static BatchMeta MakeMeta(const SampleRows& rows);
  BatchMeta BeginClear(Partition& p, const std::vector<size_t>& positions);
  // Allocate without the meta: the new samples are the last `count` of the
  // partition returned.
  // `init(j, record)`, when given, completes the j-th new record.
  Result<Partition*> AllocateRecords(const std::string& partition_id, size_t count,
                                     const std::function<void(size_t, SampleRecord&)>& init = nullptr);
  // KvRetrieveRows' create: the samples of keys[missing[j]] (keys the
  // partition lacks), created and entered into its key map, in that order;
  // (*positions)[missing[j]] set to theirs. Nothing changes on error (a key
  // listed twice, the allocation limits).
  Status CreateKeys(const std::string& partition_id, const std::vector<std::string>& keys,
                    const std::vector<size_t>& missing, std::vector<size_t>* positions);
  Result<std::optional<SampleRows>> ForceFetchAll(const GetMetaRequest& req) const;
  // MarkProduced once checked: sample i of `meta` goes into records[i] of
  // parts[i] (each with meta's number of field records).
  void ApplyProduced(BatchMeta& meta, const std::vector<SampleRecord*>& records,
                     const std::vector<Partition*>& parts);
  void ApplyProduced(ProducedSource& src, const std::vector<SampleRecord*>& records,
                     const std::vector<Partition*>& parts);
  // The call's sampling config with the controller's default_sampling under it.
  SamplingConfig EffectiveSampling(const SamplingConfig& call) const;
  // Visible positions of `p` in ascending global index.
  static std::vector<size_t> VisibleByIndex(const Partition& p);
  void EraseKey(Partition& p, size_t pos);
  // Whether `count` more samples fit in `partition_id` (null: not created
  // yet) and in the controller under limits_; checked before any change.
  Status CheckAllocation(const std::string& partition_id, const Partition* p, size_t count) const;
  // The partition, created (with its reserved indexes) when missing: as
  // `fresh` when given (a Partition made aside, with no samples yet).
  Partition& GetOrCreate(const std::string& partition_id, std::unique_ptr<Partition> fresh = nullptr);
  // Rows of the status matrices: visible samples and reserved indexes, by
  // ascending global index; a reserved row has position npos.
  static std::vector<std::pair<int64_t, size_t>> StatusRows(const Partition& p);
  // Every partition, oldest first.
  std::vector<const Partition*> InCreationOrder() const;
  // The live, visible sample `s` names (same generation), or null.
  SampleRecord* FindVisible(const SampleMeta& s);
  // A produced record starts or stops lying in its pack (no-op for pack 0).
  void AddPackUser(const FieldInfo& f);
  void DropPackUser(const FieldInfo& f);
  // pack_users_ from the visible samples (after a Restore).
  void RecountPackUsers();

  std::map<std::string, std::unique_ptr<Partition>> partitions_;
  IndexPool indexes_;  // global indexes: released ones first, lowest first
  std::vector<int64_t> released_scratch_;  // ReleaseSamples' batch for indexes_
  uint64_t next_generation_ = 1;
  uint64_t next_partition_ = 0;
  GetMetaDefaults defaults_;
  size_t pre_alloc_samples_ = 1;
  AllocationLimits limits_;
  std::shared_ptr<Sampler> custom_sampler_;
  absl::flat_hash_map<uint64_t, uint64_t> pack_users_;
  std::vector<uint64_t> dead_packs_;
  std::vector<uint8_t> clear_keyed_;
};

}  // namespace tq::internal
