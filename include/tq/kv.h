// The key-value view of partitions (the KV API): a partition may name some
// of its samples by string keys; kv_list reports each key with its sample's
// custom metadata ("tags"). Plain value types; no synchronisation needed.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
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

// The keys of one KV call laid end to end, as a request carries them
// (docs/wire_format.md: key_ends, key_bytes): key i is the bytes from
// ends[i - 1] (0 for the first) to ends[i]. The Python binding builds it
// from a list of str in one pass, without a std::string per key.
struct KeyColumns {
  std::vector<uint32_t> ends;
  std::string bytes;

  size_t size() const { return ends.size(); }
  bool empty() const { return ends.empty(); }
  // Key i (the ends must be in order and within bytes: ValidateKeys).
  std::string_view operator[](size_t i) const {
    const uint32_t begin = i == 0 ? 0 : ends[i - 1];
    return std::string_view(bytes).substr(begin, ends[i] - begin);
  }
  void Append(std::string_view key) {
    bytes.append(key);
    ends.push_back(bytes.size() > UINT32_MAX ? UINT32_MAX : static_cast<uint32_t>(bytes.size()));
  }
  void Clear() {
    ends.clear();
    bytes.clear();
  }
  // Ends past 4 GiB are clamped (ValidateKeys refuses them).
  static KeyColumns Of(const std::vector<std::string>& keys) {
    KeyColumns out;
    size_t total = 0;
    for (const auto& k : keys) total += k.size();
    out.ends.reserve(keys.size());
    out.bytes.reserve(total);
    for (const auto& k : keys) out.Append(k);
    return out;
  }
};

// Bounds a controller enforces on a KV request (hostile input): keys per
// request; each key is a name (non-empty, at most 256 bytes, no NUL).
inline constexpr size_t kMaxKvKeysPerRequest = size_t{1} << 24;

}  // namespace tq
