// The cluster's data plane: worker-to-worker transfer of object bytes over
// plain TCP, straight from the holder's shared memory into the reader's.
// The control plane (who owns which key's metadata, where the bytes are)
// uses the ZMQ RPC (cluster_node.h); only payload bytes travel here.
//
// Framing (little-endian), one request per chunk, pipelined on a
// connection (replies come back in request order):
//   request  (32 bytes + key): magic u32 = 0x31504344 ("DCP1") | key_len u32 |
//            version u64 | offset u64 | length u64 | key bytes
//   reply    (16 bytes + msg + data): code u8 | 3 x u8 (0) | msg_len u32 |
//            length u64 | message bytes | `length` value bytes (code 0 only)
// A request for another version than the holder's gives NotFound, so a
// reader never gets the bytes of a different write. The server checks every
// length (key <= 1024 bytes, offset + length <= object size).
//
// DataServer: one accept thread, one thread per connection (blocking
// read-pin-send-release loop; the pin keeps the block from being reused
// while its bytes are on the wire), at most DataServerOptions::
// max_connections of them: one more gets an Unavailable reply saying so and
// is closed. A connection idle for idle_timeout_ms, or whose peer stops
// reading, is closed (PullClient drops pooled connections its peer closed).
// Requests are parsed from a fixed 256 KiB buffer: nothing is allocated
// for a length a peer declares. PullClient: pools idle connections per
// peer; a pull splits large objects into chunks spread over several
// connections, each driven by its own thread.
//
// Authentication: in a process with the deployment's keys (security.h), a
// connection starts with a handshake that proves both ends hold the
// deployment's server secret, before any request is read:
//   server: hello (40 bytes): magic u32 = 0x48445154 ("TQDH") | version u32
//           = 1 | server nonce (32 random bytes)
//   client: client nonce (32) | HMAC-SHA256(K, "C" | server nonce | client nonce)
//   server: HMAC-SHA256(K, "S" | client nonce | server nonce), then requests
// with K = BLAKE2b-256 keyed by the server secret over "tqds data plane v1"
// (libsodium). A peer that fails it is closed before it can ask for a byte.
// The bytes themselves are not encrypted. Without keys, a data server binds
// only a loopback address unless plain tcp is allowed (security.h).
//
// Thread-safe: DataServer::Stop and PullClient::Pull from any thread.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "common/socket_io.h"
#include "datasystem/object_store.h"

namespace ds {

inline constexpr uint32_t kPullMagic = 0x31504344;
inline constexpr uint32_t kHandshakeMagic = 0x48445154;

// ---- The data plane's messages: encoder and decoder side by side (the
// fuzz target fuzz/data_plane.cc runs the decoders on any bytes).

// A request's fixed part (its key travels separately, see the framing above).
struct PullRange {
  uint64_t version = 0;
  uint64_t offset = 0;
  uint64_t length = 0;
};
inline constexpr size_t kPullRequestBytes = 32;
inline constexpr size_t kPullReplyBytes = 24;

// Appends one request to `out`.
void EncodePullRequest(const std::string& key, const PullRange& range, std::string* out);
// Decodes the complete requests at the front of in[0, n), at most `max` of
// them, appending each to `ranges` and `keys`; returns the bytes they took
// (0 when the first one is not complete yet). Invalid (and nothing
// appended) when the bytes are not this protocol: a bad magic, or a key
// length of 0 or over proto::kMaxKeyBytes.
Result<size_t> DecodePullRequests(const uint8_t* in, size_t n, size_t max, std::vector<PullRange>* ranges,
                                  std::vector<std::string>* keys);

// A reply's fixed part.
struct PullReply {
  StatusCode code = StatusCode::kOk;
  uint32_t msg_len = 0;  // bytes of the error message that follow (code != OK)
  uint64_t length = 0;   // value bytes that follow (code OK)
  uint64_t ttl_ms = 0;   // the object's time left to live; 0: never expires
};
// Writes the kPullReplyBytes of `r` to `out`.
void EncodePullReply(const PullReply& r, uint8_t* out);
// Decodes the kPullReplyBytes at `in` as the reply to a request for
// `expected` bytes. Invalid, naming what is wrong, when they are not: an
// unknown status code, a message over 1 MiB, or an OK reply whose length
// is not the one asked for or that carries a message.
Result<PullReply> DecodePullReply(const uint8_t* in, uint64_t expected);

// The data plane's handshake key; `on` false: the process has no keys.
struct HandshakeKey {
  bool on = false;
  uint8_t k[32] = {};
};
// Derived from the process's keys (security.h): PermissionDenied when they
// lack server.key_secret.
Result<HandshakeKey> LoadHandshakeKey();

struct DataServerOptions {
  // Connections served at once (one thread each). Default 256.
  size_t max_connections = 256;
  // A connection with no request for this long is closed. Default 120 s.
  int idle_timeout_ms = 120000;
  // A reply the peer does not take within this long closes it. Default 30 s.
  int send_timeout_ms = 30000;
};

class DataServer {
 public:
  // Listens on `ip`:`port` (0: an ephemeral port). `name` (the worker's
  // address) appears in error messages.
  static Result<std::unique_ptr<DataServer>> Start(const std::string& ip, int port,
                                                   std::string name, ObjectStore& store,
                                                   DataServerOptions options = {});
  ~DataServer();
  void Stop();
  // "ip:port" this server listens on.
  const std::string& endpoint() const { return endpoint_; }

 private:
  DataServer(std::string endpoint, std::string name, ObjectStore& store, DataServerOptions options,
             HandshakeKey key)
      : endpoint_(std::move(endpoint)), name_(std::move(name)), store_(store), options_(options), key_(key) {}
  // The server's half of the handshake; false (and a rate-limited log line)
  // when the peer fails it.
  bool Handshake(int fd);
  // Tells a connection over the cap why (accept thread).
  void Refuse(int fd, size_t open);
  void Serve(int fd);

  // Constant after construction.
  const std::string endpoint_;
  const std::string name_;
  ObjectStore& store_;
  const DataServerOptions options_;
  const HandshakeKey key_;
  // Accept thread only.
  uint64_t refused_ = 0;
  std::chrono::steady_clock::time_point last_refusal_log_{};

  std::atomic<bool> stopping_{false};
  std::atomic<int64_t> last_handshake_log_ms_{0};
  std::unique_ptr<tqds::net::ConnectionServer> server_;  // set once in Start()
};

struct PullOptions {
  // Connections used at most for one pull from one peer. Default 4.
  size_t connections = 4;
  // Objects larger than this are split into chunks of this size, spread
  // over the connections. Default 8 MiB.
  uint64_t chunk_bytes = 8ull << 20;
  // Connect budget and per-read/write stall limit (a hung peer fails the
  // pull instead of hanging it). Defaults 1 s / 10 s.
  int connect_timeout_ms = 1000;
  int io_timeout_ms = 10000;
};

// One object, or its bytes [offset, offset + size), to pull into `dest`
// (shared memory the caller created).
struct PullItem {
  std::string key;
  uint64_t version = 0;
  uint64_t size = 0;
  uint8_t* dest = nullptr;
  uint64_t offset = 0;
  // Set by Pull: the holder's time left to live for this object; 0: never.
  uint64_t ttl_ms = 0;
};

class PullClient {
 public:
  explicit PullClient(PullOptions options = {});
  ~PullClient();
  PullClient(const PullClient&) = delete;
  PullClient& operator=(const PullClient&) = delete;

  // Pulls every item from the data server at `endpoint` (worker `holder`,
  // named in errors). One status per item: OK, NotFound (the holder no
  // longer has that version) or Unavailable/IOError naming key and holder.
  // Fills each item's ttl_ms.
  std::vector<Status> Pull(const std::string& endpoint, const std::string& holder,
                           std::vector<PullItem>& items);

 private:
  Result<int> Acquire(const std::string& endpoint);
  // The client's half of the handshake on a new connection.
  Status Handshake(int fd, const std::string& endpoint);
  void Return(const std::string& endpoint, int fd);

  const PullOptions options_;
  Result<HandshakeKey> key_;  // constant after construction
  std::mutex mu_;
  std::unordered_map<std::string, std::vector<int>> idle_;  // guarded by mu_
};

}  // namespace ds
