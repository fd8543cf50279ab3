// The simple (embedded) backend's StorageManager: spreads samples over
// SimpleStorageUnits and talks to them with the key-group protocol of
// simple_codec.h.
#pragma once

#include <cstdint>
#include <memory>
#include <string_view>

#include "tq/storage.h"

namespace tq::internal {

// Samples go to units in blocks of this many consecutive global indexes
// (block b on the unit with the highest RouteScore): a dense field's
// per-sample views stay adjacent per unit, so they travel as a few large
// frames.
inline constexpr uint64_t kSimpleRouteBlock = 64;

// FNV-1a of a unit's registered endpoint (fixed: every client and version
// must route alike).
inline uint64_t HashName(std::string_view name) {
  uint64_t h = 14695981039346656037ull;
  for (unsigned char c : name) h = (h ^ c) * 1099511628211ull;
  return h;
}

// Rendezvous score of block `block` on the unit whose name hashes to
// `unit_hash` (splitmix64 finaliser of their combination).
inline uint64_t RouteScore(uint64_t unit_hash, uint64_t block) {
  uint64_t x = unit_hash ^ (block * 0x9e3779b97f4a7c15ull);
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// Config: {"storage_units": [endpoint...]} (each must answer) or, without
// it, the units the controller reports (one that does not answer is skipped
// with a warning naming it; only none answering fails). A unit on this host
// that announces an ipc endpoint is reached over it. With the deployment's
// keys, a unit reached over tcp that announces a stream channel is reached
// there (authenticated, payloads not encrypted) unless the config says
// {"encrypt_payloads": true}, which keeps every byte on CURVE.
Result<std::unique_ptr<StorageManager>> CreateSimpleStorageManager(const StorageContext& context);

}  // namespace tq::internal
