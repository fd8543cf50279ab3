// Three-node cluster test: three network namespaces joined by a bridge (in
// a fourth namespace), 10.210.0.1-3/24, created and removed here (traffic
// never leaves them). etcd and a worker on node A, a worker on B and C; a
// writer on A, readers on B and C checking bytes; kill -9 of A's worker
// during reads; etcd killed and started again during a run. Needs root and
// `ip netns`; skipped otherwise.
#include <gtest/gtest.h>

#include <sys/stat.h>

#include <chrono>
#include <memory>
#include <cstdio>
#include <string>
#include <vector>

#include "common/netns.h"
#include "test_util.h"

namespace ds {
namespace {

constexpr const char* kIp = "/usr/sbin/ip";

testing::RunResult Ip(std::vector<std::string> args) {
  args.insert(args.begin(), kIp);
  return testing::RunProgram(args);
}

// Namespaces <tag>a, <tag>b, <tag>c (nodes) and <tag>br (the bridge).
class Topology {
 public:
  Topology() : tag_("dsn" + std::to_string(::getpid()) + "_") {}
  ~Topology() { Remove(); }

  // "" when built, else why not (for GTEST_SKIP).
  std::string Build() {
    Remove();
    for (const auto& ns : {node(0), node(1), node(2), bridge()}) {
      auto r = Ip({"netns", "add", ns});
      if (r.code != 0) return "ip netns add is not permitted here: " + r.output;
      made_.push_back(ns);
    }
    std::vector<std::vector<std::string>> steps = {
        {"-n", bridge(), "link", "add", "br0", "type", "bridge"},
        {"-n", bridge(), "link", "set", "br0", "up"}};
    for (int i = 0; i < 3; ++i) {
      std::string port = "p" + std::to_string(i);
      steps.push_back({"-n", node(i), "link", "add", "eth0", "type", "veth", "peer", "name", port,
                       "netns", bridge()});
      steps.push_back({"-n", bridge(), "link", "set", port, "master", "br0"});
      steps.push_back({"-n", bridge(), "link", "set", port, "up"});
      steps.push_back({"-n", node(i), "addr", "add", ip(i) + "/24", "dev", "eth0"});
      steps.push_back({"-n", node(i), "link", "set", "eth0", "up"});
      steps.push_back({"-n", node(i), "link", "set", "lo", "up"});
    }
    for (const auto& s : steps) {
      auto r = Ip(s);
      if (r.code != 0) return "cannot build the test network (ip " + s[2] + " ...): " + r.output;
    }
    return "";
  }
  void Remove() {
    for (const auto& ns : {node(0), node(1), node(2), bridge()}) {
      struct stat st;
      if (::stat(("/var/run/netns/" + ns).c_str(), &st) == 0) (void)Ip({"netns", "del", ns});
    }
    made_.clear();
  }
  std::string node(int i) const { return tag_ + static_cast<char>('a' + i); }
  std::string bridge() const { return tag_ + "br"; }
  static std::string ip(int i) { return "10.210.0." + std::to_string(i + 1); }

 private:
  std::string tag_;
  std::vector<std::string> made_;
};

struct ReadSummary {
  long ok = 0, miss = 0, wrong = 0, err = 0, max_ms = 0;
  std::string output;
};

ReadSummary Parse(const std::string& out) {
  ReadSummary s;
  s.output = out;
  auto at = out.rfind("DONE ");
  if (at == std::string::npos ||
      std::sscanf(out.c_str() + at, "DONE ok=%ld miss=%ld wrong=%ld err=%ld max_ms=%ld", &s.ok,
                  &s.miss, &s.wrong, &s.err, &s.max_ms) != 5) {
    s.err = -1;
  }
  return s;
}

class NetnsCluster : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root for ip netns";
    if (::access(kIp, X_OK) != 0) GTEST_SKIP() << "iproute2 (ip) is not installed";
    if (!testing::EtcdProcess::Installed()) GTEST_SKIP() << "etcd (etcd-server) is not installed";
    std::string why = net_.Build();
    if (!why.empty()) GTEST_SKIP() << why;
    ASSERT_TRUE(keys_.status().ok()) << keys_.status().ToString();
    etcd_ = std::make_unique<testing::EtcdProcess>(Topology::ip(0), net_.node(0));
    etcd_->Start();
    ASSERT_TRUE(WaitEtcd()) << "etcd did not start in " << net_.node(0);
    for (int i = 0; i < 3; ++i) {
      testing::WorkerConfig c;
      c.shm_mb = 256;
      c.host = Topology::ip(i);
      c.netns = net_.node(i);
      c.etcd = etcd_->address();
      c.extra = {"--node_timeout_s", "2"};
      workers_.push_back(std::make_unique<testing::WorkerProcess>(c));
      ASSERT_EQ(workers_.back()->Start(), "") << "worker on " << net_.node(i);
    }
  }

  bool WaitEtcd() {
    return testing::Eventually(
        [&] { return Client(0, {"probe_etcd", etcd_->address()}).code == 0; },
        std::chrono::seconds(20));
  }

  std::vector<std::string> ClientArgv(int node, std::vector<std::string> args) {
    std::vector<std::string> argv = {kIp, "netns", "exec", net_.node(node), DS_TEST_CLIENT_BIN};
    argv.insert(argv.end(), args.begin(), args.end());
    return argv;
  }
  testing::RunResult Client(int node, std::vector<std::string> args) {
    return testing::RunProgram(ClientArgv(node, std::move(args)));
  }
  // Runs the client `mode` against the worker on `node`.
  testing::RunResult Run(int node, const std::string& mode, const std::string& prefix, int count,
                         size_t size, int seconds = -1) {
    std::vector<std::string> args = {mode, Topology::ip(node),
                                     std::to_string(workers_[node]->port()), prefix,
                                     std::to_string(count), std::to_string(size)};
    if (seconds >= 0) args.push_back(std::to_string(seconds));
    return Client(node, args);
  }
  // A background reader; Finish() collects its summary.
  struct Background {
    pid_t pid = -1;
    int fd = -1;
    std::string head;  // read by WaitFirstResult
    // Blocks until the reader reported its first get.
    void WaitFirstResult() {
      char c;
      while (::read(fd, &c, 1) == 1) {
        head.push_back(c);
        if (c == '\n') return;
      }
    }
    ReadSummary Finish() {
      std::string out = head;
      char buf[4096];
      ssize_t n;
      while ((n = ::read(fd, buf, sizeof(buf))) > 0) out.append(buf, static_cast<size_t>(n));
      ::close(fd);
      testing::WaitExit(pid, 30000);
      return Parse(out);
    }
  };
  Background ReadInBackground(int node, const std::string& prefix, int count, size_t size,
                              int seconds) {
    Background b;
    b.pid = testing::Spawn(ClientArgv(node, {"read", Topology::ip(node),
                                             std::to_string(workers_[node]->port()), prefix,
                                             std::to_string(count), std::to_string(size),
                                             std::to_string(seconds)}),
                           &b.fd);
    return b;
  }

  // Declared first: undone last. The namespaces' addresses are not loopback,
  // so every process authenticates with these keys.
  tqds::testing::ScopedCurveKeys keys_;
  Topology net_;  // removed after every process is gone
  std::unique_ptr<testing::EtcdProcess> etcd_;
  std::vector<std::unique_ptr<testing::WorkerProcess>> workers_;
};

TEST_F(NetnsCluster, WriterOnAReadersOnBAndC) {
  ASSERT_EQ(Run(0, "write", "a_small", 100, 4096).output, "OK\n");
  ASSERT_EQ(Run(0, "write", "a_big", 3, 16 << 20).output, "OK\n");
  ASSERT_EQ(Run(2, "write", "c_mid", 10, 1 << 20).output, "OK\n");
  for (int reader : {1, 2}) {
    for (auto [prefix, count, size] : {std::tuple{"a_small", 100, 4096},
                                       std::tuple{"a_big", 3, 16 << 20},
                                       std::tuple{"c_mid", 10, 1 << 20}}) {
      auto s = Parse(Run(reader, "read", prefix, count, static_cast<size_t>(size)).output);
      EXPECT_EQ(s.ok, count) << "reader on node " << reader << ", " << prefix << "\n" << s.output;
    }
  }
}

TEST_F(NetnsCluster, KillDuringReadsAndEtcdRestart) {
  ASSERT_EQ(Run(0, "write", "a_read", 20, 65536).output, "OK\n");   // read before the kill
  ASSERT_EQ(Run(0, "write", "a_only", 20, 65536).output, "OK\n");   // held only by A
  ASSERT_EQ(Run(2, "write", "c_keys", 20, 65536).output, "OK\n");
  auto cached = Parse(Run(1, "read", "a_read", 20, 65536).output);  // B caches a copy
  ASSERT_EQ(cached.ok, 20) << cached.output;

  // kill -9 of A's worker while B reads C's keys and its cached copies.
  auto bg_c = ReadInBackground(1, "c_keys", 20, 65536, 3);
  auto bg_a = ReadInBackground(1, "a_read", 20, 65536, 3);
  bg_c.WaitFirstResult();  // both readers are running
  bg_a.WaitFirstResult();
  const std::string dead = workers_[0]->address();
  workers_[0]->Crash();
  auto sc = bg_c.Finish();
  auto sa = bg_a.Finish();
  EXPECT_GT(sc.ok, 20);
  EXPECT_EQ(sc.wrong + sc.err + sc.miss, 0) << sc.output;
  EXPECT_EQ(sa.wrong, 0) << sa.output;  // cached copies: served, or a clear error; never wrong
  EXPECT_EQ(sa.err, 0) << sa.output;

  // Keys only A held: a clear, fast error naming key and worker, on B and C.
  for (int reader : {1, 2}) {
    auto s = Parse(Run(reader, "read", "a_only", 20, 65536).output);
    EXPECT_EQ(s.err, 20) << s.output;
    EXPECT_EQ(s.wrong, 0);
    EXPECT_LT(s.max_ms, 3000) << s.output;
    EXPECT_NE(s.output.find("ERR a_only/3 "), std::string::npos) << s.output;
    EXPECT_NE(s.output.find(dead), std::string::npos) << s.output;
  }

  // etcd down during a run: workers keep serving.
  etcd_->Stop();
  auto during = Parse(Run(2, "read", "c_keys", 20, 65536, 1).output);
  EXPECT_EQ(during.wrong + during.err + during.miss, 0) << during.output;
  ASSERT_EQ(Run(1, "write", "b_during", 10, 4096).output, "OK\n");
  auto b_during = Parse(Run(2, "read", "b_during", 10, 4096).output);
  EXPECT_EQ(b_during.ok, 10) << b_during.output;
  etcd_->Start();
  ASSERT_TRUE(WaitEtcd());
  // A restarted worker on A rejoins and reads/writes across nodes.
  ASSERT_EQ(workers_[0]->Start(workers_[0]->port()), "");
  auto after = Parse(Run(0, "read", "c_keys", 20, 65536).output);
  EXPECT_EQ(after.ok, 20) << after.output << workers_[0]->LogTail() << workers_[1]->LogTail()
                          << workers_[2]->LogTail();
  ASSERT_EQ(Run(0, "write", "a_after", 10, 4096).output, "OK\n");
  auto from_c = Parse(Run(2, "read", "a_after", 10, 4096).output);
  EXPECT_EQ(from_c.ok, 10) << from_c.output;
  auto from_b = Parse(Run(1, "read", "b_during", 10, 4096).output);
  EXPECT_EQ(from_b.ok, 10) << from_b.output;
}

}  // namespace
}  // namespace ds
