// Multi-process integration: a `tq controller`, two `tq storage-unit`s, four
// producer and three consumer processes (two share task "train", one runs
// task "reward") over 50k samples. Each task must see every sample exactly
// once, byte-identical.
#include <gtest/gtest.h>
#include <stdlib.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
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
    ASSERT_OK_AND_ASSIGN(ChildProcess p,
                         ChildProcess::Spawn({TQ_INTEGRATION_WORKER, "consumer", ctl, kPartition, consumer_tasks[i],
                                              std::to_string(kConsumerBatch), std::to_string(kSamples), out}));
    workers.push_back({"consumer " + std::to_string(i) + " (" + consumer_tasks[i] + ")", std::move(p), out});
  }
  const int64_t per_producer = kSamples / kProducers;
  for (int i = 0; i < kProducers; ++i) {
    ASSERT_OK_AND_ASSIGN(ChildProcess p,
                         ChildProcess::Spawn({TQ_INTEGRATION_WORKER, "producer", ctl, kPartition,
                                              std::to_string(i * per_producer), std::to_string(per_producer),
                                              std::to_string(kPutBatch)}));
    workers.push_back({"producer " + std::to_string(i), std::move(p), ""});
  }
  for (auto& w : workers) {
    auto code = w.proc.Wait(90s);
    ASSERT_TRUE(code.ok()) << w.name << ": " << code.status().ToString();
    ASSERT_EQ(*code, 0) << w.name << " failed (its stderr is above)";
  }
  double secs = tqds::testing::SecondsSince(t0);
  std::printf("integration: %lld samples through %d producers and %zu consumers in %.2f s\n",
              static_cast<long long>(kSamples), kProducers, consumer_tasks.size(), secs);

  // Each task saw each sample exactly once, with the bytes its uid implies.
  std::map<std::string, std::vector<int>> seen;
  std::map<std::string, int64_t> corrupt;
  std::vector<size_t> per_consumer;
  for (size_t i = 0; i < consumer_tasks.size(); ++i) {
    auto lines = ReadLines(workers[i].out);
    per_consumer.push_back(lines.size());
    auto& s = seen[consumer_tasks[i]];
    s.resize(kSamples, 0);
    for (const auto& line : lines) {
      int64_t uid = std::atoll(line.c_str());
      ASSERT_GE(uid, 0) << line;
      ASSERT_LT(uid, kSamples) << line;
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
    EXPECT_EQ(missing, 0) << "task " << task << " never saw " << missing << " samples";
    EXPECT_EQ(dup, 0) << "task " << task << " saw " << dup << " samples more than once";
    EXPECT_EQ(corrupt[task], 0) << "task " << task;
  }
  EXPECT_EQ(per_consumer[0] + per_consumer[1], static_cast<size_t>(kSamples));
  EXPECT_EQ(per_consumer[2], static_cast<size_t>(kSamples));

  // The controller agrees, and a clear empties both units.
  TransferQueueClient c("checker", ctl);
  ASSERT_OK(c.initialize_storage_manager("SimpleStorageManager"));
  ASSERT_OK_AND_ASSIGN(auto ps, c.get_production_status(kPartition));
  EXPECT_EQ(ps.num_samples, static_cast<size_t>(kSamples));
  EXPECT_EQ(ps.produced["response"], static_cast<size_t>(kSamples));
  for (const std::string task : {"train", "reward"}) {
    ASSERT_OK_AND_ASSIGN(auto cs, c.get_consumption_status(kPartition, task));
    EXPECT_EQ(cs.consumed, static_cast<size_t>(kSamples)) << task;
  }
  ASSERT_OK(c.clear_partition(kPartition));
  for (const auto& u : units) {
    ASSERT_OK_AND_ASSIGN(auto rpc, tqds::wire::RpcClient::Connect(u));
    ASSERT_OK_AND_ASSIGN(auto rep, rpc->CallSync(tqds::wire::Message(tqds::wire::MsgType::kUnitStats, 0), 10s));
    ASSERT_OK_AND_ASSIGN(auto rd, tqds::wire::MapReader::Of(rep.body(), "UnitStats"));
    ASSERT_OK_AND_ASSIGN(uint64_t keys, rd.Get<uint64_t>("keys"));
    EXPECT_EQ(keys, 0u) << u;
  }
  // Services stop cleanly on SIGTERM.
  for (auto& s : services) EXPECT_EQ(s.Stop(), 0);
}

}  // namespace
}  // namespace tq
