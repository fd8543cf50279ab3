// dscli: starts, stops and inspects datasystem workers, with the seed's
// commands: `dscli start -w --worker_address H:P [--etcd_address H:P]`,
// `dscli stop --worker_address H:P`, `dscli status`.
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "common/wire/rpc.h"
#include "datasystem/protocol.h"
#include "datasystem/worker_flags.h"

namespace {

using tqds::Status;
using tqds::wire::MapReader;
using tqds::wire::Message;
using tqds::wire::MsgType;

int Fail(const std::string& what) {
  std::fprintf(stderr, "dscli: %s\n", what.c_str());
  return 1;
}

// True when something accepts TCP connections at host:port.
bool PortOpen(const ds::HostPort& hp) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  if (::getaddrinfo(hp.host.c_str(), std::to_string(hp.port).c_str(), &hints, &res) != 0) return false;
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
    auto sibling = self.parent_path() / "ds_worker";
    if (std::filesystem::exists(sibling, ec)) return sibling.string();
  }
  return "ds_worker";  // PATH
}

int Start(ds::WorkerOptions options) {
  if (Status st = options.Validate(); !st.ok()) return Fail(st.message());
  if (options.log_dir.empty()) options.log_dir = options.unix_socket_dir + "/logs";
  const std::string bin = WorkerBinary();
  int pipefd[2];
  if (::pipe2(pipefd, O_CLOEXEC) != 0) return Fail(std::string("pipe: ") + std::strerror(errno));
  std::vector<std::string> args = {bin,
                                   "--worker_address", options.worker_address,
                                   "--shared_memory_size_mb", std::to_string(options.shared_memory_size_mb),
                                   "--spill_size_limit_mb", std::to_string(options.spill_size_limit_mb),
                                   "--log_dir", options.log_dir,
                                   "--unix_socket_dir", options.unix_socket_dir,
                                   "--high_watermark", std::to_string(options.high_watermark),
                                   "--node_timeout_s", std::to_string(options.node_timeout_s),
                                   "--pull_connections", std::to_string(options.pull_connections),
                                   "--cache_max_keys", std::to_string(options.cache_max_keys),
                                   "--data_port", std::to_string(options.data_port)};
  if (!options.etcd_address.empty()) args.insert(args.end(), {"--etcd_address", options.etcd_address});
  if (!options.spill_directory.empty()) {
    args.insert(args.end(), {"--spill_directory", options.spill_directory});
  }
  args.push_back(options.populate_memory ? "--populate_memory" : "--no_populate_memory");
  pid_t child = ::fork();
  if (child < 0) return Fail(std::string("fork: ") + std::strerror(errno));
  if (child == 0) {
    ::setsid();
    int ready = ::dup(pipefd[1]);  // without O_CLOEXEC: survives exec
    args.insert(args.end(), {"--ready_fd", std::to_string(ready)});
    int devnull = ::open("/dev/null", O_RDWR);
    ::dup2(devnull, 0);
    ::dup2(devnull, 1);
    ::dup2(devnull, 2);
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    ::execvp(argv[0], argv.data());
    std::string msg = "ERROR cannot run " + bin + ": " + std::strerror(errno) + "\n";
    ssize_t n = ::write(ready, msg.data(), msg.size());
    (void)n;
    ::_exit(127);
  }
  ::close(pipefd[1]);
  std::string answer;
  char buf[1024];
  while (true) {
    ssize_t n = ::read(pipefd[0], buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    answer.append(buf, static_cast<size_t>(n));
  }
  ::close(pipefd[0]);
  while (!answer.empty() && answer.back() == '\n') answer.pop_back();
  if (answer.rfind("READY ", 0) == 0) {
    std::printf("datasystem worker started at %s (pid %s, shared memory %llu MiB, logs in %s)\n",
                options.worker_address.c_str(), answer.substr(6).c_str(),
                static_cast<unsigned long long>(options.shared_memory_size_mb),
                options.log_dir.c_str());
    return 0;
  }
  int status = 0;
  ::waitpid(child, &status, 0);
  if (answer.rfind("ERROR ", 0) == 0) return Fail("cannot start the worker: " + answer.substr(6));
  return Fail("the worker exited during start-up (status " + std::to_string(status) +
              "); see its log in " + options.log_dir);
}

int Stop(const std::string& address, int timeout_s) {
  auto hp = ds::HostPort::Parse(address, "--worker_address");
  if (!hp.ok()) return Fail(hp.status().message());
  auto hello = Ask(*hp, MsgType::kDsHello, 2000);
  if (!hello.ok()) {
    std::printf("no datasystem worker is running at %s\n", address.c_str());
    return 0;
  }
  auto r = MapReader::Of(hello->body(), "Hello reply");
  int pid = r.ok() ? static_cast<int>(r->GetOr<int64_t>(ds::proto::kPid, 0).ValueOr(0)) : 0;
  int pidfd = pid > 0 ? static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)) : -1;
  auto bye = Ask(*hp, MsgType::kDsShutdown, 2000);
  if (!bye.ok() && pidfd < 0) return Fail("cannot ask the worker to stop: " + bye.status().message());
  if (pidfd >= 0) {
    pollfd p{pidfd, POLLIN, 0};
    int rc = ::poll(&p, 1, timeout_s * 1000);
    ::close(pidfd);
    if (rc != 1) {
      return Fail("the worker at " + address + " (pid " + std::to_string(pid) +
                  ") did not stop within " + std::to_string(timeout_s) + " s");
    }
  }
  std::printf("datasystem worker at %s (pid %d) stopped\n", address.c_str(), pid);
  return 0;
}

int StatusOf(const std::string& address, const std::string& socket_dir) {
  if (!address.empty()) {
    auto hp = ds::HostPort::Parse(address, "--worker_address");
    if (!hp.ok()) return Fail(hp.status().message());
    auto stats = Ask(*hp, MsgType::kDsStats, 2000);
    if (!stats.ok()) return Fail("no datasystem worker is running at " + address);
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
  for (const auto& e : std::filesystem::directory_iterator(socket_dir, ec)) {
    std::string name = e.path().filename().string();
    if (name.rfind("ds_worker_", 0) != 0 || e.path().extension() != ".pid") continue;
    int fd = ::open(e.path().c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) continue;
    bool live = ::flock(fd, LOCK_SH | LOCK_NB) != 0;  // the worker holds it exclusively
    char buf[32] = {0};
    ssize_t n = ::pread(fd, buf, sizeof(buf) - 1, 0);
    (void)n;
    ::close(fd);
    if (!live) continue;
    ++running;
    std::printf("worker on port %s: running (pid %d)\n",
                name.substr(10, name.size() - 14).c_str(), std::atoi(buf));
  }
  if (running == 0) std::printf("no datasystem worker is running (socket dir %s)\n", socket_dir.c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"dscli: start, stop and inspect datasystem workers"};
  app.require_subcommand(1);
  ds::WorkerOptions options;
  bool worker = false;
  auto* start = app.add_subcommand("start", "start a worker and return once it serves");
  start->add_flag("-w,--worker", worker, "start a datasystem worker (required)");
  ds::AddWorkerFlags(*start, options);

  std::string stop_address;
  int timeout_s = 30;
  auto* stop = app.add_subcommand("stop", "stop a worker gracefully");
  stop->add_option("--worker_address", stop_address, "HOST:PORT of the worker")->required();
  stop->add_option("--timeout_s", timeout_s, "how long to wait for it to exit")->capture_default_str();

  std::string status_address, socket_dir = "/tmp/ds_worker";
  auto* status = app.add_subcommand("status", "show one worker's counters, or list local workers");
  status->add_option("--worker_address", status_address, "HOST:PORT of the worker");
  status->add_option("--unix_socket_dir", socket_dir, "where local workers keep pid files")
      ->capture_default_str();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  if (start->parsed()) {
    if (!worker) return Fail("start: pass -w to start a worker (dscli start -w --worker_address H:P)");
    return Start(options);
  }
  if (stop->parsed()) return Stop(stop_address, timeout_s);
  return StatusOf(status_address, socket_dir);
}
