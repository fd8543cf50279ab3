// SimpleStore: a storage unit's table of values by storage key, bounded by a
// byte capacity and optionally by a number of samples (a sample being all
// the fields of one global index of one partition, as upstream counts keys). Values are Buffers kept exactly as they arrived (usually
// views of a received payload frame, which they keep alive); nothing is
// copied in or out.
//
// Keys are held as (controller id, partition, field) -> (index, generation)
// -> value, so a request of thousands of keys hashes its names once per
// field and each key as two integers. Legacy string keys (UnitPut/UnitGet/
// UnitClear) in tq::StorageKey format land in the same table; other strings
// are kept apart, verbatim.
//
// Thread-safe: one mutex guards the table (a unit serves tcp and ipc on two
// threads). It is never held across a send: callers build replies from the
// returned Buffers after the call.
#pragma once

#include <cstdint>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "queue/simple_codec.h"
#include "tqds/buffer.h"
#include "tqds/status.h"

namespace tq::internal::simple {

class SimpleStore {
 public:
  // `name` (the unit's endpoint) appears in error messages. capacity_samples
  // 0: no limit on samples.
  SimpleStore(uint64_t capacity_bytes, std::string name, uint64_t capacity_samples = 0);

  // Stores values[k] as key k of `groups` (groups in order, each field-major).
  // All or nothing: OutOfSpace, and nothing stored, when the new bytes or the
  // new samples do not fit. Precondition: values.size() equals the groups' key count.
  tqds::Status Put(const std::vector<KeyGroup>& groups, const std::vector<tqds::Buffer>& values);
  // The values of every key in key order; NotFound naming the first missing
  // key.
  tqds::Result<std::vector<tqds::Buffer>> Get(const std::vector<KeyGroup>& groups) const;
  // Frees the keys; missing ones are ignored.
  void Erase(const std::vector<KeyGroup>& groups);

  // The same for legacy string keys. GetKeys reports a missing key through
  // `found` instead of failing.
  tqds::Status PutKeys(const std::vector<std::string>& keys, const std::vector<tqds::Buffer>& values);
  std::vector<tqds::Buffer> GetKeys(const std::vector<std::string>& keys, std::vector<bool>* found) const;
  void EraseKeys(const std::vector<std::string>& keys);

  struct Stats {
    uint64_t keys = 0;              // stored values (one per field of a sample)
    uint64_t samples = 0;           // samples with at least one stored field
    uint64_t bytes = 0, capacity = 0;
    uint64_t capacity_samples = 0;  // 0: no limit
  };
  Stats stats() const;

 private:
  struct GroupKey {
    uint64_t controller_id = 0;
    std::string partition_id;
    std::string field;
    bool raw = false;  // a legacy key not in StorageKey format, in partition_id
    bool operator==(const GroupKey&) const = default;
  };
  struct GroupHash {
    size_t operator()(const GroupKey& g) const;
  };
  struct SlotKey {
    int64_t index = 0;
    uint64_t generation = 0;
    bool operator==(const SlotKey&) const = default;
  };
  struct SlotHash {
    size_t operator()(const SlotKey& s) const;
  };
  using Slots = std::unordered_map<SlotKey, tqds::Buffer, SlotHash>;
  // One key resolved for the table: its group (in a caller's vector) and slot.
  struct Ref {
    const GroupKey* group;
    SlotKey slot;
  };
  // Resolves new-style groups: `keys` is filled with one GroupKey per
  // (group, field), refs in key order point into it.
  static void Resolve(const std::vector<KeyGroup>& groups, std::vector<GroupKey>* keys, std::vector<Ref>* refs);
  static void ResolveStrings(const std::vector<std::string>& strings, std::vector<GroupKey>* keys,
                             std::vector<Ref>* refs);

  // The sample a group's key belongs to: the group without its field.
  static GroupKey SampleGroup(const GroupKey& g) { return GroupKey{g.controller_id, g.partition_id, "", g.raw}; }
  // How many samples of `refs` are not stored yet. Requires mu_.
  uint64_t NewSamples(const std::vector<Ref>& refs) const;

  tqds::Status PutRefs(const std::vector<Ref>& refs, const std::vector<tqds::Buffer>& values);
  void EraseRefs(const std::vector<Ref>& refs);

  // Constant after construction.
  const uint64_t capacity_;
  const std::string name_;
  const uint64_t capacity_samples_;

  mutable std::mutex mu_;
  std::unordered_map<GroupKey, Slots, GroupHash> table_;  // guarded by mu_
  uint64_t used_ = 0;                                     // guarded by mu_
  uint64_t keys_ = 0;                                     // guarded by mu_
  // Per sample group, how many fields each stored sample has.
  std::unordered_map<GroupKey, std::unordered_map<SlotKey, uint32_t, SlotHash>, GroupHash> samples_;  // guarded by mu_
  uint64_t sample_count_ = 0;                                                                       // guarded by mu_
};

}  // namespace tq::internal::simple
