// ObjectStore: the worker's object table over the shared arena, the spill
// tier and the eviction policy. Objects go through explicit phases: Create
// (a block is allocated and owned by the writer's Session, invisible to
// readers) -> Seal (visible, immutable; replaces an older version) or Abort.
// Readers pin the block of what they read; a pinned block is never reused,
// spilled or freed until every pin is released (a replaced or deleted object
// whose block is still pinned becomes an "orphan" that is freed at the last
// release). A Session records what one client connection holds, so a client
// that dies gives everything back (CloseSession).
//
// Thread-safe: every public method takes `mu_`. The store has exactly one
// lock; nothing else is locked while holding it (no lock order to respect).
// Disk I/O of the spill tier currently happens under `mu_`.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <memory_resource>
#include <mutex>
#include <queue>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "datasystem/allocator.h"
#include "datasystem/eviction_policy.h"
#include "datasystem/spill_store.h"
#include "tqds/status.h"

namespace ds {

using tqds::StatusCode;

struct WriteOptions {
  bool evictable = false;  // may be dropped (not spilled) under memory pressure
  uint64_t ttl_ms = 0;     // 0: never expires
  bool if_absent = false;  // fail with AlreadyExists when the key exists
  // With if_absent: the batch's keys are written together or not at all
  // (msettx). A key that exists fails every key of the Create, or of the Seal.
  bool all_or_nothing = false;
  bool cached = false;     // a copy pulled from another worker (cluster): not this worker's
                           // own write, so never re-announced as the primary copy
};

struct StoreOptions {
  std::string name;                // worker address, used in error messages
  double high_watermark = 0.9;     // spill/evict above this fraction of the arena
};

// What one client connection holds in the store. Owned by the connection;
// only passed to ObjectStore methods (which lock).
struct Session {
  struct Pending {
    std::string key;
    uint64_t size = 0;
    WriteOptions opts;
  };
  Session() = default;
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;
  // The nodes of the maps below: a batch pins or creates thousands of
  // blocks and drops them soon after, which this pool serves without
  // malloc. Used under the store's lock only.
  std::pmr::unsynchronized_pool_resource pool;
  std::pmr::unordered_map<uint64_t, uint32_t> pins{&pool};  // block offset -> pin count
  // Created, unsealed writes by block offset: a write is sealed or aborted by
  // its offset (unique while pending), so its key is hashed and sent once.
  std::pmr::unordered_map<uint64_t, Pending> pending{&pool};
};

struct CreateSlot {
  StatusCode code = StatusCode::kOk;
  uint64_t offset = 0;
};

struct Located {
  StatusCode code = StatusCode::kNotFound;
  uint64_t offset = 0;
  uint64_t size = 0;
  uint64_t version = 0;
  uint64_t ttl_ms = 0;  // time left before the object expires; 0: never
  // A block that holds only part of the value (a ranged pull): where in the
  // value its first byte lies. Always 0 for a whole object.
  uint64_t from = 0;
};

// What the cluster needs to know about a sealed object (no pin taken).
struct ObjectInfo {
  std::string key;
  StatusCode code = StatusCode::kNotFound;
  uint64_t size = 0;
  uint64_t version = 0;
  bool cached = false;
};

struct StoreStats {
  uint64_t capacity = 0, used = 0, pinned_blocks = 0, pending_creates = 0;
  uint64_t objects = 0, resident_objects = 0, spilled_objects = 0;
  uint64_t spill_used = 0, spill_limit = 0;
  uint64_t spills = 0, reloads = 0, evictions = 0;
};

class ObjectStore {
 public:
  ObjectStore(StoreOptions options, uint8_t* base, std::unique_ptr<Allocator> allocator,
              std::unique_ptr<EvictionPolicy> policy, SpillStore spill);

  // Phase 1: allocates one block per key, owned by `session` (the keys are
  // moved into it). All or nothing on OutOfSpace (the error says what to do).
  // Per-key AlreadyExists when opts.if_absent and the key exists (with
  // opts.all_or_nothing: nothing is allocated then, and the other keys are
  // Cancelled; Seal refuses such a batch the same way). A key
  // created twice before a seal has two pending writes; the later seal wins.
  Result<std::vector<CreateSlot>> Create(Session& session, std::vector<std::string> keys,
                                         const std::vector<uint64_t>& sizes,
                                         const WriteOptions& opts);
  // Phase 2: publishes the session's created blocks, named by the offsets
  // Create returned. Per-entry NotFound when the offset is not a pending write
  // of this session, AlreadyExists on an if_absent conflict (the block is
  // freed). The keys sealed are appended to `sealed` when given.
  std::vector<StatusCode> Seal(Session& session, const std::vector<uint64_t>& offsets,
                               std::vector<std::string>* sealed = nullptr);
  // Sets the time to live a pending write gets when sealed (a cached copy
  // inherits what is left of its source's). Unknown offsets are ignored.
  void SetPendingTtl(Session& session, uint64_t offset, uint64_t ttl_ms);
  // Drops pending writes by offset; unknown offsets are ignored.
  void Abort(Session& session, const std::vector<uint64_t>& offsets);
  // Turns pending writes of `session` into blocks only it can read: pinned by
  // it, never in the table, freed at their last release (a private copy).
  // Per entry: Located (kOk) or NotFound for an unknown offset.
  std::vector<Located> PinPrivate(Session& session, const std::vector<uint64_t>& offsets);

  // Finds keys, reloading spilled ones, and pins each found block in
  // `session`. Waits up to `wait` for missing keys to be sealed.
  Result<std::vector<Located>> Get(Session& session, const std::vector<std::string>& keys,
                                   std::chrono::milliseconds wait);
  void Release(Session& session, const std::vector<uint64_t>& offsets);
  // Per key: whether it existed (and is now deleted).
  std::vector<bool> Delete(const std::vector<std::string>& keys);
  // Deletes keys[i] only if it is still at versions[i] (0: any version), so
  // a drop of an outdated copy never removes a newer write. Returns how many.
  size_t DeleteVersions(const std::vector<std::string>& keys, const std::vector<uint64_t>& versions);
  std::vector<bool> Exist(const std::vector<std::string>& keys);
  // Gives the keys that exist `ttl_ms` more to live, from now, replacing any
  // earlier time to live; ttl_ms 0 leaves each key's expiry as it is (as
  // openYuanrong's Expire does). Per key: whether it exists.
  std::vector<bool> Expire(const std::vector<std::string>& keys, uint64_t ttl_ms);
  // Size and version of each key (NotFound when absent); takes no pin.
  std::vector<ObjectInfo> Describe(const std::vector<std::string>& keys);
  // Every live object written on this worker (not a cached copy), for the
  // cluster's re-announcement after a membership change.
  std::vector<ObjectInfo> ListPrimaries();
  // Releases the pins and aborts the creates of a closed connection.
  void CloseSession(Session& session);
  // Drops expired objects; called periodically.
  void ExpireDue();
  // Wakes waiting Gets with Cancelled; later waits return at once.
  void Shutdown();
  // Removes spill files (worker exit).
  void ClearSpill();

  StoreStats Stats() const;
  uint8_t* base() const { return base_; }
  uint64_t capacity() const { return capacity_; }

 private:
  struct Object {
    ObjectId id = 0;
    uint64_t offset = 0;  // valid when resident
    uint64_t size = 0;
    uint64_t version = 0;
    int64_t expire_at_ms = 0;  // 0: never
    bool resident = true;
    bool evictable = false;
    bool cached = false;
  };
  using Table = std::pmr::unordered_map<std::string, Object>;
  using Entry = Table::value_type;

  Status MakeRoom(uint64_t size, uint64_t* offset);  // allocate, spilling as needed
  bool SpillOne();
  Status Reload(const std::string& key, Object& o);  // spilled -> resident
  Status OutOfSpaceError(uint64_t size) const;
  void FreeBlock(uint64_t offset);  // frees now, or orphans if pinned
  void RemoveEntry(Table::iterator it);
  void Pin(Session& s, uint64_t offset);
  void Unpin(Session& s, uint64_t offset);
  bool Expired(const Object& o, int64_t now_ms) const;
  Table::iterator FindLive(const std::string& key, int64_t now_ms);

  // Constant after construction.
  const StoreOptions options_;
  uint8_t* const base_;
  const uint64_t capacity_;

  mutable std::mutex mu_;
  std::condition_variable sealed_cv_;                  // signalled on every seal
  // Guarded by mu_:
  std::unique_ptr<Allocator> allocator_;
  std::unique_ptr<EvictionPolicy> policy_;
  SpillStore spill_;
  // The nodes of the maps below (one per object or pinned block, made and
  // dropped by the thousand per batch): from a pool instead of malloc. It
  // keeps what it freed for the next batch.
  std::pmr::unsynchronized_pool_resource pool_;
  Table table_{&pool_};
  std::pmr::unordered_map<ObjectId, Entry*> by_id_{&pool_};
  struct PinCount {
    uint32_t refs = 0;
    bool orphaned = false;
  };
  std::pmr::unordered_map<uint64_t, PinCount> pins_{&pool_};  // block offset -> pins
  using Expiry = std::pair<int64_t, ObjectId>;
  std::priority_queue<Expiry, std::vector<Expiry>, std::greater<Expiry>> expiry_;
  ObjectId next_id_ = 1;
  uint64_t last_version_ = 0;
  uint64_t pending_creates_ = 0;
  uint64_t spills_ = 0, reloads_ = 0, evictions_ = 0;
  bool shutdown_ = false;
};

}  // namespace ds
