// Blocking TCP socket helpers shared by the raw-TCP channels (the
// datasystem's worker-to-worker data plane, the storage units' stream
// channel): whole reads and writes, timeouts, listen and connect with a
// budget, and a server that runs one thread per connection.
//
// Thread-safe: the functions keep no state; a ConnectionServer may be
// stopped from any thread.
#pragma once

#include <sys/uio.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "tqds/status.h"

namespace tqds::net {

// Reads exactly n bytes. false on EOF (errno ECONNRESET), error or timeout
// (errno EAGAIN).
bool ReadAll(int fd, void* buf, size_t n);
// Reads exactly the bytes iov[0, count) describe (adjusting them), in
// batches of IOV_MAX. false as ReadAll.
bool ReadAllV(int fd, iovec* iov, size_t count);
inline bool ReadAllV(int fd, std::vector<iovec>& iov) { return ReadAllV(fd, iov.data(), iov.size()); }
// Writes n bytes. false on error or timeout (errno tells).
bool WriteAll(int fd, const void* buf, size_t n);
// Writes every byte of iov (adjusting it), in batches of IOV_MAX.
bool WriteAllV(int fd, std::vector<iovec>& iov);
// SO_RCVTIMEO and SO_SNDTIMEO of `ms` (0: none), and TCP_NODELAY.
void SetIoTimeouts(int fd, int ms);
void SetRecvTimeout(int fd, int ms);
void SetSendTimeout(int fd, int ms);
// strerror, with "timed out" for EAGAIN.
std::string ErrnoText(int e);

// A listening IPv4 socket on ip:port (0: an ephemeral port); `what` names
// the listener in errors. Returns the fd; *bound_port gets the port.
Result<int> ListenTcp(const std::string& ip, int port, const std::string& what, int* bound_port);
// A connected, blocking IPv4 socket to host:port (a dotted address) within
// `timeout_ms`, with TCP_NODELAY. Unavailable naming `endpoint` otherwise.
Result<int> ConnectTcp(const std::string& host, int port, int timeout_ms, const std::string& endpoint);
// Splits "host:port" (the last colon; the port 1-65535). `what` starts
// each error, e.g. "--worker_address must look like HOST:PORT ...".
Status SplitHostPort(const std::string& endpoint, const std::string& what, std::string* host, int* port);
// The host of a "tcp://host:port" endpoint; empty when it is not one.
std::string TcpEndpointHost(const std::string& endpoint);

struct ConnectionServerOptions {
  // Connections served at once (one thread each); one more is handed to
  // `refuse` and closed. Default 256.
  size_t max_connections = 256;
  // A connection with no request for this long is closed (SO_RCVTIMEO).
  // Default 120 s.
  int idle_timeout_ms = 120000;
  // A reply the peer does not take within this long closes it
  // (SO_SNDTIMEO). Default 30 s.
  int send_timeout_ms = 30000;
};

// Accepts on a listening socket and runs `serve(fd)` on a thread of its own
// for each connection; the fd is shut down and closed after serve returns
// (serve must not close it). Stop() shuts every connection down, which ends
// a serve blocked in a read, and joins all threads.
class ConnectionServer {
 public:
  using Serve = std::function<void(int fd)>;
  // Called on the accept thread for a connection over the cap, before it is
  // closed (may send a short refusal; must not block).
  using Refuse = std::function<void(int fd, size_t open)>;
  // Takes `listen_fd`.
  ConnectionServer(int listen_fd, ConnectionServerOptions options, Serve serve, Refuse refuse);
  ~ConnectionServer();
  ConnectionServer(const ConnectionServer&) = delete;
  ConnectionServer& operator=(const ConnectionServer&) = delete;
  void Stop();
  bool stopping() const { return stopping_.load(); }

 private:
  struct Conn {
    int fd = -1;
    std::thread thread;
    std::atomic<bool> done{false};
  };
  void AcceptLoop();
  void ReapLocked(bool all);

  // Constant after construction.
  const int listen_fd_;
  const ConnectionServerOptions options_;
  const Serve serve_;
  const Refuse refuse_;
  int wake_fd_ = -1;

  std::atomic<bool> stopping_{false};
  std::thread accept_thread_;
  std::mutex mu_;
  std::list<std::unique_ptr<Conn>> conns_;  // guarded by mu_
};

}  // namespace tqds::net
