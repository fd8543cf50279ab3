// The key owner's location records.
#include "datasystem/owner_table.h"

#include <algorithm>
#include <map>
#include <tuple>

namespace ds {

using tqds::StatusCode;
using proto::PublishMode;

std::vector<StaleCopy> OwnerTable::Publish(PublishMode mode, std::vector<PublishEntry> entries) {
  std::vector<StaleCopy> stale;
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& e : entries) {
    auto it = records_.find(e.key);
    auto holder_of = [&](LocationRecord& r) {
      return std::find_if(r.replicas.begin(), r.replicas.end(),
                          [&](const Replica& x) { return x.holder == e.replica.holder; });
    };
    switch (mode) {
      case PublishMode::kPrimary: {
        if (it != records_.end() && !it->second.replicas.empty() &&
            it->second.replicas.front() == e.replica && !it->second.from_handoff) {
          break;  // a re-announcement of what the record already says
        }
        if (it != records_.end() && !it->second.replicas.empty() && !it->second.from_handoff) {
          const Replica& current = it->second.replicas.front();
          if (current.holder != e.replica.holder &&
              (current.version > e.replica.version ||
               (current.version == e.replica.version && current.holder > e.replica.holder))) {
            stale.push_back({e.key, e.replica.holder, e.replica.version});  // a later write won
            break;
          }
        }
        if (it != records_.end()) {
          for (const auto& r : it->second.replicas) {
            if (r.holder != e.replica.holder) stale.push_back({e.key, r.holder, r.version});
          }
        }
        LocationRecord record{e.size, {std::move(e.replica)}, false};
        if (it != records_.end()) {
          it->second = std::move(record);
        } else {
          records_.emplace(std::move(e.key), std::move(record));
        }
        break;
      }
      case PublishMode::kCache: {
        if (it == records_.end()) {
          stale.push_back({e.key, e.replica.holder, e.replica.version});  // deleted while it was being pulled
          break;
        }
        auto r = holder_of(it->second);
        if (r == it->second.replicas.end()) {
          it->second.replicas.push_back(e.replica);
        } else if (r != it->second.replicas.begin()) {
          *r = e.replica;
        }
        break;
      }
      case PublishMode::kHandoff: {
        if (it == records_.end()) {
          records_[e.key] = LocationRecord{e.size, {e.replica}, true};
        } else if (it->second.from_handoff && holder_of(it->second) == it->second.replicas.end()) {
          it->second.replicas.push_back(e.replica);
        }
        break;
      }
    }
  }
  return stale;
}

std::vector<StaleCopy> CopiesToDrop(PublishMode mode, const std::vector<PublishAnswer>& answers) {
  std::vector<StaleCopy> out;
  if (mode != PublishMode::kCache) {
    for (const auto& a : answers) out.insert(out.end(), a.stale.begin(), a.stale.end());
    return out;
  }
  std::unordered_map<std::string, size_t> asked;  // key -> owners that answered for it
  for (const auto& a : answers) {
    for (const auto& k : a.keys) ++asked[k];
  }
  // (key, holder, version) -> owners that reported it stale
  std::map<std::tuple<std::string, std::string, uint64_t>, size_t> reported;
  for (const auto& a : answers) {
    for (const auto& s : a.stale) ++reported[{s.key, s.holder, s.version}];
  }
  for (const auto& [copy, count] : reported) {
    const auto& [key, holder, version] = copy;
    if (count >= asked[key]) out.push_back(StaleCopy{key, holder, version});
  }
  return out;
}

std::vector<LookupResult> OwnerTable::Lookup(const std::vector<std::string>& keys,
                                             const LiveSet& live) const {
  std::vector<size_t> all(keys.size());
  for (size_t i = 0; i < all.size(); ++i) all[i] = i;
  return Lookup(keys, all, live);
}

std::vector<LookupResult> OwnerTable::Lookup(const std::vector<std::string>& keys, std::span<const size_t> which,
                                             const LiveSet& live) const {
  std::vector<LookupResult> out(which.size());
  std::lock_guard<std::mutex> lock(mu_);
  for (size_t i = 0; i < which.size(); ++i) {
    auto it = records_.find(keys[which[i]]);
    if (it == records_.end()) continue;
    LookupResult& r = out[i];
    r.size = it->second.size;
    for (const auto& rep : it->second.replicas) {
      auto m = live.find(rep.holder);
      if (m != live.end() && (rep.incarnation == 0 || m->second == rep.incarnation)) {
        r.live.push_back(rep);
      } else {
        if (!r.lost.empty()) r.lost += ", ";
        r.lost += rep.holder;
      }
    }
    if (!r.live.empty()) {
      r.code = StatusCode::kOk;
      r.lost.clear();
    } else if (!r.lost.empty()) {
      r.code = StatusCode::kUnavailable;
    }
  }
  return out;
}

std::vector<std::vector<Replica>> OwnerTable::Remove(const std::vector<std::string>& keys) {
  std::vector<size_t> all(keys.size());
  for (size_t i = 0; i < all.size(); ++i) all[i] = i;
  return Remove(keys, all);
}

std::vector<std::vector<Replica>> OwnerTable::Remove(const std::vector<std::string>& keys,
                                                     std::span<const size_t> which) {
  std::vector<std::vector<Replica>> out(which.size());
  std::lock_guard<std::mutex> lock(mu_);
  for (size_t i = 0; i < which.size(); ++i) {
    auto it = records_.find(keys[which[i]]);
    if (it == records_.end()) continue;
    out[i] = std::move(it->second.replicas);
    records_.erase(it);
  }
  return out;
}

std::vector<std::pair<std::string, LocationRecord>> OwnerTable::Snapshot() const {
  std::lock_guard<std::mutex> lock(mu_);
  return {records_.begin(), records_.end()};
}

void OwnerTable::Erase(const std::vector<std::string>& keys) {
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& k : keys) records_.erase(k);
}

size_t OwnerTable::size() const {
  std::lock_guard<std::mutex> lock(mu_);
  return records_.size();
}

}  // namespace ds
