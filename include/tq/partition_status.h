// Status summaries the controller reports for a partition.
#pragma once

#include <cstddef>
#include <map>
#include <string>

namespace tq {

struct ProductionStatus {
  size_t num_samples = 0;                  // live samples in the partition
  std::map<std::string, size_t> produced;  // per field: samples that have it
};

struct ConsumptionStatus {
  size_t num_samples = 0;  // live samples in the partition
  size_t consumed = 0;     // of those, consumed by the task
};

}  // namespace tq
