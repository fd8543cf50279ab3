// Decoding, validation and execution of datasystem requests.
#include "datasystem/request_handler.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstring>
#include <string_view>
#include <unordered_set>

#include "datasystem/client_messages.h"
#include "datasystem/protocol.h"
#include "datasystem/stats_codec.h"

namespace ds {
namespace {

using tqds::wire::MsgType;

WriteOptions Options(const msg::WriteFlags& w) {
  WriteOptions o;
  o.evictable = w.evictable;
  o.ttl_ms = w.ttl_ms;
  o.if_absent = w.if_absent;
  o.all_or_nothing = w.all_or_nothing;
  return o;
}

Status CheckUnique(const std::vector<std::string>& keys, const char* what) {
  std::unordered_set<std::string_view> seen;
  seen.reserve(keys.size());
  for (const auto& k : keys) {
    if (!seen.insert(k).second) return Status::Invalid(what, ": key '", k, "' appears twice");
  }
  return Status::OK();
}

}  // namespace

// Every request type the worker serves: its name, where it is served
// (Route::Where) and its handler.
const RequestHandler::Route RequestHandler::kRoutes[] = {
    {MsgType::kDsHello, "Hello", Route::kBoth, &RequestHandler::Hello},
    {MsgType::kDsCreate, "Create", Route::kUnix, &RequestHandler::Create},
    {MsgType::kDsSeal, "Seal", Route::kUnix, &RequestHandler::Seal},
    {MsgType::kDsPut, "Put", Route::kBoth, &RequestHandler::Put},
    {MsgType::kDsGet, "Get", Route::kBoth, &RequestHandler::Get},
    {MsgType::kDsRelease, "Release", Route::kUnixOneWay, &RequestHandler::Release},
    {MsgType::kDsDelete, "Delete", Route::kBoth, &RequestHandler::Delete},
    {MsgType::kDsExist, "Exist", Route::kBoth, &RequestHandler::Exist},
    {MsgType::kDsStats, "Stats", Route::kBoth, &RequestHandler::Stats},
    {MsgType::kDsShutdown, "Shutdown", Route::kBoth, &RequestHandler::Shutdown},
    {MsgType::kDsAbort, "Abort", Route::kUnixOneWay, &RequestHandler::Abort},
    {MsgType::kDsMetaPublish, "MetaPublish", Route::kBoth, &RequestHandler::Peer},
    {MsgType::kDsMetaLookup, "MetaLookup", Route::kBoth, &RequestHandler::Peer},
    {MsgType::kDsMetaRemove, "MetaRemove", Route::kBoth, &RequestHandler::Peer},
    {MsgType::kDsDropCopies, "DropCopies", Route::kBoth, &RequestHandler::Peer},
    {MsgType::kDsExpire, "Expire", Route::kBoth, &RequestHandler::Expire},
};

const RequestHandler::Route* RequestHandler::RouteOf(MsgType type) {
  for (const auto& r : kRoutes) {
    if (r.type == type) return &r;
  }
  return nullptr;
}

std::optional<Message> RequestHandler::HandleLocal(Message&& request, Session& session) {
  if (!request.status().ok()) {  // undecodable header
    Message m(MsgType::kError, request.request_id());
    m.set_status(request.status());
    return m;
  }
  const Route* route = RouteOf(request.type());
  bool retry = false;
  Call call{session, /*local=*/true, &retry};
  auto reply = Dispatch(route, request, call);
  if (route != nullptr && route->where == Route::kUnixOneWay) return std::nullopt;
  if (!reply.ok()) return Message::ErrorReply(request, reply.status());
  return std::move(reply).value();
}

Message RequestHandler::HandleTcp(const Message& request, bool* retry) {
  *retry = false;
  const Route* route = RouteOf(request.type());
  if (route != nullptr && route->where != Route::kBoth) {
    return Message::ErrorReply(request, Status::Invalid(route->name,
                                                        " needs shared memory and is only served on the local "
                                                        "Unix socket; use Put/Get over TCP"));
  }
  Session session;  // TCP requests hold nothing across calls
  Call call{session, /*local=*/false, retry};
  auto reply = Dispatch(route, request, call);
  store_.CloseSession(session);
  if (!reply.ok()) return Message::ErrorReply(request, reply.status());
  return std::move(reply).value();
}

Result<Message> RequestHandler::Dispatch(const Route* route, const Message& request, Call& call) {
  if (route == nullptr) {
    return Status::Invalid("unknown datasystem message type ", static_cast<int>(request.type()));
  }
  return (this->*(route->fn))(request, call);
}

Result<Message> RequestHandler::Peer(const Message& request, Call& call) {
  if (call.local || context_.cluster == nullptr) {
    return Status::Invalid(RouteOf(request.type())->name,
                           " is a worker-to-worker message of a cluster; this worker was started without "
                           "--etcd_address");
  }
  return context_.cluster->HandlePeer(request);
}

Result<Message> RequestHandler::Shutdown(const Message& request, Call&) {
  Message reply = Message::ReplyTo(request, msg::EncodePid(context_.pid));
  if (context_.request_shutdown) context_.request_shutdown();
  return reply;
}

Result<Message> RequestHandler::Release(const Message& request, Call& call) {
  TQDS_ASSIGN_OR_RETURN(auto offsets, msg::DecodeOffsets(request.body(), "Release"));
  store_.Release(call.session, offsets);
  return Message::ReplyTo(request);
}

Result<Message> RequestHandler::Abort(const Message& request, Call& call) {
  TQDS_ASSIGN_OR_RETURN(auto offsets, msg::DecodeOffsets(request.body(), "Abort"));
  store_.Abort(call.session, offsets);
  return Message::ReplyTo(request);
}

Result<Message> RequestHandler::Hello(const Message& request, Call& call) {
  msg::Hello h;
  h.worker = context_.worker;
  h.instance = context_.instance;
  h.pid = context_.pid;
  h.socket = context_.socket_path;
  h.arena_size = call.local ? context_.arena_size : 0;
  h.inline_max = proto::kDefaultInlineMax;
  return Message::ReplyTo(request, msg::Encode(h));
}

Result<std::vector<bool>> RequestHandler::ExistAnywhere(const std::vector<std::string>& keys) {
  auto exist = store_.Exist(keys);
  std::vector<size_t> idx;
  std::vector<std::string> missing;
  for (size_t i = 0; i < keys.size(); ++i) {
    if (!exist[i]) {
      idx.push_back(i);
      missing.push_back(keys[i]);
    }
  }
  if (!missing.empty()) {
    TQDS_ASSIGN_OR_RETURN(auto remote, context_.cluster->ExistRemote(missing));
    for (size_t j = 0; j < idx.size() && j < remote.size(); ++j) exist[idx[j]] = remote[j];
  }
  return exist;
}

Result<std::vector<CreateSlot>> RequestHandler::CreateSlots(Call& call, std::vector<std::string> keys,
                                                            const std::vector<uint64_t>& sizes,
                                                            const WriteOptions& opts) {
  if (!opts.if_absent || !call.local || context_.cluster == nullptr) {
    return store_.Create(call.session, std::move(keys), sizes, opts);
  }
  TQDS_ASSIGN_OR_RETURN(const auto exists, ExistAnywhere(keys));
  if (std::find(exists.begin(), exists.end(), true) == exists.end()) {
    return store_.Create(call.session, std::move(keys), sizes, opts);
  }
  const size_t n = keys.size();
  std::vector<CreateSlot> slots(n);
  if (opts.all_or_nothing) {
    for (size_t i = 0; i < n; ++i) {
      slots[i].code = exists[i] ? StatusCode::kAlreadyExists : StatusCode::kCancelled;
    }
    return slots;
  }
  std::vector<std::string> rest;
  std::vector<uint64_t> rest_sizes;
  std::vector<size_t> at;
  for (size_t i = 0; i < n; ++i) {
    if (exists[i]) {
      slots[i].code = StatusCode::kAlreadyExists;
      continue;
    }
    rest.push_back(std::move(keys[i]));
    rest_sizes.push_back(sizes[i]);
    at.push_back(i);
  }
  if (rest.empty()) return slots;
  TQDS_ASSIGN_OR_RETURN(auto made, store_.Create(call.session, std::move(rest), rest_sizes, opts));
  for (size_t j = 0; j < at.size(); ++j) slots[at[j]] = made[j];
  return slots;
}

Result<Message> RequestHandler::Create(const Message& request, Call& call) {
  TQDS_ASSIGN_OR_RETURN(auto m, msg::DecodeCreate(request.body()));
  TQDS_RETURN_NOT_OK(CheckUnique(m.keys, "Create"));
  TQDS_ASSIGN_OR_RETURN(auto slots, CreateSlots(call, std::move(m.keys), m.sizes, Options(m.write)));
  msg::CreateReply r;
  r.codes.reserve(slots.size());
  r.offsets.reserve(slots.size());
  for (const auto& s : slots) {
    r.codes.push_back(s.code);
    r.offsets.push_back(s.offset);
  }
  return Message::ReplyTo(request, msg::Encode(r));
}

Result<Message> RequestHandler::Seal(const Message& request, Call& call) {
  TQDS_ASSIGN_OR_RETURN(auto offsets, msg::DecodeOffsets(request.body(), "Seal"));
  std::vector<std::string> sealed;
  const bool cluster = context_.cluster != nullptr;
  auto codes = store_.Seal(call.session, offsets, cluster ? &sealed : nullptr);
  if (cluster && !sealed.empty()) context_.cluster->Published(sealed, /*wait=*/true);
  return Message::ReplyTo(request, msg::EncodeCodes(codes));
}

Result<Message> RequestHandler::Put(const Message& request, Call& call) {
  TQDS_ASSIGN_OR_RETURN(auto m, msg::DecodePut(request.body()));
  TQDS_RETURN_NOT_OK(CheckUnique(m.keys, "Put"));
  const auto& payloads = request.payloads();
  if (payloads.size() != m.keys.size()) {
    return Status::Invalid("Put: ", m.keys.size(), " keys but ", payloads.size(), " payload frames");
  }
  std::vector<uint64_t> sizes(m.keys.size());
  for (size_t i = 0; i < m.keys.size(); ++i) sizes[i] = payloads[i].size();
  const size_t n = m.keys.size();
  TQDS_ASSIGN_OR_RETURN(auto slots, CreateSlots(call, std::move(m.keys), sizes, Options(m.write)));
  std::vector<uint64_t> to_seal;
  to_seal.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    if (slots[i].code != StatusCode::kOk) continue;
    if (sizes[i] > 0) std::memcpy(store_.base() + slots[i].offset, payloads[i].data(), sizes[i]);
    to_seal.push_back(slots[i].offset);
  }
  std::vector<std::string> published;
  auto sealed = store_.Seal(call.session, to_seal, &published);
  std::vector<StatusCode> codes(n);
  for (size_t i = 0, j = 0; i < n; ++i) {
    codes[i] = slots[i].code != StatusCode::kOk ? slots[i].code : sealed[j++];
  }
  if (context_.cluster != nullptr && !published.empty()) {
    context_.cluster->Published(published, /*wait=*/call.local);
  }
  return Message::ReplyTo(request, msg::EncodeCodes(codes));
}

Result<Message> RequestHandler::Get(const Message& request, Call& call) {
  TQDS_ASSIGN_OR_RETURN(auto m, msg::DecodeGet(request.body()));
  const bool local = call.local;
  Session& session = call.session;
  const std::vector<std::string>& keys = m.keys;
  uint64_t inline_max = local ? m.inline_max : UINT64_MAX;  // TCP: every value travels as a payload frame
  const uint64_t wait_ms = std::min<uint64_t>(m.wait_ms, 24ull * 3600 * 1000);
  auto wait = std::chrono::milliseconds(local ? wait_ms : 0);
  const bool fetch = local && context_.cluster != nullptr;
  TQDS_ASSIGN_OR_RETURN(auto found,
                        store_.Get(session, keys, fetch ? std::chrono::milliseconds(0) : wait));
  if (fetch) TQDS_RETURN_NOT_OK(FetchMissing(session, keys, m.ranges, found, wait));
  if (!local && wait_ms > 0) {
    for (const auto& f : found) {
      if (f.code != StatusCode::kOk) {
        *call.retry = true;
        break;
      }
    }
  }
  Message reply = Message::ReplyTo(request);
  std::vector<uint64_t> release;
  bool partial = false;
  for (size_t i = 0; i < found.size(); ++i) {
    Located& f = found[i];
    if (f.code != StatusCode::kOk) continue;
    if (f.size <= inline_max) {
      // A value that travels in the reply: only its range, when one is
      // asked for that starts inside it (one that does not is the client's
      // to report, from the whole value).
      uint64_t skip = 0, n = f.size;
      if (!m.ranges.empty()) {
        const ValueRange& r = m.ranges[i];
        if (r.offset >= f.from && r.offset - f.from < f.size) {
          skip = r.offset - f.from;
          n = RangeBytes(skip, r.length, f.size);
        }
      }
      reply.payloads().push_back(tqds::Buffer::Copy(store_.base() + f.offset + skip, n));
      release.push_back(f.offset);
      f.from += skip;
      f.size = n;
    }
    partial = partial || f.from != 0;
  }
  store_.Release(session, release);
  reply.set_body(msg::EncodeGetReply(
      found.size(),
      [&](size_t i) {
        const Located& f = found[i];
        const bool ok = f.code == StatusCode::kOk;
        return msg::GetItem{f.code, f.size, ok ? f.offset : 0, ok && f.size <= inline_max, ok ? f.from : 0};
      },
      partial));
  return reply;
}

Status RequestHandler::FetchMissing(Session& session, const std::vector<std::string>& keys,
                                    const std::vector<ValueRange>& ranges, std::vector<Located>& found,
                                    std::chrono::milliseconds wait) {
  const auto deadline = std::chrono::steady_clock::now() + wait;
  auto release_all = [&] {
    std::vector<uint64_t> pinned;
    for (const auto& f : found) {
      if (f.code == StatusCode::kOk) pinned.push_back(f.offset);
    }
    store_.Release(session, pinned);
  };
  std::vector<ValueRange> missing_ranges;
  auto still_missing = [&](std::vector<size_t>& idx, std::vector<std::string>& missing) {
    idx.clear();
    missing.clear();
    missing_ranges.clear();
    for (size_t i = 0; i < keys.size(); ++i) {
      if (found[i].code != StatusCode::kOk) {
        idx.push_back(i);
        missing.push_back(keys[i]);
        if (!ranges.empty()) missing_ranges.push_back(ranges[i]);
      }
    }
    return !missing.empty();
  };
  std::vector<size_t> idx;
  std::vector<std::string> missing;
  while (still_missing(idx, missing)) {
    std::vector<Located> pulled(missing.size());
    Status st = context_.cluster->Fetch(session, missing, missing_ranges, &pulled);
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

Result<Message> RequestHandler::Delete(const Message& request, Call& call) {
  TQDS_ASSIGN_OR_RETURN(auto keys, msg::DecodeKeys(request.body(), "Delete"));
  const std::vector<bool> here = store_.Delete(keys);
  const std::vector<bool> elsewhere =
      context_.cluster != nullptr ? context_.cluster->DeleteRemote(keys, /*wait=*/call.local) : std::vector<bool>{};
  size_t n = 0;
  for (size_t i = 0; i < keys.size(); ++i) n += here[i] || (i < elsewhere.size() && elsewhere[i]) ? 1 : 0;
  return Message::ReplyTo(request, msg::EncodeDeleted(n));
}

Result<Message> RequestHandler::Exist(const Message& request, Call& call) {
  TQDS_ASSIGN_OR_RETURN(auto keys, msg::DecodeKeys(request.body(), "Exist"));
  // A client's request (on the local socket) sees the whole cluster; one
  // over TCP (another worker's ExistRemote) this store only.
  std::vector<bool> exist;
  if (call.local && context_.cluster != nullptr) {
    TQDS_ASSIGN_OR_RETURN(exist, ExistAnywhere(keys));
  } else {
    exist = store_.Exist(keys);
  }
  return Message::ReplyTo(request, msg::EncodeExist(exist));
}

Result<Message> RequestHandler::Expire(const Message& request, Call& call) {
  TQDS_ASSIGN_OR_RETURN(auto m, msg::DecodeExpire(request.body()));
  auto exist = store_.Expire(m.keys, m.ttl_ms);
  // A client's request (on the local socket) reaches every copy in the
  // cluster; one over TCP (another worker's ExpireRemote) this store only.
  if (call.local && context_.cluster != nullptr) {
    auto elsewhere = context_.cluster->ExpireRemote(m.keys, m.ttl_ms);
    for (size_t i = 0; i < m.keys.size(); ++i) exist[i] = exist[i] || elsewhere[i];
  }
  return Message::ReplyTo(request, msg::EncodeExist(exist));
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

Result<Message> RequestHandler::Stats(const Message& request, Call&) {
  const WorkerStats s = CollectStats();
  Message reply = Message::ReplyTo(request);
  reply.set_body(EncodeWorkerStats(s));
  return reply;
}

}  // namespace ds
