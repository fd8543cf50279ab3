// Storage manager registry and storage keys. The simple (embedded) backend
// lives in simple_manager.cc.
#include <cstdio>
#include <map>
#include <mutex>

#include "queue/simple_manager.h"
#include "queue/yuanrong_storage_manager.h"
#include "tq/storage.h"

namespace tq {

std::string StorageKey(const SampleKey& s, const std::string& field) {
  std::string k;
  k.reserve(24 + s.partition_id.size() + field.size());
  char id[20];
  std::snprintf(id, sizeof(id), "%016llx", static_cast<unsigned long long>(s.controller_id));
  k += "tq/";
  k += id;
  k += '/';
  k += std::to_string(s.partition_id.size());
  k += ':';
  k += s.partition_id;
  k += '/';
  k += std::to_string(s.global_index);
  k += '.';
  k += std::to_string(s.generation);
  k += '/';
  k += field;
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
