// Worker: wires one datasystem worker together (arena, allocator, eviction
// policy, spill tier, object store, request handler, Unix-socket server, TCP
// server, with a coordination address (--etcd_address, else
// --metastore_address) the ClusterNode, and with --start_metastore_service the
// metastore, metastore_hook.h) and owns the pid file, named by the worker's
// full address. It holds no logic of its own.
//
// Threads: the TCP (ZMQ) server thread (also runs TTL expiry and retries
// waiting TCP Gets), the Unix accept thread, one thread per local client.
// Thread-safe: RequestStop() from any thread (also from a request handler).
#pragma once

#include <atomic>
#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>

#include "common/metrics_endpoint.h"
#include "common/wire/rpc.h"
#include "datasystem/arena.h"
#include "datasystem/cluster_node.h"
#include "datasystem/local_server.h"
#include "datasystem/object_store.h"
#include "datasystem/request_handler.h"
#include "datasystem/worker_options.h"

namespace ds {

class Worker {
 public:
  // Returns once the worker serves both sockets, or a clear error: a worker
  // already runs at the address, the port is taken, etcd is unreachable...
  static Result<std::unique_ptr<Worker>> Start(const WorkerOptions& options);
  ~Worker();

  // Asks the process to stop (raises SIGTERM to itself; the main thread
  // waits for it with sigwait and then destroys the Worker).
  static void RequestProcessStop();
  // Stops serving and removes the socket, pid and spill files. Idempotent.
  void Stop();

 private:
  explicit Worker(WorkerOptions options) : options_(std::move(options)) {}
  Status Init();
  Status LockPidFile();
  std::chrono::milliseconds Tick(tqds::wire::Clock::time_point now);
  void OnTcpRequest(Message&& request, tqds::wire::Responder responder);

  const WorkerOptions options_;
  int pid_fd_ = -1;
  std::unique_ptr<SharedArena> arena_;
  std::unique_ptr<ObjectStore> store_;
  std::unique_ptr<ClusterNode> cluster_;  // null for a standalone worker
  std::unique_ptr<RequestHandler> handler_;
  // handler_ once made, for metrics scrapes (on the exposer's HTTP thread).
  std::atomic<const RequestHandler*> handler_view_{nullptr};
  std::unique_ptr<tqds::MetricsEndpoint> metrics_;  // --metrics_port >= 0
  std::unique_ptr<LocalServer> local_;
  // local_ once it serves, for the handler's Stats (read on server threads).
  std::atomic<const LocalServer*> local_view_{nullptr};
  std::unique_ptr<tqds::wire::RpcServer> tcp_;
  // TCP Gets waiting for keys; touched only on the TCP server thread.
  struct Deferred {
    Message request;
    tqds::wire::Responder responder;
    tqds::wire::Clock::time_point deadline;
  };
  std::deque<Deferred> deferred_;
  tqds::wire::Clock::time_point next_expiry_{};
  bool stopped_ = false;
  bool metastore_started_ = false;  // StartMetastore succeeded: StopMetastore on Stop
};

}  // namespace ds
