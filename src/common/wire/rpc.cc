// RpcClient and RpcServer.
#include "common/wire/rpc.h"

#include <spdlog/spdlog.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cstring>
#include <unordered_map>

#include "common/wire/security.h"

namespace tqds::wire {

namespace {
// How long requests may wait for a connection that is down before failing.
constexpr auto kConnectGrace = std::chrono::seconds(3);

void Wake(int fd) {
  uint64_t one = 1;
  ssize_t n = ::write(fd, &one, sizeof(one));
  (void)n;
}
void DrainWake(int fd) {
  uint64_t v;
  ssize_t n = ::read(fd, &v, sizeof(v));
  (void)n;
}
}  // namespace

// ---------------------------------------------------------------- client

RpcClient::RpcClient(std::string endpoint, std::shared_ptr<const CurveKeys> keys)
    : endpoint_(std::move(endpoint)), keys_(std::move(keys)) {
  wake_fd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
}

Result<std::unique_ptr<RpcClient>> RpcClient::Connect(const std::string& endpoint,
                                                      std::shared_ptr<const CurveKeys> keys) {
  std::unique_ptr<RpcClient> c(new RpcClient(endpoint, std::move(keys)));
  if (c->wake_fd_ < 0) return Status::IOError("eventfd failed");
  // Validate the endpoint synchronously so a typo fails here, not later.
  try {
    zmq::socket_t probe(Context(), zmq::socket_type::dealer);
    probe.set(zmq::sockopt::linger, 0);
    TQDS_RETURN_NOT_OK(SecureClientSocket(probe, endpoint, c->keys_));  // the keys it needs exist
    probe.connect(endpoint);
  } catch (const zmq::error_t& e) {
    return Status::Invalid("cannot connect to '", endpoint, "': ", e.what());
  }
  c->thread_ = std::thread([raw = c.get()] { raw->Run(); });
  return c;
}

RpcClient::~RpcClient() {
  stop_ = true;
  Wake(wake_fd_);
  if (thread_.joinable()) thread_.join();
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& o : outgoing_) o.promise.set_value(Status::Cancelled("client closed"));
  ::close(wake_fd_);
}

std::future<Result<Message>> RpcClient::Call(Message request, std::chrono::milliseconds timeout) {
  request.set_request_id(next_id_.fetch_add(1) & ~kCallerIdBit);
  return Enqueue(std::move(request), timeout);
}

std::future<Result<Message>> RpcClient::CallWithId(Message request, std::chrono::milliseconds timeout) {
  if ((request.request_id() & kCallerIdBit) == 0) {
    std::promise<Result<Message>> p;
    p.set_value(Status::Invalid("CallWithId: request id ", request.request_id(), " lacks the caller-id bit"));
    return p.get_future();
  }
  return Enqueue(std::move(request), timeout);
}

std::future<Result<Message>> RpcClient::Enqueue(Message request, std::chrono::milliseconds timeout) {
  Outgoing o{std::move(request), {}, Clock::now() + timeout};
  auto fut = o.promise.get_future();
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stop_) {
      o.promise.set_value(Status::Cancelled("client closed"));
      return fut;
    }
    outgoing_.push_back(std::move(o));
  }
  Wake(wake_fd_);
  return fut;
}

void RpcClient::Run() {
  zmq::socket_t sock(Context(), zmq::socket_type::dealer);
  sock.set(zmq::sockopt::linger, 0);
  sock.set(zmq::sockopt::sndhwm, 0);
  sock.set(zmq::sockopt::rcvhwm, 0);
  // Connection events tell us at once when the peer goes away, so requests
  // to a dead peer fail fast instead of waiting for their deadline.
  // A fresh name per client: a new client at a freed one's address must not
  // meet the old monitor endpoint, which libzmq unbinds asynchronously.
  static std::atomic<uint64_t> monitors{0};
  std::string monitor_ep = "inproc://rpc-monitor-" + std::to_string(monitors.fetch_add(1));
  if (zmq_socket_monitor(sock.handle(), monitor_ep.c_str(),
                         ZMQ_EVENT_CONNECTED | ZMQ_EVENT_DISCONNECTED | ZMQ_EVENT_CONNECT_RETRIED |
                             ZMQ_EVENT_HANDSHAKE_SUCCEEDED | ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL |
                             ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL | ZMQ_EVENT_HANDSHAKE_FAILED_AUTH) != 0) {
    spdlog::warn("rpc client {}: no connection events ({}); a dead peer is noticed at the deadline",
                 endpoint_, zmq_strerror(zmq_errno()));
  }
  zmq::socket_t monitor(Context(), zmq::socket_type::pair);
  monitor.set(zmq::sockopt::linger, 0);
  monitor.connect(monitor_ep);
  // Set when the last handshake failed (authentication): calls fail with it
  // at once until a handshake succeeds.
  Status refused = SecureClientSocket(sock, endpoint_, keys_);
  // Handshakes that failed without a reason in a row (see below), and
  // whether the last event was one.
  constexpr int kUnexplainedFailures = 3;
  int unexplained_failures = 0;
  bool failed_handshake = false;
  sock.connect(endpoint_);
  struct Pending {
    std::promise<Result<Message>> promise;
    Clock::time_point deadline;
  };
  std::unordered_map<uint64_t, Pending> pending;
  // Assume the peer is reachable until an event says otherwise (a refused
  // connect attempt or a lost connection): a slow or missed "connected"
  // event under load must not fail healthy requests.
  bool connected = true;
  auto disconnected_since = Clock::now();
  // Hands every reply already received to its caller.
  auto drain_replies = [&] {
    while (true) {
      zmq::pollitem_t in{sock.handle(), 0, ZMQ_POLLIN, 0};
      if (zmq::poll(&in, 1, std::chrono::milliseconds(0)) <= 0) break;
      auto msg = RecvMessage(sock);
      if (!msg.ok()) {
        spdlog::warn("rpc client {}: dropping malformed reply: {}", endpoint_, msg.status().ToString());
        continue;
      }
      auto it = pending.find(msg->request_id());
      if (it == pending.end()) continue;  // a reply after its deadline
      if (!msg->status().ok()) {
        it->second.promise.set_value(msg->status());
      } else {
        it->second.promise.set_value(msg.MoveValue());
      }
      pending.erase(it);
    }
  };
  auto fail_all = [&](const Status& st) {
    for (auto& [id, p] : pending) p.promise.set_value(st);
    pending.clear();
  };
  zmq::pollitem_t items[3] = {{sock.handle(), 0, ZMQ_POLLIN, 0},
                              {nullptr, wake_fd_, ZMQ_POLLIN, 0},
                              {monitor.handle(), 0, ZMQ_POLLIN, 0}};
  while (!stop_) {
    auto now = Clock::now();
    long wait_ms = 1000;
    for (auto& [id, p] : pending) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(p.deadline - now).count();
      wait_ms = std::max(0L, std::min(wait_ms, left + 1));
    }
    if (!connected && !pending.empty()) wait_ms = std::min(wait_ms, 100L);
    try {
      zmq::poll(items, 3, std::chrono::milliseconds(wait_ms));
    } catch (const zmq::error_t& e) {
      if (e.num() == EINTR) continue;
      break;
    }
    if (items[1].revents & ZMQ_POLLIN) DrainWake(wake_fd_);
    while (items[2].revents & ZMQ_POLLIN) {
      zmq::message_t event, address;
      if (!monitor.recv(event, zmq::recv_flags::dontwait)) break;
      if (event.more()) (void)monitor.recv(address, zmq::recv_flags::none);
      uint16_t id = 0;
      int32_t value = 0;
      if (event.size() >= 2) std::memcpy(&id, event.data(), 2);
      if (event.size() >= 6) std::memcpy(&value, static_cast<const char*>(event.data()) + 2, 4);
      const bool after_failed_handshake = failed_handshake;
      failed_handshake = false;
      if (id == ZMQ_EVENT_HANDSHAKE_SUCCEEDED) {
        refused = Status::OK();
        unexplained_failures = 0;
      } else if (id == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL || id == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH ||
                 (id == ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL && ++unexplained_failures >= kUnexplainedFailures)) {
        refused = Status::PermissionDenied("authentication with ", endpoint_, " failed: ",
                                           DescribeHandshakeFailure(id, value, keys_.get()));
        if (connected) disconnected_since = Clock::now();
        connected = false;
        fail_all(refused);
      } else if (id == ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL) {
        // Once may be a peer closing as we connect (no request reached it:
        // they stay queued for the next attempt); again and again is the
        // server ending every handshake, i.e. keys that do not match.
        if (connected) disconnected_since = Clock::now();
        connected = false;
        failed_handshake = true;
      } else if (id == ZMQ_EVENT_CONNECTED) {
        connected = true;
        connection_events_.fetch_add(1);
      } else if (id == ZMQ_EVENT_CONNECT_RETRIED) {
        if (connected) disconnected_since = Clock::now();
        connected = false;
      } else if (id == ZMQ_EVENT_DISCONNECTED && after_failed_handshake) {
        connected = false;  // the end of that attempt: nothing was delivered, nothing fails yet
      } else if (id == ZMQ_EVENT_DISCONNECTED) {
        connection_events_.fetch_add(1);
        connected = false;
        disconnected_since = Clock::now();
        // Requests already sent will never be answered by this peer, but
        // a peer that answered and then closed (a worker told to stop) may
        // have left its reply queued here: take those first.
        drain_replies();
        fail_all(Status::Unavailable("lost the connection to ", endpoint_, " (the peer closed or died)"));
      }
    }
    std::deque<Outgoing> batch;
    {
      std::lock_guard<std::mutex> lock(mu_);
      batch.swap(outgoing_);
    }
    for (auto& o : batch) {
      // After a refused handshake libzmq does not reconnect, and a send
      // with no connection would block this thread: fail at once instead.
      if (!refused.ok()) {
        o.promise.set_value(refused);
        continue;
      }
      if (pending.count(o.message.request_id()) != 0) {
        o.promise.set_value(Status::Invalid("request id ", o.message.request_id(), " is already in flight to ",
                                            endpoint_));
        continue;
      }
      Status st = SendMessage(sock, o.message);
      if (!st.ok()) {
        o.promise.set_value(st.WithContext("request to " + endpoint_));
        continue;
      }
      pending.emplace(o.message.request_id(), Pending{std::move(o.promise), o.deadline});
    }
    drain_replies();
    now = Clock::now();
    if (!refused.ok() && !pending.empty()) fail_all(refused);
    if (!connected && !pending.empty() && now - disconnected_since > kConnectGrace) {
      fail_all(Status::Unavailable("cannot connect to ", endpoint_, " (is the peer running?)"));
    }
    for (auto it = pending.begin(); it != pending.end();) {
      if (it->second.deadline <= now) {
        it->second.promise.set_value(Status::Unavailable(
            "no reply from ", endpoint_, " before the deadline (is the peer running?)"));
        it = pending.erase(it);
      } else {
        ++it;
      }
    }
  }
  for (auto& [id, p] : pending) p.promise.set_value(Status::Cancelled("client closed"));
  StopMonitor(sock, monitor);
}

void RpcClient::StopMonitor(zmq::socket_t& sock, zmq::socket_t& monitor) {
  // libzmq's I/O thread sends monitor events with blocking sends while it
  // holds the lock that stopping the monitor takes; if the event pipe is full
  // nobody could ever drain it and both threads would wait forever. So stop
  // from a helper thread and keep reading events here until it is done.
  std::atomic<bool> stopped{false};
  std::thread stopper([&] {
    zmq_socket_monitor(sock.handle(), nullptr, 0);
    stopped = true;
  });
  const auto warn_at = Clock::now() + std::chrono::seconds(5);
  bool warned = false;
  while (!stopped) {
    if (!warned && Clock::now() > warn_at) {
      spdlog::warn("rpc client: stopping the connection monitor takes more than 5 s");
      warned = true;
    }
    zmq::pollitem_t item{monitor.handle(), 0, ZMQ_POLLIN, 0};
    try {
      zmq::poll(&item, 1, std::chrono::milliseconds(10));
      zmq::message_t event;
      while (monitor.recv(event, zmq::recv_flags::dontwait)) {
      }
    } catch (const zmq::error_t&) {
    }
  }
  stopper.join();
}

// ---------------------------------------------------------------- server

Responder Responder::Capture(MsgType type, uint64_t request_id, Sink sink) {
  Responder r;
  r.type_ = type;
  r.request_id_ = request_id;
  r.sink_ = std::move(sink);
  return r;
}

void Responder::Reply(Message reply) {
  if (sink_) {
    reply.set_request_id(request_id_);
    Sink sink = std::move(sink_);
    sink_ = nullptr;
    sink(std::move(reply));
    return;
  }
  if (server_ == nullptr) return;
  reply.set_request_id(request_id_);
  server_->Send(routing_, reply);
  server_ = nullptr;
}

void Responder::ReplyError(Status status) {
  Message m(type_, request_id_);
  m.set_status(std::move(status));
  Reply(std::move(m));
}

RpcServer::RpcServer(zmq::socket_t socket, std::string endpoint, Handler handler, Tick tick)
    : socket_(std::move(socket)), endpoint_(std::move(endpoint)), handler_(std::move(handler)),
      tick_(std::move(tick)) {
  wake_fd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
}

Result<std::unique_ptr<RpcServer>> RpcServer::Bind(const std::string& endpoint, Handler handler,
                                                   Tick tick, RpcServerOptions options) {
  std::string ep = endpoint;
  if (ep.rfind("tcp://", 0) == 0 && ep.size() > 2 && ep.substr(ep.size() - 2) == ":0") {
    ep = ep.substr(0, ep.size() - 1) + "*";
  }
  zmq::socket_t sock(Context(), zmq::socket_type::router);
  sock.set(zmq::sockopt::linger, 0);
  sock.set(zmq::sockopt::sndhwm, 0);
  sock.set(zmq::sockopt::rcvhwm, 0);
  sock.set(zmq::sockopt::router_mandatory, 1);
  if (options.max_frame_bytes >= 0) sock.set(zmq::sockopt::maxmsgsize, options.max_frame_bytes);
  TQDS_RETURN_NOT_OK(SecureServerSocket(sock, ep));
  try {
    sock.bind(ep);
  } catch (const zmq::error_t& e) {
    return Status::IOError("cannot bind ", endpoint, ": ", e.what());
  }
  std::string bound = sock.get(zmq::sockopt::last_endpoint);
  std::unique_ptr<RpcServer> s(
      new RpcServer(std::move(sock), bound, std::move(handler), std::move(tick)));
  return s;
}

RpcServer::~RpcServer() {
  Stop();
  ::close(wake_fd_);
}

void RpcServer::Start() {
  thread_ = std::thread([this] { Run(); });
}

void RpcServer::Stop() {
  stop_ = true;
  Wake(wake_fd_);
  if (thread_.joinable()) thread_.join();
}

void RpcServer::Send(const std::string& routing, const Message& reply) {
  std::vector<zmq::message_t> r;
  r.emplace_back(routing.data(), routing.size());
  Status st = SendMessage(socket_, reply, &r);
  if (!st.ok()) spdlog::debug("rpc server {}: reply dropped: {}", endpoint_, st.ToString());
}

void RpcServer::Run() {
  zmq::pollitem_t items[2] = {{socket_.handle(), 0, ZMQ_POLLIN, 0}, {nullptr, wake_fd_, ZMQ_POLLIN, 0}};
  std::chrono::milliseconds wait(100);
  while (!stop_) {
    try {
      zmq::poll(items, 2, wait);
    } catch (const zmq::error_t& e) {
      if (e.num() == EINTR) continue;
      spdlog::error("rpc server {}: poll failed: {}", endpoint_, e.what());
      break;
    }
    if (items[1].revents & ZMQ_POLLIN) DrainWake(wake_fd_);
    // Serve what is queued, bounded so the tick hook runs regularly.
    for (int served = 0; served < 256; ++served) {
      zmq::pollitem_t in{socket_.handle(), 0, ZMQ_POLLIN, 0};
      if (zmq::poll(&in, 1, std::chrono::milliseconds(0)) <= 0) break;
      std::vector<zmq::message_t> routing;
      auto req = RecvMessage(socket_, &routing);
      if (routing.empty()) continue;
      Responder resp;
      resp.server_ = this;
      resp.routing_.assign(static_cast<const char*>(routing[0].data()), routing[0].size());
      if (!req.ok()) {
        spdlog::warn("rpc server {}: rejected request: {}", endpoint_, req.status().ToString());
        resp.ReplyError(req.status());
        continue;
      }
      resp.type_ = req->type();
      resp.request_id_ = req->request_id();
      const MsgType type = req->type();
      const uint64_t id = req->request_id();
      try {
        handler_(req.MoveValue(), std::move(resp));
      } catch (...) {
        std::string what = "unknown exception";
        try {
          throw;
        } catch (const std::exception& e) {
          what = e.what();
        } catch (...) {
        }
        spdlog::error("rpc server {}: handler threw: {}", endpoint_, what);
        Responder again;
        again.server_ = this;
        again.routing_.assign(static_cast<const char*>(routing[0].data()), routing[0].size());
        again.type_ = type;
        again.request_id_ = id;
        again.ReplyError(Status::Internal("request failed: ", what));
      }
    }
    wait = tick_ ? tick_(Clock::now()) : std::chrono::milliseconds(100);
    if (wait.count() < 0) wait = std::chrono::milliseconds(0);
  }
}

}  // namespace tqds::wire
