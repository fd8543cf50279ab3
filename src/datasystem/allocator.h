// Allocator: hands out byte ranges of a fixed-size arena by offset. An
// interface so the object store can be tested with other policies; the
// default is best-fit with coalescing. Not thread-safe: the owner (the object
// store) serialises calls under its lock.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <memory_resource>
#include <set>
#include <unordered_map>
#include <utility>

#include "tqds/status.h"

namespace ds {

using tqds::Result;
using tqds::Status;

class Allocator {
 public:
  virtual ~Allocator() = default;
  // Returns the offset of a block of at least `size` bytes (rounded up to the
  // alignment; size 0 gets one aligned unit). OutOfSpace when no free block fits.
  virtual Result<uint64_t> Allocate(uint64_t size) = 0;
  // Frees a block returned by Allocate. Unknown offsets are ignored (returns false).
  virtual bool Free(uint64_t offset) = 0;
  virtual uint64_t capacity() const = 0;
  // Bytes in allocated blocks (after rounding).
  virtual uint64_t used() const = 0;
  virtual uint64_t largest_free_block() const = 0;
  virtual size_t block_count() const = 0;
};

// Best-fit over a free list indexed by size and by offset; neighbours are
// coalesced on Free. O(log n) per call.
class BestFitAllocator final : public Allocator {
 public:
  explicit BestFitAllocator(uint64_t capacity, uint64_t alignment = 64);
  Result<uint64_t> Allocate(uint64_t size) override;
  bool Free(uint64_t offset) override;
  uint64_t capacity() const override { return capacity_; }
  uint64_t used() const override { return used_; }
  uint64_t largest_free_block() const override;
  size_t block_count() const override { return allocated_.size(); }

 private:
  void InsertFree(uint64_t offset, uint64_t size);
  void EraseFree(std::pmr::map<uint64_t, uint64_t>::iterator it);

  const uint64_t capacity_;
  const uint64_t alignment_;
  uint64_t used_ = 0;
  // Nodes from a pool: a batch allocates and frees blocks by the thousand.
  std::pmr::unsynchronized_pool_resource pool_;
  std::pmr::map<uint64_t, uint64_t> free_by_offset_{&pool_};           // offset -> size
  std::pmr::set<std::pair<uint64_t, uint64_t>> free_by_size_{&pool_};  // (size, offset)
  std::pmr::unordered_map<uint64_t, uint64_t> allocated_{&pool_};      // offset -> size
};

}  // namespace ds
