// Storage manager registry and storage keys. The simple (embedded) backend
// lives in simple_manager.cc.
#include <charconv>
#include <cstring>
#include <map>
#include <mutex>

#include "queue/simple_manager.h"
#include "queue/yuanrong_storage_manager.h"
#include "tq/storage.h"

namespace tq {

namespace {
// Writes v as 16 lower-case hex digits at p; returns the end.
char* Hex16(char* p, uint64_t v) {
  static constexpr char kHex[] = "0123456789abcdef";
  for (int shift = 60; shift >= 0; shift -= 4) *p++ = kHex[(v >> shift) & 0xf];
  return p;
}
}  // namespace

std::string StorageKey(const SampleKey& s, const std::string& field) {
  // tq/<controller id, 16 hex>/<len>:<partition>/<global index>.<generation>/<field>,
  // written with one allocation (a put names every field of every sample).
  std::string k(3 + 16 + 1 + 20 + 1 + s.partition_id.size() + 1 + 20 + 1 + 20 + 1 + field.size(), '\0');
  char* p = k.data();
  char* const end = p + k.size();
  std::memcpy(p, "tq/", 3);
  p += 3;
  p = Hex16(p, s.controller_id);
  *p++ = '/';
  p = std::to_chars(p, end, s.partition_id.size()).ptr;
  *p++ = ':';
  std::memcpy(p, s.partition_id.data(), s.partition_id.size());
  p += s.partition_id.size();
  *p++ = '/';
  p = std::to_chars(p, end, s.global_index).ptr;
  *p++ = '.';
  p = std::to_chars(p, end, s.generation).ptr;
  *p++ = '/';
  std::memcpy(p, field.data(), field.size());
  p += field.size();
  k.resize(static_cast<size_t>(p - k.data()));
  return k;
}

std::string PackKey(uint64_t controller_id, uint64_t pack) {
  // Sample keys go on with "<len>:" after the controller id, so no pack key
  // is ever a sample key.
  std::string k = "tq/0123456789abcdef/pack/0123456789abcdef";
  Hex16(k.data() + 3, controller_id);
  Hex16(k.data() + 25, pack);
  return k;
}

namespace {

std::mutex& RegistryMutex() {
  static std::mutex mu;
  return mu;
}
std::map<std::string, StorageManagerFactory>& Registry() {
  static std::map<std::string, StorageManagerFactory> r;
  return r;
}

void RegisterBuiltins() {
  static std::once_flag once;
  std::call_once(once, [] {
    Registry()["SimpleStorageManager"] = internal::CreateSimpleStorageManager;
    // Upstream TransferQueue's name for the same backend.
    Registry()["AsyncSimpleStorageManager"] = internal::CreateSimpleStorageManager;
#ifdef TQDS_WITH_DATASYSTEM
    Registry()["YuanrongStorageManager"] = internal::CreateYuanrongStorageManager;
#endif
  });
}

}  // namespace

void RegisterStorageManager(const std::string& name, StorageManagerFactory factory) {
  std::lock_guard<std::mutex> lock(RegistryMutex());
  RegisterBuiltins();
  Registry()[name] = std::move(factory);
}

std::vector<std::string> RegisteredStorageManagers() {
  std::lock_guard<std::mutex> lock(RegistryMutex());
  RegisterBuiltins();
  std::vector<std::string> out;
  for (const auto& [n, f] : Registry()) out.push_back(n);
  return out;
}

Result<std::unique_ptr<StorageManager>> CreateStorageManager(const std::string& name,
                                                             const StorageContext& context) {
  StorageManagerFactory factory;
  {
    std::lock_guard<std::mutex> lock(RegistryMutex());
    RegisterBuiltins();
    auto it = Registry().find(name);
    if (it != Registry().end()) factory = it->second;
  }
  if (!factory) {
    std::string known;
    for (const auto& n : RegisteredStorageManagers()) known += (known.empty() ? "" : ", ") + n;
    return Status::Invalid("unknown storage manager_type '", name, "' (known: ", known, ")");
  }
  return factory(context);
}

}  // namespace tq
