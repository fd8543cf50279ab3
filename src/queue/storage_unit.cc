// SimpleStorageUnit: an in-memory key -> bytes server over ZMQ. Received
// payload frames are kept as they arrived (no copy); replies reference them.
#include "tq/storage_unit.h"

#include <spdlog/spdlog.h>

#include <unordered_map>

#include "common/wire/rpc.h"
#include "queue/protocol.h"

namespace tq {

using tqds::Buffer;
using tqds::Result;
using tqds::Status;
using tqds::wire::Message;
using tqds::wire::MsgType;
using tqds::wire::Responder;

Status StorageUnitOptions::Validate() const {
  if (address.empty()) return Status::Invalid("storage unit address must not be empty");
  if (capacity_bytes == 0) return Status::Invalid("storage unit capacity must be > 0");
  return Status::OK();
}

namespace {

class StorageUnitImpl : public SimpleStorageUnit {
 public:
  explicit StorageUnitImpl(uint64_t capacity) : capacity_(capacity) {}
  ~StorageUnitImpl() override { Stop(); }

  Status Init(const StorageUnitOptions& o) {
    TQDS_ASSIGN_OR_RETURN(server_, tqds::wire::RpcServer::Bind(
                                       o.address, [this](Message&& m, Responder r) {
                                         Handle(std::move(m), std::move(r));
                                       }));
    server_->Start();
    if (!o.controller_address.empty()) {
      TQDS_ASSIGN_OR_RETURN(auto ctl, tqds::wire::RpcClient::Connect(o.controller_address));
      Message reg(MsgType::kCtlRegisterStorage, 0);
      reg.set_body(tqds::wire::PackBody([&](auto& pk) {
        pk.pack_map(1);
        pk.pack("endpoint");
        pk.pack(server_->endpoint());
      }));
      auto rep = ctl->CallSync(std::move(reg), std::chrono::seconds(10));
      if (!rep.ok()) return rep.status().WithContext("registering with controller " + o.controller_address);
    }
    return Status::OK();
  }
  const std::string& address() const override { return server_->endpoint(); }
  void Stop() override {
    if (server_) server_->Stop();
  }

 private:
  void Handle(Message&& m, Responder r) {
    switch (m.type()) {
      case MsgType::kUnitPut: return r.Reply(Put(m));
      case MsgType::kUnitGet: return r.Reply(Get(m));
      case MsgType::kUnitClear: return r.Reply(Clear(m));
      case MsgType::kUnitStats: return r.Reply(Stats(m));
      case MsgType::kCtlPing: return r.Reply(Message::ReplyTo(m));
      default:
        return r.ReplyError(Status::Invalid("storage unit: unknown message type ", int(m.type())));
    }
  }

  Message Put(const Message& m) {
    auto keys = internal::DecodeKeys(m.body(), "UnitPut");
    if (!keys.ok()) return Message::ErrorReply(m, keys.status());
    if (keys->size() != m.payloads().size()) {
      return Message::ErrorReply(m, Status::Invalid("UnitPut: ", keys->size(), " keys but ",
                                                    m.payloads().size(), " payload frames"));
    }
    int64_t delta = 0;
    for (size_t i = 0; i < keys->size(); ++i) {
      delta += static_cast<int64_t>(m.payloads()[i].size());
      auto it = data_.find((*keys)[i]);
      if (it != data_.end()) delta -= static_cast<int64_t>(it->second.size());
    }
    if (delta > 0 && used_ + static_cast<uint64_t>(delta) > capacity_) {
      return Message::ErrorReply(
          m, Status::OutOfSpace("storage unit ", address(), " is full: ", used_, " of ", capacity_,
                                " bytes used and the put needs ", delta,
                                " more; clear consumed samples or give the unit more capacity"));
    }
    for (size_t i = 0; i < keys->size(); ++i) data_[(*keys)[i]] = m.payloads()[i];
    used_ = static_cast<uint64_t>(static_cast<int64_t>(used_) + delta);
    return Message::ReplyTo(m);
  }

  Message Get(const Message& m) {
    auto keys = internal::DecodeKeys(m.body(), "UnitGet");
    if (!keys.ok()) return Message::ErrorReply(m, keys.status());
    Message reply = Message::ReplyTo(m);
    std::vector<bool> found;
    found.reserve(keys->size());
    for (const auto& k : *keys) {
      auto it = data_.find(k);
      found.push_back(it != data_.end());
      reply.payloads().push_back(it != data_.end() ? it->second : Buffer());
    }
    reply.set_body(tqds::wire::PackBody([&](auto& pk) {
      pk.pack_map(1);
      pk.pack("found");
      pk.pack(found);
    }));
    return reply;
  }

  Message Clear(const Message& m) {
    auto keys = internal::DecodeKeys(m.body(), "UnitClear");
    if (!keys.ok()) return Message::ErrorReply(m, keys.status());
    for (const auto& k : *keys) {
      auto it = data_.find(k);
      if (it == data_.end()) continue;
      used_ -= it->second.size();
      data_.erase(it);
    }
    return Message::ReplyTo(m);
  }

  Message Stats(const Message& m) {
    Message reply = Message::ReplyTo(m);
    reply.set_body(tqds::wire::PackBody([&](auto& pk) {
      pk.pack_map(3);
      pk.pack("keys");
      pk.pack_uint64(data_.size());
      pk.pack("bytes");
      pk.pack_uint64(used_);
      pk.pack("capacity");
      pk.pack_uint64(capacity_);
    }));
    return reply;
  }

  const uint64_t capacity_;
  std::unique_ptr<tqds::wire::RpcServer> server_;
  // Touched only on the server thread.
  std::unordered_map<std::string, Buffer> data_;
  uint64_t used_ = 0;
};

}  // namespace

Result<std::unique_ptr<SimpleStorageUnit>> SimpleStorageUnit::Start(const StorageUnitOptions& options) {
  TQDS_RETURN_NOT_OK(options.Validate());
  auto unit = std::make_unique<StorageUnitImpl>(options.capacity_bytes);
  TQDS_RETURN_NOT_OK(unit->Init(options));
  return std::unique_ptr<SimpleStorageUnit>(std::move(unit));
}

}  // namespace tq
