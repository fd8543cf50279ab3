// MappingCache: keeps the large anonymous mappings behind freed
// MutableBuffers for the next allocation of about the same size.
//
// A pipeline repeats the same shapes every step (a get_data that stacks a
// field into one dense tensor allocates the same 32 MiB each time). Fresh
// anonymous memory costs a page fault per page on first touch, which on
// some virtual machines is slower than copying the bytes themselves;
// memory that was already touched costs nothing. The cache holds up to
// `limit_bytes` of freed mappings and hands one back when a request fits
// it (same length, or up to 1/8 larger); the oldest go first when it is
// full. Reused memory holds the bytes of its previous use (never another
// process's): callers of MutableBuffer::Allocate write before they read.
//
// Thread-safe: one mutex, held only for the list operations (never across
// mmap or munmap).
#pragma once

#include <cstddef>
#include <cstdint>
#include <mutex>
#include <vector>

#include "tqds/buffer.h"

namespace tqds::internal {

class MappingCache {
 public:
  explicit MappingCache(size_t limit_bytes) : limit_(limit_bytes) {}
  ~MappingCache();  // unmaps what it holds
  MappingCache(const MappingCache&) = delete;
  MappingCache& operator=(const MappingCache&) = delete;

  // The process-wide cache MutableBuffer uses; its limit is
  // $TQDS_BUFFER_CACHE_MB (default 4096, or 1/8 of the machine's memory
  // where that is less; 0 disables). Never destroyed.
  static MappingCache& Global();

  // A cached mapping of at least `length` bytes (at most length + length/8),
  // with its real length in *mapped; nullptr when none fits.
  uint8_t* Take(size_t length, size_t* mapped);
  // Keeps the mapping for reuse, evicting the oldest if needed; unmaps it
  // instead when it alone exceeds the limit.
  void Give(uint8_t* p, size_t mapped);
  // Unmaps everything held.
  void Trim();
  BufferCacheStats Stats() const;

 private:
  struct Entry {
    uint8_t* p;
    size_t length;
  };
  const size_t limit_;
  mutable std::mutex mu_;
  std::vector<Entry> entries_;  // guarded by mu_; oldest first
  size_t cached_bytes_ = 0;     // guarded by mu_
  uint64_t hits_ = 0;           // guarded by mu_
  uint64_t misses_ = 0;         // guarded by mu_
};

}  // namespace tqds::internal
