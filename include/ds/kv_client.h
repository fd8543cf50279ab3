// ds::KVClient: the client of a datasystem worker on this host.
//
// Init() asks the worker at host:port (TCP) for its Unix socket, connects to
// it and maps the worker's shared-memory arena (the descriptor is passed over
// the socket). Values then move through shared memory:
//   - Set/MSet copy the value once, into the arena (small writes travel
//     inline in the request);
//   - MCreate + MSetBuffer let the caller fill shared memory in place (zero
//     copy) and then seal: a key becomes visible only when sealed, and is
//     immutable after;
//   - GetBuffers returns read-only views of the arena (zero copy); Get/MGet
//     copy. A write through a view faults (SIGSEGV) unless the client was
//     initialised with copy-on-write views (ClientOptions or
//     EnableCopyOnWriteViews): then views come from a private mapping of the
//     arena and the kernel copies each page a write touches, so the stored
//     value, other processes and every other result keep their bytes. The
//     library installs no signal handler.
// Every batch call is one request to the worker, whatever the batch size.
//
// Thread safety: a KVClient is safe to use from several threads; requests
// are serialised on its one connection (one request in flight per client;
// use several clients for parallel requests). Buffers and WriteBuffers may be
// used and destroyed on any thread and may outlive the client: each keeps
// the mapping and the connection alive.
//
// Lifetimes: the views of one GetBuffers call pin their objects in the
// worker (a delete or an overwrite does not reuse their memory) until the
// last Buffer of that call is destroyed. If the process dies, the worker
// releases its pins and unsealed writes when the connection closes.
//
// Logs: if DATASYSTEM_CLIENT_LOG_DIR is set, Init() sends this process's
// logs to <dir>/ds_client.log.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "tqds/buffer.h"
#include "tqds/status.h"

namespace ds {

using tqds::Buffer;
using tqds::Result;
using tqds::Status;

namespace internal {
class Connection;
}

// How a value is written.
struct SetParam {
  // May be dropped under memory pressure instead of spilled to disk. Default
  // false: the worker never drops a value silently.
  bool evictable = false;
  // Seconds until the key expires; 0 (default) never.
  uint32_t ttl_seconds = 0;
  // Set only if the key does not exist; otherwise AlreadyExists. In a
  // cluster, a key held by any worker exists (checked when the write is
  // created; a key another worker writes between that and the seal is not
  // seen). When no owner of a key's record answers (they crashed and are
  // still in the view), nobody can tell: the write fails with Unavailable
  // naming the key and its owners, and writes nothing.
  bool if_absent = false;
  // With if_absent: a batch's keys are written together or not at all
  // (MSetTx sets it).
  bool all_or_nothing = false;
};

struct ClientOptions {
  // Deadline for Init's TCP handshake. Default 5000 ms.
  int connect_timeout_ms = 5000;
  // Deadline for each reply (plus the wait a Get asks for). A request that
  // runs past it fails with Timeout and gives up the connection: every later
  // call fails with Unavailable (make a new client). Default 0: no deadline.
  int request_timeout_ms = 0;
  // Values up to this size are returned inline by Get/MGet (one message);
  // larger ones are copied out of shared memory. Default 64 KiB.
  uint64_t inline_get_max = 64 * 1024;
  // A Set/MSet whose values total at most this many bytes sends them inline
  // (one round trip, two copies); larger writes use create + one copy into
  // shared memory + seal (two round trips). Default 64 KiB.
  uint64_t inline_set_max = 64 * 1024;
  // Pre-fault the whole mapping at Init (faster first writes, slower Init).
  bool populate_mapping = false;
  // This client's own CURVE keys for the worker's TCP port (Z85, 40
  // characters each; openYuanrong's client_public_key, client_private_key
  // and server_public_key): all three, or none for the process's keys
  // ($TQDS_CURVE_KEY_DIR). The client key must be in the worker's
  // authorized_clients. Checked by Init (Invalid for a partial set).
  std::string client_public_key;
  std::string client_secret_key;
  std::string server_public_key;
  // Make the results of GetBuffers writable and private: views come from a
  // MAP_PRIVATE mapping of the arena, so a write through one (say, an
  // in-place op on a tensor over it) is the kernel's copy-on-write of the
  // 4 KiB pages it touches; the stored value, other processes and every
  // other result keep the stored bytes. Results stay zero-copy except an
  // object that another live result of this client already shows (read
  // again, or twice in one call): that one is copied (under 1 MiB) or
  // mapped privately at an address of its own. When the last result of a
  // call dies, the pages it wrote are dropped, so later results map the
  // stored bytes again. No signal handler is installed. Costs per
  // GetBuffers: a lock, a counter per page of each result and a scan of
  // its pages' write bits at release (about 1 ns a page with userfaultfd
  // write protection, else ~50 ns; see docs/datasystem.md); each page a
  // write touches costs a page fault and a 4 KiB copy, and again a fault at
  // its next read after release. Default false: views are plain read-only
  // shared memory.
  bool copy_on_write_views = false;
  Status Validate() const;
};

// Makes every client initialised after this call use copy-on-write views,
// whatever its options say (the Python package calls it at import, because
// torch tensors cannot be marked read-only). Process-wide only in that it
// sets this default; it installs nothing. Thread-safe.
void EnableCopyOnWriteViews();

// Writable shared memory for one created, unsealed key (from MCreate).
// Move-only. Destroying it unsealed aborts the write.
class WriteBuffer {
 public:
  WriteBuffer() = default;
  WriteBuffer(WriteBuffer&&) noexcept;
  WriteBuffer& operator=(WriteBuffer&&) noexcept;
  WriteBuffer(const WriteBuffer&) = delete;
  WriteBuffer& operator=(const WriteBuffer&) = delete;
  ~WriteBuffer();

  const std::string& key() const { return key_; }
  uint8_t* data() { return data_; }
  size_t size() const { return size_; }
  bool sealed() const { return sealed_; }
  // Convenience: copies `bytes` to the start of the buffer (InvalidArgument if too long).
  Status Write(std::string_view bytes);

 private:
  friend class KVClient;
  std::string key_;
  tqds::StatusCode refused_ = tqds::StatusCode::kOk;  // why the worker refused it at create
  uint8_t* data_ = nullptr;
  size_t size_ = 0;
  bool sealed_ = false;
  std::shared_ptr<internal::Connection> conn_;
};

// One range of a partial read (KVClient::Read).
struct ReadRange {
  std::string key;
  uint64_t offset = 0;  // must be below the value's size
  uint64_t size = 0;    // 0: to the end; a range past the end stops at the end
};

// Counters of the worker (for tests, tools and benchmarks).
struct WorkerStats {
  uint64_t capacity = 0, used = 0, pinned_blocks = 0, pending_creates = 0;
  uint64_t objects = 0, resident_objects = 0, spilled_objects = 0;
  uint64_t spill_used = 0, spill_limit = 0, spills = 0, reloads = 0, evictions = 0;
  int pid = 0;
  // The background commit of the shared memory (--populate_memory) is done.
  bool memory_populated = true;
  std::string worker;       // its --worker_address
  std::string metrics;      // "ip:port" of its Prometheus endpoint; empty: none
  uint64_t clients = 0;     // local clients connected now
  // Its cluster: the etcd (or metastore) address it joined through and the
  // other live workers it sees; both empty for a standalone worker.
  std::string coordination;
  std::vector<std::string> peers;
  // Objects pulled from other workers (reads of keys held elsewhere), their
  // bytes, and pulls that failed.
  uint64_t pulls = 0, pulled_bytes = 0, pull_failures = 0;
};

class KVClient {
 public:
  KVClient(std::string host, int port, ClientOptions options = {});
  ~KVClient();
  KVClient(const KVClient&) = delete;
  KVClient& operator=(const KVClient&) = delete;

  // Connects. Unavailable when no worker answers at host:port or the worker
  // is on another host (remote access comes with the cluster).
  Status Init();

  // Copying write. AlreadyExists with if_absent on an existing key;
  // OutOfSpace (saying what to do) when memory and disk are full.
  Status Set(std::string_view key, std::string_view value, const SetParam& param = {});
  // Copying read. NotFound naming the key when absent after waiting up to
  // `timeout_ms` for it to appear (0: do not wait).
  Result<std::string> Get(std::string_view key, int32_t timeout_ms = 0);

  // Batch copying write: one request. The first per-key error is returned
  // (the other keys are written).
  Status MSet(const std::vector<std::string>& keys, const std::vector<std::string_view>& values,
              const SetParam& param = {});
  // As MSet, with the outcome of each key (OK, AlreadyExists with if_absent,
  // ...): the batch is written as far as it can be. The call itself fails
  // only on a bad argument, OutOfSpace, a broken connection or (if_absent in
  // a cluster) Unavailable when no owner of some key answers.
  Result<std::vector<Status>> MSetEach(const std::vector<std::string>& keys,
                                       const std::vector<std::string_view>& values,
                                       const SetParam& param = {});
  // All-or-nothing batch write of new keys (openYuanrong's MSetTx): 1 to
  // kMaxTxKeys distinct keys, param.if_absent required. Either every key is
  // written, or none is and AlreadyExists names a key that exists. A key
  // held by another worker of the cluster exists too; atomic on this
  // client's worker (a key another worker writes between this write's create
  // and its seal is not seen).
  static constexpr size_t kMaxTxKeys = 8;
  Status MSetTx(const std::vector<std::string>& keys, const std::vector<std::string_view>& values,
                const SetParam& param);
  // Batch copying read: nullopt for a missing key.
  Result<std::vector<std::optional<std::string>>> MGet(const std::vector<std::string>& keys,
                                                       int32_t timeout_ms = 0);

  // Batch read for callers that copy the values into memory of their own
  // (MGet copies them into strings, the Python binding into bytes objects):
  // calls `visit` once, on this thread, with a view of each value (nullopt
  // for a missing key) that is valid only until `visit` returns, and returns
  // its status (`visit` is not called when the request fails). Values up to
  // inline_get_max are views of the worker's reply, larger ones of shared
  // memory pinned until `visit` returns.
  using ValueVisitor =
      std::function<Status(const std::vector<std::optional<std::string_view>>& values)>;
  Status MGetVisit(const std::vector<std::string>& keys, int32_t timeout_ms,
                   const ValueVisitor& visit);

  // Zero-copy write, phase 1: allocates shared memory for each key (one
  // request; all or nothing on OutOfSpace). Keys must be distinct. With
  // if_absent, a key that exists fails the call when it is the only key;
  // in a batch it comes back with data() == nullptr and MSetBuffer reports
  // AlreadyExists for it.
  Result<std::vector<WriteBuffer>> MCreate(const std::vector<std::string>& keys,
                                           const std::vector<uint64_t>& sizes,
                                           const SetParam& param = {});
  // Zero-copy write, phase 2: seals the buffers (one request), making the keys
  // visible. The first per-key error is returned (e.g. AlreadyExists).
  Status MSetBuffer(std::vector<WriteBuffer>& buffers);

  // Zero-copy read: views into shared memory, one per key, an empty
  // optional for a missing key. Waits up to `timeout_ms` for missing keys.
  // Read-only views, or with copy_on_write_views writable private results
  // (see there). Each result keeps its object pinned until it dies.
  Result<std::vector<std::optional<Buffer>>> GetBuffers(const std::vector<std::string>& keys,
                                                        int32_t timeout_ms = 0);

  // Zero-copy partial read: a read-only view of each range (the same
  // lifetime rules as GetBuffers), nullopt for a missing key. Invalid (its
  // message starting "out of range") when a range starts at or past the end
  // of its value. Of a value held by another worker only the range is
  // pulled, into memory private to this read (no cached copy is kept); a
  // range that covers the whole value is pulled as GetBuffers pulls it.
  Result<std::vector<std::optional<Buffer>>> Read(const std::vector<ReadRange>& ranges,
                                                  int32_t timeout_ms = 0);

  // Deletes keys; missing keys are fine. Returns how many existed.
  Result<size_t> Delete(const std::vector<std::string>& keys);
  // Whether each key exists on any worker of the cluster. Unavailable,
  // naming the key and its owners, when no owner of some key's record
  // answers (rather than a guess).
  Result<std::vector<bool>> Exist(const std::vector<std::string>& keys);
  // Gives each existing key `ttl_seconds` more to live, from now (0 keeps
  // its expiry as it is). Per key: whether it existed. Only the copies held
  // by this client's worker are reached.
  Result<std::vector<bool>> Expire(const std::vector<std::string>& keys, uint32_t ttl_seconds);
  // OK when the worker answers a request; Unavailable/IOError otherwise.
  Status HealthCheck();
  // A new key unique across workers and time: "<prefix>;<worker id>", with a
  // random UUID (version 4) as the prefix when none is given.
  Result<std::string> GenerateKey(std::string_view prefix = {});
  Result<WorkerStats> Stats();

 private:
  Status Ready() const;
  // The per-key codes of a batch write (Set with it; MSet and MSetEach
  // phrase them).
  Result<std::vector<tqds::StatusCode>> PutCodes(const std::vector<std::string>& keys,
                                                 const std::vector<std::string_view>& values,
                                                 const SetParam& param);
  // Seals created buffers; the code of each (`buffers` order): AlreadyExists
  // for one refused at create, OK for one sealed earlier.
  Result<std::vector<tqds::StatusCode>> SealCodes(std::vector<WriteBuffer>& buffers);
  // GetBuffers, or with `ranges` (one per key) Read's request: a value
  // pulled from another worker may come back as only its range; (*from)[i]
  // is then where in the value buffer i starts (0 for a whole value).
  Result<std::vector<std::optional<Buffer>>> Views(const std::vector<std::string>& keys, int32_t timeout_ms,
                                                   const std::vector<ReadRange>* ranges,
                                                   std::vector<uint64_t>* from);
  const std::string host_;
  const int port_;
  const ClientOptions options_;
  std::shared_ptr<internal::Connection> conn_;  // set once by Init
  uint64_t worker_instance_ = 0;                 // set once by Init
};

}  // namespace ds
