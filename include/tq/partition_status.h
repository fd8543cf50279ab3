// Status summaries the controller reports for a partition.
#pragma once

#include <cstddef>
#include <map>
#include <string>
#include <vector>

namespace tq {

struct ProductionStatus {
  size_t num_samples = 0;                  // live samples in the partition
  std::map<std::string, size_t> produced;  // per field: samples that have it
};

struct ConsumptionStatus {
  size_t num_samples = 0;  // live samples in the partition
  size_t consumed = 0;     // of those, consumed by the task
};

// One partition at a glance (TransferQueueClient::partition_summaries, and
// what `tq status` prints).
struct PartitionSummary {
  std::string partition_id;
  size_t num_samples = 0;                  // live samples
  std::map<std::string, size_t> produced;  // per field: live samples that have it
  std::map<std::string, size_t> consumed;  // per task that has asked for samples: live samples it consumed
};

// Per-sample status in upstream TransferQueue's shape: one row per live
// sample of the partition, in ascending global index, and `columns` bytes per
// row (row-major), 1 = yes. Production: one column per requested field, in
// the partition's field registration order. Consumption: one column, consumed
// by the task.
struct SampleStatusMatrix {
  std::vector<int64_t> global_indexes;
  std::vector<std::string> columns;  // field names (production); the task name (consumption)
  std::vector<uint8_t> status;       // global_indexes.size() x columns.size()
};

}  // namespace tq
