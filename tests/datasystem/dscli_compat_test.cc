// dscli as a drop-in for openYuanrong datasystem's, against real processes:
// every flag of the real worker through `dscli start -w` (with effect, or
// accepted and reported as having no effect), the output lines, the start
// timeout, the configuration file (-f, generate_config), --version, upstream
// TransferQueue 0.1.11's invocation, and two workers with one port on two
// loopback addresses.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <regex>
#include <sstream>

#include "datasystem/worker_flags.h"
#include "ds/kv_client.h"
#include "test_util.h"

namespace ds {
namespace {

using testing::RunProgram;
using testing::RunResult;

// PID from "[  OK  ] Start worker service @ H:P success, PID: N"; 0 if none.
pid_t OkPid(const RunResult& r, const std::string& address) {
  std::smatch m;
  std::regex ok("\\[INFO\\] \\[  OK  \\] Start worker service @ " +
                std::regex_replace(address, std::regex("\\."), "\\.") + " success, PID: (\\d+)\n");
  return std::regex_search(r.output, m, ok) ? std::atoi(m[1].str().c_str()) : 0;
}

// A worker started by `dscli start` with arbitrary arguments; stopped with
// `dscli stop` and killed by pid at the end, whatever happened.
class Started {
 public:
  Started(const std::string& address, std::vector<std::string> start_args) : address_(address) {
    std::vector<std::string> argv = {DSCLI_BIN, "start"};
    argv.insert(argv.end(), start_args.begin(), start_args.end());
    result_ = RunProgram(argv);
    pid_ = OkPid(result_, address_);
  }
  ~Started() {
    if (pid_ > 0) {
      RunProgram({DSCLI_BIN, "stop", "--worker_address", address_, "--timeout_s", "10"});
      testing::ProcessGuard(pid_).Kill(SIGKILL);
    }
  }
  RunResult Stop() {
    auto r = RunProgram({DSCLI_BIN, "stop", "--worker_address", address_});
    if (r.code == 0) pid_ = -1;
    return r;
  }
  const RunResult& result() const { return result_; }
  pid_t pid() const { return pid_; }

 private:
  std::string address_;
  RunResult result_;
  pid_t pid_ = -1;
};

std::string Address(const std::string& host, int port) { return host + ":" + std::to_string(port); }

std::string ReadAll(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// A value of `f`'s kind other than its default.
std::string NonDefault(const FlagSpec& f) {
  switch (f.kind) {
    case FlagKind::kBool: {
      const std::string d(f.default_value);
      return d == "1" || d == "true" ? "false" : "true";
    }
    case FlagKind::kDouble: return "0.25";
    case FlagKind::kString: return "x";
    default: return f.default_value == "1" ? "2" : "1";
  }
}

TEST(DscliCompat, OkLineAndStopLine) {
  testing::TempDir dir;
  const std::string addr = Address("127.0.0.1", testing::FreePort());
  Started w(addr, {"-w", "--worker_address", addr, "--unix_domain_socket_dir", dir.path(),
                   "--shared_memory_size_mb", "32"});
  ASSERT_GT(w.pid(), 0) << w.result().output;
  EXPECT_EQ(w.result().code, 0);
  EXPECT_NE(w.result().output.find("[INFO] Starting worker service with PID: " +
                                   std::to_string(w.pid())),
            std::string::npos)
      << w.result().output;
  // Started as the real dscli starts its worker: --name=value, real names.
  auto cmd = ReadAll("/proc/" + std::to_string(w.pid()) + "/cmdline");
  EXPECT_NE(cmd.find(std::string("datasystem_worker") + '\0' + "--worker_address=" + addr),
            std::string::npos);
  pid_t pid = w.pid();
  auto s = w.Stop();
  EXPECT_EQ(s.code, 0) << s.output;
  EXPECT_NE(s.output.find("[INFO] [  OK  ] Stop worker service @ " + addr +
                          " normally, PID: " + std::to_string(pid)),
            std::string::npos)
      << s.output;
}

TEST(DscliCompat, FailedLineNamesTheReason) {
  testing::TempDir dir;
  const std::string addr = Address("127.0.0.1", testing::FreePort());
  Started first(addr, {"-w", "--worker_address", addr, "--unix_domain_socket_dir", dir.path(),
                       "--shared_memory_size_mb", "32"});
  ASSERT_GT(first.pid(), 0) << first.result().output;
  Started second(addr, {"-w", "--worker_address", addr, "--unix_domain_socket_dir", dir.path(),
                        "--shared_memory_size_mb", "32"});
  EXPECT_EQ(second.result().code, 1);
  EXPECT_NE(second.result().output.find("[ERROR] [  FAILED  ] Start worker service @ " + addr +
                                        " failed: "),
            std::string::npos)
      << second.result().output;
  EXPECT_NE(second.result().output.find("already running"), std::string::npos);
  EXPECT_EQ(second.result().output.find("[  OK  ]"), std::string::npos);

  auto unknown = RunProgram({DSCLI_BIN, "start", "-w", "--worker_address", addr, "--no_such_flag",
                             "1"});
  EXPECT_EQ(unknown.code, 1);
  EXPECT_NE(unknown.output.find("[  FAILED  ] Start worker service @ " + addr +
                                " failed: unknown worker flag --no_such_flag"),
            std::string::npos)
      << unknown.output;
}

// Every flag of the real worker with effect here, where the effect shows from
// outside (the others: worker_flags_test.cc checks that each one changes the
// worker's command line).
TEST(DscliCompat, EffectiveFlagsTakeEffect) {
  testing::TempDir dir;
  const int port = testing::FreePort();
  const std::string addr = Address("127.0.0.1", port);
  const std::string sock_dir = dir.path() + "/uds";
  Started w(addr, {"-w", "--worker_address", addr, "--unix_domain_socket_dir", sock_dir,
                   "--shared_memory_size_mb", "48", "--shared_memory_populate", "true",
                   "--spill_directory", dir.path() + "/spill", "--spill_size_limit", "1048576",
                   "--eviction_high_watermark_ratio", "0.8", "--node_timeout_s", "5",
                   "--oc_worker_worker_direct_port", "0", "--oc_worker_worker_pool_size", "2",
                   "--enable_data_replication", "false", "--log_dir", dir.path() + "/logs",
                   "--log_filename", "mine", "--minloglevel", "0", "--v", "1",
                   "--ready_check_path", dir.path() + "/probe/ready", "--health_check_path",
                   dir.path() + "/probe/healthy"});
  ASSERT_GT(w.pid(), 0) << w.result().output;
  EXPECT_EQ(w.result().output.find("[WARNING]"), std::string::npos) << w.result().output;
  // Files named by the full address, in the directories given.
  EXPECT_TRUE(std::filesystem::exists(sock_dir + "/datasystem_worker_127.0.0.1_" +
                                      std::to_string(port) + ".sock"));
  EXPECT_TRUE(std::filesystem::exists(dir.path() + "/spill/datasystem_worker_127.0.0.1_" +
                                      std::to_string(port)));
  EXPECT_TRUE(std::filesystem::exists(dir.path() + "/logs/mine.log"));
  EXPECT_TRUE(std::filesystem::exists(dir.path() + "/probe/ready"));
  EXPECT_TRUE(std::filesystem::exists(dir.path() + "/probe/healthy"));
  // Sizes reach the store: 48 MiB of arena, a 1 MiB spill cap; the memory
  // gets populated.
  KVClient c("127.0.0.1", port);
  ASSERT_TRUE(c.Init().ok());
  auto st = c.Stats();
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(st->capacity, 48u << 20);
  EXPECT_EQ(st->spill_limit, 1u << 20);
  EXPECT_TRUE(testing::Eventually([&] { return c.Stats()->memory_populated; }));
  auto s = w.Stop();
  EXPECT_EQ(s.code, 0) << s.output;
  EXPECT_FALSE(std::filesystem::exists(dir.path() + "/probe/ready"));
  EXPECT_FALSE(std::filesystem::exists(dir.path() + "/probe/healthy"));

  // --bind_address: the TCP server listens there instead.
  const std::string bind = Address("127.0.0.3", testing::FreePort());
  Started b(addr, {"-w", "--worker_address", addr, "--bind_address", bind,
                   "--unix_domain_socket_dir", sock_dir, "--shared_memory_size_mb", "32"});
  ASSERT_GT(b.pid(), 0) << b.result().output;
  auto listening = [](const std::string& address) {
    auto hp = *HostPort::Parse(address, "address");
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(hp.port));
    ::inet_pton(AF_INET, hp.host.c_str(), &a.sin_addr);
    bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0;
    ::close(fd);
    return ok;
  };
  EXPECT_TRUE(listening(bind));
  EXPECT_FALSE(listening(addr));
  EXPECT_EQ(b.Stop().code, 0);  // found by its --worker_address
}

// Every flag of the real worker (tests/datasystem/data/real_worker_flags.txt,
// independent of our table) through one `dscli start -w`: those with effect
// at the value the worker uses anyway, those without effect at a value other
// than their default. The worker starts, and each of the latter is reported
// once by dscli and once in the worker's log.
TEST(DscliCompat, EveryRealFlagThroughDscliStart) {
  testing::TempDir dir;
  const std::string addr = Address("127.0.0.1", testing::FreePort());
  std::vector<std::string> args = {"-w", "--worker_address", addr, "--unix_domain_socket_dir",
                                   dir.path(), "--shared_memory_size_mb", "32"};
  std::map<std::string, std::string> here;  // effective defaults
  for (const auto& a : WorkerArgv(WorkerFlags{})) {
    auto eq = a.find('=');
    here[a.substr(2, eq - 2)] = a.substr(eq + 1);
  }
  std::ifstream in(std::string(TQDS_SOURCE_DIR) + "/tests/datasystem/data/real_worker_flags.txt");
  std::vector<std::string> reported;
  size_t tried = 0;
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    std::string name, type, def;
    std::istringstream(line) >> name >> type >> def;
    if (def == "-") def.clear();
    if (name == "worker_address" || name == "unix_domain_socket_dir" ||
        name == "shared_memory_size_mb" || name == "log_dir") {
      ++tried;  // given above
      continue;
    }
    const FlagSpec* f = FindWorkerFlag(name);
    ASSERT_NE(f, nullptr) << name;
    std::string value;
    if (f->use == FlagUse::kNoEffect) {
      value = NonDefault(*f);
      reported.push_back(name);
    } else {
      value = here.count(name) != 0 ? here[name] : (f->kind == FlagKind::kString ? "" : def);
    }
    args.insert(args.end(), {"--" + name, value});
    ++tried;
  }
  ASSERT_GT(tried, 230u);
  Started w(addr, args);
  ASSERT_GT(w.pid(), 0) << w.result().output;
  const std::string& out = w.result().output;
  auto warn = out.find("[WARNING] accepted with no effect in this build: ");
  ASSERT_NE(warn, std::string::npos) << out;
  const std::string warning = out.substr(warn, out.find('\n', warn) - warn);
  const std::string log = ReadAll(dir.path() + "/logs/datasystem_worker_127.0.0.1_" +
                                  addr.substr(addr.find(':') + 1) + ".log");
  for (const auto& n : reported) {
    const std::string flag = "--" + n + "=";
    EXPECT_NE(warning.find(flag), std::string::npos) << n;
    auto first = log.find(flag);
    EXPECT_NE(first, std::string::npos) << n;
    EXPECT_EQ(log.find(flag, first + 1), std::string::npos) << n << " logged twice";
  }
  EXPECT_EQ(w.Stop().code, 0);
}

// Two workers with one port on two loopback addresses, one socket
// directory: both start, serve their own data, and stop independently.
TEST(DscliCompat, SamePortOnTwoAddresses) {
  testing::TempDir dir;
  const int port = testing::FreePort();
  const std::string a = Address("127.0.0.1", port), b = Address("127.0.0.2", port);
  auto start = [&](const std::string& addr) {
    return std::make_unique<Started>(
        addr, std::vector<std::string>{"-w", "--worker_address", addr, "--unix_domain_socket_dir",
                                       dir.path(), "--shared_memory_size_mb", "32"});
  };
  auto wa = start(a);
  ASSERT_GT(wa->pid(), 0) << wa->result().output;
  auto wb = start(b);
  ASSERT_GT(wb->pid(), 0) << wb->result().output;
  EXPECT_NE(wa->pid(), wb->pid());
  KVClient ca("127.0.0.1", port), cb("127.0.0.2", port);
  ASSERT_TRUE(ca.Init().ok());
  ASSERT_TRUE(cb.Init().ok());
  ASSERT_TRUE(ca.Set("k", "from a").ok());
  ASSERT_TRUE(cb.Set("k", "from b").ok());
  EXPECT_EQ(*ca.Get("k"), "from a");
  EXPECT_EQ(*cb.Get("k"), "from b");
  auto list = RunProgram({DSCLI_BIN, "status", "--unix_domain_socket_dir", dir.path()});
  EXPECT_NE(list.output.find("worker " + a + ": running"), std::string::npos) << list.output;
  EXPECT_NE(list.output.find("worker " + b + ": running"), std::string::npos) << list.output;

  // Stopping b leaves a serving; a second start of b works again.
  const pid_t pid_b = wb->pid();
  auto sb = wb->Stop();
  EXPECT_EQ(sb.code, 0) << sb.output;
  EXPECT_NE(sb.output.find("@ " + b + " normally, PID: " + std::to_string(pid_b)),
            std::string::npos);
  EXPECT_TRUE(testing::WaitExit(pid_b, 5000));
  EXPECT_EQ(::kill(wa->pid(), 0), 0);
  EXPECT_EQ(*ca.Get("k"), "from a");
  wb = start(b);
  ASSERT_GT(wb->pid(), 0) << wb->result().output;
  const pid_t pid_a = wa->pid();
  auto sa = wa->Stop();
  EXPECT_EQ(sa.code, 0) << sa.output;
  EXPECT_NE(sa.output.find("PID: " + std::to_string(pid_a)), std::string::npos);
  EXPECT_EQ(::kill(wb->pid(), 0), 0);
  EXPECT_EQ(wb->Stop().code, 0);
}

// A worker whose --worker_address is spelled otherwise (or that runs in
// another pid namespace) is not found among the processes: dscli stop asks
// it over TCP.
TEST(DscliCompat, StopReachesAWorkerOverTcp) {
  testing::TempDir dir;
  const int port = testing::FreePort();
  Started w("localhost:" + std::to_string(port),
            {"-w", "--worker_address", "localhost:" + std::to_string(port),
             "--unix_domain_socket_dir", dir.path(), "--shared_memory_size_mb", "32"});
  ASSERT_GT(w.pid(), 0) << w.result().output;
  const std::string addr = Address("127.0.0.1", port);
  auto s = RunProgram({DSCLI_BIN, "stop", "--worker_address", addr});
  EXPECT_EQ(s.code, 0) << s.output;
  EXPECT_NE(s.output.find("[  OK  ] Stop worker service @ " + addr + " normally, PID: " +
                          std::to_string(w.pid())),
            std::string::npos)
      << s.output;
  EXPECT_TRUE(testing::WaitExit(w.pid(), 5000));
}

// A worker that does not exit on SIGTERM within the timeout is killed.
TEST(DscliCompat, StopForcesAfterTheTimeout) {
  testing::TempDir dir;
  const std::string addr = Address("127.0.0.1", testing::FreePort());
  Started w(addr, {"-w", "--worker_address", addr, "--unix_domain_socket_dir", dir.path(),
                   "--shared_memory_size_mb", "32"});
  ASSERT_GT(w.pid(), 0) << w.result().output;
  ASSERT_EQ(::kill(w.pid(), SIGSTOP), 0);  // SIGTERM stays pending
  auto s = RunProgram({DSCLI_BIN, "stop", "--worker_address", addr, "--timeout_s", "1"});
  EXPECT_EQ(s.code, 0) << s.output;
  EXPECT_NE(s.output.find("[  OK  ] Force stop worker service @ " + addr + ", PID: " +
                          std::to_string(w.pid())),
            std::string::npos)
      << s.output;
  EXPECT_TRUE(testing::WaitExit(w.pid(), 5000));
}

TEST(DscliCompat, StartTimeoutKillsTheWorker) {
  testing::TempDir dir;
  // A "worker" that never becomes ready.
  const std::string fake = dir.path() + "/datasystem_worker";
  std::ofstream(fake) << "#!/bin/sh\necho $$ > " << dir.path() << "/fake.pid\nexec sleep 60\n";
  ::chmod(fake.c_str(), 0755);
  ::setenv("DS_WORKER_BIN", fake.c_str(), 1);
  const std::string addr = Address("127.0.0.1", testing::FreePort());
  const auto t0 = std::chrono::steady_clock::now();
  auto r = RunProgram({DSCLI_BIN, "start", "-t", "1", "-w", "--worker_address", addr,
                       "--unix_domain_socket_dir", dir.path()});
  ::unsetenv("DS_WORKER_BIN");
  const auto took = std::chrono::steady_clock::now() - t0;
  pid_t fake_pid = 0;
  std::ifstream(dir.path() + "/fake.pid") >> fake_pid;
  testing::ProcessGuard guard(fake_pid);
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.output.find("[  FAILED  ] Start worker service @ " + addr +
                          " failed: worker service is not ready within 1 seconds"),
            std::string::npos)
      << r.output;
  EXPECT_LT(took, std::chrono::seconds(10));
  if (fake_pid > 0) {
    EXPECT_TRUE(testing::WaitExit(fake_pid, 5000));  // killed by dscli
  }
  guard.Forget();
}

TEST(DscliCompat, ConfigFileStartAndStop) {
  testing::TempDir dir;
  auto gen = RunProgram({DSCLI_BIN, "generate_config", "-o", dir.path()});
  ASSERT_EQ(gen.code, 0) << gen.output;
  const std::string path = dir.path() + "/worker_config.json";
  auto doc = nlohmann::json::parse(ReadAll(path));
  ASSERT_TRUE(doc.contains("spill_size_limit"));
  ASSERT_TRUE(doc.contains("enable_rdma"));
  const int port = testing::FreePort();
  const std::string addr = Address("127.0.0.1", port);
  doc["worker_address"]["value"] = addr;
  doc["unix_domain_socket_dir"]["value"] = "./uds";  // relative to -d
  doc["shared_memory_size_mb"]["value"] = "32";
  doc["arena_per_tenant"]["value"] = "4";
  std::ofstream(path) << doc.dump(2);
  Started w(addr, {"-d", dir.path(), "-f", path});
  ASSERT_GT(w.pid(), 0) << w.result().output;
  EXPECT_NE(w.result().output.find("--arena_per_tenant=4"), std::string::npos);
  EXPECT_TRUE(std::filesystem::exists(dir.path() + "/uds/datasystem_worker_127.0.0.1_" +
                                      std::to_string(port) + ".pid"));
  const pid_t pid = w.pid();
  auto s = RunProgram({DSCLI_BIN, "stop", "-f", path});
  EXPECT_EQ(s.code, 0) << s.output;
  EXPECT_NE(s.output.find("Stop worker service @ " + addr + " normally, PID: " +
                          std::to_string(pid)),
            std::string::npos);
  EXPECT_TRUE(testing::WaitExit(pid, 5000));

  auto both = RunProgram({DSCLI_BIN, "start", "-f", path, "-w", "--worker_address", addr});
  EXPECT_EQ(both.code, 1);
  std::ofstream(path) << R"({"worker_address": {"value": ")" << addr
                      << R"("}, "nonsense_flag": {"value": "1"}})";
  auto bad = RunProgram({DSCLI_BIN, "start", "-f", path});
  EXPECT_EQ(bad.code, 1);
  EXPECT_NE(bad.output.find("unknown worker flag --nonsense_flag"), std::string::npos)
      << bad.output;
}

TEST(DscliCompat, Version) {
  auto d = RunProgram({DSCLI_BIN, "--version"});
  EXPECT_EQ(d.code, 0);
  EXPECT_EQ(d.output.rfind("dscli ", 0), 0u) << d.output;
  auto w = RunProgram({DS_WORKER_BIN, "--version"});
  EXPECT_EQ(w.code, 0);
  EXPECT_EQ(w.output.rfind("datasystem_worker ", 0), 0u) << w.output;
  auto h = RunProgram({DS_WORKER_BIN, "--help"});
  EXPECT_EQ(h.code, 0);
  EXPECT_NE(h.output.find("--spill_size_limit"), std::string::npos);
  EXPECT_NE(h.output.find("--enable_rdma"), std::string::npos);
}

// Upstream TransferQueue 0.1.11 (yuanrong_bootstrap.py) starts each node's
// worker with this command line and expects "[  OK  ]" on stdout; a worker
// node's --metastore_address is the head's coordination service (here a real
// etcd, which speaks the same API).
TEST(DscliCompat, TransferQueueBootstrapInvocation) {
  if (!testing::EtcdProcess::Installed()) GTEST_SKIP() << "etcd not installed";
  testing::EtcdProcess etcd;
  etcd.Start();
  ASSERT_TRUE(testing::Eventually([&] { return ProbeEtcd(etcd.address(), 500).ok(); },
                                  std::chrono::seconds(20)));
  testing::TempDir dir;
  const std::string addr = Address("127.0.0.1", testing::FreePort());
  Started w(addr, {"-w", "--worker_address", addr, "--metastore_address", etcd.address(),
                   "--arena_per_tenant", "1", "--enable_worker_worker_batch_get", "true",
                   "--shared_memory_size_mb", "64", "--unix_domain_socket_dir", dir.path()});
  EXPECT_EQ(w.result().code, 0) << w.result().output;
  ASSERT_GT(w.pid(), 0) << w.result().output;
  EXPECT_EQ(w.Stop().code, 0);

  // Metastore mode without etcd: the head node starts the metastore service
  // at --metastore_address, a worker node joins through it, and a value
  // written on one is read on the other.
  const int head_port = testing::FreePort(), node_port = testing::FreePort();
  const std::string head = Address("127.0.0.1", head_port);
  const std::string node = Address("127.0.0.1", node_port);
  const std::string ms = Address("127.0.0.1", testing::FreePort());
  Started h(head, {"-w", "--worker_address", head, "--metastore_address", ms,
                   "--start_metastore_service", "true", "--arena_per_tenant", "1",
                   "--enable_worker_worker_batch_get", "true", "--shared_memory_size_mb", "64",
                   "--unix_domain_socket_dir", dir.path()});
  ASSERT_EQ(h.result().code, 0) << h.result().output;
  ASSERT_GT(h.pid(), 0) << h.result().output;
  Started n(node, {"-w", "--worker_address", node, "--metastore_address", ms,
                   "--arena_per_tenant", "1", "--enable_worker_worker_batch_get", "true",
                   "--shared_memory_size_mb", "64", "--unix_domain_socket_dir", dir.path()});
  ASSERT_GT(n.pid(), 0) << n.result().output;
  KVClient on_head("127.0.0.1", head_port), on_node("127.0.0.1", node_port);
  ASSERT_TRUE(on_head.Init().ok());
  ASSERT_TRUE(on_node.Init().ok());
  ASSERT_TRUE(on_head.Set("tq/0", "from the head").ok());
  EXPECT_TRUE(testing::Eventually([&] {
    auto v = on_node.Get("tq/0");
    return v.ok() && *v == "from the head";
  }));
  EXPECT_EQ(n.Stop().code, 0);
  EXPECT_EQ(h.Stop().code, 0);
}

TEST(DscliCompat, UnreachableMetastoreFailsClearly) {
  testing::TempDir dir;
  const std::string addr = Address("127.0.0.1", testing::FreePort());
  const std::string dead = Address("127.0.0.1", testing::FreePort());
  Started w(addr, {"-w", "--worker_address", addr, "--metastore_address", dead,
                   "--unix_domain_socket_dir", dir.path(), "--shared_memory_size_mb", "32"});
  EXPECT_EQ(w.result().code, 1);
  EXPECT_NE(w.result().output.find("cannot reach etcd at " + dead), std::string::npos)
      << w.result().output;
}

}  // namespace
}  // namespace ds
