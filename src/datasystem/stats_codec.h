// The worker's Stats reply (kDsStats), encoded and decoded in one place: the
// worker's request handler packs it; KVClient::Stats (local socket) and
// `dscli status` (TCP) read it. A field an older worker does not send reads
// as its default.
#pragma once

#include <string>

#include "common/wire/message.h"
#include "ds/kv_client.h"

namespace ds {

// The reply body (a msgpack map).
std::string EncodeWorkerStats(const WorkerStats& s);
// Invalid, naming the field, when the reply is not a Stats map.
tqds::Result<WorkerStats> DecodeWorkerStats(const tqds::wire::Message& reply);

}  // namespace ds
