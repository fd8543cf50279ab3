// Request/reply of Messages over the stream channel (stream_codec.h): plain
// TCP after a handshake that proves the deployment's CURVE keys at both
// ends. For bulk payloads between hosts that hold keys: CURVE encrypts every
// byte of a ZMQ tcp:// socket (about 0.9 GB/s a core here, four passes for
// a put and a get through a storage unit), this channel authenticates the
// peers once and then moves the bytes as they are, like the datasystem's
// worker-to-worker data plane. Nothing on it is encrypted.
//
// StreamServer: one thread per connection (socket_io.h); each request is
// handed to the handler with a capturing Responder, which must reply before
// the handler returns. A message over the server's limits, or bytes that
// are not this protocol, get an error reply naming what was wrong (request
// id 0) and the connection is closed.
// StreamClient: a pool of connections to one server; every Call runs on a
// thread of its own and takes a connection for itself, so calls from many
// threads proceed in parallel.
//
// Thread-safe: StreamServer::Stop, StreamClient::Call from any thread.
#pragma once

#include <atomic>
#include <chrono>
#include <future>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "common/socket_io.h"
#include "common/wire/rpc.h"
#include "common/wire/stream_codec.h"

namespace tqds::wire {

// The process's keys in raw form, for the handshake.
struct StreamIdentity {
  bool can_serve = false;    // has the server secret
  bool can_connect = false;  // has the client key pair
  uint8_t server_public[32] = {};
  uint8_t server_secret[32] = {};
  uint8_t client_public[32] = {};
  uint8_t client_secret[32] = {};
  std::vector<std::string> authorized;  // raw 32-byte client public keys
};
// From the process's keys (security.h): null when it has none.
Result<std::shared_ptr<const StreamIdentity>> ProcessStreamIdentity();

struct StreamServerOptions {
  // Connections, idle and send timeouts (socket_io.h). Defaults 256, 120 s, 30 s.
  tqds::net::ConnectionServerOptions connections;
  // What one request may carry (stream_codec.h). Default: no payload limit
  // beyond 1 TiB.
  StreamLimits limits;
};

class StreamServer {
 public:
  // Listens on `ip`:`port` (0: ephemeral). Needs the process's server keys:
  // PermissionDenied without them (the channel has no unauthenticated
  // mode). `name` names the server in log lines.
  static Result<std::unique_ptr<StreamServer>> Start(const std::string& ip, int port, std::string name,
                                                     RpcServer::Handler handler, StreamServerOptions options = {});
  ~StreamServer();
  void Stop();
  // "ip:port" it listens on, and the port.
  const std::string& endpoint() const { return endpoint_; }
  int port() const { return port_; }

 private:
  StreamServer(const std::string& ip, int port, std::string name, RpcServer::Handler handler,
               StreamServerOptions options, std::shared_ptr<const StreamIdentity> id)
      : endpoint_(ip + ":" + std::to_string(port)), port_(port), name_(std::move(name)),
        handler_(std::move(handler)), options_(options), id_(std::move(id)) {}
  bool Handshake(int fd);
  void Serve(int fd);

  // Constant after construction.
  const std::string endpoint_;
  const int port_;
  const std::string name_;
  const RpcServer::Handler handler_;
  const StreamServerOptions options_;
  const std::shared_ptr<const StreamIdentity> id_;
  std::atomic<bool> stopping_{false};
  std::atomic<int64_t> last_refusal_log_ms_{0};
  std::unique_ptr<tqds::net::ConnectionServer> server_;  // set once in Start()
};

struct StreamClientOptions {
  // Connect budget. Default 2 s.
  int connect_timeout_ms = 2000;
  // Idle connections kept for reuse. Default 8.
  size_t max_idle = 8;
  // What a reply may carry. Default: stream_codec.h's.
  StreamLimits limits;
};

class StreamClient {
 public:
  // A client of the stream server at "host:port" (an IPv4 address).
  // Connections are made by the calls. PermissionDenied when the process
  // has no client keys.
  static Result<std::unique_ptr<StreamClient>> Create(const std::string& endpoint,
                                                      StreamClientOptions options = {});
  ~StreamClient();
  StreamClient(const StreamClient&) = delete;
  StreamClient& operator=(const StreamClient&) = delete;

  // Sends `request` (a request id is assigned when it has none) on a
  // connection of its own and yields the reply, the reply's error status,
  // or Unavailable naming the server. `timeout` bounds the connect and each
  // stall of a send or receive.
  std::future<Result<Message>> Call(Message request, std::chrono::milliseconds timeout);
  Result<Message> CallSync(Message request, std::chrono::milliseconds timeout);
  const std::string& endpoint() const { return endpoint_; }

 private:
  StreamClient(std::string endpoint, std::string host, int port, StreamClientOptions options,
               std::shared_ptr<const StreamIdentity> id)
      : endpoint_(std::move(endpoint)), host_(std::move(host)), port_(port), options_(options),
        id_(std::move(id)) {}
  Result<int> Acquire(int timeout_ms);
  void Return(int fd);
  Status Handshake(int fd);

  // Constant after construction.
  const std::string endpoint_;
  const std::string host_;
  const int port_;
  const StreamClientOptions options_;
  const std::shared_ptr<const StreamIdentity> id_;
  std::atomic<uint64_t> next_id_{1};
  std::mutex mu_;
  std::vector<int> idle_;  // guarded by mu_
};

// The socket half of the codec, shared by both ends: writes one message;
// reads one (IOError for the socket closing or stalling, Invalid for bytes
// that are not this protocol or exceed `limits`).
Status WriteStreamMessage(int fd, const Message& m);
Result<Message> ReadStreamMessage(int fd, const StreamLimits& limits);

}  // namespace tqds::wire
