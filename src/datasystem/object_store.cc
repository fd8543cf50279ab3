// Object table, pins, spill and expiry.
#include "datasystem/object_store.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

namespace ds {
namespace {

int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

std::string Mib(uint64_t bytes) {
  char b[32];
  std::snprintf(b, sizeof(b), "%.1f MiB", static_cast<double>(bytes) / (1 << 20));
  return b;
}

}  // namespace

ObjectStore::ObjectStore(StoreOptions options, uint8_t* base, std::unique_ptr<Allocator> allocator,
                         std::unique_ptr<EvictionPolicy> policy, SpillStore spill)
    : options_(std::move(options)),
      base_(base),
      capacity_(allocator->capacity()),
      allocator_(std::move(allocator)),
      policy_(std::move(policy)),
      spill_(std::move(spill)) {}

bool ObjectStore::Expired(const Object& o, int64_t now_ms) const {
  return o.expire_at_ms != 0 && o.expire_at_ms <= now_ms;
}

ObjectStore::Table::iterator ObjectStore::FindLive(const std::string& key, int64_t now_ms) {
  auto it = table_.find(key);
  if (it != table_.end() && Expired(it->second, now_ms)) {
    RemoveEntry(it);
    return table_.end();
  }
  return it;
}

void ObjectStore::FreeBlock(uint64_t offset) {
  auto p = pins_.find(offset);
  if (p != pins_.end()) {
    p->second.orphaned = true;
    return;
  }
  allocator_->Free(offset);
}

void ObjectStore::RemoveEntry(Table::iterator it) {
  Object& o = it->second;
  if (o.resident) {
    policy_->Remove(o.id);
    FreeBlock(o.offset);
  } else {
    spill_.Remove(o.id, o.size);
  }
  by_id_.erase(o.id);
  table_.erase(it);
}

void ObjectStore::Pin(Session& s, uint64_t offset) {
  ++pins_[offset].refs;
  ++s.pins[offset];
}

Status ObjectStore::OutOfSpaceError(uint64_t size) const {
  uint64_t pinned = 0;
  for (const auto& [off, pin] : pins_) (void)off, pinned += pin.refs > 0 ? 1 : 0;
  std::string spill = spill_.enabled() ? spill_.Describe()
                                       : std::string("no spill directory is configured");
  return Status::OutOfSpace(
      "worker ", options_.name, " is out of space for an object of ", size,
      " bytes: shared memory holds ", Mib(allocator_->used()), " of ", Mib(capacity_), " (",
      pending_creates_, " unsealed writes, ", pinned,
      " blocks pinned by readers; largest free block ", Mib(allocator_->largest_free_block()),
      "), ", spill,
      ". Delete keys, release read buffers, write evictable objects, or restart the worker with "
      "a larger --shared_memory_size_mb / --spill_size_limit_mb (or a --spill_directory).");
}

bool ObjectStore::SpillOne() {
  auto victim = policy_->PickVictim([this](ObjectId id) {
    auto it = by_id_.find(id);
    if (it == by_id_.end()) return false;
    const Object& o = it->second->second;
    if (!o.resident || pins_.count(o.offset) != 0) return false;
    return o.evictable || spill_.CanHold(o.size);
  });
  if (!victim) return false;
  Entry* e = by_id_[*victim];
  Object& o = e->second;
  if (o.evictable) {
    SPDLOG_DEBUG("evicting '{}' ({} bytes)", e->first, o.size);
    ++evictions_;
    RemoveEntry(table_.find(e->first));
    return true;
  }
  Status st = spill_.Write(o.id, e->first, o.version, base_ + o.offset, o.size);
  if (!st.ok()) {
    // A full disk is logged by the spill store, at most once per 10 s.
    if (!st.IsOutOfSpace()) spdlog::error("spill of '{}' failed: {}", e->first, st.ToString());
    return false;
  }
  ++spills_;
  policy_->Remove(o.id);
  allocator_->Free(o.offset);
  o.resident = false;
  o.offset = 0;
  return true;
}

Status ObjectStore::MakeRoom(uint64_t size, uint64_t* offset) {
  if (size > capacity_) {
    return Status::OutOfSpace("an object of ", size, " bytes is larger than the shared memory of "
                              "worker ", options_.name, " (", Mib(capacity_),
                              "); restart it with a larger --shared_memory_size_mb");
  }
  const auto high = static_cast<uint64_t>(options_.high_watermark * static_cast<double>(capacity_));
  while (allocator_->used() + size > high) {
    if (!SpillOne()) break;
  }
  while (true) {
    auto r = allocator_->Allocate(size);
    if (r.ok()) {
      *offset = *r;
      return Status::OK();
    }
    if (!SpillOne()) return OutOfSpaceError(size);
  }
}

Status ObjectStore::Reload(const std::string& key, Object& o) {
  uint64_t offset = 0;
  Status st = MakeRoom(o.size, &offset);
  if (st.ok()) {
    st = spill_.Read(o.id, key, base_ + offset, o.size);
    if (!st.ok()) {
      allocator_->Free(offset);
      return st;
    }
    spill_.Remove(o.id, o.size);
  } else if (st.IsOutOfSpace()) {
    // Memory and disk are both full: swap through the heap. Taking this
    // object off the disk frees room to spill a cold resident one.
    std::unique_ptr<uint8_t[]> tmp(new (std::nothrow) uint8_t[o.size == 0 ? 1 : o.size]);
    if (!tmp) return st;
    TQDS_RETURN_NOT_OK(spill_.Read(o.id, key, tmp.get(), o.size));
    spill_.Remove(o.id, o.size);
    Status room = MakeRoom(o.size, &offset);
    if (!room.ok()) {
      TQDS_RETURN_NOT_OK(spill_.Write(o.id, key, o.version, tmp.get(), o.size));  // put it back
      return st;
    }
    if (o.size > 0) std::memcpy(base_ + offset, tmp.get(), o.size);
  } else {
    return st;
  }
  o.offset = offset;
  o.resident = true;
  return Status::OK();
}

Result<std::vector<CreateSlot>> ObjectStore::Create(Session& session, std::vector<std::string> keys,
                                                    const std::vector<uint64_t>& sizes,
                                                    const WriteOptions& opts) {
  std::vector<CreateSlot> slots(keys.size());
  std::lock_guard<std::mutex> lock(mu_);
  const int64_t now = NowMs();
  Status failure;
  size_t i = 0;
  if (opts.all_or_nothing) {  // one existing key refuses them all, before anything is allocated
    bool refused = false;
    for (size_t k = 0; k < keys.size(); ++k) {
      const bool exists = FindLive(keys[k], now) != table_.end();
      slots[k].code = exists ? StatusCode::kAlreadyExists : StatusCode::kCancelled;
      refused = refused || exists;
    }
    if (refused) return slots;
    for (auto& s : slots) s.code = StatusCode::kOk;
  }
  for (; i < keys.size(); ++i) {
    if (opts.if_absent && FindLive(keys[i], now) != table_.end()) {
      slots[i].code = StatusCode::kAlreadyExists;
      continue;
    }
    failure = MakeRoom(sizes[i], &slots[i].offset);
    if (!failure.ok()) break;
  }
  if (!failure.ok()) {  // all or nothing
    for (size_t j = 0; j < i; ++j) {
      if (slots[j].code == StatusCode::kOk) allocator_->Free(slots[j].offset);
    }
    return failure;
  }
  session.pending.reserve(session.pending.size() + keys.size());
  for (i = 0; i < keys.size(); ++i) {
    if (slots[i].code != StatusCode::kOk) continue;
    session.pending.emplace(slots[i].offset, Session::Pending{std::move(keys[i]), sizes[i], opts});
    ++pending_creates_;
  }
  return slots;
}

std::vector<StatusCode> ObjectStore::Seal(Session& session, const std::vector<uint64_t>& offsets,
                                          std::vector<std::string>* sealed) {
  std::vector<StatusCode> codes(offsets.size(), StatusCode::kOk);
  {
    std::lock_guard<std::mutex> lock(mu_);
    const int64_t now = NowMs();
    // Versions are hybrid timestamps (wall-clock ns, strictly increasing
    // here), so the key owners order writes of one key on different workers
    // the same way whatever order their announcements arrive in.
    const auto wall = static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                                std::chrono::system_clock::now().time_since_epoch())
                                                .count());
    table_.reserve(table_.size() + offsets.size());
    // All-or-nothing writes (msettx): one key that exists by now refuses
    // every all-or-nothing write of this seal, under the same lock.
    bool refuse_all_or_nothing = false;
    for (uint64_t offset : offsets) {
      auto p = session.pending.find(offset);
      if (p != session.pending.end() && p->second.opts.all_or_nothing &&
          FindLive(p->second.key, now) != table_.end()) {
        refuse_all_or_nothing = true;
        break;
      }
    }
    for (size_t i = 0; i < offsets.size(); ++i) {
      auto p = session.pending.find(offsets[i]);
      if (p == session.pending.end()) {
        codes[i] = StatusCode::kNotFound;
        continue;
      }
      if (refuse_all_or_nothing && p->second.opts.all_or_nothing) {
        codes[i] = FindLive(p->second.key, now) != table_.end() ? StatusCode::kAlreadyExists
                                                                : StatusCode::kCancelled;
        allocator_->Free(p->first);
        session.pending.erase(p);
        --pending_creates_;
        continue;
      }
      const uint64_t offset = p->first;
      Session::Pending pending = std::move(p->second);
      session.pending.erase(p);
      --pending_creates_;
      auto existing = FindLive(pending.key, now);
      if (existing != table_.end()) {
        if (pending.opts.if_absent) {
          allocator_->Free(offset);
          codes[i] = StatusCode::kAlreadyExists;
          continue;
        }
        RemoveEntry(existing);
      }
      Object o;
      o.id = next_id_++;
      last_version_ = std::max(wall, last_version_ + 1);
      o.offset = offset;
      o.size = pending.size;
      o.version = last_version_;
      o.evictable = pending.opts.evictable;
      o.cached = pending.opts.cached;
      if (pending.opts.ttl_ms > 0) {
        o.expire_at_ms = now + static_cast<int64_t>(pending.opts.ttl_ms);
        expiry_.emplace(o.expire_at_ms, o.id);
      }
      if (sealed != nullptr) sealed->push_back(pending.key);
      auto [it, ok] = table_.emplace(std::move(pending.key), o);
      (void)ok;
      by_id_[o.id] = &*it;
      policy_->Add(o.id);
    }
  }
  sealed_cv_.notify_all();
  return codes;
}

void ObjectStore::SetPendingTtl(Session& session, uint64_t offset, uint64_t ttl_ms) {
  std::lock_guard<std::mutex> lock(mu_);
  auto p = session.pending.find(offset);
  if (p != session.pending.end()) p->second.opts.ttl_ms = ttl_ms;
}

void ObjectStore::Abort(Session& session, const std::vector<uint64_t>& offsets) {
  std::lock_guard<std::mutex> lock(mu_);
  for (uint64_t off : offsets) {
    auto p = session.pending.find(off);
    if (p == session.pending.end()) continue;
    allocator_->Free(off);
    session.pending.erase(p);
    --pending_creates_;
  }
}

std::vector<Located> ObjectStore::PinPrivate(Session& session, const std::vector<uint64_t>& offsets) {
  std::vector<Located> out(offsets.size());
  std::lock_guard<std::mutex> lock(mu_);
  for (size_t i = 0; i < offsets.size(); ++i) {
    auto p = session.pending.find(offsets[i]);
    if (p == session.pending.end()) continue;
    out[i] = Located{StatusCode::kOk, offsets[i], p->second.size, 0};
    session.pending.erase(p);
    --pending_creates_;
    Pin(session, offsets[i]);
    pins_[offsets[i]].orphaned = true;  // no table entry: freed at the last release
  }
  return out;
}

Result<std::vector<Located>> ObjectStore::Get(Session& session,
                                              const std::vector<std::string>& keys,
                                              std::chrono::milliseconds wait) {
  std::vector<Located> out(keys.size());
  const auto deadline = std::chrono::steady_clock::now() + wait;
  std::unique_lock<std::mutex> lock(mu_);
  while (true) {
    const int64_t now = NowMs();
    size_t missing = 0;
    for (size_t i = 0; i < keys.size(); ++i) {
      if (out[i].code == StatusCode::kOk) continue;
      auto it = FindLive(keys[i], now);
      if (it == table_.end()) {
        ++missing;
        continue;
      }
      Object& o = it->second;
      if (!o.resident) {  // reload from the spill tier
        Status st = Reload(it->first, o);
        if (!st.ok()) {
          for (size_t j = 0; j < out.size(); ++j) {  // undo this call's pins
            if (out[j].code == StatusCode::kOk) Unpin(session, out[j].offset);
          }
          return st.WithContext("reloading '" + it->first + "' from the spill directory");
        }
        ++reloads_;
        policy_->Add(o.id);
      } else {
        policy_->Touch(o.id);
      }
      Pin(session, o.offset);
      const uint64_t ttl =
          o.expire_at_ms == 0 ? 0 : static_cast<uint64_t>(std::max<int64_t>(1, o.expire_at_ms - now));
      out[i] = Located{StatusCode::kOk, o.offset, o.size, o.version, ttl};
    }
    if (missing == 0 || wait.count() <= 0) break;
    if (shutdown_) return Status::Cancelled("worker is shutting down");
    if (sealed_cv_.wait_until(lock, deadline) == std::cv_status::timeout) {
      // One last look after the deadline happens in the next round.
      wait = std::chrono::milliseconds(0);
    }
  }
  return out;
}

void ObjectStore::Release(Session& session, const std::vector<uint64_t>& offsets) {
  std::lock_guard<std::mutex> lock(mu_);
  for (uint64_t off : offsets) Unpin(session, off);
}

void ObjectStore::Unpin(Session& session, uint64_t off) {
  auto s = session.pins.find(off);
  if (s == session.pins.end()) return;  // not this session's pin: ignore (hostile or stale)
  if (--s->second == 0) session.pins.erase(s);
  auto p = pins_.find(off);
  if (p == pins_.end()) return;
  if (--p->second.refs == 0) {
    bool orphan = p->second.orphaned;
    pins_.erase(p);
    if (orphan) allocator_->Free(off);
  }
}

std::vector<bool> ObjectStore::Delete(const std::vector<std::string>& keys) {
  std::vector<bool> deleted(keys.size());
  std::lock_guard<std::mutex> lock(mu_);
  const int64_t now = NowMs();
  for (size_t i = 0; i < keys.size(); ++i) {
    auto it = FindLive(keys[i], now);
    if (it == table_.end()) continue;
    RemoveEntry(it);
    deleted[i] = true;
  }
  return deleted;
}

size_t ObjectStore::DeleteVersions(const std::vector<std::string>& keys,
                                   const std::vector<uint64_t>& versions) {
  std::lock_guard<std::mutex> lock(mu_);
  const int64_t now = NowMs();
  size_t n = 0;
  for (size_t i = 0; i < keys.size(); ++i) {
    auto it = FindLive(keys[i], now);
    if (it == table_.end()) continue;
    if (i < versions.size() && versions[i] != 0 && it->second.version != versions[i]) continue;
    RemoveEntry(it);
    ++n;
  }
  return n;
}

std::vector<bool> ObjectStore::Exist(const std::vector<std::string>& keys) {
  std::vector<bool> out(keys.size());
  std::lock_guard<std::mutex> lock(mu_);
  const int64_t now = NowMs();
  for (size_t i = 0; i < keys.size(); ++i) out[i] = FindLive(keys[i], now) != table_.end();
  return out;
}

std::vector<bool> ObjectStore::Expire(const std::vector<std::string>& keys, uint64_t ttl_ms) {
  std::vector<bool> out(keys.size());
  std::lock_guard<std::mutex> lock(mu_);
  const int64_t now = NowMs();
  for (size_t i = 0; i < keys.size(); ++i) {
    auto it = FindLive(keys[i], now);
    if (it == table_.end()) continue;
    out[i] = true;
    if (ttl_ms == 0) continue;
    Object& o = it->second;
    // The entry of an earlier expiry stays queued; ExpireDue skips it
    // (its time no longer matches the object's).
    o.expire_at_ms = now + static_cast<int64_t>(std::min<uint64_t>(ttl_ms, INT64_MAX / 2));
    expiry_.emplace(o.expire_at_ms, o.id);
  }
  return out;
}

std::vector<ObjectInfo> ObjectStore::Describe(const std::vector<std::string>& keys) {
  std::vector<ObjectInfo> out(keys.size());
  std::lock_guard<std::mutex> lock(mu_);
  const int64_t now = NowMs();
  for (size_t i = 0; i < keys.size(); ++i) {
    out[i].key = keys[i];
    auto it = FindLive(keys[i], now);
    if (it == table_.end()) continue;
    out[i].code = StatusCode::kOk;
    out[i].size = it->second.size;
    out[i].version = it->second.version;
    out[i].cached = it->second.cached;
  }
  return out;
}

std::vector<ObjectInfo> ObjectStore::ListPrimaries() {
  std::vector<ObjectInfo> out;
  std::lock_guard<std::mutex> lock(mu_);
  const int64_t now = NowMs();
  out.reserve(table_.size());
  for (const auto& [key, o] : table_) {
    if (o.cached || Expired(o, now)) continue;
    out.push_back(ObjectInfo{key, StatusCode::kOk, o.size, o.version, false});
  }
  return out;
}

void ObjectStore::CloseSession(Session& session) {
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& [offset, p] : session.pending) {
    (void)p;
    allocator_->Free(offset);
    --pending_creates_;
  }
  session.pending.clear();
  for (auto& [off, count] : session.pins) {
    auto p = pins_.find(off);
    if (p == pins_.end()) continue;
    p->second.refs = p->second.refs > count ? p->second.refs - count : 0;
    if (p->second.refs == 0) {
      bool orphan = p->second.orphaned;
      pins_.erase(p);
      if (orphan) allocator_->Free(off);
    }
  }
  session.pins.clear();
}

void ObjectStore::ExpireDue() {
  std::lock_guard<std::mutex> lock(mu_);
  const int64_t now = NowMs();
  while (!expiry_.empty() && expiry_.top().first <= now) {
    auto [at, id] = expiry_.top();
    expiry_.pop();
    auto e = by_id_.find(id);
    if (e == by_id_.end() || e->second->second.expire_at_ms != at) continue;
    RemoveEntry(table_.find(e->second->first));
  }
}

void ObjectStore::Shutdown() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    shutdown_ = true;
  }
  sealed_cv_.notify_all();
}

void ObjectStore::ClearSpill() {
  std::lock_guard<std::mutex> lock(mu_);
  spill_.Clear();
}

StoreStats ObjectStore::Stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  StoreStats s;
  s.capacity = capacity_;
  s.used = allocator_->used();
  s.pinned_blocks = pins_.size();
  s.pending_creates = pending_creates_;
  s.objects = table_.size();
  s.resident_objects = policy_->size();
  s.spilled_objects = table_.size() - policy_->size();
  s.spill_used = spill_.used();
  s.spill_limit = spill_.limit();
  s.spills = spills_;
  s.reloads = reloads_;
  s.evictions = evictions_;
  return s;
}

}  // namespace ds
