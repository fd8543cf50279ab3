// The stream channel's framing and handshake key (stream_codec.h).
#include "common/wire/stream_codec.h"

#include <sodium.h>

#include <cstring>

namespace tqds::wire {

namespace {

void PutU32(std::string* out, uint32_t v) { out->append(reinterpret_cast<const char*>(&v), sizeof(v)); }
void PutU64(std::string* out, uint64_t v) { out->append(reinterpret_cast<const char*>(&v), sizeof(v)); }

}  // namespace

std::string EncodeStreamTable(size_t header_bytes, const std::vector<Buffer>& payloads) {
  std::string out;
  out.reserve(kStreamPrefixBytes + 8 * (1 + payloads.size()));
  PutU32(&out, kStreamMessageMagic);
  PutU32(&out, static_cast<uint32_t>(1 + payloads.size()));
  PutU64(&out, header_bytes);
  for (const Buffer& p : payloads) PutU64(&out, p.size());
  return out;
}

Result<uint32_t> DecodeStreamPrefix(const uint8_t* in, const StreamLimits& limits) {
  uint32_t magic, count;
  std::memcpy(&magic, in, 4);
  std::memcpy(&count, in + 4, 4);
  if (magic != kStreamMessageMagic) {
    return Status::Invalid("not a stream-channel message: magic 0x", std::hex, magic);
  }
  if (count == 0) return Status::Invalid("a stream-channel message without a header frame");
  if (count > limits.max_frames) {
    return Status::Invalid("a stream-channel message of ", count, " frames (at most ", limits.max_frames,
                           " allowed)");
  }
  return count;
}

Result<uint64_t> CheckStreamTable(const uint64_t* lengths, size_t count, const StreamLimits& limits) {
  if (count == 0) return Status::Invalid("a stream-channel message without a header frame");
  if (lengths[0] == 0 || lengths[0] > limits.max_header_bytes) {
    return Status::Invalid("a stream-channel header frame of ", lengths[0], " bytes (1 to ",
                           limits.max_header_bytes, " allowed)");
  }
  uint64_t total = 0;
  for (size_t i = 1; i < count; ++i) {
    if (lengths[i] > limits.max_payload_bytes - total) {
      return Status::Invalid("a stream-channel message whose payloads exceed ", limits.max_payload_bytes,
                             " bytes (the receiver's limit) at frame ", i);
    }
    total += lengths[i];
  }
  return total;
}

Result<Message> DecodeStreamMessage(const Buffer& bytes, const StreamLimits& limits) {
  const uint8_t* in = bytes.data();
  const size_t n = bytes.size();
  if (n < kStreamPrefixBytes) return Status::Invalid("a stream-channel message of ", n, " bytes (truncated prefix)");
  TQDS_ASSIGN_OR_RETURN(uint32_t count, DecodeStreamPrefix(in, limits));
  if ((n - kStreamPrefixBytes) / 8 < count) {
    return Status::Invalid("a stream-channel message truncated in its length table");
  }
  std::vector<uint64_t> lengths(count);
  std::memcpy(lengths.data(), in + kStreamPrefixBytes, 8 * size_t{count});
  TQDS_ASSIGN_OR_RETURN(uint64_t payload, CheckStreamTable(lengths.data(), count, limits));
  size_t at = kStreamPrefixBytes + 8 * size_t{count};
  if (lengths[0] > n - at || payload > n - at - lengths[0]) {
    return Status::Invalid("a stream-channel message truncated in its frames");
  }
  if (at + lengths[0] + payload != n) return Status::Invalid("bytes after a stream-channel message");
  TQDS_ASSIGN_OR_RETURN(Message m, Message::DecodeHeader(in + at, lengths[0]));
  m.set_raw_header(bytes.Slice(at, lengths[0]));
  at += lengths[0];
  m.payloads().reserve(count - 1);
  for (size_t i = 1; i < count; ++i) {
    m.payloads().push_back(bytes.Slice(at, lengths[i]));
    at += lengths[i];
  }
  return m;
}

Result<StreamKey> DeriveStreamKey(const uint8_t own_secret[32], const uint8_t peer_public[32],
                                  const uint8_t client_public[32], const uint8_t server_public[32]) {
  if (sodium_init() < 0) return Status::Internal("libsodium cannot initialise");
  uint8_t q[crypto_scalarmult_BYTES];
  if (crypto_scalarmult(q, own_secret, peer_public) != 0) {
    return Status::Invalid("the peer's public key is not usable (a low-order point)");
  }
  static constexpr char kContext[] = "tqds stream v1";
  crypto_generichash_state st;
  StreamKey key;
  crypto_generichash_init(&st, nullptr, 0, sizeof(key.k));
  crypto_generichash_update(&st, reinterpret_cast<const uint8_t*>(kContext), sizeof(kContext) - 1);
  crypto_generichash_update(&st, q, sizeof(q));
  crypto_generichash_update(&st, client_public, 32);
  crypto_generichash_update(&st, server_public, 32);
  crypto_generichash_final(&st, key.k, sizeof(key.k));
  sodium_memzero(q, sizeof(q));
  return key;
}

void StreamTag(const uint8_t key[32], char role, const uint8_t a[32], const uint8_t b[32], uint8_t out[32]) {
  crypto_auth_hmacsha256_state st;
  crypto_auth_hmacsha256_init(&st, key, 32);
  crypto_auth_hmacsha256_update(&st, reinterpret_cast<const uint8_t*>(&role), 1);
  crypto_auth_hmacsha256_update(&st, a, 32);
  crypto_auth_hmacsha256_update(&st, b, 32);
  crypto_auth_hmacsha256_final(&st, out);
}

}  // namespace tqds::wire
