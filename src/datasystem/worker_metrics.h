// The datasystem worker's Prometheus metrics (names ds_worker_*), from the
// counters its Stats reply carries. Served by tqds::MetricsEndpoint when the
// worker runs with --metrics_port.
#pragma once

#include <vector>

#include <prometheus/metric_family.h>

#include "ds/kv_client.h"

namespace ds {

// Every family, each sample labelled worker="<its address>".
std::vector<prometheus::MetricFamily> WorkerMetricFamilies(const WorkerStats& s);

}  // namespace ds
