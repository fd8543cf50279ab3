// The worker's Stats reply. See stats_codec.h.
#include "datasystem/stats_codec.h"

#include <cstdint>
#include <utility>

namespace ds {

using tqds::Result;
using tqds::wire::MapReader;

namespace {

constexpr uint32_t kNonCounters = 6;  // worker, memory_populated, pid, coordination, peers, metrics

}  // namespace

std::string EncodeWorkerStats(const WorkerStats& s) {
  return tqds::wire::PackBody([&](tqds::wire::BodyPacker& pk) {
    uint32_t n = kNonCounters;
    ForEachWorkerCounter(s, [&](const char*, const uint64_t&) { ++n; });
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
    ForEachWorkerCounter(s, [&](const char* name, const uint64_t& v) {
      pk.pack(name);
      pk.pack(v);
    });
  });
}

Result<WorkerStats> DecodeWorkerStats(const tqds::wire::Message& reply) {
  TQDS_ASSIGN_OR_RETURN(auto r, MapReader::Of(reply.body(), "Stats reply"));
  WorkerStats s;
  tqds::Status bad;
  ForEachWorkerCounter(s, [&](const char* name, uint64_t& v) {
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
