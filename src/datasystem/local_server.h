// LocalServer: the worker's Unix-domain socket. One thread accepts; each
// client connection is served by its own thread (a blocking read/handle/
// write loop), which owns that connection's Session, so a Get that waits
// never delays another client. When a connection closes (client exit or
// crash), its Session is closed: pins released, unsealed creates freed.
//
// Bounds (LocalServerOptions): at most max_connections client threads; one
// more connection gets an error frame saying so and is closed. Frames are
// read into buffers that grow with the bytes that arrive (local_frame.h),
// each at most max_frame_bytes and all together at most max_inflight_bytes;
// a frame over either, or one that stalls mid-way, closes its own
// connection with a logged reason. Idle connections are not closed: a
// client's connection holds its pins and pending writes.
//
// Thread-safe: Stop() may be called from any thread once.
#pragma once

#include <atomic>
#include <chrono>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "datasystem/local_frame.h"
#include "datasystem/request_handler.h"

namespace ds {

struct LocalServerOptions {
  // Client connections served at once (one thread each). Default 1024.
  size_t max_connections = 1024;
  // Largest payload total of one frame. Default 16 GiB; the worker passes
  // its arena size (no value can be larger).
  uint64_t max_frame_bytes = 16ull << 30;
  // Bytes of incoming frames buffered at once, all connections together.
  // Default 4 GiB; the worker passes max(1 GiB, 2 x its arena size).
  uint64_t max_inflight_bytes = 4ull << 30;
  // A frame that has started and then sends no byte for this long closes
  // its connection. Default 60 s.
  int frame_stall_timeout_ms = 60000;
};

class LocalServer {
 public:
  // Binds `path`, replacing a stale socket file left by a dead worker; fails
  // with AlreadyExists when a live process still serves it.
  static Result<std::unique_ptr<LocalServer>> Start(const std::string& path, int arena_fd,
                                                    RequestHandler& handler, ObjectStore& store,
                                                    LocalServerOptions options = {});
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
              ObjectStore& store, LocalServerOptions options)
      : path_(std::move(path)), listen_fd_(listen_fd), arena_fd_(arena_fd), handler_(handler),
        store_(store), options_(options), budget_(options.max_inflight_bytes) {}
  void AcceptLoop();
  void Serve(Conn* conn);
  void ReapLocked(bool all);
  // Tells a connection over the cap why, and closes it (accept thread, mu_ held).
  void Refuse(int fd);

  // Constant after construction.
  const std::string path_;
  const int listen_fd_;
  const int arena_fd_;
  RequestHandler& handler_;
  ObjectStore& store_;
  const LocalServerOptions options_;
  ByteBudget budget_;  // thread-safe

  std::thread accept_thread_;
  std::atomic<bool> stopping_{false};
  mutable std::mutex mu_;
  std::list<std::unique_ptr<Conn>> conns_;  // guarded by mu_
  // Accept thread only.
  uint64_t refused_ = 0;
  std::chrono::steady_clock::time_point last_refusal_log_{};
};

}  // namespace ds
