// A Prometheus endpoint. See metrics_endpoint.h.
#include "common/metrics_endpoint.h"

#include <prometheus/collectable.h>
#include <prometheus/exposer.h>

#include <exception>
#include <limits>
#include <utility>

namespace tqds {

class MetricsEndpoint::Collector : public prometheus::Collectable {
 public:
  explicit Collector(CollectFn fn) : fn_(std::move(fn)) {}
  std::vector<prometheus::MetricFamily> Collect() const override { return fn_(); }

 private:
  const CollectFn fn_;
};

Result<std::unique_ptr<MetricsEndpoint>> MetricsEndpoint::Start(const std::string& ip, int port,
                                                                 CollectFn collect) {
  if (port < 0 || port > 65535) return Status::Invalid("metrics port ", port, " is out of range");
  std::unique_ptr<MetricsEndpoint> e(new MetricsEndpoint());
  const std::string bind = ip + ":" + std::to_string(port);
  try {
    e->exposer_ = std::make_unique<prometheus::Exposer>(bind, /*num_threads=*/1);
  } catch (const std::exception& ex) {
    return Status::IOError("cannot serve metrics on ", bind, ": ", ex.what());
  }
  const std::vector<int> ports = e->exposer_->GetListeningPorts();
  if (ports.empty()) return Status::IOError("cannot serve metrics on ", bind, ": no listening port");
  e->address_ = ip + ":" + std::to_string(ports.front());
  e->collector_ = std::make_shared<Collector>(std::move(collect));
  e->exposer_->RegisterCollectable(e->collector_);
  return e;
}

MetricsEndpoint::~MetricsEndpoint() {
  exposer_.reset();  // stop the HTTP threads before the collector goes
}

namespace {
prometheus::MetricFamily Family(const std::string& name, const std::string& help,
                                prometheus::MetricType type) {
  prometheus::MetricFamily f;
  f.name = name;
  f.help = help;
  f.type = type;
  return f;
}
}  // namespace

prometheus::MetricFamily GaugeFamily(const std::string& name, const std::string& help) {
  return Family(name, help, prometheus::MetricType::Gauge);
}

prometheus::MetricFamily CounterFamily(const std::string& name, const std::string& help) {
  return Family(name, help, prometheus::MetricType::Counter);
}

void AddSample(prometheus::MetricFamily& family, double value, const MetricLabels& labels) {
  prometheus::ClientMetric m;
  for (const auto& [k, v] : labels) m.label.push_back({k, v});
  if (family.type == prometheus::MetricType::Counter) {
    m.counter.value = value;
  } else {
    m.gauge.value = value;
  }
  family.metric.push_back(std::move(m));
}

prometheus::MetricFamily HistogramFamily(const std::string& name, const std::string& help) {
  return Family(name, help, prometheus::MetricType::Histogram);
}

void AddHistogram(prometheus::MetricFamily& family, const std::vector<double>& bounds,
                  const std::vector<uint64_t>& counts, double sum, const MetricLabels& labels) {
  prometheus::ClientMetric m;
  for (const auto& [k, v] : labels) m.label.push_back({k, v});
  uint64_t cumulative = 0;
  for (size_t i = 0; i < bounds.size(); ++i) {
    cumulative += i < counts.size() ? counts[i] : 0;
    m.histogram.bucket.push_back({cumulative, bounds[i]});
  }
  if (counts.size() > bounds.size()) cumulative += counts[bounds.size()];
  m.histogram.bucket.push_back({cumulative, std::numeric_limits<double>::infinity()});
  m.histogram.sample_count = cumulative;
  m.histogram.sample_sum = sum;
  family.metric.push_back(std::move(m));
}

}  // namespace tqds
