// The simple (embedded) backend's StorageManager: spreads samples over
// SimpleStorageUnits and talks to them with the key-group protocol of
// simple_codec.h.
#pragma once

#include <memory>

#include "tq/storage.h"

namespace tq::internal {

// Samples go to units in blocks of this many consecutive global indexes
// (block b on unit b % units): a dense field's per-sample views stay
// adjacent per unit, so they travel as a few large frames.
inline constexpr uint64_t kSimpleRouteBlock = 64;

// Config: {"storage_units": [endpoint...]} or, without it, the units the
// controller reports. A unit on this host that announces an ipc endpoint is
// reached over it.
Result<std::unique_ptr<StorageManager>> CreateSimpleStorageManager(const StorageContext& context);

}  // namespace tq::internal
