// MetastoreState: keys, revisions, leases and watch history in memory.
#include "datasystem/cluster/metastore_state.h"

#include <algorithm>
#include <type_traits>

namespace ds::cluster::metastore {

using tqds::Result;
using tqds::Status;

namespace {

bool IsAllKeysEnd(const std::string& end) { return end.size() == 1 && end[0] == '\0'; }

uint64_t SplitMix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

bool Holds(Compare::Op op, int cmp) {
  switch (op) {
    case Compare::Op::kEqual:
      return cmp == 0;
    case Compare::Op::kGreater:
      return cmp > 0;
    case Compare::Op::kLess:
      return cmp < 0;
    case Compare::Op::kNotEqual:
      return cmp != 0;
  }
  return false;
}

int Cmp(int64_t a, int64_t b) { return a < b ? -1 : (a > b ? 1 : 0); }

// etcd's compare of one key (an absent key compares as all zeros, except
// that a value compare on it fails).
bool KeyHolds(const CompareRequest& c, const KeyValue* kv) {
  static const KeyValue kAbsent;
  if (kv == nullptr && c.target == Compare::Target::kValue) return false;
  const KeyValue& k = kv != nullptr ? *kv : kAbsent;
  switch (c.target) {
    case Compare::Target::kVersion:
      return Holds(c.op, Cmp(k.version, c.number));
    case Compare::Target::kCreateRevision:
      return Holds(c.op, Cmp(k.create_revision, c.number));
    case Compare::Target::kModRevision:
      return Holds(c.op, Cmp(k.mod_revision, c.number));
    case Compare::Target::kLease:
      return Holds(c.op, Cmp(k.lease, c.number));
    case Compare::Target::kValue: {
      int r = k.value.compare(c.value);
      return Holds(c.op, r < 0 ? -1 : (r > 0 ? 1 : 0));
    }
  }
  return false;
}

size_t EventBytes(const KeyValue& kv) { return kv.key.size() + kv.value.size() + 64; }

Status EmptyKey() { return Status::Invalid("etcdserver: key is not provided"); }

}  // namespace

bool KeyRange::Contains(const std::string& k) const {
  if (range_end.empty()) return k == key;
  if (IsAllKeysEnd(range_end)) return k >= key;
  return k >= key && k < range_end;
}

Status StateLimits::Validate() const {
  if (max_data_bytes == 0) return Status::Invalid("metastore max_data_bytes must be > 0");
  if (max_history_events == 0 || max_history_bytes == 0) {
    return Status::Invalid("metastore history bounds must be > 0");
  }
  if (max_leases == 0) return Status::Invalid("metastore max_leases must be > 0");
  if (min_lease_ttl_s < 1 || max_lease_ttl_s < min_lease_ttl_s) {
    return Status::Invalid("metastore lease TTLs: need 1 <= min_lease_ttl_s <= max_lease_ttl_s");
  }
  return Status::OK();
}

MetastoreState::MetastoreState(StateLimits limits, uint64_t lease_seed)
    : limits_(limits), lease_seq_(lease_seed) {}

int64_t MetastoreState::revision() const {
  MutexLock lock(&mu_);
  return revision_;
}

int64_t MetastoreState::compact_revision() const {
  MutexLock lock(&mu_);
  return compact_revision_;
}

size_t MetastoreState::data_bytes() const {
  MutexLock lock(&mu_);
  return data_bytes_;
}

std::pair<std::map<std::string, KeyValue>::const_iterator,
          std::map<std::string, KeyValue>::const_iterator>
MetastoreState::Bounds(const KeyRange& range) const {
  auto first = kv_.lower_bound(range.key);
  if (range.range_end.empty()) {
    if (first != kv_.end() && first->first == range.key) return {first, std::next(first)};
    return {first, first};
  }
  if (IsAllKeysEnd(range.range_end)) return {first, kv_.end()};
  if (range.range_end <= range.key) return {first, first};
  return {first, kv_.lower_bound(range.range_end)};
}

Status MetastoreState::CheckRevision(int64_t revision) const {
  if (revision > revision_) {
    return Status::Invalid("etcdserver: mvcc: required revision is a future revision");
  }
  if (revision < compact_revision_) {
    return Status::Invalid("etcdserver: mvcc: required revision has been compacted");
  }
  return Status::OK();
}

RangeResponse MetastoreState::RangeLocked(const RangeRequest& req) const {
  RangeResponse out;
  auto [it, last] = Bounds(req.range);
  for (; it != last; ++it) {
    ++out.count;
    if (req.count_only) continue;
    if (req.limit > 0 && static_cast<int64_t>(out.kvs.size()) >= req.limit) {
      out.more = true;
      continue;
    }
    out.kvs.push_back(it->second);
    if (req.keys_only) out.kvs.back().value.clear();
  }
  return out;
}

Status MetastoreState::CheckRange(const RangeRequest& req) const {
  if (req.range.key.empty()) return EmptyKey();
  if (req.limit < 0) return Status::Invalid("etcdserver: limit must be >= 0");
  if (req.revision != 0 && req.revision != revision_) {
    TQDS_RETURN_NOT_OK(CheckRevision(req.revision));
    return Status::Invalid("metastore: unsupported: reads at a past revision (", req.revision,
                           "; current ", revision_, ")");
  }
  return Status::OK();
}

Result<RangeResponse> MetastoreState::Range(const RangeRequest& req) {
  MutexLock lock(&mu_);
  TQDS_RETURN_NOT_OK(CheckRange(req));
  RangeResponse out = RangeLocked(req);
  out.revision = revision_;
  return out;
}

Status MetastoreState::ValidateOps(const std::vector<OpRequest>& ops) const {
  std::set<std::string> put_keys;
  std::vector<const KeyRange*> deletes;
  for (const auto& op : ops) {
    if (const auto* r = std::get_if<RangeRequest>(&op)) {
      TQDS_RETURN_NOT_OK(CheckRange(*r));
    } else if (const auto* p = std::get_if<PutRequest>(&op)) {
      if (p->key.empty()) return EmptyKey();
      if (p->ignore_value && !p->value.empty()) {
        return Status::Invalid("etcdserver: value is provided");
      }
      if (p->ignore_lease && p->lease != 0) return Status::Invalid("etcdserver: lease is provided");
      if (!put_keys.insert(p->key).second) {
        return Status::Invalid("etcdserver: duplicate key given in txn request");
      }
    } else if (const auto* d = std::get_if<DeleteRequest>(&op)) {
      if (d->range.key.empty()) return EmptyKey();
      deletes.push_back(&d->range);
    }
  }
  for (const auto* d : deletes) {
    for (const auto& k : put_keys) {
      if (d->Contains(k)) return Status::Invalid("etcdserver: duplicate key given in txn request");
    }
  }
  return Status::OK();
}

bool MetastoreState::CompareHolds(const CompareRequest& c) const {
  if (c.range.range_end.empty()) {
    auto it = kv_.find(c.range.key);
    return KeyHolds(c, it == kv_.end() ? nullptr : &it->second);
  }
  auto [it, last] = Bounds(c.range);
  if (it == last) return KeyHolds(c, nullptr);
  for (; it != last; ++it) {
    if (!KeyHolds(c, &it->second)) return false;
  }
  return true;
}

void MetastoreState::Record(EventType type, const KeyValue& kv) {
  HistoryEvent h;
  h.event.type = type;
  if (type == EventType::kPut) {
    h.event.kv = kv;
  } else {
    h.event.kv.key = kv.key;
    h.event.kv.mod_revision = kv.mod_revision;
  }
  h.bytes = EventBytes(h.event.kv);
  history_bytes_ += h.bytes;
  history_.push_back(std::move(h));
}

PutResponse MetastoreState::PutLocked(const PutRequest& req, WriteBatch* batch) {
  PutResponse out;
  KeyValue kv;
  auto it = kv_.find(req.key);
  if (it != kv_.end()) {
    if (req.prev_kv) out.prev_kv = it->second;
    kv = it->second;
    ++kv.version;
    data_bytes_ -= kv.key.size() + kv.value.size();
  } else {
    kv.key = req.key;
    kv.create_revision = batch->revision;
    kv.version = 1;
  }
  kv.mod_revision = batch->revision;
  if (!req.ignore_value) kv.value = req.value;
  const int64_t old_lease = it != kv_.end() ? it->second.lease : 0;
  if (!req.ignore_lease) kv.lease = req.lease;
  if (old_lease != kv.lease) {
    if (auto l = leases_.find(old_lease); l != leases_.end()) l->second.keys.erase(kv.key);
    if (auto l = leases_.find(kv.lease); l != leases_.end()) l->second.keys.insert(kv.key);
  }
  data_bytes_ += kv.key.size() + kv.value.size();
  Record(EventType::kPut, kv);
  kv_[req.key] = std::move(kv);
  batch->wrote = true;
  return out;
}

void MetastoreState::EraseKey(std::map<std::string, KeyValue>::iterator it, WriteBatch* batch) {
  const KeyValue& kv = it->second;
  if (kv.lease != 0) {
    if (auto l = leases_.find(kv.lease); l != leases_.end()) l->second.keys.erase(kv.key);
  }
  data_bytes_ -= kv.key.size() + kv.value.size();
  KeyValue gone;
  gone.key = kv.key;
  gone.mod_revision = batch->revision;
  Record(EventType::kDelete, gone);
  kv_.erase(it);
  batch->wrote = true;
}

DeleteResponse MetastoreState::DeleteLocked(const DeleteRequest& req, WriteBatch* batch) {
  DeleteResponse out;
  auto [first, last] = Bounds(req.range);
  std::vector<std::string> keys;
  for (auto it = first; it != last; ++it) {
    keys.push_back(it->first);
    if (req.prev_kv) out.prev_kvs.push_back(it->second);
  }
  for (const auto& k : keys) EraseKey(kv_.find(k), batch);
  out.deleted = static_cast<int64_t>(keys.size());
  return out;
}

void MetastoreState::Commit(const WriteBatch& batch) {
  if (!batch.wrote) return;
  revision_ = batch.revision;
  TrimHistory();
  changed_.notify_all();
}

void MetastoreState::DropOldestRevision() {
  const int64_t rev = history_.front().event.kv.mod_revision;
  while (!history_.empty() && history_.front().event.kv.mod_revision == rev) {
    history_bytes_ -= history_.front().bytes;
    history_.pop_front();
  }
  compact_revision_ = std::max(compact_revision_, rev + 1);
}

void MetastoreState::TrimHistory() {
  while (!history_.empty() && (history_.size() > limits_.max_history_events ||
                               history_bytes_ > limits_.max_history_bytes)) {
    DropOldestRevision();
  }
}

Result<TxnResponse> MetastoreState::Txn(const TxnRequest& req) {
  for (const auto& c : req.compares) {
    if (c.range.key.empty()) return EmptyKey();
  }
  MutexLock lock(&mu_);
  TQDS_RETURN_NOT_OK(ValidateOps(req.success));
  TQDS_RETURN_NOT_OK(ValidateOps(req.failure));
  TxnResponse out;
  out.succeeded = std::all_of(req.compares.begin(), req.compares.end(),
                              [this](const CompareRequest& c) MS_REQUIRES(mu_) {
                                return CompareHolds(c);
                              });
  const auto& ops = out.succeeded ? req.success : req.failure;
  // Checks that need the store, before anything changes.
  size_t put_bytes = 0;
  for (const auto& op : ops) {
    const auto* p = std::get_if<PutRequest>(&op);
    if (p == nullptr) continue;
    if (p->lease != 0 && leases_.count(p->lease) == 0) {
      return Status::NotFound("etcdserver: requested lease not found");
    }
    if ((p->ignore_value || p->ignore_lease) && kv_.count(p->key) == 0) {
      return Status::Invalid("etcdserver: key not found");
    }
    put_bytes += p->key.size() + p->value.size();
  }
  if (put_bytes > 0 && data_bytes_ + put_bytes > limits_.max_data_bytes) {
    return Status::OutOfSpace("etcdserver: mvcc: database space exceeded (metastore holds ",
                              data_bytes_, " bytes of keys and values, limit ",
                              limits_.max_data_bytes, ")");
  }
  WriteBatch batch;
  batch.revision = revision_ + 1;
  for (const auto& op : ops) {
    std::visit(
        [&](const auto& r) MS_REQUIRES(mu_) {
          using T = std::decay_t<decltype(r)>;
          if constexpr (std::is_same_v<T, RangeRequest>) {
            out.responses.emplace_back(RangeLocked(r));
          } else if constexpr (std::is_same_v<T, PutRequest>) {
            out.responses.emplace_back(PutLocked(r, &batch));
          } else {
            out.responses.emplace_back(DeleteLocked(r, &batch));
          }
        },
        op);
  }
  Commit(batch);
  out.revision = revision_;
  return out;
}

Status MetastoreState::Compact(int64_t revision) {
  MutexLock lock(&mu_);
  if (revision <= compact_revision_) {
    return Status::Invalid("etcdserver: mvcc: required revision has been compacted");
  }
  TQDS_RETURN_NOT_OK(CheckRevision(revision));
  while (!history_.empty() && history_.front().event.kv.mod_revision < revision) {
    history_bytes_ -= history_.front().bytes;
    history_.pop_front();
  }
  compact_revision_ = revision;
  return Status::OK();
}

void MetastoreState::SetDeadline(int64_t id, Lease* lease, Clock::time_point deadline) {
  deadlines_.erase({lease->deadline, id});
  lease->deadline = deadline;
  deadlines_.insert({deadline, id});
}

Result<LeaseGrant> MetastoreState::GrantLease(int64_t ttl_s, int64_t id, Clock::time_point now) {
  if (ttl_s > limits_.max_lease_ttl_s) return Status::Invalid("etcdserver: too large lease TTL");
  if (id < 0) return Status::Invalid("metastore: lease ID must be >= 0, got ", id);
  const int64_t ttl = std::max(ttl_s, limits_.min_lease_ttl_s);
  MutexLock lock(&mu_);
  if (leases_.size() >= limits_.max_leases) {
    return Status::OutOfSpace("metastore: ", leases_.size(),
                              " leases live, the limit (max_leases); revoke unused leases");
  }
  if (id == 0) {
    do {
      id = static_cast<int64_t>(SplitMix64(lease_seq_++) & 0x3fffffffffffffffULL);
    } while (id == 0 || leases_.count(id) != 0);
  } else if (leases_.count(id) != 0) {
    return Status::AlreadyExists("etcdserver: lease already exists");
  }
  Lease& lease = leases_[id];
  lease.ttl_s = ttl;
  lease.deadline = now + std::chrono::seconds(ttl);
  deadlines_.insert({lease.deadline, id});
  return LeaseGrant{id, ttl};
}

Result<int64_t> MetastoreState::KeepAlive(int64_t id, Clock::time_point now) {
  MutexLock lock(&mu_);
  auto it = leases_.find(id);
  if (it == leases_.end()) return Status::NotFound("etcdserver: requested lease not found");
  SetDeadline(id, &it->second, now + std::chrono::seconds(it->second.ttl_s));
  return it->second.ttl_s;
}

Result<MetastoreState::LeaseTtl> MetastoreState::LeaseTimeToLive(int64_t id, Clock::time_point now) {
  MutexLock lock(&mu_);
  auto it = leases_.find(id);
  if (it == leases_.end()) return Status::NotFound("etcdserver: requested lease not found");
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(it->second.deadline - now);
  return LeaseTtl{std::max<int64_t>(0, (left.count() + 999) / 1000), it->second.ttl_s};
}

void MetastoreState::RevokeLocked(std::map<int64_t, Lease>::iterator it) {
  WriteBatch batch;
  batch.revision = revision_ + 1;
  const std::set<std::string> keys = it->second.keys;  // EraseKey edits the set
  for (const auto& k : keys) {
    auto kv = kv_.find(k);
    if (kv != kv_.end()) EraseKey(kv, &batch);
  }
  deadlines_.erase({it->second.deadline, it->first});
  leases_.erase(it);
  Commit(batch);
}

Status MetastoreState::Revoke(int64_t id) {
  MutexLock lock(&mu_);
  auto it = leases_.find(id);
  if (it == leases_.end()) return Status::NotFound("etcdserver: requested lease not found");
  RevokeLocked(it);
  return Status::OK();
}

size_t MetastoreState::ExpireLeases(Clock::time_point now) {
  MutexLock lock(&mu_);
  size_t n = 0;
  while (!deadlines_.empty() && deadlines_.begin()->first <= now) {
    auto it = leases_.find(deadlines_.begin()->second);
    if (it == leases_.end()) {  // cannot happen; keep the index consistent anyway
      deadlines_.erase(deadlines_.begin());
      continue;
    }
    RevokeLocked(it);
    ++n;
  }
  return n;
}

WatchBatch MetastoreState::WaitEvents(const KeyRange& range, int64_t* next_revision,
                                      Clock::time_point deadline, size_t max_events) {
  MutexLock lock(&mu_);
  while (true) {
    WatchBatch out;
    if (shutdown_) {
      out.shutdown = true;
      return out;
    }
    if (*next_revision < compact_revision_) {
      out.compacted = true;
      out.compact_revision = compact_revision_;
      out.revision = revision_;
      return out;
    }
    auto it = std::lower_bound(
        history_.begin(), history_.end(), *next_revision,
        [](const HistoryEvent& h, int64_t rev) { return h.event.kv.mod_revision < rev; });
    int64_t last_rev = *next_revision - 1;
    for (; it != history_.end(); ++it) {
      const int64_t rev = it->event.kv.mod_revision;
      if (out.events.size() >= std::max<size_t>(max_events, 1) && rev != last_rev) break;
      last_rev = rev;
      if (range.Contains(it->event.kv.key)) out.events.push_back(it->event);
    }
    const int64_t scanned = it == history_.end() ? std::max(revision_, last_rev) : last_rev;
    *next_revision = std::max(*next_revision, scanned + 1);
    out.revision = std::min(revision_, *next_revision - 1);
    if (!out.events.empty() || Clock::now() >= deadline) return out;
    mu_.WaitUntil(changed_, deadline);
  }
}

void MetastoreState::Shutdown() {
  MutexLock lock(&mu_);
  shutdown_ = true;
  changed_.notify_all();
}

}  // namespace ds::cluster::metastore
