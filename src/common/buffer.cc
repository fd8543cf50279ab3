// Buffer and MutableBuffer.
#include "tqds/buffer.h"

#include <cstdlib>
#include <sys/mman.h>

#include <cstring>

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

Buffer Buffer::Slice(size_t offset, size_t length) const {
  return Buffer(data_ + offset, length, holder_);
}

bool Buffer::Equals(const Buffer& other) const {
  return size_ == other.size_ && (size_ == 0 || std::memcmp(data_, other.data_, size_) == 0);
}

namespace {
// Large buffers are mapped with MAP_POPULATE: the kernel commits all pages in
// one go, several times faster than faulting them in one by one while the
// bytes are copied in.
constexpr size_t kMapThreshold = size_t{4} << 20;
size_t MapLength(size_t size) { return (size + 4095) / 4096 * 4096; }
}  // namespace

void MutableBuffer::Free::operator()(uint8_t* p) const {
  if (mapped_size > 0) {
    ::munmap(p, mapped_size);
  } else {
    std::free(p);
  }
}

Result<MutableBuffer> MutableBuffer::Allocate(size_t size) {
  if (size >= kMapThreshold) {
    void* p = ::mmap(nullptr, MapLength(size), PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    if (p == MAP_FAILED) return Status::OutOfSpace("cannot map ", size, " bytes of host memory");
    return MutableBuffer(static_cast<uint8_t*>(p), size, MapLength(size));
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
