// Fuzz target: every decoder of a controller request or reply body, run on
// one received header frame (whatever its type says, so each decoder meets
// every shape).
#include "fuzz/fuzz_util.h"
#include "queue/kv_protocol.h"
#include "queue/protocol.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto m = tqds::fuzz::AsHeader(data, size);
  if (!m) return 0;
  using namespace tq::internal;
  const msgpack::object& body = m->body();
  (void)MetaFromMessage(*m);
  (void)SampleListFromMessage(*m);
  (void)DecodeGetMeta(body);
  (void)DecodeSampleStatus(body);
  (void)DecodeKeys(body, "fuzz");
  (void)KvRetrieveRequest::Decode(body);
  (void)KvKeysRequest::Decode(body);
  (void)DecodeKvKeysReply(body);
  (void)KvListRequest::Decode(body);
  (void)DecodeKvListReply(body);
  (void)KvClearRequest::Decode(body);
  return 0;
}
