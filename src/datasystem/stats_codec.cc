// The worker's Stats reply. See stats_codec.h.
#include "datasystem/stats_codec.h"

#include <cstdint>
#include <utility>

namespace ds {

using tqds::Result;
using tqds::wire::MapReader;

namespace {

// Every unsigned counter, by its wire name (wire-stable).
template <typename Stats, typename Fn>
void ForEachCounter(Stats& s, Fn&& fn) {
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

constexpr uint32_t kNonCounters = 6;  // worker, memory_populated, pid, coordination, peers, metrics

}  // namespace

std::string EncodeWorkerStats(const WorkerStats& s) {
  return tqds::wire::PackBody([&](tqds::wire::BodyPacker& pk) {
    uint32_t n = kNonCounters;
    ForEachCounter(s, [&](const char*, const uint64_t&) { ++n; });
    pk.pack_map(n);
    pk.pack("worker");
    pk.pack(s.worker);
    pk.pack("memory_populated");
    pk.pack(s.memory_populated);
    pk.pack("pid");
    pk.pack(s.pid);
    pk.pack("coordination");
    pk.pack(s.coordination);
    pk.pack("peers");
    pk.pack(s.peers);
    pk.pack("metrics");
    pk.pack(s.metrics);
    ForEachCounter(s, [&](const char* name, const uint64_t& v) {
      pk.pack(name);
      pk.pack(v);
    });
  });
}

Result<WorkerStats> DecodeWorkerStats(const tqds::wire::Message& reply) {
  TQDS_ASSIGN_OR_RETURN(auto r, MapReader::Of(reply.body(), "Stats reply"));
  WorkerStats s;
  tqds::Status bad;
  ForEachCounter(s, [&](const char* name, uint64_t& v) {
    auto got = r.GetOr<uint64_t>(name, 0);
    if (got.ok()) {
      v = *got;
    } else if (bad.ok()) {
      bad = got.status();
    }
  });
  TQDS_RETURN_NOT_OK(bad);
  TQDS_ASSIGN_OR_RETURN(s.worker, r.GetOr<std::string>("worker", ""));
  TQDS_ASSIGN_OR_RETURN(s.memory_populated, r.GetOr<bool>("memory_populated", true));
  TQDS_ASSIGN_OR_RETURN(s.pid, r.GetOr<int>("pid", 0));
  TQDS_ASSIGN_OR_RETURN(s.coordination, r.GetOr<std::string>("coordination", ""));
  TQDS_ASSIGN_OR_RETURN(s.peers, r.GetOr<std::vector<std::string>>("peers", {}));
  TQDS_ASSIGN_OR_RETURN(s.metrics, r.GetOr<std::string>("metrics", ""));
  return s;
}

}  // namespace ds
