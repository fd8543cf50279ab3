// `tq controller --metrics-port N`: the controller's Prometheus endpoint,
// with upstream TransferQueue's metric names: tq_controller_uptime_seconds,
// tq_controller_memory_rss_bytes, tq_partitions_total,
// tq_partition_samples_total, tq_partition_production_progress,
// tq_partition_consumption_progress, tq_global_index_allocated_total,
// tq_global_index_reusable_total, the request families
// tq_controller_request_duration_seconds (histogram), tq_controller_request,
// tq_controller_request_errors and tq_controller_request_samples (counters,
// by op_type), and per storage unit (storage_unit_id: its endpoint)
// tq_storage_capacity_total, tq_storage_active_keys_total and
// tq_storage_utilization_ratio (in samples, as upstream's keys; capacity and
// utilisation only for a unit with a sample limit, as upstream leaves out an
// unlimited one), tq_storage_memory_rss_bytes, tq_storage_request_ops,
// tq_storage_request_latency_avg/_p50/_p99 (by op_type PUT_DATA, GET_DATA,
// CLEAR_DATA), and ours in bytes: tq_storage_capacity_bytes,
// tq_storage_used_bytes.
// Partitions come through the public client API (partition_summaries) and
// the units' own UnitStats, so the controller's own thread is never shared;
// the request counters from TransferQueueController::request_stats.
#pragma once

#include <memory>
#include <string>

#include "common/metrics_endpoint.h"
#include "tq/controller.h"
#include "tq/storage_unit.h"

namespace tq::tools {

// `controller` is served in this process and must outlive the endpoint.
tqds::Result<std::unique_ptr<tqds::MetricsEndpoint>> StartControllerMetrics(const std::string& host, int port,
                                                                            const TransferQueueController& controller);

// `tq storage-unit --metrics-port N`: the unit's own endpoint, as upstream's
// storage role: tq_storage_request_duration_seconds (histogram),
// tq_storage_request_total, _errors_total and _samples_total by op_type, and
// the unit's tq_storage_* gauges above. `unit` must outlive the endpoint.
tqds::Result<std::unique_ptr<tqds::MetricsEndpoint>> StartStorageUnitMetrics(const std::string& host, int port,
                                                                             const SimpleStorageUnit& unit);

}  // namespace tq::tools
