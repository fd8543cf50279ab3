// SimpleStore: the storage unit's capacity-bounded table.
#include "queue/simple_store.h"

#include <charconv>
#include <functional>
#include <unordered_set>

#include "tq/storage.h"

namespace tq::internal::simple {

using tqds::Buffer;
using tqds::Result;
using tqds::Status;

namespace {

inline uint64_t Mix(uint64_t x) {  // splitmix64 finaliser
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ull;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebull;
  x ^= x >> 31;
  return x;
}

// Parses "tq/<16 hex>/<len>:<partition>/<index>.<generation>/<field>"; false
// when `key` is not exactly what StorageKey would build.
bool ParseStorageKey(const std::string& key, SampleKey* s, std::string* field) {
  const char* p = key.data();
  const char* end = p + key.size();
  auto expect = [&](char c) {
    if (p == end || *p != c) return false;
    ++p;
    return true;
  };
  if (key.rfind("tq/", 0) != 0) return false;
  p += 3;
  if (end - p < 17) return false;
  if (std::from_chars(p, p + 16, s->controller_id, 16).ptr != p + 16) return false;
  p += 16;
  uint64_t len = 0;
  if (!expect('/')) return false;
  auto r = std::from_chars(p, end, len);
  if (r.ec != std::errc() || r.ptr == p) return false;
  p = r.ptr;
  if (!expect(':') || static_cast<uint64_t>(end - p) < len) return false;
  s->partition_id.assign(p, len);
  p += len;
  if (!expect('/')) return false;
  r = std::from_chars(p, end, s->global_index);
  if (r.ec != std::errc() || r.ptr == p) return false;
  p = r.ptr;
  if (!expect('.')) return false;
  r = std::from_chars(p, end, s->generation);
  if (r.ec != std::errc() || r.ptr == p) return false;
  p = r.ptr;
  if (!expect('/')) return false;
  field->assign(p, end);
  return StorageKey(*s, *field) == key;  // canonical form only (no leading zeros, ...)
}

}  // namespace

size_t SimpleStore::GroupHash::operator()(const GroupKey& g) const {
  std::hash<std::string> h;
  return Mix(g.controller_id ^ (h(g.partition_id) * 31) ^ (h(g.field) * 131) ^ (g.raw ? 0x5bd1e995 : 0));
}

size_t SimpleStore::SlotHash::operator()(const SlotKey& s) const {
  return Mix(static_cast<uint64_t>(s.index) * 0x9e3779b97f4a7c15ull + s.generation);
}

SimpleStore::SimpleStore(uint64_t capacity_bytes, std::string name, uint64_t capacity_samples)
    : capacity_(capacity_bytes), name_(std::move(name)), capacity_samples_(capacity_samples) {}

void SimpleStore::Resolve(const std::vector<KeyGroup>& groups, std::vector<GroupKey>* keys,
                          std::vector<Ref>* refs) {
  size_t nkeys = 0, ngroups = 0;
  for (const auto& g : groups) {
    nkeys += g.num_keys();
    ngroups += g.fields.size();
  }
  keys->clear();
  keys->reserve(ngroups);  // refs point into it: no reallocation below
  refs->clear();
  refs->reserve(nkeys);
  for (const auto& g : groups) {
    for (const auto& f : g.fields) {
      keys->push_back(GroupKey{g.controller_id, g.partition_id, f, false});
      const GroupKey* gk = &keys->back();
      for (size_t i = 0; i < g.indexes.size(); ++i) refs->push_back(Ref{gk, SlotKey{g.indexes[i], g.generations[i]}});
    }
  }
}

void SimpleStore::ResolveStrings(const std::vector<std::string>& strings, std::vector<GroupKey>* keys,
                                 std::vector<Ref>* refs) {
  keys->clear();
  keys->reserve(strings.size());
  refs->clear();
  refs->reserve(strings.size());
  SampleKey s;
  std::string field;
  for (const auto& k : strings) {
    if (ParseStorageKey(k, &s, &field)) {
      keys->push_back(GroupKey{s.controller_id, s.partition_id, field, false});
      refs->push_back(Ref{&keys->back(), SlotKey{s.global_index, s.generation}});
    } else {
      keys->push_back(GroupKey{0, k, "", true});
      refs->push_back(Ref{&keys->back(), SlotKey{}});
    }
  }
}

uint64_t SimpleStore::NewSamples(const std::vector<Ref>& refs) const {
  std::unordered_map<GroupKey, std::unordered_set<SlotKey, SlotHash>, GroupHash> fresh;
  const GroupKey* last = nullptr;
  const std::unordered_map<SlotKey, uint32_t, SlotHash>* stored = nullptr;
  std::unordered_set<SlotKey, SlotHash>* added = nullptr;
  uint64_t n = 0;
  for (const Ref& r : refs) {
    if (r.group != last) {
      last = r.group;
      GroupKey sample = SampleGroup(*last);
      auto it = samples_.find(sample);
      stored = it == samples_.end() ? nullptr : &it->second;
      added = &fresh[std::move(sample)];
    }
    if (stored != nullptr && stored->count(r.slot) != 0) continue;
    n += added->insert(r.slot).second ? 1 : 0;
  }
  return n;
}

Status SimpleStore::PutRefs(const std::vector<Ref>& refs, const std::vector<Buffer>& values) {
  std::lock_guard<std::mutex> lock(mu_);
  if (capacity_samples_ > 0) {
    const uint64_t added = NewSamples(refs);
    if (added > 0 && sample_count_ + added > capacity_samples_) {
      return Status::OutOfSpace("storage unit ", name_, " is full: it holds ", sample_count_, " of its ",
                                capacity_samples_, " samples and the put adds ", added,
                                "; clear consumed samples or give the unit more capacity");
    }
  }
  // Pass 1: how many more bytes the put needs (replaced values give theirs back).
  int64_t delta = 0;
  const GroupKey* last = nullptr;
  const Slots* slots = nullptr;
  for (size_t k = 0; k < refs.size(); ++k) {
    delta += static_cast<int64_t>(values[k].size());
    if (refs[k].group != last) {
      last = refs[k].group;
      auto it = table_.find(*last);
      slots = it == table_.end() ? nullptr : &it->second;
    }
    if (slots == nullptr) continue;
    auto it = slots->find(refs[k].slot);
    if (it != slots->end()) delta -= static_cast<int64_t>(it->second.size());
  }
  if (delta > 0 && used_ + static_cast<uint64_t>(delta) > capacity_) {
    return Status::OutOfSpace("storage unit ", name_, " is full: ", used_, " of ", capacity_,
                              " bytes used and the put needs ", delta,
                              " more; clear consumed samples or give the unit more capacity");
  }
  // Pass 2: store.
  last = nullptr;
  Slots* dst = nullptr;
  std::unordered_map<SlotKey, uint32_t, SlotHash>* fields = nullptr;
  for (size_t k = 0; k < refs.size(); ++k) {
    if (refs[k].group != last) {
      last = refs[k].group;
      dst = &table_[*last];
      fields = &samples_[SampleGroup(*last)];
      size_t run = 1;  // keys of this group in a row: reserve once
      while (k + run < refs.size() && refs[k + run].group == last) ++run;
      dst->reserve(dst->size() + run);
    }
    auto [it, inserted] = dst->try_emplace(refs[k].slot, values[k]);
    if (inserted) {
      ++keys_;
      if ((*fields)[refs[k].slot]++ == 0) ++sample_count_;
    } else {
      used_ -= it->second.size();
      it->second = values[k];
    }
    used_ += values[k].size();
  }
  return Status::OK();
}

void SimpleStore::EraseRefs(const std::vector<Ref>& refs) {
  std::lock_guard<std::mutex> lock(mu_);
  const GroupKey* last = nullptr;
  auto git = table_.end();
  auto sit = samples_.end();
  auto drop_empty = [&] {
    if (git != table_.end() && git->second.empty()) table_.erase(git);
    if (sit != samples_.end() && sit->second.empty()) samples_.erase(sit);
  };
  for (size_t k = 0; k < refs.size(); ++k) {
    if (refs[k].group != last) {
      drop_empty();
      last = refs[k].group;
      git = table_.find(*last);
      sit = git == table_.end() ? samples_.end() : samples_.find(SampleGroup(*last));
    }
    if (git == table_.end()) continue;
    auto it = git->second.find(refs[k].slot);
    if (it == git->second.end()) continue;
    used_ -= it->second.size();
    --keys_;
    git->second.erase(it);
    if (sit == samples_.end()) continue;  // cannot happen: a stored value always has its sample counted
    auto f = sit->second.find(refs[k].slot);
    if (f != sit->second.end() && --f->second == 0) {
      sit->second.erase(f);
      --sample_count_;
    }
  }
  drop_empty();
}

Status SimpleStore::Put(const std::vector<KeyGroup>& groups, const std::vector<Buffer>& values) {
  std::vector<GroupKey> keys;
  std::vector<Ref> refs;
  Resolve(groups, &keys, &refs);
  return PutRefs(refs, values);
}

Result<std::vector<Buffer>> SimpleStore::Get(const std::vector<KeyGroup>& groups) const {
  std::vector<Buffer> out;
  size_t nkeys = 0;
  for (const auto& g : groups) nkeys += g.num_keys();
  out.reserve(nkeys);
  std::lock_guard<std::mutex> lock(mu_);
  GroupKey gk;
  for (const auto& g : groups) {
    gk.controller_id = g.controller_id;
    gk.partition_id = g.partition_id;
    for (size_t f = 0; f < g.fields.size(); ++f) {
      gk.field = g.fields[f];
      auto git = table_.find(gk);
      for (size_t i = 0; i < g.indexes.size(); ++i) {
        const Buffer* v = nullptr;
        if (git != table_.end()) {
          auto it = git->second.find(SlotKey{g.indexes[i], g.generations[i]});
          if (it != git->second.end()) v = &it->second;
        }
        if (v == nullptr) {
          return Status::NotFound("key '", g.KeyString(f * g.indexes.size() + i), "' not found in storage unit ",
                                  name_, " (cleared, or never written)");
        }
        out.push_back(*v);
      }
    }
  }
  return out;
}

void SimpleStore::Erase(const std::vector<KeyGroup>& groups) {
  std::vector<GroupKey> keys;
  std::vector<Ref> refs;
  Resolve(groups, &keys, &refs);
  EraseRefs(refs);
}

Status SimpleStore::PutKeys(const std::vector<std::string>& strings, const std::vector<Buffer>& values) {
  std::vector<GroupKey> keys;
  std::vector<Ref> refs;
  ResolveStrings(strings, &keys, &refs);
  return PutRefs(refs, values);
}

std::vector<Buffer> SimpleStore::GetKeys(const std::vector<std::string>& strings, std::vector<bool>* found) const {
  std::vector<GroupKey> keys;
  std::vector<Ref> refs;
  ResolveStrings(strings, &keys, &refs);
  std::vector<Buffer> out(refs.size());
  found->assign(refs.size(), false);
  std::lock_guard<std::mutex> lock(mu_);
  for (size_t k = 0; k < refs.size(); ++k) {
    auto git = table_.find(*refs[k].group);
    if (git == table_.end()) continue;
    auto it = git->second.find(refs[k].slot);
    if (it == git->second.end()) continue;
    out[k] = it->second;
    (*found)[k] = true;
  }
  return out;
}

void SimpleStore::EraseKeys(const std::vector<std::string>& strings) {
  std::vector<GroupKey> keys;
  std::vector<Ref> refs;
  ResolveStrings(strings, &keys, &refs);
  EraseRefs(refs);
}

SimpleStore::Stats SimpleStore::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return Stats{keys_, sample_count_, used_, capacity_, capacity_samples_};
}

}  // namespace tq::internal::simple
