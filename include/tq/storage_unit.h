// SimpleStorageUnit: the embedded backend's storage server. Holds payload
// bytes by key in memory, up to a capacity; runs as its own process
// (`tq storage-unit`) or inside another (the controller's embedded units).
// Serves on one thread; Start/Stop from the owning thread only.
#pragma once

#include <memory>
#include <string>

#include "tqds/status.h"

namespace tq {

struct StorageUnitOptions {
  // ZMQ endpoint to bind; port 0 picks a free one.
  std::string address = "tcp://127.0.0.1:0";
  // Bytes of payload the unit may hold; a put beyond it fails with OutOfSpace.
  uint64_t capacity_bytes = uint64_t{8} << 30;
  // Controller to register with (empty: none; clients must be told the unit).
  std::string controller_address;
  tqds::Status Validate() const;
};

class SimpleStorageUnit {
 public:
  static tqds::Result<std::unique_ptr<SimpleStorageUnit>> Start(const StorageUnitOptions& options);
  virtual ~SimpleStorageUnit() = default;
  virtual const std::string& address() const = 0;
  virtual void Stop() = 0;
};

}  // namespace tq
