// Multi-process integration: a `tq controller`, two `tq storage-unit`s, four
// producer and three consumer processes (two share task "train", one runs
// task "reward") over 50k samples. Each task must see every sample exactly
// once, byte-identical.
#include <gtest/gtest.h>
#include <signal.h>
#include <stdlib.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <random>
#include <thread>
#include <string>
#include <vector>

#include "common/process.h"
#include "common/subprocess.h"
#include "common/test_util.h"
#include "common/wire/rpc.h"
#include "queue/integration_payload.h"
#include "tq/client.h"

#ifndef TQ_BINARY
#error "TQ_BINARY must name the tq executable"
#endif
#ifndef TQ_INTEGRATION_WORKER
#error "TQ_INTEGRATION_WORKER must name the worker executable"
#endif

namespace tq {
namespace {

using namespace std::chrono_literals;
using tqds::ChildProcess;
using tqds::testing::TempDir;

constexpr int64_t kSamples = 50000;
constexpr int kProducers = 4;
constexpr int64_t kPutBatch = 500;
constexpr int64_t kConsumerBatch = 384;  // does not divide the total: the tail comes by poll
const char* kPartition = "rollout";

// Starts a service and returns its endpoint from its readiness line.
Result<std::string> StartService(std::vector<ChildProcess>& procs, const std::vector<std::string>& argv) {
  TQDS_ASSIGN_OR_RETURN(ChildProcess p, ChildProcess::Spawn(argv));
  TQDS_ASSIGN_OR_RETURN(std::string line, p.WaitForLine("listening on tcp://", 30s));
  procs.push_back(std::move(p));
  return line.substr(line.find("tcp://"));
}

std::vector<std::string> ReadLines(const std::string& path) {
  std::vector<std::string> out;
  std::ifstream f(path);
  for (std::string line; std::getline(f, line);) out.push_back(line);
  return out;
}

struct PipelineShape {
  int64_t samples = kSamples;
  int64_t put_batch = kPutBatch;
  int64_t consumer_batch = kConsumerBatch;
};

// Runs four producers and three consumers (two share task "train", one runs
// "reward") against the controller at `ctl`, calls `meanwhile` while they run
// (it returns when it is done with them), and checks that each task saw each
// sample exactly once, byte-identical, and that the controller agrees.
void RunPipeline(const std::string& ctl, const TempDir& dir, const PipelineShape& shape,
                 const std::function<void(const std::function<bool()>& running)>& meanwhile = nullptr) {
  auto t0 = std::chrono::steady_clock::now();
  struct Worker {
    std::string name;
    ChildProcess proc;
    std::string out;  // consumers only
  };
  std::vector<Worker> workers;
  const std::vector<std::string> consumer_tasks = {"train", "train", "reward"};
  for (size_t i = 0; i < consumer_tasks.size(); ++i) {
    std::string out = dir.path() + "/consumer" + std::to_string(i) + "-" + consumer_tasks[i] + ".txt";
    ASSERT_OK_AND_ASSIGN(ChildProcess p, ChildProcess::Spawn({TQ_INTEGRATION_WORKER, "consumer", ctl, kPartition,
                                                              consumer_tasks[i], std::to_string(shape.consumer_batch),
                                                              std::to_string(shape.samples), out}));
    workers.push_back({"consumer " + std::to_string(i) + " (" + consumer_tasks[i] + ")", std::move(p), out});
  }
  const int64_t per_producer = shape.samples / kProducers;
  for (int i = 0; i < kProducers; ++i) {
    ASSERT_OK_AND_ASSIGN(ChildProcess p,
                         ChildProcess::Spawn({TQ_INTEGRATION_WORKER, "producer", ctl, kPartition,
                                              std::to_string(i * per_producer), std::to_string(per_producer),
                                              std::to_string(shape.put_batch)}));
    workers.push_back({"producer " + std::to_string(i), std::move(p), ""});
  }
  if (meanwhile) {
    meanwhile([&] {
      for (auto& w : workers) {
        if (w.proc.running()) return true;
      }
      return false;
    });
  }
  for (auto& w : workers) {
    auto code = w.proc.Wait(120s);
    ASSERT_TRUE(code.ok()) << w.name << ": " << code.status().ToString();
    ASSERT_EQ(*code, 0) << w.name << " failed (its stderr is above)";
  }
  double secs = tqds::testing::SecondsSince(t0);
  std::printf("integration: %lld samples through %d producers and %zu consumers in %.2f s\n",
              static_cast<long long>(shape.samples), kProducers, consumer_tasks.size(), secs);

  // Each task saw each sample exactly once, with the bytes its uid implies.
  std::map<std::string, std::vector<int>> seen;
  std::map<std::string, int64_t> corrupt;
  std::vector<size_t> per_consumer;
  for (size_t i = 0; i < consumer_tasks.size(); ++i) {
    auto lines = ReadLines(workers[i].out);
    per_consumer.push_back(lines.size());
    auto& s = seen[consumer_tasks[i]];
    s.resize(shape.samples, 0);
    for (const auto& line : lines) {
      int64_t uid = std::atoll(line.c_str());
      ASSERT_GE(uid, 0) << line;
      ASSERT_LT(uid, shape.samples) << line;
      ++s[uid];
      if (line != itest::ExpectedLine(uid)) {
        if (corrupt[consumer_tasks[i]]++ < 5) ADD_FAILURE() << "corrupt sample: got '" << line << "' expected '" << itest::ExpectedLine(uid) << "'";
      }
    }
  }
  for (const auto& [task, counts] : seen) {
    int64_t missing = 0, dup = 0;
    for (int c : counts) {
      missing += c == 0;
      dup += c > 1;
    }
    std::printf("integration: task %s: %lld lost, %lld duplicated\n", task.c_str(), static_cast<long long>(missing),
                static_cast<long long>(dup));
    EXPECT_EQ(missing, 0) << "task " << task << " never saw " << missing << " samples";
    EXPECT_EQ(dup, 0) << "task " << task << " saw " << dup << " samples more than once";
    EXPECT_EQ(corrupt[task], 0) << "task " << task;
  }
  EXPECT_EQ(per_consumer[0] + per_consumer[1], static_cast<size_t>(shape.samples));
  EXPECT_EQ(per_consumer[2], static_cast<size_t>(shape.samples));

  // The controller agrees.
  TransferQueueClient c("checker", ctl);
  ASSERT_OK(c.initialize_storage_manager("SimpleStorageManager"));
  ASSERT_OK_AND_ASSIGN(auto ps, c.get_production_status(kPartition));
  EXPECT_EQ(ps.num_samples, static_cast<size_t>(shape.samples));
  EXPECT_EQ(ps.produced["response"], static_cast<size_t>(shape.samples));
  for (const std::string task : {"train", "reward"}) {
    ASSERT_OK_AND_ASSIGN(auto cs, c.get_consumption_status(kPartition, task));
    EXPECT_EQ(cs.consumed, static_cast<size_t>(shape.samples)) << task;
  }
}

// A clear through `ctl` empties every unit.
void ClearAndExpectUnitsEmpty(const std::string& ctl, const std::vector<std::string>& units) {
  TransferQueueClient c("clearer", ctl);
  ASSERT_OK(c.initialize_storage_manager("SimpleStorageManager"));
  ASSERT_OK(c.clear_partition(kPartition));
  for (const auto& u : units) {
    ASSERT_OK_AND_ASSIGN(auto rpc, tqds::wire::RpcClient::Connect(u));
    ASSERT_OK_AND_ASSIGN(auto rep, rpc->CallSync(tqds::wire::Message(tqds::wire::MsgType::kUnitStats, 0), 10s));
    ASSERT_OK_AND_ASSIGN(auto rd, tqds::wire::MapReader::Of(rep.body(), "UnitStats"));
    ASSERT_OK_AND_ASSIGN(uint64_t keys, rd.Get<uint64_t>("keys"));
    EXPECT_EQ(keys, 0u) << u;
  }
}

TEST(IntegrationTest, MultiProcessPipelineDeliversEverySampleOncePerTask) {
  TempDir dir("tq-itest");
  ASSERT_FALSE(dir.path().empty());
  std::vector<ChildProcess> services;
  ASSERT_OK_AND_ASSIGN(std::string ctl, StartService(services, {TQ_BINARY, "controller", "--port", "0"}));
  std::vector<std::string> units;
  for (int i = 0; i < 2; ++i) {
    ASSERT_OK_AND_ASSIGN(std::string unit, StartService(services, {TQ_BINARY, "storage-unit", "--port", "0",
                                                                   "--controller", ctl, "--capacity-mb", "1024"}));
    units.push_back(unit);
  }
  RunPipeline(ctl, dir, PipelineShape{});
  ClearAndExpectUnitsEmpty(ctl, units);
  // Services stop cleanly on SIGTERM.
  for (auto& s : services) EXPECT_EQ(s.Stop(), 0);
}

// The same pipeline while its controller (with --state-dir) is killed with
// SIGKILL at random moments and started again on the same directory and
// port: the clients resend by themselves, and still no sample is lost or
// seen twice by a task.
TEST(IntegrationTest, ControllerKilledAtRandomResumesFromItsStateDirExactlyOnce) {
  TempDir dir("tq-wal");
  ASSERT_FALSE(dir.path().empty());
  const int port = tqds::testing::FreePort();
  const std::vector<std::string> ctl_argv = {TQ_BINARY, "controller", "--port", std::to_string(port),
                                             "--state-dir", dir.path() + "/state"};
  std::vector<ChildProcess> units_procs;
  std::vector<ChildProcess> ctl_procs;  // the current one last
  ASSERT_OK_AND_ASSIGN(std::string ctl, StartService(ctl_procs, ctl_argv));
  std::vector<std::string> units;
  for (int i = 0; i < 2; ++i) {
    ASSERT_OK_AND_ASSIGN(std::string unit, StartService(units_procs, {TQ_BINARY, "storage-unit", "--port", "0",
                                                                      "--controller", ctl, "--capacity-mb", "1024"}));
    units.push_back(unit);
  }
  std::mt19937 rng(std::random_device{}());
  int kills = 0;
  RunPipeline(ctl, dir, PipelineShape{40000, 100, 64}, [&](const std::function<bool()>& running) {
    while (running() && kills < 5) {
      // A random moment in the run; the pipeline itself is the load.
      std::this_thread::sleep_for(std::chrono::milliseconds(150 + rng() % 600));
      if (!running()) break;
      ChildProcess& c = ctl_procs.back();
      ASSERT_EQ(::kill(c.pid(), SIGKILL), 0);
      ASSERT_OK_AND_ASSIGN(int code, c.Wait(10s));
      EXPECT_EQ(code, 128 + SIGKILL);
      ++kills;
      ASSERT_OK_AND_ASSIGN(ChildProcess again, ChildProcess::Spawn(ctl_argv));
      ASSERT_OK_AND_ASSIGN(std::string ready, again.WaitForLine("listening on tcp://", 30s));
      EXPECT_NE(ready.find(std::to_string(port)), std::string::npos) << ready;
      ctl_procs.push_back(std::move(again));
    }
  });
  std::printf("integration: the controller was killed with SIGKILL %d times\n", kills);
  EXPECT_GE(kills, 1) << "the pipeline ended before the first kill: nothing was tested";
  ClearAndExpectUnitsEmpty(ctl, units);
  for (auto& s : units_procs) EXPECT_EQ(s.Stop(), 0);
  EXPECT_EQ(ctl_procs.back().Stop(), 0);
}

// The state directory stops taking writes (a file-size limit, as a full
// disk would): the change whose journal append failed is not confirmed, the
// controller writes a fresh base, and the client's resend gets the answer;
// no call fails, and the state survives a SIGKILL afterwards.
TEST(IntegrationTest, AStateDirThatStopsTakingWritesRecoversWithoutALostChange) {
  TempDir dir("tq-efbig");
  ASSERT_FALSE(dir.path().empty());
  const int port = tqds::testing::FreePort();
  // 96 KiB per file: the base (a few KiB here) fits, the journal soon does not.
  const std::vector<std::string> argv = {"prlimit", "--fsize=98304", TQ_BINARY, "controller", "--port",
                                         std::to_string(port), "--storage-units", "1", "--state-dir",
                                         dir.path() + "/state"};
  std::vector<ChildProcess> ctl;
  ASSERT_OK_AND_ASSIGN(std::string address, StartService(ctl, argv));
  TransferQueueClient c("meta-writer", address);
  ASSERT_OK(c.initialize_storage_manager("SimpleStorageManager"));
  ASSERT_OK_AND_ASSIGN(BatchMeta meta, c.allocate("p", 10));
  const std::string blob(4096, 'b');
  // 60 rounds of 10 x 4 KiB of custom meta: about 2.4 MiB of journal for a
  // state that stays near 40 KiB.
  for (int round = 0; round < 60; ++round) {
    std::vector<SampleMeta> samples = meta.samples();
    for (auto& s : samples) s.custom = {{"round", MetaValue(int64_t{round})}, {"blob", MetaValue(blob)}};
    Status st = c.set_custom_meta(BatchMeta({}, samples));
    ASSERT_TRUE(st.ok()) << "round " << round << ": " << st.ToString();
  }
  ASSERT_OK_AND_ASSIGN(BatchMeta got, c.get_custom_meta("p", meta.global_indexes()));
  for (const auto& s : got.samples()) EXPECT_EQ(s.custom.at("round"), MetaValue(int64_t{59}));
  // Each failed append was followed by a fresh base and segment: the base's
  // segment number (bytes 16-23) counts them (1 is the start's own).
  std::ifstream base(dir.path() + "/state/base", std::ios::binary);
  char header[24] = {};
  ASSERT_TRUE(base.read(header, sizeof(header)));
  uint64_t segment = 0;
  for (int i = 0; i < 8; ++i) segment |= uint64_t{static_cast<uint8_t>(header[16 + i])} << (8 * i);
  std::printf("integration: the journal hit the file-size limit and was written anew %llu times\n",
              static_cast<unsigned long long>(segment - 1));
  EXPECT_GE(segment, 10u);

  ASSERT_EQ(::kill(ctl.back().pid(), SIGKILL), 0);
  ASSERT_OK_AND_ASSIGN(int code, ctl.back().Wait(10s));
  EXPECT_EQ(code, 128 + SIGKILL);
  ctl.clear();
  ASSERT_OK_AND_ASSIGN(std::string again, StartService(ctl, argv));
  ASSERT_OK_AND_ASSIGN(BatchMeta after, c.get_custom_meta("p", meta.global_indexes()));
  for (const auto& s : after.samples()) EXPECT_EQ(s.custom.at("round"), MetaValue(int64_t{59}));
  EXPECT_EQ(ctl.back().Stop(), 0);
}

}  // namespace
}  // namespace tq
