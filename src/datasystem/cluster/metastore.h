// Metastore: an in-process stand-in for etcd, so datasystem workers can form
// a cluster with no etcd ("metastore mode", as openYuanrong's
// --start_metastore_service). It serves the subset of etcd's v3 JSON gateway
// that EtcdClient and Membership use (/v3/maintenance/status, /v3/kv/{range,
// put,deleterange,txn,compaction}, /v3/lease/{grant,keepalive,revoke,
// timetolive}, streaming /v3/watch; GET /version and /health) with etcd's
// JSON, over HTTP/1.1 on
// cpp-httplib; point EtcdOptions::address at address() and those clients
// work unchanged. State lives in memory only: a stopped or crashed
// metastore loses every key and lease (docs/metastore.md says what clients
// then see and do).
//
// Thread safety: Start/Stop/address may be called from any thread; Stop()
// is idempotent and must not run on a server thread. Requests are served
// on a pool of options.server_threads threads; each open watch holds one of
// them for its lifetime (max_watches caps them, leaving the rest for unary
// calls). Input is hostile: bodies over max_request_bytes, malformed JSON,
// bad base64 and out-of-range numbers get HTTP 400 with an etcd-style error
// body ({"error","code","message"}), never a crash.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>

#include "datasystem/cluster/metastore_state.h"
#include "tqds/status.h"

namespace ds::cluster {

struct MetastoreOptions {
  // Address to listen on. Default loopback; "0.0.0.0" serves every
  // interface (the metastore has no authentication: keep it on a trusted
  // network).
  std::string host = "127.0.0.1";
  // Port; 0 picks a free one (see Metastore::port()). Default 0.
  int port = 0;
  // Largest request body accepted; larger ones get 400 "request is too
  // large" without being read. Default 2 MiB (etcd's limit is 1.5 MiB of
  // protobuf; base64 and JSON add about a third).
  size_t max_request_bytes = size_t{2} << 20;
  // Threads serving connections: each open connection (a client's
  // keep-alive connection, a watch) holds one; connections beyond wait for
  // a free thread. A worker holds about three (its watch, its registry and
  // keep-alive clients). Default 256: about 80 workers; raise it for more.
  size_t server_threads = 256;
  // Concurrent watch streams; more get 429 (ResourceExhausted) at once.
  // Must be below server_threads so unary calls keep threads. Default 192.
  size_t max_watches = 192;
  // An idle watch stream gets an etcd progress notification this often;
  // it doubles as the probe that notices a vanished watcher. Default 1 s.
  std::chrono::milliseconds progress_interval{1000};
  // Events sent in one watch message (whole revisions). Default 1000.
  size_t max_events_per_message = 1000;
  // An idle keep-alive connection is closed after this long (whole
  // seconds). It also bounds how long Stop() waits for idle connections
  // (cpp-httplib checks for shutdown only between waits). Default 1 s;
  // clients reconnect transparently.
  std::chrono::seconds idle_connection_timeout{1};
  // How often leases are checked for expiry (etcd sweeps every 500 ms).
  // Default 100 ms.
  std::chrono::milliseconds lease_check_interval{100};
  // Store bounds (data, history, leases, TTLs); see StateLimits.
  metastore::StateLimits limits;

  tqds::Status Validate() const;
};

class Metastore {
 public:
  // Binds host:port and serves until Stop(). Fails with Unavailable naming
  // the address when it cannot bind (in use, bad host).
  static tqds::Result<std::unique_ptr<Metastore>> Start(MetastoreOptions options);
  static tqds::Result<std::unique_ptr<Metastore>> Start(const std::string& host, int port);
  // Stop()s.
  ~Metastore();
  Metastore(const Metastore&) = delete;
  Metastore& operator=(const Metastore&) = delete;

  // Ends every watch stream and connection, stops serving and joins all
  // threads. Clients then get "connection refused" (Unavailable naming the
  // address). Idempotent.
  void Stop();

  // "host:port" as bound (the chosen port when options.port was 0).
  std::string address() const;
  int port() const { return port_; }
  // The current store revision and live watch streams; for tests and stats.
  int64_t revision() const;
  size_t watches() const;

 private:
  class Server;
  Metastore(MetastoreOptions options, uint64_t seed);

  // Constant after construction.
  const MetastoreOptions options_;
  const uint64_t cluster_id_;
  const uint64_t member_id_;
  int port_ = 0;

  std::unique_ptr<metastore::MetastoreState> state_;
  std::unique_ptr<Server> server_;  // the HTTP side; Stop() ends it, the destructor frees it
  std::once_flag stop_once_;
};

}  // namespace ds::cluster
