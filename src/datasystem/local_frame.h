// The local (Unix-domain socket) framing between a KVClient and its worker.
// A frame carries one wire::Message (the same msgpack header as the TCP
// path, common/wire/message.h) plus raw payload bytes:
//
//   prefix (16 bytes, little-endian):
//     magic u32 = 0x314C5344 ("DSL1") | header_len u32 | payload_count u32 | flags u32 (0)
//   payload_len u64 x payload_count
//   header bytes (msgpack, header_len)
//   payload bytes, concatenated
//
// The Hello reply additionally carries the arena's memfd as SCM_RIGHTS
// ancillary data on its first byte. Decoders check every length against
// FrameLimits, and never allocate for a declared length: each part is read
// into a buffer that grows with the bytes that actually arrive, charged to
// an optional ByteBudget shared by all connections. Not thread-safe per fd:
// callers serialise.
#pragma once

#include <atomic>
#include <cstdint>

#include "common/wire/message.h"

namespace ds {

inline constexpr uint32_t kFrameMagic = 0x314C5344;

// Bytes buffered by frames being read or handled, across connections.
// Thread-safe (one atomic).
class ByteBudget {
 public:
  explicit ByteBudget(uint64_t limit) : limit_(limit) {}
  // Takes n bytes; false (taking nothing) when that would pass the limit.
  bool TryCharge(uint64_t n);
  void Release(uint64_t n) { used_.fetch_sub(n, std::memory_order_relaxed); }
  uint64_t used() const { return used_.load(std::memory_order_relaxed); }
  uint64_t limit() const { return limit_; }

 private:
  const uint64_t limit_;
  std::atomic<uint64_t> used_{0};
};

struct FrameLimits {
  uint32_t max_header = 64u << 20;
  uint32_t max_payloads = 1u << 20;
  // Largest total payload of one frame (what one connection may have in
  // flight). A frame declaring more is refused at its prefix.
  uint64_t max_payload_bytes = 16ull << 30;
  // When set, every byte buffered for a frame is charged here until the
  // decoded Message (and every payload slice of it) is gone; a frame that
  // would pass the budget's limit is refused with Invalid.
  ByteBudget* budget = nullptr;
  // Once a frame has started, a gap of this long without a byte fails the
  // read (IOError); -1 waits forever.
  int stall_timeout_ms = -1;
};

// Writes one frame (with `pass_fd` attached when >= 0). IOError on failure.
tqds::Status WriteFrame(int fd, const tqds::wire::Message& message, int pass_fd = -1);

// Reads one frame. Unavailable when the peer closed cleanly before a frame
// started; IOError for a frame cut short or stalled; Timeout when
// the socket's receive timeout (SO_RCVTIMEO) ran out; Invalid for a
// malformed prefix, a frame over `limits` or over the budget (after which
// the stream cannot be trusted and should be closed). A frame
// whose header is not a valid message yields a Message of type kInvalid
// whose status() holds the error (the stream is still in sync).
// `received_fd`, when given, receives a passed descriptor (or -1).
tqds::Result<tqds::wire::Message> ReadFrame(int fd, int* received_fd = nullptr,
                                            const FrameLimits& limits = FrameLimits());

}  // namespace ds
