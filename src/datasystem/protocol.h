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
inline constexpr const char* kTtlMs = "ttl_ms";       // u64        Create/Put
inline constexpr const char* kIfAbsent = "nx";        // bool       Create/Put
inline constexpr const char* kWaitMs = "wait_ms";     // u64        Get
inline constexpr const char* kInlineMax = "inline_max";  // u64     Get (Unix socket)
inline constexpr const char* kOffsets = "offsets";    // [u64]      Release; Create/Get replies

// Reply fields.
inline constexpr const char* kCodes = "codes";        // [u8] per-key StatusCode
inline constexpr const char* kInline = "inline";      // [bool]     Get: value is the next payload
inline constexpr const char* kExist = "exist";        // [bool]
inline constexpr const char* kDeleted = "deleted";    // u64
inline constexpr const char* kArenaSize = "arena_size";
inline constexpr const char* kInstance = "instance";  // u64 random id of the worker process
inline constexpr const char* kSocket = "socket";      // Unix socket path (TCP Hello)
inline constexpr const char* kPid = "pid";
inline constexpr const char* kWorker = "worker";      // "host:port"

}  // namespace ds::proto
