// Request counters and latency histograms per op_type, with upstream
// TransferQueue's bucket bounds, as the controller and the storage units
// report them on their Prometheus endpoints. RequestCounters is thread-safe.
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <vector>

namespace tq {

// One op_type's counters.
struct RequestOpStats {
  // Upper bounds (seconds) of the latency buckets: upstream's.
  static const std::vector<double>& LatencyBounds();
  uint64_t requests = 0;
  uint64_t errors = 0;   // answered with an error
  uint64_t samples = 0;  // samples the successful answers carried
  double seconds = 0;    // total latency
  std::vector<uint64_t> latency;  // per bucket of LatencyBounds(), one more for above the last
  // The q-quantile (0 < q <= 1) of the latency, interpolated linearly inside
  // its bucket as Prometheus' histogram_quantile does (the last finite bound
  // when it falls above it); 0 without requests.
  double Quantile(double q) const;
  double Average() const { return requests == 0 ? 0.0 : seconds / static_cast<double>(requests); }
};

class RequestCounters {
 public:
  // Counts one answered request of `op` that took `seconds`.
  void Record(const std::string& op, double seconds, bool ok, uint64_t samples);
  std::map<std::string, RequestOpStats> Snapshot() const;

 private:
  mutable std::mutex mu_;
  std::map<std::string, RequestOpStats> ops_;  // guarded by mu_
};

}  // namespace tq
