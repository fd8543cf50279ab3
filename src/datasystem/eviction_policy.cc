// LRU eviction order.
#include "datasystem/eviction_policy.h"

namespace ds {

void LruPolicy::Add(ObjectId id) {
  auto it = pos_.find(id);
  if (it != pos_.end()) {
    order_.splice(order_.end(), order_, it->second);
    return;
  }
  pos_.emplace(id, order_.insert(order_.end(), id));
}

void LruPolicy::Touch(ObjectId id) {
  auto it = pos_.find(id);
  if (it != pos_.end()) order_.splice(order_.end(), order_, it->second);
}

void LruPolicy::Remove(ObjectId id) {
  auto it = pos_.find(id);
  if (it == pos_.end()) return;
  order_.erase(it->second);
  pos_.erase(it);
}

std::optional<ObjectId> LruPolicy::PickVictim(const std::function<bool(ObjectId)>& eligible) {
  for (ObjectId id : order_) {
    if (eligible(id)) return id;
  }
  return std::nullopt;
}

}  // namespace ds
