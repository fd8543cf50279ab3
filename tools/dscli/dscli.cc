// dscli: starts, stops and inspects datasystem workers with openYuanrong
// datasystem's command line: `dscli start -w <worker flags>` (or -f CONFIG),
// `dscli stop --worker_address H:P` (or -w H:P, -f CONFIG), `dscli
// generate_config -o DIR`, `dscli --version`, plus `dscli status`. Output
// lines are the real one's ("[INFO] [  OK  ] Start worker service @ H:P
// success, PID: N", "[ERROR] [  FAILED  ] ..."); docs/dscli_flags.md lists
// the worker flags.
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <vector>

#include "common/wire/rpc.h"
#include "datasystem/protocol.h"
#include "datasystem/worker_flags.h"

#ifndef TQDS_VERSION
#define TQDS_VERSION "unknown"
#endif

namespace {

using tqds::Status;
using tqds::wire::MapReader;
using tqds::wire::Message;
using tqds::wire::MsgType;
using Clock = std::chrono::steady_clock;

constexpr int kDefaultStartTimeoutS = 90;  // as the real dscli's
constexpr int kStopBaseTimeoutS = 180;     // the real stop waits 180 s + memory / 40 MiB/s

void Info(const std::string& line) {
  std::printf("[INFO] %s\n", line.c_str());
  std::fflush(stdout);
}
void Warn(const std::string& line) { std::fprintf(stderr, "[WARNING] %s\n", line.c_str()); }
int Error(const std::string& line) {
  std::fprintf(stderr, "[ERROR] %s\n", line.c_str());
  return 1;
}

const char* kUsage =
    "usage: dscli [-h] [--version] {start,stop,status,generate_config} ...\n"
    "\n"
    "Start, stop and inspect datasystem workers (openYuanrong datasystem's dscli).\n"
    "  start            start a worker: dscli start -w --worker_address H:P [worker flags]\n"
    "                   or dscli start -f worker_config.json\n"
    "  stop             stop a worker: dscli stop --worker_address H:P (or -w H:P, -f FILE)\n"
    "  status           one worker's counters (--worker_address H:P) or the local workers\n"
    "  generate_config  write worker_config.json (every flag, defaults here): -o DIR\n";

const char* kStartUsage =
    "usage: dscli start [-h] [-t SECONDS] [-d DIR] [--enable_ums] [numactl options]\n"
    "                   (-f FILE | -w WORKER_FLAGS...)\n"
    "  -t, --timeout SECONDS          wait this long for the worker to serve (default 90)\n"
    "  -f, --worker_config_path FILE  take the worker flags from a JSON file\n"
    "                                 (dscli generate_config writes one)\n"
    "  -w, --worker_args ...          every argument after -w is a worker flag\n"
    "  -d, --datasystem_home_dir DIR  base of the './' paths in the configuration file\n"
    "  --enable_ums                   accepted; no effect in this build\n"
    "  -N/--cpunodebind, -C/--physcpubind, -i/--interleave, -p/--preferred, -m/--membind,\n"
    "  -l/--localalloc                run the worker under numactl with these options\n"
    "\n";

// True when something accepts TCP connections at host:port.
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

// Sends one request to the worker's TCP port.
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

// The arguments of process `pid` (empty when it is gone or unreadable).
std::vector<std::string> Cmdline(pid_t pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/cmdline", std::ios::binary);
  std::vector<std::string> args;
  std::string a;
  while (std::getline(f, a, '\0')) args.push_back(a);
  return args;
}

// Value of --name (=value or next argument) in a command line.
std::optional<std::string> FlagIn(const std::vector<std::string>& args, const std::string& name) {
  for (size_t i = 1; i < args.size(); ++i) {
    for (const std::string& prefix : {"--" + name, "-" + name}) {
      if (args[i].rfind(prefix + "=", 0) == 0) return args[i].substr(prefix.size() + 1);
      if (args[i] == prefix && i + 1 < args.size()) return args[i + 1];
    }
  }
  return std::nullopt;
}

// datasystem_worker processes of this pid namespace serving `address`
// (matched on their --worker_address, as the real dscli matches its workers).
std::vector<pid_t> FindWorkers(const std::string& address) {
  std::vector<pid_t> pids;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator("/proc", ec)) {
    const std::string name = e.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    const pid_t pid = std::atoi(name.c_str());
    if (pid == ::getpid()) continue;
    auto args = Cmdline(pid);
    if (args.empty() || std::filesystem::path(args[0]).filename() != "datasystem_worker") continue;
    if (FlagIn(args, "worker_address") == address) pids.push_back(pid);
  }
  return pids;
}

// Waits up to `timeout` for `pid` to exit (pidfd), or without a pidfd for
// `hp` to stop accepting connections. True when it is gone.
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

// ------------------------------------------------------------------ start

struct StartArgs {
  int timeout_s = kDefaultStartTimeoutS;
  std::string config_path;
  std::string home_dir;
  bool enable_ums = false;
  bool worker_mode = false;
  std::vector<std::string> worker_args;
  std::vector<std::string> numactl;  // numactl options, "--name=value" / "--localalloc"
};

int StartHelp() {
  std::printf("%s%s", kStartUsage, ds::WorkerFlagsHelp().c_str());
  return 0;
}

int Start(const std::vector<std::string>& argv) {
  StartArgs s;
  for (size_t i = 0; i < argv.size(); ++i) {
    const std::string& a = argv[i];
    auto value = [&](const char* what) -> std::optional<std::string> {
      if (auto eq = a.find('='); a.rfind("--", 0) == 0 && eq != std::string::npos) {
        return a.substr(eq + 1);
      }
      if (i + 1 >= argv.size()) {
        Error(std::string("dscli start: ") + a + " needs " + what);
        return std::nullopt;
      }
      return argv[++i];
    };
    auto is = [&](const char* shrt, const char* lng) {
      return a == shrt || a == lng || a.rfind(std::string(lng) + "=", 0) == 0;
    };
    if (a == "-h" || a == "--help") return StartHelp();
    if (a == "-w" || a == "--worker_args") {
      s.worker_mode = true;
      s.worker_args.assign(argv.begin() + static_cast<std::ptrdiff_t>(i) + 1, argv.end());
      break;
    }
    if (is("-t", "--timeout")) {
      auto v = value("SECONDS");
      if (!v) return 1;
      auto t = std::strtol(v->c_str(), nullptr, 10);
      if (v->empty() || v->find_first_not_of("0123456789") != std::string::npos || t < 1) {
        return Error("dscli start: --timeout takes a positive number of seconds, got '" + *v + "'");
      }
      s.timeout_s = static_cast<int>(t);
    } else if (is("-f", "--worker_config_path")) {
      auto v = value("FILE");
      if (!v) return 1;
      s.config_path = *v;
    } else if (is("-d", "--datasystem_home_dir")) {
      auto v = value("DIR");
      if (!v) return 1;
      s.home_dir = std::filesystem::absolute(*v).lexically_normal().string();
    } else if (a == "--enable_ums") {
      s.enable_ums = true;
    } else if (a == "-l" || a == "--localalloc") {
      s.numactl.push_back("--localalloc");
    } else if (is("-N", "--cpunodebind") || is("-C", "--physcpubind") ||
               is("-i", "--interleave") || is("-p", "--preferred") || is("-m", "--membind")) {
      static const std::pair<const char*, const char*> kLong[] = {
          {"-N", "cpunodebind"}, {"-C", "physcpubind"}, {"-i", "interleave"},
          {"-p", "preferred"},   {"-m", "membind"}};
      std::string name;
      for (const auto& [shrt, lng] : kLong) {
        if (a == shrt || a.rfind(std::string("--") + lng, 0) == 0) name = lng;
      }
      auto v = value("a value");
      if (!v) return 1;
      s.numactl.push_back("--" + name + "=" + *v);
    } else {
      return Error("dscli start: unknown option '" + a +
                   "'; worker flags go after -w: dscli start -w --worker_address H:P "
                   "[--etcd_address H:P] ... (dscli start -h lists them)");
    }
  }
  if (s.worker_mode == !s.config_path.empty()) {
    return Error(s.worker_mode
                     ? "dscli start: pass either -w WORKER_FLAGS or -f FILE, not both"
                     : "dscli start: pass -w followed by worker flags (dscli start -w "
                       "--worker_address H:P ...) or -f worker_config.json");
  }
  // Worker flags, from the file or the command line.
  std::string address_hint = ds::WorkerOptions{}.worker_address;
  auto failed = [&](const std::string& why) {
    return Error("[  FAILED  ] Start worker service @ " + address_hint + " failed: " + why);
  };
  ds::WorkerFlags flags;
  if (!s.config_path.empty()) {
    auto entries = ds::ReadWorkerConfigFile(s.config_path, s.home_dir);
    if (!entries.ok()) return failed(entries.status().message());
    for (const auto& [name, value] : *entries) {
      if (Status st = ds::SetWorkerFlag(flags, name, value); !st.ok()) {
        return failed(s.config_path + ": " + st.message());
      }
    }
  } else {
    // The address first, so that a later error names the worker.
    std::vector<std::string> with_argv0 = {"dscli"};
    with_argv0.insert(with_argv0.end(), s.worker_args.begin(), s.worker_args.end());
    if (auto addr = FlagIn(with_argv0, "worker_address")) address_hint = *addr;
    auto parsed = ds::ParseWorkerFlags(s.worker_args);
    if (!parsed.ok()) return failed(parsed.status().message());
    flags = std::move(parsed).value();
  }
  ds::WorkerOptions& options = flags.options;
  address_hint = options.worker_address;
  if (options.log_dir.empty()) options.log_dir = options.unix_domain_socket_dir + "/logs";
  if (Status st = options.Validate(); !st.ok()) return failed(st.message());
  if (s.enable_ums) flags.no_effect.insert(flags.no_effect.begin(), "enable_ums (dscli)");
  if (!flags.no_effect.empty()) {
    std::string list;
    for (const auto& ne : flags.no_effect) list += (list.empty() ? "--" : ", --") + ne;
    Warn("accepted with no effect in this build: " + list + " (docs/dscli_flags.md)");
  }
  std::vector<std::string> args;
  if (!s.numactl.empty()) {
    if (!OnPath("numactl")) {
      return failed("numactl is not installed on this host (needed for the NUMA options)");
    }
    args.push_back("numactl");
    args.insert(args.end(), s.numactl.begin(), s.numactl.end());
  }
  const std::string bin = WorkerBinary();
  args.push_back(bin);
  for (auto& a : ds::WorkerArgv(flags)) args.push_back(std::move(a));
  Info("Log directory configured at: " + options.log_dir);

  int pipefd[2];
  if (::pipe2(pipefd, O_CLOEXEC) != 0) return failed(std::string("pipe: ") + std::strerror(errno));
  pid_t child = ::fork();
  if (child < 0) return failed(std::string("fork: ") + std::strerror(errno));
  if (child == 0) {
    ::setsid();
    int ready = ::dup(pipefd[1]);  // without O_CLOEXEC: survives exec
    args.push_back("--ready_fd=" + std::to_string(ready));
    int devnull = ::open("/dev/null", O_RDWR);
    ::dup2(devnull, 0);
    ::dup2(devnull, 1);
    ::dup2(devnull, 2);
    std::vector<char*> cargv;
    for (auto& a : args) cargv.push_back(a.data());
    cargv.push_back(nullptr);
    ::execvp(cargv[0], cargv.data());
    std::string msg = "ERROR cannot run " + args[0] + ": " + std::strerror(errno) + "\n";
    ssize_t n = ::write(ready, msg.data(), msg.size());
    (void)n;
    ::_exit(127);
  }
  ::close(pipefd[1]);
  Info("Starting worker service with PID: " + std::to_string(child));
  // Wait for READY/ERROR on the pipe, the worker's exit, or the timeout.
  std::string answer;
  const auto deadline = Clock::now() + std::chrono::seconds(s.timeout_s);
  bool timed_out = false;
  char buf[1024];
  while (true) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (left.count() <= 0) {
      timed_out = true;
      break;
    }
    pollfd p{pipefd[0], POLLIN, 0};
    int rc = ::poll(&p, 1, static_cast<int>(left.count()));
    if (rc < 0 && errno == EINTR) continue;
    if (rc == 0) continue;  // deadline check above
    ssize_t n = ::read(pipefd[0], buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    answer.append(buf, static_cast<size_t>(n));
    if (answer.find('\n') != std::string::npos) break;
  }
  ::close(pipefd[0]);
  while (!answer.empty() && answer.back() == '\n') answer.pop_back();
  if (answer.rfind("READY ", 0) == 0) {
    Info("[  OK  ] Start worker service @ " + options.worker_address +
         " success, PID: " + answer.substr(6));
    return 0;
  }
  if (timed_out) {
    ::kill(child, SIGKILL);
    ::waitpid(child, nullptr, 0);
    return failed("worker service is not ready within " + std::to_string(s.timeout_s) +
                  " seconds (it was killed); see its log in " + options.log_dir);
  }
  int status = 0;
  ::waitpid(child, &status, 0);
  if (answer.rfind("ERROR ", 0) == 0) return failed(answer.substr(6));
  return failed("the worker exited during start-up (status " + std::to_string(status) +
                "); see its log in " + options.log_dir);
}

// ------------------------------------------------------------------ stop

int Stop(const std::vector<std::string>& argv) {
  std::string address, config_path;
  std::optional<int> timeout_s;
  for (size_t i = 0; i < argv.size(); ++i) {
    const std::string& a = argv[i];
    if (a == "-h" || a == "--help") {
      std::printf(
          "usage: dscli stop [-h] (-w ADDR | --worker_address ADDR | -f FILE) [--timeout_s S]\n"
          "  stops the datasystem_worker serving ADDR (SIGTERM; SIGKILL after the timeout,\n"
          "  default 180 s + shared memory MiB / 40)\n");
      return 0;
    }
    std::string name = a, value;
    bool has_value = false;
    if (auto eq = a.find('='); a.rfind("--", 0) == 0 && eq != std::string::npos) {
      name = a.substr(0, eq);
      value = a.substr(eq + 1);
      has_value = true;
    } else if (i + 1 < argv.size()) {
      value = argv[i + 1];
    }
    const bool known = name == "-w" || name == "--worker_address" || name == "-f" ||
                       name == "--worker_config_path" || name == "--timeout_s" ||
                       name == "-t" || name == "--timeout";
    if (!known) return Error("Stop failed: unknown option '" + a + "'");
    if (!has_value) {
      if (i + 1 >= argv.size()) return Error("Stop failed: " + a + " needs a value");
      ++i;
    }
    if (name == "-w" || name == "--worker_address") {
      address = value;
    } else if (name == "-f" || name == "--worker_config_path") {
      config_path = value;
    } else {
      if (value.empty() || value.find_first_not_of("0123456789") != std::string::npos) {
        return Error("Stop failed: " + name + " takes a number of seconds, got '" + value + "'");
      }
      timeout_s = std::atoi(value.c_str());
    }
  }
  if (address.empty() == config_path.empty()) {
    return Error("Stop failed: pass one of --worker_address H:P (-w H:P) or -f worker_config.json");
  }
  if (!config_path.empty()) {
    auto entries = ds::ReadWorkerConfigFile(config_path, "");
    if (!entries.ok()) return Error("Stop failed: " + entries.status().message());
    for (const auto& [name, value] : *entries) {
      if (name == "worker_address") address = value;
    }
    if (address.empty()) {
      return Error("Stop failed: the configuration file has no worker_address value");
    }
  }
  auto hp = ds::HostPort::Parse(address, "--worker_address");
  if (!hp.ok()) return Error("Stop failed: " + hp.status().message());

  auto pids = FindWorkers(address);
  if (pids.size() > 1) {
    std::string list;
    for (pid_t p : pids) list += (list.empty() ? "" : ", ") + std::to_string(p);
    return Error("Stop failed: several datasystem_worker processes serve " + address + ": " + list);
  }
  pid_t pid = pids.empty() ? 0 : pids[0];
  bool by_rpc = false;
  if (pid == 0) {
    // Not in this pid namespace (or started otherwise): ask it over TCP.
    auto hello = Ask(*hp, MsgType::kDsHello, 2000);
    if (!hello.ok()) {
      return Error("Stop failed: no datasystem worker is running at " + address);
    }
    auto r = MapReader::Of(hello->body(), "Hello reply");
    pid = r.ok() ? static_cast<pid_t>(r->GetOr<int64_t>(ds::proto::kPid, 0).ValueOr(0)) : 0;
    auto bye = Ask(*hp, MsgType::kDsShutdown, 2000);
    if (!bye.ok()) {
      return Error("Stop failed: cannot ask the worker at " + address + " to stop: " +
                   bye.status().message());
    }
    by_rpc = true;
  }
  if (!timeout_s) {
    // The real dscli's formula: 180 s + shared memory / 40 MiB/s.
    long shm_mb = 1024;
    if (auto v = FlagIn(Cmdline(pid), "shared_memory_size_mb")) shm_mb = std::atol(v->c_str());
    timeout_s = kStopBaseTimeoutS + static_cast<int>(std::max(0L, shm_mb) / 40);
  }
  if (!by_rpc && ::kill(pid, SIGTERM) != 0) {
    if (errno == ESRCH) return Error("Stop failed: the process " + std::to_string(pid) + " exited");
    return Error("Stop failed: cannot signal process " + std::to_string(pid) + ": " +
                 std::strerror(errno));
  }
  const std::string pid_text = ", PID: " + std::to_string(pid);
  // A pid learnt over TCP may be of another pid namespace: then the port tells.
  const pid_t wait_pid = by_rpc && Cmdline(pid).empty() ? 0 : pid;
  if (WaitGone(wait_pid, *hp, std::chrono::seconds(*timeout_s))) {
    Info("[  OK  ] Stop worker service @ " + address + " normally" + pid_text);
    return 0;
  }
  if (wait_pid > 0 && ::kill(wait_pid, SIGKILL) == 0 &&
      WaitGone(wait_pid, *hp, std::chrono::seconds(10))) {
    Info("[  OK  ] Force stop worker service @ " + address + pid_text);
    return 0;
  }
  return Error("[  FAILED  ] Force stop worker failed @ " + address + pid_text);
}

// ------------------------------------------------------------------ status

int StatusOf(const std::vector<std::string>& argv) {
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

// ------------------------------------------------------------------ generate_config

int GenerateConfig(const std::vector<std::string>& argv) {
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

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.empty() || args[0] == "-h" || args[0] == "--help" || args[0] == "help") {
    std::printf("%s", kUsage);
    return 0;
  }
  if (args[0] == "--version" || args[0] == "-v") {
    std::printf("dscli %s (the command line of openYuanrong datasystem 0.8/0.9, this project's "
                "worker)\n",
                TQDS_VERSION);
    return 0;
  }
  const std::string sub = args[0];
  std::vector<std::string> rest(args.begin() + 1, args.end());
  if (sub == "start") return Start(rest);
  if (sub == "stop") return Stop(rest);
  if (sub == "status") return StatusOf(rest);
  if (sub == "generate_config") return GenerateConfig(rest);
  std::fprintf(stderr, "%s", kUsage);
  return Error("dscli: unknown subcommand '" + sub +
               "' (choose from start, stop, status, generate_config)");
}
