// Fuzz target: the datasystem worker's Stats reply (dscli status and
// KVClient::Stats decode it from any worker they reach).
#include "datasystem/stats_codec.h"
#include "fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto m = tqds::fuzz::AsHeader(data, size);
  if (!m) return 0;
  (void)ds::DecodeWorkerStats(*m);
  return 0;
}
