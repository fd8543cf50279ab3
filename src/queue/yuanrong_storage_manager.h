// The datasystem backend, under the seed's names: YuanrongStorageManager
// (registered storage manager) over YuanrongStorageClient (an adapter around
// ds::KVClient). Payloads are written in place into the local worker's
// shared memory (create, fill, seal) and read back as zero-copy views.
#pragma once

#include <memory>

#include "tq/storage.h"

namespace tq::internal {

// Factory registered as "YuanrongStorageManager". Config keys (as in the
// seed): client_name ("YuanrongStorageClient"), host, port.
Result<std::unique_ptr<StorageManager>> CreateYuanrongStorageManager(const StorageContext& context);

}  // namespace tq::internal
