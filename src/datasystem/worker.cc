// Worker wiring: start-up order, pid file, TCP server hooks, shutdown.
#include "datasystem/worker.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <random>

#include "common/wire/security.h"
#include "datasystem/metastore_hook.h"
#include "datasystem/worker_metrics.h"
#include "datasystem/protocol.h"
#include "datasystem/safe_dir.h"

namespace ds {
namespace {

using tqds::wire::Clock;

Result<std::string> ResolveIpv4(const std::string& host) {
  addrinfo hints{};
  hints.ai_family = AF_INET;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  int rc = ::getaddrinfo(host.c_str(), nullptr, &hints, &res);
  if (rc != 0) return Status::Invalid("cannot resolve worker host '", host, "': ", ::gai_strerror(rc));
  char buf[INET_ADDRSTRLEN];
  ::inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(res->ai_addr)->sin_addr, buf, sizeof(buf));
  ::freeaddrinfo(res);
  return std::string(buf);
}

// No value is larger than the arena, so no frame needs to be much larger:
// what a peer declares beyond that is refused before anything is allocated.
uint64_t MaxFrameBytes(uint64_t arena_size) { return std::max<uint64_t>(arena_size, 64ull << 20); }

tqds::wire::RpcServerOptions TcpServerOptions(uint64_t arena_size) {
  tqds::wire::RpcServerOptions o;
  o.max_frame_bytes = static_cast<int64_t>(MaxFrameBytes(arena_size));
  return o;
}

LocalServerOptions LocalOptions(uint64_t arena_size) {
  LocalServerOptions o;
  o.max_frame_bytes = MaxFrameBytes(arena_size);
  o.max_inflight_bytes = std::max<uint64_t>(1ull << 30, 2 * arena_size);
  return o;
}

}  // namespace

Result<std::unique_ptr<Worker>> Worker::Start(const WorkerOptions& options) {
  TQDS_RETURN_NOT_OK(options.Validate());
  // The process's keys (its port, its peers and the clients it makes).
  if (options.enable_curve_zmq) TQDS_RETURN_NOT_OK(tqds::wire::UseCurveKeys(options.curve_key_dir));
  if (options.allow_insecure) tqds::wire::AllowInsecure(true);
  std::unique_ptr<Worker> w(new Worker(options));
  Status st = w->Init();
  if (!st.ok()) {
    w->Stop();
    return st;
  }
  return w;
}

Status Worker::LockPidFile() {
  std::error_code ec;
  std::filesystem::create_directories(options_.unix_domain_socket_dir, ec);
  if (ec) {
    return Status::IOError("cannot create --unix_domain_socket_dir ",
                           options_.unix_domain_socket_dir, ": ", ec.message());
  }
  // Another user who owns the directory, or may write to it without the
  // sticky bit, could replace the socket or pid file and intercept clients.
  TQDS_RETURN_NOT_OK(CheckSharedDir(options_.unix_domain_socket_dir, "--unix_domain_socket_dir"));
  const std::string path = options_.pid_path();
  pid_fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (pid_fd_ < 0) return Status::IOError("cannot open pid file ", path, ": ", std::strerror(errno));
  if (::flock(pid_fd_, LOCK_EX | LOCK_NB) != 0) {
    char buf[32] = {0};
    ssize_t n = ::pread(pid_fd_, buf, sizeof(buf) - 1, 0);
    (void)n;
    ::close(pid_fd_);
    pid_fd_ = -1;
    return Status::AlreadyExists("a datasystem worker is already running at ",
                                 options_.worker_address, " (pid ", std::atoi(buf),
                                 "); stop it first with: dscli stop --worker_address ",
                                 options_.worker_address);
  }
  // The lock proves liveness; a stale file from a crashed worker is simply reused.
  std::string pid = std::to_string(::getpid()) + "\n";
  if (::ftruncate(pid_fd_, 0) != 0 || ::pwrite(pid_fd_, pid.data(), pid.size(), 0) < 0) {
    return Status::IOError("cannot write pid file ", path);
  }
  return Status::OK();
}

Status Worker::Init() {
  // The pid file (named by the full address) first: a second start of the
  // same worker fails here without touching the running one's services.
  TQDS_RETURN_NOT_OK(LockPidFile());
  if (options_.start_metastore_service) {
    TQDS_RETURN_NOT_OK(StartMetastore(options_));
    metastore_started_ = true;
  }
  const std::string coordination = options_.coordination_address();
  if (!coordination.empty()) TQDS_RETURN_NOT_OK(ProbeEtcd(coordination, 3000));
  const HostPort hp = options_.address();

  TQDS_ASSIGN_OR_RETURN(arena_, SharedArena::Create(options_.shared_memory_size_mb << 20,
                                                    options_.shared_memory_populate));
  const uint64_t spill_limit = options_.EffectiveSpillLimit();
  if (!options_.spill_directory.empty() && spill_limit == 0) {
    return Status::IOError("cannot measure the file system of --spill_directory ",
                           options_.spill_directory, "; pass --spill_size_limit BYTES");
  }
  TQDS_ASSIGN_OR_RETURN(SpillStore spill, SpillStore::Open(options_.spill_path(), spill_limit));
  StoreOptions so;
  so.name = options_.worker_address;
  so.high_watermark = options_.eviction_high_watermark_ratio;
  store_ = std::make_unique<ObjectStore>(so, arena_->base(),
                                         std::make_unique<BestFitAllocator>(arena_->size()),
                                         std::make_unique<LruPolicy>(), std::move(spill));
  TQDS_ASSIGN_OR_RETURN(std::string ip, ResolveIpv4(hp.host));
  HostPort bind = hp;
  std::string bind_ip = ip;
  if (!options_.bind_address.empty()) {
    bind = *HostPort::Parse(options_.bind_address, "--bind_address");
    TQDS_ASSIGN_OR_RETURN(bind_ip, ResolveIpv4(bind.host));
  }
  auto tcp = tqds::wire::RpcServer::Bind(
      "tcp://" + bind_ip + ":" + std::to_string(bind.port),
      [this](Message&& m, tqds::wire::Responder r) { OnTcpRequest(std::move(m), std::move(r)); },
      [this](Clock::time_point now) { return Tick(now); }, TcpServerOptions(arena_->size()));
  if (!tcp.ok() && tcp.status().IsPermissionDenied()) return tcp.status();
  if (!tcp.ok()) {
    return Status::IOError("cannot listen on ", bind.ToString(), ": port ", bind.port,
                           " is already in use by another process (or the address is not local): ",
                           tcp.status().message());
  }
  tcp_ = std::move(tcp).value();
  if (!coordination.empty()) {
    ClusterOptions co;
    co.self = options_.worker_address;
    co.self_ip = ip;
    co.etcd_address = coordination;
    co.node_timeout = std::chrono::seconds(options_.node_timeout_s);
    co.data_port = options_.data_port;
    co.pull.connections = options_.pull_connections;
    co.cache_max_keys = options_.cache_max_keys;
    TQDS_ASSIGN_OR_RETURN(cluster_, ClusterNode::Start(co, *store_));
  }
  if (options_.metrics_port >= 0) {
    TQDS_ASSIGN_OR_RETURN(metrics_, tqds::MetricsEndpoint::Start(bind_ip, options_.metrics_port, [this] {
      const RequestHandler* h = handler_view_.load(std::memory_order_acquire);
      return h != nullptr ? WorkerMetricFamilies(h->CollectStats()) : std::vector<prometheus::MetricFamily>{};
    }));
    spdlog::info("datasystem worker {}: Prometheus metrics at http://{}/metrics", options_.worker_address,
                 metrics_->address());
  }
  HandlerContext ctx;
  ctx.worker = options_.worker_address;
  ctx.metrics = metrics_ ? metrics_->address() : "";
  ctx.socket_path = options_.socket_path();
  ctx.instance = std::random_device{}() | (uint64_t{std::random_device{}()} << 32);
  ctx.arena_size = arena_->size();
  ctx.memory_populated = [a = arena_.get()] { return a->populated(); };
  ctx.pid = ::getpid();
  ctx.request_shutdown = [] { RequestProcessStop(); };
  ctx.cluster = cluster_.get();
  ctx.clients = [this] {
    const LocalServer* l = local_view_.load(std::memory_order_acquire);
    return l != nullptr ? l->connections() : 0;
  };
  handler_ = std::make_unique<RequestHandler>(*store_, ctx);
  handler_view_.store(handler_.get(), std::memory_order_release);
  TQDS_ASSIGN_OR_RETURN(local_, LocalServer::Start(options_.socket_path(), arena_->fd(), *handler_,
                                                   *store_, LocalOptions(arena_->size())));
  local_view_.store(local_.get(), std::memory_order_release);
  tcp_->Start();
  spdlog::info("datasystem worker {} ready: pid {}, shared memory {} MiB, socket {}, spill '{}'",
               options_.worker_address, ctx.pid, options_.shared_memory_size_mb,
               options_.socket_path(), options_.spill_path());
  return Status::OK();
}

void Worker::OnTcpRequest(Message&& request, tqds::wire::Responder responder) {
  bool retry = false;
  Message reply = handler_->HandleTcp(request, &retry);
  if (!retry) {
    responder.Reply(std::move(reply));
    return;
  }
  uint64_t wait_ms = 0;
  auto r = tqds::wire::MapReader::Of(request.body(), "Get");
  if (r.ok()) wait_ms = r->GetOr<uint64_t>(proto::kWaitMs, 0).ValueOr(0);
  deferred_.push_back(Deferred{std::move(request), std::move(responder),
                               Clock::now() + std::chrono::milliseconds(wait_ms)});
}

std::chrono::milliseconds Worker::Tick(Clock::time_point now) {
  if (now >= next_expiry_) {
    store_->ExpireDue();
    next_expiry_ = now + std::chrono::milliseconds(100);
  }
  for (size_t n = deferred_.size(); n > 0; --n) {
    Deferred d = std::move(deferred_.front());
    deferred_.pop_front();
    bool retry = false;
    Message reply = handler_->HandleTcp(d.request, &retry);
    if (retry && now < d.deadline) {
      deferred_.push_back(std::move(d));
    } else {
      d.responder.Reply(std::move(reply));
    }
  }
  return std::chrono::milliseconds(deferred_.empty() ? 100 : 2);
}

void Worker::RequestProcessStop() { ::kill(::getpid(), SIGTERM); }

void Worker::Stop() {
  if (stopped_) return;
  stopped_ = true;
  handler_view_.store(nullptr, std::memory_order_release);
  metrics_.reset();  // no scrape reads a stopping store
  if (cluster_) cluster_->Stop();  // leave the ring first
  if (metastore_started_) StopMetastore();
  if (store_) store_->Shutdown();
  if (local_) local_->Stop();
  if (tcp_) tcp_->Stop();
  if (store_) store_->ClearSpill();
  if (pid_fd_ >= 0) {
    ::unlink(options_.pid_path().c_str());
    ::close(pid_fd_);
    pid_fd_ = -1;
  }
  spdlog::info("datasystem worker {} stopped", options_.worker_address);
}

Worker::~Worker() { Stop(); }

}  // namespace ds
