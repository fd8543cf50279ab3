// The controller server: decodes requests, applies them to ControllerState on
// the server thread, parks fetches that must wait and answers them when data
// arrives or their deadline passes.
#include "tq/controller.h"

#include <spdlog/spdlog.h>

#include <zlib.h>

#include <algorithm>
#include <atomic>
#include <deque>
#include <list>
#include <map>
#include <mutex>
#include <random>
#include <unordered_map>

#include "common/socket_io.h"
#include "common/wire/rpc.h"
#include "queue/controller_journal.h"
#include "queue/ctl_messages.h"
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
  if (!state_dir.empty() && custom_sampler) {
    return Status::Invalid("state_dir and custom_sampler are exclusive: a restarted controller replays its "
                           "requests, and only the built-in samplers answer a replay exactly as they did");
  }
  if (state_rotate_bytes < (int64_t{1} << 16) || state_rotate_bytes > (int64_t{1} << 40)) {
    return Status::Invalid("state_rotate_bytes must be in [2^16, 2^40], got ", state_rotate_bytes);
  }
  return Status::OK();
}

namespace {

// Upstream's op_type label of each request.
const char* OpType(MsgType t) {
  switch (t) {
    case MsgType::kCtlGetMeta: return "GET_META";
    case MsgType::kCtlAllocate: return "ALLOCATE";
    case MsgType::kCtlNotifyProduced: return "NOTIFY_DATA_UPDATE";
    case MsgType::kCtlSetCustomMeta: return "SET_CUSTOM_META";
    case MsgType::kCtlGetCustomMeta: return "GET_PARTITION_META";
    case MsgType::kCtlClearSamples: return "CLEAR_META";
    case MsgType::kCtlClearPartition: return "CLEAR_PARTITION";
    case MsgType::kCtlReleaseIndexes: return "RELEASE_INDEXES";
    case MsgType::kCtlConsumptionStatus: return "GET_CONSUMPTION";
    case MsgType::kCtlResetConsumption: return "RESET_CONSUMPTION";
    case MsgType::kCtlProductionStatus: return "GET_PRODUCTION";
    case MsgType::kCtlListPartitions: return "GET_LIST_PARTITIONS";
    case MsgType::kCtlKvRetrieve: return "KV_RETRIEVE_META";
    case MsgType::kCtlKvPut: return "KV_PUT";
    case MsgType::kCtlKvKeys: return "KV_RETRIEVE_KEYS";
    case MsgType::kCtlKvList: return "KV_LIST";
    case MsgType::kCtlKvClear: return "KV_CLEAR";
    case MsgType::kCtlRegisterStorage: return "REGISTER_STORAGE";
    case MsgType::kCtlGetStorageInfo: return "GET_STORAGE_INFO";
    case MsgType::kCtlSnapshot: return "SNAPSHOT";
    case MsgType::kCtlRestore: return "RESTORE";
    case MsgType::kCtlPing: return "PING";
    default: return "UNKNOWN";
  }
}

struct Waiter {
  internal::GetMetaRequest request;
  Responder responder;  // for the answer (through the journal, when there is one)
  Clock::time_point deadline;
  Message message;  // the request as received (journaled at each attempt)
  Responder plain;  // for the timeout, which changes nothing and is not journaled
};

using tqds::wire::RpcClient;

bool CallerKeyed(const Message& m) { return (m.request_id() & RpcClient::kCallerIdBit) != 0; }

uint32_t HeaderCrc(const Message& m) {
  auto v = m.raw_header().view();
  return static_cast<uint32_t>(crc32_z(0L, reinterpret_cast<const Bytef*>(v.data()), v.size()));
}

// Requests that change the state, and so are journaled (and replayed).
bool Journaled(const Message& m) {
  switch (m.type()) {
    case MsgType::kCtlAllocate:
    case MsgType::kCtlNotifyProduced:
    case MsgType::kCtlGetMeta:
    case MsgType::kCtlClearPartition:
    case MsgType::kCtlClearSamples:
    case MsgType::kCtlReleaseIndexes:
    case MsgType::kCtlResetConsumption:
    case MsgType::kCtlSetCustomMeta:
    case MsgType::kCtlRegisterStorage:
    case MsgType::kCtlRestore:
    case MsgType::kCtlKvRetrieve:
    case MsgType::kCtlKvPut:
    case MsgType::kCtlKvClear:
      return true;
    case MsgType::kCtlConsumptionStatus:  // the per-sample form creates the task
      return internal::ConsumptionStatusRequest::PerSample(m.body());
    default:
      return false;
  }
}

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
    // The state directory first: recovered before the port is served, so no
    // request meets a half-restored state.
    if (!o.state_dir.empty()) TQDS_RETURN_NOT_OK(OpenState(o));
    TQDS_ASSIGN_OR_RETURN(
        server_, tqds::wire::RpcServer::Bind(
                     o.address, [this](Message&& m, Responder r) { Handle(std::move(m), std::move(r)); },
                     [this](Clock::time_point now) { return Tick(now); }));
    for (int i = 0; i < o.embedded_storage_units; ++i) {
      StorageUnitOptions uo;
      uo.capacity_bytes = o.storage_unit_capacity_bytes;
      uo.capacity_samples = o.storage_unit_capacity_samples;
      // An in-process controller keeps its units in-process too: inproc
      // transport passes payload buffers by reference, with no copy at all.
      if (o.address.rfind("inproc://", 0) == 0) {
        uo.address = o.address + "-unit-" + std::to_string(i);
      } else if (o.address.rfind("tcp://", 0) == 0) {
        // Units listen on the controller's host, so other nodes reach them too.
        uo.address = "tcp://" + tqds::net::TcpEndpointHost(o.address) + ":0";
      }
      TQDS_ASSIGN_OR_RETURN(auto unit, SimpleStorageUnit::Start(uo));
      registry_->AddPermanent(unit->address());
      embedded_endpoints_.push_back(unit->address());
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
    reply_samples_ = 0;
    if (journal_ && !Admit(m, r)) return;
    r = Metered(m, std::move(r));
    plain_ = r;
    Responder d = journal_ && Journaled(m) ? Durable(m, r) : r;
    Status st = Dispatch(m, d);
    if (!st.ok()) d.ReplyError(st);
    index_allocated_ = state_.held_samples();
    index_reusable_ = state_.free_index_count();
  }

  // ---- request counters (request_stats) ----

  // A responder that counts the reply, with its latency and the samples
  // the handler noted (reply_samples_), under the request's op_type.
  Responder Metered(const Message& m, Responder r) {
    return Responder::Capture(m.type(), m.request_id(),
                              [this, op = OpType(m.type()), start = Clock::now(), r](Message rep) mutable {
                                Count(op, start, rep.status().ok());
                                r.Reply(std::move(rep));
                              });
  }

  void Count(const char* op, Clock::time_point start, bool ok) {
    counters_.Record(op, std::chrono::duration<double>(Clock::now() - start).count(), ok, reply_samples_);
    reply_samples_ = 0;
  }

  ControllerRequestStats request_stats() const override {
    ControllerRequestStats out;
    out.ops = counters_.Snapshot();
    out.index_allocated = index_allocated_;
    out.index_reusable = index_reusable_;
    return out;
  }

  // ---- the state directory (ControllerOptions::state_dir) ----
  //
  // Every request that changes the state is appended to the journal after
  // it is applied and before its reply leaves (Durable), so a reply that a
  // client saw is never forgotten; a kill before the append loses a change
  // whose reply nobody saw, and the client's resend redoes it. Resends are
  // recognised by their caller-chosen request id (RpcClient::kCallerIdBit):
  // the replies of such requests are kept (replies_, rebuilt by the replay),
  // so a resend gets the first answer instead of a second one (a get_meta
  // never hands out a batch twice, an allocate never allocates twice).

  struct CachedReply {
    uint32_t crc = 0;      // of the request's header frame: a resend is byte-identical
    Message reply;
    bool durable = true;   // false: its journal append failed, not yet in a base
    size_t bytes = 0;
  };
  static constexpr size_t kMaxCachedReplies = 1 << 16;
  static constexpr size_t kMaxCachedReplyBytes = size_t{256} << 20;

  // Whether `m` goes on to Dispatch; else it was answered here.
  bool Admit(const Message& m, Responder& r) {
    if (!journal_ok_ && RepairDue()) RotateState();
    if (CallerKeyed(m)) {
      const uint32_t crc = HeaderCrc(m);
      auto it = replies_.find(m.request_id());
      if (it != replies_.end() && it->second.crc == crc) {
        if (it->second.durable) {
          r.Reply(it->second.reply);
        } else {
          r.ReplyError(NotDurable());
        }
        return false;
      }
      // A resend of a get_meta that still waits: answer it there, once.
      for (auto& w : waiters_) {
        if (w.message.request_id() == m.request_id() && HeaderCrc(w.message) == crc) {
          w.plain = r;
          w.responder = Durable(m, r);
          return false;
        }
      }
    }
    if (!journal_ok_ && Journaled(m)) {
      r.ReplyError(NotDurable());
      return false;
    }
    return true;
  }

  Status NotDurable() const {
    return Status::Unavailable("controller: cannot write its state directory ", journal_->dir(), " (",
                               journal_error_.message(), "); changes are refused until it can");
  }

  // A responder that journals `m`, then remembers and sends the reply.
  Responder Durable(const Message& m, Responder r) {
    return Responder::Capture(m.type(), m.request_id(), [this, req = m, r](Message rep) mutable {
      Commit(req, std::move(rep), r);
    });
  }

  void Commit(const Message& req, Message rep, Responder& r) {
    // A refused restore or registration changed nothing.
    bool changed = rep.status().ok() ||
                   (req.type() != MsgType::kCtlRestore && req.type() != MsgType::kCtlRegisterStorage);
    bool durable = true;
    if (changed) durable = Append(req);
    if (!durable && RepairDue()) {
      // A fresh base holds this change too: written, it is durable after all.
      RotateState();
      durable = journal_ok_;
    }
    if (CallerKeyed(req)) Remember(req, rep, durable);
    if (!durable) {
      r.ReplyError(NotDurable());
      return;
    }
    r.Reply(std::move(rep));
    if (journal_->segment_bytes() >= rotate_bytes_) RotateState();
  }

  bool Append(const Message& req) {
    if (!journal_ok_) return false;
    Status st = journal_->Append(req);
    if (st.ok()) return true;
    journal_ok_ = false;
    journal_error_ = st;
    spdlog::error("controller: {}; writing the whole state anew (changes wait until that succeeds)", st.ToString());
    return false;
  }

  void Remember(const Message& req, const Message& rep, bool durable) {
    CachedReply c{HeaderCrc(req), rep, durable, rep.body_bytes().size()};
    for (const auto& p : rep.payloads()) c.bytes += p.size();
    auto [it, inserted] = replies_.insert_or_assign(req.request_id(), std::move(c));
    if (inserted) reply_order_.push_back(req.request_id());
    reply_bytes_ += it->second.bytes;
    while (!reply_order_.empty() &&
           (replies_.size() > kMaxCachedReplies || reply_bytes_ > kMaxCachedReplyBytes)) {
      auto old = replies_.find(reply_order_.front());
      reply_order_.pop_front();
      if (old == replies_.end()) continue;
      reply_bytes_ -= old->second.bytes;
      replies_.erase(old);
    }
  }

  // Whether to try writing a fresh base now: at once after a failed
  // append, then at most once a second while that keeps failing.
  bool RepairDue() const { return Clock::now() - last_failed_rotate_ >= std::chrono::seconds(1); }

  // Writes the whole state as the base and starts a new journal segment.
  void RotateState() {
    Status st = journal_->Rotate(BaseDocument());
    if (!st.ok()) {
      last_failed_rotate_ = Clock::now();
      if (journal_ok_) spdlog::error("controller: {}", st.ToString());
      journal_ok_ = false;
      journal_error_ = st;
      return;
    }
    if (!journal_ok_) spdlog::info("controller: the state directory {} takes writes again", journal_->dir());
    journal_ok_ = true;
    journal_error_ = Status::OK();
    for (auto& [id, c] : replies_) c.durable = true;
  }

  static constexpr const char* kBaseFormat = "tqds-controller-state";
  static constexpr uint64_t kBaseVersion = 1;

  std::string BaseDocument() const {
    std::vector<std::string> units;
    for (const auto& u : registry_->Units()) {
      if (std::find(embedded_endpoints_.begin(), embedded_endpoints_.end(), u) == embedded_endpoints_.end()) {
        units.push_back(u);
      }
    }
    std::string state = state_.Snapshot();
    return PackBody([&](Packer& pk) {
      pk.pack_map(6);
      pk.pack("format");
      pk.pack(kBaseFormat);
      pk.pack("version");
      pk.pack_uint64(kBaseVersion);
      pk.pack("controller_id");
      pk.pack_uint64(controller_id_);
      pk.pack("state");
      pk.pack_bin(static_cast<uint32_t>(state.size()));
      pk.pack_bin_body(state.data(), static_cast<uint32_t>(state.size()));
      pk.pack("units");
      pk.pack(units);
      pk.pack("replies");
      pk.pack_array(static_cast<uint32_t>(reply_order_.size()));
      for (uint64_t id : reply_order_) {
        const CachedReply& c = replies_.at(id);
        const std::string& body = c.reply.body_bytes();
        pk.pack_array(7);
        pk.pack_uint64(id);
        pk.pack_uint32(c.crc);
        pk.pack_uint16(static_cast<uint16_t>(c.reply.type()));
        pk.pack_uint8(static_cast<uint8_t>(c.reply.status().code()));
        pk.pack(c.reply.status().message());
        pk.pack_bin(static_cast<uint32_t>(body.size()));
        pk.pack_bin_body(body.data(), static_cast<uint32_t>(body.size()));
        pk.pack_array(static_cast<uint32_t>(c.reply.payloads().size()));
        for (const auto& p : c.reply.payloads()) {
          pk.pack_bin(static_cast<uint32_t>(p.size()));
          pk.pack_bin_body(reinterpret_cast<const char*>(p.data()), static_cast<uint32_t>(p.size()));
        }
      }
    });
  }

  Status LoadBase(const std::string& doc, const std::string& where) {
    msgpack::object_handle oh;
    try {
      oh = msgpack::unpack(doc.data(), doc.size());
    } catch (const std::exception& e) {
      return Status::Invalid(where, ": not valid msgpack (", e.what(), ")");
    }
    TQDS_ASSIGN_OR_RETURN(auto rd, MapReader::Of(oh.get(), where));
    TQDS_ASSIGN_OR_RETURN(std::string format, rd.Get<std::string>("format"));
    TQDS_ASSIGN_OR_RETURN(uint64_t version, rd.Get<uint64_t>("version"));
    if (format != kBaseFormat || version != kBaseVersion) {
      return Status::Invalid(where, ": format '", format, "' version ", version, " (this build reads '",
                             kBaseFormat, "' version ", kBaseVersion, ")");
    }
    TQDS_ASSIGN_OR_RETURN(controller_id_, rd.Get<uint64_t>("controller_id"));
    const msgpack::object* state = rd.Find("state");
    if (state == nullptr || state->type != msgpack::type::BIN) return Status::Invalid(where, ": 'state' must be bin");
    TQDS_RETURN_NOT_OK(state_
                           .Restore(std::string_view(state->via.bin.ptr, state->via.bin.size), false,
                                    internal::ControllerState::RestoreMode::kExact)
                           .WithContext(where));
    TQDS_ASSIGN_OR_RETURN(auto units, rd.Get<std::vector<std::string>>("units"));
    for (auto& u : units) registry_->AddRecovered(std::move(u));
    const msgpack::object* replies = rd.Find("replies");
    if (replies == nullptr) return Status::Invalid(where, ": missing 'replies'");
    TQDS_ASSIGN_OR_RETURN(auto ra, internal::AsArray(*replies, where + " replies"));
    for (uint32_t i = 0; i < ra->size; ++i) {
      TQDS_ASSIGN_OR_RETURN(auto e, internal::AsArray(ra->ptr[i], where + " reply", 7));
      TQDS_ASSIGN_OR_RETURN(uint64_t id, internal::As<uint64_t>(e->ptr[0], where + " reply id"));
      TQDS_ASSIGN_OR_RETURN(uint32_t crc, internal::As<uint32_t>(e->ptr[1], where + " reply crc"));
      TQDS_ASSIGN_OR_RETURN(uint16_t type, internal::As<uint16_t>(e->ptr[2], where + " reply type"));
      TQDS_ASSIGN_OR_RETURN(uint8_t code, internal::As<uint8_t>(e->ptr[3], where + " reply status"));
      TQDS_ASSIGN_OR_RETURN(std::string text, internal::As<std::string>(e->ptr[4], where + " reply message"));
      if (e->ptr[5].type != msgpack::type::BIN) return Status::Invalid(where, ": a reply body must be bin");
      if (code > static_cast<uint8_t>(tqds::kLastStatusCode)) {
        return Status::Invalid(where, ": reply status code ", int(code), " is unknown");
      }
      Message rep(static_cast<MsgType>(type), id);
      if (code != 0) rep.set_status(Status(static_cast<tqds::StatusCode>(code), std::move(text)));
      rep.set_body(std::string(e->ptr[5].via.bin.ptr, e->ptr[5].via.bin.size));
      TQDS_ASSIGN_OR_RETURN(auto frames, internal::AsArray(e->ptr[6], where + " reply payloads"));
      size_t bytes = rep.body_bytes().size();
      for (uint32_t f = 0; f < frames->size; ++f) {
        if (frames->ptr[f].type != msgpack::type::BIN) return Status::Invalid(where, ": a payload must be bin");
        rep.payloads().push_back(tqds::Buffer::Copy(frames->ptr[f].via.bin.ptr, frames->ptr[f].via.bin.size));
        bytes += frames->ptr[f].via.bin.size;
      }
      CachedReply c{crc, std::move(rep), true, bytes};
      if (replies_.emplace(id, std::move(c)).second) {
        reply_order_.push_back(id);
        reply_bytes_ += bytes;
      }
    }
    return Status::OK();
  }

  Status OpenState(const ControllerOptions& o) {
    rotate_bytes_ = static_cast<uint64_t>(o.state_rotate_bytes);
    internal::ControllerJournal::Recovered rec;
    TQDS_ASSIGN_OR_RETURN(journal_, internal::ControllerJournal::Open(o.state_dir, o.state_sync, &rec));
    if (rec.base) TQDS_RETURN_NOT_OK(LoadBase(*rec.base, "controller state " + o.state_dir + "/base"));
    replaying_ = true;
    size_t n = 0;
    for (auto& m : rec.records) {
      Replay(m);
      ++n;
    }
    replaying_ = false;
    // The recovered state becomes the base of a fresh segment (a cut-short
    // record goes with the old one).
    TQDS_RETURN_NOT_OK(journal_->Rotate(BaseDocument()));
    journal_ok_ = true;
    if (rec.base) {
      spdlog::info("controller: resumed from {}: {} partition(s), {} journaled request(s) replayed{}", o.state_dir,
                   state_.ListPartitions().size(), n,
                   rec.dropped_tail_bytes > 0
                       ? ", " + std::to_string(rec.dropped_tail_bytes) + " bytes of an unfinished record dropped"
                       : std::string());
    } else {
      spdlog::info("controller: keeping its state in {}", o.state_dir);
    }
    return Status::OK();
  }

  // Applies a journaled request again, as it was applied live.
  void Replay(const Message& m) {
    if (m.type() == MsgType::kCtlRegisterStorage) {
      auto reg = internal::RegisterStorageRequest::Decode(m.body());
      if (reg.ok()) registry_->AddRecovered(std::move(reg->endpoint));
      return;
    }
    Responder cap = Responder::Capture(m.type(), m.request_id(), [this, &m](Message rep) {
      if (CallerKeyed(m)) Remember(m, rep, true);
    });
    Status st = Dispatch(m, cap);
    if (!st.ok()) cap.ReplyError(st);
  }

  // Handlers reply through `r` or return an error status. Every request type
  // the controller serves has one row here.
  using Handler = Status (ControllerImpl::*)(const Message&, Responder&);
  struct Route {
    MsgType type;
    Handler fn;
  };
  static const Route* RouteOf(MsgType type) {
    static const Route kRoutes[] = {
      {MsgType::kCtlPing, &ControllerImpl::OnPing},
      {MsgType::kCtlAllocate, &ControllerImpl::OnAllocate},
      {MsgType::kCtlNotifyProduced, &ControllerImpl::OnNotifyProduced},
      {MsgType::kCtlGetMeta, &ControllerImpl::OnGetMeta},
      {MsgType::kCtlClearPartition, &ControllerImpl::OnClearPartition},
      {MsgType::kCtlClearSamples, &ControllerImpl::OnClearSamples},
      {MsgType::kCtlReleaseIndexes, &ControllerImpl::OnReleaseIndexes},
      {MsgType::kCtlProductionStatus, &ControllerImpl::OnProductionStatus},
      {MsgType::kCtlConsumptionStatus, &ControllerImpl::OnConsumptionStatus},
      {MsgType::kCtlResetConsumption, &ControllerImpl::OnResetConsumption},
      {MsgType::kCtlListPartitions, &ControllerImpl::OnListPartitions},
      {MsgType::kCtlSetCustomMeta, &ControllerImpl::OnSetCustomMeta},
      {MsgType::kCtlGetCustomMeta, &ControllerImpl::OnGetCustomMeta},
      {MsgType::kCtlRegisterStorage, &ControllerImpl::OnRegisterStorage},
      {MsgType::kCtlGetStorageInfo, &ControllerImpl::OnGetStorageInfo},
      {MsgType::kCtlSnapshot, &ControllerImpl::DispatchCheckpoint},
      {MsgType::kCtlRestore, &ControllerImpl::DispatchCheckpoint},
      {MsgType::kCtlKvRetrieve, &ControllerImpl::DispatchKv},
      {MsgType::kCtlKvPut, &ControllerImpl::DispatchKv},
      {MsgType::kCtlKvKeys, &ControllerImpl::DispatchKv},
      {MsgType::kCtlKvList, &ControllerImpl::DispatchKv},
      {MsgType::kCtlKvClear, &ControllerImpl::DispatchKv},
    };
    for (const auto& route : kRoutes) {
      if (route.type == type) return &route;
    }
    return nullptr;
  }

  Status Dispatch(const Message& m, Responder& r) {
    const Route* route = RouteOf(m.type());
    if (route == nullptr) return Status::Invalid("controller: unknown message type ", static_cast<int>(m.type()));
    return (this->*(route->fn))(m, r);
  }

  Status OnPing(const Message& m, Responder& r) {
    r.Reply(Message::ReplyTo(m, internal::PingReply{controller_id_, journal_ != nullptr}.Encode()));
    return Status::OK();
  }

  Status OnAllocate(const Message& m, Responder& r) {
    TQDS_ASSIGN_OR_RETURN(auto req, internal::AllocateRequest::Decode(m.body()));
    // The state checks count against the allocation limits before
    // committing any memory.
    TQDS_ASSIGN_OR_RETURN(BatchMeta meta, state_.Allocate(req.partition_id, static_cast<size_t>(req.count)));
    reply_samples_ = meta.size();
    r.Reply(internal::MetaMessage(m.type(), meta));
    return Status::OK();
  }

  Status OnNotifyProduced(const Message& m, Responder& r) {
    TQDS_ASSIGN_OR_RETURN(BatchMeta meta, internal::MetaFromMessage(m));
    const size_t n = meta.size();
    const std::string partition = n == 0 ? std::string() : meta.samples()[0].partition_id;
    TQDS_RETURN_NOT_OK(state_.MarkProduced(std::move(meta)));
    reply_samples_ = n;
    r.Reply(Message::ReplyTo(m, internal::EncodeDeadPacks(state_.TakeDeadPacks())));
    if (n > 0) Wake(partition);
    return Status::OK();
  }

  Status OnGetMeta(const Message& m, Responder& r) {
    TQDS_ASSIGN_OR_RETURN(auto req, internal::DecodeGetMeta(m.body()));
    TQDS_RETURN_NOT_OK(internal::ValidateName(req.partition_id, "partition_id"));
    TQDS_ASSIGN_OR_RETURN(auto answer, state_.TryGetMetaRows(req));
    if (answer) {
      reply_samples_ = answer->size();
      r.Reply(internal::MetaMessage(m.type(), *answer));
    } else if (replaying_) {
      // It waited live, and was journaled again when answered.
    } else if (req.timeout_ms <= 0) {
      r.ReplyError(NotReady(req));
    } else {
      auto deadline = Clock::now() + std::chrono::milliseconds(req.timeout_ms);
      // A sampler may note something even when it cannot answer yet, so
      // each attempt is journaled, in the order it happened.
      if (journal_) (void)Append(m);
      Responder plain = journal_ ? plain_ : r;
      waiters_.push_back(Waiter{std::move(req), std::move(r), deadline, m, std::move(plain)});
    }
    return Status::OK();
  }

  // Phase 1 of a clear answered: the hidden samples, the packs it left
  // without users, and which samples have values under their own keys.
  void ReplyCleared(const Message& m, Responder& r, const BatchMeta& hidden) {
    reply_samples_ = hidden.size();
    r.Reply(internal::SampleListMessage(m.type(), hidden, state_.TakeDeadPacks(), state_.TakeClearKeyed()));
  }

  Status OnClearPartition(const Message& m, Responder& r) {
    TQDS_ASSIGN_OR_RETURN(auto req, internal::PartitionRequest::Decode(m.body(), "ClearPartition"));
    BatchMeta hidden = state_.BeginClearPartition(req.partition_id);
    ReplyCleared(m, r, hidden);
    return Status::OK();
  }

  Status OnClearSamples(const Message& m, Responder& r) {
    TQDS_ASSIGN_OR_RETURN(auto req, internal::SamplesRequest::Decode(m.body(), "ClearSamples"));
    BatchMeta hidden = state_.BeginClearSamples(req.partition_id, req.global_indexes);
    ReplyCleared(m, r, hidden);
    return Status::OK();
  }

  Status OnReleaseIndexes(const Message& m, Responder& r) {
    TQDS_ASSIGN_OR_RETURN(BatchMeta meta, internal::SampleListFromMessage(m));
    TQDS_RETURN_NOT_OK(state_.ReleaseSamples(meta));
    r.Reply(Message::ReplyTo(m));
    return Status::OK();
  }

  Status OnProductionStatus(const Message& m, Responder& r) {
    TQDS_ASSIGN_OR_RETURN(auto req, internal::ProductionStatusRequest::Decode(m.body()));
    if (req.fields) {  // upstream's per-sample form
      r.Reply(Message::ReplyTo(m, internal::EncodeSampleStatus(state_.ProductionMatrix(req.partition_id, *req.fields))));
    } else {
      TQDS_ASSIGN_OR_RETURN(auto st, state_.GetProductionStatus(req.partition_id));
      r.Reply(Message::ReplyTo(m, internal::EncodeProductionStatus(st)));
    }
    return Status::OK();
  }

  Status OnConsumptionStatus(const Message& m, Responder& r) {
    TQDS_ASSIGN_OR_RETURN(auto req, internal::ConsumptionStatusRequest::Decode(m.body()));
    if (req.per_sample) {  // upstream's per-sample form
      r.Reply(Message::ReplyTo(m, internal::EncodeSampleStatus(state_.ConsumptionMatrix(req.partition_id, req.task_name))));
    } else {
      TQDS_ASSIGN_OR_RETURN(auto st, state_.GetConsumptionStatus(req.partition_id, req.task_name));
      r.Reply(Message::ReplyTo(m, internal::EncodeConsumptionStatus(st)));
    }
    return Status::OK();
  }

  Status OnResetConsumption(const Message& m, Responder& r) {
    TQDS_ASSIGN_OR_RETURN(auto req, internal::ResetConsumptionRequest::Decode(m.body()));
    TQDS_RETURN_NOT_OK(state_.ResetConsumption(req.partition_id, req.task_name));
    r.Reply(Message::ReplyTo(m));
    Wake(req.partition_id);
    return Status::OK();
  }

  Status OnListPartitions(const Message& m, Responder& r) {
    // {"detail": true} asks for each partition's production and
    // consumption too (`tq status`); an empty body for the names only.
    TQDS_ASSIGN_OR_RETURN(auto req, internal::ListPartitionsRequest::Decode(m.body()));
    r.Reply(Message::ReplyTo(m, req.detail ? internal::EncodePartitionSummaries(state_.Summaries())
                                           : internal::EncodePartitionList(state_.ListPartitions())));
    return Status::OK();
  }

  Status OnSetCustomMeta(const Message& m, Responder& r) {
    TQDS_ASSIGN_OR_RETURN(BatchMeta meta, internal::MetaFromMessage(m));
    TQDS_RETURN_NOT_OK(state_.SetCustomMeta(meta));
    r.Reply(Message::ReplyTo(m));
    return Status::OK();
  }

  Status OnGetCustomMeta(const Message& m, Responder& r) {
    TQDS_ASSIGN_OR_RETURN(auto req, internal::SamplesRequest::Decode(m.body(), "GetCustomMeta"));
    TQDS_ASSIGN_OR_RETURN(BatchMeta meta, state_.GetSamples(req.partition_id, req.global_indexes));
    r.Reply(internal::MetaMessage(m.type(), meta));
    return Status::OK();
  }

  Status OnRegisterStorage(const Message& m, Responder& r) {
    TQDS_ASSIGN_OR_RETURN(auto req, internal::RegisterStorageRequest::Decode(m.body()));
    std::string ep = std::move(req.endpoint);
    // Answered once the registry reached the unit (or refused it), from
    // Tick on this thread; the wait never delays other requests.
    ++registrations_waiting_;
    registry_->Register(std::move(ep), [this, r, reply = Message::ReplyTo(m)](Status st) mutable {
      std::lock_guard<std::mutex> lock(registered_mu_);
      registered_.push_back({std::move(r), std::move(reply), std::move(st)});
    });
    return Status::OK();
  }

  Status OnGetStorageInfo(const Message& m, Responder& r) {
    r.Reply(Message::ReplyTo(m, internal::EncodeStorageInfo(storage_units())));
    return Status::OK();
  }

  // The KV API: keys naming samples (see internal::ControllerState::Kv*).
  Status DispatchKv(const Message& m, Responder& r) {
    Message rep = Message::ReplyTo(m);
    switch (m.type()) {
      case MsgType::kCtlKvRetrieve: {
        TQDS_ASSIGN_OR_RETURN(auto req, internal::KvRetrieveRequest::Decode(m.body()));
        // Packed from the records in place: no BatchMeta is built.
        TQDS_ASSIGN_OR_RETURN(auto rows, state_.KvRetrieveRows(req.partition_id, req.keys, req.create));
        reply_samples_ = rows.size();
        r.Reply(internal::MetaMessage(m.type(), rows));
        return Status::OK();
      }
      case MsgType::kCtlKvPut: {
        TQDS_ASSIGN_OR_RETURN(auto req, internal::KvPutRequest::Decode(m.body()));
        const size_t n = req.keys.size();
        TQDS_ASSIGN_OR_RETURN(auto result, state_.KvPut(req.partition_id, req.keys, std::move(req.records)));
        reply_samples_ = n;
        rep.set_body(internal::EncodeKvPutReply(result, state_.TakeDeadPacks()));
        r.Reply(std::move(rep));
        if (n > 0) Wake(req.partition_id);  // fetches waiting for these fields
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
        BatchMeta hidden = state_.BeginKvClear(req.partition_id, req.keys);
        ReplyCleared(m, r, hidden);
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
    TQDS_ASSIGN_OR_RETURN(auto req, internal::RestoreRequest::Decode(m.body()));
    const bool dry_run = req.dry_run;
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
      auto answer = state_.TryGetMetaRows(it->request);
      if (!answer.ok()) {
        it->responder.ReplyError(answer.status());
      } else if (*answer) {
        reply_samples_ = (*answer)->size();
        it->responder.Reply(internal::MetaMessage(MsgType::kCtlGetMeta, **answer));
      } else {
        if (journal_) (void)Append(it->message);  // an attempt, as in Dispatch
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
        it->plain.ReplyError(NotReady(it->request));  // changes nothing: not journaled
        it = waiters_.erase(it);
        continue;
      }
      next = std::min(next, std::chrono::duration_cast<std::chrono::milliseconds>(it->deadline - now) +
                                std::chrono::milliseconds(1));
      ++it;
    }
    return next;
  }

  // Request counters: written on the server thread, read by request_stats.
  RequestCounters counters_;
  size_t reply_samples_ = 0;  // samples of the reply about to be sent (server thread)
  std::atomic<uint64_t> index_allocated_{0};
  std::atomic<uint64_t> index_reusable_{0};
  // Random per controller start (kept in the state directory, when there
  // is one); part of every storage key.
  uint64_t controller_id_ = (uint64_t{std::random_device{}()} << 32) ^ std::random_device{}();
  // The state directory (server thread only after Init).
  std::unique_ptr<internal::ControllerJournal> journal_;
  bool journal_ok_ = true;
  Status journal_error_;
  Clock::time_point last_failed_rotate_;
  uint64_t rotate_bytes_ = 0;
  bool replaying_ = false;
  std::unordered_map<uint64_t, CachedReply> replies_;
  std::deque<uint64_t> reply_order_;  // oldest first
  size_t reply_bytes_ = 0;
  Responder plain_;  // the request being handled, as received
  std::vector<std::string> embedded_endpoints_;
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
