// Buffer: an immutable byte range that either owns its memory or keeps the
// owner alive through a shared holder (a view). Copying a Buffer is cheap and
// never copies bytes. Thread-compatible; the bytes themselves are immutable
// once a Buffer exists, so readers on several threads are safe.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "tqds/status.h"

namespace tqds {

class Buffer {
 public:
  Buffer() = default;

  // Owns a fresh copy of [data, data+size).
  static Buffer Copy(const void* data, size_t size);
  static Buffer CopyString(std::string_view s) { return Copy(s.data(), s.size()); }
  // Takes ownership of a string / vector without copying.
  static Buffer FromString(std::string s);
  static Buffer FromVector(std::vector<uint8_t> v);
  // A view of memory kept alive by `holder` (e.g. a received message, a
  // shared-memory mapping). No copy.
  static Buffer Wrap(const void* data, size_t size, std::shared_ptr<const void> holder);
  // A borrowed view: the caller guarantees the memory outlives every copy.
  static Buffer Borrow(const void* data, size_t size);

  // A sub-range sharing this buffer's holder. Precondition: in bounds.
  Buffer Slice(size_t offset, size_t length) const { return Buffer(data_ + offset, length, holder_); }

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  std::string_view view() const { return {reinterpret_cast<const char*>(data_), size_}; }
  std::string ToString() const { return std::string(view()); }
  // The object keeping the bytes alive (null for borrowed memory).
  const std::shared_ptr<const void>& holder() const { return holder_; }

  bool Equals(const Buffer& other) const;

 private:
  Buffer(const uint8_t* data, size_t size, std::shared_ptr<const void> holder)
      : data_(data), size_(size), holder_(std::move(holder)) {}
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
  std::shared_ptr<const void> holder_;
};

// Writable memory, 64-byte aligned, owned until frozen into a Buffer. Large
// buffers (4 MiB and up) are page-aligned, pre-committed mappings (transparent
// huge pages only with $TQDS_HUGE_PAGES=1); when one is freed its mapping is kept for the
// next allocation of about the same size, up to $TQDS_BUFFER_CACHE_MB of them
// (default 4096, or 1/8 of RAM if less; 0 disables), so a repeated shape never
// faults memory in again. The bytes of a new MutableBuffer are unspecified:
// write before reading.
class MutableBuffer {
 public:
  static Result<MutableBuffer> Allocate(size_t size);
  uint8_t* mutable_data() { return data_.get(); }
  size_t size() const { return size_; }
  // Hands the bytes over to an immutable Buffer without copying.
  Buffer Freeze() &&;

 private:
  struct Free {
    size_t mapped_size = 0;  // > 0: the memory is an mmap of this length
    void operator()(uint8_t* p) const;
  };
  MutableBuffer(uint8_t* p, size_t n, size_t mapped_size = 0)
      : data_(p, Free{mapped_size}), size_(n) {}
  std::unique_ptr<uint8_t, Free> data_;
  size_t size_ = 0;
};

// The large-buffer cache behind MutableBuffer, for stats and tests.
struct BufferCacheStats {
  uint64_t hits = 0;          // large allocations served from the cache
  uint64_t misses = 0;        // large allocations that mapped fresh memory
  uint64_t cached_bytes = 0;  // held now for reuse
  uint64_t limit_bytes = 0;   // the most it holds
};
BufferCacheStats GetBufferCacheStats();
// Returns every cached mapping to the system.
void TrimBufferCache();

}  // namespace tqds
