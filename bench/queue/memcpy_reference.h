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
// mapping. `prefaulted`: the copy alone, the fastest of three copies timed
// after one untimed copy into the same pages (on some VMs the first passes
// over freshly faulted pages stay slow for a while, and the reference is
// the physical limit); else one copy that also pays the first-touch faults
// a receiver into newly allocated memory pays. 0 if the mapping fails.
inline double MemcpySeconds(const std::vector<tqds::Buffer>& srcs, size_t bytes,
                            bool prefaulted = true) {
  void* dst = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (dst == MAP_FAILED) return 0;
  auto copy = [&] {
    size_t off = 0;
    for (const auto& b : srcs) {
      std::memcpy(static_cast<uint8_t*>(dst) + off, b.data(), b.size());
      off += b.size();
    }
  };
  using Clock = std::chrono::steady_clock;
  if (prefaulted) copy();
  double best = 0;
  for (int i = 0; i < (prefaulted ? 3 : 1); ++i) {
    const auto t0 = Clock::now();
    copy();
    const double s = std::chrono::duration<double>(Clock::now() - t0).count();
    if (i == 0 || s < best) best = s;
  }
  volatile uint8_t sink = static_cast<uint8_t*>(dst)[bytes / 2];
  (void)sink;
  ::munmap(dst, bytes);
  return best;
}

}  // namespace tq::bench
