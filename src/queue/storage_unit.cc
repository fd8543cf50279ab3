// SimpleStorageUnit: an in-memory key -> bytes server over ZMQ. Received
// payload frames are kept as they arrived (no copy): each stored value is a
// view of its frame, and replies send views of the stored frames.
//
// A unit bound on tcp:// also listens on an ipc:// (Unix socket) endpoint
// that it announces in its UnitStats reply, so that a manager on the same
// host can skip the TCP stack. With the deployment's keys it also serves
// the stream channel (stream_rpc.h) on the same address, announced as its
// port: managers on other hosts move payloads there, authenticated but not
// encrypted, instead of through CURVE. The listeners run on threads of
// their own and share one thread-safe SimpleStore.
#include "tq/storage_unit.h"

#include <spdlog/spdlog.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <random>
#include <set>
#include <string_view>
#include <tuple>

#include "common/process.h"
#include "common/socket_io.h"
#include "common/wire/rpc.h"
#include "common/wire/stream_rpc.h"
#include "queue/ctl_messages.h"
#include "queue/protocol.h"
#include "queue/simple_codec.h"
#include "queue/simple_store.h"

namespace tq {

using tqds::Buffer;
using tqds::Result;
using tqds::Status;
using tqds::wire::Message;
using tqds::wire::MsgType;
using tqds::wire::Responder;
namespace simple = internal::simple;

Status StorageUnitOptions::Validate() const {
  if (address.empty()) return Status::Invalid("storage unit address must not be empty");
  if (capacity_bytes == 0) return Status::Invalid("storage unit capacity must be > 0");
  return Status::OK();
}

namespace {

// "ipc://<dir>/tq-unit-<pid>-<n>.sock" in $TMPDIR (or /tmp when that path
// would not fit in a Unix socket address).
std::string IpcEndpoint() {
  static std::atomic<uint64_t> next{0};
  std::string name = "tq-unit-" + std::to_string(::getpid()) + "-" + std::to_string(next++) + ".sock";
  const char* tmp = std::getenv("TMPDIR");
  std::string dir = tmp != nullptr && *tmp != '\0' ? tmp : "/tmp";
  if (dir.size() + 1 + name.size() > 100) dir = "/tmp";
  return "ipc://" + dir + "/" + name;
}

// Samples named by the request being handled on this listener thread (each
// listener handles one request at a time), for its op counters.
thread_local uint64_t t_samples = 0;

uint64_t RandomInstance() {
  std::random_device rd;
  return (uint64_t{rd()} << 32) ^ rd() ^ static_cast<uint64_t>(::getpid());
}

class StorageUnitImpl : public SimpleStorageUnit {
 public:
  StorageUnitImpl() : instance_(RandomInstance()) {}
  ~StorageUnitImpl() override { Stop(); }

  Status Init(const StorageUnitOptions& o) {
    auto handler_for = [this](size_t max_frame) {
      return [this, max_frame](Message&& m, Responder r) { Handle(std::move(m), std::move(r), max_frame); };
    };
    TQDS_ASSIGN_OR_RETURN(server_, tqds::wire::RpcServer::Bind(
                                       o.address, handler_for(simple::FrameBuilder::MaxFrameFor(o.address))));
    store_ = std::make_unique<simple::SimpleStore>(o.capacity_bytes, server_->endpoint(), o.capacity_samples);
    if (server_->endpoint().rfind("tcp://", 0) == 0) {
      // Best effort: without it, same-host clients use tcp like remote ones.
      auto ipc = tqds::wire::RpcServer::Bind(IpcEndpoint(), handler_for(simple::FrameBuilder::kSocketFrameBytes));
      if (ipc.ok()) {
        ipc_server_ = ipc.MoveValue();
      } else {
        spdlog::info("storage unit {}: no ipc endpoint: {}", server_->endpoint(), ipc.status().ToString());
      }
    }
    StartStream(handler_for(simple::FrameBuilder::kSocketFrameBytes), o.capacity_bytes);
    server_->Start();
    if (ipc_server_) ipc_server_->Start();
    if (!o.controller_address.empty()) {
      TQDS_ASSIGN_OR_RETURN(auto ctl, tqds::wire::RpcClient::Connect(o.controller_address));
      Message reg(MsgType::kCtlRegisterStorage, 0);
      reg.set_body(internal::RegisterStorageRequest{server_->endpoint()}.Encode());
      auto rep = ctl->CallSync(std::move(reg), std::chrono::seconds(10));
      if (!rep.ok()) return rep.status().WithContext("registering with controller " + o.controller_address);
    }
    return Status::OK();
  }
  const std::string& address() const override { return server_->endpoint(); }
  StorageUnitStats stats() const override {
    const auto st = store_->stats();
    return StorageUnitStats{st.keys, st.samples, st.bytes, st.capacity, st.capacity_samples, counters_.Snapshot()};
  }
  void Stop() override {
    if (stream_server_) stream_server_->Stop();
    if (ipc_server_) {
      ipc_server_->Stop();
      // ZMQ may leave the socket file behind (its listener closes late or
      // not at all before exit); nobody else can own this pid-named path.
      const std::string& ep = ipc_server_->endpoint();
      if (ep.rfind("ipc://", 0) == 0) ::unlink(ep.c_str() + 6);
    }
    if (server_) server_->Stop();
  }

 private:
  // The stream channel on the tcp endpoint's address, when the process has
  // server keys (best effort: without it, every client uses CURVE).
  void StartStream(tqds::wire::RpcServer::Handler handler, uint64_t capacity) {
    const std::string& ep = server_->endpoint();
    std::string host = tqds::net::TcpEndpointHost(ep);
    if (host.empty()) return;
    auto id = tqds::wire::ProcessStreamIdentity();
    if (!id.ok() || *id == nullptr || !(*id)->can_serve) return;
    if (host == "*") host = "0.0.0.0";
    tqds::wire::StreamServerOptions so;
    so.limits.max_payload_bytes = capacity;  // a put beyond it would fail anyway
    auto s = tqds::wire::StreamServer::Start(host, 0, "storage unit " + ep, std::move(handler), so);
    if (!s.ok()) {
      spdlog::info("storage unit {}: no stream channel: {}", ep, s.status().ToString());
      return;
    }
    stream_server_ = s.MoveValue();
    stream_port_ = static_cast<uint32_t>(stream_server_->port());
    spdlog::info("storage unit {}: stream channel on {}", ep, stream_server_->endpoint());
  }

  // Every request type a unit serves: upstream's op_type it is counted
  // under (null: not counted) and its handler.
  struct Route {
    MsgType type;
    const char* op;
    Message (*fn)(StorageUnitImpl& unit, const Message& m, size_t max_frame);
  };
  static const Route* RouteOf(MsgType type) {
    static const Route kRoutes[] = {
        {MsgType::kUnitPutGroups, "PUT_DATA", [](StorageUnitImpl& u, const Message& m, size_t) { return u.PutGroups(m); }},
        {MsgType::kUnitGetGroups, "GET_DATA",
         [](StorageUnitImpl& u, const Message& m, size_t max_frame) { return u.GetGroups(m, max_frame); }},
        {MsgType::kUnitClearGroups, "CLEAR_DATA",
         [](StorageUnitImpl& u, const Message& m, size_t) { return u.ClearGroups(m); }},
        {MsgType::kUnitPut, "PUT_DATA", [](StorageUnitImpl& u, const Message& m, size_t) { return u.Put(m); }},
        {MsgType::kUnitGet, "GET_DATA", [](StorageUnitImpl& u, const Message& m, size_t) { return u.Get(m); }},
        {MsgType::kUnitClear, "CLEAR_DATA", [](StorageUnitImpl& u, const Message& m, size_t) { return u.Clear(m); }},
        {MsgType::kUnitStats, nullptr, [](StorageUnitImpl& u, const Message& m, size_t) { return u.Stats(m); }},
        {MsgType::kCtlPing, nullptr, [](StorageUnitImpl&, const Message& m, size_t) { return Message::ReplyTo(m); }},
    };
    for (const auto& route : kRoutes) {
      if (route.type == type) return &route;
    }
    return nullptr;
  }

  // Runs on either listener's thread; `max_frame` suits that listener's
  // transport.
  void Handle(Message&& m, Responder r, size_t max_frame) {
    const Route* route = RouteOf(m.type());
    if (route == nullptr) {
      return r.ReplyError(Status::Invalid("storage unit: unknown message type ", int(m.type())));
    }
    if (route->op == nullptr) return r.Reply(route->fn(*this, m, max_frame));
    Counted(route->op, r, [&] { return route->fn(*this, m, max_frame); });
  }

  // Replies with what `handle` answers, counting it under `op` (upstream's
  // op_type) with its latency and the samples it named.
  template <typename F>
  void Counted(const char* op, Responder& r, F&& handle) {
    const auto start = std::chrono::steady_clock::now();
    t_samples = 0;
    Message reply = handle();
    const bool ok = reply.status().ok();
    counters_.Record(op, std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), ok,
                     t_samples);
    r.Reply(std::move(reply));
  }

  // Distinct samples the groups name (a sample's fields may come in
  // several groups).
  static uint64_t SamplesOf(const std::vector<simple::KeyGroup>& groups) {
    if (groups.size() == 1) return groups[0].indexes.size();
    std::set<std::tuple<uint64_t, std::string_view, int64_t, uint64_t>> seen;
    for (const auto& g : groups) {
      for (size_t i = 0; i < g.indexes.size(); ++i) {
        seen.emplace(g.controller_id, g.partition_id, g.indexes[i], g.generations[i]);
      }
    }
    return seen.size();
  }

  Message PutGroups(const Message& m) {
    auto req = simple::DecodeGroups(m.body(), true, "UnitPutGroups");
    if (!req.ok()) return Message::ErrorReply(m, req.status());
    auto values = simple::SplitFrames(m.payloads(), req->aligns, req->sizes, "UnitPutGroups");
    if (!values.ok()) return Message::ErrorReply(m, values.status());
    t_samples = SamplesOf(req->groups);
    Status st = store_->Put(req->groups, *values);
    return st.ok() ? Message::ReplyTo(m) : Message::ErrorReply(m, st);
  }

  Message GetGroups(const Message& m, size_t max_frame) {
    auto req = simple::DecodeGroups(m.body(), false, "UnitGetGroups");
    if (!req.ok()) return Message::ErrorReply(m, req.status());
    t_samples = SamplesOf(req->groups);
    auto values = store_->Get(req->groups);
    if (!values.ok()) return Message::ErrorReply(m, values.status());
    std::vector<uint64_t> sizes;
    sizes.reserve(values->size());
    simple::FrameBuilder frames(max_frame);
    for (const Buffer& v : *values) {
      sizes.push_back(v.size());
      frames.Add(v);
    }
    Message reply = Message::ReplyTo(m);
    std::vector<uint64_t> aligns;
    reply.payloads() = frames.Finish(&aligns);
    reply.set_body(simple::EncodeSizes(sizes, aligns));
    return reply;
  }

  Message ClearGroups(const Message& m) {
    auto req = simple::DecodeGroups(m.body(), false, "UnitClearGroups");
    if (!req.ok()) return Message::ErrorReply(m, req.status());
    t_samples = SamplesOf(req->groups);
    store_->Erase(req->groups);
    return Message::ReplyTo(m);
  }

  // Legacy string-key messages (one payload frame per key).
  Message Put(const Message& m) {
    auto keys = internal::DecodeKeys(m.body(), "UnitPut");
    if (!keys.ok()) return Message::ErrorReply(m, keys.status());
    if (keys->size() != m.payloads().size()) {
      return Message::ErrorReply(m, Status::Invalid("UnitPut: ", keys->size(), " keys but ",
                                                    m.payloads().size(), " payload frames"));
    }
    Status st = store_->PutKeys(*keys, m.payloads());
    return st.ok() ? Message::ReplyTo(m) : Message::ErrorReply(m, st);
  }

  Message Get(const Message& m) {
    auto keys = internal::DecodeKeys(m.body(), "UnitGet");
    if (!keys.ok()) return Message::ErrorReply(m, keys.status());
    Message reply = Message::ReplyTo(m);
    std::vector<bool> found;
    reply.payloads() = store_->GetKeys(*keys, &found);
    reply.set_body(internal::EncodeFound(found));
    return reply;
  }

  Message Clear(const Message& m) {
    auto keys = internal::DecodeKeys(m.body(), "UnitClear");
    if (!keys.ok()) return Message::ErrorReply(m, keys.status());
    store_->EraseKeys(*keys);
    return Message::ReplyTo(m);
  }

  Message Stats(const Message& m) {
    internal::UnitStatsReply r{stats(), tqds::ResidentBytes(), ipc_server_ ? ipc_server_->endpoint() : std::string(),
                               instance_, stream_port_};
    return Message::ReplyTo(m, r.Encode());
  }

  // Constant after Init().
  const uint64_t instance_;  // tells this unit apart from another at a reused ipc path
  std::unique_ptr<simple::SimpleStore> store_;
  std::unique_ptr<tqds::wire::RpcServer> server_;
  std::unique_ptr<tqds::wire::RpcServer> ipc_server_;  // null unless bound on tcp
  std::unique_ptr<tqds::wire::StreamServer> stream_server_;  // null without keys or tcp
  uint32_t stream_port_ = 0;                                  // of stream_server_; 0: none
  RequestCounters counters_;                           // thread-safe
};

}  // namespace

Result<std::unique_ptr<SimpleStorageUnit>> SimpleStorageUnit::Start(const StorageUnitOptions& options) {
  TQDS_RETURN_NOT_OK(options.Validate());
  auto unit = std::make_unique<StorageUnitImpl>();
  TQDS_RETURN_NOT_OK(unit->Init(options));
  return std::unique_ptr<SimpleStorageUnit>(std::move(unit));
}

}  // namespace tq
