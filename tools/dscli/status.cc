// dscli status (ours: a table of a worker's cluster over TCP, or the workers
// with a live pid file in a socket directory) and dscli generate_config (a
// worker_config.json with every flag and its default here).
#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "common/text_table.h"
#include "common/wire/message.h"
#include "datasystem/stats_codec.h"
#include "datasystem/worker_flags.h"
#include "dscli_internal.h"

namespace dscli {

using tqds::wire::MsgType;

namespace {

constexpr int kAskTimeoutMs = 2000;

struct WorkerRow {
  std::string address;
  tqds::Result<ds::WorkerStats> stats;
};

// Stats of the worker at `address` over its TCP port.
tqds::Result<ds::WorkerStats> AskStats(const std::string& address) {
  TQDS_ASSIGN_OR_RETURN(auto hp, ds::HostPort::Parse(address, "worker address"));
  auto reply = Ask(hp, MsgType::kDsStats, kAskTimeoutMs);
  if (!reply.ok()) {
    return tqds::Status::Unavailable("no answer in ", kAskTimeoutMs, " ms (", reply.status().message(), ")");
  }
  return ds::DecodeWorkerStats(*reply);
}

std::string Percent(uint64_t part, uint64_t whole) {
  if (whole == 0) return "";
  return "  " + std::to_string((part * 100 + whole / 2) / whole) + "%";
}

std::string Table(const std::vector<WorkerRow>& rows) {
  tqds::TextTable t;
  t.head = {"worker", "state", "pid", "clients", "objects", "spilled", "shared memory used",
            "spill used", "evictions", "pulls", "pulled", "peers"};
  t.right = {false, false, true, true, true, true, false, false, true, true, true, true};
  for (const auto& r : rows) {
    if (!r.stats.ok()) {
      t.rows.push_back({r.address, r.stats.status().message()});
      continue;
    }
    const ds::WorkerStats& s = *r.stats;
    t.rows.push_back({r.address, "running", std::to_string(s.pid), std::to_string(s.clients),
                      std::to_string(s.objects), std::to_string(s.spilled_objects),
                      tqds::HumanBytes(s.used) + " / " + tqds::HumanBytes(s.capacity) + Percent(s.used, s.capacity),
                      s.spill_limit == 0 ? "-" : tqds::HumanBytes(s.spill_used) + " / " + tqds::HumanBytes(s.spill_limit),
                      std::to_string(s.evictions), std::to_string(s.pulls), tqds::HumanBytes(s.pulled_bytes),
                      s.coordination.empty() ? "-" : std::to_string(s.peers.size())});
  }
  return t.Render();
}

nlohmann::json ToJson(const WorkerRow& r) {
  if (!r.stats.ok()) return {{"worker", r.address}, {"state", "no answer"}, {"error", r.stats.status().message()}};
  const ds::WorkerStats& s = *r.stats;
  nlohmann::json row = {{"worker", r.address},     {"state", "running"},
                        {"pid", s.pid},            {"memory_populated", s.memory_populated},
                        {"coordination", s.coordination}, {"peers", s.peers},
                        {"metrics", s.metrics}};
  ds::ForEachWorkerCounter(s, [&](const char* name, const uint64_t& v) { row[name] = v; });
  return row;
}

// `dscli status -w H:P`: that worker, and every other worker of its cluster
// as it sees them, one row each.
int ClusterStatus(const std::string& address, bool json) {
  auto hp = ds::HostPort::Parse(address, "--worker_address");
  if (!hp.ok()) return Error(hp.status().message());
  std::vector<WorkerRow> rows;
  rows.push_back({address, AskStats(address)});
  if (!rows[0].stats.ok()) {
    return Error("no datasystem worker is running at " + address + ": " + rows[0].stats.status().message());
  }
  const ds::WorkerStats self = *rows[0].stats;
  for (const auto& peer : self.peers) rows.push_back({peer, AskStats(peer)});
  if (json) {
    nlohmann::json doc = {{"worker", address}, {"coordination", self.coordination},
                          {"workers", nlohmann::json::array()}};
    for (const auto& r : rows) doc["workers"].push_back(ToJson(r));
    std::printf("%s\n", doc.dump(2).c_str());
    return 0;
  }
  std::printf("datasystem worker at %s: running\n", address.c_str());
  if (self.coordination.empty()) {
    std::printf("standalone (no etcd or metastore)\n");
  } else {
    size_t answering = 0;
    for (const auto& r : rows) answering += r.stats.ok() ? 1 : 0;
    std::printf("cluster through %s: %zu worker%s, %zu answering\n", self.coordination.c_str(), rows.size(),
                rows.size() == 1 ? "" : "s", answering);
  }
  std::fputs(Table(rows).c_str(), stdout);
  for (const auto& r : rows) {
    if (r.stats.ok() && !r.stats->metrics.empty()) {
      std::printf("metrics of %s: http://%s/metrics\n", r.address.c_str(), r.stats->metrics.c_str());
    }
  }
  return 0;
}

}  // namespace

int RunStatus(const std::vector<std::string>& argv) {
  std::string address, socket_dir = ds::WorkerOptions{}.unix_domain_socket_dir;
  bool json = false;
  for (size_t i = 0; i < argv.size(); ++i) {
    const std::string& a = argv[i];
    if (a == "-h" || a == "--help") {
      std::printf("usage: dscli status [--worker_address H:P [--json]] [--unix_domain_socket_dir DIR]\n"
                  "  --worker_address: that worker and every worker of its cluster, one row each\n"
                  "  (pid, clients, objects, shared memory, spill, evictions, cross-node pulls, peers);\n"
                  "  --json: the same as JSON. Without it: the workers with a pid file in DIR "
                  "(default %s)\n",
                  socket_dir.c_str());
      return 0;
    }
    if (a == "--json") {
      json = true;
      continue;
    }
    if (i + 1 >= argv.size()) return Error("dscli status: " + a + " needs a value");
    if (a == "--worker_address" || a == "-w") {
      address = argv[++i];
    } else if (a == "--unix_domain_socket_dir" || a == "--unix_socket_dir") {
      socket_dir = argv[++i];
    } else {
      return Error("dscli status: unknown option '" + a + "'");
    }
  }
  if (!address.empty()) return ClusterStatus(address, json);
  if (json) return Error("dscli status: --json needs --worker_address");
  int running = 0;
  std::error_code ec;
  const std::string prefix = "datasystem_worker_";
  for (const auto& e : std::filesystem::directory_iterator(socket_dir, ec)) {
    std::string name = e.path().filename().string();
    if (name.rfind(prefix, 0) != 0 || e.path().extension() != ".pid") continue;
    int fd = ::open(e.path().c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) continue;
    bool live = ::flock(fd, LOCK_SH | LOCK_NB) != 0;  // the worker holds it exclusively
    char buf[32] = {0};
    ssize_t n = ::pread(fd, buf, sizeof(buf) - 1, 0);
    (void)n;
    ::close(fd);
    if (!live) continue;
    ++running;
    // datasystem_worker_<host>_<port>.pid -> host:port
    std::string id = name.substr(prefix.size(), name.size() - prefix.size() - 4);
    if (auto us = id.rfind('_'); us != std::string::npos) id[us] = ':';
    std::printf("worker %s: running (pid %d)\n", id.c_str(), std::atoi(buf));
  }
  if (running == 0) {
    std::printf("no datasystem worker is running (socket dir %s)\n", socket_dir.c_str());
  }
  return 0;
}

int RunGenerateConfig(const std::vector<std::string>& argv) {
  std::string out_dir = std::filesystem::current_path().string();
  for (size_t i = 0; i < argv.size(); ++i) {
    const std::string& a = argv[i];
    if (a == "-h" || a == "--help") {
      std::printf("usage: dscli generate_config [-o DIR]\n"
                  "  writes DIR/worker_config.json: every worker flag with its default here\n");
      return 0;
    }
    if ((a == "-o" || a == "--output_path") && i + 1 < argv.size()) {
      out_dir = argv[++i];
    } else if (a.rfind("--output_path=", 0) == 0) {
      out_dir = a.substr(14);
    } else {
      return Error("Generate failed: unknown option '" + a + "'");
    }
  }
  std::error_code ec;
  if (!std::filesystem::is_directory(out_dir, ec)) {
    return Error("Generate failed: not a directory: " + out_dir);
  }
  const std::string path = (std::filesystem::path(out_dir) / "worker_config.json").string();
  std::ofstream f(path, std::ios::trunc);
  f << ds::WorkerConfigTemplate();
  if (!f.good()) return Error("Generate failed: cannot write " + path);
  Info("Worker configuration written to " + path);
  return 0;
}

}  // namespace dscli
