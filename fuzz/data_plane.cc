// Fuzz target: the datasystem's worker-to-worker data plane (data_plane.h).
// The input is read as the request stream a data server parses
// (DecodePullRequests, as DataServer::Serve calls it, in batches); every
// request decoded must encode back to the bytes it came from. Then each
// 24-byte window of the input is decoded as a reply header
// (DecodePullReply, as PullClient reads them) for a chunk length taken from
// the input; what it accepts must re-encode identically.
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "datasystem/data_plane.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::vector<ds::PullRange> ranges;
  std::vector<std::string> keys;
  size_t at = 0;
  while (at < size) {
    const size_t before = ranges.size();
    auto used = ds::DecodePullRequests(data + at, size - at, 7, &ranges, &keys);
    if (!used.ok()) {
      if (ranges.size() != before) std::abort();  // a refused batch left requests behind
      break;
    }
    if (*used == 0) break;
    std::string again;
    for (size_t i = before; i < ranges.size(); ++i) ds::EncodePullRequest(keys[i], ranges[i], &again);
    if (again.size() != *used || std::memcmp(again.data(), data + at, *used) != 0) std::abort();
    at += *used;
  }
  for (size_t off = 0; off + ds::kPullReplyBytes <= size; off += ds::kPullReplyBytes) {
    uint64_t expected = 0;
    std::memcpy(&expected, data + off + 8, sizeof(expected));  // the length field: sometimes right
    if (off & 1) expected ^= 1;
    auto r = ds::DecodePullReply(data + off, expected);
    if (!r.ok()) continue;
    if (r->code == ds::StatusCode::kOk && (r->length != expected || r->msg_len != 0)) std::abort();
    if (r->code != ds::StatusCode::kOk && r->msg_len > (1u << 20)) std::abort();
    uint8_t out[ds::kPullReplyBytes];
    ds::EncodePullReply(*r, out);
    // The three pad bytes are not part of the reply.
    if (out[0] != data[off] || std::memcmp(out + 4, data + off + 4, ds::kPullReplyBytes - 4) != 0) std::abort();
  }
  return 0;
}
