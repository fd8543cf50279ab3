// dscli lifecycle against real processes: start/stop/status, double start,
// restart over a crashed worker's leftovers, bad flags, a taken port, and the
// etcd reachability check (against Debian's etcd, started here).
#include <gtest/gtest.h>
#include <netinet/in.h>

#include <cstdlib>
#include <filesystem>

#include "ds/kv_client.h"
#include "test_util.h"

namespace ds {
namespace {

using testing::RunProgram;

// A worker started through dscli; stopped (or killed by pid) at the end.
class DscliWorker {
 public:
  explicit DscliWorker(int port = testing::FreePort(), std::string host = "127.0.0.1")
      : port_(port), host_(std::move(host)) {}
  ~DscliWorker() {
    if (pid_ > 0) {
      RunProgram({DSCLI_BIN, "stop", "--worker_address", address()});
      testing::ProcessGuard(pid_).Kill(SIGKILL);
    }
  }
  testing::RunResult Start(std::vector<std::string> extra = {}) {
    std::vector<std::string> argv = {DSCLI_BIN, "start", "-w", "--worker_address", address(),
                                     "--unix_socket_dir", dir_.path(), "--shared_memory_size_mb",
                                     "32"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    auto r = RunProgram(argv);
    auto pos = r.output.find("success, PID: ");
    if (r.code == 0 && pos != std::string::npos) pid_ = std::atoi(r.output.c_str() + pos + 14);
    return r;
  }
  testing::RunResult Stop() {
    auto r = RunProgram({DSCLI_BIN, "stop", "--worker_address", address()});
    if (r.code == 0) pid_ = -1;
    return r;
  }
  std::string address() const { return host_ + ":" + std::to_string(port_); }
  // The worker's socket / pid file, named by its full address.
  std::string file(const char* ext) const {
    return dir_.path() + "/datasystem_worker_" + host_ + "_" + std::to_string(port_) + ext;
  }
  int port() const { return port_; }
  pid_t pid() const { return pid_; }
  void Forget() { pid_ = -1; }
  const std::string& dir() const { return dir_.path(); }

 private:
  int port_;
  std::string host_;
  testing::TempDir dir_;
  pid_t pid_ = -1;
};

TEST(Dscli, Help) {
  auto r = RunProgram({DSCLI_BIN, "-h"});
  EXPECT_EQ(r.code, 0);
  EXPECT_NE(r.output.find("start"), std::string::npos);
  EXPECT_NE(r.output.find("stop"), std::string::npos);
  auto s = RunProgram({DSCLI_BIN, "start", "-h"});
  EXPECT_NE(s.output.find("--shared_memory_size_mb"), std::string::npos);
  EXPECT_NE(s.output.find("--spill_directory"), std::string::npos);
}

TEST(Dscli, StartServeStatusStop) {
  DscliWorker w;
  auto r = w.Start();
  ASSERT_EQ(r.code, 0) << r.output;
  ASSERT_GT(w.pid(), 0);
  // Ready means ready: a client connects at once.
  KVClient c("127.0.0.1", w.port());
  ASSERT_TRUE(c.Init().ok());
  ASSERT_TRUE(c.Set("k", "v").ok());
  auto st = RunProgram({DSCLI_BIN, "status", "--worker_address", w.address()});
  EXPECT_EQ(st.code, 0);
  // A one-row table: the worker, running, its pid, one object; no cluster.
  EXPECT_NE(st.output.find("standalone"), std::string::npos) << st.output;
  EXPECT_NE(st.output.find("objects"), std::string::npos) << st.output;
  EXPECT_NE(st.output.find(w.address() + "  running  " + std::to_string(w.pid())), std::string::npos)
      << st.output;
  auto list = RunProgram({DSCLI_BIN, "status", "--unix_socket_dir", w.dir()});
  EXPECT_NE(list.output.find("running"), std::string::npos) << list.output;
  pid_t pid = w.pid();
  auto s = w.Stop();
  EXPECT_EQ(s.code, 0) << s.output;
  EXPECT_NE(s.output.find("[  OK  ] Stop worker service @ " + w.address() + " normally, PID: " +
                          std::to_string(pid)),
            std::string::npos)
      << s.output;
  EXPECT_TRUE(testing::WaitExit(pid, 0));
  EXPECT_FALSE(std::filesystem::exists(w.file(".sock")));
  // As the real dscli: stopping a worker that is not running fails.
  auto again = w.Stop();
  EXPECT_NE(again.code, 0);
  EXPECT_NE(again.output.find("no datasystem worker is running"), std::string::npos);
}

TEST(Dscli, DoubleStartIsRefused) {
  DscliWorker w;
  ASSERT_EQ(w.Start().code, 0);
  pid_t first = w.pid();
  auto r = RunProgram({DSCLI_BIN, "start", "-w", "--worker_address", w.address(), "--unix_socket_dir",
                w.dir(), "--shared_memory_size_mb", "32"});
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.output.find("already running"), std::string::npos) << r.output;
  EXPECT_EQ(::kill(first, 0), 0);  // the first one is untouched
}

TEST(Dscli, StartsOverACrashedWorkersLeftovers) {
  DscliWorker w;
  ASSERT_EQ(w.Start().code, 0);
  pid_t pid = w.pid();
  ::kill(pid, SIGKILL);
  ASSERT_TRUE(testing::WaitExit(pid, 5000));
  std::string sock = w.file(".sock");
  std::string pidfile = w.file(".pid");
  ASSERT_TRUE(std::filesystem::exists(sock));  // the crash left them behind
  ASSERT_TRUE(std::filesystem::exists(pidfile));
  w.Forget();
  auto r = w.Start();
  ASSERT_EQ(r.code, 0) << r.output;
  KVClient c("127.0.0.1", w.port());
  ASSERT_TRUE(c.Init().ok());
  EXPECT_TRUE(c.Set("after", "crash").ok());
}

TEST(Dscli, BadFlagsFailClearly) {
  struct Case {
    std::vector<std::string> args;
    std::string expect;
  };
  std::vector<Case> cases = {
      {{"start", "-w", "--worker_address", "nonsense"}, "HOST:PORT"},
      {{"start", "-w", "--worker_address", "127.0.0.1:99999"}, "outside"},
      {{"start", "-w", "--worker_address", "127.0.0.1:1234", "--shared_memory_size_mb", "0"},
       "shared_memory_size_mb"},
      {{"start", "-w", "--worker_address", "127.0.0.1:1234", "--bogus"}, "bogus"},
      {{"start", "-w", "--worker_address"}, "worker_address is missing a value"},
      {{"start", "-w", "--worker_address", "127.0.0.1:1234", "--unix_socket_dir"}, "missing a value"},
      {{"start"}, "-w"},
      {{"start", "--worker_address", "127.0.0.1:1234"}, "-w"},
      {{"start", "-w", "--worker_address", "127.0.0.1:1234", "--etcd_address", "x"}, "etcd_address"},
      {{"frobnicate"}, "subcommand"},
  };
  for (const auto& c : cases) {
    std::vector<std::string> argv = {DSCLI_BIN};
    argv.insert(argv.end(), c.args.begin(), c.args.end());
    auto r = RunProgram(argv);
    EXPECT_NE(r.code, 0) << c.args.back();
    EXPECT_NE(r.output.find(c.expect), std::string::npos) << r.output;
  }
}

TEST(Dscli, PortTakenByAnotherProcess) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
  ASSERT_EQ(::listen(fd, 1), 0);
  socklen_t len = sizeof(a);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  DscliWorker w(ntohs(a.sin_port));
  auto r = w.Start();
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.output.find("in use"), std::string::npos) << r.output;
  ::close(fd);
}

TEST(Dscli, EtcdMustAnswer) {
  int dead = testing::FreePort();
  DscliWorker unreachable;
  auto r = unreachable.Start({"--etcd_address", "127.0.0.1:" + std::to_string(dead)});
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.output.find("cannot reach etcd"), std::string::npos) << r.output;

  if (::access("/usr/bin/etcd", X_OK) != 0) GTEST_SKIP() << "etcd not installed";
  testing::TempDir data;
  int client_port = testing::FreePort(), peer_port = testing::FreePort();
  std::string curl = "http://127.0.0.1:" + std::to_string(client_port);
  std::string purl = "http://127.0.0.1:" + std::to_string(peer_port);
  int out = -1;
  testing::ProcessGuard etcd(testing::Spawn(
      {"/usr/bin/etcd", "--name", "t", "--data-dir", data.path() + "/etcd",
       "--listen-client-urls", curl, "--advertise-client-urls", curl,
       "--listen-peer-urls", purl, "--initial-advertise-peer-urls", purl,
       "--initial-cluster", "t=" + purl, "--log-level", "error"},
      &out));
  std::string etcd_addr = "127.0.0.1:" + std::to_string(client_port);
  ASSERT_TRUE(testing::Eventually([&] { return ProbeEtcd(etcd_addr, 500).ok(); },
                                  std::chrono::seconds(20)));
  DscliWorker w;
  auto ok = w.Start({"--etcd_address", etcd_addr});
  EXPECT_EQ(ok.code, 0) << ok.output;
  ::close(out);
}

}  // namespace
}  // namespace ds
