// Waits until a datasystem worker has committed its shared memory (it does
// so in the background after start, by default): the benchmarks measure a
// warm, long-running worker, not one still faulting its arena in.
#pragma once

#include <chrono>
#include <thread>

#include "ds/kv_client.h"

namespace tq::bench {

// Seconds waited, asking through `client` (initialised); negative when the
// worker cannot be asked or is not warm within `timeout`.
inline double WaitWorkerWarm(ds::KVClient& client,
                             std::chrono::seconds timeout = std::chrono::seconds(120)) {
  using Clock = std::chrono::steady_clock;
  const auto start = Clock::now();
  for (const auto until = start + timeout; Clock::now() < until;) {
    auto st = client.Stats();
    if (!st.ok()) return -1;
    if (st->memory_populated) return std::chrono::duration<double>(Clock::now() - start).count();
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return -1;
}

}  // namespace tq::bench
