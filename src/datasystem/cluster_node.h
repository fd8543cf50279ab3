// ClusterNode: one worker's part in a cluster of workers joined through etcd.
//
// - Membership (cluster/membership.h) registers this worker under a lease and
//   keeps the live set; the live addresses form a HashRing.
// - The owner of a key's metadata is the key's first `metadata_replicas`
//   workers on the ring (the first answers lookups, the next holds a copy so
//   a dead owner loses nothing). Owners keep an OwnerTable; bytes stay on
//   the worker that wrote them.
// - After every view change a background thread re-announces this worker's
//   own (primary) objects to owners that are new for them, and hands its
//   records over to their new owners.
// - Fetch (a local miss) asks the owner where a key is and pulls the bytes
//   from the holder over the data plane (data_plane.h) into local shared
//   memory, kept as an evictable cached copy registered with the owner, so
//   a delete or an overwrite removes it.
// - Control messages (ids 111-114) travel over the workers' ZMQ RPC ports.
//
// Threads: Membership's watch thread (view callbacks), the announcer thread,
// the data server's threads; Published/Fetch/DeleteRemote run on the
// caller's thread (a local client's connection thread, or the TCP server
// thread with wait = false); HandlePeer on the TCP server thread.
// Lock order: mu_ and OwnerTable's lock are never held together, and no
// lock is held across an RPC or a socket call.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/wire/rpc.h"
#include "datasystem/cluster/hash_ring.h"
#include "datasystem/cluster/membership.h"
#include "datasystem/cluster_hooks.h"
#include "datasystem/data_plane.h"
#include "datasystem/object_store.h"
#include "datasystem/owner_table.h"

namespace ds {

struct ClusterOptions {
  // This worker ("host:port", its ZMQ RPC address) and its IPv4 address.
  std::string self;
  std::string self_ip;
  // etcd "host:port". Required.
  std::string etcd_address;
  // How long a dead worker stays in the ring (its etcd lease TTL). Default 3 s.
  std::chrono::seconds node_timeout{3};
  // Budget of one worker-to-worker control call (a dead owner not yet out of
  // the ring costs this much before the next owner is asked). Default 1 s.
  std::chrono::milliseconds rpc_timeout{1000};
  // Workers holding each key's metadata (owner + successors). Default 2.
  size_t metadata_replicas = 2;
  // TCP port of the data plane on self_ip; 0 (default): an ephemeral port.
  int data_port = 0;
  PullOptions pull;
  // A fetch of more keys than this keeps no cached copies (see Fetch).
  size_t cache_max_keys = 256;
};

class ClusterNode final : public ClusterHooks {
 public:
  // Starts the data server, joins the cluster (etcd must answer) and the
  // announcer thread.
  static tqds::Result<std::unique_ptr<ClusterNode>> Start(ClusterOptions options,
                                                          ObjectStore& store);
  ~ClusterNode() override;
  // Leaves the cluster (revokes the lease) and stops every thread. Idempotent.
  void Stop();

  void Published(const std::vector<std::string>& keys, bool wait) override;
  tqds::Status Fetch(Session& session, const std::vector<std::string>& keys,
                     const std::vector<ValueRange>& ranges, std::vector<Located>* pulled) override;
  tqds::Result<std::vector<bool>> ExistRemote(const std::vector<std::string>& keys) override;
  std::vector<bool> ExpireRemote(const std::vector<std::string>& keys, uint64_t ttl_ms) override;
  std::vector<bool> DeleteRemote(const std::vector<std::string>& keys, bool wait) override;
  tqds::Result<tqds::wire::Message> HandlePeer(const tqds::wire::Message& request) override;
  ClusterStats Stats() const override;

  const std::string& data_endpoint() const { return data_->endpoint(); }

 private:
  ClusterNode(ClusterOptions options, ObjectStore& store);
  using RingPtr = std::shared_ptr<const cluster::HashRing>;
  using Future = std::future<tqds::Result<tqds::wire::Message>>;

  // Asks each key's owner where it is (the next owner when one does not
  // answer, or has no record yet). kNotFound for a key no owner knows;
  // Unavailable when no owner of some key answers.
  tqds::Result<std::vector<LookupResult>> Locate(const std::vector<std::string>& keys,
                                                 const cluster::HashRing& ring);
  // A key to pull: its bytes [offset, offset + size), from one of
  // `candidates` (tried in order); `index`: its place in Fetch's keys.
  struct Wanted {
    std::string key;
    size_t index = 0;
    uint64_t offset = 0;
    uint64_t size = 0;
    std::vector<Replica> candidates;
  };
  // Pulls `wanted` and keeps them: as cached copies registered with their
  // owners, or (cache false) as blocks private to `reader`, filling
  // (*pulled)[w.index]. Returns the first failure other than NotFound.
  tqds::Status PullAndKeep(Session& reader, std::vector<Wanted>& wanted, bool cache,
                           const cluster::HashRing& ring, std::vector<Located>* pulled);
  void OnViewChange(const cluster::MembershipView& view);
  void AnnounceLoop();
  // Re-announces primaries and hands records over after a view change.
  void Rebalance(const LiveSet& old_live, const RingPtr& old_ring);
  std::shared_ptr<tqds::wire::RpcClient> Peer(const std::string& address);
  std::pair<LiveSet, RingPtr> Snapshot() const;
  Replica SelfReplica(uint64_t version) const;

  // Sends `entries` to owners (each entry to its own list of owners);
  // drops the stale copies the owners report. `wait` as for Published.
  void SendPublish(proto::PublishMode mode, std::map<std::string, std::vector<PublishEntry>> by_owner,
                   bool wait);
  void DropStale(const std::vector<StaleCopy>& stale, bool wait);
  // Sends one request, or runs it here when `owner` is this worker.
  Future Send(const std::string& to, tqds::wire::Message request);
  void Later(std::function<void()> task);

  // Constant after construction.
  const ClusterOptions options_;
  ObjectStore& store_;
  uint64_t incarnation_ = 0;
  std::unique_ptr<DataServer> data_;
  std::unique_ptr<PullClient> puller_;
  OwnerTable owners_;  // its own (leaf) lock

  mutable std::mutex mu_;
  std::condition_variable cv_;  // announcer: view changed, task queued, stop
  // Guarded by mu_:
  LiveSet live_;
  RingPtr ring_;
  uint64_t view_version_ = 0;
  std::map<std::string, std::shared_ptr<tqds::wire::RpcClient>> peers_;
  std::deque<std::function<void()>> tasks_;
  bool stopping_ = false;

  // Pull counters (Stats).
  std::atomic<uint64_t> pulls_{0}, pulled_bytes_{0}, pull_failures_{0};

  std::unique_ptr<cluster::Membership> membership_;
  std::thread announcer_;
};

}  // namespace ds
