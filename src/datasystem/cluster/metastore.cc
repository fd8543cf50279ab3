// Metastore: MetastoreState served over HTTP as etcd's v3 JSON gateway
// (cpp-httplib), plus the lease reaper thread.
#include "datasystem/cluster/metastore.h"

#include <httplib.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <functional>
#include <random>
#include <thread>

#include "common/logging.h"
#include "datasystem/cluster/metastore_gateway.h"

namespace ds::cluster {

using nlohmann::json;
using tqds::Result;
using tqds::Status;
namespace gw = metastore::gateway;
using metastore::Clock;
using metastore::MutexLock;

namespace {

// What /v3/maintenance/status reports: etcd's API level, marked as ours.
constexpr char kVersion[] = "3.4.0+tqds-metastore";
// Deeper JSON than any etcd request needs is refused before parsing.
constexpr int kMaxJsonDepth = 32;

std::string Dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

// Nesting depth of a JSON text (brackets outside strings); stops counting
// past `limit`.
int JsonDepth(const std::string& text, int limit) {
  int depth = 0;
  int max_depth = 0;
  bool in_string = false;
  bool escaped = false;
  for (char c : text) {
    if (in_string) {
      if (escaped) {
        escaped = false;
      } else if (c == '\\') {
        escaped = true;
      } else if (c == '"') {
        in_string = false;
      }
      continue;
    }
    if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      max_depth = std::max(max_depth, ++depth);
      if (max_depth > limit) return max_depth;
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  return max_depth;
}

Result<json> ParseBody(const std::string& body) {
  if (body.find_first_not_of(" \t\r\n") == std::string::npos) return json::object();
  if (JsonDepth(body, kMaxJsonDepth) > kMaxJsonDepth) {
    return Status::Invalid("metastore: request JSON nests deeper than ", kMaxJsonDepth);
  }
  json parsed = json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (parsed.is_discarded()) return Status::Invalid("metastore: request body is not valid JSON");
  if (!parsed.is_object()) return Status::Invalid("metastore: request body must be a JSON object");
  return parsed;
}

void ReplyError(httplib::Response& res, const Status& st) {
  res.status = gw::HttpStatus(gw::GrpcCode(st));
  res.set_content(Dump(gw::ErrorJson(st)), "application/json");
}

uint64_t RandomId() {
  std::random_device rd;
  uint64_t v = (uint64_t{rd()} << 32) ^ rd();
  return v == 0 ? 1 : v;
}

}  // namespace

Status MetastoreOptions::Validate() const {
  if (host.empty()) return Status::Invalid("metastore host is empty");
  if (port < 0 || port > 65535) return Status::Invalid("metastore port ", port, " out of range");
  if (max_request_bytes < 1024) return Status::Invalid("metastore max_request_bytes must be >= 1024");
  if (server_threads < 2) return Status::Invalid("metastore server_threads must be >= 2");
  if (max_watches == 0 || max_watches >= server_threads) {
    return Status::Invalid("metastore max_watches must be in [1, server_threads), got ",
                           max_watches, " with ", server_threads, " threads");
  }
  if (progress_interval.count() <= 0) return Status::Invalid("metastore progress_interval must be > 0");
  if (max_events_per_message == 0) return Status::Invalid("metastore max_events_per_message must be > 0");
  if (idle_connection_timeout.count() < 1) {
    return Status::Invalid("metastore idle_connection_timeout must be >= 1 s");
  }
  if (lease_check_interval.count() <= 0) {
    return Status::Invalid("metastore lease_check_interval must be > 0");
  }
  return limits.Validate();
}

// The HTTP side: routes, watch streams, the listener and reaper threads.
class Metastore::Server {
 public:
  Server(const MetastoreOptions& options, metastore::MetastoreState* state, uint64_t cluster_id,
         uint64_t member_id)
      : options_(options), state_(state), cluster_id_(cluster_id), member_id_(member_id) {}

  Result<int> Start();
  void Stop();
  size_t watches() const { return watches_.load(); }

 private:
  // One open watch stream; touched only by the thread serving it.
  struct WatchStream {
    gw::WatchCreate create;
    int64_t next_revision = 0;
    bool created_sent = false;
    bool done = false;
  };
  using Unary = std::function<Result<json>(const json& body)>;

  gw::Header Header(int64_t revision) const { return gw::Header{cluster_id_, member_id_, revision}; }
  gw::Header Now() const { return Header(state_->revision()); }
  void Route(const char* path, Unary handler);
  void InstallRoutes();
  void HandleWatch(const httplib::Request& req, httplib::Response& res);
  bool PumpWatch(WatchStream& w, httplib::DataSink& sink);
  httplib::Server::HandlerResponse OnError(const httplib::Request& req, httplib::Response& res);
  void ReapLoop();

  // Constant after construction.
  const MetastoreOptions& options_;
  metastore::MetastoreState* const state_;
  const uint64_t cluster_id_;
  const uint64_t member_id_;

  httplib::Server http_;
  std::atomic<size_t> watches_{0};
  std::thread listener_;
  std::thread reaper_;
  // Lock order: mu_ is a leaf.
  metastore::Mutex mu_;
  std::condition_variable reaper_cv_;
  bool stopping_ MS_GUARDED_BY(mu_) = false;
};

void Metastore::Server::Route(const char* path, Unary handler) {
  http_.Post(path, [handler = std::move(handler)](const httplib::Request& req,
                                                  httplib::Response& res) {
    auto body = ParseBody(req.body);
    if (!body.ok()) return ReplyError(res, body.status());
    Result<json> answer = Status::Internal("metastore: no answer");
    try {
      answer = handler(*body);
    } catch (const std::exception& e) {  // a bug, not the client's fault: say so, stay up
      answer = Status::Internal("metastore: ", e.what());
    }
    if (!answer.ok()) return ReplyError(res, answer.status());
    res.status = 200;
    res.set_content(Dump(*answer), "application/json");
  });
}

void Metastore::Server::InstallRoutes() {
  Route("/v3/maintenance/status", [this](const json&) -> Result<json> {
    return gw::StatusJson(Now(), kVersion, state_->data_bytes());
  });
  Route("/v3/kv/range", [this](const json& body) -> Result<json> {
    TQDS_ASSIGN_OR_RETURN(auto req, gw::ParseRange(body));
    TQDS_ASSIGN_OR_RETURN(auto r, state_->Range(req));
    return gw::RangeJson(Header(r.revision), r);
  });
  Route("/v3/kv/put", [this](const json& body) -> Result<json> {
    TQDS_ASSIGN_OR_RETURN(auto req, gw::ParsePut(body));
    metastore::TxnRequest txn;
    txn.success.emplace_back(std::move(req));
    TQDS_ASSIGN_OR_RETURN(auto r, state_->Txn(txn));
    return gw::PutJson(Header(r.revision), std::get<metastore::PutResponse>(r.responses.at(0)));
  });
  Route("/v3/kv/deleterange", [this](const json& body) -> Result<json> {
    TQDS_ASSIGN_OR_RETURN(auto req, gw::ParseDelete(body));
    metastore::TxnRequest txn;
    txn.success.emplace_back(std::move(req));
    TQDS_ASSIGN_OR_RETURN(auto r, state_->Txn(txn));
    return gw::DeleteJson(Header(r.revision),
                          std::get<metastore::DeleteResponse>(r.responses.at(0)));
  });
  Route("/v3/kv/txn", [this](const json& body) -> Result<json> {
    TQDS_ASSIGN_OR_RETURN(auto req, gw::ParseTxn(body));
    TQDS_ASSIGN_OR_RETURN(auto r, state_->Txn(req));
    return gw::TxnJson(Header(r.revision), r);
  });
  Route("/v3/kv/compaction", [this](const json& body) -> Result<json> {
    TQDS_ASSIGN_OR_RETURN(int64_t revision, gw::ParseCompaction(body));
    TQDS_RETURN_NOT_OK(state_->Compact(revision));
    return json{{"header", gw::HeaderJson(Now())}};
  });
  Route("/v3/lease/grant", [this](const json& body) -> Result<json> {
    TQDS_ASSIGN_OR_RETURN(auto req, gw::ParseLeaseGrant(body));
    TQDS_ASSIGN_OR_RETURN(auto g, state_->GrantLease(req.ttl_s, req.id, Clock::now()));
    return gw::LeaseGrantJson(Now(), g);
  });
  Route("/v3/lease/keepalive", [this](const json& body) -> Result<json> {
    TQDS_ASSIGN_OR_RETURN(int64_t id, gw::ParseLeaseId(body));
    auto ttl = state_->KeepAlive(id, Clock::now());
    if (!ttl.ok() && !ttl.status().IsNotFound()) return ttl.status();
    return gw::LeaseKeepAliveLine(Now(), id, ttl.ValueOr(0));  // etcd: TTL 0 when gone
  });
  Route("/v3/lease/revoke", [this](const json& body) -> Result<json> {
    TQDS_ASSIGN_OR_RETURN(int64_t id, gw::ParseLeaseId(body));
    TQDS_RETURN_NOT_OK(state_->Revoke(id));
    return json{{"header", gw::HeaderJson(Now())}};
  });
  Route("/v3/lease/timetolive", [this](const json& body) -> Result<json> {
    TQDS_ASSIGN_OR_RETURN(int64_t id, gw::ParseLeaseId(body));
    auto ttl = state_->LeaseTimeToLive(id, Clock::now());
    if (!ttl.ok()) return gw::LeaseTimeToLiveJson(Now(), id, -1, 0);
    return gw::LeaseTimeToLiveJson(Now(), id, ttl->ttl_s, ttl->granted_ttl_s);
  });
  http_.Post("/v3/watch", [this](const httplib::Request& req, httplib::Response& res) {
    HandleWatch(req, res);
  });
  // etcd's plain HTTP probes (the worker checks GET /version before joining).
  http_.Get("/version", [](const httplib::Request&, httplib::Response& res) {
    res.set_content(Dump(json{{"etcdserver", kVersion}, {"etcdcluster", "3.4.0"}}),
                    "application/json");
  });
  http_.Get("/health", [](const httplib::Request&, httplib::Response& res) {
    res.set_content(Dump(json{{"health", "true"}}), "application/json");
  });
  // Before any body is read: cpp-httplib caps only bodies with a
  // Content-Length; a chunked body, or one without a length (read until the
  // peer closes), would be read without a bound. Our clients always send
  // a Content-Length.
  httplib::Server::HandlerWithResponse pre_routing = [](const httplib::Request& req,
                                                        httplib::Response& res) {
    if (req.method != "POST" || (!req.has_header("Transfer-Encoding") &&
                                    req.has_header("Content-Length"))) {
      return httplib::Server::HandlerResponse::Unhandled;
    }
    ReplyError(res, Status::Invalid("metastore: a request body needs a Content-Length "
                                    "(chunked or unbounded bodies are refused)"));
    res.set_header("Connection", "close");
    return httplib::Server::HandlerResponse::Handled;
  };
  http_.set_pre_routing_handler(pre_routing);
  httplib::Server::HandlerWithResponse on_error = [this](const httplib::Request& req,
                                                         httplib::Response& res) {
    return OnError(req, res);
  };
  http_.set_error_handler(on_error);
  http_.set_exception_handler(
      [](const httplib::Request&, httplib::Response& res, std::exception_ptr) {
        ReplyError(res, Status::Internal("metastore: request handler failed"));
      });
}

httplib::Server::HandlerResponse Metastore::Server::OnError(const httplib::Request& req,
                                                            httplib::Response& res) {
  if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;  // ours already
  if (res.status == 413) {
    ReplyError(res, Status::Invalid("etcdserver: request is too large (the metastore accepts "
                                    "bodies up to ",
                                    options_.max_request_bytes, " bytes)"));
    return httplib::Server::HandlerResponse::Handled;
  }
  if (res.status == 404) {
    ReplyError(res, gw::Unsupported(req.method + " " + req.path.substr(0, 128)));
    res.status = 404;
    return httplib::Server::HandlerResponse::Handled;
  }
  const int status = res.status;
  ReplyError(res, Status::Invalid("metastore: bad HTTP request (", status, ")"));
  res.status = status;
  return httplib::Server::HandlerResponse::Handled;
}

void Metastore::Server::HandleWatch(const httplib::Request& req, httplib::Response& res) {
  auto body = ParseBody(req.body);
  if (!body.ok()) return ReplyError(res, body.status());
  auto parsed = gw::ParseWatch(*body);
  if (!parsed.ok()) return ReplyError(res, parsed.status());
  const gw::WatchRequest& w = *parsed;
  if (w.kind == gw::WatchRequestKind::kProgress) {
    res.set_content(Dump(gw::WatchProgressLine(Now(), -1)) + "\n", "application/json");
    return;
  }
  if (w.kind == gw::WatchRequestKind::kCancel) {
    // One watch per stream: a cancel alone on a new stream has nothing to end.
    res.set_content(Dump(gw::WatchCanceledLine(Now(), w.watch_id, "")) + "\n",
                    "application/json");
    return;
  }
  if (watches_.fetch_add(1) >= options_.max_watches) {
    watches_.fetch_sub(1);
    return ReplyError(res, Status::OutOfSpace("metastore: ", options_.max_watches,
                                              " watch streams open (max_watches); close some"));
  }
  auto stream = std::make_shared<WatchStream>();
  stream->create = w.create;
  stream->next_revision =
      w.create.start_revision > 0 ? w.create.start_revision : state_->revision() + 1;
  res.set_chunked_content_provider(
      "application/json",
      [this, stream](size_t, httplib::DataSink& sink) { return PumpWatch(*stream, sink); },
      [this](bool) { watches_.fetch_sub(1); });
}

// Called by cpp-httplib in a loop while the stream is open; each call
// blocks for at most progress_interval and writes one line. false ends the
// stream (shutdown, or the watcher went away and the write failed).
bool Metastore::Server::PumpWatch(WatchStream& w, httplib::DataSink& sink) {
  const int64_t id = w.create.watch_id;
  json line;
  if (!w.created_sent) {
    w.created_sent = true;
    line = gw::WatchCreatedLine(Now(), id);
  } else if (w.done) {
    sink.done();
    return true;
  } else {
    auto batch =
        state_->WaitEvents(w.create.range, &w.next_revision,
                           Clock::now() + options_.progress_interval, options_.max_events_per_message);
    if (batch.shutdown) return false;
    if (batch.compacted) {
      w.done = true;
      line = gw::WatchCompactedLine(Header(batch.revision), id, batch.compact_revision);
    } else {
      std::vector<WatchEvent> events;
      events.reserve(batch.events.size());
      for (auto& e : batch.events) {
        if (e.type == EventType::kPut ? w.create.no_put : w.create.no_delete) continue;
        events.push_back(std::move(e));
      }
      line = events.empty() ? gw::WatchProgressLine(Header(batch.revision), id)
                            : gw::WatchEventsLine(Header(batch.revision), id, events);
    }
  }
  const std::string text = Dump(line) + "\n";
  return sink.write(text.data(), text.size());
}

Result<int> Metastore::Server::Start() {
  InstallRoutes();
  const size_t threads = options_.server_threads;
  http_.new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
  http_.set_payload_max_length(options_.max_request_bytes);
  http_.set_tcp_nodelay(true);
  http_.set_keep_alive_max_count(1000);
  http_.set_keep_alive_timeout(options_.idle_connection_timeout.count());
  http_.set_read_timeout(5, 0);
  http_.set_write_timeout(5, 0);
  // SO_REUSEADDR only: cpp-httplib's default adds SO_REUSEPORT, which would
  // let a second metastore bind the same port and split the clients.
  socket_t listen_fd = INVALID_SOCKET;
  http_.set_socket_options([&listen_fd](socket_t sock) {
    int yes = 1;
    ::setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
    listen_fd = sock;
  });
  const std::string where = options_.host + ":" + std::to_string(options_.port);
  int port = options_.port;
  errno = 0;
  if (port == 0) {
    port = http_.bind_to_any_port(options_.host);
    if (port <= 0) port = -1;
  } else if (!http_.bind_to_port(options_.host, port)) {
    port = -1;
  }
  if (port < 0) {
    const int err = errno;
    return Status::Unavailable("metastore: cannot listen on ", where, ": ",
                               err != 0 ? std::strerror(err) : "bind failed",
                               " (is another metastore or etcd on that port?)");
  }
  // cpp-httplib listens with a backlog of 5: a burst of connects (workers
  // starting together) overflows it, and the dropped SYNs come back after
  // 1 s, past the clients' connect timeout. Listening again raises it.
  if (listen_fd != INVALID_SOCKET) ::listen(listen_fd, SOMAXCONN);
  listener_ = std::thread([this] {
    // Writes to a watcher that hung up must fail with EPIPE, not kill the
    // process with SIGPIPE: block it on the listener, whose pool threads
    // inherit the mask (no process-wide handler is installed).
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &set, nullptr);
    http_.listen_after_bind();
  });
  // Stop() is only safe once the listener runs: wait for it (bounded).
  auto deadline = Clock::now() + std::chrono::seconds(10);
  while (!http_.is_running() && Clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  if (!http_.is_running()) {
    return Status::Internal("metastore: the HTTP listener on ", where, " did not start");
  }
  reaper_ = std::thread([this] { ReapLoop(); });
  return port;
}

void Metastore::Server::ReapLoop() {
  while (true) {
    {
      MutexLock lock(&mu_);
      if (stopping_) return;
      mu_.WaitUntil(reaper_cv_, Clock::now() + options_.lease_check_interval);
      if (stopping_) return;
    }
    size_t expired = state_->ExpireLeases(Clock::now());
    if (expired > 0) SPDLOG_DEBUG("metastore: {} lease(s) expired", expired);
  }
}

void Metastore::Server::Stop() {
  state_->Shutdown();  // watch streams return at once
  {
    MutexLock lock(&mu_);
    stopping_ = true;
  }
  reaper_cv_.notify_all();
  if (listener_.joinable()) {
    http_.stop();  // the listener runs (Start() waited for it): this ends it
    listener_.join();
  }
  if (reaper_.joinable()) reaper_.join();
}

Metastore::Metastore(MetastoreOptions options, uint64_t seed)
    : options_(std::move(options)),
      cluster_id_(RandomId()),
      member_id_(RandomId()),
      state_(std::make_unique<metastore::MetastoreState>(options_.limits, seed)) {}

Result<std::unique_ptr<Metastore>> Metastore::Start(MetastoreOptions options) {
  TQDS_RETURN_NOT_OK(options.Validate());
  std::unique_ptr<Metastore> m(new Metastore(std::move(options), RandomId()));
  m->server_ = std::make_unique<Server>(m->options_, m->state_.get(), m->cluster_id_, m->member_id_);
  auto port = m->server_->Start();
  if (!port.ok()) {
    m->Stop();
    return port.status();
  }
  m->port_ = *port;
  spdlog::info("metastore: serving the etcd v3 gateway subset on {} (in memory, no etcd)",
               m->address());
  return m;
}

Result<std::unique_ptr<Metastore>> Metastore::Start(const std::string& host, int port) {
  MetastoreOptions o;
  o.host = host;
  o.port = port;
  return Start(std::move(o));
}

Metastore::~Metastore() { Stop(); }

void Metastore::Stop() {
  std::call_once(stop_once_, [this] {
    if (!server_) return;
    server_->Stop();
    if (port_ != 0) spdlog::info("metastore on {} stopped", address());
  });
}

std::string Metastore::address() const { return options_.host + ":" + std::to_string(port_); }

int64_t Metastore::revision() const { return state_->revision(); }

size_t Metastore::watches() const { return server_ ? server_->watches() : 0; }

}  // namespace ds::cluster
