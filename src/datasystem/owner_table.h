// OwnerTable: the metadata a worker keeps for the keys it owns on the hash
// ring: where each key's bytes are (the writer's primary copy and readers'
// cached copies), its size and each copy's version. Never touches payload
// bytes. Socket-free; ClusterNode feeds it from peer messages.
//
// Thread-safe: every method takes `mu_`, a leaf lock (no callback and no
// other lock while it is held; liveness comes in as a snapshot).
#pragma once

#include <cstdint>
#include <mutex>
#include <span>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "datasystem/protocol.h"
#include "tqds/status.h"

namespace ds {

// One copy of a key's bytes.
struct Replica {
  std::string holder;        // worker "host:port"
  uint64_t incarnation = 0;  // the holder's run (Membership incarnation)
  std::string data;          // the holder's data endpoint "ip:port"
  uint64_t version = 0;      // version of the object in the holder's store
  bool operator==(const Replica&) const = default;
};

struct PublishEntry {
  std::string key;
  uint64_t size = 0;
  Replica replica;
};

// A copy that became stale (its key was overwritten elsewhere or is gone):
// the holder should drop it if it still holds that version (0: any).
struct StaleCopy {
  std::string key;
  std::string holder;
  uint64_t version = 0;
};

// One owner's answer to a publish: the keys it was sent and the copies it
// reported stale.
struct PublishAnswer {
  std::vector<std::string> keys;
  std::vector<StaleCopy> stale;
};

// The stale copies to drop after publishing `mode` to each key's owners,
// given the owners that answered. kCache: a copy only when every owner that
// answered for its key reported it (a key deleted while it was pulled is
// gone from all of them; an owner that has just joined the ring has no
// record until the handoffs reach it, and its word alone must not drop a
// good copy). Other modes: every reported copy.
std::vector<StaleCopy> CopiesToDrop(proto::PublishMode mode,
                                    const std::vector<PublishAnswer>& answers);

struct LookupResult {
  tqds::StatusCode code = tqds::StatusCode::kNotFound;  // kOk, kNotFound, kUnavailable (lost)
  uint64_t size = 0;
  std::vector<Replica> live;  // kOk: copies on live workers, the primary first
  std::string lost;           // kUnavailable: the holders that had it, comma-separated
};

struct LocationRecord {
  uint64_t size = 0;
  std::vector<Replica> replicas;  // the primary first (when known)
  bool from_handoff = false;      // built from a former owner's handoff
};

// Live workers: address -> incarnation.
using LiveSet = std::unordered_map<std::string, uint64_t>;

class OwnerTable {
 public:
  // Applies published locations (see proto::PublishMode). Returns the copies
  // that became stale: for a primary, every older copy on another worker;
  // for a cache of a key with no record (deleted meanwhile), the cache.
  // Writes of one key on two workers are ordered by version (a hybrid
  // timestamp; ties by holder name): a primary older than the record's is
  // refused and itself returned stale, so every owner keeps the same
  // winner whatever order the announcements arrive in.
  std::vector<StaleCopy> Publish(proto::PublishMode mode, std::vector<PublishEntry> entries);
  // Where each key is, given the live workers. A key whose every copy is on
  // workers that left (or restarted) is kUnavailable with `lost` set.
  std::vector<LookupResult> Lookup(const std::vector<std::string>& keys, const LiveSet& live) const;
  // The same for keys[which[0]], keys[which[1]], ... (this worker's share
  // of a batch, looked up without copying the keys).
  std::vector<LookupResult> Lookup(const std::vector<std::string>& keys, std::span<const size_t> which,
                                   const LiveSet& live) const;
  // Forgets keys; returns each key's copies (empty when it had no record).
  std::vector<std::vector<Replica>> Remove(const std::vector<std::string>& keys);
  // The same for keys[which[0]], keys[which[1]], ...
  std::vector<std::vector<Replica>> Remove(const std::vector<std::string>& keys, std::span<const size_t> which);
  // Every record (for handing records over after a membership change).
  std::vector<std::pair<std::string, LocationRecord>> Snapshot() const;
  void Erase(const std::vector<std::string>& keys);
  size_t size() const;

 private:
  mutable std::mutex mu_;
  std::unordered_map<std::string, LocationRecord> records_;  // guarded by mu_
};

}  // namespace ds
