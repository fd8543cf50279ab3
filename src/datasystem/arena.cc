// memfd-backed shared arena.
#include "datasystem/arena.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

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
  int flags = MAP_SHARED | (populate ? MAP_POPULATE : 0);
  void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, flags, fd, 0);
  if (p == MAP_FAILED) {
    int e = errno;
    ::close(fd);
    return tqds::Status::IOError("cannot map the shared memory arena (", size,
                                 " bytes): ", std::strerror(e));
  }
  return std::unique_ptr<SharedArena>(new SharedArena(fd, static_cast<uint8_t*>(p), size));
}

SharedArena::~SharedArena() {
  ::munmap(base_, size_);
  ::close(fd_);
}

}  // namespace ds
