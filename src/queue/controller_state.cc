// ControllerState: partitions, indexes, production and consumption.
#include "queue/controller_state.h"

#include <algorithm>
#include <limits>

#include "queue/sampler.h"

namespace tq::internal {
namespace {

// StatusRows' position of a reserved index (no sample yet).
constexpr size_t kReservedRow = std::numeric_limits<size_t>::max();

}  // namespace

void PositionMap::Set(int64_t gi, size_t pos) {
  if (!sparse_ && (gi < 0 || pos >= kEmpty)) ToTable();
  if (sparse_) {
    table_[gi] = pos;
    return;
  }
  if (count_ == 0) {
    slots_.clear();
    base_ = gi;
  }
  // The most slots the window may span once `gi` is in.
  const uint64_t allowed = std::max<uint64_t>(kMinWindow, 4 * (count_ + 1));
  if (gi < base_) {
    const uint64_t grow = static_cast<uint64_t>(base_ - gi);  // both >= 0
    if (slots_.size() + grow > allowed) {
      ToTable();
      table_[gi] = pos;
      return;
    }
    // Room below as well, so that indexes set in descending order do not
    // move the slots each time; the window stays within `allowed` and >= 0.
    uint64_t extra = std::min<uint64_t>(std::max<uint64_t>(grow, slots_.size()), allowed - slots_.size());
    extra = std::max(grow, std::min<uint64_t>(extra, static_cast<uint64_t>(base_)));
    slots_.insert(slots_.begin(), extra, kEmpty);
    base_ -= static_cast<int64_t>(extra);
  } else if (static_cast<uint64_t>(gi - base_) >= slots_.size()) {
    const uint64_t span = static_cast<uint64_t>(gi - base_) + 1;
    if (span > allowed) {
      ToTable();
      table_[gi] = pos;
      return;
    }
    slots_.resize(span, kEmpty);  // the capacity grows geometrically
  }
  uint32_t& slot = slots_[gi - base_];
  if (slot == kEmpty) ++count_;
  slot = static_cast<uint32_t>(pos);
}

bool PositionMap::Erase(int64_t gi) {
  if (sparse_) {
    if (table_.erase(gi) == 0) return false;
    if (table_.empty()) {
      table_ = {};
      sparse_ = false;
    }
    return true;
  }
  if (gi < base_ || static_cast<uint64_t>(gi - base_) >= slots_.size() || slots_[gi - base_] == kEmpty) {
    return false;
  }
  slots_[gi - base_] = kEmpty;
  if (--count_ == 0) slots_.clear();
  return true;
}

void PositionMap::ToTable() {
  table_.reserve(count_);
  for (size_t i = 0; i < slots_.size(); ++i) {
    if (slots_[i] != kEmpty) table_.emplace(base_ + static_cast<int64_t>(i), slots_[i]);
  }
  slots_ = {};
  count_ = 0;
  base_ = 0;
  sparse_ = true;
}

void PositionMap::Shrink() {
  if (sparse_) {
    table_.rehash(0);
    return;
  }
  if (count_ == 0) {
    slots_ = {};
    base_ = 0;
    return;
  }
  size_t first = 0, last = slots_.size() - 1;
  while (slots_[first] == kEmpty) ++first;
  while (slots_[last] == kEmpty) --last;
  std::vector<uint32_t> kept(slots_.begin() + first, slots_.begin() + last + 1);
  slots_.swap(kept);
  base_ += static_cast<int64_t>(first);
}

bool Partition::IsProduced(size_t pos, const std::vector<int>& fids) const {
  const auto& fields = samples[pos].fields;
  for (int f : fids) {
    if (f < 0 || static_cast<size_t>(f) >= fields.size() || !fields[f].produced) return false;
  }
  return true;
}

void MarkConsumed(const Partition& p, TaskState& task, const std::vector<size_t>& positions) {
  if (task.consumed.size() < p.samples.size()) task.consumed.resize(p.samples.size(), 0);
  for (size_t pos : positions) {
    if (!task.consumed[pos]) {
      task.consumed[pos] = 1;
      ++task.consumed_count;
    }
  }
  while (task.cursor < p.samples.size() && (task.consumed[task.cursor] || !p.samples[task.cursor].live)) {
    ++task.cursor;
  }
}

void CompactPartition(Partition& p) {
  const size_t dead = p.samples.size() - p.position_of.size();
  if (dead <= kCompactAbove || dead < p.samples.size() / 2) return;
  constexpr size_t kGone = SIZE_MAX;
  std::vector<size_t> moved(p.samples.size(), kGone);  // old position -> new
  std::vector<SampleRecord> kept;
  kept.reserve(p.position_of.size());
  for (size_t pos = 0; pos < p.samples.size(); ++pos) {
    if (!p.samples[pos].live) continue;
    moved[pos] = kept.size();
    kept.push_back(std::move(p.samples[pos]));
  }
  p.samples = std::move(kept);
  p.position_of.Remap([&](size_t pos) { return moved[pos]; });
  p.position_of_key.Rebuild();
  p.position_of.Shrink();
  // A list of positions, renumbered; released samples leave it.
  auto renumber = [&](std::vector<size_t>& positions) {
    size_t out = 0;
    for (size_t pos : positions) {
      if (pos < moved.size() && moved[pos] != kGone) positions[out++] = moved[pos];
    }
    positions.resize(out);
  };
  for (auto& [name, task] : p.tasks) {
    std::vector<uint8_t> consumed(p.samples.size(), 0);
    size_t cursor = 0;
    task.consumed_count = 0;
    for (size_t pos = 0; pos < moved.size(); ++pos) {
      if (moved[pos] == kGone) continue;
      const bool c = pos < task.consumed.size() && task.consumed[pos] != 0;
      consumed[moved[pos]] = c;
      task.consumed_count += c;
      if (pos < task.cursor) cursor = moved[pos] + 1;  // every kept position before the cursor is consumed
    }
    task.consumed = std::move(consumed);
    task.cursor = cursor;
    for (auto& [key, sel] : task.cache) {
      for (auto& rank : sel.per_rank) renumber(rank);
    }
    for (auto& [key, positions] : task.sticky) renumber(positions);
  }
}

Partition* ControllerState::PartitionOfRun(Partition* last, const std::string& id) {
  if (last != nullptr && last->name == id) return last;
  auto it = partitions_.find(id);
  return it == partitions_.end() ? nullptr : it->second.get();
}

const Partition* ControllerState::FindPartition(const std::string& id) const {
  auto it = partitions_.find(id);
  return it == partitions_.end() ? nullptr : it->second.get();
}

SampleRecord* ControllerState::FindVisible(const SampleMeta& s) {
  auto pit = partitions_.find(s.partition_id);
  if (pit == partitions_.end()) return nullptr;
  Partition& p = *pit->second;
  const size_t pos = p.position_of.Find(s.global_index);
  if (pos == PositionMap::kNone || !p.IsVisible(pos)) return nullptr;
  SampleRecord& r = p.samples[pos];
  return r.generation == s.generation ? &r : nullptr;
}

Partition& ControllerState::GetOrCreate(const std::string& partition_id, std::unique_ptr<Partition> fresh) {
  auto& slot = partitions_[partition_id];
  if (!slot) {
    slot = fresh ? std::move(fresh) : std::make_unique<Partition>();
    slot->name = partition_id;
    slot->created = next_partition_++;
    std::vector<int64_t> taken;
    indexes_.Take(pre_alloc_samples_, &taken);
    slot->reserved.insert(taken.begin(), taken.end());
  }
  return *slot;
}

Status ControllerState::CheckAllocation(const std::string& partition_id, const Partition* p,
                                        size_t count) const {
  if (count > limits_.per_request) {
    return Status::Invalid("allocate: ", count, " samples in one request for partition '", partition_id,
                           "' (at most ", limits_.per_request,
                           ", ControllerOptions::max_allocate_per_request); allocate in smaller batches");
  }
  // Samples this request adds to what the partition holds: reserved indexes
  // are taken first, a new partition reserves pre_alloc_samples_.
  const size_t held = p == nullptr ? 0 : p->position_of.size() + p->reserved.size();
  const size_t reserved = p == nullptr ? pre_alloc_samples_ : p->reserved.size();
  const size_t added = p == nullptr ? std::max(count, reserved) : (count > reserved ? count - reserved : 0);
  // Written as subtractions from the limits, so nothing can wrap.
  if (held > limits_.per_partition || added > limits_.per_partition - held) {
    return Status::OutOfSpace("allocate: partition '", partition_id, "' holds ", held, " samples and ", count,
                              " more would pass its limit of ", limits_.per_partition,
                              " (ControllerOptions::max_samples_per_partition); clear samples first");
  }
  const size_t total = held_samples();
  if (total > limits_.total || added > limits_.total - total) {
    return Status::OutOfSpace("allocate: the controller holds ", total, " samples and ", count,
                              " more for partition '", partition_id, "' would pass its limit of ", limits_.total,
                              " (ControllerOptions::max_samples_total); clear partitions first");
  }
  return Status::OK();
}

Result<BatchMeta> ControllerState::Allocate(const std::string& partition_id, size_t count) {
  TQDS_ASSIGN_OR_RETURN(Partition * p, AllocateRecords(partition_id, count));
  std::vector<SampleMeta> out(count);
  const size_t first = p->samples.size() - count;
  for (size_t i = 0; i < count; ++i) {
    out[i].global_index = p->samples[first + i].global_index;
    out[i].generation = p->samples[first + i].generation;
    out[i].partition_id = partition_id;
  }
  return BatchMeta({}, std::move(out));
}

Result<Partition*> ControllerState::AllocateRecords(const std::string& partition_id, size_t count,
                                                    const std::function<void(size_t, SampleRecord&)>& init) {
  if (partition_id.empty()) return Status::Invalid("partition_id must not be empty");
  TQDS_RETURN_NOT_OK(CheckAllocation(partition_id, FindPartition(partition_id), count));
  Partition& p = GetOrCreate(partition_id);
  // Geometric growth: a big allocation comes in slices, and an exact reserve
  // per slice would move every record once a slice.
  if (p.samples.capacity() < p.samples.size() + count) {
    p.samples.reserve(std::max(p.samples.size() + count, 2 * p.samples.capacity()));
  }
  // The partition's reserved indexes first (lowest first), then the pool's.
  std::vector<int64_t> taken;
  taken.reserve(count);
  while (taken.size() < count && !p.reserved.empty()) {
    taken.push_back(*p.reserved.begin());
    p.reserved.erase(p.reserved.begin());
  }
  indexes_.Take(count - taken.size(), &taken);
  for (size_t j = 0; j < taken.size(); ++j) {
    p.position_of.Set(taken[j], p.samples.size());
    SampleRecord& r = p.samples.emplace_back();
    r.global_index = taken[j];
    r.generation = next_generation_++;
    if (init) init(j, r);
  }
  p.live_count += count;
  return &p;
}

Status ControllerState::MarkProduced(BatchMeta meta) {
  // Validate everything first so a bad request changes nothing. Samples of
  // one partition come in runs: it is looked up once a run.
  const auto& names = meta.field_names();
  const size_t n = meta.size();
  std::vector<SampleRecord*> records(n);
  std::vector<Partition*> parts(n);
  Partition* p = nullptr;
  for (size_t i = 0; i < n; ++i) {
    const SampleMeta& s = meta.samples()[i];
    p = PartitionOfRun(p, s.partition_id);
    if (p == nullptr) return Status::NotFound("partition '", s.partition_id, "' does not exist");
    const size_t pos = p->position_of.Find(s.global_index);
    if (pos == PositionMap::kNone || !p->IsVisible(pos) || p->samples[pos].generation != s.generation) {
      return Status::NotFound("sample ", s.global_index, " (generation ", s.generation,
                              ") is not live in partition '", s.partition_id, "' (cleared or never allocated)");
    }
    if (s.fields.size() != names.size()) {
      return Status::Invalid("sample ", s.global_index, " carries ", s.fields.size(), " field records for ",
                             names.size(), " fields");
    }
    records[i] = &p->samples[pos];
    parts[i] = p;
  }
  ApplyProduced(meta, records, parts);
  return Status::OK();
}

namespace {

// The users a put adds to its packs, counted per field while consecutive
// records lie in one pack (a put packs a field's values in runs), and added
// to the counts once per run: not a table update per record.
class PackRuns {
 public:
  explicit PackRuns(size_t fields) : runs_(fields) {}
  void Add(size_t field, uint64_t pack) {
    if (pack == 0) return;
    Run& r = runs_[field];
    if (r.pack != pack && r.users > 0) pending_.push_back(r);
    if (r.pack != pack) r = Run{pack, 0};
    ++r.users;
  }
  void Flush(absl::flat_hash_map<uint64_t, uint64_t>& users) {
    for (const Run& r : pending_) users[r.pack] += r.users;
    pending_.clear();
    for (Run& r : runs_) {
      if (r.users > 0) users[r.pack] += r.users;
      r = Run{};
    }
  }

 private:
  struct Run {
    uint64_t pack = 0;
    uint64_t users = 0;
  };
  std::vector<Run> runs_;     // the open run of each field
  std::vector<Run> pending_;  // closed runs not added yet
};

// A BatchMeta's records, moved out.
class MetaSource final : public ProducedSource {
 public:
  explicit MetaSource(BatchMeta& meta) : meta_(meta) {}
  const std::vector<std::string>& field_names() const override { return meta_.field_names(); }
  size_t size() const override { return meta_.size(); }
  FieldInfo Peek(size_t i, size_t f) const override { return meta_.samples()[i].fields[f]; }
  FieldInfo Take(size_t i, size_t f) override { return std::move(meta_.mutable_samples()[i].fields[f]); }
  void TakeAll(size_t i, FieldInfos* out) override { *out = std::move(meta_.mutable_samples()[i].fields); }
  CustomMeta TakeCustom(size_t i) override { return std::move(meta_.mutable_samples()[i].custom); }

 private:
  BatchMeta& meta_;
};

}  // namespace

void ControllerState::ApplyProduced(BatchMeta& meta, const std::vector<SampleRecord*>& records,
                                    const std::vector<Partition*>& parts) {
  MetaSource source(meta);
  ApplyProduced(source, records, parts);
}

void ControllerState::ApplyProduced(ProducedSource& src, const std::vector<SampleRecord*>& records,
                                    const std::vector<Partition*>& parts) {
  const auto& names = src.field_names();
  const size_t n = src.size();
  // No type check across puts: as upstream, each sample keeps the dtype it was
  // written with (a field may hold float32 for some samples, int64 for others).
  PackRuns runs(names.size());
  std::vector<int> fids;  // of parts[i], for the run it starts
  size_t need = 0;        // record fields the run's fids need
  bool in_order = false;  // fids are 0, 1, ...: a first write can take the meta's records as they are
  for (size_t i = 0; i < n; ++i) {
    Partition& part = *parts[i];
    if (i == 0 || parts[i - 1] != parts[i]) {
      fids.assign(names.size(), -1);
      need = 0;
      in_order = true;
      for (size_t f = 0; f < names.size(); ++f) {
        int fid = part.FieldId(names[f]);
        if (fid < 0) {
          fid = static_cast<int>(part.field_names.size());
          part.field_names.push_back(names[f]);
          part.field_types.push_back(src.Peek(i, f));
          part.field_types.back().pack = part.field_types.back().offset = 0;
          part.field_id[names[f]] = fid;
        }
        fids[f] = fid;
        need = std::max(need, static_cast<size_t>(fid) + 1);
        in_order = in_order && static_cast<size_t>(fid) == f;
      }
    }
    SampleRecord& r = *records[i];
    if (r.fields.empty() && in_order) {
      src.TakeAll(i, &r.fields);  // nothing to replace: the records as they are
      for (size_t f = 0; f < r.fields.size(); ++f) {
        r.fields[f].produced = true;
        runs.Add(f, r.fields[f].pack);
      }
    } else {
      runs.Flush(pack_users_);  // a record replaced below may drop a user of a pack counted in a run
      if (r.fields.size() < need) r.fields.resize(need);
      for (size_t f = 0; f < names.size(); ++f) {
        FieldInfo& slot = r.fields[static_cast<size_t>(fids[f])];
        FieldInfo old = std::move(slot);
        slot = src.Take(i, f);
        slot.produced = true;
        AddPackUser(slot);
        if (old.produced) DropPackUser(old);  // overwritten: its pack may be unused now
      }
    }
    CustomMeta tags = src.TakeCustom(i);
    if (!tags.empty()) {
      CustomMeta& to = r.custom.mutable_get();
      for (auto& [k, v] : tags) to[k] = std::move(v);
    }
  }
  runs.Flush(pack_users_);
}

BatchMeta ControllerState::MakeMeta(const SampleRows& rows) {
  if (rows.partition == nullptr) return BatchMeta(rows.names, {});
  std::vector<SampleMeta> out(rows.size());
  for (size_t i = 0; i < rows.size(); ++i) {
    SampleMeta& m = out[i];
    m.global_index = rows.global_index(i);
    m.generation = rows.generation(i);
    m.partition_id = rows.partition->name;
    m.fields.reserve(rows.names.size());
    for (size_t f = 0; f < rows.names.size(); ++f) m.fields.push_back(rows.field(i, f));
    m.custom = rows.custom(i);
  }
  return BatchMeta(rows.names, std::move(out));
}

SamplingConfig ControllerState::EffectiveSampling(const SamplingConfig& call) const {
  if (defaults_.default_sampling.empty() || ConfigHas(call, "sampler")) return call;
  SamplingConfig out = defaults_.default_sampling;
  for (const auto& [k, v] : call) {
    if (!v.is_nil()) out[k] = v;  // a None leaves the default
  }
  return out;
}

std::vector<size_t> ControllerState::VisibleByIndex(const Partition& p) {
  std::vector<size_t> out;
  out.reserve(p.live_count);
  for (size_t pos = 0; pos < p.samples.size(); ++pos) {
    if (p.IsVisible(pos)) out.push_back(pos);
  }
  auto by_index = [&](size_t a, size_t b) { return p.samples[a].global_index < p.samples[b].global_index; };
  if (!std::is_sorted(out.begin(), out.end(), by_index)) std::sort(out.begin(), out.end(), by_index);
  return out;
}

Result<std::optional<SampleRows>> ControllerState::ForceFetchAll(const GetMetaRequest& req) const {
  const Partition* p = FindPartition(req.partition_id);
  if (p == nullptr) {
    return Status::NotFound("get_meta (force_fetch_all): partition '", req.partition_id, "' does not exist");
  }
  std::vector<int> fids;
  std::vector<std::string> names;
  for (const auto& f : req.fields) {
    int fid = p->FieldId(f);
    if (fid >= 0 && std::find(names.begin(), names.end(), f) == names.end()) {
      fids.push_back(fid);
      names.push_back(f);
    }
  }
  return std::optional<SampleRows>(SampleRows{p, VisibleByIndex(*p), std::move(fids), std::move(names)});
}

Result<std::optional<BatchMeta>> ControllerState::TryGetMeta(const GetMetaRequest& req) {
  TQDS_ASSIGN_OR_RETURN(auto rows, TryGetMetaRows(req));
  if (!rows) return std::optional<BatchMeta>();
  return std::optional<BatchMeta>(MakeMeta(*rows));
}

Result<std::optional<SampleRows>> ControllerState::TryGetMetaRows(const GetMetaRequest& req) {
  if (req.mode == FetchMode::kForceFetchAll) return ForceFetchAll(req);  // any fields, even none
  if (req.fields.empty()) return Status::Invalid("get_meta needs at least one data field");
  if (req.batch_size < 0) return Status::Invalid("batch_size must be >= 0, got ", req.batch_size);
  FetchMode mode = req.mode;
  if (mode == FetchMode::kFetch && defaults_.polling_mode) mode = FetchMode::kPollAll;
  if (mode != FetchMode::kForceFetch && req.task_name.empty()) {
    return Status::Invalid("get_meta in mode ", FetchModeName(mode), " needs a task_name");
  }
  const SamplingConfig sampling = EffectiveSampling(req.sampling);
  Sampler* custom = custom_sampler_.get();
  if (mode != FetchMode::kForceFetch && custom == nullptr) TQDS_RETURN_NOT_OK(SamplerFor(sampling).status());
  auto pit = partitions_.find(req.partition_id);
  if (pit == partitions_.end()) {
    if (mode == FetchMode::kFetch && req.batch_size > 0) return std::optional<SampleRows>();
    return std::optional<SampleRows>(SampleRows{nullptr, {}, {}, req.fields});
  }
  Partition& p = *pit->second;
  std::vector<int> fids;
  for (const auto& f : req.fields) fids.push_back(p.FieldId(f));

  if (mode == FetchMode::kForceFetch) {
    std::vector<size_t> positions;
    for (size_t pos = 0; pos < p.samples.size(); ++pos) {
      if (req.batch_size > 0 && positions.size() >= static_cast<size_t>(req.batch_size)) break;
      if (p.IsVisible(pos) && p.IsProduced(pos, fids)) positions.push_back(pos);
    }
    return std::optional<SampleRows>(SampleRows{&p, std::move(positions), std::move(fids), req.fields});
  }

  Sampler* sampler = custom;
  if (sampler == nullptr) {
    TQDS_ASSIGN_OR_RETURN(sampler, SamplerFor(sampling));
  }
  TaskState& task = p.tasks[req.task_name];
  CandidateView view(p, task, fids);
  // Polling (mode poll_all, or fetch in polling mode): a custom sampler that
  // holds an answer for this call gives it even when too few are ready.
  if (custom != nullptr && mode == FetchMode::kPollAll) {
    view.set_ask_cached(custom->HasCachedResult(p.name, req.task_name, sampling));
  }
  TQDS_ASSIGN_OR_RETURN(auto picked, sampler->Select(view, static_cast<size_t>(req.batch_size),
                                                     sampling, mode == FetchMode::kPoll));
  if (!picked) {
    // poll_all: all or nothing, and nothing is an empty answer, not a wait.
    if (mode == FetchMode::kPollAll) return std::optional<SampleRows>(SampleRows{nullptr, {}, {}, req.fields});
    return std::optional<SampleRows>();
  }
  if (!sampler->MarksConsumed()) MarkConsumed(p, task, *picked);
  return std::optional<SampleRows>(SampleRows{&p, std::move(*picked), std::move(fids), req.fields});
}

void ControllerState::EraseKey(Partition& p, size_t pos) {
  std::string& key = p.samples[pos].key;
  if (key.empty()) return;
  p.position_of_key.Erase(pos);
  key.clear();
}

BatchMeta ControllerState::BeginClear(Partition& p, const std::vector<size_t>& positions) {
  // Only identities: storage deletes every field of the partition for each
  // sample (missing keys are fine), so no per-sample field records are needed,
  // except for samples whose every field is packed (clear_keyed_ 0): they
  // have nothing under their own keys, and their packs go by DropPackUser.
  std::vector<SampleMeta> out(positions.size());
  clear_keyed_.assign(positions.size(), 1);
  for (size_t i = 0; i < positions.size(); ++i) {
    SampleRecord& r = p.samples[positions[i]];
    bool all_packed = r.fields.size() >= p.field_names.size();
    for (const FieldInfo& f : r.fields) all_packed = all_packed && f.produced && f.pack != 0;
    clear_keyed_[i] = all_packed ? 0 : 1;
    if (!r.clearing) {
      r.clearing = true;
      --p.live_count;
      for (const FieldInfo& f : r.fields) {
        if (f.produced) DropPackUser(f);
      }
    }
    EraseKey(p, positions[i]);
    out[i].global_index = r.global_index;
    out[i].generation = r.generation;
    out[i].partition_id = p.name;
  }
  return BatchMeta(p.field_names, std::move(out));
}

void ControllerState::AddPackUser(const FieldInfo& f) {
  if (f.pack != 0) ++pack_users_[f.pack];
}

void ControllerState::DropPackUser(const FieldInfo& f) {
  if (f.pack == 0) return;
  auto it = pack_users_.find(f.pack);
  if (it == pack_users_.end()) return;
  if (--it->second == 0) {
    dead_packs_.push_back(f.pack);
    pack_users_.erase(it);
  }
}

void ControllerState::RecountPackUsers() {
  pack_users_.clear();
  dead_packs_.clear();
  for (const auto& [name, p] : partitions_) {
    for (size_t pos = 0; pos < p->samples.size(); ++pos) {
      if (!p->IsVisible(pos)) continue;
      for (const FieldInfo& f : p->samples[pos].fields) {
        if (f.produced) AddPackUser(f);
      }
    }
  }
}

BatchMeta ControllerState::BeginClearPartition(const std::string& partition_id) {
  auto it = partitions_.find(partition_id);
  if (it == partitions_.end()) return BatchMeta();
  Partition& p = *it->second;
  p.keep_when_empty = false;
  if (custom_sampler_) custom_sampler_->ForgetPartition(partition_id);  // upstream's sampler.clear_cache
  indexes_.Give(std::vector<int64_t>(p.reserved.begin(), p.reserved.end()));  // they hold nothing in storage
  p.reserved.clear();
  if (p.position_of.empty()) {  // nothing to release later: drop it now
    partitions_.erase(it);
    return BatchMeta();
  }
  std::vector<size_t> positions;
  for (size_t pos = 0; pos < p.samples.size(); ++pos) {
    if (p.samples[pos].live) positions.push_back(pos);
  }
  for (auto& [name, task] : p.tasks) task.sticky.clear();  // upstream: the sampler cache goes with the partition
  return BeginClear(p, positions);
}

BatchMeta ControllerState::BeginClearSamples(const std::string& partition_id,
                                             const std::vector<int64_t>& indexes) {
  auto it = partitions_.find(partition_id);
  if (it == partitions_.end()) return BatchMeta();
  Partition& p = *it->second;
  std::vector<size_t> positions;
  for (int64_t gi : indexes) {
    const size_t pos = p.position_of.Find(gi);
    if (pos != PositionMap::kNone) positions.push_back(pos);
  }
  return BeginClear(p, positions);
}

Status ControllerState::ReleaseSamples(const BatchMeta& meta) {
  Partition* run = nullptr;
  // Kept between calls: freeing a batch's worth of indexes here made free()
  // consolidate the allocator's small chunks inside every release.
  std::vector<int64_t>& released = released_scratch_;
  released.clear();
  for (const auto& s : meta.samples()) {
    run = PartitionOfRun(run, s.partition_id);
    if (run == nullptr) continue;  // idempotent
    Partition& p = *run;
    const size_t pos = p.position_of.Find(s.global_index);
    if (pos == PositionMap::kNone) continue;
    SampleRecord& r = p.samples[pos];
    if (r.generation != s.generation) continue;  // index already reused
    if (!r.clearing) {
      indexes_.Give(released);  // those before it are released
      return Status::Invalid("sample ", s.global_index, " of partition '", s.partition_id,
                             "' is released without a clear first");
    }
    r.live = false;
    r.clearing = false;
    r.fields.clear();
    r.fields.shrink_to_fit();
    r.custom.clear();
    p.position_of.Erase(s.global_index);
    released.push_back(s.global_index);
  }
  indexes_.Give(released);
  // Drop partitions that have nothing left; compact the others.
  for (auto it = partitions_.begin(); it != partitions_.end();) {
    if (it->second->position_of.empty() && !it->second->keep_when_empty) {
      it = partitions_.erase(it);
    } else {
      CompactPartition(*it->second);
      ++it;
    }
  }
  return Status::OK();
}

Result<ProductionStatus> ControllerState::GetProductionStatus(const std::string& partition_id) const {
  const Partition* p = FindPartition(partition_id);
  if (p == nullptr) return Status::NotFound("partition '", partition_id, "' does not exist");
  ProductionStatus st;
  st.num_samples = p->live_count;
  for (const auto& name : p->field_names) st.produced[name] = 0;
  for (size_t pos = 0; pos < p->samples.size(); ++pos) {
    if (!p->IsVisible(pos)) continue;
    const auto& fields = p->samples[pos].fields;
    for (size_t f = 0; f < fields.size(); ++f) {
      if (fields[f].produced) ++st.produced[p->field_names[f]];
    }
  }
  return st;
}

Result<ConsumptionStatus> ControllerState::GetConsumptionStatus(const std::string& partition_id,
                                                                const std::string& task_name) const {
  const Partition* p = FindPartition(partition_id);
  if (p == nullptr) return Status::NotFound("partition '", partition_id, "' does not exist");
  ConsumptionStatus st;
  st.num_samples = p->live_count;
  auto it = p->tasks.find(task_name);
  if (it != p->tasks.end()) {
    for (size_t pos = 0; pos < it->second.consumed.size(); ++pos) {
      if (it->second.consumed[pos] && p->IsVisible(pos)) ++st.consumed;
    }
  }
  return st;
}

Status ControllerState::ResetConsumption(const std::string& partition_id, const std::string& task_name) {
  auto it = partitions_.find(partition_id);
  if (it == partitions_.end()) return Status::NotFound("partition '", partition_id, "' does not exist");
  // Consumption and group-mode selections go; upstream-mode sampler
  // selections (sticky) stay until the partition is cleared, as upstream's.
  auto reset = [](TaskState& t) {
    TaskState fresh;
    fresh.sticky = std::move(t.sticky);
    t = std::move(fresh);
  };
  if (task_name.empty()) {
    for (auto& [name, task] : it->second->tasks) reset(task);
  } else if (auto t = it->second->tasks.find(task_name); t != it->second->tasks.end()) {
    reset(t->second);
  }
  return Status::OK();
}

std::optional<SampleStatusMatrix> ControllerState::ProductionMatrix(const std::string& partition_id,
                                                                    const std::vector<std::string>& fields) const {
  const Partition* p = FindPartition(partition_id);
  if (p == nullptr || fields.empty()) return std::nullopt;
  for (const auto& f : fields) {
    if (p->FieldId(f) < 0) return std::nullopt;
  }
  SampleStatusMatrix m;
  std::vector<int> fids;  // registration order, restricted to the requested fields
  for (size_t fid = 0; fid < p->field_names.size(); ++fid) {
    if (std::find(fields.begin(), fields.end(), p->field_names[fid]) != fields.end()) {
      fids.push_back(static_cast<int>(fid));
      m.columns.push_back(p->field_names[fid]);
    }
  }
  const auto rows = StatusRows(*p);
  m.global_indexes.reserve(rows.size());
  m.status.reserve(rows.size() * fids.size());
  for (const auto& [gi, pos] : rows) {
    m.global_indexes.push_back(gi);
    if (pos == kReservedRow) {
      m.status.insert(m.status.end(), fids.size(), 0);
      continue;
    }
    const auto& rec = p->samples[pos].fields;
    for (int f : fids) m.status.push_back(static_cast<size_t>(f) < rec.size() && rec[f].produced ? 1 : 0);
  }
  return m;
}

std::optional<SampleStatusMatrix> ControllerState::ConsumptionMatrix(const std::string& partition_id,
                                                                     const std::string& task_name) {
  auto it = partitions_.find(partition_id);
  if (it == partitions_.end()) return std::nullopt;
  Partition& p = *it->second;
  const TaskState& task = p.tasks[task_name];
  SampleStatusMatrix m;
  m.columns = {task_name};
  const auto rows = StatusRows(p);
  m.global_indexes.reserve(rows.size());
  m.status.reserve(rows.size());
  for (const auto& [gi, pos] : rows) {
    m.global_indexes.push_back(gi);
    m.status.push_back(pos != kReservedRow && pos < task.consumed.size() && task.consumed[pos] ? 1 : 0);
  }
  return m;
}

std::vector<std::pair<int64_t, size_t>> ControllerState::StatusRows(const Partition& p) {
  std::vector<std::pair<int64_t, size_t>> rows;
  const std::vector<size_t> visible = VisibleByIndex(p);
  rows.reserve(visible.size() + p.reserved.size());
  for (size_t pos : visible) rows.emplace_back(p.samples[pos].global_index, pos);
  for (int64_t gi : p.reserved) rows.emplace_back(gi, kReservedRow);
  std::sort(rows.begin(), rows.end());
  return rows;
}

std::vector<const Partition*> ControllerState::InCreationOrder() const {
  std::vector<const Partition*> out;
  out.reserve(partitions_.size());
  for (const auto& [name, p] : partitions_) out.push_back(p.get());
  std::sort(out.begin(), out.end(), [](const Partition* a, const Partition* b) { return a->created < b->created; });
  return out;
}

std::vector<std::string> ControllerState::ListPartitions() const {
  std::vector<std::string> out;
  for (const Partition* p : InCreationOrder()) out.push_back(p->name);
  return out;
}

std::vector<PartitionSummary> ControllerState::Summaries() const {
  std::vector<PartitionSummary> out;
  for (const Partition* p : InCreationOrder()) {
    PartitionSummary s;
    s.partition_id = p->name;
    auto produced = GetProductionStatus(p->name);
    if (produced.ok()) {
      s.num_samples = produced->num_samples;
      s.produced = std::move(produced->produced);
    }
    for (const auto& [task, state] : p->tasks) {
      auto consumed = GetConsumptionStatus(p->name, task);
      if (consumed.ok()) s.consumed[task] = consumed->consumed;
    }
    out.push_back(std::move(s));
  }
  return out;
}

Status ControllerState::SetCustomMeta(const BatchMeta& meta) {
  for (const auto& s : meta.samples()) {
    if (FindVisible(s) == nullptr) {
      return Status::NotFound("sample ", s.global_index, " (generation ", s.generation,
                              ") not found in partition '", s.partition_id, "' (cleared or reused)");
    }
  }
  for (const auto& s : meta.samples()) {
    if (s.custom.empty()) continue;
    CustomMeta& custom = FindVisible(s)->custom.mutable_get();
    for (const auto& [k, v] : s.custom) custom[k] = v;
  }
  return Status::OK();
}

Result<BatchMeta> ControllerState::GetSamples(const std::string& partition_id,
                                              const std::vector<int64_t>& indexes) const {
  const Partition* p = FindPartition(partition_id);
  if (p == nullptr) return Status::NotFound("partition '", partition_id, "' does not exist");
  std::vector<size_t> positions;
  for (int64_t gi : indexes) {
    const size_t pos = p->position_of.Find(gi);
    if (pos == PositionMap::kNone || !p->IsVisible(pos)) {
      return Status::NotFound("sample ", gi, " not found in partition '", partition_id, "'");
    }
    positions.push_back(pos);
  }
  std::vector<int> all(p->field_names.size());
  for (size_t i = 0; i < all.size(); ++i) all[i] = static_cast<int>(i);
  return MakeMeta(SampleRows{p, std::move(positions), std::move(all), p->field_names});
}

}  // namespace tq::internal
