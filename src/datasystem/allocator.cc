// Best-fit allocator with coalescing.
#include "datasystem/allocator.h"

namespace ds {

BestFitAllocator::BestFitAllocator(uint64_t capacity, uint64_t alignment)
    : capacity_(capacity / alignment * alignment), alignment_(alignment) {
  if (capacity_ > 0) InsertFree(0, capacity_);
}

void BestFitAllocator::InsertFree(uint64_t offset, uint64_t size) {
  free_by_offset_.emplace(offset, size);
  free_by_size_.emplace(size, offset);
}

void BestFitAllocator::EraseFree(std::pmr::map<uint64_t, uint64_t>::iterator it) {
  free_by_size_.erase({it->second, it->first});
  free_by_offset_.erase(it);
}

Result<uint64_t> BestFitAllocator::Allocate(uint64_t size) {
  uint64_t need = size == 0 ? alignment_ : (size + alignment_ - 1) / alignment_ * alignment_;
  if (need < size) return Status::OutOfSpace("allocation of ", size, " bytes overflows");
  auto fit = free_by_size_.lower_bound({need, 0});
  if (fit == free_by_size_.end()) {
    return Status::OutOfSpace("no free block of ", need, " bytes (largest free block ",
                              largest_free_block(), " of ", capacity_, ")");
  }
  uint64_t block_size = fit->first, offset = fit->second;
  EraseFree(free_by_offset_.find(offset));
  if (block_size > need) InsertFree(offset + need, block_size - need);
  allocated_.emplace(offset, need);
  used_ += need;
  return offset;
}

bool BestFitAllocator::Free(uint64_t offset) {
  auto a = allocated_.find(offset);
  if (a == allocated_.end()) return false;
  uint64_t size = a->second;
  allocated_.erase(a);
  used_ -= size;
  // Coalesce with the following and the preceding free block.
  auto next = free_by_offset_.lower_bound(offset);
  if (next != free_by_offset_.end() && next->first == offset + size) {
    size += next->second;
    EraseFree(next);
  }
  auto after = free_by_offset_.lower_bound(offset);
  if (after != free_by_offset_.begin()) {
    auto prev = std::prev(after);
    if (prev->first + prev->second == offset) {
      offset = prev->first;
      size += prev->second;
      EraseFree(prev);
    }
  }
  InsertFree(offset, size);
  return true;
}

uint64_t BestFitAllocator::largest_free_block() const {
  return free_by_size_.empty() ? 0 : free_by_size_.rbegin()->first;
}

}  // namespace ds
