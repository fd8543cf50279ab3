// tq_bench: TransferQueue benchmark program (not a test). Measures
//  1. put -> get_meta -> get_data cycles in TransferQueue's perftest shape
//     (batch 1024 x 9 float32 fields x seq 8192 = 288 MiB, and a 10x smaller
//     one) in-process and across processes, next to memcpy and raw loopback
//     TCP measured in the same run;
//  2. the controller's metadata rate (put-notify samples/s) and get_meta
//     latency p50/p99 at batch 256 with 10k and 1M samples in the partition.
// Prints a table with the targets (PASS/MISS) and writes JSON with
// --json FILE. --quick runs a short version. Timing uses steady_clock around
// whole client calls; repetitions report median, min and max.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "common/process.h"
#include "memcpy_reference.h"
#include "tq/client.h"
#include "tq/controller.h"

#ifndef TQ_BINARY
#define TQ_BINARY "tq"
#endif

namespace {

using json = nlohmann::json;
using tq::Batch;
using tq::BatchMeta;
using tqds::Buffer;
using tqds::Result;
using tqds::Status;
using Clock = std::chrono::steady_clock;
using tq::bench::MemcpySeconds;

constexpr double kGB = 1e9;

double Seconds(Clock::time_point a, Clock::time_point b) { return std::chrono::duration<double>(b - a).count(); }

// ------------------------------------------------------------------ options

struct Options {
  bool quick = false;
  std::string json_path;
  bool run_cycles = true;
  bool run_controller = true;
  int reps = 0;        // > 0: repetitions of every cycle row (for profiling)
  std::string filter;  // run only cycle rows whose deployment key or shape contains it
};

// The 1-minute load average: other work on a 2-core machine skews results.
double LoadAverage() {
  double l = -1;
  if (FILE* f = std::fopen("/proc/loadavg", "r")) {
    if (std::fscanf(f, "%lf", &l) != 1) l = -1;
    std::fclose(f);
  }
  return l;
}

void Usage() {
  std::printf(
      "usage: tq_bench [--quick] [--json FILE] [--only cycles|controller]\n"
      "  --quick        short run (fewer repetitions, 100k instead of 1M samples)\n"
      "  --json FILE    also write the results as JSON\n"
      "  --only WHAT    run only the cycle or only the controller scenarios\n"
      "  --reps N       repetitions per cycle row (default 5 large / 10 small; quick 2 / 3)\n"
      "  --filter S     cycle rows only for deployments/shapes containing S (e.g. in_process, 819)\n");
}

// -------------------------------------------------------------- statistics

struct Summary {
  double median = 0, min = 0, max = 0;
  json ToJson() const { return {{"median", median}, {"min", min}, {"max", max}}; }
};

Summary Summarize(std::vector<double> v) {
  Summary s;
  if (v.empty()) return s;
  std::sort(v.begin(), v.end());
  s.min = v.front();
  s.max = v.back();
  s.median = v.size() % 2 ? v[v.size() / 2] : 0.5 * (v[v.size() / 2 - 1] + v[v.size() / 2]);
  return s;
}

// Nearest-rank percentile of an unsorted sample (q in [0, 1]).
double Percentile(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  size_t rank = static_cast<size_t>(q * static_cast<double>(v.size()) + 0.999999);
  rank = std::clamp<size_t>(rank, 1, v.size());
  return v[rank - 1];
}

// ------------------------------------------------------------- references

// One TCP connection over 127.0.0.1 between two threads: the sender writes
// `total` bytes in 1 MiB send() calls, the receiver reads into a 4 MiB buffer.
// Returns seconds from the first send to the last byte received (0: failed).
double LoopbackTcpSeconds(size_t total) {
  int lfd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof(addr);
  if (lfd < 0 || ::bind(lfd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 || ::listen(lfd, 1) != 0 ||
      ::getsockname(lfd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    if (lfd >= 0) ::close(lfd);
    return 0;
  }
  Clock::time_point done;
  bool ok = false;
  std::thread receiver([&] {
    int fd = ::accept(lfd, nullptr, nullptr);
    if (fd < 0) return;
    std::vector<uint8_t> buf(4 << 20);
    size_t got = 0;
    while (got < total) {
      ssize_t n = ::recv(fd, buf.data(), buf.size(), 0);
      if (n <= 0) break;
      got += static_cast<size_t>(n);
    }
    done = Clock::now();
    ok = got == total;
    ::close(fd);
  });
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  std::vector<uint8_t> chunk(1 << 20, 0x5a);
  Clock::time_point start;
  if (fd >= 0 && ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0) {
    start = Clock::now();
    size_t sent = 0;
    while (sent < total) {
      size_t n = std::min(chunk.size(), total - sent);
      ssize_t w = ::send(fd, chunk.data(), n, 0);
      if (w <= 0) break;
      sent += static_cast<size_t>(w);
    }
  }
  if (fd >= 0) ::close(fd);
  receiver.join();
  ::close(lfd);
  return ok ? Seconds(start, done) : 0;
}

// ------------------------------------------------------------- deployments

// A controller + storage units, in this process or as child processes that
// the ChildProcess handles kill on destruction.
struct Deployment {
  std::string key;          // short id for JSON
  std::string description;  // for the table
  bool cross_process = false;
  std::string address;
  std::unique_ptr<tq::TransferQueueController> controller;  // in-process only
  std::vector<tqds::ChildProcess> processes;
  ~Deployment() {
    if (controller) controller->Stop();
  }
};

std::string EndpointIn(const std::string& line) {
  auto p = line.find("tcp://");
  if (p == std::string::npos) return "";
  auto e = line.find_first_of(" \t\r\n", p);
  return line.substr(p, e == std::string::npos ? std::string::npos : e - p);
}

Result<tqds::ChildProcess> SpawnReady(const std::vector<std::string>& argv, const std::string& needle,
                                      std::string* endpoint) {
  TQDS_ASSIGN_OR_RETURN(auto child, tqds::ChildProcess::Spawn(argv));
  TQDS_ASSIGN_OR_RETURN(std::string line, child.WaitForLine(needle, std::chrono::seconds(20)));
  if (endpoint) *endpoint = EndpointIn(line);
  return child;
}

Result<std::unique_ptr<Deployment>> StartInProcess() {
  auto d = std::make_unique<Deployment>();
  d->key = "in_process";
  d->description = "in-process (inproc, 2 embedded units)";
  tq::ControllerOptions o;
  o.address = "inproc://tq-bench-controller";
  o.embedded_storage_units = 2;
  TQDS_ASSIGN_OR_RETURN(d->controller, tq::TransferQueueController::Start(o));
  d->address = d->controller->address();
  return d;
}

// `tq controller --storage-units 2`: controller and units in one child process.
Result<std::unique_ptr<Deployment>> StartTcpEmbedded(int units) {
  auto d = std::make_unique<Deployment>();
  d->key = "tcp_embedded_units";
  d->description = "tcp, 1 process: controller + " + std::to_string(units) + " embedded units";
  d->cross_process = true;
  TQDS_ASSIGN_OR_RETURN(auto ctl, SpawnReady({TQ_BINARY, "controller", "--port", "0", "--storage-units",
                                              std::to_string(units), "--unit-capacity-mb", "4096"},
                                             "tq controller listening on", &d->address));
  for (int i = 0; i < units; ++i) {
    TQDS_RETURN_NOT_OK(ctl.WaitForLine("tq storage unit listening on", std::chrono::seconds(20)).status());
  }
  d->processes.push_back(std::move(ctl));
  return d;
}

// `tq controller` + N `tq storage-unit --controller EP` processes.
Result<std::unique_ptr<Deployment>> StartTcpUnits(int units) {
  auto d = std::make_unique<Deployment>();
  d->key = "tcp_unit_processes";
  d->description = "tcp, 3 processes: controller + " + std::to_string(units) + " storage-unit procs";
  d->cross_process = true;
  TQDS_ASSIGN_OR_RETURN(auto ctl, SpawnReady({TQ_BINARY, "controller", "--port", "0"},
                                             "tq controller listening on", &d->address));
  d->processes.push_back(std::move(ctl));
  for (int i = 0; i < units; ++i) {
    TQDS_ASSIGN_OR_RETURN(auto unit, SpawnReady({TQ_BINARY, "storage-unit", "--port", "0", "--controller",
                                                 d->address, "--capacity-mb", "4096"},
                                                "tq storage unit listening on", nullptr));
    d->processes.push_back(std::move(unit));
  }
  return d;
}

// ------------------------------------------------------------------ cycles

struct CycleShape {
  std::string name;
  int64_t batch;
  int fields;
  int64_t seq;
  int reps;
  size_t bytes() const { return static_cast<size_t>(batch) * fields * seq * sizeof(float); }
};

// The producer's batch: `fields` dense float32 tensors [batch, seq], each one
// buffer split by AddTensor into per-sample zero-copy views.
struct SourceBatch {
  Batch batch;
  std::vector<std::string> names;
  std::vector<Buffer> buffers;  // one per field
};

Result<SourceBatch> MakeSource(const CycleShape& shape) {
  SourceBatch s;
  s.batch = Batch(static_cast<size_t>(shape.batch));
  const size_t field_bytes = static_cast<size_t>(shape.batch) * shape.seq * sizeof(float);
  for (int f = 0; f < shape.fields; ++f) {
    TQDS_ASSIGN_OR_RETURN(auto mb, tqds::MutableBuffer::Allocate(field_bytes));
    auto* w = reinterpret_cast<uint32_t*>(mb.mutable_data());
    const uint32_t salt = 0x9E3779B9u * static_cast<uint32_t>(f + 1);
    for (size_t i = 0; i < field_bytes / 4; ++i) w[i] = static_cast<uint32_t>(i) ^ salt;
    Buffer b = std::move(mb).Freeze();
    std::string name = "field_" + std::to_string(f);
    TQDS_RETURN_NOT_OK(s.batch.AddTensor(name, tq::DType::kFloat32, {shape.batch, shape.seq}, b));
    s.names.push_back(name);
    s.buffers.push_back(b);
  }
  return s;
}

// Checks that `got` (fetched with `got_meta`) holds exactly the bytes that
// were written as the samples of `put_meta`.
Status Verify(const CycleShape& shape, const SourceBatch& src, const BatchMeta& put_meta,
              const BatchMeta& got_meta, const Batch& got) {
  if (got.batch_size() != static_cast<size_t>(shape.batch) || got_meta.size() != got.batch_size()) {
    return Status::Invalid("read ", got.batch_size(), " samples, wrote ", shape.batch);
  }
  std::unordered_map<int64_t, size_t> row_of;
  for (size_t i = 0; i < put_meta.size(); ++i) row_of[put_meta.samples()[i].global_index] = i;
  const size_t sample_bytes = static_cast<size_t>(shape.seq) * sizeof(float);
  for (size_t f = 0; f < src.names.size(); ++f) {
    TQDS_ASSIGN_OR_RETURN(const tq::Column* col, got.Get(src.names[f]));
    for (size_t s = 0; s < got.batch_size(); ++s) {
      auto it = row_of.find(got_meta.samples()[s].global_index);
      if (it == row_of.end()) return Status::Invalid("read a sample that was not written");
      const tq::Value& v = (*col)[s];
      if (v.dtype() != tq::DType::kFloat32 || v.shape() != tq::Shape{shape.seq} || v.nbytes() != sample_bytes ||
          std::memcmp(v.data().data(), src.buffers[f].data() + it->second * sample_bytes, sample_bytes) != 0) {
        return Status::Invalid("field ", src.names[f], " of sample ", it->first, " differs from what was written");
      }
    }
  }
  return Status::OK();
}

struct CycleResult {
  std::string deployment, deployment_key, shape;
  bool cross_process = false;
  size_t bytes = 0;
  int reps = 0;
  bool verified = false;
  std::vector<double> put, get_meta, get_data, clear, gbps;
  double memcpy_gbps = 0, memcpy_median_gbps = 0, memcpy_fresh_gbps = 0, tcp_gbps = 0;
  double ratio() const { return memcpy_gbps > 0 ? Summarize(gbps).median / memcpy_gbps : 0; }
};

Status RunCycles(const Deployment& dep, const CycleShape& shape, CycleResult* out) {
  out->deployment = dep.description;
  out->deployment_key = dep.key;
  out->cross_process = dep.cross_process;
  out->shape = shape.name;
  out->bytes = shape.bytes();
  out->reps = shape.reps;
  TQDS_ASSIGN_OR_RETURN(SourceBatch src, MakeSource(shape));
  tq::TransferQueueClient client("tq-bench", dep.address);
  TQDS_RETURN_NOT_OK(client.initialize_storage_manager("SimpleStorageManager"));
  const std::string partition = "bench-" + shape.name;
  // Cycle 0 is a warm-up whose data is verified; it is not reported.
  for (int rep = 0; rep <= shape.reps; ++rep) {
    auto t0 = Clock::now();
    TQDS_ASSIGN_OR_RETURN(BatchMeta put_meta, client.put(src.batch, partition));
    auto t1 = Clock::now();
    TQDS_ASSIGN_OR_RETURN(BatchMeta meta, client.get_meta(src.names, shape.batch, partition, "train", {},
                                                          tq::FetchMode::kFetch, std::chrono::seconds(30)));
    auto t2 = Clock::now();
    Clock::time_point t3;
    {
      TQDS_ASSIGN_OR_RETURN(Batch got, client.get_data(meta));
      t3 = Clock::now();
      if (rep == 0) {
        TQDS_RETURN_NOT_OK(Verify(shape, src, put_meta, meta, got).WithContext("verify " + dep.key));
        out->verified = true;
      }
    }  // the fetched batch is freed here, outside the timed part
    auto t4 = Clock::now();
    TQDS_RETURN_NOT_OK(client.clear_partition(partition));
    auto t5 = Clock::now();
    if (rep == 0) continue;
    out->put.push_back(Seconds(t0, t1));
    out->get_meta.push_back(Seconds(t1, t2));
    out->get_data.push_back(Seconds(t2, t3));
    out->clear.push_back(Seconds(t4, t5));
    out->gbps.push_back(2.0 * static_cast<double>(shape.bytes()) / Seconds(t0, t3) / kGB);
  }
  // memcpy of the same bytes, in the same run.
  std::vector<double> pre, fresh;
  // References are ceilings: report the best repetition, which other load on
  // the machine disturbs least (the median is kept in the JSON).
  for (int i = 0; i < 5; ++i) {
    pre.push_back(static_cast<double>(shape.bytes()) / MemcpySeconds(src.buffers, shape.bytes(), true) / kGB);
    fresh.push_back(static_cast<double>(shape.bytes()) / MemcpySeconds(src.buffers, shape.bytes(), false) / kGB);
  }
  out->memcpy_gbps = Summarize(pre).max;
  out->memcpy_median_gbps = Summarize(pre).median;
  out->memcpy_fresh_gbps = Summarize(fresh).max;
  return Status::OK();
}

// -------------------------------------------------------------- controller

// Discards payloads: isolates the controller's share of a put (allocate +
// notify-produced) from storage traffic.
class NullStorage : public tq::StorageManager {
 public:
  std::string name() const override { return "BenchNullStorage"; }
  Status Put(const std::vector<tq::SampleKey>&, const std::vector<std::string>&,
             const std::vector<std::vector<Buffer>>&) override {
    return Status::OK();
  }
  Result<std::vector<std::vector<Buffer>>> Get(const std::vector<tq::SampleKey>& samples,
                                               const std::vector<std::string>& fields,
                                               const std::vector<std::vector<uint64_t>>&) override {
    return std::vector<std::vector<Buffer>>(fields.size(), std::vector<Buffer>(samples.size()));
  }
  Status Delete(const std::vector<tq::SampleKey>&, const std::vector<std::string>&) override { return Status::OK(); }
};

// Tiny metadata-like fields: a 0-d float32 reward and a 0-d int64 length per sample.
Result<Batch> TinyBatch(int64_t n) {
  Batch b(static_cast<size_t>(n));
  std::vector<float> reward(n);
  std::vector<int64_t> len(n);
  for (int64_t i = 0; i < n; ++i) {
    reward[i] = 0.5f * static_cast<float>(i);
    len[i] = 100 + i;
  }
  TQDS_RETURN_NOT_OK(b.AddTensor("reward", tq::DType::kFloat32, {n}, Buffer::Copy(reward.data(), n * 4)));
  TQDS_RETURN_NOT_OK(b.AddTensor("seq_len", tq::DType::kInt64, {n}, Buffer::Copy(len.data(), n * 8)));
  return b;
}

struct PutRate {
  std::string storage;
  int64_t batch = 0, samples = 0;
  double seconds = 0;
  std::vector<double> put_latency;  // seconds per put call
  double rate() const { return seconds > 0 ? static_cast<double>(samples) / seconds : 0; }
  json ToJson() const {
    return {{"storage", storage},
            {"put_batch", batch},
            {"samples", samples},
            {"seconds", seconds},
            {"samples_per_s", rate()},
            {"put_p50_ms", Percentile(put_latency, 0.5) * 1e3},
            {"put_p99_ms", Percentile(put_latency, 0.99) * 1e3}};
  }
};

// Puts `total` samples in batches of `batch` into `partition`.
Status MeasurePuts(tq::TransferQueueClient& client, const std::string& partition, int64_t batch, int64_t total,
                   PutRate* out) {
  TQDS_ASSIGN_OR_RETURN(Batch b, TinyBatch(batch));
  Batch tail;
  if (total % batch) {
    TQDS_ASSIGN_OR_RETURN(tail, TinyBatch(total % batch));
  }
  out->batch = batch;
  out->samples = total;
  auto start = Clock::now();
  for (int64_t done = 0; done < total;) {
    const Batch& cur = total - done >= batch ? b : tail;
    auto t0 = Clock::now();
    TQDS_RETURN_NOT_OK(client.put(cur, partition).status());
    out->put_latency.push_back(Seconds(t0, Clock::now()));
    done += static_cast<int64_t>(cur.batch_size());
  }
  out->seconds = Seconds(start, Clock::now());
  return Status::OK();
}

struct LatencyResult {
  int64_t partition_samples = 0;
  double fill_seconds = 0;
  std::vector<double> latency;  // seconds per get_meta
  double new_task_first_call = 0;
  double clear_seconds = 0;
  double probe_max_during_clear = 0;  // another client's worst get_meta while the clear ran
  double p(double q) const { return Percentile(latency, q) * 1e3; }
  json ToJson() const {
    return {{"partition_samples", partition_samples},
            {"fill_seconds", fill_seconds},
            {"calls", latency.size()},
            {"p50_ms", p(0.5)},
            {"p99_ms", p(0.99)},
            {"max_ms", p(1.0)},
            {"new_task_first_call_ms", new_task_first_call * 1e3},
            {"clear_partition_seconds", clear_seconds},
            {"other_client_max_get_meta_during_clear_ms", probe_max_during_clear * 1e3}};
  }
};

// Fills one partition per size in `sizes`, then times `calls` get_meta
// (fetch, batch 256, sequential sampler) on each, alternating between the
// partitions call by call so that load from elsewhere hits every size alike.
// In each partition a task consumes in order; the next task starts when one
// has consumed it all. Finally clears each partition while another client
// polls, to see whether a big clear stalls other requests.
Status MeasureGetMeta(tq::TransferQueueClient& client, tq::TransferQueueClient& probe,
                      const std::vector<int64_t>& sizes, int calls, std::vector<LatencyResult>* out) {
  const int64_t kBatch = 256;
  const std::vector<std::string> fields = {"reward", "seq_len"};
  auto name = [](int64_t n) { return "latency-" + std::to_string(n); };
  out->assign(sizes.size(), LatencyResult{});
  for (size_t k = 0; k < sizes.size(); ++k) {
    (*out)[k].partition_samples = sizes[k];
    PutRate fill;
    TQDS_RETURN_NOT_OK(MeasurePuts(client, name(sizes[k]), 4096, sizes[k], &fill));
    (*out)[k].fill_seconds = fill.seconds;
  }
  for (int i = 0; i < calls; ++i) {
    for (size_t k = 0; k < sizes.size(); ++k) {
      LatencyResult& l = (*out)[k];
      const int64_t per_task = sizes[k] / kBatch;
      std::string task = "task-" + std::to_string(i / per_task);
      auto t0 = Clock::now();
      TQDS_ASSIGN_OR_RETURN(BatchMeta m, client.get_meta(fields, kBatch, name(sizes[k]), task, {},
                                                         tq::FetchMode::kFetch, std::chrono::seconds(5)));
      l.latency.push_back(Seconds(t0, Clock::now()));
      if (m.size() != static_cast<size_t>(kBatch)) return Status::Invalid("get_meta returned ", m.size(), " samples");
    }
  }
  for (size_t k = 0; k < sizes.size(); ++k) {
    LatencyResult& l = (*out)[k];
    // A fresh task's first call (it sizes the task's consumption vector).
    auto t0 = Clock::now();
    TQDS_RETURN_NOT_OK(client.get_meta(fields, kBatch, name(sizes[k]), "fresh-task", {}, tq::FetchMode::kFetch,
                                       std::chrono::seconds(5))
                           .status());
    l.new_task_first_call = Seconds(t0, Clock::now());
    // Clearing a big partition: does it stall another client's requests? A
    // second client polls a one-sample partition (force_fetch) meanwhile.
    std::atomic<bool> clearing{true};
    double probe_max = 0;
    std::thread prober([&] {
      while (clearing) {
        auto p0 = Clock::now();
        auto r = probe.get_meta(fields, 1, "probe", "", {}, tq::FetchMode::kForceFetch, std::chrono::seconds(0));
        if (!r.ok()) break;
        probe_max = std::max(probe_max, Seconds(p0, Clock::now()));
        std::this_thread::sleep_for(std::chrono::microseconds(200));
      }
    });
    t0 = Clock::now();
    Status st = client.clear_partition(name(sizes[k]));
    l.clear_seconds = Seconds(t0, Clock::now());
    clearing = false;
    prober.join();
    l.probe_max_during_clear = probe_max;
    TQDS_RETURN_NOT_OK(st);
  }
  return Status::OK();
}

struct ControllerResult {
  std::vector<PutRate> puts;
  std::vector<LatencyResult> latency;
};

Status RunController(const Options& opt, ControllerResult* out) {
  tq::RegisterStorageManager("BenchNullStorage", [](const tq::StorageContext&) {
    return Result<std::unique_ptr<tq::StorageManager>>(std::make_unique<NullStorage>());
  });
  // One controller process with 2 embedded units (used only by the
  // SimpleStorageManager put-rate row; the others never touch them).
  TQDS_ASSIGN_OR_RETURN(auto dep, StartTcpEmbedded(2));
  tq::TransferQueueClient null_client("tq-bench-meta", dep->address);
  TQDS_RETURN_NOT_OK(null_client.initialize_storage_manager("BenchNullStorage"));
  tq::TransferQueueClient simple_client("tq-bench-meta-simple", dep->address);
  TQDS_RETURN_NOT_OK(simple_client.initialize_storage_manager("SimpleStorageManager"));

  const int64_t rate_samples = opt.quick ? 65536 : 262144;
  for (int64_t batch : {256, 1024}) {
    PutRate r;
    r.storage = "none (controller only)";
    TQDS_RETURN_NOT_OK(MeasurePuts(null_client, "rate-null-" + std::to_string(batch), batch, rate_samples, &r));
    TQDS_RETURN_NOT_OK(null_client.clear_partition("rate-null-" + std::to_string(batch)));
    out->puts.push_back(r);
  }
  {
    PutRate r;
    r.storage = "SimpleStorageManager (2 units)";
    TQDS_RETURN_NOT_OK(MeasurePuts(simple_client, "rate-simple", 256, rate_samples / 4, &r));
    TQDS_RETURN_NOT_OK(simple_client.clear_partition("rate-simple"));
    out->puts.push_back(r);
  }
  tq::TransferQueueClient probe("tq-bench-probe", dep->address);
  TQDS_RETURN_NOT_OK(probe.initialize_storage_manager("BenchNullStorage"));
  {
    TQDS_ASSIGN_OR_RETURN(Batch one, TinyBatch(1));
    TQDS_RETURN_NOT_OK(probe.put(one, "probe").status());
  }
  const int calls = opt.quick ? 500 : 2000;
  const std::vector<int64_t> sizes = {10000, opt.quick ? 100000 : 1000000};
  TQDS_RETURN_NOT_OK(MeasureGetMeta(null_client, probe, sizes, calls, &out->latency));
  return Status::OK();
}

// ------------------------------------------------------------------- report

struct Target {
  std::string name, target, measured;
  bool pass;
};

std::string Fmt(const char* fmt, double a) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), fmt, a);
  return buf;
}

void PrintCycles(const std::vector<CycleResult>& cycles, double tcp_gbps) {
  std::printf("\n== put -> get_meta -> get_data cycles (times in ms: median [min..max]; GB = 1e9 bytes) ==\n");
  std::printf("%-52s %-28s %-22s %-22s %-22s %-10s %-26s %-8s %-8s %-8s\n", "deployment", "shape", "put ms",
              "get_meta ms", "get_data ms", "clear ms", "cycle GB/s (2B/(put+get))", "memcpy", "x memcpy",
              "x tcp");
  std::printf("(memcpy and tcp: best of their repetitions in this run; x = cycle median / reference)\n");
  for (const auto& c : cycles) {
    auto ms = [](const std::vector<double>& v) {
      Summary s = Summarize(v);
      char buf[64];
      std::snprintf(buf, sizeof(buf), "%.1f [%.1f..%.1f]", s.median * 1e3, s.min * 1e3, s.max * 1e3);
      return std::string(buf);
    };
    Summary g = Summarize(c.gbps);
    char gb[64];
    std::snprintf(gb, sizeof(gb), "%.2f [%.2f..%.2f]", g.median, g.min, g.max);
    std::printf("%-52s %-28s %-22s %-22s %-22s %-10.1f %-26s %-8.2f %-8.2f %-8s\n", c.deployment.c_str(),
                c.shape.c_str(), ms(c.put).c_str(), ms(c.get_meta).c_str(), ms(c.get_data).c_str(),
                Summarize(c.clear).median * 1e3, gb, c.memcpy_gbps, c.ratio(),
                c.cross_process && tcp_gbps > 0 ? Fmt("%.2f", g.median / tcp_gbps).c_str() : "-");
  }
  std::printf("verified: every row's warm-up cycle read back byte-identical data (outside timing)\n");
}

}  // namespace

int main(int argc, char** argv) {
  Options opt;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--quick") {
      opt.quick = true;
    } else if (a == "--json" && i + 1 < argc) {
      opt.json_path = argv[++i];
    } else if (a == "--only" && i + 1 < argc) {
      std::string w = argv[++i];
      opt.run_cycles = w == "cycles";
      opt.run_controller = w == "controller";
    } else if (a == "--reps" && i + 1 < argc) {
      opt.reps = std::max(1, std::atoi(argv[++i]));
    } else if (a == "--filter" && i + 1 < argc) {
      opt.filter = argv[++i];
    } else {
      Usage();
      return a == "--help" || a == "-h" ? 0 : 2;
    }
  }
  const auto started = Clock::now();
  json report;
  report["quick"] = opt.quick;
  report["hardware_threads"] = std::thread::hardware_concurrency();
  report["tq_binary"] = TQ_BINARY;
  std::vector<Target> targets;
  int failures = 0;

  report["load_average_start"] = LoadAverage();
  std::printf("tq_bench%s: %u hardware threads, load average %.2f at start\n", opt.quick ? " --quick" : "",
              std::thread::hardware_concurrency(), LoadAverage());

  if (opt.run_cycles) {
    // Raw loopback TCP: the ceiling for the cross-process cycle (each byte
    // crosses loopback once on put and once on get). Skipped when --filter
    // selects in-process rows only.
    Summary tcp_s;
    const size_t tcp_bytes = opt.quick ? (size_t{256} << 20) : (size_t{1} << 30);
    if (opt.filter.empty() || opt.filter.find("in_process") == std::string::npos) {
      std::vector<double> tcp;
      for (int i = 0; i < 3; ++i) {
        double s = LoopbackTcpSeconds(tcp_bytes);
        if (s > 0) tcp.push_back(static_cast<double>(tcp_bytes) / s / kGB);
      }
      tcp_s = Summarize(tcp);
      std::printf("\n== references ==\nloopback TCP, 1 connection, 2 threads, %zu MiB: best %.2f GB/s (median %.2f, min %.2f)\n",
                  tcp_bytes >> 20, tcp_s.max, tcp_s.median, tcp_s.min);
      report["loopback_tcp"] = {{"bytes", tcp_bytes}, {"gbps", tcp_s.ToJson()}};
    }

    const int big_reps = opt.reps ? opt.reps : opt.quick ? 2 : 5;
    const int small_reps = opt.reps ? opt.reps : opt.quick ? 3 : 10;
    std::vector<CycleShape> shapes = {
        {"1024x9x8192 f32 (288 MiB)", 1024, 9, 8192, big_reps},
        {"1024x9x819 f32 (28.8 MiB)", 1024, 9, 819, small_reps},
    };
    std::vector<CycleResult> cycles;
    using Starter = Result<std::unique_ptr<Deployment>> (*)();
    std::vector<Starter> starters = {
        [] { return StartInProcess(); },
        [] { return StartTcpEmbedded(2); },
        [] { return StartTcpUnits(2); },
    };
    for (auto start : starters) {
      auto dep = start();
      if (!dep.ok()) {
        std::fprintf(stderr, "deployment failed: %s\n", dep.status().ToString().c_str());
        ++failures;
        continue;
      }
      for (const auto& shape : shapes) {
        if (!opt.filter.empty() && (*dep)->key.find(opt.filter) == std::string::npos &&
            shape.name.find(opt.filter) == std::string::npos) {
          continue;
        }
        CycleResult r;
        Status st = RunCycles(**dep, shape, &r);
        if (!st.ok()) {
          std::fprintf(stderr, "%s / %s failed: %s\n", (*dep)->key.c_str(), shape.name.c_str(),
                       st.ToString().c_str());
          ++failures;
          continue;
        }
        r.tcp_gbps = tcp_s.max;
        std::fprintf(stderr, "  done: %s / %s: %.2f GB/s\n", r.deployment_key.c_str(), shape.name.c_str(),
                     Summarize(r.gbps).median);
        cycles.push_back(std::move(r));
      }
    }
    std::printf("\nmemcpy (1 thread, same bytes as the cycle, best of 5):\n");
    for (size_t i = 0; i < cycles.size() && i < shapes.size(); ++i) {
      std::printf("  %-28s prefaulted destination %.2f GB/s, fresh (faulting) destination %.2f GB/s\n",
                  cycles[i].shape.c_str(), cycles[i].memcpy_gbps, cycles[i].memcpy_fresh_gbps);
    }
    PrintCycles(cycles, tcp_s.max);
    json jc = json::array();
    for (const auto& c : cycles) {
      jc.push_back({{"deployment", c.deployment_key},
                    {"description", c.deployment},
                    {"shape", c.shape},
                    {"bytes", c.bytes},
                    {"reps", c.reps},
                    {"verified", c.verified},
                    {"put_s", Summarize(c.put).ToJson()},
                    {"get_meta_s", Summarize(c.get_meta).ToJson()},
                    {"get_data_s", Summarize(c.get_data).ToJson()},
                    {"clear_s", Summarize(c.clear).ToJson()},
                    {"cycle_gbps", Summarize(c.gbps).ToJson()},
                    {"memcpy_best_gbps", c.memcpy_gbps},
                    {"memcpy_median_gbps", c.memcpy_median_gbps},
                    {"memcpy_fresh_best_gbps", c.memcpy_fresh_gbps},
                    {"ratio_to_memcpy", c.ratio()},
                    {"ratio_to_loopback_tcp", c.tcp_gbps > 0 ? Summarize(c.gbps).median / c.tcp_gbps : 0}});
      const double need = c.cross_process ? 0.25 : 0.5;
      targets.push_back({"cycle " + c.deployment_key + " " + c.shape, Fmt(">= %.2f x memcpy", need),
                         Fmt("%.2f x memcpy", c.ratio()), c.ratio() >= need});
    }
    report["cycles"] = jc;
  }

  if (opt.run_controller) {
    ControllerResult cr;
    Status st = RunController(opt, &cr);
    if (!st.ok()) {
      std::fprintf(stderr, "controller scenarios failed: %s\n", st.ToString().c_str());
      ++failures;
    }
    std::printf("\n== controller metadata (controller process over tcp loopback; 2 tiny 0-d fields per sample) ==\n");
    std::printf("%-34s %-10s %-10s %-14s %-12s %-12s\n", "put-notify storage", "put batch", "samples",
                "samples/s", "put p50 ms", "put p99 ms");
    json jp = json::array();
    for (const auto& p : cr.puts) {
      std::printf("%-34s %-10lld %-10lld %-14.0f %-12.3f %-12.3f\n", p.storage.c_str(),
                  static_cast<long long>(p.batch), static_cast<long long>(p.samples), p.rate(),
                  Percentile(p.put_latency, 0.5) * 1e3, Percentile(p.put_latency, 0.99) * 1e3);
      jp.push_back(p.ToJson());
    }
    std::printf("\n%-20s %-14s %-8s %-10s %-10s %-10s %-16s %-10s %-s\n", "get_meta fetch", "fill s (b4096)",
                "calls", "p50 ms", "p99 ms", "max ms", "new task 1st ms", "clear s",
                "other client's max get_meta ms during the clear");
    json jl = json::array();
    for (const auto& l : cr.latency) {
      std::printf("%-20s %-14.2f %-8zu %-10.3f %-10.3f %-10.3f %-16.3f %-10.2f %.1f\n",
                  ("batch 256 @ " + std::to_string(l.partition_samples)).c_str(), l.fill_seconds, l.latency.size(),
                  l.p(0.5), l.p(0.99), l.p(1.0), l.new_task_first_call * 1e3, l.clear_seconds,
                  l.probe_max_during_clear * 1e3);
      jl.push_back(l.ToJson());
    }
    report["controller"] = {{"put_notify", jp}, {"get_meta", jl}};
    if (!cr.puts.empty()) {
      const PutRate& p = cr.puts.front();
      targets.push_back({"controller put-notify (batch 256)", ">= 200000 samples/s",
                         Fmt("%.0f samples/s", p.rate()), p.rate() >= 200000});
    }
    for (const auto& l : cr.latency) {
      targets.push_back({"get_meta p99 @ " + std::to_string(l.partition_samples) + " samples", "< 2 ms",
                         Fmt("%.3f ms", l.p(0.99)), l.p(0.99) < 2.0});
    }
    if (cr.latency.size() == 2) {
      const double small = cr.latency[0].p(0.99), large = cr.latency[1].p(0.99);
      // "Not growing": within 1.5x or 0.2 ms of the small partition's p99 (noise allowance).
      const bool flat = large <= std::max(1.5 * small, small + 0.2);
      targets.push_back({"get_meta p99 growth " + std::to_string(cr.latency[0].partition_samples) + " -> " +
                             std::to_string(cr.latency[1].partition_samples),
                         "not growing (<= max(1.5x, +0.2 ms))", Fmt("%.2fx", large / std::max(small, 1e-9)),
                         flat});
    }
  }

  std::printf("\n== targets (issue 2, 2-core machine) ==\n");
  json jt = json::array();
  for (const auto& t : targets) {
    std::printf("%-62s %-40s %-22s %s\n", t.name.c_str(), t.target.c_str(), t.measured.c_str(),
                t.pass ? "PASS" : "MISS");
    jt.push_back({{"name", t.name}, {"target", t.target}, {"measured", t.measured}, {"pass", t.pass}});
  }
  report["targets"] = jt;
  report["failures"] = failures;
  report["wall_seconds"] = Seconds(started, Clock::now());
  report["load_average_end"] = LoadAverage();
  std::printf("\nwall time %.1f s, load average %.2f at end (above ~1 means other work shared the cores)%s\n",
              Seconds(started, Clock::now()), LoadAverage(),
              failures ? ", with failures (see stderr)" : "");
  if (!opt.json_path.empty()) {
    std::ofstream f(opt.json_path);
    f << report.dump(2) << "\n";
    if (!f) {
      std::fprintf(stderr, "cannot write %s\n", opt.json_path.c_str());
      return 1;
    }
    std::printf("JSON written to %s\n", opt.json_path.c_str());
  }
  return failures ? 1 : 0;
}
