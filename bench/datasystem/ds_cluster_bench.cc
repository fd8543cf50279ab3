// ds_cluster_bench: cross-node get of 1 MiB and 64 MiB objects between two
// network namespaces joined by one veth pair (10.211.0.1 <-> 10.211.0.2),
// next to iperf3 (single stream, same direction, same veth pair, same run).
// etcd and the writer's worker run in node A, the reader's worker in node B;
// each get on B pulls the bytes from A (every key is read once, so nothing is
// served from B's cache). Needs root (ip netns), etcd and iperf3.
//
// Usage: ds_cluster_bench [--json FILE] [--quick] [--populate]
// Each case runs with the reader's shared memory warm (the worker's default,
// --populate_memory: pages committed in the background at start, as
// iperf3's reused buffer) and cold (--no_populate_memory: fresh pages, each
// faulted in on first write); --populate runs only the warm cases.
// (internal roles, run inside a namespace: --role write|read ...)
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <numeric>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "common/netns.h"
#include "common/subprocess.h"
#include "common/worker_warm.h"
#include "ds/kv_client.h"

namespace {

using Clock = std::chrono::steady_clock;
using tqds::testing::InNetns;
using tqds::testing::RunProgram;
using tqds::testing::StopProcess;
using tqds::testing::TwoNodeNet;
constexpr const char* kIp = tqds::testing::kIpBin;
const std::string kIpA = "10.211.0.1", kIpB = "10.211.0.2";

// ------------------------------------------------------------------ roles

std::string KeyName(const std::string& prefix, int i) { return prefix + "/" + std::to_string(i); }

int RoleWrite(const std::string& host, int port, const std::string& prefix, int count,
              uint64_t size) {
  ds::KVClient c(host, port);
  if (auto st = c.Init(); !st.ok()) return std::printf("ERR %s\n", st.ToString().c_str()), 1;
  for (int i = 0; i < count; ++i) {
    auto wb = c.MCreate({KeyName(prefix, i)}, {size});
    if (!wb.ok()) return std::printf("ERR %s\n", wb.status().ToString().c_str()), 1;
    uint8_t* d = (*wb)[0].data();
    for (uint64_t j = 0; j < size; j += 4096) d[j] = static_cast<uint8_t>(i + j / 4096);
    if (auto st = c.MSetBuffer(*wb); !st.ok()) return std::printf("ERR %s\n", st.ToString().c_str()), 1;
  }
  std::printf("OK\n");
  return 0;
}

// Prints one line per get: seconds it took (or ERR).
int RoleRead(const std::string& host, int port, const std::string& prefix, int count,
             uint64_t size) {
  ds::KVClient c(host, port);
  if (auto st = c.Init(); !st.ok()) return std::printf("ERR %s\n", st.ToString().c_str()), 1;
  // A warm worker commits its memory in the background: measure after that.
  tq::bench::WaitWorkerWarm(c, std::chrono::seconds(60));
  for (int i = 0; i < count; ++i) {
    auto t0 = Clock::now();
    auto got = c.GetBuffers({KeyName(prefix, i)});
    double s = std::chrono::duration<double>(Clock::now() - t0).count();
    if (!got.ok() || !(*got)[0] || (*got)[0]->size() != size) {
      std::printf("ERR %s\n", got.ok() ? "missing or wrong size" : got.status().ToString().c_str());
      return 1;
    }
    const uint8_t* d = (*got)[0]->data();
    for (uint64_t j = 0; j < size; j += 4096) {
      if (d[j] != static_cast<uint8_t>(i + j / 4096)) return std::printf("ERR wrong bytes\n"), 1;
    }
    std::printf("%.9f\n", s);
  }
  return 0;
}

// ------------------------------------------------------------------ driver

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

struct Worker {
  pid_t pid = -1;
  int port = 0;
};

bool StartWorker(const std::string& ns, const std::string& ip, int port, const std::string& etcd,
                 int conns, const std::string& dir, bool populate, Worker* w,
                 bool quiet = false) {
  int p[2];
  if (::pipe(p) != 0) return false;
  ::fcntl(p[0], F_SETFD, FD_CLOEXEC);  // p[1] stays open in the worker (--ready_fd)
  std::vector<std::string> argv =
      InNetns(ns, {DS_WORKER_BIN, "--worker_address", ip + ":" + std::to_string(port),
                   "--etcd_address", etcd, "--unix_socket_dir", dir, "--shared_memory_size_mb",
                   "2048", "--pull_connections", std::to_string(conns), "--ready_fd",
                   std::to_string(p[1])});
  argv.push_back(populate ? "--populate_memory" : "--no_populate_memory");
  int devnull = ::open("/dev/null", O_WRONLY | O_CLOEXEC);
  pid_t pid = tqds::testing::ForkExec(argv, {.err = devnull});
  if (devnull >= 0) ::close(devnull);
  ::close(p[1]);
  std::string line = tqds::testing::ReadLine(p[0]);
  ::close(p[0]);
  w->pid = pid;
  w->port = port;
  if (line.rfind("READY", 0) != 0) {
    if (pid > 0) ::waitpid(pid, nullptr, 0);
    w->pid = -1;
    if (quiet) return false;
    std::cerr << "worker in " << ns << " failed: " << line << "\n";
    return false;
  }
  return true;
}

double Iperf(const TwoNodeNet& net, int seconds) {
  // Data flows A -> B, like a pull of A's bytes by B: server in B, client in A.
  pid_t server = tqds::testing::SpawnLogged(
      InNetns(net.b(), {"/usr/bin/iperf3", "-s", "-1", "-B", kIpB, "-p", "5201"}), "/dev/null");
  double bps = 0;
  for (int attempt = 0; attempt < 50 && bps == 0; ++attempt) {
    auto r = RunProgram(InNetns(net.a(), {"/usr/bin/iperf3", "-c", kIpB, "-p", "5201", "-t",
                                          std::to_string(seconds), "-P", "1", "-J"}));
    if (r.code == 0) {
      try {
        auto j = nlohmann::json::parse(r.output);
        bps = j["end"]["sum_received"]["bits_per_second"].get<double>();
      } catch (const std::exception&) {
      }
    } else {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));  // server not listening yet
    }
  }
  StopProcess(server);
  return bps / 8;  // bytes per second
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.size() == 6 && args[0] == "--role") {
    const std::string& role = args[1];
    int port = std::stoi(args[3]);
    int count = std::stoi(args[5].substr(0, args[5].find(':')));
    uint64_t size = std::stoull(args[5].substr(args[5].find(':') + 1));
    if (role == "write") return RoleWrite(args[2], port, args[4], count, size);
    if (role == "read") return RoleRead(args[2], port, args[4], count, size);
    return 2;
  }
  std::string json_path;
  bool quick = false, populate = false;
  for (size_t i = 0; i < args.size(); ++i) {
    if (args[i] == "--json" && i + 1 < args.size()) json_path = args[++i];
    else if (args[i] == "--quick") quick = true;
    else if (args[i] == "--populate") populate = true;
    else {
      std::cerr << "usage: ds_cluster_bench [--json FILE] [--quick] [--populate]\n";
      return 2;
    }
  }
  if (::geteuid() != 0) {
    std::cerr << "ds_cluster_bench needs root (it creates network namespaces)\n";
    return 2;
  }
  for (const char* bin : {"/usr/bin/etcd", "/usr/bin/iperf3", kIp}) {
    if (::access(bin, X_OK) != 0) {
      std::cerr << "ds_cluster_bench needs " << bin << "\n";
      return 2;
    }
  }
  signal(SIGPIPE, SIG_IGN);
  // The transport itself is measured: plain tcp on the namespaces'
  // addresses, allowed explicitly (the processes would otherwise need keys).
  tqds::testing::ScopedPlainTcp plain_tcp;
  TwoNodeNet net("dscb", kIpA, kIpB);  // removed last, after every process is gone
  if (std::string why = net.Build(); !why.empty()) {
    std::cerr << why << "\n";
    return 2;
  }
  char tmpl[] = "/tmp/dscb_XXXXXX";
  const std::string dir = ::mkdtemp(tmpl);
  const std::string etcd = kIpA + ":2379";
  pid_t etcd_pid = tqds::testing::SpawnLogged(
      InNetns(net.a(), {"/usr/bin/etcd", "--name", "b", "--data-dir", dir + "/etcd",
                        "--listen-client-urls", "http://" + etcd, "--advertise-client-urls",
                        "http://" + etcd, "--listen-peer-urls", "http://" + kIpA + ":2380",
                        "--initial-advertise-peer-urls", "http://" + kIpA + ":2380",
                        "--initial-cluster", "b=http://" + kIpA + ":2380", "--log-level",
                        "error"}),
      dir + "/etcd.log");
  const std::string self = "/proc/self/exe";
  char exe[4096] = {0};
  ssize_t n = ::readlink(self.c_str(), exe, sizeof(exe) - 1);
  (void)n;
  nlohmann::json out;
  const int iperf_s = quick ? 2 : 4;
  const int n1 = quick ? 50 : 200, n64 = quick ? 6 : 12;
  std::vector<int> conn_settings = quick ? std::vector<int>{4} : std::vector<int>{1, 2, 4};
  // Cold: the reader's worker receives into pages it never touched (each
  // 4 KiB shared-memory page is allocated and zeroed on first write); warm
  // (--populate_memory): into committed pages, as iperf3 reuses one buffer.
  int rc = 0;
  Worker wa{}, wb{};
  do {
    // Worker A (waits for etcd: datasystem_worker refuses to start without it).
    bool started = false;
    for (int i = 0; i < 100 && !started; ++i) {
      started = StartWorker(net.a(), kIpA, 31501, etcd, 4, dir, false, &wa, /*quiet=*/i < 99);
      if (!started) std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
    if (!started) {
      rc = 1;
      break;
    }
    for (auto [prefix, spec] : {std::pair{"m1", std::to_string(n1) + ":" + std::to_string(1 << 20)},
                                std::pair{"m64", std::to_string(n64) + ":" + std::to_string(64 << 20)}}) {
      std::string w =
          RunProgram(InNetns(net.a(), {exe, "--role", "write", kIpA, "31501", prefix, spec}))
              .output;
      if (w != "OK\n") {
        std::cerr << "write failed: " << w;
        rc = 1;
      }
    }
    if (rc) break;
    const double iperf_before = Iperf(net, iperf_s);
    std::printf("%-28s %12s %12s %10s\n", "case", "median", "GB/s", "x iperf3");
    std::printf("%-28s %12s %12.2f %10s\n", "iperf3 single stream A->B", "-", iperf_before / 1e9, "1.00");
    out["iperf3_single_stream_Bps"] = iperf_before;
    double target_bps = 0;  // 64 MiB, default worker (warm, 4 connections)
    std::vector<std::pair<int, bool>> configs;  // (pull connections, reader's memory populated)
    for (bool warm : {false, true}) {
      if (warm || !populate) {
        for (int c : conn_settings) configs.push_back({c, warm});
      }
    }
    for (auto [conns, warm] : configs) {
      if (!StartWorker(net.b(), kIpB, 31502, etcd, conns, dir, warm, &wb)) {
        rc = 1;
        break;
      }
      for (auto [prefix, count, size] : {std::tuple{"m1", n1, 1 << 20}, std::tuple{"m64", n64, 64 << 20}}) {
        std::string spec = std::to_string(count) + ":" + std::to_string(size);
        std::string r =
            RunProgram(InNetns(net.b(), {exe, "--role", "read", kIpB, "31502", prefix, spec}))
                .output;
        std::vector<double> secs;
        std::istringstream is(r);
        std::string line;
        while (std::getline(is, line)) {
          if (line.rfind("ERR", 0) == 0) {
            std::cerr << "read failed: " << line << "\n";
            rc = 1;
          } else if (!line.empty()) {
            secs.push_back(std::stod(line));
          }
        }
        if (secs.empty()) continue;
        double med = Median(secs);
        double bps = static_cast<double>(size) / med;
        std::string name = std::string(size == (1 << 20) ? "get 1 MiB" : "get 64 MiB") +
                           " " + std::to_string(conns) + "c " + (warm ? "warm" : "cold");
        std::printf("%-28s %9.3f ms %12.2f %10.2f\n", name.c_str(), med * 1e3, bps / 1e9,
                    bps / iperf_before);
        nlohmann::json row = {{"size", size}, {"pull_connections", conns}, {"gets", secs.size()},
                              {"reader_memory_populated", warm},
                              {"median_s", med}, {"Bps", bps}, {"ratio_to_iperf3", bps / iperf_before}};
        out["cross_node_get"].push_back(row);
        if (warm && conns == 4 && size == (64 << 20)) target_bps = bps;
      }
      StopProcess(wb.pid);  // a fresh reader: nothing cached
      wb.pid = -1;
    }
    const double iperf_after = Iperf(net, iperf_s);
    std::printf("%-28s %12s %12.2f %10s\n", "iperf3 again (after)", "-", iperf_after / 1e9, "");
    out["iperf3_single_stream_after_Bps"] = iperf_after;
    // Against the better of the two iperf3 runs (the stricter reference).
    const double target_ratio = target_bps / std::max(iperf_before, iperf_after);
    std::printf("%s 64 MiB cross-node get (default worker: warm, 4 connections) >= 0.9 x iperf3 "
                "(the higher of the two runs): %.2f x\n",
                target_ratio >= 0.9 ? "PASS" : "MISS", target_ratio);
    out["target_64MiB_ratio"] = target_ratio;
  } while (false);
  StopProcess(wb.pid);
  StopProcess(wa.pid);
  StopProcess(etcd_pid);
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
  if (!json_path.empty()) std::ofstream(json_path) << out.dump(2) << "\n";
  return rc;
}
