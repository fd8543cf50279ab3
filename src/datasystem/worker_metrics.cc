// The datasystem worker's Prometheus metrics. See worker_metrics.h.
#include "datasystem/worker_metrics.h"

#include "common/metrics_endpoint.h"

namespace ds {

std::vector<prometheus::MetricFamily> WorkerMetricFamilies(const WorkerStats& s) {
  const tqds::MetricLabels labels = {{"worker", s.worker}};
  std::vector<prometheus::MetricFamily> out;
  auto gauge = [&](const char* name, const char* help, double v) {
    out.push_back(tqds::GaugeFamily(name, help));
    tqds::AddSample(out.back(), v, labels);
  };
  auto counter = [&](const char* name, const char* help, double v) {
    out.push_back(tqds::CounterFamily(name, help));
    tqds::AddSample(out.back(), v, labels);
  };
  const auto d = [](uint64_t v) { return static_cast<double>(v); };
  gauge("ds_worker_shared_memory_capacity_bytes", "Size of the worker's shared memory", d(s.capacity));
  gauge("ds_worker_shared_memory_used_bytes", "Shared memory held by objects and pending writes", d(s.used));
  gauge("ds_worker_shared_memory_utilization_ratio", "Shared memory used / capacity",
        s.capacity == 0 ? 0.0 : d(s.used) / d(s.capacity));
  gauge("ds_worker_objects", "Objects stored (in shared memory or spilled)", d(s.objects));
  gauge("ds_worker_resident_objects", "Objects in shared memory", d(s.resident_objects));
  gauge("ds_worker_spilled_objects", "Objects on the spill disk", d(s.spilled_objects));
  gauge("ds_worker_spilled_bytes", "Bytes on the spill disk", d(s.spill_used));
  gauge("ds_worker_spill_limit_bytes", "Most bytes the spill disk may hold (0: no spill)", d(s.spill_limit));
  gauge("ds_worker_pending_writes", "Writes created and not yet sealed", d(s.pending_creates));
  gauge("ds_worker_pinned_blocks", "Blocks pinned by readers", d(s.pinned_blocks));
  gauge("ds_worker_clients", "Local clients connected", d(s.clients));
  gauge("ds_worker_cluster_peers", "Other live workers this worker sees", d(s.peers.size()));
  counter("ds_worker_spills_total", "Objects moved from shared memory to the spill disk", d(s.spills));
  counter("ds_worker_reloads_total", "Spilled objects read back into shared memory", d(s.reloads));
  counter("ds_worker_evictions_total", "Evictable objects dropped under memory pressure", d(s.evictions));
  counter("ds_worker_pulls_total", "Objects pulled from other workers", d(s.pulls));
  counter("ds_worker_pulled_bytes_total", "Bytes pulled from other workers", d(s.pulled_bytes));
  counter("ds_worker_pull_failures_total", "Pulls from another worker that failed", d(s.pull_failures));
  return out;
}

}  // namespace ds
