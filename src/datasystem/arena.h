// SharedArena: the worker's shared-memory region, backed by an anonymous
// memfd (not a /dev/shm file, so Docker's small /dev/shm does not matter).
// Local clients map it through the fd passed over the Unix socket. The size
// is sealed (F_SEAL_GROW|F_SEAL_SHRINK) so no client can truncate it under
// the worker. Thread-safe after Create (immutable).
#pragma once

#include <cstdint>
#include <memory>

#include "tqds/status.h"

namespace ds {

class SharedArena {
 public:
  static tqds::Result<std::unique_ptr<SharedArena>> Create(uint64_t size, bool populate);
  ~SharedArena();
  SharedArena(const SharedArena&) = delete;
  SharedArena& operator=(const SharedArena&) = delete;

  uint8_t* base() const { return base_; }
  uint64_t size() const { return size_; }
  int fd() const { return fd_; }

 private:
  SharedArena(int fd, uint8_t* base, uint64_t size) : fd_(fd), base_(base), size_(size) {}
  int fd_;
  uint8_t* base_;
  uint64_t size_;
};

}  // namespace ds
