// The memcpy reference of the queue benchmarks: the bytes of a batch copied
// once, single-threaded, into one destination.
#pragma once

#include <sys/mman.h>

#include <chrono>
#include <cstdint>
#include <cstring>
#include <vector>

#include "tqds/buffer.h"

namespace tq::bench {

// Seconds to memcpy `srcs` (`bytes` in total) back to back into one fresh
// mapping; `prefaulted`: its pages are committed first (the copy alone),
// else the copy also pays the first-touch faults a receiver into newly
// allocated memory pays. 0 if the mapping fails.
inline double MemcpySeconds(const std::vector<tqds::Buffer>& srcs, size_t bytes, bool prefaulted = true) {
  void* dst = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (dst == MAP_FAILED) return 0;
  if (prefaulted) std::memset(dst, 1, bytes);
  const auto t0 = std::chrono::steady_clock::now();
  size_t off = 0;
  for (const auto& b : srcs) {
    std::memcpy(static_cast<uint8_t*>(dst) + off, b.data(), b.size());
    off += b.size();
  }
  const auto t1 = std::chrono::steady_clock::now();
  volatile uint8_t sink = static_cast<uint8_t*>(dst)[bytes / 2];
  (void)sink;
  ::munmap(dst, bytes);
  return std::chrono::duration<double>(t1 - t0).count();
}

}  // namespace tq::bench
