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
// FrameLimits before allocating. Not thread-safe per fd: callers serialise.
#pragma once

#include <cstdint>

#include "common/wire/message.h"

namespace ds {

inline constexpr uint32_t kFrameMagic = 0x314C5344;

struct FrameLimits {
  uint32_t max_header = 64u << 20;
  uint32_t max_payloads = 1u << 20;
  uint64_t max_payload_bytes = 16ull << 30;
};

// Writes one frame (with `pass_fd` attached when >= 0). IOError on failure.
tqds::Status WriteFrame(int fd, const tqds::wire::Message& message, int pass_fd = -1);

// Reads one frame. Unavailable when the peer closed cleanly before a frame
// started; IOError for a frame cut short; Invalid for a malformed prefix
// (after which the stream cannot be trusted and should be closed). A frame
// whose header is not a valid message yields a Message of type kInvalid
// whose status() holds the error (the stream is still in sync).
// `received_fd`, when given, receives a passed descriptor (or -1).
tqds::Result<tqds::wire::Message> ReadFrame(int fd, int* received_fd = nullptr,
                                            const FrameLimits& limits = FrameLimits());

}  // namespace ds
