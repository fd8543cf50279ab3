// SpillStore: the disk tier. One file per spilled object, named only by the
// object's numeric id ("obj_<16 hex>.spill") inside the worker's own spill
// subdirectory, so no key can steer a write outside it. File format
// (little-endian), see docs/datasystem.md:
//   magic "DSSPILL1" (8) | size u64 | version u64 | key_len u32 | reserved u32
//   | key bytes | value bytes
// Not thread-safe: the object store calls it under its lock.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "tqds/status.h"

namespace ds {

using tqds::Result;
using tqds::Status;

class SpillStore {
 public:
  // `dir` empty disables spilling. Creates `dir` if missing and removes stale
  // spill files from an earlier (crashed) worker using the same directory.
  static Result<SpillStore> Open(const std::string& dir, uint64_t limit_bytes);
  SpillStore() = default;

  bool enabled() const { return !dir_.empty(); }
  bool CanHold(uint64_t size) const { return enabled() && used_ + size <= limit_; }
  Status Write(uint64_t id, std::string_view key, uint64_t version, const uint8_t* data,
               uint64_t size);
  // Reads the value of object `id` into `dst` (exactly `size` bytes); verifies
  // the header against key and size.
  Status Read(uint64_t id, std::string_view key, uint8_t* dst, uint64_t size) const;
  void Remove(uint64_t id, uint64_t size);
  // Removes every spill file (shutdown).
  void Clear();

  const std::string& dir() const { return dir_; }
  uint64_t used() const { return used_; }
  uint64_t limit() const { return limit_; }
  std::string PathOf(uint64_t id) const;

 private:
  std::string dir_;
  uint64_t limit_ = 0;
  uint64_t used_ = 0;
};

}  // namespace ds
