// RequestCounters. See include/tq/request_stats.h.
#include "tq/request_stats.h"

#include <algorithm>

namespace tq {

const std::vector<double>& RequestOpStats::LatencyBounds() {
  static const std::vector<double> bounds = {0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0};
  return bounds;
}

double RequestOpStats::Quantile(double q) const {
  uint64_t total = 0;
  for (uint64_t n : latency) total += n;
  if (total == 0) return 0.0;
  const auto& bounds = LatencyBounds();
  const double target = q * static_cast<double>(total);
  double prev_bound = 0, prev_count = 0, count = 0;
  for (size_t b = 0; b < bounds.size() && b < latency.size(); ++b) {
    count += static_cast<double>(latency[b]);
    if (count >= target) {
      const double fraction = count > prev_count ? (target - prev_count) / (count - prev_count) : 0.0;
      return prev_bound + (bounds[b] - prev_bound) * fraction;
    }
    prev_bound = bounds[b];
    prev_count = count;
  }
  return prev_bound;
}

void RequestCounters::Record(const std::string& op, double seconds, bool ok, uint64_t samples) {
  const auto& bounds = RequestOpStats::LatencyBounds();
  const size_t bucket = std::lower_bound(bounds.begin(), bounds.end(), seconds) - bounds.begin();
  std::lock_guard<std::mutex> lock(mu_);
  RequestOpStats& o = ops_[op];
  if (o.latency.empty()) o.latency.assign(bounds.size() + 1, 0);
  ++o.requests;
  if (!ok) ++o.errors;
  if (ok) o.samples += samples;
  o.seconds += seconds;
  ++o.latency[bucket];
}

std::map<std::string, RequestOpStats> RequestCounters::Snapshot() const {
  std::lock_guard<std::mutex> lock(mu_);
  return ops_;
}

}  // namespace tq
