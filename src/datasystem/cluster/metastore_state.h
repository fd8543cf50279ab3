// MetastoreState: the in-memory store behind the Metastore service, with the
// semantics of etcd v3's KV, lease and watch APIs for the subset our
// EtcdClient uses (see docs/metastore.md):
//   - keys sorted bytewise; one store revision, bumped once per write
//     request (a transaction's writes share one revision); deletes of absent
//     keys do not bump it; a fresh store is at revision 1, like etcd;
//   - leases with a TTL; a lease that is not kept alive expires and deletes
//     its keys in one revision (delete events, like a revoke);
//   - a bounded history of events for watches from a past revision; history
//     dropped by Compact() or by the bounds makes older starts "compacted".
// No sockets and no JSON: the HTTP gateway (metastore.cc) maps requests
// onto these calls, and tests drive it directly with an injected clock.
//
// Thread safety: every method may be called from any thread. One mutex
// guards everything (lock order: it is a leaf; no callback, no I/O and no
// other lock while it is held). WaitEvents blocks on a condition variable
// that every write and Shutdown() signal.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <variant>
#include <vector>

#include "datasystem/cluster/etcd_types.h"
#include "datasystem/cluster/metastore_mutex.h"
#include "tqds/status.h"

namespace ds::cluster::metastore {

using Clock = std::chrono::steady_clock;

// etcd's key-range convention.
struct KeyRange {
  std::string key;
  // "": just `key`. "\0": every key >= key. Otherwise [key, range_end).
  std::string range_end;
  bool Contains(const std::string& k) const;
};

struct RangeRequest {
  KeyRange range;
  int64_t limit = 0;  // 0: no limit
  bool keys_only = false;
  bool count_only = false;
  // 0 or the current revision: served. Older reads are not (no MVCC):
  // Invalid, "compacted" below the history, else "unsupported".
  int64_t revision = 0;
};
struct RangeResponse {
  std::vector<KeyValue> kvs;
  int64_t count = 0;  // keys in the range (also beyond `limit`)
  bool more = false;  // `limit` cut the answer
  int64_t revision = 0;  // the store revision the read saw (Range() only)
};

struct PutRequest {
  std::string key;
  std::string value;
  int64_t lease = 0;
  bool prev_kv = false;
  bool ignore_value = false;  // keep the current value (the key must exist)
  bool ignore_lease = false;  // keep the current lease (the key must exist)
};
struct PutResponse {
  std::optional<KeyValue> prev_kv;
};

struct DeleteRequest {
  KeyRange range;
  bool prev_kv = false;
};
struct DeleteResponse {
  int64_t deleted = 0;
  std::vector<KeyValue> prev_kvs;
};

// A transaction compare; over a range, every key in it must satisfy it.
struct CompareRequest {
  KeyRange range;
  Compare::Target target = Compare::Target::kVersion;
  Compare::Op op = Compare::Op::kEqual;
  int64_t number = 0;  // every target but kValue
  std::string value;   // kValue
};

using OpRequest = std::variant<RangeRequest, PutRequest, DeleteRequest>;
using OpResponse = std::variant<RangeResponse, PutResponse, DeleteResponse>;

struct TxnRequest {
  std::vector<CompareRequest> compares;
  std::vector<OpRequest> success;
  std::vector<OpRequest> failure;
};
struct TxnResponse {
  bool succeeded = false;
  int64_t revision = 0;  // store revision after the request
  std::vector<OpResponse> responses;
};

// What one wait of a watch returns.
struct WatchBatch {
  std::vector<WatchEvent> events;  // whole revisions only, in order
  int64_t revision = 0;            // everything up to here was scanned
  bool compacted = false;          // the start is older than the history
  int64_t compact_revision = 0;    // with `compacted`: the oldest kept revision
  bool shutdown = false;
};

struct StateLimits {
  // Keys plus values of live data; a write beyond it fails with OutOfSpace
  // (etcd's "database space exceeded"). Default 256 MiB.
  size_t max_data_bytes = size_t{256} << 20;
  // History kept for watches from a past revision; the oldest revisions are
  // dropped beyond either bound (a watcher that far behind resyncs).
  // Defaults 100,000 events / 64 MiB.
  size_t max_history_events = 100000;
  size_t max_history_bytes = size_t{64} << 20;
  // Live leases; grants beyond fail with OutOfSpace. Default 100,000.
  size_t max_leases = 100000;
  // TTLs below are raised to it (etcd: 2 s with default election settings);
  // above the max they are refused. Defaults 2 s / 1 year.
  int64_t min_lease_ttl_s = 2;
  int64_t max_lease_ttl_s = 365LL * 24 * 3600;

  tqds::Status Validate() const;
};

class MetastoreState {
 public:
  // `lease_seed` seeds the lease ids (random per store, so a restarted
  // metastore does not hand out ids a stale client still holds).
  MetastoreState(StateLimits limits, uint64_t lease_seed);

  int64_t revision() const MS_EXCLUDES(mu_);
  int64_t compact_revision() const MS_EXCLUDES(mu_);
  size_t data_bytes() const MS_EXCLUDES(mu_);

  // Errors: Invalid for a malformed request (empty key, ...); a revision
  // older than the history or in the future is Invalid with etcd's message
  // ("etcdserver: mvcc: required revision ..."); NotFound for an unknown
  // lease; OutOfSpace past the limits.
  tqds::Result<RangeResponse> Range(const RangeRequest& req) MS_EXCLUDES(mu_);
  tqds::Result<TxnResponse> Txn(const TxnRequest& req) MS_EXCLUDES(mu_);
  tqds::Status Compact(int64_t revision) MS_EXCLUDES(mu_);

  // `id` 0: choose one. The TTL granted (raised to the minimum).
  tqds::Result<LeaseGrant> GrantLease(int64_t ttl_s, int64_t id, Clock::time_point now)
      MS_EXCLUDES(mu_);
  // Renews the lease for its TTL; the TTL, or NotFound.
  tqds::Result<int64_t> KeepAlive(int64_t id, Clock::time_point now) MS_EXCLUDES(mu_);
  // Deletes the lease and its keys. NotFound when absent.
  tqds::Status Revoke(int64_t id) MS_EXCLUDES(mu_);
  // Revokes every lease whose deadline is not after `now`; returns how many.
  size_t ExpireLeases(Clock::time_point now) MS_EXCLUDES(mu_);
  // Remaining TTL in seconds (rounded up) and the granted TTL, or NotFound.
  struct LeaseTtl {
    int64_t ttl_s = 0;
    int64_t granted_ttl_s = 0;
  };
  tqds::Result<LeaseTtl> LeaseTimeToLive(int64_t id, Clock::time_point now) MS_EXCLUDES(mu_);

  // Watch support. Collects the events of `range` at revisions >=
  // *next_revision (whole revisions, at least one, stopping once
  // `max_events` is reached), waiting until there are some, `deadline`
  // passes (empty batch: a progress point) or Shutdown(). Advances
  // *next_revision past what it scanned.
  WatchBatch WaitEvents(const KeyRange& range, int64_t* next_revision, Clock::time_point deadline,
                        size_t max_events) MS_EXCLUDES(mu_);
  // Wakes every WaitEvents for good.
  void Shutdown() MS_EXCLUDES(mu_);

 private:
  struct Lease {
    int64_t ttl_s = 0;
    Clock::time_point deadline;
    std::set<std::string> keys;
  };
  struct HistoryEvent {
    WatchEvent event;
    size_t bytes = 0;
  };
  // Scratch state of one write request.
  struct WriteBatch {
    int64_t revision = 0;  // the revision the writes get
    bool wrote = false;
  };

  tqds::Status CheckRevision(int64_t revision) const MS_REQUIRES(mu_);
  tqds::Status CheckRange(const RangeRequest& req) const MS_REQUIRES(mu_);
  tqds::Status ValidateOps(const std::vector<OpRequest>& ops) const MS_REQUIRES(mu_);
  bool CompareHolds(const CompareRequest& c) const MS_REQUIRES(mu_);
  RangeResponse RangeLocked(const RangeRequest& req) const MS_REQUIRES(mu_);
  PutResponse PutLocked(const PutRequest& req, WriteBatch* batch) MS_REQUIRES(mu_);
  DeleteResponse DeleteLocked(const DeleteRequest& req, WriteBatch* batch) MS_REQUIRES(mu_);
  void EraseKey(std::map<std::string, KeyValue>::iterator it, WriteBatch* batch)
      MS_REQUIRES(mu_);
  // Closes a write request: bumps the revision if it wrote, trims history.
  void Commit(const WriteBatch& batch) MS_REQUIRES(mu_);
  void Record(EventType type, const KeyValue& kv) MS_REQUIRES(mu_);
  void TrimHistory() MS_REQUIRES(mu_);
  void DropOldestRevision() MS_REQUIRES(mu_);
  void RevokeLocked(std::map<int64_t, Lease>::iterator it) MS_REQUIRES(mu_);
  void SetDeadline(int64_t id, Lease* lease, Clock::time_point deadline) MS_REQUIRES(mu_);
  // [first, last) iterators of `range` in kv_.
  std::pair<std::map<std::string, KeyValue>::const_iterator,
            std::map<std::string, KeyValue>::const_iterator>
  Bounds(const KeyRange& range) const MS_REQUIRES(mu_);

  const StateLimits limits_;

  mutable Mutex mu_;
  std::condition_variable changed_;  // a write happened, or Shutdown()
  int64_t revision_ MS_GUARDED_BY(mu_) = 1;
  // History is complete from this revision on (older starts are compacted).
  int64_t compact_revision_ MS_GUARDED_BY(mu_) = 0;
  std::map<std::string, KeyValue> kv_ MS_GUARDED_BY(mu_);
  size_t data_bytes_ MS_GUARDED_BY(mu_) = 0;
  std::deque<HistoryEvent> history_ MS_GUARDED_BY(mu_);
  size_t history_bytes_ MS_GUARDED_BY(mu_) = 0;
  std::map<int64_t, Lease> leases_ MS_GUARDED_BY(mu_);
  std::set<std::pair<Clock::time_point, int64_t>> deadlines_ MS_GUARDED_BY(mu_);
  uint64_t lease_seq_ MS_GUARDED_BY(mu_);
  bool shutdown_ MS_GUARDED_BY(mu_) = false;
};

}  // namespace ds::cluster::metastore
