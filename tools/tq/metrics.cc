// The controller's Prometheus endpoint. See metrics.h.
#include "tools/tq/metrics.h"

#include <algorithm>
#include <cctype>
#include <chrono>
#include <future>
#include <map>
#include <mutex>

#include "common/process.h"
#include "common/wire/rpc.h"
#include "queue/ctl_messages.h"
#include "tq/client.h"

namespace tq::tools {

namespace {

// The state behind the scrapes (one HTTP thread, but kept safe for more).
struct Scraper {
  explicit Scraper(const TransferQueueController& c) : controller(c), client("tq-metrics", c.address()) {}
  std::mutex mu;
  const TransferQueueController& controller;
  TransferQueueClient client;
  std::map<std::string, std::unique_ptr<tqds::wire::RpcClient>> units;  // by endpoint
  const std::chrono::steady_clock::time_point started = std::chrono::steady_clock::now();
};

// Upstream's request families of `role` ("controller" or "storage"): a
// latency histogram and counters by op_type.
void AddRequestFamilies(const std::string& role, const std::map<std::string, RequestOpStats>& ops,
                        std::vector<prometheus::MetricFamily>& out) {
  std::string Role = role;
  Role[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(Role[0])));
  const std::string prefix = "tq_" + role + "_request";
  auto duration = tqds::HistogramFamily(prefix + "_duration_seconds", Role + " request processing duration");
  auto requests = tqds::CounterFamily(prefix + "_total", "Total number of requests processed by the " + role);
  auto errors = tqds::CounterFamily(prefix + "_errors_total", "Total number of request errors in the " + role);
  auto samples = tqds::CounterFamily(prefix + "_samples_total",
                                     "Total number of samples processed per operation type in the " + role);
  for (const auto& [op, o] : ops) {
    const tqds::MetricLabels labels = {{"op_type", op}};
    tqds::AddHistogram(duration, RequestOpStats::LatencyBounds(), o.latency, o.seconds, labels);
    tqds::AddSample(requests, static_cast<double>(o.requests), labels);
    tqds::AddSample(errors, static_cast<double>(o.errors), labels);
    tqds::AddSample(samples, static_cast<double>(o.samples), labels);
  }
  out.push_back(std::move(duration));
  out.push_back(std::move(requests));
  out.push_back(std::move(errors));
  out.push_back(std::move(samples));
}

void AddIndexFamilies(const ControllerRequestStats& stats, std::vector<prometheus::MetricFamily>& out) {
  out.push_back(tqds::GaugeFamily("tq_global_index_allocated_total", "Total allocated global indexes"));
  tqds::AddSample(out.back(), static_cast<double>(stats.index_allocated));
  out.push_back(tqds::GaugeFamily("tq_global_index_reusable_total", "Number of reusable global indexes"));
  tqds::AddSample(out.back(), static_cast<double>(stats.index_reusable));
}

// The per-unit gauges, upstream's (capacity and utilisation in samples,
// left out for a unit without a sample limit, as upstream leaves out an
// unlimited one; the request gauges computed by the unit) and ours (bytes).
struct StorageFamilies {
  prometheus::MetricFamily capacity = tqds::GaugeFamily("tq_storage_capacity_total", "Storage unit capacity (max keys)");
  prometheus::MetricFamily keys = tqds::GaugeFamily("tq_storage_active_keys_total", "Active keys in storage unit");
  prometheus::MetricFamily utilization =
      tqds::GaugeFamily("tq_storage_utilization_ratio", "Storage utilization ratio (active/capacity)");
  prometheus::MetricFamily rss = tqds::GaugeFamily("tq_storage_memory_rss_bytes", "Storage unit process RSS memory");
  prometheus::MetricFamily capacity_bytes =
      tqds::GaugeFamily("tq_storage_capacity_bytes", "Storage unit payload capacity in bytes");
  prometheus::MetricFamily used_bytes = tqds::GaugeFamily("tq_storage_used_bytes", "Payload bytes held by the storage unit");
  prometheus::MetricFamily ops = tqds::GaugeFamily("tq_storage_request_ops", "Total requests processed by storage unit");
  prometheus::MetricFamily avg =
      tqds::GaugeFamily("tq_storage_request_latency_avg", "Average request latency in storage unit (seconds)");
  prometheus::MetricFamily p50 =
      tqds::GaugeFamily("tq_storage_request_latency_p50", "P50 request latency in storage unit (seconds)");
  prometheus::MetricFamily p99 =
      tqds::GaugeFamily("tq_storage_request_latency_p99", "P99 request latency in storage unit (seconds)");

  void Add(const std::string& unit, const StorageUnitStats& st, uint64_t rss_bytes) {
    const tqds::MetricLabels labels = {{"storage_unit_id", unit}};
    if (st.capacity_samples > 0) {
      tqds::AddSample(capacity, static_cast<double>(st.capacity_samples), labels);
      tqds::AddSample(utilization, static_cast<double>(st.samples) / static_cast<double>(st.capacity_samples), labels);
    }
    tqds::AddSample(keys, static_cast<double>(st.samples), labels);
    tqds::AddSample(rss, static_cast<double>(rss_bytes), labels);
    tqds::AddSample(capacity_bytes, static_cast<double>(st.capacity_bytes), labels);
    tqds::AddSample(used_bytes, static_cast<double>(st.bytes), labels);
    for (const auto& [op, o] : st.ops) {
      const tqds::MetricLabels op_labels = {{"storage_unit_id", unit}, {"op_type", op}};
      tqds::AddSample(ops, static_cast<double>(o.requests), op_labels);
      tqds::AddSample(avg, o.Average(), op_labels);
      tqds::AddSample(p50, o.Quantile(0.5), op_labels);
      tqds::AddSample(p99, o.Quantile(0.99), op_labels);
    }
  }
  void MoveTo(std::vector<prometheus::MetricFamily>& out) {
    for (auto* f : {&capacity, &keys, &utilization, &rss, &capacity_bytes, &used_bytes, &ops, &avg, &p50, &p99}) {
      out.push_back(std::move(*f));
    }
  }
};

// Each listed storage unit's UnitStats (a unit that does not answer within
// a second is left out of this scrape).
void AddStorageFamilies(Scraper& s, std::vector<prometheus::MetricFamily>& out) {
  StorageFamilies families;
  std::vector<std::string> listed = s.controller.storage_units();
  for (auto it = s.units.begin(); it != s.units.end();) {  // forget units no longer listed
    it = std::find(listed.begin(), listed.end(), it->first) == listed.end() ? s.units.erase(it) : std::next(it);
  }
  std::vector<std::pair<std::string, std::future<tqds::Result<tqds::wire::Message>>>> asked;
  for (const auto& ep : listed) {
    auto& c = s.units[ep];
    if (!c) {
      auto made = tqds::wire::RpcClient::Connect(ep);
      if (!made.ok()) continue;
      c = made.MoveValue();
    }
    asked.emplace_back(ep, c->Call(tqds::wire::Message(tqds::wire::MsgType::kUnitStats, 0), std::chrono::seconds(1)));
  }
  for (auto& [ep, f] : asked) {
    auto rep = f.get();
    if (!rep.ok()) continue;
    auto report = internal::UnitStatsReply::Decode(rep->body());
    if (!report.ok()) continue;
    families.Add(ep, report->stats, report->rss_bytes);
  }
  families.MoveTo(out);
}

std::vector<prometheus::MetricFamily> Collect(Scraper& s) {
  std::lock_guard<std::mutex> lock(s.mu);
  std::vector<prometheus::MetricFamily> out;
  out.push_back(tqds::GaugeFamily("tq_controller_uptime_seconds", "Controller uptime in seconds"));
  tqds::AddSample(out.back(),
                  std::chrono::duration<double>(std::chrono::steady_clock::now() - s.started).count());
  out.push_back(tqds::GaugeFamily("tq_controller_memory_rss_bytes", "Controller process RSS memory in bytes"));
  tqds::AddSample(out.back(), static_cast<double>(tqds::ResidentBytes()));
  const ControllerRequestStats stats = s.controller.request_stats();
  AddRequestFamilies("controller", stats.ops, out);
  AddIndexFamilies(stats, out);
  AddStorageFamilies(s, out);
  auto partitions = s.client.partition_summaries();
  out.push_back(tqds::GaugeFamily("tq_controller_up", "1 when the controller answered this scrape"));
  tqds::AddSample(out.back(), partitions.ok() ? 1.0 : 0.0);
  if (!partitions.ok()) return out;
  out.push_back(tqds::GaugeFamily("tq_partitions_total", "Total number of active partitions"));
  tqds::AddSample(out.back(), static_cast<double>(partitions->size()));
  auto samples = tqds::GaugeFamily("tq_partition_samples_total", "Number of active samples in a partition");
  auto produced = tqds::GaugeFamily(
      "tq_partition_production_progress",
      "Production progress ratio (0.0-1.0): task_name=\"all\" is the share of the least produced field");
  auto consumed = tqds::GaugeFamily("tq_partition_consumption_progress",
                                    "Consumption progress ratio (0.0-1.0) of each task");
  for (const auto& p : *partitions) {
    const double n = static_cast<double>(p.num_samples);
    tqds::AddSample(samples, n, {{"partition_id", p.partition_id}});
    double least = p.produced.empty() ? 0.0 : 1.0;
    for (const auto& [field, count] : p.produced) least = std::min(least, n == 0 ? 0.0 : count / n);
    tqds::AddSample(produced, least, {{"partition_id", p.partition_id}, {"task_name", "all"}});
    for (const auto& [task, count] : p.consumed) {
      tqds::AddSample(consumed, n == 0 ? 0.0 : count / n, {{"partition_id", p.partition_id}, {"task_name", task}});
    }
  }
  out.push_back(std::move(samples));
  out.push_back(std::move(produced));
  out.push_back(std::move(consumed));
  return out;
}

}  // namespace

tqds::Result<std::unique_ptr<tqds::MetricsEndpoint>> StartControllerMetrics(const std::string& host, int port,
                                                                            const TransferQueueController& controller) {
  auto scraper = std::make_shared<Scraper>(controller);
  return tqds::MetricsEndpoint::Start(host, port, [scraper] { return Collect(*scraper); });
}

tqds::Result<std::unique_ptr<tqds::MetricsEndpoint>> StartStorageUnitMetrics(const std::string& host, int port,
                                                                             const SimpleStorageUnit& unit) {
  return tqds::MetricsEndpoint::Start(host, port, [&unit] {
    std::vector<prometheus::MetricFamily> out;
    const StorageUnitStats st = unit.stats();
    AddRequestFamilies("storage", st.ops, out);
    StorageFamilies families;
    families.Add(unit.address(), st, tqds::ResidentBytes());
    families.MoveTo(out);
    return out;
  });
}

}  // namespace tq::tools
