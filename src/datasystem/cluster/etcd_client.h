// EtcdClient: a client of etcd's v3 API through the JSON gateway etcd serves
// on its client port (HTTP POST /v3/kv/range, /v3/kv/put, /v3/lease/grant,
// /v3/watch, ...), over libcurl.
//
// Thread safety: every method may be called from any number of threads at
// once. Unary calls borrow a CURL easy handle from a small pool (one handle is
// used by one call at a time; idle handles keep their connection for reuse).
// A watch runs on its own thread with its own handle; its callbacks run on
// that thread, one at a time, in revision order. The client must outlive
// every EtcdWatch it created.
//
// Failure contract: every unary call finishes within
// options.request_timeout. An etcd that refuses the connection, does not
// accept it within connect_timeout, or does not answer in time gives
// Unavailable naming the address; etcd's own errors map to the closest code
// (NotFound for a missing lease, Invalid for a compacted revision, ...).
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <thread>
#include <vector>

#include "datasystem/cluster/etcd_types.h"
#include "tqds/status.h"

namespace ds::cluster {

struct EtcdOptions {
  // "host:port" of an etcd client URL (plain http). Required.
  std::string address;
  // Budget of one unary call, connecting included. Default 2 s. Shorter
  // notices an outage sooner; too short fails calls on a loaded etcd.
  std::chrono::milliseconds request_timeout{2000};
  // Budget of a TCP connect (an etcd host that drops SYNs). Default 500 ms;
  // capped by request_timeout.
  std::chrono::milliseconds connect_timeout{500};
  // A broken watch stream is re-opened after this pause, doubling up to
  // watch_retry_max while etcd stays away. Defaults 100 ms / 1 s.
  std::chrono::milliseconds watch_retry_min{100};
  std::chrono::milliseconds watch_retry_max{1000};

  tqds::Status Validate() const;
};

// What a watch reports, on the watch's own thread.
struct WatchCallbacks {
  // A batch of changes in revision order (one etcd watch response).
  std::function<void(const std::vector<WatchEvent>& events)> on_events;
  // The whole current state of the watched range. Called when the watch
  // starts with from_revision == 0, and whenever the history needed to
  // resume is gone (compacted, or etcd came back with a different cluster
  // id / an older revision): replace what you hold, do not merge. Events
  // after it continue from snapshot.revision + 1.
  std::function<void(const RangeResult& snapshot)> on_resync;
  // The stream connected (OK) or broke (the reason; it is re-opened from
  // the last seen revision + 1 after a back-off). Optional.
  std::function<void(const tqds::Status& state)> on_stream_state;
};

class EtcdClient;

// A running watch. Destroying it (or Cancel()) stops the stream and joins
// the watch thread; no callback runs after Cancel() returns. Cancel() must
// not be called from one of this watch's own callbacks.
class EtcdWatch {
 public:
  ~EtcdWatch();
  EtcdWatch(const EtcdWatch&) = delete;
  EtcdWatch& operator=(const EtcdWatch&) = delete;

  void Cancel();
  // The next revision the watch will deliver (last seen + 1).
  int64_t next_revision() const { return next_revision_.load(); }
  // Times the stream was (re)opened and resyncs done; for tests and stats.
  int64_t connects() const { return connects_.load(); }
  int64_t resyncs() const { return resyncs_.load(); }

 private:
  friend class EtcdClient;
  struct StreamState;
  // Handles one complete line of the stream; false stops the stream.
  bool OnLine(StreamState& st, const std::string& line);
  // libcurl write callback: splits the stream into lines.
  static size_t OnBytes(char* data, size_t size, size_t nmemb, void* userdata);
  EtcdWatch(EtcdClient* client, std::string key, bool prefix, int64_t from_revision,
            WatchCallbacks callbacks);
  void Run();
  // One stream from next_revision_; returns when it breaks or on cancel.
  tqds::Status RunStream();
  tqds::Status Resync();
  void Report(const tqds::Status& state);
  void WaitBackoff(std::chrono::milliseconds pause);

  // Constant after construction.
  EtcdClient* const client_;
  const std::string key_;
  const bool prefix_;
  const WatchCallbacks callbacks_;
  // Shared with Cancel(). Lock order: wake_mu_ is a leaf (no other lock and
  // no callback while it is held).
  std::atomic<bool> cancelled_{false};
  std::mutex wake_mu_;
  std::condition_variable wake_cv_;  // back-off waits; notified by Cancel()
  void* multi_ = nullptr;            // guarded by wake_mu_: CURLM* of the open stream
  std::atomic<int64_t> next_revision_;
  std::atomic<int64_t> connects_{0};
  std::atomic<int64_t> resyncs_{0};
  // Watch thread only.
  bool need_resync_ = false;
  uint64_t cluster_id_ = 0;
  bool last_state_ok_ = false;
  bool reported_once_ = false;
  std::thread thread_;
};

class EtcdClient {
 public:
  static tqds::Result<std::unique_ptr<EtcdClient>> Create(EtcdOptions options);
  ~EtcdClient();
  EtcdClient(const EtcdClient&) = delete;
  EtcdClient& operator=(const EtcdClient&) = delete;

  const EtcdOptions& options() const { return options_; }
  const std::string& address() const { return options_.address; }

  // Is etcd answering? Its version, cluster id, leader and revision.
  tqds::Result<ServerStatus> GetServerStatus();

  // Put `value` at `key`, attached to `lease` (0: none). Returns the new
  // store revision.
  tqds::Result<int64_t> Put(const std::string& key, const std::string& value, int64_t lease = 0);
  // NotFound naming the key when absent.
  tqds::Result<KeyValue> Get(const std::string& key);
  // Every key starting with `prefix`, sorted by key, and the read's revision.
  tqds::Result<RangeResult> GetPrefix(const std::string& prefix);
  // Number of keys deleted (0 when absent: deleting is idempotent).
  tqds::Result<int64_t> Delete(const std::string& key);
  tqds::Result<int64_t> DeletePrefix(const std::string& prefix);
  tqds::Result<TxnResult> Commit(const Txn& txn);
  // Create-if-absent: true when `key` was created, false when it existed.
  tqds::Result<bool> PutIfAbsent(const std::string& key, const std::string& value,
                                 int64_t lease = 0);
  // Compare-and-swap on the key's mod_revision (0: must be absent).
  tqds::Result<bool> CompareAndSwap(const std::string& key, int64_t expected_mod_revision,
                                    const std::string& value, int64_t lease = 0);
  // Compacts history up to `revision` (watches from before it must resync).
  tqds::Status Compact(int64_t revision);

  // Leases. TTL in whole seconds (etcd raises TTLs below its minimum).
  tqds::Result<LeaseGrant> GrantLease(int64_t ttl_seconds);
  // Refreshes the lease once; returns its TTL. NotFound once it expired.
  tqds::Result<int64_t> KeepAliveOnce(int64_t lease);
  // Revokes the lease and deletes its keys. NotFound when already gone.
  tqds::Status RevokeLease(int64_t lease);

  // Watches `key` (or every key under it when `prefix`) from `from_revision`
  // (0: first a snapshot through on_resync, then changes after it). The
  // stream survives etcd outages: it reconnects and resumes, or resyncs when
  // the history is gone. Returns at once; events arrive on the watch thread.
  tqds::Result<std::unique_ptr<EtcdWatch>> Watch(const std::string& key, bool prefix,
                                                 int64_t from_revision, WatchCallbacks callbacks);

 private:
  friend class EtcdWatch;
  struct HandlePool;
  explicit EtcdClient(EtcdOptions options);
  // POSTs `body` to `path`; the parsed JSON answer, or the error (etcd's
  // error mapped, or Unavailable naming the address).
  tqds::Result<nlohmann::json> Call(const char* path, const nlohmann::json& body);
  tqds::Result<RangeResult> Range(const std::string& key, bool prefix);
  tqds::Result<int64_t> DeleteRange(const std::string& key, bool prefix);

  const EtcdOptions options_;
  const std::string base_url_;  // "http://host:port"
  std::unique_ptr<HandlePool> pool_;
};

}  // namespace ds::cluster
