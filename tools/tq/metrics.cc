// The controller's Prometheus endpoint. See metrics.h.
#include "tools/tq/metrics.h"

#include <algorithm>
#include <chrono>
#include <mutex>

#include "tq/client.h"

namespace tq::tools {

namespace {

// The state behind the scrapes (one HTTP thread, but kept safe for more).
struct Scraper {
  explicit Scraper(const std::string& controller) : client("tq-metrics", controller) {}
  std::mutex mu;
  TransferQueueClient client;
  const std::chrono::steady_clock::time_point started = std::chrono::steady_clock::now();
};

std::vector<prometheus::MetricFamily> Collect(Scraper& s) {
  std::lock_guard<std::mutex> lock(s.mu);
  std::vector<prometheus::MetricFamily> out;
  out.push_back(tqds::GaugeFamily("tq_controller_uptime_seconds", "Controller uptime in seconds"));
  tqds::AddSample(out.back(),
                  std::chrono::duration<double>(std::chrono::steady_clock::now() - s.started).count());
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
                                                                            const std::string& controller) {
  auto scraper = std::make_shared<Scraper>(controller);
  return tqds::MetricsEndpoint::Start(host, port, [scraper] { return Collect(*scraper); });
}

}  // namespace tq::tools
