// The stream channel's codec: Messages (message.h) framed on a plain TCP
// connection that a handshake has authenticated (stream_rpc.h moves them).
// Pure functions, no sockets; every length is checked before anything is
// allocated for it. docs/wire_format.md, "Stream channel", is the prose.
//
// Handshake, before any message (the server speaks first):
//   server hello (40 bytes): magic u32 = 0x48535154 ("TQSH") | version u32 = 1
//                            | server nonce (32 random bytes)
//   client (96 bytes):       client public key (32) | client nonce (32)
//                            | HMAC-SHA256(K, "C" | server nonce | client nonce)
//   server (32 bytes):       HMAC-SHA256(K, "S" | client nonce | server nonce)
// K = BLAKE2b-256("tqds stream v1" | X25519(own secret, peer public)
//                 | client public | server public): the deployment's CURVE
// keys (security.h), so the server proves its server secret and the client
// a client secret whose public key the server authorizes, as with CURVE;
// the bytes that follow are not encrypted.
//
// Message (a request, then its reply; all integers little-endian):
//   magic u32 = 0x4D535154 ("TQSM") | frames u32 (>= 1)
//   | frames x length u64 | the frames' bytes, in order
// Frame 0 is the header frame, frames 1.. the payloads.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/wire/message.h"

namespace tqds::wire {

inline constexpr uint32_t kStreamHelloMagic = 0x48535154;
inline constexpr uint32_t kStreamMessageMagic = 0x4D535154;
inline constexpr uint32_t kStreamVersion = 1;
inline constexpr size_t kStreamPrefixBytes = 8;
inline constexpr size_t kStreamHelloBytes = 40;
inline constexpr size_t kStreamAnswerBytes = 96;
inline constexpr size_t kStreamProofBytes = 32;

// What a receiver accepts in one message.
struct StreamLimits {
  // Frames, the header included. Default: WireLimits' payload frames + 1.
  size_t max_frames = (1u << 22) + 1;
  // Bytes of the header frame. Default 64 MiB (WireLimits).
  uint64_t max_header_bytes = 64u << 20;
  // Bytes of all payload frames together (what the receiver allocates for
  // them). Default 1 TiB; a storage unit sets its capacity.
  uint64_t max_payload_bytes = 1ull << 40;
};

// The prefix and length table of a message whose header frame has
// `header_bytes` and whose payloads are `payloads`.
std::string EncodeStreamTable(size_t header_bytes, const std::vector<Buffer>& payloads);
// The frame count in a message's kStreamPrefixBytes. Invalid, naming what is
// wrong, for another magic, no frame, or more frames than `limits` allow.
Result<uint32_t> DecodeStreamPrefix(const uint8_t* in, const StreamLimits& limits);
// Checks a message's length table (`count` lengths) against `limits`;
// returns the payload frames' total bytes.
Result<uint64_t> CheckStreamTable(const uint64_t* lengths, size_t count, const StreamLimits& limits);
// A whole message from `bytes` (prefix, table, frames; nothing after):
// its payloads are slices of `bytes`. For tests and the fuzz target; the
// transport reads the same parts from a socket.
Result<Message> DecodeStreamMessage(const Buffer& bytes, const StreamLimits& limits = {});

// The handshake's shared key (see above).
struct StreamKey {
  uint8_t k[32] = {};
};
// K from this end's secret key and the peer's public key (raw 32 bytes
// each) and the two public keys in their roles. Invalid when the peer's key
// is a low-order point (X25519 of it is zero).
Result<StreamKey> DeriveStreamKey(const uint8_t own_secret[32], const uint8_t peer_public[32],
                                  const uint8_t client_public[32], const uint8_t server_public[32]);
// HMAC-SHA256(key, role | a | b) for role 'C' (the client's tag) or 'S'
// (the datasystem's data plane computes its tags the same way).
void StreamTag(const uint8_t key[32], char role, const uint8_t a[32], const uint8_t b[32], uint8_t out[32]);

}  // namespace tqds::wire
