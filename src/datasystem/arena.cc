// memfd-backed shared arena.
#include "datasystem/arena.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace ds {

tqds::Result<std::unique_ptr<SharedArena>> SharedArena::Create(uint64_t size, bool populate) {
  int fd = ::memfd_create("ds_worker_arena", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (fd < 0) return tqds::Status::IOError("memfd_create failed: ", std::strerror(errno));
  if (::ftruncate(fd, static_cast<off_t>(size)) != 0) {
    int e = errno;
    ::close(fd);
    return tqds::Status::IOError("cannot size the shared memory arena to ", size,
                                 " bytes: ", std::strerror(e));
  }
  ::fcntl(fd, F_ADD_SEALS, F_SEAL_GROW | F_SEAL_SHRINK | F_SEAL_SEAL);
  void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) {
    int e = errno;
    ::close(fd);
    return tqds::Status::IOError("cannot map the shared memory arena (", size,
                                 " bytes): ", std::strerror(e));
  }
  std::unique_ptr<SharedArena> arena(new SharedArena(fd, static_cast<uint8_t*>(p), size));
  if (populate && size > 0) {
    arena->populated_ = false;
    arena->populator_ = std::thread([a = arena.get()] { a->Populate(); });
  }
  return arena;
}

void SharedArena::Populate() {
  // In steps, so a stop is seen quickly. Populating never changes bytes, so
  // it is safe while clients already write into the arena.
  constexpr uint64_t kStep = 64ull << 20;
  for (uint64_t off = 0; off < size_ && !stop_; off += kStep) {
    const uint64_t n = std::min(kStep, size_ - off);
    if (::madvise(base_ + off, n, MADV_POPULATE_WRITE) == 0) continue;
    if (errno != EINVAL) break;
    // Before Linux 5.14: a throwaway populated mapping of the same pages.
    void* q = ::mmap(nullptr, n, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd_,
                     static_cast<off_t>(off));
    if (q == MAP_FAILED) break;
    ::munmap(q, n);
  }
  populated_ = true;
}

SharedArena::~SharedArena() {
  stop_ = true;
  if (populator_.joinable()) populator_.join();
  ::munmap(base_, size_);
  ::close(fd_);
}

}  // namespace ds
