// EvictionPolicy: orders resident objects from cold to hot so the object store
// can pick what to spill or drop under memory pressure. An interface so other
// orders (LFU, size-aware) can replace LRU. Not thread-safe: the object store
// calls it under its lock.
#pragma once

#include <cstdint>
#include <functional>
#include <list>
#include <memory_resource>
#include <optional>
#include <unordered_map>

namespace ds {

using ObjectId = uint64_t;

class EvictionPolicy {
 public:
  virtual ~EvictionPolicy() = default;
  // An object became resident in memory (sealed or reloaded).
  virtual void Add(ObjectId id) = 0;
  // The object was read.
  virtual void Touch(ObjectId id) = 0;
  // The object left memory (deleted, spilled, dropped). Unknown ids are ignored.
  virtual void Remove(ObjectId id) = 0;
  // The coldest object for which `eligible` holds, or nullopt. Does not remove it.
  virtual std::optional<ObjectId> PickVictim(const std::function<bool(ObjectId)>& eligible) = 0;
  virtual size_t size() const = 0;
};

// Least recently used first.
class LruPolicy final : public EvictionPolicy {
 public:
  void Add(ObjectId id) override;
  void Touch(ObjectId id) override;
  void Remove(ObjectId id) override;
  std::optional<ObjectId> PickVictim(const std::function<bool(ObjectId)>& eligible) override;
  size_t size() const override { return pos_.size(); }

 private:
  // Nodes from a pool: one per resident object, made and dropped by the
  // thousand per batch. Used under the store's lock only.
  std::pmr::unsynchronized_pool_resource pool_;
  std::pmr::list<ObjectId> order_{&pool_};  // front = coldest
  std::pmr::unordered_map<ObjectId, std::pmr::list<ObjectId>::iterator> pos_{&pool_};
};

}  // namespace ds
