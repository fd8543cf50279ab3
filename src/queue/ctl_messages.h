// The small controller and storage-unit message bodies (docs/wire_format.md)
// that are not BatchMeta, sample lists or KV requests (protocol.h,
// kv_protocol.h): each request or reply struct encodes and decodes itself,
// and the client and the server call the same pair. Decoders treat input as
// hostile: names are validated, counts must be >= 1, parallel arrays must
// have equal lengths and a reply must answer for what was asked.
// Socket-free; fuzz/controller_messages.cc runs every decoder.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "queue/protocol.h"
#include "tq/partition_status.h"
#include "tq/storage_unit.h"

namespace tq::internal {

// Ping reply: {"controller_id": uint, "durable": bool}.
struct PingReply {
  uint64_t controller_id = 0;
  bool durable = false;  // the controller keeps its state: clients resend across a restart
  std::string Encode() const;
  static Result<PingReply> Decode(const msgpack::object& body);
};

// Allocate: {"partition_id": str, "count": int >= 1} -> BatchMeta.
struct AllocateRequest {
  std::string partition_id;
  int64_t count = 0;
  std::string Encode() const;
  static Result<AllocateRequest> Decode(const msgpack::object& body);
};

// ClearPartition: {"partition_id": str} -> SampleList.
struct PartitionRequest {
  std::string partition_id;
  std::string Encode() const;
  static Result<PartitionRequest> Decode(const msgpack::object& body, const char* what);
};

// ClearSamples and GetCustomMeta: {"partition_id": str, "global_indexes": [int64]}.
struct SamplesRequest {
  std::string partition_id;
  std::vector<int64_t> global_indexes;
  std::string Encode() const;
  static Result<SamplesRequest> Decode(const msgpack::object& body, const char* what);
};

// ProductionStatus: {"partition_id": str} -> ProductionStatus, or with
// "fields": [str] upstream's per-sample matrix (EncodeSampleStatus).
struct ProductionStatusRequest {
  std::string partition_id;
  std::optional<std::vector<std::string>> fields;
  std::string Encode() const;
  static Result<ProductionStatusRequest> Decode(const msgpack::object& body);
};
std::string EncodeProductionStatus(const ProductionStatus& st);
Result<ProductionStatus> DecodeProductionStatus(const msgpack::object& body);

// ConsumptionStatus: {"partition_id": str, "task_name": str, "per_sample":
// bool} -> ConsumptionStatus, or (per_sample) the per-sample matrix.
struct ConsumptionStatusRequest {
  std::string partition_id;
  std::string task_name;
  bool per_sample = false;
  std::string Encode() const;
  static Result<ConsumptionStatusRequest> Decode(const msgpack::object& body);
  // Whether `body` asks for the per-sample form (false for any body that
  // does not decode).
  static bool PerSample(const msgpack::object& body);
};
std::string EncodeConsumptionStatus(const ConsumptionStatus& st);
Result<ConsumptionStatus> DecodeConsumptionStatus(const msgpack::object& body);

// ResetConsumption: {"partition_id": str, "task_name": str ("" or absent: every task)}.
struct ResetConsumptionRequest {
  std::string partition_id;
  std::string task_name;
  std::string Encode() const;
  static Result<ResetConsumptionRequest> Decode(const msgpack::object& body);
};

// ListPartitions: nil or {"detail": bool} -> {"partitions": [str]}, with
// detail also {"samples": [uint], "produced": [{field: n}], "consumed":
// [{task: n}]}, one entry per partition.
struct ListPartitionsRequest {
  bool detail = false;
  std::string Encode() const;
  static Result<ListPartitionsRequest> Decode(const msgpack::object& body);
};
std::string EncodePartitionList(const std::vector<std::string>& names);
Result<std::vector<std::string>> DecodePartitionList(const msgpack::object& body);
std::string EncodePartitionSummaries(const std::vector<PartitionSummary>& summaries);
Result<std::vector<PartitionSummary>> DecodePartitionSummaries(const msgpack::object& body);

// RegisterStorage: {"endpoint": str}.
struct RegisterStorageRequest {
  std::string endpoint;
  std::string Encode() const;
  static Result<RegisterStorageRequest> Decode(const msgpack::object& body);
};

// GetStorageInfo reply: {"units": [str]}.
std::string EncodeStorageInfo(const std::vector<std::string>& units);
Result<std::vector<std::string>> DecodeStorageInfo(const msgpack::object& body);

// Restore: {"dry_run": bool} + the snapshot as payload frame 0.
struct RestoreRequest {
  bool dry_run = false;
  std::string Encode() const;
  static Result<RestoreRequest> Decode(const msgpack::object& body);
};

// UnitGet reply: {"found": [bool]}, one per key asked (+ a frame per key).
std::string EncodeFound(const std::vector<bool>& found);
Result<std::vector<bool>> DecodeFound(const msgpack::object& body, size_t asked);

// UnitStats reply: the unit's counters (StorageUnitStats, its op_stats with
// upstream's latency buckets), its RSS, its ipc endpoint ("" none), the
// port of its stream channel (0 none; on the host of its tcp endpoint) and
// the instance id that tells it apart from another unit at a reused ipc
// path or port.
struct UnitStatsReply {
  StorageUnitStats stats;
  uint64_t rss_bytes = 0;
  std::string ipc;
  uint64_t instance = 0;
  uint32_t stream_port = 0;
  std::string Encode() const;
  static Result<UnitStatsReply> Decode(const msgpack::object& body);
};

}  // namespace tq::internal
