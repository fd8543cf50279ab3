// Buffer and MutableBuffer.
#include "tqds/buffer.h"

#include <pthread.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "common/mapping_cache_internal.h"

namespace tqds {

Buffer Buffer::Copy(const void* data, size_t size) {
  if (size == 0) return Buffer();
  auto mb = MutableBuffer::Allocate(size);
  if (!mb.ok()) throw std::bad_alloc();
  std::memcpy(mb->mutable_data(), data, size);
  return std::move(*mb).Freeze();
}

Buffer Buffer::FromString(std::string s) {
  auto holder = std::make_shared<std::string>(std::move(s));
  return Buffer(reinterpret_cast<const uint8_t*>(holder->data()), holder->size(), holder);
}

Buffer Buffer::FromVector(std::vector<uint8_t> v) {
  auto holder = std::make_shared<std::vector<uint8_t>>(std::move(v));
  return Buffer(holder->data(), holder->size(), holder);
}

Buffer Buffer::Wrap(const void* data, size_t size, std::shared_ptr<const void> holder) {
  return Buffer(static_cast<const uint8_t*>(data), size, std::move(holder));
}

Buffer Buffer::Borrow(const void* data, size_t size) {
  return Buffer(static_cast<const uint8_t*>(data), size, nullptr);
}

bool Buffer::Equals(const Buffer& other) const {
  return size_ == other.size_ && (size_ == 0 || std::memcmp(data_, other.data_, size_) == 0);
}

namespace {
constexpr size_t kMapThreshold = size_t{4} << 20;
constexpr size_t kPage = 4096;
size_t MapLength(size_t size) { return (size + kPage - 1) / kPage * kPage; }

// Whether large buffers ask for transparent huge pages: $TQDS_HUGE_PAGES=1.
// Off by default: with the kernel's usual THP defrag setting ("madvise") a
// MADV_HUGEPAGE fault compacts memory synchronously, and on the benchmark's
// VM a huge page that the host has taken back (free page reporting) cost
// about 12 us per 4 KiB to fault in again: 13.7 s for 1.125 GiB of 4 MiB
// buffers after half a minute idle, against 0.47 s with 4 KiB pages (0.15 s
// against 0.30 s when the same memory is reused at once).
bool UseHugePages() {
  static const bool on = [] {
    const char* env = std::getenv("TQDS_HUGE_PAGES");
    return env != nullptr && std::strcmp(env, "1") == 0;
  }();
  return on;
}

// Maps and commits `length` bytes, committed in one call rather than
// faulted in one page at a time while the bytes are copied in (huge pages
// only where UseHugePages()).
uint8_t* MapCommitted(size_t length) {
  void* p = ::mmap(nullptr, length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return nullptr;
  if (UseHugePages()) ::madvise(p, length, MADV_HUGEPAGE);
#ifdef MADV_POPULATE_WRITE
  if (::madvise(p, length, MADV_POPULATE_WRITE) == 0) return static_cast<uint8_t*>(p);
  if (errno != EINVAL) {  // out of memory: say so rather than fault later
    ::munmap(p, length);
    return nullptr;
  }
#endif
  // Before Linux 5.14: touch every page.
  auto* bytes = static_cast<volatile uint8_t*>(p);
  for (size_t off = 0; off < length; off += kPage) bytes[off] = 0;
  return static_cast<uint8_t*>(p);
}
}  // namespace

namespace internal {

MappingCache& MappingCache::Global() {
  static MappingCache* cache = [] {
    // 4 GiB, or 1/8 of the machine's memory where that is less.
    size_t limit = size_t{4} << 30;
    const long pages = ::sysconf(_SC_PHYS_PAGES), page = ::sysconf(_SC_PAGESIZE);
    if (pages > 0 && page > 0) limit = std::min(limit, static_cast<size_t>(pages) * page / 8);
    if (const char* env = std::getenv("TQDS_BUFFER_CACHE_MB")) {
      char* end = nullptr;
      errno = 0;
      const unsigned long long mb = std::strtoull(env, &end, 10);
      if (errno == 0 && end != env && *end == '\0')
        limit = std::min<unsigned long long>(mb, 1ull << 30) << 20;
    }
    auto* c = new MappingCache(limit);  // never destroyed: buffers may be freed during exit
    // A child forked while another thread held the lock would wait on it
    // forever (Python forks DataLoader workers).
    ::pthread_atfork([] { Global().mu_.lock(); }, [] { Global().mu_.unlock(); },
                     [] { Global().mu_.unlock(); });
    return c;
  }();
  return *cache;
}

MappingCache::~MappingCache() { Trim(); }

uint8_t* MappingCache::Take(size_t length, size_t* mapped) {
  std::lock_guard<std::mutex> lock(mu_);
  size_t best = entries_.size();
  for (size_t i = 0; i < entries_.size(); ++i) {
    const size_t l = entries_[i].length;
    if (l >= length && l - length <= length / 8 &&
        (best == entries_.size() || l < entries_[best].length)) {
      best = i;
    }
  }
  if (best == entries_.size()) {
    ++misses_;
    return nullptr;
  }
  ++hits_;
  Entry e = entries_[best];
  entries_.erase(entries_.begin() + static_cast<ptrdiff_t>(best));
  cached_bytes_ -= e.length;
  *mapped = e.length;
  return e.p;
}

void MappingCache::Give(uint8_t* p, size_t mapped) {
  std::vector<Entry> evicted;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (mapped <= limit_) {
      while (cached_bytes_ + mapped > limit_) {
        evicted.push_back(entries_.front());
        cached_bytes_ -= entries_.front().length;
        entries_.erase(entries_.begin());
      }
      entries_.push_back({p, mapped});
      cached_bytes_ += mapped;
    } else {
      evicted.push_back({p, mapped});
    }
  }
  for (const Entry& e : evicted) ::munmap(e.p, e.length);
}

void MappingCache::Trim() {
  std::vector<Entry> all;
  {
    std::lock_guard<std::mutex> lock(mu_);
    all.swap(entries_);
    cached_bytes_ = 0;
  }
  for (const Entry& e : all) ::munmap(e.p, e.length);
}

BufferCacheStats MappingCache::Stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return {hits_, misses_, cached_bytes_, limit_};
}

}  // namespace internal

BufferCacheStats GetBufferCacheStats() { return internal::MappingCache::Global().Stats(); }
void TrimBufferCache() { internal::MappingCache::Global().Trim(); }

void MutableBuffer::Free::operator()(uint8_t* p) const {
  if (mapped_size > 0) {
    internal::MappingCache::Global().Give(p, mapped_size);
  } else {
    std::free(p);
  }
}

Result<MutableBuffer> MutableBuffer::Allocate(size_t size) {
  if (size >= kMapThreshold) {
    size_t mapped = 0;
    uint8_t* p = internal::MappingCache::Global().Take(MapLength(size), &mapped);
    if (p == nullptr) {
      mapped = MapLength(size);
      p = MapCommitted(mapped);
    }
    if (p == nullptr) {  // out of memory: return what the cache holds, then try once more
      internal::MappingCache::Global().Trim();
      p = MapCommitted(mapped);
      if (p == nullptr) return Status::OutOfSpace("cannot map ", size, " bytes of host memory");
    }
    return MutableBuffer(p, size, mapped);
  }
  size_t rounded = (size + 63) / 64 * 64;
  if (rounded == 0) rounded = 64;
  void* p = std::aligned_alloc(64, rounded);
  if (p == nullptr) return Status::OutOfSpace("cannot allocate ", size, " bytes of host memory");
  return MutableBuffer(static_cast<uint8_t*>(p), size);
}

Buffer MutableBuffer::Freeze() && {
  Free deleter = data_.get_deleter();
  std::shared_ptr<uint8_t> holder(data_.release(), deleter);
  const uint8_t* p = holder.get();
  return Buffer::Wrap(p, size_, std::move(holder));
}

}  // namespace tqds
