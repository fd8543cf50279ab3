// tq: the TransferQueue command line. Subcommands: controller, storage-unit,
// demo, status. Each only fills in an options struct and runs the component.
#include <pthread.h>

#include <CLI/CLI.hpp>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>

#include "common/logging.h"
#include "common/process.h"
#include "common/wire/security.h"
#include "tools/tq/demo.h"
#include "tools/tq/metrics.h"
#include "tools/tq/status.h"
#include "tq/controller.h"
#include "tq/storage_unit.h"

namespace {

// SIGINT and SIGTERM are blocked in the main thread before any service (and
// its threads, which inherit the mask) starts, and taken by sigwait: one that
// arrives while starting, or right after the readiness line, still stops the
// services cleanly (a handler installed after the readiness line missed it).
sigset_t StopSignals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  return set;
}

void BlockStopSignals() {
  const sigset_t set = StopSignals();
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
}

void WaitForSignal() {
  const sigset_t set = StopSignals();
  int sig = 0;
  while (sigwait(&set, &sig) != 0) {
  }
}

std::string Endpoint(const std::string& host, int port) {
  return "tcp://" + host + ":" + std::to_string(port);
}

int Fail(const tqds::Status& st) {
  std::cerr << "tq: " << st.ToString() << std::endl;
  return 1;
}

// Runs a started service until SIGINT or SIGTERM: starts its metrics
// endpoint when metrics_port >= 0, prints the readiness lines (and the
// endpoint's) once everything listens, and stops it all.
template <typename Service, typename StartMetrics>
int ServeUntilSignal(Service& service, const std::vector<std::string>& ready, const char* name, int metrics_port,
                     StartMetrics start_metrics) {
  std::unique_ptr<tqds::MetricsEndpoint> metrics;
  if (metrics_port >= 0) {
    auto m = start_metrics();
    if (!m.ok()) {
      service.Stop();
      return Fail(m.status());
    }
    metrics = m.MoveValue();
  }
  for (const auto& line : ready) std::printf("%s\n", line.c_str());
  if (metrics) std::printf("%s metrics on http://%s/metrics\n", name, metrics->address().c_str());
  std::fflush(stdout);
  WaitForSignal();
  metrics.reset();
  service.Stop();
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"tq: TransferQueue controller, storage unit, demo and status"};
  app.require_subcommand(1);

  std::string host = "127.0.0.1";
  int port = 0;
  int units = 0;
  uint64_t capacity_mb = 8192;
  auto* ctl = app.add_subcommand("controller", "run the metadata controller");
  ctl->add_option("--host", host, "address to bind")->capture_default_str();
  ctl->add_option("--port", port, "port to bind (0: pick a free one)")->capture_default_str();
  ctl->add_option("--storage-units", units, "simple storage units to embed")->capture_default_str();
  ctl->add_option("--unit-capacity-mb", capacity_mb, "capacity of each embedded unit")
      ->capture_default_str();
  uint64_t capacity_samples = 0;
  ctl->add_option("--unit-capacity-samples", capacity_samples,
                  "samples each embedded unit may hold (upstream's total_storage_size over the units; 0: no limit)")
      ->capture_default_str();
  bool polling_mode = false;
  std::string default_sampling;
  ctl->add_flag("--polling-mode", polling_mode,
                "get_meta mode fetch answers at once (empty when too few samples are ready), "
                "as upstream TransferQueue's polling_mode");
  int64_t pre_alloc = 1;
  CLI::Option* pre_alloc_opt =
      ctl->add_option("--pre-alloc-samples", pre_alloc,
                      "indexes each new partition reserves, shown as not yet produced in its "
                      "status (upstream's TQ_PRE_ALLOC_SAMPLE_NUM; default: that variable, else 1)")
      ->capture_default_str();
  ctl->add_option("--default-sampling", default_sampling,
                  "sampling config (JSON object) for get_meta calls whose sampling_config names "
                  "no sampler, e.g. '{\"sampler\": \"grpo_group_n\", \"n_samples_per_prompt\": 4}'");

  int metrics_port = -1;
  ctl->add_option("--metrics-port", metrics_port,
                  "serve Prometheus metrics (GET /metrics, upstream's tq_* names) on --host at this port "
                  "(0: a free port; -1: none)")
      ->capture_default_str();

  tq::ControllerOptions limits;  // defaults shown in --help
  ctl->add_option("--max-allocate-per-request", limits.max_allocate_per_request,
                  "most samples one allocate may create")
      ->capture_default_str();
  ctl->add_option("--max-samples-per-partition", limits.max_samples_per_partition,
                  "most samples (live, being cleared or reserved) one partition may hold")
      ->capture_default_str();
  ctl->add_option("--max-samples-total", limits.max_samples_total, "most samples all partitions may hold")
      ->capture_default_str();
  ctl->add_option("--unit-ping-interval-ms", limits.storage_unit_ping_interval_ms,
                  "how often registered storage units are pinged")
      ->capture_default_str();
  ctl->add_option("--unit-liveness-timeout-ms", limits.storage_unit_liveness_timeout_ms,
                  "a registered storage unit that leaves a ping unanswered this long is dropped")
      ->capture_default_str();
  ctl->add_option("--state-dir", limits.state_dir,
                  "keep the controller's state in this directory: started again on it (same --port) "
                  "after a crash or kill -9, it resumes exactly and clients resend by themselves");
  ctl->add_flag("--state-sync", limits.state_sync,
                "fdatasync each state change (also survives a host crash; slower)");

  std::string controller;
  auto* su = app.add_subcommand("storage-unit", "run a simple storage unit");
  su->add_option("--host", host, "address to bind")->capture_default_str();
  su->add_option("--port", port, "port to bind (0: pick a free one)")->capture_default_str();
  su->add_option("--controller", controller, "controller to register with (tcp://host:port)");
  su->add_option("--capacity-mb", capacity_mb, "payload capacity")->capture_default_str();
  su->add_option("--capacity-samples", capacity_samples, "samples the unit may hold (0: no limit)")
      ->capture_default_str();
  su->add_option("--metrics-port", metrics_port,
                 "serve Prometheus metrics (GET /metrics, upstream's tq_storage_* names) on --host at this port "
                 "(0: a free port; -1: none)")
      ->capture_default_str();

  tq::tools::DemoOptions demo;
  auto* dm =
      app.add_subcommand("demo", "start services on localhost and stream a rollout through them");
  dm->add_option("--samples", demo.samples, "samples to produce")->capture_default_str();
  dm->add_option("--batch", demo.batch, "batch size of every stage")->capture_default_str();
  dm->add_option("--backend", demo.backend, "storage backend: simple | yuanrong")
      ->capture_default_str();
  dm->add_option("--worker-address", demo.worker_address,
                 "datasystem worker host:port for --backend yuanrong (started if absent)");

  tq::tools::StatusOptions status;
  auto* st = app.add_subcommand("status", "print the partitions of a live controller: samples, production "
                                          "per field, consumption per task");
  st->add_option("--controller", status.controller, "the controller (tcp://host:port)")->required();
  st->add_flag("--json", status.json, "one JSON document instead of the table");

  std::string keys_dir;
  auto* keys = app.add_subcommand("keys", "write a fresh set of CURVE keys (server and client pairs, "
                                          "authorized_clients) into a directory, for TQDS_CURVE_KEY_DIR");
  keys->add_option("dir", keys_dir, "the directory (created with mode 0700; existing keys are never replaced)")
      ->required();

  // Authentication of every tcp socket (src/common/wire/security.h).
  std::string curve_key_dir;
  bool allow_insecure = false;
  for (CLI::App* sub : {ctl, su, dm, st}) {
    sub->add_option("--curve-key-dir", curve_key_dir,
                    "CURVE keys of the deployment (default: $TQDS_CURVE_KEY_DIR; `tq keys DIR` makes them)");
    sub->add_flag("--allow-insecure", allow_insecure,
                  "serve a non-loopback address without authentication (logs a warning)");
  }

  CLI11_PARSE(app, argc, argv);
  tqds::InitLogging("tq", "", spdlog::level::info);
  if (*keys) {
    tqds::Status made = tqds::wire::GenerateCurveKeys(keys_dir);
    if (!made.ok()) return Fail(made);
    std::printf("CURVE keys written to %s: give every process of the deployment TQDS_CURVE_KEY_DIR=%s (a copy "
                "of the directory on each host); processes that only connect need no server.key_secret\n",
                keys_dir.c_str(), keys_dir.c_str());
    return 0;
  }
  if (!curve_key_dir.empty()) {
    tqds::Status used = tqds::wire::UseCurveKeys(curve_key_dir);
    if (!used.ok()) return Fail(used.WithContext("--curve-key-dir"));
  }
  if (allow_insecure) tqds::wire::AllowInsecure(true);

  if (*ctl || *su) {
    tqds::KeepFreedMemory();  // the units receive every put into malloc'd memory
    BlockStopSignals();
    // A file-size limit reached while journaling is a failed write the
    // controller reports and recovers from, not a reason to die.
    std::signal(SIGXFSZ, SIG_IGN);
  }
  if (*ctl) {
    tq::ControllerOptions o = limits;
    o.address = Endpoint(host, port);
    o.embedded_storage_units = units;
    o.storage_unit_capacity_bytes = capacity_mb << 20;
    o.storage_unit_capacity_samples = capacity_samples;
    o.polling_mode = polling_mode;
    o.pre_alloc_samples = pre_alloc;
    const char* env = std::getenv("TQ_PRE_ALLOC_SAMPLE_NUM");
    if (pre_alloc_opt->count() == 0 && env != nullptr && *env != '\0') {
      char* end = nullptr;
      errno = 0;
      const long long n = std::strtoll(env, &end, 10);
      if (errno != 0 || *end != '\0') {
        return Fail(tqds::Status::Invalid("TQ_PRE_ALLOC_SAMPLE_NUM='", env, "' is not a whole number"));
      }
      o.pre_alloc_samples = n;
    }
    if (!default_sampling.empty()) {
      auto cfg = tq::ParseSamplingConfigJson(default_sampling);
      if (!cfg.ok()) return Fail(cfg.status().WithContext("--default-sampling"));
      o.default_sampling = cfg.MoveValue();
    }
    if (!o.state_dir.empty() && port == 0) {
      spdlog::warn("--state-dir with --port 0: started again, the controller gets another port, and clients "
                   "resend only to the address they know; give a fixed --port");
    }
    if (!o.state_dir.empty() && units > 0) {
      spdlog::warn("--state-dir with --storage-units {}: embedded units keep their data in this process, so it "
                   "is lost with it; run `tq storage-unit --controller` for data that outlives a restart", units);
    }
    auto c = tq::TransferQueueController::Start(o);
    if (!c.ok()) return Fail(c.status());
    std::vector<std::string> ready = {"tq controller listening on " + (*c)->address()};
    for (const auto& u : (*c)->storage_units()) ready.push_back("tq storage unit listening on " + u);
    return ServeUntilSignal(**c, ready, "tq controller", metrics_port,
                            [&] { return tq::tools::StartControllerMetrics(host, metrics_port, **c); });
  }
  if (*su) {
    tq::StorageUnitOptions o;
    o.address = Endpoint(host, port);
    o.capacity_bytes = capacity_mb << 20;
    o.capacity_samples = capacity_samples;
    o.controller_address = controller;
    auto u = tq::SimpleStorageUnit::Start(o);
    if (!u.ok()) return Fail(u.status());
    return ServeUntilSignal(**u, {"tq storage unit listening on " + (*u)->address()}, "tq storage unit",
                            metrics_port, [&] { return tq::tools::StartStorageUnitMetrics(host, metrics_port, **u); });
  }
  if (*dm) return tq::tools::RunDemo(demo);
  if (*st) return tq::tools::RunStatus(status);
  return 0;
}
