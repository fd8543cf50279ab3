// HashRing: a sorted vector of virtual-node points, binary-searched.
#include "datasystem/cluster/hash_ring.h"

#include <algorithm>

namespace ds::cluster {

uint64_t HashRing::Hash64(std::string_view bytes) {
  uint64_t h = 0xcbf29ce484222325ULL;  // FNV-1a 64 offset basis
  for (unsigned char c : bytes) {
    h ^= c;
    h *= 0x100000001b3ULL;  // FNV 64 prime
  }
  // MurmurHash3 fmix64: spreads FNV's weak high bits over the whole word.
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccdULL;
  h ^= h >> 33;
  h *= 0xc4ceb9fe1a85ec53ULL;
  h ^= h >> 33;
  return h;
}

HashRing::HashRing(std::vector<std::string> nodes, int virtual_nodes)
    : nodes_(std::move(nodes)), virtual_nodes_(std::max(1, virtual_nodes)) {
  std::sort(nodes_.begin(), nodes_.end());
  nodes_.erase(std::unique(nodes_.begin(), nodes_.end()), nodes_.end());
  points_.reserve(nodes_.size() * static_cast<size_t>(virtual_nodes_));
  for (uint32_t n = 0; n < nodes_.size(); ++n) {
    for (int v = 0; v < virtual_nodes_; ++v) {
      points_.push_back({Hash64(nodes_[n] + "#" + std::to_string(v)), n});
    }
  }
  // Ties (astronomically rare) break by node name, which is order-free too.
  std::sort(points_.begin(), points_.end(), [](const Point& a, const Point& b) {
    return a.hash != b.hash ? a.hash < b.hash : a.node < b.node;
  });
}

size_t HashRing::FirstPoint(std::string_view key) const {
  uint64_t h = Hash64(key);
  auto it = std::lower_bound(points_.begin(), points_.end(), h,
                             [](const Point& p, uint64_t v) { return p.hash < v; });
  return it == points_.end() ? 0 : static_cast<size_t>(it - points_.begin());
}

tqds::Result<std::string> HashRing::Owner(std::string_view key) const {
  if (points_.empty()) {
    return tqds::Status::Unavailable("hash ring is empty: no live datasystem workers");
  }
  return nodes_[points_[FirstPoint(key)].node];
}

std::vector<std::string> HashRing::Owners(std::string_view key, size_t n) const {
  std::vector<uint32_t> idx(std::min(n, nodes_.size()));
  idx.resize(WalkOwners(key, idx.size(), idx.data()));
  std::vector<std::string> out;
  out.reserve(idx.size());
  for (uint32_t i : idx) out.push_back(nodes_[i]);
  return out;
}

size_t HashRing::OwnerIndexes(std::string_view key, size_t n, uint32_t (&out)[kMaxOwners]) const {
  return WalkOwners(key, std::min({n, kMaxOwners, nodes_.size()}), out);
}

size_t HashRing::WalkOwners(std::string_view key, size_t n, uint32_t* out) const {
  if (n == 0) return 0;
  size_t found = 0;
  const size_t first = FirstPoint(key);
  for (size_t step = 0; step < points_.size() && found < n; ++step) {
    const uint32_t node = points_[(first + step) % points_.size()].node;
    if (std::find(out, out + found, node) == out + found) out[found++] = node;
  }
  return found;
}

}  // namespace ds::cluster
