// dscli status (ours: one worker's counters over TCP, or the workers with a
// live pid file in a socket directory) and dscli generate_config (a
// worker_config.json with every flag and its default here).
#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include "common/wire/message.h"
#include "datasystem/worker_flags.h"
#include "dscli_internal.h"

namespace dscli {

using tqds::wire::MsgType;

int RunStatus(const std::vector<std::string>& argv) {
  std::string address, socket_dir = ds::WorkerOptions{}.unix_domain_socket_dir;
  for (size_t i = 0; i < argv.size(); ++i) {
    const std::string& a = argv[i];
    if (a == "-h" || a == "--help") {
      std::printf("usage: dscli status [--worker_address H:P] [--unix_domain_socket_dir DIR]\n"
                  "  one worker's counters, or the workers with a pid file in DIR "
                  "(default %s)\n",
                  socket_dir.c_str());
      return 0;
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
  if (!address.empty()) {
    auto hp = ds::HostPort::Parse(address, "--worker_address");
    if (!hp.ok()) return Error(hp.status().message());
    auto stats = Ask(*hp, MsgType::kDsStats, 2000);
    if (!stats.ok()) return Error("no datasystem worker is running at " + address);
    const auto& body = stats->body();
    std::printf("datasystem worker at %s: running\n", address.c_str());
    if (body.type == msgpack::type::MAP) {
      for (uint32_t i = 0; i < body.via.map.size; ++i) {
        const auto& kv = body.via.map.ptr[i];
        if (kv.key.type != msgpack::type::STR) continue;
        std::string k(kv.key.via.str.ptr, kv.key.via.str.size);
        if (kv.val.type == msgpack::type::POSITIVE_INTEGER) {
          std::printf("  %-18s %llu\n", k.c_str(), static_cast<unsigned long long>(kv.val.via.u64));
        } else if (kv.val.type == msgpack::type::STR) {
          std::printf("  %-18s %.*s\n", k.c_str(), static_cast<int>(kv.val.via.str.size),
                      kv.val.via.str.ptr);
        }
      }
    }
    return 0;
  }
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
