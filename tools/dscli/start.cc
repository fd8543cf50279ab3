// dscli start: reads dscli's own options (before -w) and the worker flags
// (after -w, or from -f FILE), starts datasystem_worker in a new session with
// a readiness pipe, and waits for "READY <pid>" / "ERROR <why>" up to -t
// seconds (then kills it).
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "datasystem/worker_flags.h"
#include "dscli_internal.h"

namespace dscli {
namespace {

using tqds::Result;
using tqds::Status;
using Clock = std::chrono::steady_clock;

constexpr int kDefaultTimeoutS = 90;  // as the real dscli's

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

// dscli start's own options.
struct StartArgs {
  bool help = false;
  int timeout_s = kDefaultTimeoutS;
  std::string config_path;
  std::string home_dir;
  bool enable_ums = false;
  bool worker_mode = false;               // -w given
  std::vector<std::string> worker_args;   // everything after -w
  std::vector<std::string> numactl;       // "--name=value" / "--localalloc"
};

Result<StartArgs> ParseStartArgs(const std::vector<std::string>& argv) {
  StartArgs s;
  for (size_t i = 0; i < argv.size(); ++i) {
    const std::string& a = argv[i];
    // "-x V", "--long V" or "--long=V".
    auto is = [&](const char* shrt, const char* lng) {
      return a == shrt || a == lng || a.rfind(std::string(lng) + "=", 0) == 0;
    };
    auto value = [&]() -> Result<std::string> {
      if (auto eq = a.find('='); a.rfind("--", 0) == 0 && eq != std::string::npos) {
        return a.substr(eq + 1);
      }
      if (i + 1 >= argv.size()) return Status::Invalid("dscli start: ", a, " needs a value");
      return argv[++i];
    };
    if (a == "-h" || a == "--help") {
      s.help = true;
      return s;
    }
    if (a == "-w" || a == "--worker_args") {
      s.worker_mode = true;
      s.worker_args.assign(argv.begin() + static_cast<std::ptrdiff_t>(i) + 1, argv.end());
      return s;
    }
    if (is("-t", "--timeout")) {
      TQDS_ASSIGN_OR_RETURN(std::string v, value());
      if (v.empty() || v.size() > 6 || v.find_first_not_of("0123456789") != std::string::npos ||
          std::stoi(v) < 1) {
        return Status::Invalid("dscli start: --timeout takes a positive number of seconds, got '",
                               v, "'");
      }
      s.timeout_s = std::stoi(v);
    } else if (is("-f", "--worker_config_path")) {
      TQDS_ASSIGN_OR_RETURN(s.config_path, value());
    } else if (is("-d", "--datasystem_home_dir")) {
      TQDS_ASSIGN_OR_RETURN(std::string v, value());
      s.home_dir = std::filesystem::absolute(v).lexically_normal().string();
    } else if (a == "--enable_ums") {
      s.enable_ums = true;
    } else if (a == "-l" || a == "--localalloc") {
      s.numactl.push_back("--localalloc");
    } else if (is("-N", "--cpunodebind") || is("-C", "--physcpubind") ||
               is("-i", "--interleave") || is("-p", "--preferred") || is("-m", "--membind")) {
      static const std::pair<const char*, const char*> kNames[] = {
          {"-N", "cpunodebind"}, {"-C", "physcpubind"}, {"-i", "interleave"},
          {"-p", "preferred"},   {"-m", "membind"}};
      std::string name;
      for (const auto& [shrt, lng] : kNames) {
        if (a == shrt || a.rfind(std::string("--") + lng, 0) == 0) name = lng;
      }
      TQDS_ASSIGN_OR_RETURN(std::string v, value());
      s.numactl.push_back("--" + name + "=" + v);
    } else {
      return Status::Invalid("dscli start: unknown option '", a,
                             "'; worker flags go after -w: dscli start -w --worker_address H:P "
                             "[--etcd_address H:P] ... (dscli start -h lists them)");
    }
  }
  return s;
}

// The worker flags from -f FILE or from after -w.
Result<ds::WorkerFlags> LoadWorkerFlags(const StartArgs& s) {
  if (!s.worker_mode) {
    TQDS_ASSIGN_OR_RETURN(auto entries, ds::ReadWorkerConfigFile(s.config_path, s.home_dir));
    ds::WorkerFlags flags;
    for (const auto& [name, value] : entries) {
      if (Status st = ds::SetWorkerFlag(flags, name, value); !st.ok()) {
        return Status::Invalid(s.config_path, ": ", st.message());
      }
    }
    return flags;
  }
  return ds::ParseWorkerFlags(s.worker_args);
}

// Forks and execs `args` in a new session with stdio on /dev/null; the
// worker gets the write end of a pipe as --ready_fd. Returns the child's pid
// and the read end.
Result<std::pair<pid_t, int>> Spawn(std::vector<std::string> args) {
  int pipefd[2];
  if (::pipe2(pipefd, O_CLOEXEC) != 0) return Status::IOError("pipe: ", std::strerror(errno));
  pid_t child = ::fork();
  if (child < 0) return Status::IOError("fork: ", std::strerror(errno));
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
  return std::make_pair(child, pipefd[0]);
}

// The worker's first line on the pipe; nullopt when `timeout` passed first.
// "" when the pipe closed without a line (the worker died).
std::optional<std::string> ReadAnswer(int fd, std::chrono::seconds timeout) {
  std::string answer;
  const auto deadline = Clock::now() + timeout;
  char buf[1024];
  while (answer.find('\n') == std::string::npos) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (left.count() <= 0) return std::nullopt;
    pollfd p{fd, POLLIN, 0};
    int rc = ::poll(&p, 1, static_cast<int>(left.count()));
    if (rc <= 0) continue;  // EINTR or the deadline, checked above
    ssize_t n = ::read(fd, buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    answer.append(buf, static_cast<size_t>(n));
  }
  while (!answer.empty() && answer.back() == '\n') answer.pop_back();
  return answer;
}

}  // namespace

int RunStart(const std::vector<std::string>& argv) {
  auto parsed = ParseStartArgs(argv);
  if (!parsed.ok()) return Error(parsed.status().message());
  const StartArgs& s = *parsed;
  if (s.help) {
    std::printf("%s%s", kStartUsage, ds::WorkerFlagsHelp().c_str());
    return 0;
  }
  if (s.worker_mode == !s.config_path.empty()) {
    return Error(s.worker_mode ? "dscli start: pass either -w WORKER_FLAGS or -f FILE, not both"
                               : "dscli start: pass -w followed by worker flags (dscli start -w "
                                 "--worker_address H:P ...) or -f worker_config.json");
  }
  // Until the flags are read, the address named in failures is the one given
  // after -w, else the default.
  std::string address = ds::WorkerOptions{}.worker_address;
  std::vector<std::string> with_program = {"dscli"};
  with_program.insert(with_program.end(), s.worker_args.begin(), s.worker_args.end());
  if (auto given = FlagIn(with_program, "worker_address")) address = *given;
  auto failed = [&](const std::string& why) {
    return Error("[  FAILED  ] Start worker service @ " + address + " failed: " + why);
  };

  auto flags = LoadWorkerFlags(s);
  if (!flags.ok()) return failed(flags.status().message());
  ds::WorkerOptions& options = flags->options;
  address = options.worker_address;
  if (options.log_dir.empty()) options.log_dir = options.unix_domain_socket_dir + "/logs";
  if (Status st = options.Validate(); !st.ok()) return failed(st.message());
  std::vector<std::string> no_effect = flags->no_effect;
  if (s.enable_ums) no_effect.insert(no_effect.begin(), "enable_ums (dscli)");
  if (!no_effect.empty()) {
    std::string list;
    for (const auto& ne : no_effect) list += (list.empty() ? "--" : ", --") + ne;
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
  args.push_back(WorkerBinary());
  for (auto& a : ds::WorkerArgv(*flags)) args.push_back(std::move(a));
  Info("Log directory configured at: " + options.log_dir);
  auto spawned = Spawn(args);
  if (!spawned.ok()) return failed(spawned.status().message());
  const auto [child, pipe_fd] = *spawned;
  Info("Starting worker service with PID: " + std::to_string(child));
  const auto answer = ReadAnswer(pipe_fd, std::chrono::seconds(s.timeout_s));
  ::close(pipe_fd);

  if (answer && answer->rfind("READY ", 0) == 0) {
    Info("[  OK  ] Start worker service @ " + address + " success, PID: " + answer->substr(6));
    return 0;
  }
  if (!answer) {
    ::kill(child, SIGKILL);
    ::waitpid(child, nullptr, 0);
    return failed("worker service is not ready within " + std::to_string(s.timeout_s) +
                  " seconds (it was killed); see its log in " + options.log_dir);
  }
  int status = 0;
  ::waitpid(child, &status, 0);
  if (answer->rfind("ERROR ", 0) == 0) return failed(answer->substr(6));
  return failed("the worker exited during start-up (status " + std::to_string(status) +
                "); see its log in " + options.log_dir);
}

}  // namespace dscli
