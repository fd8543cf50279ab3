// RequestHandler: decodes datasystem requests, runs them against the
// ObjectStore and builds replies. Transport-free: the Unix-socket server and
// the TCP (ZMQ) server both call it, so every request is validated in one
// place. Thread-safe (the store locks); one Session per Unix connection.
#pragma once

#include <chrono>
#include <functional>
#include <optional>
#include <string>

#include "common/wire/message.h"
#include "datasystem/cluster_hooks.h"
#include "datasystem/object_store.h"
#include "ds/kv_client.h"

namespace ds {

using tqds::wire::Message;

struct HandlerContext {
  std::string worker;        // "host:port"
  std::string socket_path;   // Unix socket local clients connect to
  uint64_t instance = 0;     // random id of this worker process
  uint64_t arena_size = 0;
  // Whether the arena's background commit (--populate_memory) is done.
  std::function<bool()> memory_populated;
  int pid = 0;
  std::function<void()> request_shutdown;
  // Local clients connected now (Stats); may be empty.
  std::function<size_t()> clients;
  // "ip:port" of the worker's Prometheus endpoint; empty: none.
  std::string metrics;
  // The cluster this worker belongs to; null for a standalone worker.
  // Borrowed: outlives the handler.
  ClusterHooks* cluster = nullptr;
};

class RequestHandler {
 public:
  RequestHandler(ObjectStore& store, HandlerContext context)
      : store_(store), context_(std::move(context)) {}

  // A request from a local client. Returns nullopt for one-way messages
  // (Release, Abort). May block up to a Get's wait_ms.
  std::optional<Message> HandleLocal(Message&& request, Session& session);

  // A request over TCP (copying path: payload frames in and out, no shared
  // memory). Never blocks: a Get that would wait returns with `*retry` set,
  // and the caller asks again (HandleTcp) until the deadline.
  Message HandleTcp(const Message& request, bool* retry);

  const HandlerContext& context() const { return context_; }
  // What Stats replies: the store's counters, the clients, the cluster.
  // Thread-safe.
  WorkerStats CollectStats() const;

 private:
  // What one request may use: its connection's session, where it came
  // from, and (TCP) where to say that a Get should be asked again.
  struct Call {
    Session& session;
    bool local;
    bool* retry;
  };
  using Handler = Result<Message> (RequestHandler::*)(const Message&, Call&);
  struct Route {
    tqds::wire::MsgType type;
    const char* name;
    // kBoth: the TCP port serves it too; the rest need shared memory (the
    // Unix socket only), and kUnixOneWay ones get no reply.
    enum Where : uint8_t { kBoth, kUnix, kUnixOneWay } where;
    Handler fn;
  };
  static const Route kRoutes[];
  static const Route* RouteOf(tqds::wire::MsgType type);

  Result<Message> Dispatch(const Route* route, const Message& request, Call& call);
  // Per key: whether this store or (through the cluster, which must be
  // set) another worker holds it; Unavailable when no owner of a key answers.
  tqds::Result<std::vector<bool>> ExistAnywhere(const std::vector<std::string>& keys);
  // store_.Create, except that an if-absent write from a local client in a
  // cluster (mset NX, msettx) also refuses a key that only another worker
  // holds, as it refuses one of this store (AlreadyExists; all or nothing:
  // the others Cancelled, nothing allocated). Over TCP: this store only (the
  // TCP thread must not wait on peers).
  Result<std::vector<CreateSlot>> CreateSlots(Call& call, std::vector<std::string> keys,
                                              const std::vector<uint64_t>& sizes, const WriteOptions& opts);
  Result<Message> Hello(const Message& request, Call& call);
  Result<Message> Create(const Message& request, Call& call);
  Result<Message> Seal(const Message& request, Call& call);
  Result<Message> Put(const Message& request, Call& call);
  Result<Message> Get(const Message& request, Call& call);
  Result<Message> Release(const Message& request, Call& call);
  Result<Message> Abort(const Message& request, Call& call);
  Result<Message> Delete(const Message& request, Call& call);
  Result<Message> Exist(const Message& request, Call& call);
  // Sets the time to live of this worker's copies of the keys.
  Result<Message> Expire(const Message& request, Call& call);
  Result<Message> Stats(const Message& request, Call& call);
  Result<Message> Shutdown(const Message& request, Call& call);
  // The cluster's worker-to-worker messages (ClusterNode::HandlePeer).
  Result<Message> Peer(const Message& request, Call& call);
  // Local Get misses in a cluster: pull from other workers, wait up to `wait`.
  // `ranges`: Get's (empty, or one per key): a key of which only part is
  // asked for is pulled as that part alone.
  Status FetchMissing(Session& session, const std::vector<std::string>& keys,
                      const std::vector<ValueRange>& ranges, std::vector<Located>& found,
                      std::chrono::milliseconds wait);

  ObjectStore& store_;
  const HandlerContext context_;
};

}  // namespace ds
