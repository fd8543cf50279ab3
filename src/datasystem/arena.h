// SharedArena: the worker's shared-memory region, backed by an anonymous
// memfd (not a /dev/shm file, so Docker's small /dev/shm does not matter).
// Local clients map it through the fd passed over the Unix socket. The size
// is sealed (F_SEAL_GROW|F_SEAL_SHRINK) so no client can truncate it under
// the worker. With `populate`, a background thread commits every page after
// Create returns (the worker serves at once; first writes into fresh pages,
// e.g. a cross-node pull of 64 MiB, no longer pay a fault per page: on a VM
// that halves such a pull). Thread-safe after Create (immutable).
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <thread>

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
  // Whether the background commit has finished (true without populate).
  bool populated() const { return populated_; }

 private:
  SharedArena(int fd, uint8_t* base, uint64_t size) : fd_(fd), base_(base), size_(size) {}
  void Populate();
  int fd_;
  uint8_t* base_;
  uint64_t size_;
  std::atomic<bool> stop_{false};
  std::atomic<bool> populated_{true};
  std::thread populator_;
};

}  // namespace ds
