// Helpers for datasystem tests: start workers and etcd as real processes
// owned by RAII guards (killed by pid even when a test fails). Running
// programs, ports and temp dirs come from tests/common/subprocess.h. Paths
// of the built binaries come from CMake (DS_WORKER_BIN, DSCLI_BIN,
// DS_TEST_CLIENT_BIN).
#pragma once

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <iterator>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "common/netns.h"
#include "common/subprocess.h"
#include "datasystem/worker_options.h"

namespace ds::testing {

// Shared with the other suites and the benchmarks (tests/common/subprocess.h).
using tqds::testing::FreePort;
using tqds::testing::ReadLine;
using tqds::testing::RunProgram;
using tqds::testing::RunResult;
using tqds::testing::TempDir;
using tqds::testing::WaitExit;

// n pseudo-random bytes, the same for the same seed.
inline std::string RandomBytes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::string s(n, '\0');
  for (auto& c : s) c = static_cast<char>(rng());
  return s;
}

// Kills `pid` on destruction (SIGTERM, then SIGKILL after 5 s).
class ProcessGuard {
 public:
  explicit ProcessGuard(pid_t pid = -1) : pid_(pid) {}
  ProcessGuard(const ProcessGuard&) = delete;
  ProcessGuard& operator=(const ProcessGuard&) = delete;
  ~ProcessGuard() { Kill(SIGTERM); }
  void Reset(pid_t pid) {
    Kill(SIGTERM);
    pid_ = pid;
  }
  pid_t pid() const { return pid_; }
  // Sends `sig` and waits for the exit (SIGKILL after 5 s).
  void Kill(int sig) {
    tqds::testing::StopProcess(pid_, sig, 5000);
    pid_ = -1;
  }
  void Forget() { pid_ = -1; }

 private:
  pid_t pid_;
};

// Starts argv in the background with stdout on a pipe; returns pid and the
// read end (caller closes).
inline pid_t Spawn(const std::vector<std::string>& argv, int* out_fd) {
  auto child = tqds::testing::SpawnPiped(argv, /*with_stderr=*/false);
  *out_fd = child.out;
  return child.pid;
}

// A datasystem_worker child process started with a readiness pipe.
struct WorkerConfig {
  uint64_t shm_mb = 64;
  std::string spill_dir;
  uint64_t spill_mb = 0;
  double high_watermark = 0.9;
  std::string host = "127.0.0.1";    // address the worker serves
  std::string etcd;                  // --etcd_address; empty: standalone
  std::string netns;                 // run inside this network namespace (ip netns exec)
  std::vector<std::string> extra;    // more flags
};

class WorkerProcess {
 public:
  using Config = WorkerConfig;
  explicit WorkerProcess(Config config = Config()) : config_(std::move(config)) {}
  // Returns "" when ready, else the worker's error.
  // `port` 0: a free port; else that port (a restart at the same address).
  std::string Start(int port = 0) {
    port_ = port != 0 ? port : FreePort();
    int p[2];
    if (::pipe(p) != 0) return "pipe failed";
    std::vector<std::string> argv = tqds::testing::InNetns(
        config_.netns, {DS_WORKER_BIN, "--worker_address", address(), "--unix_socket_dir",
                        dir_.path(), "--shared_memory_size_mb", std::to_string(config_.shm_mb),
                        "--high_watermark", std::to_string(config_.high_watermark), "--ready_fd",
                        std::to_string(p[1])});
    if (!config_.etcd.empty()) argv.insert(argv.end(), {"--etcd_address", config_.etcd});
    argv.insert(argv.end(), config_.extra.begin(), config_.extra.end());
    if (!config_.spill_dir.empty()) {
      argv.insert(argv.end(), {"--spill_directory", config_.spill_dir, "--spill_size_limit_mb",
                               std::to_string(config_.spill_mb)});
    }
    ::fcntl(p[0], F_SETFD, FD_CLOEXEC);  // p[1] stays open in the worker
    // The log goes to a file in the worker's directory (LogTail), or to the
    // test's stderr with DS_TEST_VERBOSE.
    int err = std::getenv("DS_TEST_VERBOSE") == nullptr
                  ? ::open(log_path().c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600)
                  : -1;
    guard_.Reset(tqds::testing::ForkExec(argv, {.err = err}));
    if (err >= 0) ::close(err);
    ::close(p[1]);
    std::string line = ReadLine(p[0]);
    ::close(p[0]);
    if (line.rfind("READY", 0) == 0) return "";
    guard_.Kill(SIGKILL);
    return line.empty() ? "worker exited" : line;
  }
  void Stop() { guard_.Kill(SIGTERM); }
  void Crash() { guard_.Kill(SIGKILL); }
  int port() const { return port_; }
  pid_t pid() const { return guard_.pid(); }
  std::string address() const { return config_.host + ":" + std::to_string(port_); }
  const std::string& host() const { return config_.host; }
  std::string socket_path() const {
    return dir_.path() + "/datasystem_worker_" + config_.host + "_" + std::to_string(port_) + ".sock";
  }
  const std::string& dir() const { return dir_.path(); }
  std::string log_path() const { return dir_.path() + "/worker.log"; }
  // The last `max_bytes` of the worker's log (all its runs), for a failure message.
  std::string LogTail(size_t max_bytes = 4000) const {
    std::ifstream in(log_path(), std::ios::binary);
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (text.size() > max_bytes) text = "..." + text.substr(text.size() - max_bytes);
    return "--- log of the worker at " + address() + " ---\n" + text;
  }

 private:
  Config config_;
  TempDir dir_;
  int port_ = 0;
  ProcessGuard guard_;
};

// An etcd server (Debian's etcd-server) with its own data directory, killed
// by pid at the end. Restart() brings it back on the same ports and data.
class EtcdProcess {
 public:
  explicit EtcdProcess(std::string host = "127.0.0.1", std::string netns = "")
      : host_(std::move(host)), netns_(std::move(netns)) {
    client_port_ = netns_.empty() ? FreePort() : 2379;
    peer_port_ = netns_.empty() ? FreePort() : 2380;
  }
  static bool Installed() { return ::access("/usr/bin/etcd", X_OK) == 0; }
  void Start() {
    std::string curl = "http://" + address();
    std::string purl = "http://" + host_ + ":" + std::to_string(peer_port_);
    std::vector<std::string> argv = tqds::testing::InNetns(
        netns_, {"/usr/bin/etcd", "--name", "t", "--data-dir", dir_.path() + "/etcd",
                 "--listen-client-urls", curl, "--advertise-client-urls", curl,
                 "--listen-peer-urls", purl, "--initial-advertise-peer-urls", purl,
                 "--initial-cluster", "t=" + purl, "--log-level", "error"});
    guard_.Reset(tqds::testing::SpawnLogged(argv, dir_.path() + "/etcd.log"));
  }
  void Stop() { guard_.Kill(SIGKILL); }
  std::string address() const { return host_ + ":" + std::to_string(client_port_); }
  pid_t pid() const { return guard_.pid(); }

 private:
  std::string host_, netns_;
  int client_port_ = 0, peer_port_ = 0;
  TempDir dir_;
  ProcessGuard guard_;
};

// Waits until `cond` holds, re-checking on a short back-off, up to `timeout`.
// For conditions that can only be observed by asking (e.g. worker counters).
inline bool Eventually(const std::function<bool()>& cond,
                       std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  auto backoff = std::chrono::milliseconds(1);
  while (true) {
    if (cond()) return true;
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(backoff);
    backoff = std::min(backoff * 2, std::chrono::milliseconds(50));
  }
}

}  // namespace ds::testing
