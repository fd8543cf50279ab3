// msgpack codec for the small controller and storage-unit messages.
#include "queue/ctl_messages.h"

namespace tq::internal {

using tqds::wire::MapReader;
using tqds::wire::PackBody;

std::string PingReply::Encode() const {
  return PackBody([&](Packer& pk) {
    pk.pack_map(2);
    pk.pack("controller_id");
    pk.pack_uint64(controller_id);
    pk.pack("durable");
    pk.pack(durable);
  });
}

Result<PingReply> PingReply::Decode(const msgpack::object& body) {
  TQDS_ASSIGN_OR_RETURN(auto r, MapReader::Of(body, "Ping reply"));
  PingReply m;
  TQDS_ASSIGN_OR_RETURN(m.controller_id, r.Get<uint64_t>("controller_id"));
  TQDS_ASSIGN_OR_RETURN(m.durable, r.GetOr<bool>("durable", false));
  return m;
}

std::string AllocateRequest::Encode() const {
  return PackBody([&](Packer& pk) {
    pk.pack_map(2);
    pk.pack("partition_id");
    pk.pack(partition_id);
    pk.pack("count");
    pk.pack_int64(count);
  });
}

Result<AllocateRequest> AllocateRequest::Decode(const msgpack::object& body) {
  TQDS_ASSIGN_OR_RETURN(auto r, MapReader::Of(body, "Allocate"));
  AllocateRequest m;
  TQDS_ASSIGN_OR_RETURN(m.partition_id, ValidPartitionOf(r));
  TQDS_ASSIGN_OR_RETURN(m.count, r.Get<int64_t>("count"));
  if (m.count <= 0) return Status::Invalid("Allocate: count must be >= 1, got ", m.count);
  return m;
}

std::string PartitionRequest::Encode() const {
  return PackBody([&](Packer& pk) {
    pk.pack_map(1);
    pk.pack("partition_id");
    pk.pack(partition_id);
  });
}

Result<PartitionRequest> PartitionRequest::Decode(const msgpack::object& body, const char* what) {
  TQDS_ASSIGN_OR_RETURN(auto r, MapReader::Of(body, what));
  PartitionRequest m;
  TQDS_ASSIGN_OR_RETURN(m.partition_id, ValidPartitionOf(r));
  return m;
}

std::string SamplesRequest::Encode() const {
  return PackBody([&](Packer& pk) {
    pk.pack_map(2);
    pk.pack("partition_id");
    pk.pack(partition_id);
    pk.pack("global_indexes");
    pk.pack(global_indexes);
  });
}

Result<SamplesRequest> SamplesRequest::Decode(const msgpack::object& body, const char* what) {
  TQDS_ASSIGN_OR_RETURN(auto r, MapReader::Of(body, what));
  SamplesRequest m;
  TQDS_ASSIGN_OR_RETURN(m.partition_id, r.Get<std::string>("partition_id"));
  TQDS_ASSIGN_OR_RETURN(m.global_indexes, r.Get<std::vector<int64_t>>("global_indexes"));
  return m;
}

std::string ProductionStatusRequest::Encode() const {
  return PackBody([&](Packer& pk) {
    pk.pack_map(fields ? 2 : 1);
    pk.pack("partition_id");
    pk.pack(partition_id);
    if (fields) {
      pk.pack("fields");
      pk.pack(*fields);
    }
  });
}

Result<ProductionStatusRequest> ProductionStatusRequest::Decode(const msgpack::object& body) {
  TQDS_ASSIGN_OR_RETURN(auto r, MapReader::Of(body, "ProductionStatus"));
  ProductionStatusRequest m;
  TQDS_ASSIGN_OR_RETURN(m.partition_id, ValidPartitionOf(r));
  if (r.Has("fields")) {
    TQDS_ASSIGN_OR_RETURN(m.fields, r.Get<std::vector<std::string>>("fields"));
  }
  return m;
}

std::string EncodeProductionStatus(const ProductionStatus& st) {
  return PackBody([&](Packer& pk) {
    pk.pack_map(2);
    pk.pack("num_samples");
    pk.pack_uint64(st.num_samples);
    pk.pack("produced");
    pk.pack(st.produced);
  });
}

Result<ProductionStatus> DecodeProductionStatus(const msgpack::object& body) {
  TQDS_ASSIGN_OR_RETURN(auto r, MapReader::Of(body, "ProductionStatus reply"));
  ProductionStatus st;
  TQDS_ASSIGN_OR_RETURN(st.num_samples, r.Get<size_t>("num_samples"));
  TQDS_ASSIGN_OR_RETURN(st.produced, (r.Get<std::map<std::string, size_t>>("produced")));
  return st;
}

std::string ConsumptionStatusRequest::Encode() const {
  return PackBody([&](Packer& pk) {
    pk.pack_map(3);
    pk.pack("partition_id");
    pk.pack(partition_id);
    pk.pack("task_name");
    pk.pack(task_name);
    pk.pack("per_sample");
    pk.pack(per_sample);
  });
}

Result<ConsumptionStatusRequest> ConsumptionStatusRequest::Decode(const msgpack::object& body) {
  TQDS_ASSIGN_OR_RETURN(auto r, MapReader::Of(body, "ConsumptionStatus"));
  ConsumptionStatusRequest m;
  TQDS_ASSIGN_OR_RETURN(m.per_sample, r.GetOr<bool>("per_sample", false));
  TQDS_ASSIGN_OR_RETURN(m.partition_id, r.Get<std::string>("partition_id"));
  TQDS_ASSIGN_OR_RETURN(m.task_name, r.Get<std::string>("task_name"));
  if (m.per_sample) {  // the per-sample form creates the task: both names must be valid
    TQDS_RETURN_NOT_OK(ValidateName(m.partition_id, "partition_id").WithContext(r.what()));
    TQDS_RETURN_NOT_OK(ValidateName(m.task_name, "task_name").WithContext(r.what()));
  }
  return m;
}

bool ConsumptionStatusRequest::PerSample(const msgpack::object& body) {
  auto r = MapReader::Of(body, "ConsumptionStatus");
  return r.ok() && r->GetOr<bool>("per_sample", false).ValueOr(false);
}

std::string EncodeConsumptionStatus(const ConsumptionStatus& st) {
  return PackBody([&](Packer& pk) {
    pk.pack_map(2);
    pk.pack("num_samples");
    pk.pack_uint64(st.num_samples);
    pk.pack("consumed");
    pk.pack_uint64(st.consumed);
  });
}

Result<ConsumptionStatus> DecodeConsumptionStatus(const msgpack::object& body) {
  TQDS_ASSIGN_OR_RETURN(auto r, MapReader::Of(body, "ConsumptionStatus reply"));
  ConsumptionStatus st;
  TQDS_ASSIGN_OR_RETURN(st.num_samples, r.Get<size_t>("num_samples"));
  TQDS_ASSIGN_OR_RETURN(st.consumed, r.Get<size_t>("consumed"));
  return st;
}

std::string ResetConsumptionRequest::Encode() const {
  return PackBody([&](Packer& pk) {
    pk.pack_map(2);
    pk.pack("partition_id");
    pk.pack(partition_id);
    pk.pack("task_name");
    pk.pack(task_name);
  });
}

Result<ResetConsumptionRequest> ResetConsumptionRequest::Decode(const msgpack::object& body) {
  TQDS_ASSIGN_OR_RETURN(auto r, MapReader::Of(body, "ResetConsumption"));
  ResetConsumptionRequest m;
  TQDS_ASSIGN_OR_RETURN(m.partition_id, r.Get<std::string>("partition_id"));
  TQDS_ASSIGN_OR_RETURN(m.task_name, r.GetOr<std::string>("task_name", ""));
  return m;
}

std::string ListPartitionsRequest::Encode() const {
  return PackBody([&](Packer& pk) {
    pk.pack_map(1);
    pk.pack("detail");
    pk.pack(detail);
  });
}

Result<ListPartitionsRequest> ListPartitionsRequest::Decode(const msgpack::object& body) {
  ListPartitionsRequest m;
  if (body.type == msgpack::type::NIL) return m;  // the names only
  TQDS_ASSIGN_OR_RETURN(auto r, MapReader::Of(body, "ListPartitions"));
  TQDS_ASSIGN_OR_RETURN(m.detail, r.GetOr<bool>("detail", false));
  return m;
}

std::string EncodePartitionList(const std::vector<std::string>& names) {
  return PackBody([&](Packer& pk) {
    pk.pack_map(1);
    pk.pack("partitions");
    pk.pack(names);
  });
}

Result<std::vector<std::string>> DecodePartitionList(const msgpack::object& body) {
  TQDS_ASSIGN_OR_RETURN(auto r, MapReader::Of(body, "ListPartitions reply"));
  return r.Get<std::vector<std::string>>("partitions");
}

std::string EncodePartitionSummaries(const std::vector<PartitionSummary>& summaries) {
  return PackBody([&](Packer& pk) {
    pk.pack_map(4);
    auto column = [&](const char* name, auto get) {
      pk.pack(name);
      pk.pack_array(static_cast<uint32_t>(summaries.size()));
      for (const auto& s : summaries) pk.pack(get(s));
    };
    column("partitions", [](const PartitionSummary& s) -> const std::string& { return s.partition_id; });
    column("samples", [](const PartitionSummary& s) { return uint64_t{s.num_samples}; });
    column("produced", [](const PartitionSummary& s) -> const std::map<std::string, size_t>& { return s.produced; });
    column("consumed", [](const PartitionSummary& s) -> const std::map<std::string, size_t>& { return s.consumed; });
  });
}

Result<std::vector<PartitionSummary>> DecodePartitionSummaries(const msgpack::object& body) {
  TQDS_ASSIGN_OR_RETURN(auto r, MapReader::Of(body, "ListPartitions reply"));
  TQDS_ASSIGN_OR_RETURN(auto names, r.Get<std::vector<std::string>>("partitions"));
  TQDS_ASSIGN_OR_RETURN(auto samples, r.Get<std::vector<size_t>>("samples"));
  TQDS_ASSIGN_OR_RETURN(auto produced, (r.Get<std::vector<std::map<std::string, size_t>>>("produced")));
  TQDS_ASSIGN_OR_RETURN(auto consumed, (r.Get<std::vector<std::map<std::string, size_t>>>("consumed")));
  if (samples.size() != names.size() || produced.size() != names.size() || consumed.size() != names.size()) {
    return Status::Invalid("ListPartitions reply: arrays of different lengths for ", names.size(), " partitions");
  }
  std::vector<PartitionSummary> out(names.size());
  for (size_t i = 0; i < names.size(); ++i) {
    out[i] = {std::move(names[i]), samples[i], std::move(produced[i]), std::move(consumed[i])};
  }
  return out;
}

std::string RegisterStorageRequest::Encode() const {
  return PackBody([&](Packer& pk) {
    pk.pack_map(1);
    pk.pack("endpoint");
    pk.pack(endpoint);
  });
}

Result<RegisterStorageRequest> RegisterStorageRequest::Decode(const msgpack::object& body) {
  TQDS_ASSIGN_OR_RETURN(auto r, MapReader::Of(body, "RegisterStorage"));
  RegisterStorageRequest m;
  TQDS_ASSIGN_OR_RETURN(m.endpoint, r.Get<std::string>("endpoint"));
  return m;
}

std::string EncodeStorageInfo(const std::vector<std::string>& units) {
  return PackBody([&](Packer& pk) {
    pk.pack_map(1);
    pk.pack("units");
    pk.pack(units);
  });
}

Result<std::vector<std::string>> DecodeStorageInfo(const msgpack::object& body) {
  TQDS_ASSIGN_OR_RETURN(auto r, MapReader::Of(body, "StorageInfo"));
  return r.Get<std::vector<std::string>>("units");
}

std::string RestoreRequest::Encode() const {
  return PackBody([&](Packer& pk) {
    pk.pack_map(1);
    pk.pack("dry_run");
    pk.pack(dry_run);
  });
}

Result<RestoreRequest> RestoreRequest::Decode(const msgpack::object& body) {
  TQDS_ASSIGN_OR_RETURN(auto r, MapReader::Of(body, "Restore"));
  RestoreRequest m;
  TQDS_ASSIGN_OR_RETURN(m.dry_run, r.GetOr<bool>("dry_run", false));
  return m;
}

std::string EncodeFound(const std::vector<bool>& found) {
  return PackBody([&](Packer& pk) {
    pk.pack_map(1);
    pk.pack("found");
    pk.pack(found);
  });
}

Result<std::vector<bool>> DecodeFound(const msgpack::object& body, size_t asked) {
  TQDS_ASSIGN_OR_RETURN(auto r, MapReader::Of(body, "UnitGet reply"));
  TQDS_ASSIGN_OR_RETURN(auto found, r.Get<std::vector<bool>>("found"));
  if (found.size() != asked) return Status::Invalid("UnitGet reply: ", found.size(), " answers for ", asked, " keys");
  return found;
}

std::string UnitStatsReply::Encode() const {
  return PackBody([&](Packer& pk) {
    pk.pack_map(10);
    pk.pack("rss_bytes");
    pk.pack_uint64(rss_bytes);
    pk.pack("keys");
    pk.pack_uint64(stats.keys);
    pk.pack("samples");
    pk.pack_uint64(stats.samples);
    pk.pack("bytes");
    pk.pack_uint64(stats.bytes);
    pk.pack("capacity");
    pk.pack_uint64(stats.capacity_bytes);
    pk.pack("capacity_samples");
    pk.pack_uint64(stats.capacity_samples);
    pk.pack("ipc");
    if (ipc.empty()) {
      pk.pack_nil();
    } else {
      pk.pack(ipc);
    }
    pk.pack("instance");
    pk.pack_uint64(instance);
    pk.pack("stream_port");
    pk.pack_uint32(stream_port);
    pk.pack("op_stats");  // by upstream's op_type: the counters and latency buckets (RequestOpStats)
    pk.pack_map(static_cast<uint32_t>(stats.ops.size()));
    for (const auto& [op, o] : stats.ops) {
      pk.pack(op);
      pk.pack_map(5);
      pk.pack("request_count");
      pk.pack_uint64(o.requests);
      pk.pack("errors");
      pk.pack_uint64(o.errors);
      pk.pack("samples");
      pk.pack_uint64(o.samples);
      pk.pack("seconds");
      pk.pack(o.seconds);
      pk.pack("latency");
      pk.pack(o.latency);
    }
  });
}

Result<UnitStatsReply> UnitStatsReply::Decode(const msgpack::object& body) {
  TQDS_ASSIGN_OR_RETURN(auto r, MapReader::Of(body, "UnitStats"));
  UnitStatsReply m;
  TQDS_ASSIGN_OR_RETURN(m.stats.keys, r.GetOr<uint64_t>("keys", 0));
  TQDS_ASSIGN_OR_RETURN(m.stats.samples, r.GetOr<uint64_t>("samples", m.stats.keys));
  TQDS_ASSIGN_OR_RETURN(m.stats.bytes, r.GetOr<uint64_t>("bytes", 0));
  TQDS_ASSIGN_OR_RETURN(m.stats.capacity_bytes, r.GetOr<uint64_t>("capacity", 0));
  TQDS_ASSIGN_OR_RETURN(m.stats.capacity_samples, r.GetOr<uint64_t>("capacity_samples", 0));
  TQDS_ASSIGN_OR_RETURN(m.rss_bytes, r.GetOr<uint64_t>("rss_bytes", 0));
  TQDS_ASSIGN_OR_RETURN(m.ipc, r.GetOr<std::string>("ipc", ""));
  TQDS_ASSIGN_OR_RETURN(m.instance, r.GetOr<uint64_t>("instance", 0));
  TQDS_ASSIGN_OR_RETURN(m.stream_port, r.GetOr<uint32_t>("stream_port", 0));
  if (m.stream_port > 65535) return Status::Invalid("UnitStats: stream_port ", m.stream_port, " is not a port");
  using Ops = std::map<std::string, msgpack::object>;
  TQDS_ASSIGN_OR_RETURN(Ops ops, r.GetOr<Ops>("op_stats", Ops{}));
  for (const auto& [op, obj] : ops) {
    TQDS_ASSIGN_OR_RETURN(auto o, MapReader::Of(obj, "UnitStats op_stats"));
    RequestOpStats& out = m.stats.ops[op];
    TQDS_ASSIGN_OR_RETURN(out.requests, o.Get<uint64_t>("request_count"));
    TQDS_ASSIGN_OR_RETURN(out.errors, o.Get<uint64_t>("errors"));
    TQDS_ASSIGN_OR_RETURN(out.samples, o.Get<uint64_t>("samples"));
    TQDS_ASSIGN_OR_RETURN(out.seconds, o.Get<double>("seconds"));
    TQDS_ASSIGN_OR_RETURN(out.latency, o.Get<std::vector<uint64_t>>("latency"));
    if (out.latency.size() != RequestOpStats::LatencyBounds().size() + 1) {
      return Status::Invalid("UnitStats op_stats ", op, ": ", out.latency.size(), " latency buckets, expected ",
                             RequestOpStats::LatencyBounds().size() + 1);
    }
  }
  return m;
}

}  // namespace tq::internal
