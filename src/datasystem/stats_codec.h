// The worker's Stats reply (kDsStats), encoded and decoded in one place: the
// worker's request handler packs it; KVClient::Stats (local socket) and
// `dscli status` (TCP) read it. A field an older worker does not send reads
// as its default.
#pragma once

#include <string>

#include "common/wire/message.h"
#include "ds/kv_client.h"

namespace ds {

// Calls fn(name, field) for every unsigned counter of `s` (WorkerStats,
// const or not), by its wire name (wire-stable); also the JSON names of
// `dscli status --json`.
template <typename Stats, typename Fn>
void ForEachWorkerCounter(Stats& s, Fn&& fn) {
  fn("capacity", s.capacity);
  fn("used", s.used);
  fn("pinned_blocks", s.pinned_blocks);
  fn("pending_creates", s.pending_creates);
  fn("objects", s.objects);
  fn("resident_objects", s.resident_objects);
  fn("spilled_objects", s.spilled_objects);
  fn("spill_used", s.spill_used);
  fn("spill_limit", s.spill_limit);
  fn("spills", s.spills);
  fn("reloads", s.reloads);
  fn("evictions", s.evictions);
  fn("clients", s.clients);
  fn("pulls", s.pulls);
  fn("pulled_bytes", s.pulled_bytes);
  fn("pull_failures", s.pull_failures);
}

// The reply body (a msgpack map).
std::string EncodeWorkerStats(const WorkerStats& s);
// Invalid, naming the field, when the reply is not a Stats map.
tqds::Result<WorkerStats> DecodeWorkerStats(const tqds::wire::Message& reply);

}  // namespace ds
