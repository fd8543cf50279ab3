// The key-value view of partitions (the KV API): a partition may name some
// of its samples by string keys; kv_list reports each key with its sample's
// custom metadata ("tags"). Plain value types; no synchronisation needed.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "tq/batch.h"
#include "tq/types.h"

namespace tq {

// One key of a partition and its sample's custom metadata.
struct KvEntry {
  std::string key;
  CustomMeta tags;
  bool operator==(const KvEntry&) const = default;
};

// The keys of one partition, in the order they were created. A partition
// without keys has no entries.
struct KvPartition {
  std::string partition_id;
  std::vector<KvEntry> entries;
  bool operator==(const KvPartition&) const = default;
};

// kv_list's answer: one KvPartition per listed partition, by partition id.
using KvListing = std::vector<KvPartition>;

// kv_put's answer: the fields that every written key's sample holds after
// the put (those it had before and those written), and each key's tags in
// request order (empty when no key has any).
struct KvPutResult {
  std::vector<std::string> fields;
  std::vector<CustomMeta> tags;
  bool operator==(const KvPutResult&) const = default;
};

// kv_get's answer: the fields that every found key's sample has produced
// (registration order), how many of the keys were found, and their values
// (rows in the order of the keys found). No batch when no key was found or
// a field asked for is not among `fields`: nothing was read then.
struct KvGetResult {
  std::vector<std::string> fields;
  size_t found = 0;
  std::optional<Batch> batch;
};

// Bounds a controller enforces on a KV request (hostile input): keys per
// request; each key is a name (non-empty, at most 256 bytes, no NUL).
inline constexpr size_t kMaxKvKeysPerRequest = size_t{1} << 24;

}  // namespace tq
