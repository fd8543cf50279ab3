// Field names and limits of the datasystem request bodies (msgpack maps),
// shared by the worker and the client. Message type ids live in
// common/wire/msg_types.h (range 100-199); the exchange is described in
// docs/datasystem.md. Field names are wire-stable.
#pragma once

#include <cstddef>
#include <cstdint>

namespace ds::proto {

inline constexpr size_t kMaxKeyBytes = 1024;
inline constexpr uint64_t kDefaultInlineMax = 64 * 1024;

// Request fields.
inline constexpr const char* kKeys = "keys";          // [str]
inline constexpr const char* kSizes = "sizes";        // [u64]      Create
inline constexpr const char* kEvictable = "evictable";  // bool     Create/Put
inline constexpr const char* kTtlMs = "ttl_ms";       // u64        Create/Put/Expire
inline constexpr const char* kIfAbsent = "nx";        // bool       Create/Put
inline constexpr const char* kAllOrNothing = "tx";    // bool       Create/Put: with nx, every key or none
inline constexpr const char* kWaitMs = "wait_ms";     // u64        Get
inline constexpr const char* kInlineMax = "inline_max";  // u64     Get (Unix socket)
inline constexpr const char* kOffsets = "offsets";    // [u64]      Release; Create/Get replies
inline constexpr const char* kReadOffsets = "read_offsets";  // [u64] Get: per key, where its range starts
inline constexpr const char* kReadLengths = "read_lengths";  // [u64] Get: per key, its range's bytes (0: to the end)

// Reply fields.
inline constexpr const char* kCodes = "codes";        // [u8] per-key StatusCode
inline constexpr const char* kInline = "inline";      // [bool]     Get: value is the next payload
inline constexpr const char* kFrom = "from";          // [u64]      Get: where in the value a partial block starts
inline constexpr const char* kExist = "exist";        // [bool]     Exist/Expire replies
inline constexpr const char* kDeleted = "deleted";    // u64
inline constexpr const char* kArenaSize = "arena_size";
inline constexpr const char* kInstance = "instance";  // u64 random id of the worker process
inline constexpr const char* kSocket = "socket";      // Unix socket path (TCP Hello)
inline constexpr const char* kPid = "pid";
inline constexpr const char* kWorker = "worker";      // "host:port"

// Cluster messages (worker to worker, ids 111-114).
inline constexpr const char* kVersions = "versions";  // [u64]  MetaPublish
inline constexpr const char* kHolders = "holders";    // [str]  MetaPublish: per entry; MetaRemove reply
inline constexpr const char* kIncarnations = "incarnations";  // [u64] MetaPublish: per entry
inline constexpr const char* kDataAddrs = "data";     // [str]  MetaPublish: data endpoint "ip:port"
inline constexpr const char* kMode = "mode";          // u8     MetaPublish: PublishMode
inline constexpr const char* kStale = "stale";        // [str]  MetaPublish reply: holders to drop
inline constexpr const char* kCounts = "counts";      // [u32]  Lookup/Remove replies: replicas per key
inline constexpr const char* kLost = "lost";          // [str]  Lookup reply: lost holder per key ("")

// How an owner applies a published location.
enum class PublishMode : uint8_t {
  kPrimary = 0,  // the writer's copy: replaces the record (older replicas are returned as stale)
  kCache = 1,    // a reader's cached copy: added to an existing record
  kHandoff = 2,  // a former owner hands its record over: added only where no record exists
};

}  // namespace ds::proto

namespace ds {

// Bytes [offset, offset + length) of a value; length 0: to its end.
struct ValueRange {
  uint64_t offset = 0;
  uint64_t length = 0;
};

// How many bytes of a value of `size` bytes the range [offset, offset +
// length) covers (length 0: to the end; a range past the end stops there);
// 0 when it starts at or past the end.
inline uint64_t RangeBytes(uint64_t offset, uint64_t length, uint64_t size) {
  if (offset >= size) return 0;
  const uint64_t left = size - offset;
  return (length == 0 || length > left) ? left : length;
}

}  // namespace ds
