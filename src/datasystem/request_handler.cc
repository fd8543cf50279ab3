// Decoding, validation and execution of datasystem requests.
#include "datasystem/request_handler.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstring>
#include <string_view>
#include <unordered_set>

#include "datasystem/protocol.h"
#include "datasystem/stats_codec.h"

namespace ds {
namespace {

using tqds::wire::MapReader;
using tqds::wire::MsgType;
using tqds::wire::PackBody;
using Packer = msgpack::packer<msgpack::sbuffer>;

Result<std::vector<std::string>> ReadKeys(const MapReader& r) {
  TQDS_ASSIGN_OR_RETURN(auto keys, r.Get<std::vector<std::string>>(proto::kKeys));
  for (const auto& k : keys) {
    if (k.empty()) return Status::Invalid(r.what(), ": empty key");
    if (k.size() > proto::kMaxKeyBytes) {
      return Status::Invalid(r.what(), ": key of ", k.size(), " bytes exceeds the limit of ",
                             proto::kMaxKeyBytes);
    }
  }
  return keys;
}

Status CheckUnique(const std::vector<std::string>& keys, const char* what) {
  std::unordered_set<std::string_view> seen;
  seen.reserve(keys.size());
  for (const auto& k : keys) {
    if (!seen.insert(k).second) return Status::Invalid(what, ": key '", k, "' appears twice");
  }
  return Status::OK();
}

Result<WriteOptions> ReadWriteOptions(const MapReader& r) {
  WriteOptions o;
  TQDS_ASSIGN_OR_RETURN(o.evictable, r.GetOr<bool>(proto::kEvictable, false));
  TQDS_ASSIGN_OR_RETURN(o.ttl_ms, r.GetOr<uint64_t>(proto::kTtlMs, 0));
  TQDS_ASSIGN_OR_RETURN(o.if_absent, r.GetOr<bool>(proto::kIfAbsent, false));
  TQDS_ASSIGN_OR_RETURN(o.all_or_nothing, r.GetOr<bool>(proto::kAllOrNothing, false));
  if (o.all_or_nothing && !o.if_absent) {
    return Status::Invalid("an all-or-nothing write needs if-absent (nx): only new keys are written together");
  }
  return o;
}

void PackCodes(Packer& pk, const std::vector<StatusCode>& codes) {
  pk.pack(proto::kCodes);
  pk.pack_array(static_cast<uint32_t>(codes.size()));
  for (auto c : codes) pk.pack_uint8(static_cast<uint8_t>(c));
}

const char* Name(MsgType t) {
  switch (t) {
    case MsgType::kDsHello: return "Hello";
    case MsgType::kDsCreate: return "Create";
    case MsgType::kDsSeal: return "Seal";
    case MsgType::kDsPut: return "Put";
    case MsgType::kDsGet: return "Get";
    case MsgType::kDsRelease: return "Release";
    case MsgType::kDsDelete: return "Delete";
    case MsgType::kDsExist: return "Exist";
    case MsgType::kDsStats: return "Stats";
    case MsgType::kDsShutdown: return "Shutdown";
    case MsgType::kDsAbort: return "Abort";
    case MsgType::kDsMetaPublish: return "MetaPublish";
    case MsgType::kDsMetaLookup: return "MetaLookup";
    case MsgType::kDsMetaRemove: return "MetaRemove";
    case MsgType::kDsDropCopies: return "DropCopies";
    case MsgType::kDsExpire: return "Expire";
    default: return "Unknown";
  }
}

// {kExist: [bool per key]}: the reply of Exist and Expire.
Message ExistReply(const Message& request, const std::vector<bool>& exist) {
  Message reply = Message::ReplyTo(request);
  reply.set_body(PackBody([&](Packer& pk) {
    pk.pack_map(1);
    pk.pack(proto::kExist);
    pk.pack_array(static_cast<uint32_t>(exist.size()));
    for (bool e : exist) {
      if (e) pk.pack_true(); else pk.pack_false();
    }
  }));
  return reply;
}

}  // namespace

std::optional<Message> RequestHandler::HandleLocal(Message&& request, Session& session) {
  if (!request.status().ok()) {  // undecodable header
    Message m(MsgType::kError, request.request_id());
    m.set_status(request.status());
    return m;
  }
  if (request.type() == MsgType::kDsRelease || request.type() == MsgType::kDsAbort) {
    auto r = MapReader::Of(request.body(), Name(request.type()));
    if (!r.ok()) return std::nullopt;
    if (request.type() == MsgType::kDsRelease) {
      auto offsets = r->Get<std::vector<uint64_t>>(proto::kOffsets);
      if (offsets.ok()) store_.Release(session, *offsets);
    } else {
      auto offsets = r->Get<std::vector<uint64_t>>(proto::kOffsets);
      if (offsets.ok()) store_.Abort(session, *offsets);
    }
    return std::nullopt;
  }
  bool retry = false;
  auto reply = Dispatch(request, session, /*local=*/true, &retry);
  if (!reply.ok()) return Message::ErrorReply(request, reply.status());
  return std::move(reply).value();
}

Message RequestHandler::HandleTcp(const Message& request, bool* retry) {
  *retry = false;
  if (request.type() == MsgType::kDsCreate || request.type() == MsgType::kDsSeal ||
      request.type() == MsgType::kDsRelease || request.type() == MsgType::kDsAbort) {
    return Message::ErrorReply(
        request, Status::Invalid(Name(request.type()),
                                 " needs shared memory and is only served on the local Unix "
                                 "socket; use Put/Get over TCP"));
  }
  Session session;  // TCP requests hold nothing across calls
  auto reply = Dispatch(request, session, /*local=*/false, retry);
  store_.CloseSession(session);
  if (!reply.ok()) return Message::ErrorReply(request, reply.status());
  return std::move(reply).value();
}

Result<Message> RequestHandler::Dispatch(const Message& request, Session& session, bool local,
                                         bool* retry) {
  switch (request.type()) {
    case MsgType::kDsHello: return Hello(request, local);
    case MsgType::kDsCreate: return Create(request, session);
    case MsgType::kDsSeal: return Seal(request, session);
    case MsgType::kDsPut: return Put(request, session, local);
    case MsgType::kDsGet: return Get(request, session, local, retry);
    case MsgType::kDsDelete: return Delete(request, local);
    case MsgType::kDsMetaPublish:
    case MsgType::kDsMetaLookup:
    case MsgType::kDsMetaRemove:
    case MsgType::kDsDropCopies:
      if (local || context_.cluster == nullptr) {
        return Status::Invalid(Name(request.type()),
                               " is a worker-to-worker message of a cluster; this worker was "
                               "started without --etcd_address");
      }
      return context_.cluster->HandlePeer(request);
    case MsgType::kDsExist: return Exist(request, local);
    case MsgType::kDsExpire: return Expire(request, local);
    case MsgType::kDsStats: return Stats(request);
    case MsgType::kDsShutdown: {
      Message reply = Message::ReplyTo(request);
      reply.set_body(PackBody([&](Packer& pk) {
        pk.pack_map(1);
        pk.pack(proto::kPid);
        pk.pack(context_.pid);
      }));
      if (context_.request_shutdown) context_.request_shutdown();
      return reply;
    }
    default:
      return Status::Invalid("unknown datasystem message type ",
                             static_cast<int>(request.type()));
  }
}

Result<Message> RequestHandler::Hello(const Message& request, bool local) {
  Message reply = Message::ReplyTo(request);
  reply.set_body(PackBody([&](Packer& pk) {
    pk.pack_map(6);
    pk.pack(proto::kWorker);
    pk.pack(context_.worker);
    pk.pack(proto::kInstance);
    pk.pack(context_.instance);
    pk.pack(proto::kPid);
    pk.pack(context_.pid);
    pk.pack(proto::kSocket);
    pk.pack(context_.socket_path);
    pk.pack(proto::kArenaSize);
    pk.pack(local ? context_.arena_size : 0);
    pk.pack(proto::kInlineMax);
    pk.pack(proto::kDefaultInlineMax);
  }));
  return reply;
}

Result<Message> RequestHandler::Create(const Message& request, Session& session) {
  TQDS_ASSIGN_OR_RETURN(auto r, MapReader::Of(request.body(), "Create"));
  TQDS_ASSIGN_OR_RETURN(auto keys, ReadKeys(r));
  TQDS_RETURN_NOT_OK(CheckUnique(keys, "Create"));
  TQDS_ASSIGN_OR_RETURN(auto sizes, r.Get<std::vector<uint64_t>>(proto::kSizes));
  TQDS_ASSIGN_OR_RETURN(auto opts, ReadWriteOptions(r));
  if (sizes.size() != keys.size()) {
    return Status::Invalid("Create: ", keys.size(), " keys but ", sizes.size(), " sizes");
  }
  TQDS_ASSIGN_OR_RETURN(auto slots, store_.Create(session, std::move(keys), sizes, opts));
  Message reply = Message::ReplyTo(request);
  reply.set_body(PackBody([&](Packer& pk) {
    pk.pack_map(2);
    pk.pack(proto::kCodes);
    pk.pack_array(static_cast<uint32_t>(slots.size()));
    for (const auto& s : slots) pk.pack_uint8(static_cast<uint8_t>(s.code));
    pk.pack(proto::kOffsets);
    pk.pack_array(static_cast<uint32_t>(slots.size()));
    for (const auto& s : slots) pk.pack_uint64(s.offset);
  }));
  return reply;
}

Result<Message> RequestHandler::Seal(const Message& request, Session& session) {
  TQDS_ASSIGN_OR_RETURN(auto r, MapReader::Of(request.body(), "Seal"));
  TQDS_ASSIGN_OR_RETURN(auto offsets, r.Get<std::vector<uint64_t>>(proto::kOffsets));
  std::vector<std::string> sealed;
  const bool cluster = context_.cluster != nullptr;
  auto codes = store_.Seal(session, offsets, cluster ? &sealed : nullptr);
  if (cluster && !sealed.empty()) context_.cluster->Published(sealed, /*wait=*/true);
  Message reply = Message::ReplyTo(request);
  reply.set_body(PackBody([&](Packer& pk) {
    pk.pack_map(1);
    PackCodes(pk, codes);
  }));
  return reply;
}

Result<Message> RequestHandler::Put(const Message& request, Session& session, bool local) {
  TQDS_ASSIGN_OR_RETURN(auto r, MapReader::Of(request.body(), "Put"));
  TQDS_ASSIGN_OR_RETURN(auto keys, ReadKeys(r));
  TQDS_RETURN_NOT_OK(CheckUnique(keys, "Put"));
  TQDS_ASSIGN_OR_RETURN(auto opts, ReadWriteOptions(r));
  const auto& payloads = request.payloads();
  if (payloads.size() != keys.size()) {
    return Status::Invalid("Put: ", keys.size(), " keys but ", payloads.size(), " payload frames");
  }
  std::vector<uint64_t> sizes(keys.size());
  for (size_t i = 0; i < keys.size(); ++i) sizes[i] = payloads[i].size();
  const size_t n = keys.size();
  TQDS_ASSIGN_OR_RETURN(auto slots, store_.Create(session, std::move(keys), sizes, opts));
  std::vector<uint64_t> to_seal;
  to_seal.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    if (slots[i].code != StatusCode::kOk) continue;
    if (sizes[i] > 0) std::memcpy(store_.base() + slots[i].offset, payloads[i].data(), sizes[i]);
    to_seal.push_back(slots[i].offset);
  }
  std::vector<std::string> published;
  auto sealed = store_.Seal(session, to_seal, &published);
  std::vector<StatusCode> codes(n);
  for (size_t i = 0, j = 0; i < n; ++i) {
    codes[i] = slots[i].code != StatusCode::kOk ? slots[i].code : sealed[j++];
  }
  if (context_.cluster != nullptr && !published.empty()) {
    context_.cluster->Published(published, /*wait=*/local);
  }
  Message reply = Message::ReplyTo(request);
  reply.set_body(PackBody([&](Packer& pk) {
    pk.pack_map(1);
    PackCodes(pk, codes);
  }));
  return reply;
}

Result<Message> RequestHandler::Get(const Message& request, Session& session, bool local,
                                    bool* retry) {
  TQDS_ASSIGN_OR_RETURN(auto r, MapReader::Of(request.body(), "Get"));
  TQDS_ASSIGN_OR_RETURN(auto keys, ReadKeys(r));
  TQDS_ASSIGN_OR_RETURN(uint64_t wait_ms, r.GetOr<uint64_t>(proto::kWaitMs, 0));
  TQDS_ASSIGN_OR_RETURN(uint64_t inline_max, r.GetOr<uint64_t>(proto::kInlineMax, 0));
  if (!local) inline_max = UINT64_MAX;  // TCP: every value travels as a payload frame
  wait_ms = std::min<uint64_t>(wait_ms, 24ull * 3600 * 1000);
  auto wait = std::chrono::milliseconds(local ? wait_ms : 0);
  const bool fetch = local && context_.cluster != nullptr;
  TQDS_ASSIGN_OR_RETURN(auto found,
                        store_.Get(session, keys, fetch ? std::chrono::milliseconds(0) : wait));
  if (fetch) TQDS_RETURN_NOT_OK(FetchMissing(session, keys, found, wait));
  if (!local && wait_ms > 0) {
    for (const auto& f : found) {
      if (f.code != StatusCode::kOk) {
        *retry = true;
        break;
      }
    }
  }
  Message reply = Message::ReplyTo(request);
  std::vector<uint64_t> release;
  for (const auto& f : found) {
    if (f.code == StatusCode::kOk && f.size <= inline_max) {
      reply.payloads().push_back(tqds::Buffer::Copy(store_.base() + f.offset, f.size));
      release.push_back(f.offset);
    }
  }
  store_.Release(session, release);
  reply.set_body(PackBody([&](Packer& pk) {
    pk.pack_map(4);
    pk.pack(proto::kCodes);
    pk.pack_array(static_cast<uint32_t>(found.size()));
    for (const auto& f : found) pk.pack_uint8(static_cast<uint8_t>(f.code));
    pk.pack(proto::kSizes);
    pk.pack_array(static_cast<uint32_t>(found.size()));
    for (const auto& f : found) pk.pack_uint64(f.size);
    pk.pack(proto::kOffsets);
    pk.pack_array(static_cast<uint32_t>(found.size()));
    for (const auto& f : found) pk.pack_uint64(f.code == StatusCode::kOk ? f.offset : 0);
    pk.pack(proto::kInline);
    pk.pack_array(static_cast<uint32_t>(found.size()));
    for (const auto& f : found) {
      bool in = f.code == StatusCode::kOk && f.size <= inline_max;
      if (in) pk.pack_true(); else pk.pack_false();
    }
  }));
  return reply;
}

Status RequestHandler::FetchMissing(Session& session, const std::vector<std::string>& keys,
                                    std::vector<Located>& found, std::chrono::milliseconds wait) {
  const auto deadline = std::chrono::steady_clock::now() + wait;
  auto release_all = [&] {
    std::vector<uint64_t> pinned;
    for (const auto& f : found) {
      if (f.code == StatusCode::kOk) pinned.push_back(f.offset);
    }
    store_.Release(session, pinned);
  };
  auto still_missing = [&](std::vector<size_t>& idx, std::vector<std::string>& missing) {
    idx.clear();
    missing.clear();
    for (size_t i = 0; i < keys.size(); ++i) {
      if (found[i].code != StatusCode::kOk) {
        idx.push_back(i);
        missing.push_back(keys[i]);
      }
    }
    return !missing.empty();
  };
  std::vector<size_t> idx;
  std::vector<std::string> missing;
  while (still_missing(idx, missing)) {
    std::vector<Located> pulled(missing.size());
    Status st = context_.cluster->Fetch(session, missing, &pulled);
    for (size_t j = 0; j < idx.size(); ++j) {
      if (pulled[j].code == StatusCode::kOk) found[idx[j]] = pulled[j];
    }
    if (!st.ok()) {
      release_all();
      return st;
    }
    // Cached pulls are local now; wait a little for the rest (a local seal
    // wakes us at once; a remote one is seen at the next round).
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (!still_missing(idx, missing)) break;
    auto slice = std::clamp(left, std::chrono::milliseconds(0), std::chrono::milliseconds(20));
    auto again = store_.Get(session, missing, slice);
    if (!again.ok()) {
      release_all();
      return again.status();
    }
    for (size_t j = 0; j < idx.size(); ++j) found[idx[j]] = (*again)[j];
    if (left.count() <= 0) break;
  }
  return Status::OK();
}

Result<Message> RequestHandler::Delete(const Message& request, bool local) {
  TQDS_ASSIGN_OR_RETURN(auto r, MapReader::Of(request.body(), "Delete"));
  TQDS_ASSIGN_OR_RETURN(auto keys, ReadKeys(r));
  std::vector<bool> here = store_.Exist(keys);
  size_t n = store_.Delete(keys);
  if (context_.cluster != nullptr) {
    auto elsewhere = context_.cluster->DeleteRemote(keys, /*wait=*/local);
    n = 0;
    for (size_t i = 0; i < keys.size(); ++i) n += (here[i] || elsewhere[i]) ? 1 : 0;
  }
  Message reply = Message::ReplyTo(request);
  reply.set_body(PackBody([&](Packer& pk) {
    pk.pack_map(1);
    pk.pack(proto::kDeleted);
    pk.pack_uint64(n);
  }));
  return reply;
}

Result<Message> RequestHandler::Exist(const Message& request, bool local) {
  TQDS_ASSIGN_OR_RETURN(auto r, MapReader::Of(request.body(), "Exist"));
  TQDS_ASSIGN_OR_RETURN(auto keys, ReadKeys(r));
  auto exist = store_.Exist(keys);
  if (local && context_.cluster != nullptr) {
    std::vector<size_t> idx;
    std::vector<std::string> missing;
    for (size_t i = 0; i < keys.size(); ++i) {
      if (!exist[i]) {
        idx.push_back(i);
        missing.push_back(keys[i]);
      }
    }
    if (!missing.empty()) {
      auto remote = context_.cluster->ExistRemote(missing);
      for (size_t j = 0; j < idx.size(); ++j) exist[idx[j]] = remote[j];
    }
  }
  return ExistReply(request, exist);
}

Result<Message> RequestHandler::Expire(const Message& request, bool local) {
  TQDS_ASSIGN_OR_RETURN(auto r, MapReader::Of(request.body(), "Expire"));
  TQDS_ASSIGN_OR_RETURN(auto keys, ReadKeys(r));
  TQDS_ASSIGN_OR_RETURN(uint64_t ttl_ms, r.Get<uint64_t>(proto::kTtlMs));
  auto exist = store_.Expire(keys, ttl_ms);
  // A client's request (on the local socket) reaches every copy in the
  // cluster; one over TCP (another worker's ExpireRemote) this store only.
  if (local && context_.cluster != nullptr) {
    auto elsewhere = context_.cluster->ExpireRemote(keys, ttl_ms);
    for (size_t i = 0; i < keys.size(); ++i) exist[i] = exist[i] || elsewhere[i];
  }
  return ExistReply(request, exist);
}

WorkerStats RequestHandler::CollectStats() const {
  StoreStats st = store_.Stats();
  WorkerStats s;
  s.worker = context_.worker;
  s.metrics = context_.metrics;
  s.memory_populated = context_.memory_populated ? context_.memory_populated() : true;
  s.pid = context_.pid;
  s.capacity = st.capacity;
  s.used = st.used;
  s.pinned_blocks = st.pinned_blocks;
  s.pending_creates = st.pending_creates;
  s.objects = st.objects;
  s.resident_objects = st.resident_objects;
  s.spilled_objects = st.spilled_objects;
  s.spill_used = st.spill_used;
  s.spill_limit = st.spill_limit;
  s.spills = st.spills;
  s.reloads = st.reloads;
  s.evictions = st.evictions;
  s.clients = context_.clients ? context_.clients() : 0;
  if (context_.cluster != nullptr) {
    ClusterStats c = context_.cluster->Stats();
    s.coordination = std::move(c.coordination);
    s.peers = std::move(c.peers);
    s.pulls = c.pulls;
    s.pulled_bytes = c.pulled_bytes;
    s.pull_failures = c.pull_failures;
  }
  return s;
}

Result<Message> RequestHandler::Stats(const Message& request) {
  const WorkerStats s = CollectStats();
  Message reply = Message::ReplyTo(request);
  reply.set_body(EncodeWorkerStats(s));
  return reply;
}

}  // namespace ds
