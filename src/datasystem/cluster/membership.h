// Membership: a datasystem worker's view of the cluster through etcd.
//
// A member registers /datasystem/workers/<host:port> -> {"address",
// "started_at", "incarnation"} under a lease it keeps alive every TTL/3 on
// its own thread, and watches the prefix to hold the live set. A worker that
// stops revokes its lease (others see it leave at once); one that dies stops
// refreshing and leaves when the lease expires (within the TTL, plus etcd's
// 0.5 s expiry sweep). See docs/cluster.md.
//
// While etcd is unreachable the last known view is kept, keep-alives are
// retried every retry_interval, and when etcd answers again the member keeps
// its lease if etcd still has it or registers again under a new one. A
// restarted worker (same address, new incarnation) replaces its old entry:
// observers see the old incarnation leave and the new one join.
//
// Thread safety: all methods may be called from any thread. Callbacks run
// one at a time, in order, on the watch thread (the initial view's on
// Start()'s thread, before it returns); no Membership lock is held while
// they run, so they may call View(), but they must not call Stop() or
// destroy the Membership. View() shows a change just before that change's
// callbacks run.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "datasystem/cluster/etcd_client.h"
#include "tqds/status.h"

namespace ds::cluster {

struct MembershipOptions {
  // etcd address and call timeouts. etcd.address is required.
  EtcdOptions etcd;
  // This worker's "host:port". Empty: observe only (no registration).
  std::string self_address;
  // Key prefix of the worker registry. Default "/datasystem/workers/".
  std::string key_prefix = "/datasystem/workers/";
  // Lease TTL: how long a dead worker stays in the view. Default 3 s; etcd
  // raises TTLs below its minimum (2 s with default election settings).
  std::chrono::seconds lease_ttl{3};
  // Refresh period of the lease. 0: lease_ttl / 3.
  std::chrono::milliseconds keepalive_interval{0};
  // Pause between attempts while etcd does not answer. Default 250 ms.
  std::chrono::milliseconds retry_interval{250};
  // Identifies this run of the worker; 0: wall-clock nanoseconds at Start
  // (grows across restarts of the same address).
  uint64_t incarnation = 0;

  tqds::Status Validate() const;
  std::chrono::milliseconds effective_keepalive_interval() const;
};

struct Member {
  std::string address;        // "host:port"
  int64_t started_at_ms = 0;  // wall clock, ms since the epoch
  uint64_t incarnation = 0;
  bool operator==(const Member&) const = default;
};

// The registry's JSON value of a member, and back (Invalid on bad input).
std::string EncodeMember(const Member& m);
tqds::Result<Member> DecodeMember(const std::string& json_text);

struct MembershipView {
  // Bumped by every change of the member set (join, leave, replacement);
  // never goes back, also across etcd outages and resyncs.
  uint64_t version = 0;
  std::vector<Member> members;  // sorted by address
  std::vector<std::string> addresses() const;
  bool Contains(const std::string& address) const;
};

struct MembershipCallbacks {
  std::function<void(const Member&)> on_join;
  std::function<void(const Member&)> on_leave;
  // After each batch of joins/leaves, the new view.
  std::function<void(const MembershipView&)> on_change;
};

class Membership {
 public:
  // Registers (unless observe-only), reads the current members (callbacks
  // fire for each) and starts the keep-alive and watch threads. Fails, with
  // nothing left running, when etcd does not answer now.
  static tqds::Result<std::unique_ptr<Membership>> Start(MembershipOptions options,
                                                         MembershipCallbacks callbacks = {});
  // Stop()s.
  ~Membership();
  Membership(const Membership&) = delete;
  Membership& operator=(const Membership&) = delete;

  // Leaves: stops keep-alives, revokes the lease (best effort, bounded by
  // the request timeout) and stops watching. Idempotent. The view stays
  // frozen at its last state.
  void Stop();

  MembershipView View() const;
  uint64_t version() const;
  // Waits until `pred(View())` holds or `timeout` passes; returns pred's last value.
  bool WaitFor(const std::function<bool(const MembershipView&)>& pred,
               std::chrono::milliseconds timeout) const;

  const Member& self() const { return self_; }
  // The lease this member holds now (0: not registered, e.g. etcd away).
  int64_t lease() const;
  // Times this member (re)registered; 1 after Start.
  int64_t registrations() const;

 private:
  Membership(MembershipOptions options, MembershipCallbacks callbacks,
             std::unique_ptr<EtcdClient> client, std::unique_ptr<EtcdClient> keepalive_client);
  struct Change {
    bool join;
    Member member;
  };
  std::string SelfKey() const;
  tqds::Status Register();
  void KeepAliveLoop();
  // Apply* run on one thread at a time (Start, then the watch thread).
  void ApplySnapshot(const RangeResult& snapshot);
  void ApplyEvents(const std::vector<WatchEvent>& events);
  // Under mu_: updates members_ for one put/delete and records changes.
  void PutLocked(const KeyValue& kv, std::vector<Change>* changes);
  void DeleteLocked(const std::string& address, int64_t revision, std::vector<Change>* changes);
  // Under mu_: bumps the version when `changes` is not empty; the new view.
  MembershipView CommitLocked(const std::vector<Change>& changes);
  MembershipView ViewLocked() const;
  // Without mu_: wakes waiters and runs the callbacks.
  void Publish(const std::vector<Change>& changes, const MembershipView& view);
  std::string AddressOfKey(const std::string& key) const;

  // Lock order: mu_ is a leaf; no etcd call and no callback while held.

  // Constant after construction.
  const MembershipOptions options_;
  const MembershipCallbacks callbacks_;
  const std::unique_ptr<EtcdClient> client_;            // registration, list, watch, revoke
  const std::unique_ptr<EtcdClient> keepalive_client_;  // timeout <= keep-alive period
  Member self_;

  mutable std::mutex mu_;
  mutable std::condition_variable cv_;     // view changes, stop, re-register requests
  std::map<std::string, Member> members_;  // guarded by mu_
  uint64_t version_ = 0;                   // guarded by mu_
  int64_t lease_ = 0;                      // guarded by mu_
  int64_t registrations_ = 0;              // guarded by mu_
  bool stopping_ = false;                  // guarded by mu_
  bool reregister_ = false;                // guarded by mu_: our key vanished
  int64_t self_put_revision_ = 0;          // guarded by mu_: revision of our last put

  std::unique_ptr<EtcdWatch> watch_;
  std::thread keepalive_thread_;
  std::once_flag stop_once_;
};

}  // namespace ds::cluster
