// Fuzz target: every decoder of a controller request or reply body, run on
// one received header frame (whatever its type says, so each decoder meets
// every shape). What the small-message decoders (ctl_messages.h) accept must
// encode and decode again to the same.
#include <cstdlib>

#include "fuzz/fuzz_util.h"
#include "queue/ctl_messages.h"
#include "queue/kv_protocol.h"
#include "queue/protocol.h"

namespace {
tqds::wire::Message again_meta(const tq::BatchMeta& meta) {
  std::string frame = tq::internal::MetaMessage(tqds::wire::MsgType::kCtlGetMeta, meta).EncodeHeader();
  auto back = tqds::wire::Message::DecodeHeader(frame.data(), frame.size());
  if (!back.ok()) std::abort();
  return back.MoveValue();
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto m = tqds::fuzz::AsHeader(data, size);
  if (!m) return 0;
  using namespace tq::internal;
  const msgpack::object& body = m->body();
  if (auto a = MetaFromMessage(*m); a.ok()) {
    // Whatever form it came in (rows or columns), it is written as columns
    // and read back the same (custom values unchecked: NaN != NaN).
    auto b = MetaFromMessage(again_meta(*a));
    if (!b.ok() || b->size() != a->size() || b->field_names() != a->field_names()) std::abort();
    for (size_t i = 0; i < a->size(); ++i) {
      const auto &x = a->samples()[i], &y = b->samples()[i];
      if (x.global_index != y.global_index || x.generation != y.generation || x.partition_id != y.partition_id ||
          x.fields != y.fields || x.custom.size() != y.custom.size()) {
        std::abort();
      }
    }
  }
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
  (void)KvPutRequest::Decode(body);
  (void)DecodeKvPutReply(body);
  // Decoded, encoded, decoded again: the same fields.
  auto again = [](const std::string& bytes) {
    tqds::wire::Message m(tqds::wire::MsgType::kCtlPing, 1);
    m.set_body(bytes);
    std::string frame = m.EncodeHeader();
    auto back = tqds::wire::Message::DecodeHeader(frame.data(), frame.size());
    if (!back.ok()) std::abort();
    return back.MoveValue();
  };
  if (auto a = PingReply::Decode(body); a.ok()) {
    auto m2 = again(a->Encode());
    auto b = PingReply::Decode(m2.body());
    if (!b.ok() || b->controller_id != a->controller_id || b->durable != a->durable) std::abort();
  }
  if (auto a = AllocateRequest::Decode(body); a.ok()) {
    auto m2 = again(a->Encode());
    auto b = AllocateRequest::Decode(m2.body());
    if (!b.ok() || b->partition_id != a->partition_id || b->count != a->count) std::abort();
  }
  (void)PartitionRequest::Decode(body, "fuzz");
  if (auto a = SamplesRequest::Decode(body, "fuzz"); a.ok()) {
    auto m2 = again(a->Encode());
    auto b = SamplesRequest::Decode(m2.body(), "fuzz");
    if (!b.ok() || b->global_indexes != a->global_indexes) std::abort();
  }
  if (auto a = ProductionStatusRequest::Decode(body); a.ok()) {
    auto m2 = again(a->Encode());
    auto b = ProductionStatusRequest::Decode(m2.body());
    if (!b.ok() || b->fields != a->fields) std::abort();
  }
  (void)DecodeProductionStatus(body);
  if (auto a = ConsumptionStatusRequest::Decode(body); a.ok()) {
    if (a->per_sample != ConsumptionStatusRequest::PerSample(body)) std::abort();
  }
  (void)DecodeConsumptionStatus(body);
  (void)ResetConsumptionRequest::Decode(body);
  (void)ListPartitionsRequest::Decode(body);
  (void)DecodePartitionList(body);
  if (auto a = DecodePartitionSummaries(body); a.ok()) {
    auto m2 = again(EncodePartitionSummaries(*a));
    auto b = DecodePartitionSummaries(m2.body());
    if (!b.ok() || b->size() != a->size()) std::abort();
  }
  (void)RegisterStorageRequest::Decode(body);
  (void)DecodeStorageInfo(body);
  (void)RestoreRequest::Decode(body);
  (void)DecodeFound(body, size % 5);
  if (auto a = UnitStatsReply::Decode(body); a.ok()) {
    auto m2 = again(a->Encode());
    auto b = UnitStatsReply::Decode(m2.body());
    if (!b.ok() || b->stats.ops.size() != a->stats.ops.size() || b->instance != a->instance || b->ipc != a->ipc) {
      std::abort();
    }
  }
  return 0;
}
