// HashRing: consistent hashing with virtual nodes over the live worker
// addresses; Owner(key) names the worker that owns a key's metadata.
//
// Deterministic across processes, builds and machines: the hash is a fixed
// algorithm (Hash64 below, FNV-1a 64 then the MurmurHash3 fmix64 finalizer),
// never std::hash, and the ring depends only on the set of node names (not
// their order). Stable: adding or removing one of N nodes moves only the
// keys that the node gains or loses (about 1/N of them).
//
// Immutable after construction, so safe to share between threads; on a
// membership change build a new ring and swap a shared_ptr<const HashRing>.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "tqds/status.h"

namespace ds::cluster {

class HashRing {
 public:
  // Points per node. More: smoother balance (128 keeps each node within
  // about +-15% of its fair share), larger ring (nodes x 128 x 16 bytes).
  static constexpr int kDefaultVirtualNodes = 128;

  // `nodes`: worker addresses ("host:port"); duplicates are ignored.
  explicit HashRing(std::vector<std::string> nodes, int virtual_nodes = kDefaultVirtualNodes);

  // The node owning `key`. Unavailable when the ring is empty.
  tqds::Result<std::string> Owner(std::string_view key) const;
  // Up to `n` distinct nodes in ring order from the key's owner (the owner
  // first): where replicas or a handed-over copy of the metadata go.
  std::vector<std::string> Owners(std::string_view key, size_t n) const;
  // The same owners as indexes into nodes(), without allocating: writes up
  // to min(n, kMaxOwners, size()) of them to `out`, returns how many.
  static constexpr size_t kMaxOwners = 8;
  size_t OwnerIndexes(std::string_view key, size_t n, uint32_t (&out)[kMaxOwners]) const;

  // The nodes, sorted.
  const std::vector<std::string>& nodes() const { return nodes_; }
  bool empty() const { return nodes_.empty(); }
  size_t size() const { return nodes_.size(); }
  int virtual_nodes() const { return virtual_nodes_; }

  // The ring's hash: FNV-1a 64 over the bytes, then fmix64. Fixed forever:
  // changing it moves every key's owner in a mixed-version cluster.
  static uint64_t Hash64(std::string_view bytes);

 private:
  struct Point {
    uint64_t hash;
    uint32_t node;  // index into nodes_
  };
  // Index into points_ of the first point at or after hash(key), wrapping.
  size_t FirstPoint(std::string_view key) const;
  // Writes the first n (<= size()) distinct nodes in ring order from the
  // key's owner to out[0..n); returns how many it found.
  size_t WalkOwners(std::string_view key, size_t n, uint32_t* out) const;

  std::vector<std::string> nodes_;  // sorted, unique
  int virtual_nodes_;
  std::vector<Point> points_;  // sorted by (hash, node name)
};

}  // namespace ds::cluster
