// A Prometheus endpoint: prometheus-cpp's Exposer serves GET /metrics over
// HTTP, and the metrics are read at each scrape from a callback (the
// library writes the text format). Used by the datasystem worker and the
// TransferQueue controller.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <prometheus/metric_family.h>

#include "tqds/status.h"

namespace prometheus {
class Exposer;
}

namespace tqds {

class MetricsEndpoint {
 public:
  // The metric families of one scrape. Called on the exposer's HTTP thread.
  using CollectFn = std::function<std::vector<prometheus::MetricFamily>()>;

  // Serves http://ip:port/metrics (port 0: a free port). IOError naming the
  // address when it cannot listen there.
  static Result<std::unique_ptr<MetricsEndpoint>> Start(const std::string& ip, int port,
                                                        CollectFn collect);
  ~MetricsEndpoint();  // stops serving
  MetricsEndpoint(const MetricsEndpoint&) = delete;
  MetricsEndpoint& operator=(const MetricsEndpoint&) = delete;

  // "ip:port" (the port it listens on).
  const std::string& address() const { return address_; }

 private:
  class Collector;
  MetricsEndpoint() = default;
  std::string address_;
  std::shared_ptr<Collector> collector_;
  std::unique_ptr<prometheus::Exposer> exposer_;
};

// Building blocks for a CollectFn.
using MetricLabels = std::map<std::string, std::string>;
// One family of a gauge or counter with one sample per label set.
prometheus::MetricFamily GaugeFamily(const std::string& name, const std::string& help);
prometheus::MetricFamily CounterFamily(const std::string& name, const std::string& help);
void AddSample(prometheus::MetricFamily& family, double value, const MetricLabels& labels = {});
// A histogram family; AddHistogram adds one label set: `counts[i]` samples
// fell at or below `bounds[i]` and above the bound before (not cumulative),
// counts[bounds.size()] above the last.
prometheus::MetricFamily HistogramFamily(const std::string& name, const std::string& help);
void AddHistogram(prometheus::MetricFamily& family, const std::vector<double>& bounds,
                  const std::vector<uint64_t>& counts, double sum, const MetricLabels& labels = {});

}  // namespace tqds
