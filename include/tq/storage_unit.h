// SimpleStorageUnit: the embedded backend's storage server. Holds payload
// bytes by key in memory, up to a capacity; runs as its own process
// (`tq storage-unit`) or inside another (the controller's embedded units).
// Serves on one thread; Start/Stop from the owning thread only.
#pragma once

#include <map>
#include <memory>
#include <string>

#include "tq/request_stats.h"
#include "tqds/status.h"

namespace tq {

struct StorageUnitOptions {
  // ZMQ endpoint to bind; port 0 picks a free one.
  std::string address = "tcp://127.0.0.1:0";
  // Bytes of payload the unit may hold; a put beyond it fails with OutOfSpace.
  uint64_t capacity_bytes = uint64_t{8} << 30;
  // Samples (global indexes of a partition, all their fields together) the
  // unit may hold, as upstream's storage_unit_size; a put that would add
  // more fails with OutOfSpace. 0 (the default): no limit but the bytes.
  uint64_t capacity_samples = 0;
  // Controller to register with (empty: none; clients must be told the unit).
  std::string controller_address;
  tqds::Status Validate() const;
};

// What a unit holds and has served (its UnitStats reply and its Prometheus
// endpoint report the same).
struct StorageUnitStats {
  uint64_t keys = 0;     // stored values, one per field of a sample
  uint64_t samples = 0;  // samples with at least one stored field
  uint64_t bytes = 0;
  uint64_t capacity_bytes = 0;
  uint64_t capacity_samples = 0;  // 0: no limit
  // PUT_DATA, GET_DATA, CLEAR_DATA (upstream's op_type names).
  std::map<std::string, RequestOpStats> ops;
};

class SimpleStorageUnit {
 public:
  static tqds::Result<std::unique_ptr<SimpleStorageUnit>> Start(const StorageUnitOptions& options);
  virtual ~SimpleStorageUnit() = default;
  virtual const std::string& address() const = 0;
  // Thread-safe.
  virtual StorageUnitStats stats() const = 0;
  virtual void Stop() = 0;
};

}  // namespace tq
