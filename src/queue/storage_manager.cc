// Storage manager registry, storage keys, and the simple (embedded) backend
// that spreads samples over SimpleStorageUnits.
#include <cstdio>
#include <map>
#include <mutex>

#include "common/wire/rpc.h"
#include "queue/protocol.h"
#include "queue/yuanrong_storage_manager.h"
#include "tq/storage.h"

namespace tq {

using tqds::wire::Message;
using tqds::wire::MsgType;

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

// Stable across processes: every client must route a sample to the same unit.
uint64_t Fnv1a(const std::string& s, int64_t index) {
  uint64_t h = 1469598103934665603ull;
  auto mix = [&](const void* p, size_t n) {
    const auto* b = static_cast<const uint8_t*>(p);
    for (size_t i = 0; i < n; ++i) h = (h ^ b[i]) * 1099511628211ull;
  };
  mix(s.data(), s.size());
  mix(&index, sizeof(index));
  return h;
}

constexpr auto kUnitTimeout = std::chrono::seconds(60);

class SimpleStorageManager : public StorageManager {
 public:
  static Result<std::unique_ptr<StorageManager>> Create(const StorageContext& ctx) {
    std::vector<std::string> units;
    if (ctx.config.is_object() && ctx.config.contains("storage_units")) {
      const auto& u = ctx.config["storage_units"];
      if (!u.is_array()) return Status::Invalid("SimpleStorageManager: 'storage_units' must be a list of endpoints");
      for (const auto& e : u) {
        if (!e.is_string()) return Status::Invalid("SimpleStorageManager: 'storage_units' entries must be strings");
        units.push_back(e.get<std::string>());
      }
    } else {
      if (ctx.controller_address.empty()) {
        return Status::Invalid("SimpleStorageManager: no 'storage_units' in config and no controller to ask");
      }
      TQDS_ASSIGN_OR_RETURN(auto ctl, tqds::wire::RpcClient::Connect(ctx.controller_address));
      TQDS_ASSIGN_OR_RETURN(Message rep, ctl->CallSync(Message(MsgType::kCtlGetStorageInfo, 0),
                                                       std::chrono::seconds(10)));
      TQDS_ASSIGN_OR_RETURN(auto rd, tqds::wire::MapReader::Of(rep.body(), "StorageInfo"));
      TQDS_ASSIGN_OR_RETURN(units, rd.Get<std::vector<std::string>>("units"));
    }
    if (units.empty()) {
      return Status::Invalid(
          "SimpleStorageManager: no storage units (start the controller with embedded units, "
          "start `tq storage-unit --controller ...`, or list 'storage_units' in the config)");
    }
    auto m = std::make_unique<SimpleStorageManager>();
    for (const auto& ep : units) {
      TQDS_ASSIGN_OR_RETURN(auto c, tqds::wire::RpcClient::Connect(ep));
      // Fail at initialisation, not at the first put, when a unit is down.
      auto ping = c->CallSync(Message(MsgType::kCtlPing, 0), std::chrono::seconds(10));
      if (!ping.ok()) return ping.status().WithContext("SimpleStorageManager: storage unit " + ep);
      m->units_.push_back(std::move(c));
    }
    return std::unique_ptr<StorageManager>(std::move(m));
  }

  std::string name() const override { return "SimpleStorageManager"; }

  Status Put(const std::vector<SampleKey>& samples, const std::vector<std::string>& fields,
             const std::vector<std::vector<Buffer>>& data) override {
    std::vector<std::vector<std::string>> keys(units_.size());
    std::vector<Message> msgs(units_.size());
    for (size_t s = 0; s < samples.size(); ++s) {
      size_t u = UnitOf(samples[s]);
      for (size_t f = 0; f < fields.size(); ++f) {
        keys[u].push_back(StorageKey(samples[s], fields[f]));
        msgs[u].payloads().push_back(data[f][s]);
      }
    }
    return Broadcast(MsgType::kUnitPut, keys, std::move(msgs), nullptr);
  }

  Result<std::vector<std::vector<Buffer>>> Get(const std::vector<SampleKey>& samples,
                                               const std::vector<std::string>& fields,
                                               const std::vector<std::vector<uint64_t>>& nbytes) override {
    std::vector<std::vector<std::string>> keys(units_.size());
    std::vector<std::vector<std::pair<size_t, size_t>>> where(units_.size());
    for (size_t s = 0; s < samples.size(); ++s) {
      size_t u = UnitOf(samples[s]);
      for (size_t f = 0; f < fields.size(); ++f) {
        keys[u].push_back(StorageKey(samples[s], fields[f]));
        where[u].emplace_back(f, s);
      }
    }
    std::vector<Message> replies;
    TQDS_RETURN_NOT_OK(Broadcast(MsgType::kUnitGet, keys, std::vector<Message>(units_.size()), &replies));
    std::vector<std::vector<Buffer>> out(fields.size(), std::vector<Buffer>(samples.size()));
    for (size_t u = 0; u < units_.size(); ++u) {
      if (keys[u].empty()) continue;
      const Message& rep = replies[u];
      TQDS_ASSIGN_OR_RETURN(auto rd, tqds::wire::MapReader::Of(rep.body(), "UnitGet reply"));
      TQDS_ASSIGN_OR_RETURN(auto found, rd.Get<std::vector<bool>>("found"));
      if (found.size() != keys[u].size() || rep.payloads().size() != keys[u].size()) {
        return Status::Invalid("storage unit ", units_[u]->endpoint(), " answered ", found.size(),
                               " entries for ", keys[u].size(), " keys");
      }
      for (size_t i = 0; i < keys[u].size(); ++i) {
        auto [f, s] = where[u][i];
        if (!found[i]) {
          return Status::NotFound("key '", keys[u][i], "' not found in storage unit ",
                                  units_[u]->endpoint(), " (cleared, or never written)");
        }
        if (!nbytes.empty() && rep.payloads()[i].size() != nbytes[f][s]) {
          return Status::Internal("key '", keys[u][i], "' has ", rep.payloads()[i].size(),
                                  " bytes in storage but ", nbytes[f][s], " were recorded");
        }
        out[f][s] = rep.payloads()[i];
      }
    }
    return out;
  }

  Status Delete(const std::vector<SampleKey>& samples, const std::vector<std::string>& fields) override {
    std::vector<std::vector<std::string>> keys(units_.size());
    for (const auto& s : samples) {
      size_t u = UnitOf(s);
      for (const auto& f : fields) keys[u].push_back(StorageKey(s, f));
    }
    return Broadcast(MsgType::kUnitClear, keys, std::vector<Message>(units_.size()), nullptr);
  }

 private:
  size_t UnitOf(const SampleKey& s) const { return Fnv1a(s.partition_id, s.global_index) % units_.size(); }

  // Sends one request per unit that has keys, concurrently, and waits for all.
  Status Broadcast(MsgType type, const std::vector<std::vector<std::string>>& keys,
                   std::vector<Message> msgs, std::vector<Message>* replies) {
    std::vector<std::future<Result<Message>>> futures(units_.size());
    for (size_t u = 0; u < units_.size(); ++u) {
      if (keys[u].empty()) continue;
      Message m(type, 0);
      m.set_body(internal::EncodeKeys(keys[u]));
      m.payloads() = std::move(msgs[u].payloads());
      futures[u] = units_[u]->Call(std::move(m), kUnitTimeout);
    }
    Status first_error;
    if (replies) replies->resize(units_.size());
    for (size_t u = 0; u < units_.size(); ++u) {
      if (!futures[u].valid()) continue;
      auto rep = futures[u].get();
      if (!rep.ok()) {
        if (first_error.ok()) first_error = rep.status().WithContext("storage unit " + units_[u]->endpoint());
        continue;
      }
      if (replies) (*replies)[u] = rep.MoveValue();
    }
    return first_error;
  }

  std::vector<std::unique_ptr<tqds::wire::RpcClient>> units_;
};

void RegisterBuiltins() {
  static std::once_flag once;
  std::call_once(once, [] {
    Registry()["SimpleStorageManager"] = SimpleStorageManager::Create;
    // Upstream TransferQueue's name for the same backend.
    Registry()["AsyncSimpleStorageManager"] = SimpleStorageManager::Create;
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
