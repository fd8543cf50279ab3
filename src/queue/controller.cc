// The controller server: decodes requests, applies them to ControllerState on
// the server thread, parks fetches that must wait and answers them when data
// arrives or their deadline passes.
#include "tq/controller.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <list>
#include <mutex>
#include <random>

#include "common/wire/rpc.h"
#include "queue/kv_protocol.h"
#include "queue/protocol.h"
#include "queue/sampler.h"
#include "queue/unit_registry.h"
#include "tq/storage_unit.h"

namespace tq {

using tqds::Result;
using tqds::Status;
using tqds::wire::Clock;
using tqds::wire::MapReader;
using tqds::wire::Message;
using tqds::wire::MsgType;
using tqds::wire::PackBody;
using tqds::wire::Responder;
using internal::Packer;

Status ControllerOptions::Validate() const {
  if (address.empty()) return Status::Invalid("controller address must not be empty");
  if (embedded_storage_units < 0 || embedded_storage_units > 64) {
    return Status::Invalid("embedded_storage_units must be in [0, 64], got ", embedded_storage_units);
  }
  if (embedded_storage_units > 0 && storage_unit_capacity_bytes == 0) {
    return Status::Invalid("storage_unit_capacity_bytes must be > 0");
  }
  if (pre_alloc_samples < 0 || pre_alloc_samples > (int64_t{1} << 24)) {
    return Status::Invalid("pre_alloc_samples must be in [0, 2^24], got ", pre_alloc_samples);
  }
  constexpr int64_t kMaxLimit = int64_t{1} << 40;
  if (max_allocate_per_request < 1 || max_allocate_per_request > kMaxLimit) {
    return Status::Invalid("max_allocate_per_request must be in [1, 2^40], got ", max_allocate_per_request);
  }
  if (max_samples_per_partition < 1 || max_samples_per_partition > kMaxLimit) {
    return Status::Invalid("max_samples_per_partition must be in [1, 2^40], got ", max_samples_per_partition);
  }
  if (max_samples_total < max_samples_per_partition || max_samples_total > kMaxLimit) {
    return Status::Invalid("max_samples_total must be in [max_samples_per_partition (", max_samples_per_partition,
                           "), 2^40], got ", max_samples_total);
  }
  if (pre_alloc_samples > max_samples_per_partition) {
    return Status::Invalid("pre_alloc_samples (", pre_alloc_samples, ") must not exceed max_samples_per_partition (",
                           max_samples_per_partition, ")");
  }
  constexpr int64_t kHourMs = 3600 * 1000;
  if (storage_unit_ping_interval_ms < 1 || storage_unit_ping_interval_ms > kHourMs) {
    return Status::Invalid("storage_unit_ping_interval_ms must be in [1, 3600000], got ",
                           storage_unit_ping_interval_ms);
  }
  if (storage_unit_liveness_timeout_ms < 1 || storage_unit_liveness_timeout_ms > kHourMs) {
    return Status::Invalid("storage_unit_liveness_timeout_ms must be in [1, 3600000], got ",
                           storage_unit_liveness_timeout_ms);
  }
  if (storage_unit_verify_timeout_ms < 1 || storage_unit_verify_timeout_ms > kHourMs) {
    return Status::Invalid("storage_unit_verify_timeout_ms must be in [1, 3600000], got ",
                           storage_unit_verify_timeout_ms);
  }
  if (max_storage_units < std::max(1, embedded_storage_units) || max_storage_units > 65536) {
    return Status::Invalid("max_storage_units must be in [max(1, embedded_storage_units), 65536], got ",
                           max_storage_units);
  }
  if (custom_sampler && !default_sampling.empty()) {
    return Status::Invalid(
        "default_sampling and custom_sampler are exclusive (the custom sampler serves every call)");
  }
  if (!default_sampling.empty()) {
    TQDS_RETURN_NOT_OK(internal::SamplerFor(default_sampling).status().WithContext("default_sampling"));
  }
  return Status::OK();
}

namespace {

struct Waiter {
  internal::GetMetaRequest request;
  Responder responder;
  Clock::time_point deadline;
};

class ControllerImpl : public TransferQueueController {
 public:
  ~ControllerImpl() override { Stop(); }

  Status Init(const ControllerOptions& o) {
    internal::UnitRegistry::Options ro;
    ro.ping_interval = std::chrono::milliseconds(o.storage_unit_ping_interval_ms);
    ro.liveness_timeout = std::chrono::milliseconds(o.storage_unit_liveness_timeout_ms);
    ro.verify_timeout = std::chrono::milliseconds(o.storage_unit_verify_timeout_ms);
    ro.max_units = static_cast<size_t>(o.max_storage_units);
    registry_ = std::make_unique<internal::UnitRegistry>(ro);
    state_.set_get_meta_defaults({o.polling_mode, o.default_sampling});
    state_.set_pre_alloc_samples(static_cast<size_t>(o.pre_alloc_samples));
    state_.set_allocation_limits({static_cast<size_t>(o.max_allocate_per_request),
                                  static_cast<size_t>(o.max_samples_per_partition),
                                  static_cast<size_t>(o.max_samples_total)});
    if (o.custom_sampler) state_.set_custom_sampler(internal::MakeCustomSamplerAdapter(o.custom_sampler));
    TQDS_ASSIGN_OR_RETURN(
        server_, tqds::wire::RpcServer::Bind(
                     o.address, [this](Message&& m, Responder r) { Handle(std::move(m), std::move(r)); },
                     [this](Clock::time_point now) { return Tick(now); }));
    for (int i = 0; i < o.embedded_storage_units; ++i) {
      StorageUnitOptions uo;
      uo.capacity_bytes = o.storage_unit_capacity_bytes;
      // An in-process controller keeps its units in-process too: inproc
      // transport passes payload buffers by reference, with no copy at all.
      if (o.address.rfind("inproc://", 0) == 0) {
        uo.address = o.address + "-unit-" + std::to_string(i);
      } else if (o.address.rfind("tcp://", 0) == 0) {
        // Units listen on the controller's host, so other nodes reach them too.
        std::string host = o.address.substr(6, o.address.rfind(':') - 6);
        uo.address = "tcp://" + host + ":0";
      }
      TQDS_ASSIGN_OR_RETURN(auto unit, SimpleStorageUnit::Start(uo));
      registry_->AddPermanent(unit->address());
      embedded_.push_back(std::move(unit));
    }
    server_->Start();
    return Status::OK();
  }

  const std::string& address() const override { return server_->endpoint(); }
  std::vector<std::string> storage_units() const override { return registry_->Units(); }
  void Stop() override {
    if (server_) server_->Stop();
    if (registry_) registry_->Stop();
    for (auto& u : embedded_) u->Stop();
  }

 private:
  void Handle(Message&& m, Responder r) {
    Status st = Dispatch(m, r);
    if (!st.ok()) r.ReplyError(st);
  }

  static Result<std::string> PartitionOf(const Message& m, const char* what) {
    TQDS_ASSIGN_OR_RETURN(auto rd, MapReader::Of(m.body(), what));
    TQDS_ASSIGN_OR_RETURN(std::string p, rd.Get<std::string>("partition_id"));
    TQDS_RETURN_NOT_OK(internal::ValidateName(p, "partition_id"));
    return p;
  }

  // Handlers reply through `r` or return an error status.
  Status Dispatch(const Message& m, Responder& r) {
    switch (m.type()) {
      case MsgType::kCtlPing: {
        Message rep = Message::ReplyTo(m);
        rep.set_body(PackBody([&](Packer& pk) {
          pk.pack_map(1);
          pk.pack("controller_id");
          pk.pack_uint64(controller_id_);
        }));
        r.Reply(std::move(rep));
        return Status::OK();
      }
      case MsgType::kCtlAllocate: {
        TQDS_ASSIGN_OR_RETURN(auto rd, MapReader::Of(m.body(), "Allocate"));
        TQDS_ASSIGN_OR_RETURN(std::string p, rd.Get<std::string>("partition_id"));
        TQDS_RETURN_NOT_OK(internal::ValidateName(p, "partition_id"));
        TQDS_ASSIGN_OR_RETURN(int64_t count, rd.Get<int64_t>("count"));
        if (count <= 0) return Status::Invalid("Allocate: count must be >= 1, got ", count);
        // The state checks count against the allocation limits before
        // committing any memory.
        TQDS_ASSIGN_OR_RETURN(BatchMeta meta, state_.Allocate(p, static_cast<size_t>(count)));
        r.Reply(internal::MetaMessage(m.type(), meta));
        return Status::OK();
      }
      case MsgType::kCtlNotifyProduced: {
        TQDS_ASSIGN_OR_RETURN(BatchMeta meta, internal::MetaFromMessage(m));
        TQDS_RETURN_NOT_OK(state_.MarkProduced(meta));
        r.Reply(Message::ReplyTo(m));
        if (!meta.empty()) Wake(meta.samples()[0].partition_id);
        return Status::OK();
      }
      case MsgType::kCtlGetMeta: {
        TQDS_ASSIGN_OR_RETURN(auto req, internal::DecodeGetMeta(m.body()));
        TQDS_RETURN_NOT_OK(internal::ValidateName(req.partition_id, "partition_id"));
        TQDS_ASSIGN_OR_RETURN(auto answer, state_.TryGetMeta(req));
        if (answer) {
          r.Reply(internal::MetaMessage(m.type(), *answer));
        } else if (req.timeout_ms <= 0) {
          r.ReplyError(NotReady(req));
        } else {
          auto deadline = Clock::now() + std::chrono::milliseconds(req.timeout_ms);
          waiters_.push_back(Waiter{std::move(req), std::move(r), deadline});
        }
        return Status::OK();
      }
      case MsgType::kCtlClearPartition: {
        TQDS_ASSIGN_OR_RETURN(std::string p, PartitionOf(m, "ClearPartition"));
        r.Reply(internal::SampleListMessage(m.type(), state_.BeginClearPartition(p)));
        return Status::OK();
      }
      case MsgType::kCtlClearSamples: {
        TQDS_ASSIGN_OR_RETURN(auto rd, MapReader::Of(m.body(), "ClearSamples"));
        TQDS_ASSIGN_OR_RETURN(std::string p, rd.Get<std::string>("partition_id"));
        TQDS_ASSIGN_OR_RETURN(auto idx, rd.Get<std::vector<int64_t>>("global_indexes"));
        r.Reply(internal::SampleListMessage(m.type(), state_.BeginClearSamples(p, idx)));
        return Status::OK();
      }
      case MsgType::kCtlReleaseIndexes: {
        TQDS_ASSIGN_OR_RETURN(BatchMeta meta, internal::SampleListFromMessage(m));
        TQDS_RETURN_NOT_OK(state_.ReleaseSamples(meta));
        r.Reply(Message::ReplyTo(m));
        return Status::OK();
      }
      case MsgType::kCtlProductionStatus: {
        if (IsPerSampleStatus(m)) return ReplySampleStatus(m, r);
        TQDS_ASSIGN_OR_RETURN(std::string p, PartitionOf(m, "ProductionStatus"));
        TQDS_ASSIGN_OR_RETURN(auto st, state_.GetProductionStatus(p));
        Message rep = Message::ReplyTo(m);
        rep.set_body(PackBody([&](Packer& pk) {
          pk.pack_map(2);
          pk.pack("num_samples");
          pk.pack_uint64(st.num_samples);
          pk.pack("produced");
          pk.pack(st.produced);
        }));
        r.Reply(std::move(rep));
        return Status::OK();
      }
      case MsgType::kCtlConsumptionStatus: {
        if (IsPerSampleStatus(m)) return ReplySampleStatus(m, r);
        TQDS_ASSIGN_OR_RETURN(auto rd, MapReader::Of(m.body(), "ConsumptionStatus"));
        TQDS_ASSIGN_OR_RETURN(std::string p, rd.Get<std::string>("partition_id"));
        TQDS_ASSIGN_OR_RETURN(std::string task, rd.Get<std::string>("task_name"));
        TQDS_ASSIGN_OR_RETURN(auto st, state_.GetConsumptionStatus(p, task));
        Message rep = Message::ReplyTo(m);
        rep.set_body(PackBody([&](Packer& pk) {
          pk.pack_map(2);
          pk.pack("num_samples");
          pk.pack_uint64(st.num_samples);
          pk.pack("consumed");
          pk.pack_uint64(st.consumed);
        }));
        r.Reply(std::move(rep));
        return Status::OK();
      }
      case MsgType::kCtlResetConsumption: {
        TQDS_ASSIGN_OR_RETURN(auto rd, MapReader::Of(m.body(), "ResetConsumption"));
        TQDS_ASSIGN_OR_RETURN(std::string p, rd.Get<std::string>("partition_id"));
        TQDS_ASSIGN_OR_RETURN(std::string task, rd.GetOr<std::string>("task_name", ""));
        TQDS_RETURN_NOT_OK(state_.ResetConsumption(p, task));
        r.Reply(Message::ReplyTo(m));
        Wake(p);
        return Status::OK();
      }
      case MsgType::kCtlListPartitions: {
        // {"detail": true} asks for each partition's production and
        // consumption too (`tq status`); an empty body for the names only.
        bool detail = false;
        if (m.body().type != msgpack::type::NIL) {
          TQDS_ASSIGN_OR_RETURN(auto rd, MapReader::Of(m.body(), "ListPartitions"));
          TQDS_ASSIGN_OR_RETURN(detail, rd.GetOr<bool>("detail", false));
        }
        Message rep = Message::ReplyTo(m);
        if (!detail) {
          auto list = state_.ListPartitions();
          rep.set_body(PackBody([&](Packer& pk) {
            pk.pack_map(1);
            pk.pack("partitions");
            pk.pack(list);
          }));
        } else {
          auto summaries = state_.Summaries();
          std::vector<std::string> names;
          std::vector<uint64_t> samples;
          std::vector<std::map<std::string, size_t>> produced, consumed;
          for (auto& s : summaries) {
            names.push_back(std::move(s.partition_id));
            samples.push_back(s.num_samples);
            produced.push_back(std::move(s.produced));
            consumed.push_back(std::move(s.consumed));
          }
          rep.set_body(PackBody([&](Packer& pk) {
            pk.pack_map(4);
            pk.pack("partitions");
            pk.pack(names);
            pk.pack("samples");
            pk.pack(samples);
            pk.pack("produced");
            pk.pack(produced);
            pk.pack("consumed");
            pk.pack(consumed);
          }));
        }
        r.Reply(std::move(rep));
        return Status::OK();
      }
      case MsgType::kCtlSetCustomMeta: {
        TQDS_ASSIGN_OR_RETURN(BatchMeta meta, internal::MetaFromMessage(m));
        TQDS_RETURN_NOT_OK(state_.SetCustomMeta(meta));
        r.Reply(Message::ReplyTo(m));
        return Status::OK();
      }
      case MsgType::kCtlGetCustomMeta: {
        TQDS_ASSIGN_OR_RETURN(auto rd, MapReader::Of(m.body(), "GetCustomMeta"));
        TQDS_ASSIGN_OR_RETURN(std::string p, rd.Get<std::string>("partition_id"));
        TQDS_ASSIGN_OR_RETURN(auto idx, rd.Get<std::vector<int64_t>>("global_indexes"));
        TQDS_ASSIGN_OR_RETURN(BatchMeta meta, state_.GetSamples(p, idx));
        r.Reply(internal::MetaMessage(m.type(), meta));
        return Status::OK();
      }
      case MsgType::kCtlRegisterStorage: {
        TQDS_ASSIGN_OR_RETURN(auto rd, MapReader::Of(m.body(), "RegisterStorage"));
        TQDS_ASSIGN_OR_RETURN(std::string ep, rd.Get<std::string>("endpoint"));
        // Answered once the registry reached the unit (or refused it), from
        // Tick on this thread; the wait never delays other requests.
        ++registrations_waiting_;
        registry_->Register(std::move(ep), [this, r, reply = Message::ReplyTo(m)](Status st) mutable {
          std::lock_guard<std::mutex> lock(registered_mu_);
          registered_.push_back({std::move(r), std::move(reply), std::move(st)});
        });
        return Status::OK();
      }
      case MsgType::kCtlGetStorageInfo: {
        Message rep = Message::ReplyTo(m);
        auto units = storage_units();
        rep.set_body(PackBody([&](Packer& pk) {
          pk.pack_map(1);
          pk.pack("units");
          pk.pack(units);
        }));
        r.Reply(std::move(rep));
        return Status::OK();
      }
      case MsgType::kCtlSnapshot:
      case MsgType::kCtlRestore:
        return DispatchCheckpoint(m, r);
      case MsgType::kCtlKvRetrieve:
      case MsgType::kCtlKvKeys:
      case MsgType::kCtlKvList:
      case MsgType::kCtlKvClear:
        return DispatchKv(m, r);
      default:
        return Status::Invalid("controller: unknown message type ", static_cast<int>(m.type()));
    }
  }

  // ProductionStatus with "fields" / ConsumptionStatus with "per_sample": true
  // ask for upstream's per-sample shape instead of the summary.
  static bool IsPerSampleStatus(const Message& m) {
    auto rd = MapReader::Of(m.body(), "status request");
    if (!rd.ok()) return false;
    if (m.type() == MsgType::kCtlProductionStatus) return rd->Has("fields");
    return rd->GetOr<bool>("per_sample", false).ValueOr(false);
  }

  Status ReplySampleStatus(const Message& m, Responder& r) {
    bool production = m.type() == MsgType::kCtlProductionStatus;
    TQDS_ASSIGN_OR_RETURN(auto rd, MapReader::Of(m.body(), production ? "ProductionStatus" : "ConsumptionStatus"));
    TQDS_ASSIGN_OR_RETURN(std::string p, rd.Get<std::string>("partition_id"));
    TQDS_RETURN_NOT_OK(internal::ValidateName(p, "partition_id"));
    std::optional<SampleStatusMatrix> answer;
    if (production) {
      TQDS_ASSIGN_OR_RETURN(auto fields, rd.Get<std::vector<std::string>>("fields"));
      answer = state_.ProductionMatrix(p, fields);
    } else {
      TQDS_ASSIGN_OR_RETURN(std::string task, rd.Get<std::string>("task_name"));
      TQDS_RETURN_NOT_OK(internal::ValidateName(task, "task_name"));
      answer = state_.ConsumptionMatrix(p, task);
    }
    Message rep = Message::ReplyTo(m);
    rep.set_body(internal::EncodeSampleStatus(answer));
    r.Reply(std::move(rep));
    return Status::OK();
  }

  // The KV API: keys naming samples (see internal::ControllerState::Kv*).
  Status DispatchKv(const Message& m, Responder& r) {
    Message rep = Message::ReplyTo(m);
    switch (m.type()) {
      case MsgType::kCtlKvRetrieve: {
        TQDS_ASSIGN_OR_RETURN(auto req, internal::KvRetrieveRequest::Decode(m.body()));
        TQDS_ASSIGN_OR_RETURN(BatchMeta meta, state_.KvRetrieve(req.partition_id, req.keys, req.create));
        r.Reply(internal::MetaMessage(m.type(), meta));
        return Status::OK();
      }
      case MsgType::kCtlKvKeys: {
        TQDS_ASSIGN_OR_RETURN(auto req, internal::KvKeysRequest::Decode(m.body()));
        TQDS_ASSIGN_OR_RETURN(auto keys, state_.KvKeys(req.partition_id, req.global_indexes));
        rep.set_body(internal::EncodeKvKeysReply(keys));
        break;
      }
      case MsgType::kCtlKvList: {
        TQDS_ASSIGN_OR_RETURN(auto req, internal::KvListRequest::Decode(m.body()));
        rep.set_body(internal::EncodeKvListReply(state_.KvList(req.partition_id)));
        break;
      }
      case MsgType::kCtlKvClear: {
        TQDS_ASSIGN_OR_RETURN(auto req, internal::KvClearRequest::Decode(m.body()));
        r.Reply(internal::SampleListMessage(m.type(), state_.BeginKvClear(req.partition_id, req.keys)));
        return Status::OK();
      }
      default:
        return Status::Internal("DispatchKv: not a KV message");
    }
    r.Reply(std::move(rep));
    return Status::OK();
  }

  // Checkpoint: Snapshot replies with the state's bytes as payload frame 0;
  // Restore ({"dry_run": bool} + the bytes as frame 0) replaces the state,
  // refused while fetches are parked (they would see another state).
  Status DispatchCheckpoint(const Message& m, Responder& r) {
    Message rep = Message::ReplyTo(m);
    if (m.type() == MsgType::kCtlSnapshot) {
      rep.payloads().push_back(tqds::Buffer::FromString(state_.Snapshot()));
      r.Reply(std::move(rep));
      return Status::OK();
    }
    TQDS_ASSIGN_OR_RETURN(auto rd, MapReader::Of(m.body(), "Restore"));
    TQDS_ASSIGN_OR_RETURN(bool dry_run, rd.GetOr<bool>("dry_run", false));
    if (m.payloads().size() != 1) {
      return Status::Invalid("Restore: expected the snapshot as 1 payload frame, got ", m.payloads().size());
    }
    if (!waiters_.empty()) {
      return Status::Invalid("Restore: ", waiters_.size(),
                             " get_meta calls are waiting for data; restore a checkpoint when no consumer waits");
    }
    TQDS_RETURN_NOT_OK(state_.Restore(m.payloads()[0].view(), dry_run));
    r.Reply(std::move(rep));
    return Status::OK();
  }

  static Status NotReady(const internal::GetMetaRequest& req) {
    return Status::Timeout("get_meta: fewer than ", req.batch_size, " samples with fields ready in partition '",
                           req.partition_id, "' for task '", req.task_name, "' within ",
                           req.timeout_ms, " ms");
  }

  // Retries parked fetches of a partition, oldest first.
  void Wake(const std::string& partition) {
    for (auto it = waiters_.begin(); it != waiters_.end();) {
      if (it->request.partition_id != partition) {
        ++it;
        continue;
      }
      auto answer = state_.TryGetMeta(it->request);
      if (!answer.ok()) {
        it->responder.ReplyError(answer.status());
      } else if (*answer) {
        it->responder.Reply(internal::MetaMessage(MsgType::kCtlGetMeta, **answer));
      } else {
        ++it;
        continue;
      }
      it = waiters_.erase(it);
    }
  }

  // Answers the RegisterStorage requests the registry has decided.
  void ReplyRegistrations() {
    std::vector<Registered> done;
    {
      std::lock_guard<std::mutex> lock(registered_mu_);
      done.swap(registered_);
    }
    for (auto& d : done) {
      if (d.status.ok()) {
        d.responder.Reply(std::move(d.reply));
      } else {
        d.responder.ReplyError(d.status);
      }
      --registrations_waiting_;
    }
  }

  std::chrono::milliseconds Tick(Clock::time_point now) {
    ReplyRegistrations();
    // While a registration waits, look again soon (its unit waits for it).
    auto next = std::chrono::milliseconds(registrations_waiting_ > 0 ? 2 : 200);
    for (auto it = waiters_.begin(); it != waiters_.end();) {
      if (it->deadline <= now) {
        it->responder.ReplyError(NotReady(it->request));
        it = waiters_.erase(it);
        continue;
      }
      next = std::min(next, std::chrono::duration_cast<std::chrono::milliseconds>(it->deadline - now) +
                                std::chrono::milliseconds(1));
      ++it;
    }
    return next;
  }

  // Random per controller start; part of every storage key.
  const uint64_t controller_id_ = (uint64_t{std::random_device{}()} << 32) ^ std::random_device{}();
  std::unique_ptr<tqds::wire::RpcServer> server_;
  std::vector<std::unique_ptr<SimpleStorageUnit>> embedded_;
  // Touched only on the server thread (after Start).
  internal::ControllerState state_;
  std::list<Waiter> waiters_;
  size_t registrations_waiting_ = 0;  // RegisterStorage requests not yet answered
  // Decided registrations, handed from the registry's thread to this one.
  struct Registered {
    Responder responder;
    Message reply;
    Status status;
  };
  std::mutex registered_mu_;
  std::vector<Registered> registered_;  // guarded by registered_mu_
  // Thread-safe; stopped (its thread joined) before the members above go.
  std::unique_ptr<internal::UnitRegistry> registry_;
};

}  // namespace

Result<std::unique_ptr<TransferQueueController>> TransferQueueController::Start(
    const ControllerOptions& options) {
  TQDS_RETURN_NOT_OK(options.Validate());
  auto c = std::make_unique<ControllerImpl>();
  TQDS_RETURN_NOT_OK(c->Init(options));
  return std::unique_ptr<TransferQueueController>(std::move(c));
}

}  // namespace tq
