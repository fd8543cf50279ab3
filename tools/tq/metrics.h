// `tq controller --metrics-port N`: the controller's Prometheus endpoint,
// with upstream TransferQueue's metric names (tq_partitions_total,
// tq_partition_samples_total, tq_partition_production_progress,
// tq_partition_consumption_progress, tq_controller_uptime_seconds). Each
// scrape asks the controller through the public client API
// (partition_summaries), so the controller's own thread is never shared.
#pragma once

#include <memory>
#include <string>

#include "common/metrics_endpoint.h"

namespace tq::tools {

tqds::Result<std::unique_ptr<tqds::MetricsEndpoint>> StartControllerMetrics(const std::string& host, int port,
                                                                            const std::string& controller);

}  // namespace tq::tools
