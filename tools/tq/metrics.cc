// The controller's Prometheus endpoint. See metrics.h.
#include "tools/tq/metrics.h"

#include <algorithm>
#include <chrono>
#include <future>
#include <map>
#include <mutex>

#include "common/process.h"
#include "common/wire/rpc.h"
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

void AddRequestFamilies(const ControllerRequestStats& stats, std::vector<prometheus::MetricFamily>& out) {
  auto duration = tqds::HistogramFamily("tq_controller_request_duration_seconds", "Controller request processing duration");
  auto requests = tqds::CounterFamily("tq_controller_request_total", "Total number of requests processed by the controller");
  auto errors = tqds::CounterFamily("tq_controller_request_errors_total", "Total number of request errors in the controller");
  auto samples = tqds::CounterFamily("tq_controller_request_samples_total",
                                     "Total number of samples processed per operation type in the controller");
  for (const auto& [op, o] : stats.ops) {
    const tqds::MetricLabels labels = {{"op_type", op}};
    tqds::AddHistogram(duration, ControllerRequestStats::LatencyBounds(), o.latency, o.seconds, labels);
    tqds::AddSample(requests, static_cast<double>(o.requests), labels);
    tqds::AddSample(errors, static_cast<double>(o.errors), labels);
    tqds::AddSample(samples, static_cast<double>(o.samples), labels);
  }
  out.push_back(std::move(duration));
  out.push_back(std::move(requests));
  out.push_back(std::move(errors));
  out.push_back(std::move(samples));
  out.push_back(tqds::GaugeFamily("tq_global_index_allocated_total", "Total allocated global indexes"));
  tqds::AddSample(out.back(), static_cast<double>(stats.index_allocated));
  out.push_back(tqds::GaugeFamily("tq_global_index_reusable_total", "Number of reusable global indexes"));
  tqds::AddSample(out.back(), static_cast<double>(stats.index_reusable));
}

// Each listed storage unit's UnitStats (a unit that does not answer within
// a second is left out of this scrape).
void AddStorageFamilies(Scraper& s, std::vector<prometheus::MetricFamily>& out) {
  auto capacity = tqds::GaugeFamily("tq_storage_capacity_total", "Storage unit capacity (bytes)");
  auto keys = tqds::GaugeFamily("tq_storage_active_keys_total", "Active keys in storage unit");
  auto utilization = tqds::GaugeFamily("tq_storage_utilization_ratio", "Storage utilization ratio (bytes used/capacity)");
  auto rss = tqds::GaugeFamily("tq_storage_memory_rss_bytes", "Storage unit process RSS memory");
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
    auto rd = tqds::wire::MapReader::Of(rep->body(), "UnitStats");
    if (!rd.ok()) continue;
    const uint64_t cap = rd->GetOr<uint64_t>("capacity", 0).ValueOr(0);
    const uint64_t used = rd->GetOr<uint64_t>("bytes", 0).ValueOr(0);
    const tqds::MetricLabels labels = {{"storage_unit_id", ep}};
    tqds::AddSample(capacity, static_cast<double>(cap), labels);
    tqds::AddSample(keys, static_cast<double>(rd->GetOr<uint64_t>("keys", 0).ValueOr(0)), labels);
    tqds::AddSample(utilization, cap == 0 ? 0.0 : static_cast<double>(used) / static_cast<double>(cap), labels);
    tqds::AddSample(rss, static_cast<double>(rd->GetOr<uint64_t>("rss_bytes", 0).ValueOr(0)), labels);
  }
  out.push_back(std::move(capacity));
  out.push_back(std::move(keys));
  out.push_back(std::move(utilization));
  out.push_back(std::move(rss));
}

std::vector<prometheus::MetricFamily> Collect(Scraper& s) {
  std::lock_guard<std::mutex> lock(s.mu);
  std::vector<prometheus::MetricFamily> out;
  out.push_back(tqds::GaugeFamily("tq_controller_uptime_seconds", "Controller uptime in seconds"));
  tqds::AddSample(out.back(),
                  std::chrono::duration<double>(std::chrono::steady_clock::now() - s.started).count());
  out.push_back(tqds::GaugeFamily("tq_controller_memory_rss_bytes", "Controller process RSS memory in bytes"));
  tqds::AddSample(out.back(), static_cast<double>(tqds::ResidentBytes()));
  AddRequestFamilies(s.controller.request_stats(), out);
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

}  // namespace tq::tools
