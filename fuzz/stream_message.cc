// Fuzz target: the stream channel's framing (stream_codec.h). The input is
// decoded as one whole message with small limits; what it accepts must
// encode back to exactly the input (table, header frame, payloads), and
// every frame length it accepted must lie within the limits.
#include <cstdlib>
#include <cstring>
#include <string>

#include "common/wire/stream_codec.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  tqds::wire::StreamLimits limits;
  limits.max_frames = 64;
  limits.max_header_bytes = 4096;
  limits.max_payload_bytes = 1 << 16;
  auto m = tqds::wire::DecodeStreamMessage(tqds::Buffer::Borrow(data, size), limits);
  if (!m.ok()) return 0;
  if (m->payloads().size() + 1 > limits.max_frames) std::abort();
  const tqds::Buffer& header = m->raw_header();
  if (header.size() == 0 || header.size() > limits.max_header_bytes) std::abort();
  std::string again = tqds::wire::EncodeStreamTable(header.size(), m->payloads());
  again.append(header.view());
  uint64_t payload = 0;
  for (const tqds::Buffer& p : m->payloads()) {
    again.append(p.view());
    payload += p.size();
  }
  if (payload > limits.max_payload_bytes) std::abort();
  if (again.size() != size || std::memcmp(again.data(), data, size) != 0) std::abort();
  return 0;
}
