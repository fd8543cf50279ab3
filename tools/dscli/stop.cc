// dscli stop: finds the datasystem_worker serving one address (by its
// --worker_address, as the real dscli does, in this network namespace; over
// TCP for a worker of another pid namespace), asks it to stop, waits, and
// kills it after the timeout.
#include <signal.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>

#include "common/wire/message.h"
#include "datasystem/protocol.h"
#include "datasystem/worker_flags.h"
#include "dscli_internal.h"

namespace dscli {
namespace {

using tqds::Result;
using tqds::Status;
using tqds::wire::MapReader;
using tqds::wire::MsgType;

constexpr int kBaseTimeoutS = 180;  // the real stop waits 180 s + memory MiB / 40

const char* kStopUsage =
    "usage: dscli stop [-h] (-w ADDR | --worker_address ADDR | -f FILE) [--timeout_s S]\n"
    "  stops the datasystem_worker serving ADDR (SIGTERM; SIGKILL after the timeout,\n"
    "  default 180 s + shared memory MiB / 40)\n";

struct StopArgs {
  bool help = false;
  std::string address;
  std::optional<int> timeout_s;
};

Result<StopArgs> ParseStopArgs(const std::vector<std::string>& argv) {
  StopArgs s;
  std::string config_path;
  for (size_t i = 0; i < argv.size(); ++i) {
    const std::string& a = argv[i];
    if (a == "-h" || a == "--help") {
      s.help = true;
      return s;
    }
    std::string name = a, value;
    if (auto eq = a.find('='); a.rfind("--", 0) == 0 && eq != std::string::npos) {
      name = a.substr(0, eq);
      value = a.substr(eq + 1);
    } else if (i + 1 < argv.size()) {
      value = argv[++i];
    } else {
      return Status::Invalid(a, " needs a value");
    }
    if (name == "-w" || name == "--worker_address") {
      s.address = value;
    } else if (name == "-f" || name == "--worker_config_path") {
      config_path = value;
    } else if (name == "--timeout_s" || name == "-t" || name == "--timeout") {
      if (value.empty() || value.size() > 6 ||
          value.find_first_not_of("0123456789") != std::string::npos) {
        return Status::Invalid(name, " takes a number of seconds, got '", value, "'");
      }
      s.timeout_s = std::stoi(value);
    } else {
      return Status::Invalid("unknown option '", a, "'");
    }
  }
  if (s.address.empty() == config_path.empty()) {
    return Status::Invalid("pass one of --worker_address H:P (-w H:P) or -f worker_config.json");
  }
  if (!config_path.empty()) {
    TQDS_ASSIGN_OR_RETURN(auto entries, ds::ReadWorkerConfigFile(config_path, ""));
    for (const auto& [name, value] : entries) {
      if (name == "worker_address") s.address = value;
    }
    if (s.address.empty()) {
      return Status::Invalid("the configuration file ", config_path, " has no worker_address");
    }
  }
  return s;
}

bool IsWorker(pid_t pid) {
  auto args = Cmdline(pid);
  return !args.empty() && std::filesystem::path(args[0]).filename() == "datasystem_worker";
}

}  // namespace

int RunStop(const std::vector<std::string>& argv) {
  auto parsed = ParseStopArgs(argv);
  if (!parsed.ok()) return Error("Stop failed: " + parsed.status().message());
  if (parsed->help) {
    std::printf("%s", kStopUsage);
    return 0;
  }
  const std::string& address = parsed->address;
  auto hp = ds::HostPort::Parse(address, "--worker_address");
  if (!hp.ok()) return Error("Stop failed: " + hp.status().message());

  auto pids = FindWorkers(address);
  if (pids.size() > 1) {
    std::string list;
    for (pid_t p : pids) list += (list.empty() ? "" : ", ") + std::to_string(p);
    return Error("Stop failed: several datasystem_worker processes serve " + address + ": " + list);
  }
  pid_t pid = pids.empty() ? 0 : pids[0];
  // A worker this dscli cannot see (another pid namespace, another spelling
  // of the address) is asked over TCP; its pid is then only for the output,
  // and for waiting when it is a worker of this namespace.
  bool by_rpc = false;
  if (pid == 0) {
    auto hello = Ask(*hp, MsgType::kDsHello, 2000);
    if (!hello.ok()) return Error("Stop failed: no datasystem worker is running at " + address);
    auto r = MapReader::Of(hello->body(), "Hello reply");
    pid = r.ok() ? static_cast<pid_t>(r->GetOr<int64_t>(ds::proto::kPid, 0).ValueOr(0)) : 0;
    auto bye = Ask(*hp, MsgType::kDsShutdown, 2000);
    if (!bye.ok()) {
      return Error("Stop failed: cannot ask the worker at " + address + " to stop: " +
                   bye.status().message());
    }
    by_rpc = true;
  } else if (::kill(pid, SIGTERM) != 0) {
    if (errno == ESRCH) return Error("Stop failed: the process " + std::to_string(pid) + " exited");
    return Error("Stop failed: cannot signal process " + std::to_string(pid) + ": " +
                 std::strerror(errno));
  }
  int timeout_s = parsed->timeout_s.value_or(0);
  if (!parsed->timeout_s) {
    long shm_mb = 1024;
    if (auto v = FlagIn(Cmdline(pid), "shared_memory_size_mb")) shm_mb = std::atol(v->c_str());
    timeout_s = kBaseTimeoutS + static_cast<int>(std::max(0L, shm_mb) / 40);
  }
  const std::string pid_text = ", PID: " + std::to_string(pid);
  const pid_t wait_pid = !by_rpc || IsWorker(pid) ? pid : 0;
  if (WaitGone(wait_pid, *hp, std::chrono::seconds(timeout_s))) {
    Info("[  OK  ] Stop worker service @ " + address + " normally" + pid_text);
    return 0;
  }
  if (!by_rpc && ::kill(pid, SIGKILL) == 0 && WaitGone(pid, *hp, std::chrono::seconds(10))) {
    Info("[  OK  ] Force stop worker service @ " + address + pid_text);
    return 0;
  }
  return Error("[  FAILED  ] Force stop worker failed @ " + address + pid_text);
}

}  // namespace dscli
