// ControllerState's KV API: string keys naming samples of a partition.
#include <algorithm>
#include <unordered_set>

#include <absl/container/flat_hash_set.h>

#include "queue/controller_state.h"
#include "queue/protocol.h"

namespace tq::internal {
namespace {

// Positions of a partition seen by one request (a key listed twice): a
// bitmap over the partition when it is not much larger than the request,
// else a set, so a request of a few keys costs no pass over a big partition.
class SeenPositions {
 public:
  SeenPositions(size_t partition_size, size_t request_size)
      : dense_(partition_size <= 64 * request_size), bits_(dense_ ? partition_size : 0) {}
  // False when `pos` was seen before.
  bool Insert(size_t pos) {
    if (!dense_) return sparse_.insert(pos).second;
    if (bits_[pos]) return false;
    bits_[pos] = true;
    return true;
  }

 private:
  bool dense_;
  std::vector<bool> bits_;
  std::unordered_set<size_t> sparse_;
};

// The fields (partition ids and names, registration order) that every
// sample at `positions` of `p` has produced; those of `known` (field ids)
// are taken as produced by all without a look.
void CommonFields(const Partition& p, const std::vector<size_t>& positions, std::vector<int>* fids,
                  std::vector<std::string>* names, const std::vector<int>& known = {}) {
  if (positions.empty()) return;
  // One pass over the records, all fields at once.
  const size_t nf = p.field_names.size();
  std::vector<uint8_t> all(nf, 1), look(nf, 1);
  size_t open = nf;  // fields looked at and not yet ruled out
  for (int k : known) {
    if (k >= 0 && static_cast<size_t>(k) < nf && look[k]) look[k] = 0, --open;
  }
  for (size_t i = 0; i < positions.size() && open > 0; ++i) {
    const auto& fields = p.samples[positions[i]].fields;
    for (size_t f = 0; f < nf; ++f) {
      if (look[f] && all[f] && (f >= fields.size() || !fields[f].produced)) all[f] = 0, --open;
    }
  }
  for (size_t f = 0; f < nf; ++f) {
    if (all[f]) {
      fids->push_back(static_cast<int>(f));
      names->push_back(p.field_names[f]);
    }
  }
}

}  // namespace

Result<BatchMeta> ControllerState::KvRetrieve(const std::string& partition_id,
                                              const std::vector<std::string>& keys, bool create) {
  TQDS_ASSIGN_OR_RETURN(SampleRows rows, KvRetrieveRows(partition_id, keys, create));
  return MakeMeta(rows);
}

Status ControllerState::CreateKeys(const std::string& partition_id, const std::vector<std::string>& keys,
                                   const std::vector<size_t>& missing, std::vector<size_t>* positions) {
  auto it = partitions_.find(partition_id);
  Partition* existing = it == partitions_.end() ? nullptr : it->second.get();
  TQDS_RETURN_NOT_OK(CheckAllocation(partition_id, existing, missing.size()));
  // Each new key is entered into the key index once, at the position its
  // record will get (a new partition is made aside and installed after). A
  // key found there was entered by this request (every missing key was
  // looked up): it is listed twice, and the keys entered so far are taken
  // out again.
  std::unique_ptr<Partition> fresh = existing == nullptr ? std::make_unique<Partition>() : nullptr;
  Partition& target = existing != nullptr ? *existing : *fresh;
  KeyIndex& index = target.position_of_key;
  const size_t first = target.samples.size();
  index.reserve(index.size() + missing.size());  // one rehash, not log2(n)
  index.SetPending(first, &keys, &missing);
  auto take_out = [&](size_t entered) {  // while their keys are still pending
    for (size_t k = 0; k < entered; ++k) index.Erase(first + k);
    index.ClearPending();
  };
  for (size_t j = 0; j < missing.size(); ++j) {
    if (!index.Insert(first + j)) {
      take_out(j);
      return Status::Invalid("kv_retrieve: key '", keys[missing[j]], "' is listed twice");
    }
    (*positions)[missing[j]] = first + j;
  }
  if (fresh) GetOrCreate(partition_id, std::move(fresh));
  // The records at those positions, each made with its key (checked above:
  // this cannot be refused).
  auto made = AllocateRecords(partition_id, missing.size(), [&](size_t j, SampleRecord& r) {
    r.key = keys[missing[j]];
  });
  if (!made.ok()) {
    take_out(missing.size());
    return made.status();
  }
  index.ClearPending();
  (*made)->keep_when_empty = true;
  return Status::OK();
}

Result<SampleRows> ControllerState::KvRetrieveRows(const std::string& partition_id,
                                                   const std::vector<std::string>& keys, bool create) {
  if (partition_id.empty()) return Status::Invalid("partition_id must not be empty");
  if (keys.size() > kMaxKvKeysPerRequest) {
    return Status::Invalid("kv_retrieve: ", keys.size(), " keys in one request (at most ", kMaxKvKeysPerRequest, ")");
  }
  for (const auto& k : keys) {
    if (k.empty()) return Status::Invalid("kv_retrieve: keys must not be empty");
  }
  auto pit = partitions_.find(partition_id);

  // One lookup per key. A key listed twice: two equal positions among the
  // found keys (a position has one key), or two equal missing keys (found
  // as they are entered into the key map, or by `seen` without create).
  constexpr size_t kMissing = SIZE_MAX;
  std::vector<size_t> positions(keys.size(), kMissing);
  std::vector<size_t> missing;
  {
    Partition* p = pit == partitions_.end() ? nullptr : pit->second.get();
    SeenPositions taken(p == nullptr ? 0 : p->samples.size(), keys.size());
    size_t hint = 0;
    for (size_t i = 0; i < keys.size(); ++i) {
      const size_t pos = p == nullptr ? Partition::kNoPosition : p->FindKey(keys[i], hint);
      if (pos == Partition::kNoPosition) {
        missing.push_back(i);
        continue;
      }
      if (!taken.Insert(pos)) return Status::Invalid("kv_retrieve: key '", keys[i], "' is listed twice");
      positions[i] = pos;
      hint = pos + 1;
    }
  }
  if (create) {
    TQDS_RETURN_NOT_OK(CreateKeys(partition_id, keys, missing, &positions));
    pit = partitions_.find(partition_id);
  } else if (!missing.empty()) {
    absl::flat_hash_set<std::string_view> seen;  // no allocation per key
    seen.reserve(missing.size());
    for (size_t i : missing) {
      if (!seen.insert(keys[i]).second) return Status::Invalid("kv_retrieve: key '", keys[i], "' is listed twice");
    }
    positions.erase(std::remove(positions.begin(), positions.end(), kMissing), positions.end());
  }
  if (pit == partitions_.end()) return SampleRows();
  Partition& p = *pit->second;

  // The fields every returned sample has produced, in registration order.
  std::vector<int> fids;
  std::vector<std::string> names;
  CommonFields(p, positions, &fids, &names);
  return SampleRows{&p, std::move(positions), std::move(fids), std::move(names)};
}

Result<KvPutResult> ControllerState::KvPut(const std::string& partition_id, const std::vector<std::string>& keys,
                                           BatchMeta meta) {
  if (meta.size() != keys.size()) {
    return Status::Invalid("kv_put: ", keys.size(), " keys but ", meta.size(), " samples of field records");
  }
  for (size_t i = 0; i < meta.size(); ++i) {
    if (meta.samples()[i].fields.size() != meta.field_names().size()) {
      return Status::Invalid("kv_put: key '", keys[i], "' carries ", meta.samples()[i].fields.size(),
                             " field records for ", meta.field_names().size(), " fields");
    }
  }
  TQDS_ASSIGN_OR_RETURN(MetaRecords records, MetaRecords::Of(std::move(meta)));
  return KvPut(partition_id, keys, std::move(records));
}

namespace {

// A KV put request's records, each made once from its columns.
class RecordsSource final : public ProducedSource {
 public:
  explicit RecordsSource(MetaRecords& records) : records_(records) {}
  const std::vector<std::string>& field_names() const override { return records_.field_names(); }
  size_t size() const override { return records_.size(); }
  FieldInfo Peek(size_t i, size_t f) const override { return records_.Record(i, f); }
  FieldInfo Take(size_t i, size_t f) override { return records_.Record(i, f); }
  void TakeAll(size_t i, FieldInfos* out) override {
    out->resize(records_.field_names().size());
    for (size_t f = 0; f < out->size(); ++f) (*out)[f] = records_.Record(i, f);
  }
  CustomMeta TakeCustom(size_t i) override { return records_.TakeCustom(i); }

 private:
  MetaRecords& records_;
};

}  // namespace

Result<KvPutResult> ControllerState::KvPut(const std::string& partition_id, const std::vector<std::string>& keys,
                                           MetaRecords records) {
  // Everything that can be refused is checked before KvRetrieveRows creates
  // a key (which itself checks the keys first).
  const auto& names = records.field_names();
  if (records.size() != keys.size()) {
    return Status::Invalid("kv_put: ", keys.size(), " keys but ", records.size(), " samples of field records");
  }
  std::unordered_set<std::string_view> seen_names;
  for (const auto& name : names) {
    TQDS_RETURN_NOT_OK(ValidateName(name, "field name").WithContext("kv_put"));
    if (!seen_names.insert(name).second) return Status::Invalid("kv_put: field '", name, "' is listed twice");
  }
  TQDS_ASSIGN_OR_RETURN(SampleRows rows, KvRetrieveRows(partition_id, keys, /*create=*/true));
  Partition& p = *partitions_.at(partition_id);
  std::vector<SampleRecord*> targets(rows.positions.size());
  for (size_t i = 0; i < targets.size(); ++i) targets[i] = &p.samples[rows.positions[i]];
  RecordsSource source(records);
  ApplyProduced(source, targets, std::vector<Partition*>(targets.size(), &p));

  KvPutResult out;
  std::vector<int> written, fids;
  for (const auto& name : names) written.push_back(p.FieldId(name));
  CommonFields(p, rows.positions, &fids, &out.fields, written);
  bool any_tags = false;
  for (const SampleRecord* r : targets) any_tags = any_tags || !r->custom.empty();
  if (any_tags) {
    out.tags.reserve(targets.size());
    for (const SampleRecord* r : targets) out.tags.push_back(r->custom.get());
  }
  return out;
}

Result<std::vector<std::optional<std::string>>> ControllerState::KvKeys(
    const std::string& partition_id, const std::vector<int64_t>& indexes) const {
  const Partition* p = FindPartition(partition_id);
  if (p == nullptr) return Status::NotFound("partition '", partition_id, "' does not exist");
  std::vector<std::optional<std::string>> out(indexes.size());
  for (size_t i = 0; i < indexes.size(); ++i) {
    const size_t pos = p->position_of.Find(indexes[i]);
    if (pos == PositionMap::kNone) continue;
    const std::string& key = p->samples[pos].key;
    if (!key.empty()) out[i] = key;
  }
  return out;
}

KvListing ControllerState::KvList(const std::optional<std::string>& partition_id) const {
  auto list_one = [](const Partition& p) {
    KvPartition out{p.name, {}};
    out.entries.reserve(p.position_of_key.size());
    for (const SampleRecord& r : p.samples) {
      if (!r.key.empty()) out.entries.push_back({r.key, r.custom.get()});
    }
    return out;
  };
  KvListing listing;
  if (partition_id) {
    if (const Partition* p = FindPartition(*partition_id)) listing.push_back(list_one(*p));
    return listing;
  }
  listing.reserve(partitions_.size());
  for (const Partition* p : InCreationOrder()) listing.push_back(list_one(*p));
  return listing;
}

BatchMeta ControllerState::BeginKvClear(const std::string& partition_id, const std::vector<std::string>& keys) {
  auto it = partitions_.find(partition_id);
  if (it == partitions_.end()) return BatchMeta();
  Partition& p = *it->second;
  p.keep_when_empty = true;
  std::vector<size_t> positions;
  SeenPositions seen(p.samples.size(), keys.size());  // a key listed twice is cleared once
  size_t hint = 0;
  for (const auto& k : keys) {
    const size_t pos = p.FindKey(k, hint);
    if (pos == Partition::kNoPosition || !seen.Insert(pos)) continue;
    positions.push_back(pos);
    hint = pos + 1;
  }
  return BeginClear(p, positions);
}

}  // namespace tq::internal
