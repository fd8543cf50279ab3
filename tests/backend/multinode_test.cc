// The seed's multi-node flow (its Appendix B) in C++, with two network
// namespaces standing in for the head node A (10.220.0.1) and the work node B
// (10.220.0.2), joined by one veth pair that this test creates and deletes.
// On A: etcd, a datasystem worker (`dscli start -w --worker_address
// 10.220.0.1:31501 --etcd_address 10.220.0.1:2379`), the controller (`tq
// controller --host 10.220.0.1`); on B: a worker pointed at A's etcd. A writer
// process on A uses A's worker, a reader process on B uses B's worker, and
// the reader gets identical data (ragged float tensors, strings, one 64 MiB
// sample). Then 3 consumer processes over two tasks on both nodes read every
// sample exactly once through the datasystem backend.
//
// Needs root and `ip netns` (and etcd-server); skipped with the reason
// otherwise. Every process is killed by pid and both namespaces are deleted
// in teardown, also when a test fails; namespaces left by a crashed earlier
// run (the owning pid is gone) are removed at start.
//
// This binary is also the writer/reader: `multinode_test --role write|read
// CONTROLLER CONFIG_JSON PARTITION`.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "common/netns.h"
#include "consumer_output.h"
#include "common/process.h"
#include "tq/client.h"

namespace tq {
namespace {

using testing::Collect;
using testing::Seen;
using testing::WaitUntilReady;
// How long a consumer may stay silent before its output is judged.
constexpr std::chrono::seconds kQuiet{40};

using Clock = std::chrono::steady_clock;
constexpr const char* kIp = tqds::testing::kIpBin;
constexpr const char* kEtcd = "/usr/bin/etcd";
const std::string kIpA = "10.220.0.1", kIpB = "10.220.0.2";
constexpr int kWorkerPort = 31501, kEtcdPort = 2379;
const std::string kPrefix = "tqmn";  // namespaces: tqmn<pid>a, tqmn<pid>b

// ------------------------------------------------------------ the roles

// Sample `uid`'s payloads are functions of the uid, so the reader checks
// every byte without a side channel. Sample 0's "big" field is 64 MiB.
constexpr int64_t kSamples = 4;
constexpr int64_t kBigFloats = 16LL << 20;  // 64 MiB of float32

Value Ragged(int64_t uid) {
  int64_t len = 3 + uid * 37;
  std::vector<float> v(static_cast<size_t>(len));
  for (int64_t j = 0; j < len; ++j)
    v[j] = static_cast<float>(uid) * 1000.0f + static_cast<float>(j) * 0.5f;
  return Value::Tensor(DType::kFloat32, {len}, Buffer::Copy(v.data(), v.size() * 4)).MoveValue();
}
Value Big(int64_t uid) {
  int64_t len = uid == 0 ? kBigFloats : 1000 + uid;
  auto mb = tqds::MutableBuffer::Allocate(static_cast<size_t>(len) * 4).MoveValue();
  auto* w = reinterpret_cast<uint32_t*>(mb.mutable_data());
  for (int64_t j = 0; j < len; ++j)
    w[j] = static_cast<uint32_t>(j * 2654435761u) ^ static_cast<uint32_t>(uid);
  return Value::Tensor(DType::kFloat32, {len}, std::move(mb).Freeze()).MoveValue();
}
std::string Prompt(int64_t uid) {
  return "prompt-" + std::to_string(uid) + std::string(static_cast<size_t>(uid), '!');
}

Batch Expected(const std::vector<int64_t>& uids) {
  Batch b(uids.size());
  Column uid, ragged, prompt, big;
  for (int64_t u : uids) {
    uid.push_back(Value::Tensor(DType::kInt64, {}, Buffer::Copy(&u, 8)).MoveValue());
    ragged.push_back(Ragged(u));
    prompt.push_back(Value::String(Prompt(u)));
    big.push_back(Big(u));
  }
  (void)b.AddField("uid", uid);
  (void)b.AddField("text", ragged);
  (void)b.AddField("prompt", prompt);
  (void)b.AddField("big", big);
  return b;
}

int RoleDie(const std::string& what, const Status& st) {
  std::printf("ERR %s: %s\n", what.c_str(), st.ToString().c_str());
  return 1;
}

int RoleMain(const std::string& role, const std::string& controller, const std::string& config,
             const std::string& partition) {
  Config cfg = Config::parse(config);
  TransferQueueClient client(role == "write" ? "writer" : "reader", controller);
  if (auto st = client.initialize_storage_manager(cfg.value("manager_type", ""), cfg); !st.ok()) {
    return RoleDie("init", st);
  }
  std::vector<int64_t> uids;
  for (int64_t u = 0; u < kSamples; ++u) uids.push_back(u);
  if (role == "write") {
    auto put = client.put(Expected(uids), partition);
    if (!put.ok()) return RoleDie("put", put.status());
    std::printf("PUT %zu\n", put->size());
    return 0;
  }
  auto meta =
      client.get_meta({"uid", "text", "prompt", "big"}, kSamples, partition, "generate_sequences",
                      {}, FetchMode::kFetch, std::chrono::seconds(20));
  if (!meta.ok()) return RoleDie("get_meta", meta.status());
  auto data = client.get_data(*meta);
  if (!data.ok()) return RoleDie("get_data", data.status());
  std::vector<int64_t> got;
  for (const Value& v : **data->Get("uid")) got.push_back(*v.as<int64_t>());
  size_t bytes = 0;
  for (const auto& name : data->keys()) {
    for (const Value& v : **data->Get(name)) bytes += v.nbytes();
  }
  if (!data->Equals(Expected(got)))
    return std::printf("ERR data differs from what was written\n"), 1;
  if (std::set<int64_t>(got.begin(), got.end()) != std::set<int64_t>(uids.begin(), uids.end())) {
    return std::printf("ERR read other samples than were written\n"), 1;
  }
  std::printf("IDENTICAL %zu samples %zu bytes\n", got.size(), bytes);
  // Nothing is left for this task: each sample is read once.
  auto again = client.get_meta({"uid"}, 1, partition, "generate_sequences", {}, FetchMode::kPoll);
  if (!again.ok() || !again->empty())
    return std::printf("ERR a second get_meta returned samples\n"), 1;
  return 0;
}

// ------------------------------------------------------------ the fixture

using tqds::testing::InNetns;
using tqds::testing::RunProgram;
using tqds::testing::RunResult;

// A worker started by `dscli start` inside a namespace; `dscli stop` and then
// SIGKILL of its pid (from the pid file) at the end.
class NsWorker {
 public:
  NsWorker(std::string ns, std::string ip, std::string dir)
      : ns_(std::move(ns)), ip_(std::move(ip)), dir_(std::move(dir)) {}
  ~NsWorker() { Stop(); }
  std::string address() const { return ip_ + ":" + std::to_string(kWorkerPort); }
  // "" once started; retries while etcd is still coming up.
  std::string Start(const std::string& etcd) {
    std::filesystem::create_directories(dir_);
    RunResult r;
    auto deadline = Clock::now() + std::chrono::seconds(20);
    do {
      r = RunProgram(InNetns(ns_, {DSCLI_BIN, "start", "-w", "--worker_address", address(),
                                   "--etcd_address", etcd, "--unix_socket_dir", dir_,
                                   "--shared_memory_size_mb", "512", "--node_timeout_s", "2"}));
      if (r.code == 0) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(300));
    } while (Clock::now() < deadline);
    std::ifstream(dir_ + "/datasystem_worker_" + ip_ + "_" + std::to_string(kWorkerPort) + ".pid") >> pid_;
    return r.code == 0 ? "" : "dscli start " + address() + " failed: " + r.output;
  }
  void Stop() {
    if (pid_ <= 0) return;
    (void)RunProgram(
        InNetns(ns_, {"/usr/bin/timeout", "20", DSCLI_BIN, "stop", "--worker_address", address()}));
    ::kill(pid_, SIGKILL);  // no-op when the stop worked
    pid_ = -1;
  }
  pid_t pid() const { return pid_; }

 private:
  std::string ns_, ip_, dir_;
  pid_t pid_ = -1;
};

class MultiNodeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root to create network namespaces (ip netns)";
    if (::access(kIp, X_OK) != 0) GTEST_SKIP() << "iproute2 (" << kIp << ") is not installed";
    if (::access(kEtcd, X_OK) != 0) GTEST_SKIP() << "etcd (etcd-server) is not installed";
    std::string why = net_.Build();
    if (!why.empty()) GTEST_SKIP() << why;
    ASSERT_TRUE(keys_.status().ok()) << keys_.status().ToString();
    char tmpl[] = "/tmp/tqmn_XXXXXX";
    dir_ = ::mkdtemp(tmpl);
    // etcd on A, as the seed's Appendix B starts it.
    const std::string curl = "http://" + etcd(), purl = "http://" + kIpA + ":2380";
    auto e = tqds::ChildProcess::Spawn(InNetns(
        net_.a(), {"/bin/sh", "-c",
                   std::string("exec ") + kEtcd + " --name etcd-single --data-dir " + dir_ +
                       "/etcd" + " --listen-client-urls " + curl + " --advertise-client-urls " +
                       curl + " --listen-peer-urls " + purl + " --initial-advertise-peer-urls " +
                       purl + " --initial-cluster etcd-single=" + purl + " --log-level error >" +
                       dir_ + "/etcd.log 2>&1"}));
    ASSERT_TRUE(e.ok()) << e.status().ToString();
    etcd_ = std::move(*e);
    worker_a_ = std::make_unique<NsWorker>(net_.a(), kIpA, dir_ + "/wa");
    ASSERT_EQ(worker_a_->Start(etcd()), "");
    worker_b_ = std::make_unique<NsWorker>(net_.b(), kIpB, dir_ + "/wb");
    ASSERT_EQ(worker_b_->Start(etcd()), "");
    // The controller on A, metadata only (no simple storage units).
    auto c = tqds::ChildProcess::Spawn(InNetns(
        net_.a(), {TQ_BIN, "controller", "--host", kIpA, "--port", "0", "--storage-units", "0"}));
    ASSERT_TRUE(c.ok()) << c.status().ToString();
    controller_ = std::move(*c);
    auto line = controller_.WaitForLine("controller listening on", std::chrono::seconds(20));
    ASSERT_TRUE(line.ok()) << line.status().ToString();
    controller_address_ = line->substr(line->find("tcp://"));
    while (!controller_address_.empty() &&
           std::isspace(static_cast<unsigned char>(controller_address_.back()))) {
      controller_address_.pop_back();
    }
    ASSERT_EQ(controller_address_.rfind("tcp://" + kIpA + ":", 0), 0u) << controller_address_;
  }

  void TearDown() override {
    // Every process by pid, then the namespaces (net_'s destructor; also here
    // so that the order holds whatever the members' order).
    for (auto* procs : {&roles_}) {
      for (auto& p : *procs) p.Stop(SIGKILL, std::chrono::seconds(5));
      procs->clear();
    }
    controller_.Stop(SIGTERM, std::chrono::seconds(5));
    if (worker_b_) worker_b_->Stop();
    if (worker_a_) worker_a_->Stop();
    etcd_.Stop(SIGKILL, std::chrono::seconds(5));
    net_.Remove();
    if (!dir_.empty()) {
      std::error_code ec;
      std::filesystem::remove_all(dir_, ec);
    }
  }

  std::string etcd() const { return kIpA + ":" + std::to_string(kEtcdPort); }
  static std::string Config(const std::string& ip) {
    return tq::Config{{"manager_type", "YuanrongStorageManager"},
                      {"client_name", "YuanrongStorageClient"},
                      {"host", ip},
                      {"port", kWorkerPort}}
        .dump();
  }
  // Starts `argv` (a program of ours) inside namespace `ns`; owned by the fixture.
  tqds::ChildProcess& Start(const std::string& ns, std::vector<std::string> argv) {
    auto p = tqds::ChildProcess::Spawn(InNetns(ns, std::move(argv)));
    EXPECT_TRUE(p.ok()) << p.status().ToString();
    roles_.push_back(p.ok() ? std::move(*p) : tqds::ChildProcess());
    return roles_.back();
  }
  // Runs one of this binary's roles to completion; returns its output.
  std::string Role(const std::string& ns, const std::string& role, const std::string& ip,
                   const std::string& partition) {
    std::string self = tqds::SelfExecutable();
    auto r = RunProgram(InNetns(ns, {"/usr/bin/timeout", "60", self, "--role", role,
                                     controller_address_, Config(ip), partition}));
    return r.output + (r.code == 0 ? "" : "(exit " + std::to_string(r.code) + ")");
  }
  // Declared first: undone last. The namespaces' addresses are not loopback,
  // so every process authenticates with these keys.
  tqds::testing::ScopedCurveKeys keys_;
  tqds::testing::TwoNodeNet net_{kPrefix, kIpA, kIpB};
  std::string dir_;
  tqds::ChildProcess etcd_, controller_;
  std::unique_ptr<NsWorker> worker_a_, worker_b_;
  std::deque<tqds::ChildProcess> roles_;  // deque: references stay valid
  std::string controller_address_;
};

// Appendix B: the writer on the head node (A's worker), the reader on the
// work node (B's worker); the reader gets identical data.
TEST_F(MultiNodeTest, WriterOnHeadReaderOnWorkNodeGetIdenticalData) {
  auto t0 = Clock::now();
  std::string w = Role(net_.a(), "write", kIpA, "train_0");
  ASSERT_NE(w.find("PUT 4\n"), std::string::npos) << w;
  std::string r = Role(net_.b(), "read", kIpB, "train_0");
  EXPECT_NE(r.find("IDENTICAL 4 samples "), std::string::npos) << r;
  // 64 MiB + the small ones crossed from A's worker to B's.
  std::smatch m;
  ASSERT_TRUE(std::regex_search(r, m, std::regex("samples (\\d+) bytes")));
  EXPECT_GT(std::stoull(m[1]), static_cast<uint64_t>(kBigFloats * 4));
  EXPECT_LT(Clock::now() - t0, std::chrono::seconds(30));
}

// The other direction: written through B's worker, read through A's.
TEST_F(MultiNodeTest, WriterOnWorkNodeReaderOnHead) {
  std::string w = Role(net_.b(), "write", kIpB, "train_1");
  ASSERT_NE(w.find("PUT 4\n"), std::string::npos) << w;
  std::string r = Role(net_.a(), "read", kIpA, "train_1");
  EXPECT_NE(r.find("IDENTICAL 4 samples "), std::string::npos) << r;
}

// 2 producers (one per node) and 3 consumers: task "train" on A and on B,
// task "reward" on B. Each task reads every sample exactly once, byte-checked.
TEST_F(MultiNodeTest, ThreeConsumerProcessesTwoTasksAcrossNodes) {
  const int64_t per_producer = 1500, total = 2 * per_producer;
  struct Where {
    std::string ns, ip;
  };
  const Where a{net_.a(), kIpA}, b{net_.b(), kIpB};
  std::vector<tqds::ChildProcess*> consumers;
  for (auto [where, task] :
       {std::pair{a, "train"}, std::pair{b, "train"}, std::pair{b, "reward"}}) {
    consumers.push_back(
        &Start(where.ns, {TQ_ROLE_BIN, "consume", controller_address_, Config(where.ip), "part",
                          task, std::to_string(total), "64"}));
  }
  auto ready = WaitUntilReady(consumers);
  ASSERT_TRUE(ready.ok()) << ready.ToString();
  std::vector<tqds::ChildProcess*> producers;
  int i = 0;
  for (const Where& where : {a, b}) {
    producers.push_back(&Start(
        where.ns, {TQ_ROLE_BIN, "produce", controller_address_, Config(where.ip), "part",
                   std::to_string(i++ * per_producer), std::to_string(per_producer), "100"}));
  }
  for (auto* p : producers) {
    auto done = p->WaitForLine("done", std::chrono::seconds(60));
    ASSERT_TRUE(done.ok()) << done.status().ToString();
    auto code = p->Wait(std::chrono::seconds(10));
    ASSERT_TRUE(code.ok() && *code == 0);
  }
  Seen ta = Collect(*consumers[0], kQuiet), tb = Collect(*consumers[1], kQuiet),
       r = Collect(*consumers[2], kQuiet);
  for (const Seen* s : {&ta, &tb, &r}) {
    EXPECT_TRUE(s->done) << s->errors;
    EXPECT_EQ(s->corrupt, 0);
  }
  std::multiset<int64_t> train = ta.uids;
  train.insert(tb.uids.begin(), tb.uids.end());
  EXPECT_EQ(train.size(), static_cast<size_t>(total))
      << "the two train consumers together read every sample once";
  EXPECT_EQ(std::set<int64_t>(train.begin(), train.end()).size(), static_cast<size_t>(total))
      << "no duplicates";
  EXPECT_EQ(r.uids.size(), static_cast<size_t>(total));
  EXPECT_EQ(std::set<int64_t>(r.uids.begin(), r.uids.end()).size(), static_cast<size_t>(total));
  EXPECT_GT(ta.uids.size(), 0u) << "the train consumer on A got work";
  EXPECT_GT(tb.uids.size(), 0u) << "the train consumer on B got work";
}

}  // namespace
}  // namespace tq

int main(int argc, char** argv) {
  if (argc == 6 && std::string(argv[1]) == "--role")
    return tq::RoleMain(argv[2], argv[3], argv[4], argv[5]);
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
