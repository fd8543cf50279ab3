// dscli's shared helpers: output lines, asking a worker over TCP, finding
// the worker binary and worker processes, waiting for a process to exit.
#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <utility>

#include "common/wire/rpc.h"
#include "dscli_internal.h"

namespace dscli {

using tqds::Status;
using tqds::wire::Message;
using tqds::wire::MsgType;
using Clock = std::chrono::steady_clock;

void Info(const std::string& line) {
  std::printf("[INFO] %s\n", line.c_str());
  std::fflush(stdout);
}

void Warn(const std::string& line) { std::fprintf(stderr, "[WARNING] %s\n", line.c_str()); }

int Error(const std::string& line) {
  std::fprintf(stderr, "[ERROR] %s\n", line.c_str());
  return 1;
}

bool PortOpen(const ds::HostPort& hp) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  if (::getaddrinfo(hp.host.c_str(), std::to_string(hp.port).c_str(), &hints, &res) != 0) {
    return false;
  }
  int fd = ::socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  bool open = ::connect(fd, res->ai_addr, res->ai_addrlen) == 0;
  ::close(fd);
  ::freeaddrinfo(res);
  return open;
}

tqds::Result<Message> Ask(const ds::HostPort& hp, MsgType type, int timeout_ms) {
  if (!PortOpen(hp)) return Status::Unavailable("nothing listens on ", hp.ToString());
  TQDS_ASSIGN_OR_RETURN(auto rpc, tqds::wire::RpcClient::Connect("tcp://" + hp.ToString()));
  return rpc->CallSync(Message(type, 0), std::chrono::milliseconds(timeout_ms));
}

std::string WorkerBinary() {
  if (const char* env = std::getenv("DS_WORKER_BIN"); env != nullptr && *env) return env;
  std::error_code ec;
  auto self = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    auto sibling = self.parent_path() / "datasystem_worker";
    if (std::filesystem::exists(sibling, ec)) return sibling.string();
  }
  return "datasystem_worker";  // PATH
}

bool OnPath(const std::string& prog) {
  const char* path = std::getenv("PATH");
  if (path == nullptr) return false;
  std::string p = path;
  size_t start = 0;
  while (start <= p.size()) {
    size_t colon = p.find(':', start);
    const size_t len = colon == std::string::npos ? std::string::npos : colon - start;
    std::string dir = p.substr(start, len);
    if (!dir.empty() && ::access((dir + "/" + prog).c_str(), X_OK) == 0) return true;
    if (colon == std::string::npos) break;
    start = colon + 1;
  }
  return false;
}

std::vector<std::string> Cmdline(pid_t pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/cmdline", std::ios::binary);
  std::vector<std::string> args;
  std::string a;
  while (std::getline(f, a, '\0')) args.push_back(a);
  return args;
}

std::optional<std::string> FlagIn(const std::vector<std::string>& args, const std::string& name) {
  for (size_t i = 1; i < args.size(); ++i) {
    for (const std::string& prefix : {"--" + name, "-" + name}) {
      if (args[i].rfind(prefix + "=", 0) == 0) return args[i].substr(prefix.size() + 1);
      if (args[i] == prefix && i + 1 < args.size()) return args[i + 1];
    }
  }
  return std::nullopt;
}

namespace {
// The network namespace of `pid` as (device, inode) of /proc/PID/ns/net, or
// nullopt when it cannot be read (another user's process without root).
std::optional<std::pair<dev_t, ino_t>> NetNamespace(const std::string& pid) {
  struct stat st {};
  if (::stat(("/proc/" + pid + "/ns/net").c_str(), &st) != 0) return std::nullopt;
  return std::make_pair(st.st_dev, st.st_ino);
}
}  // namespace

std::vector<pid_t> FindWorkers(const std::string& address) {
  std::vector<pid_t> pids;
  // An address names a worker within one network namespace: the same
  // host:port in another (a container, an `ip netns` node) is another worker.
  const auto own_net = NetNamespace("self");
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator("/proc", ec)) {
    const std::string name = e.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    const pid_t pid = std::atoi(name.c_str());
    if (pid == ::getpid()) continue;
    auto args = Cmdline(pid);
    if (args.empty() || std::filesystem::path(args[0]).filename() != "datasystem_worker") continue;
    if (FlagIn(args, "worker_address") != address) continue;
    const auto net = NetNamespace(name);
    if (own_net && net && *net != *own_net) continue;
    pids.push_back(pid);
  }
  return pids;
}

bool WaitGone(pid_t pid, const ds::HostPort& hp, std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  int pidfd = pid > 0 ? static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)) : -1;
  if (pid > 0 && pidfd < 0 && errno == ESRCH) return true;
  if (pidfd >= 0) {
    while (true) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
      pollfd p{pidfd, POLLIN, 0};
      int rc = ::poll(&p, 1, static_cast<int>(std::max<int64_t>(0, left.count())));
      if (rc < 0 && errno == EINTR) continue;
      ::close(pidfd);
      return rc == 1;
    }
  }
  // Another pid namespace: watch the port (polled; nothing to wait on).
  while (Clock::now() < deadline) {
    if (!PortOpen(hp)) return true;
    ::usleep(100 * 1000);
  }
  return false;
}

}  // namespace dscli
