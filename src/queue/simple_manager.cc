// SimpleStorageManager: routes blocks of consecutive global indexes to
// storage units and sends each unit one request per call with its keys as
// key groups and its values packed into a few frames (simple_codec.h).
#include "queue/simple_manager.h"

#include <sys/stat.h>

#include <spdlog/spdlog.h>

#include <future>

#include "common/socket_io.h"
#include "common/wire/rpc.h"
#include "common/wire/stream_rpc.h"
#include "queue/ctl_messages.h"
#include "queue/simple_codec.h"

namespace tq::internal {

using tqds::wire::Message;
using tqds::wire::MsgType;
using tqds::wire::RpcClient;

namespace {

constexpr auto kUnitTimeout = std::chrono::seconds(60);
constexpr auto kPingTimeout = std::chrono::seconds(10);
constexpr auto kProbeTimeout = std::chrono::seconds(2);

struct UnitInfo {
  std::string ipc;  // empty: none announced
  uint64_t instance = 0;
  uint32_t stream_port = 0;  // 0: none announced
};

template <typename Client>
Result<UnitInfo> QueryUnit(Client& c, std::chrono::milliseconds timeout) {
  TQDS_ASSIGN_OR_RETURN(Message rep, c.CallSync(Message(MsgType::kUnitStats, 0), timeout));
  TQDS_ASSIGN_OR_RETURN(auto stats, internal::UnitStatsReply::Decode(rep.body()));
  return UnitInfo{std::move(stats.ipc), stats.instance, stats.stream_port};
}

// An ipc client to the unit behind `tcp` when the unit announces an ipc
// endpoint that exists on this host and answers with the same instance id
// (a path reused by another unit, e.g. in another container, is refused).
std::unique_ptr<RpcClient> SameHostIpc(RpcClient& tcp) {
  auto info = QueryUnit(tcp, kProbeTimeout);
  if (!info.ok() || info->ipc.rfind("ipc://", 0) != 0 || info->instance == 0) return nullptr;
  struct stat st;
  if (::stat(info->ipc.c_str() + 6, &st) != 0 || !S_ISSOCK(st.st_mode)) return nullptr;
  auto ipc = RpcClient::Connect(info->ipc);
  if (!ipc.ok()) return nullptr;
  auto again = QueryUnit(**ipc, kProbeTimeout);
  if (!again.ok() || again->instance != info->instance) return nullptr;
  return ipc.MoveValue();
}

// A stream-channel client to the unit behind `tcp` (registered as `ep`)
// when the unit announces one and this process holds client keys; it must
// answer with the same instance id. Null otherwise: CURVE carries the bytes.
std::unique_ptr<tqds::wire::StreamClient> StreamTo(RpcClient& tcp, const std::string& ep) {
  auto id = tqds::wire::ProcessStreamIdentity();
  if (!id.ok() || *id == nullptr || !(*id)->can_connect) return nullptr;
  auto info = QueryUnit(tcp, kProbeTimeout);
  if (!info.ok() || info->stream_port == 0 || info->instance == 0) return nullptr;
  const std::string host = tqds::net::TcpEndpointHost(ep);
  if (host.empty() || host == "*" || host == "0.0.0.0") return nullptr;
  auto stream = tqds::wire::StreamClient::Create(host + ":" + std::to_string(info->stream_port));
  if (!stream.ok()) return nullptr;
  auto again = QueryUnit(**stream, kProbeTimeout);
  if (!again.ok() || again->instance != info->instance) {
    spdlog::warn("SimpleStorageManager: storage unit {}'s stream channel ({}) does not answer as the unit: {}; "
                 "its payloads go through CURVE",
                 ep, (*stream)->endpoint(), again.ok() ? "another instance" : again.status().ToString());
    return nullptr;
  }
  return stream.MoveValue();
}

// One unit's connection: the stream channel where one is used (all its
// requests go there), else the ZMQ client.
struct UnitLink {
  std::unique_ptr<RpcClient> rpc;
  std::unique_ptr<tqds::wire::StreamClient> stream;
  std::future<Result<Message>> Call(Message m, std::chrono::milliseconds timeout) const {
    return stream ? stream->Call(std::move(m), timeout) : rpc->Call(std::move(m), timeout);
  }
  const std::string& endpoint() const { return stream ? stream->endpoint() : rpc->endpoint(); }
};

class SimpleStorageManager : public StorageManager {
 public:
  static Result<std::unique_ptr<StorageManager>> Create(const StorageContext& ctx) {
    std::vector<std::string> units;
    bool prefer_ipc = true;
    if (ctx.config.is_object() && ctx.config.contains("prefer_ipc")) {
      if (!ctx.config["prefer_ipc"].is_boolean()) return Status::Invalid("SimpleStorageManager: 'prefer_ipc' must be a bool");
      prefer_ipc = ctx.config["prefer_ipc"].get<bool>();
    }
    bool encrypt_payloads = false;
    if (ctx.config.is_object() && ctx.config.contains("encrypt_payloads")) {
      if (!ctx.config["encrypt_payloads"].is_boolean()) {
        return Status::Invalid("SimpleStorageManager: 'encrypt_payloads' must be a bool");
      }
      encrypt_payloads = ctx.config["encrypt_payloads"].get<bool>();
    }
    const bool configured = ctx.config.is_object() && ctx.config.contains("storage_units");
    if (configured) {
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
      TQDS_ASSIGN_OR_RETURN(auto ctl, RpcClient::Connect(ctx.controller_address));
      TQDS_ASSIGN_OR_RETURN(Message rep, ctl->CallSync(Message(MsgType::kCtlGetStorageInfo, 0),
                                                       std::chrono::seconds(10)));
      TQDS_ASSIGN_OR_RETURN(units, internal::DecodeStorageInfo(rep.body()));
    }
    if (units.empty()) {
      return Status::Invalid(
          "SimpleStorageManager: no storage units (start the controller with embedded units, "
          "start `tq storage-unit --controller ...`, or list 'storage_units' in the config)");
    }
    TQDS_ASSIGN_OR_RETURN(auto reached, Reach(units, /*skip_silent=*/!configured));
    auto m = std::make_unique<SimpleStorageManager>();
    for (auto& [ep, c] : reached) {
      if (prefer_ipc && ep.rfind("tcp://", 0) == 0) {
        if (auto ipc = SameHostIpc(*c)) c = std::move(ipc);
      }
      UnitLink link;
      if (!encrypt_payloads && c->endpoint().rfind("tcp://", 0) == 0) link.stream = StreamTo(*c, ep);
      link.rpc = std::move(c);
      m->names_.push_back(ep);
      m->hashes_.push_back(HashName(ep));
      m->units_.push_back(std::move(link));
    }
    return std::unique_ptr<StorageManager>(std::move(m));
  }

  // Connects to and pings every unit at once. Fails at initialisation, not
  // at the first put, when a unit the config lists is down; a unit the
  // controller reported that does not answer (`skip_silent`: it may have
  // died since it registered, and the controller drops it soon) is skipped
  // with a warning naming it, unless none answers.
  static Result<std::vector<std::pair<std::string, std::unique_ptr<RpcClient>>>> Reach(
      const std::vector<std::string>& units, bool skip_silent) {
    std::vector<std::unique_ptr<RpcClient>> clients;
    std::vector<std::future<Result<Message>>> pings;
    for (const auto& ep : units) {
      TQDS_ASSIGN_OR_RETURN(auto c, RpcClient::Connect(ep));
      pings.push_back(c->Call(Message(MsgType::kCtlPing, 0), kPingTimeout));
      clients.push_back(std::move(c));
    }
    std::vector<std::pair<std::string, std::unique_ptr<RpcClient>>> out;
    std::string skipped;
    for (size_t i = 0; i < units.size(); ++i) {
      auto ping = pings[i].get();
      if (ping.ok()) {
        out.emplace_back(units[i], std::move(clients[i]));
        continue;
      }
      if (!skip_silent) return ping.status().WithContext("SimpleStorageManager: storage unit " + units[i]);
      spdlog::warn(
          "SimpleStorageManager: skipping storage unit {} (registered with the controller but it does not "
          "answer: {}); its share of new samples goes to the other units",
          units[i], ping.status().ToString());
      skipped += (skipped.empty() ? "" : ", ") + units[i];
    }
    if (out.empty()) {
      return Status::Unavailable("SimpleStorageManager: none of the storage units the controller lists answers (",
                                 skipped, ")");
    }
    return out;
  }

  std::string name() const override { return "SimpleStorageManager"; }

  Status Put(const std::vector<SampleKey>& samples, const std::vector<std::string>& fields,
             const std::vector<std::vector<Buffer>>& data) override {
    if (data.size() != fields.size()) {
      return Status::Invalid("storage put: ", data.size(), " data columns for ", fields.size(), " fields");
    }
    for (const auto& col : data) {
      if (col.size() != samples.size()) {
        return Status::Invalid("storage put: a data column has ", col.size(), " values for ", samples.size(),
                               " samples");
      }
    }
    std::vector<Plan> plans = PlanKeys(samples, fields);
    std::vector<Message> msgs(units_.size());
    for (size_t u = 0; u < units_.size(); ++u) {
      const Plan& plan = plans[u];
      if (plan.groups.empty()) continue;
      std::vector<uint64_t> sizes;
      sizes.reserve(plan.num_keys);
      simple::FrameBuilder frames(simple::FrameBuilder::MaxFrameFor(units_[u].endpoint()));
      for (size_t g = 0; g < plan.groups.size(); ++g) {
        for (size_t f = 0; f < fields.size(); ++f) {
          for (size_t s : plan.members[g]) {
            const Buffer& b = data[f][s];
            sizes.push_back(b.size());
            frames.Add(b);
          }
        }
      }
      std::vector<uint64_t> aligns;
      msgs[u] = Message(MsgType::kUnitPutGroups, 0);
      msgs[u].payloads() = frames.Finish(&aligns);
      msgs[u].set_body(simple::EncodeGroups(plan.groups, &sizes, &aligns));
    }
    return Broadcast(std::move(msgs), nullptr);
  }

  Result<std::vector<std::vector<Buffer>>> Get(const std::vector<SampleKey>& samples,
                                               const std::vector<std::string>& fields,
                                               const std::vector<std::vector<uint64_t>>& nbytes) override {
    std::vector<Plan> plans = PlanKeys(samples, fields);
    std::vector<Message> msgs(units_.size());
    for (size_t u = 0; u < units_.size(); ++u) {
      if (plans[u].groups.empty()) continue;
      msgs[u] = Message(MsgType::kUnitGetGroups, 0);
      msgs[u].set_body(simple::EncodeGroups(plans[u].groups, nullptr, nullptr));
    }
    std::vector<Message> replies;
    TQDS_RETURN_NOT_OK(Broadcast(std::move(msgs), &replies));
    std::vector<std::vector<Buffer>> out(fields.size(), std::vector<Buffer>(samples.size()));
    for (size_t u = 0; u < units_.size(); ++u) {
      const Plan& plan = plans[u];
      if (plan.groups.empty()) continue;
      auto what = "UnitGetGroups reply from " + names_[u];
      TQDS_ASSIGN_OR_RETURN(auto layout, simple::DecodeSizes(replies[u].body(), what.c_str()));
      if (layout.sizes.size() != plan.num_keys) {
        return Status::Invalid("storage unit ", names_[u], " answered ", layout.sizes.size(), " values for ",
                               plan.num_keys, " keys");
      }
      TQDS_ASSIGN_OR_RETURN(auto values, simple::SplitFrames(replies[u].payloads(), layout.aligns, layout.sizes,
                                                             what.c_str()));
      size_t k = 0;
      for (size_t g = 0; g < plan.groups.size(); ++g) {
        for (size_t f = 0; f < fields.size(); ++f) {
          for (size_t s : plan.members[g]) {
            if (!nbytes.empty() && values[k].size() != nbytes[f][s]) {
              return Status::Internal("key '", StorageKey(samples[s], fields[f]), "' has ", values[k].size(),
                                      " bytes in storage but ", nbytes[f][s], " were recorded");
            }
            out[f][s] = std::move(values[k]);
            ++k;
          }
        }
      }
    }
    return out;
  }

  Status Delete(const std::vector<SampleKey>& samples, const std::vector<std::string>& fields) override {
    std::vector<Plan> plans = PlanKeys(samples, fields);
    std::vector<Message> msgs(units_.size());
    for (size_t u = 0; u < units_.size(); ++u) {
      if (plans[u].groups.empty()) continue;
      msgs[u] = Message(MsgType::kUnitClearGroups, 0);
      msgs[u].set_body(simple::EncodeGroups(plans[u].groups, nullptr, nullptr));
    }
    return Broadcast(std::move(msgs), nullptr);
  }

 private:
  // One unit's share of a call: a key group per (partition, controller) and
  // the positions in `samples` of each group's samples.
  struct Plan {
    std::vector<simple::KeyGroup> groups;
    std::vector<std::vector<size_t>> members;
    size_t num_keys = 0;
  };

  // Rendezvous hashing of the sample's block over the units' endpoints: the
  // unit with the highest score wins (ties: the smaller endpoint). Unlike
  // block % units, losing or skipping a unit moves only that unit's blocks,
  // and the order in which units are listed does not matter.
  size_t UnitOf(uint64_t block) const {
    size_t best = 0;
    uint64_t best_score = 0;
    for (size_t u = 0; u < units_.size(); ++u) {
      const uint64_t score = RouteScore(hashes_[u], block);
      if (u == 0 || score > best_score || (score == best_score && names_[u] < names_[best])) {
        best = u;
        best_score = score;
      }
    }
    return best;
  }

  std::vector<Plan> PlanKeys(const std::vector<SampleKey>& samples, const std::vector<std::string>& fields) const {
    std::vector<Plan> plans(units_.size());
    if (fields.empty()) return plans;
    // Distinct (partition, controller) pairs; usually one.
    std::vector<const SampleKey*> spaces;
    std::vector<std::vector<int>> group_of(units_.size());  // [unit][space] -> group, -1 none
    size_t space = 0;
    uint64_t last_block = UINT64_MAX;
    size_t last_unit = 0;
    for (size_t s = 0; s < samples.size(); ++s) {
      const SampleKey& k = samples[s];
      const uint64_t block = static_cast<uint64_t>(k.global_index) / kSimpleRouteBlock;
      if (block != last_block) {  // consecutive samples mostly share a block
        last_block = block;
        last_unit = UnitOf(block);
      }
      if (spaces.empty() || spaces[space]->controller_id != k.controller_id ||
          spaces[space]->partition_id != k.partition_id) {
        space = 0;
        while (space < spaces.size() && (spaces[space]->controller_id != k.controller_id ||
                                         spaces[space]->partition_id != k.partition_id)) {
          ++space;
        }
        if (space == spaces.size()) spaces.push_back(&k);
      }
      const size_t u = last_unit;
      Plan& plan = plans[u];
      if (group_of[u].size() <= space) group_of[u].resize(space + 1, -1);
      int& g = group_of[u][space];
      if (g < 0) {
        g = static_cast<int>(plan.groups.size());
        simple::KeyGroup kg;
        kg.controller_id = k.controller_id;
        kg.partition_id = k.partition_id;
        kg.fields = fields;
        plan.groups.push_back(std::move(kg));
        plan.members.emplace_back();
      }
      plan.groups[g].indexes.push_back(k.global_index);
      plan.groups[g].generations.push_back(k.generation);
      plan.members[g].push_back(s);
      plan.num_keys += fields.size();
    }
    return plans;
  }

  // Sends msgs[u] to unit u for every unit with a request, concurrently, and
  // waits for all. The first failure wins, named after its unit.
  Status Broadcast(std::vector<Message> msgs, std::vector<Message>* replies) {
    std::vector<std::future<Result<Message>>> futures(units_.size());
    for (size_t u = 0; u < units_.size(); ++u) {
      if (msgs[u].type() == MsgType::kInvalid) continue;
      futures[u] = units_[u].Call(std::move(msgs[u]), kUnitTimeout);
    }
    Status first_error;
    if (replies) replies->resize(units_.size());
    for (size_t u = 0; u < units_.size(); ++u) {
      if (!futures[u].valid()) continue;
      auto rep = futures[u].get();
      if (!rep.ok()) {
        if (first_error.ok()) first_error = rep.status().WithContext("storage unit " + names_[u]);
        continue;
      }
      if (replies) (*replies)[u] = rep.MoveValue();
    }
    return first_error;
  }

  // Constant after Create(); RpcClient and StreamClient are thread-safe.
  std::vector<std::string> names_;  // the units' registered endpoints (for messages)
  std::vector<uint64_t> hashes_;    // HashName of names_ (routing)
  std::vector<UnitLink> units_;  // ipc for same-host units, else the stream channel or as registered
};

}  // namespace

Result<std::unique_ptr<StorageManager>> CreateSimpleStorageManager(const StorageContext& context) {
  return SimpleStorageManager::Create(context);
}

}  // namespace tq::internal
