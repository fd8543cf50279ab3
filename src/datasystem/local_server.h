// LocalServer: the worker's Unix-domain socket. One thread accepts; each
// client connection is served by its own thread (a blocking read/handle/
// write loop), which owns that connection's Session, so a Get that waits
// never delays another client. When a connection closes (client exit or
// crash), its Session is closed: pins released, unsealed creates freed.
//
// Thread-safe: Stop() may be called from any thread once.
#pragma once

#include <atomic>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "datasystem/request_handler.h"

namespace ds {

class LocalServer {
 public:
  // Binds `path`, replacing a stale socket file left by a dead worker; fails
  // with AlreadyExists when a live process still serves it.
  static Result<std::unique_ptr<LocalServer>> Start(const std::string& path, int arena_fd,
                                                    RequestHandler& handler, ObjectStore& store);
  ~LocalServer();
  void Stop();
  size_t connections() const;

 private:
  struct Conn {
    int fd = -1;
    std::thread thread;
    std::atomic<bool> done{false};
  };
  LocalServer(std::string path, int listen_fd, int arena_fd, RequestHandler& handler,
              ObjectStore& store)
      : path_(std::move(path)), listen_fd_(listen_fd), arena_fd_(arena_fd), handler_(handler),
        store_(store) {}
  void AcceptLoop();
  void Serve(Conn* conn);
  void ReapLocked(bool all);

  // Constant after construction.
  const std::string path_;
  const int listen_fd_;
  const int arena_fd_;
  RequestHandler& handler_;
  ObjectStore& store_;

  std::thread accept_thread_;
  std::atomic<bool> stopping_{false};
  mutable std::mutex mu_;
  std::list<std::unique_ptr<Conn>> conns_;  // guarded by mu_
};

}  // namespace ds
