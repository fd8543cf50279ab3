// Fuzz target: the simple storage unit's request and reply bodies (key
// groups, value sizes and alignments) and SplitFrames, with the input's own
// bytes as the one payload frame the sizes must cut exactly.
#include "fuzz/fuzz_util.h"
#include "queue/simple_codec.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto m = tqds::fuzz::AsHeader(data, size);
  if (!m) return 0;
  namespace simple = tq::internal::simple;
  const std::vector<tqds::Buffer> frames = {tqds::Buffer::Borrow(data, size)};
  auto put = simple::DecodeGroups(m->body(), true, "fuzz put");
  if (put.ok()) (void)simple::SplitFrames(frames, put->aligns, put->sizes, "fuzz put");
  (void)simple::DecodeGroups(m->body(), false, "fuzz get");
  auto layout = simple::DecodeSizes(m->body(), "fuzz reply");
  if (layout.ok()) (void)simple::SplitFrames(frames, layout->aligns, layout->sizes, "fuzz reply");
  return 0;
}
