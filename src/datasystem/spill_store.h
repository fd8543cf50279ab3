// SpillStore: the disk tier. One file per spilled object, named only by the
// object's numeric id ("obj_<16 hex>.spill") inside the worker's own spill
// subdirectory, so no key can steer a write outside it. File format
// (little-endian), see docs/datasystem.md:
//   magic "DSSPILL1" (8) | size u64 | version u64 | key_len u32 | reserved u32
//   | key bytes | value bytes
// The subdirectory must be the worker's own (not a symbolic link, owned by
// its user; safe_dir.h); files are opened relative to a descriptor of it
// with O_NOFOLLOW. A write that finds the file system full (ENOSPC/EDQUOT)
// reports "disk full at <dir>", distinct from the configured limit, logs
// that at most once per 10 s, and no write is tried again for 5 s unless a
// spill file is removed meanwhile.
// Not thread-safe: the object store calls it under its lock.
#pragma once

#include <chrono>
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
  // The parent of `dir` (the configured --spill_directory) is created if
  // missing and must pass CheckSharedDir; `dir` must pass OpenPrivateDir.
  static Result<SpillStore> Open(const std::string& dir, uint64_t limit_bytes);
  SpillStore() = default;
  SpillStore(SpillStore&& other) noexcept;
  SpillStore& operator=(SpillStore&& other) noexcept;
  SpillStore(const SpillStore&) = delete;
  SpillStore& operator=(const SpillStore&) = delete;
  ~SpillStore();

  bool enabled() const { return !dir_.empty(); }
  bool CanHold(uint64_t size) const;
  // True while the file system was last found full (see above).
  bool disk_full() const;
  // One phrase for error messages: how much the tier holds of its limit, or
  // that its disk is full.
  std::string Describe() const;
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
  // A file system that has no room: refuse writes for a while, log rarely.
  void NoteDiskFull(const std::string& path, uint64_t size, int err);

  std::string dir_;
  int dir_fd_ = -1;  // owned
  uint64_t limit_ = 0;
  uint64_t used_ = 0;
  std::chrono::steady_clock::time_point full_since_{};  // disk full when != epoch
  std::chrono::steady_clock::time_point last_full_log_{};
  uint64_t full_failures_ = 0;  // since the last log line
};

}  // namespace ds
