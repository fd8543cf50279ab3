// Request/reply over ZMQ with persistent connections.
//
// RpcClient: one DEALER connection owned by a background I/O thread; any
// thread may Call() concurrently and many requests can be in flight (they are
// matched to replies by request id). Every call has a deadline, so a dead
// peer yields Unavailable instead of a hang.
//
// RpcServer: one ROUTER socket served by one thread. Handlers run on that
// thread and must not block; a handler may keep its Responder and reply later
// (from the server thread, e.g. in the tick hook) to implement waiting
// requests without delaying others. A handler that throws or returns an
// error produces an error reply; the server keeps serving.
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>
#include <deque>

#include "common/wire/security.h"
#include "common/wire/transport.h"

namespace tqds::wire {

using Clock = std::chrono::steady_clock;

class RpcClient {
 public:
  // Connects to `endpoint` ("tcp://host:port", "ipc://path", "inproc://name").
  // The connection is made in the background; a peer that never answers makes
  // calls fail at their deadline.
  // `keys`: the client's own CURVE keys (security.h); null: the process's.
  static Result<std::unique_ptr<RpcClient>> Connect(const std::string& endpoint,
                                                    std::shared_ptr<const CurveKeys> keys = nullptr);
  ~RpcClient();
  RpcClient(const RpcClient&) = delete;
  RpcClient& operator=(const RpcClient&) = delete;

  // Sends `request` (its request id is assigned here). The future yields the
  // reply, or the reply's error status, or Unavailable after `timeout`.
  std::future<Result<Message>> Call(Message request, std::chrono::milliseconds timeout);
  Result<Message> CallSync(Message request, std::chrono::milliseconds timeout) {
    return Call(std::move(request), timeout).get();
  }
  // As Call, but keeps the request id the caller set, which must have bit 63
  // set (kCallerIdBit; assigned ids never do) and be unique among this
  // client's calls in flight. A caller that resends a request after a lost
  // connection keeps its id, so a server can recognise the resend.
  static constexpr uint64_t kCallerIdBit = uint64_t{1} << 63;
  std::future<Result<Message>> CallWithId(Message request, std::chrono::milliseconds timeout);
  const std::string& endpoint() const { return endpoint_; }
  // How many times a connection to the peer was made or lost (counted as
  // the connection events arrive): a change means the peer may now be
  // another process than the one that answered before.
  uint64_t connection_events() const { return connection_events_.load(); }

 private:
  struct Outgoing {
    Message message;
    std::promise<Result<Message>> promise;
    Clock::time_point deadline;
  };
  RpcClient(std::string endpoint, std::shared_ptr<const CurveKeys> keys);
  std::future<Result<Message>> Enqueue(Message request, std::chrono::milliseconds timeout);
  void Run();
  static void StopMonitor(zmq::socket_t& sock, zmq::socket_t& monitor);

  const std::string endpoint_;
  const std::shared_ptr<const CurveKeys> keys_;  // null: the process's
  int wake_fd_ = -1;
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> next_id_{1};
  std::atomic<uint64_t> connection_events_{0};
  std::mutex mu_;
  std::deque<Outgoing> outgoing_;  // guarded by mu_
  std::thread thread_;
};

class RpcServer;

// Where to send the reply of one request. Cheap to move; use only on the
// server thread. A capturing responder hands the reply (its request id set)
// to a function instead, e.g. to record it before passing it on.
class Responder {
 public:
  using Sink = std::function<void(Message reply)>;
  Responder() = default;
  static Responder Capture(MsgType type, uint64_t request_id, Sink sink);
  void Reply(Message reply);
  void ReplyError(Status status);
  bool valid() const { return server_ != nullptr || sink_ != nullptr; }
  MsgType type() const { return type_; }
  uint64_t request_id() const { return request_id_; }

 private:
  friend class RpcServer;
  RpcServer* server_ = nullptr;
  std::string routing_;
  MsgType type_ = MsgType::kInvalid;
  uint64_t request_id_ = 0;
  Sink sink_;
};

struct RpcServerOptions {
  // Largest frame (header or one payload) a peer may send; a peer whose
  // frame declares more is disconnected by ZMQ before anything is
  // allocated for it. -1 (default): no limit beyond WireLimits.
  int64_t max_frame_bytes = -1;
};

class RpcServer {
 public:
  using Handler = std::function<void(Message&& request, Responder responder)>;
  // Called after every poll round on the server thread; returns how long the
  // server may sleep before calling it again.
  using Tick = std::function<std::chrono::milliseconds(Clock::time_point now)>;

  // Binds `endpoint`; "tcp://127.0.0.1:0" picks a free port. Fails with a
  // clear IOError when the address is taken.
  static Result<std::unique_ptr<RpcServer>> Bind(const std::string& endpoint, Handler handler,
                                                 Tick tick = nullptr,
                                                 RpcServerOptions options = {});
  ~RpcServer();

  // The endpoint actually bound (with the real port).
  const std::string& endpoint() const { return endpoint_; }
  // Serves on a background thread until Stop().
  void Start();
  void Stop();

 private:
  friend class Responder;
  RpcServer(zmq::socket_t socket, std::string endpoint, Handler handler, Tick tick);
  void Run();
  void Send(const std::string& routing, const Message& reply);

  zmq::socket_t socket_;  // used only by the server thread after Start()
  std::string endpoint_;
  Handler handler_;
  Tick tick_;
  int wake_fd_ = -1;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

}  // namespace tqds::wire
