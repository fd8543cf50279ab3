// Fuzz target: the wire envelope (Message::DecodeHeader) and MapReader on
// whatever body it yields.
#include "fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto m = tqds::fuzz::AsHeader(data, size);
  if (!m) return 0;
  auto rd = tqds::wire::MapReader::Of(m->body(), "fuzz");
  if (rd.ok()) {
    (void)rd->Get<std::string>("partition_id");
    (void)rd->Get<int64_t>("count");
    (void)rd->GetOr<bool>("detail", false);
    (void)rd->Get<std::vector<int64_t>>("global_indexes");
  }
  (void)m->EncodeHeader();
  return 0;
}
