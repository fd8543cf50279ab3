// KVClient over the worker's Unix socket and shared-memory arena.
#include "ds/kv_client.h"

#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <random>

#include "common/logging.h"
#include "common/wire/rpc.h"
#include "common/wire/security.h"
#include "datasystem/local_frame.h"
#include "datasystem/client_messages.h"
#include "datasystem/protocol.h"
#include "datasystem/stats_codec.h"
#include "datasystem/view_mapping.h"

namespace ds {

using internal::ViewMapping;
using tqds::StatusCode;
using tqds::wire::MapReader;
using tqds::wire::Message;
using tqds::wire::MsgType;
using tqds::wire::PackBody;
using Packer = msgpack::packer<msgpack::sbuffer>;

namespace internal {

// One Unix-socket connection and the arena mappings: `rw_` (shared, for
// writes and copies) and `views_` (GetBuffers' views: read-only and shared,
// or private and writable). Requests are serialised by `mu_`; one-way messages
// (Release, Abort) take the same lock.
class Connection {
 public:
  Connection(int fd, uint8_t* rw, std::unique_ptr<ViewMapping> views, int request_timeout_ms)
      : fd_(fd),
        rw_(rw),
        size_(views->size()),
        views_(std::move(views)),
        request_timeout_ms_(request_timeout_ms) {}
  ~Connection() {
    ::munmap(rw_, size_);
    ::close(fd_);
  }
  // One request and its reply. With a request timeout, a reply that does
  // not come within it (plus `wait_ms`, the time the worker may wait on
  // purpose) abandons the connection: its late reply could not be told
  // apart, so every later call fails at once.
  Result<Message> Call(Message request, uint64_t wait_ms = 0) {
    std::lock_guard<std::mutex> lock(mu_);
    if (abandoned_) {
      return Status::Unavailable("this client gave up on its connection after a request timed out; "
                                 "make a new client");
    }
    request.set_request_id(++next_id_);
    const uint64_t timeout_ms = request_timeout_ms_ > 0 ? request_timeout_ms_ + wait_ms : 0;
    if (timeout_ms > 0) TQDS_RETURN_NOT_OK(SetReceiveTimeout(timeout_ms));
    TQDS_RETURN_NOT_OK(WriteFrame(fd_, request));
    auto received = ReadFrame(fd_);
    if (!received.ok() && received.status().IsTimeout()) {
      abandoned_ = true;
      ::shutdown(fd_, SHUT_RDWR);  // the worker drops what this connection held
      return Status::Timeout("the worker did not answer within ", timeout_ms,
                             " ms; this client's connection is closed (make a new client)");
    }
    TQDS_ASSIGN_OR_RETURN(Message reply, std::move(received));
    if (!reply.status().ok()) return reply.status();
    if (reply.request_id() != request.request_id()) {
      return Status::Internal("reply ", reply.request_id(), " does not match request ",
                              request.request_id());
    }
    return reply;
  }
  void SendOneWay(Message m) {
    std::lock_guard<std::mutex> lock(mu_);
    (void)WriteFrame(fd_, m);
  }
  void Release(const std::vector<uint64_t>& offsets) {
    if (offsets.empty()) return;
    Message m(MsgType::kDsRelease, 0);
    m.set_body(msg::EncodeOffsets(offsets));
    SendOneWay(std::move(m));
  }
  // Drops an unsealed write, named by the block the worker created for it.
  void Abort(const uint8_t* data) {
    Message m(MsgType::kDsAbort, 0);
    m.set_body(msg::EncodeOffsets({OffsetOf(data)}));
    SendOneWay(std::move(m));
  }
  uint64_t OffsetOf(const uint8_t* data) const { return static_cast<uint64_t>(data - rw_); }
  bool InBounds(uint64_t off, uint64_t n) const { return off <= size_ && n <= size_ - off; }
  uint8_t* rw() const { return rw_; }
  ViewMapping& views() const { return *views_; }

 private:
  const int fd_;
  uint8_t* const rw_;
  const uint64_t size_;
  const std::unique_ptr<ViewMapping> views_;
  const int request_timeout_ms_;  // 0: wait for every reply
  std::mutex mu_;
  uint64_t next_id_ = 0;    // guarded by mu_
  bool abandoned_ = false;  // guarded by mu_
  uint64_t receive_timeout_ms_ = 0;  // SO_RCVTIMEO now set (0: none); guarded by mu_

  // Bounds each wait for reply bytes by the socket's receive timeout
  // (called with mu_ held). Cheaper than a poll() before every read, whose
  // timer costs about 10 us per call on a VM; set only when it changes.
  Status SetReceiveTimeout(uint64_t timeout_ms) {
    if (timeout_ms == receive_timeout_ms_) return Status::OK();
    const uint64_t capped = std::min<uint64_t>(timeout_ms, uint64_t{INT32_MAX} * 1000);
    timeval tv{static_cast<time_t>(capped / 1000), static_cast<suseconds_t>(capped % 1000 * 1000)};
    if (::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) != 0) {
      return Status::IOError("cannot set the reply timeout: ", std::strerror(errno));
    }
    receive_timeout_ms_ = timeout_ms;
    return Status::OK();
  }
};

}  // namespace internal

namespace {

// Keeps the pins of one GetBuffers call; ends its views, unmaps its alone
// mappings and releases the pins when the last result dies.
struct ReadPins {
  std::shared_ptr<internal::Connection> conn;
  std::vector<uint64_t> offsets;                   // every object pinned by the call
  std::vector<uint64_t> view_offsets, view_sizes;  // the ranges handed out as views
  std::vector<internal::AloneMapping> alone;       // objects mapped at an address of their own
  ~ReadPins() {
    conn->views().Unview(view_offsets, view_sizes);
    alone.clear();
    conn->Release(offsets);
  }
};

// A private result that cannot be a view of the client's mapping (another
// live result shows the object) is copied below this size and mapped alone
// from it: a copy costs less than the page faults of a fresh mapping for
// small objects, far more for large ones (docs/datasystem.md, views).
constexpr uint64_t kMapAloneMin = 1 << 20;

std::atomic<bool> g_copy_on_write_views{false};

Status KeyError(StatusCode code, const std::string& key, const char* op) {
  switch (code) {
    case StatusCode::kOk:
      return Status::OK();
    case StatusCode::kAlreadyExists:
      return Status::AlreadyExists("key '", key, "' already exists");
    case StatusCode::kNotFound:
      return Status::NotFound(op, ": key '", key,
                              "' was not created by this client or was aborted");
    case StatusCode::kCancelled:
      return Status::Cancelled(op, ": key '", key,
                               "' was not written: another key of its all-or-nothing batch exists");
    default:
      return Status(code, std::string(op) + " failed for key '" + key + "'");
  }
}

// The error of a batch write: the first key's that failed, except that an
// existing key (AlreadyExists) is named before the keys of an all-or-nothing
// batch that it kept out (Cancelled).
Status BatchError(const std::vector<StatusCode>& codes, const std::vector<std::string>& keys,
                  const char* op) {
  Status first;
  for (size_t i = 0; i < codes.size(); ++i) {
    Status st = KeyError(codes[i], keys[i], op);
    if (st.ok()) continue;
    if (first.ok() || (first.code() == StatusCode::kCancelled && st.IsAlreadyExists())) first = std::move(st);
  }
  return first;
}

msg::WriteFlags Flags(const SetParam& p) {
  msg::WriteFlags w;
  w.evictable = p.evictable;
  w.ttl_ms = uint64_t{p.ttl_seconds} * 1000;
  w.if_absent = p.if_absent;
  w.all_or_nothing = p.all_or_nothing;
  return w;
}

Status CheckKeys(const std::vector<std::string>& keys) {
  for (const auto& k : keys) {
    if (k.empty() || k.size() > proto::kMaxKeyBytes) {
      return Status::Invalid("keys must be 1 to ", proto::kMaxKeyBytes, " bytes, got ", k.size());
    }
  }
  return Status::OK();
}

// A Get reply: per key, a code, a size and either an inline payload or an offset.
// The decoded reply and the message whose payloads hold the inline values.
struct GetReply : msg::GetReply {
  Message message;
};

}  // namespace

// ------------------------------------------------------------ WriteBuffer

WriteBuffer::WriteBuffer(WriteBuffer&& o) noexcept { *this = std::move(o); }
WriteBuffer& WriteBuffer::operator=(WriteBuffer&& o) noexcept {
  if (this != &o) {
    if (conn_ && !sealed_) conn_->Abort(data_);
    key_ = std::move(o.key_);
    refused_ = o.refused_;
    data_ = o.data_;
    size_ = o.size_;
    sealed_ = o.sealed_;
    conn_ = std::move(o.conn_);
    o.conn_.reset();
    o.data_ = nullptr;
    o.size_ = 0;
  }
  return *this;
}
WriteBuffer::~WriteBuffer() {
  if (conn_ && !sealed_) conn_->Abort(data_);
}
Status WriteBuffer::Write(std::string_view bytes) {
  if (bytes.size() > size_) {
    return Status::Invalid("write of ", bytes.size(), " bytes into a buffer of ", size_);
  }
  if (!bytes.empty()) std::memcpy(data_, bytes.data(), bytes.size());
  return Status::OK();
}

// --------------------------------------------------------------- options

void EnableCopyOnWriteViews() { g_copy_on_write_views.store(true); }

Status ClientOptions::Validate() const {
  if (connect_timeout_ms <= 0) return Status::Invalid("connect_timeout_ms must be positive");
  if (request_timeout_ms < 0) return Status::Invalid("request_timeout_ms must be 0 (none) or positive");
  return Status::OK();
}

// ---------------------------------------------------------------- client

KVClient::KVClient(std::string host, int port, ClientOptions options)
    : host_(std::move(host)), port_(port), options_(options) {}
KVClient::~KVClient() = default;

Status KVClient::Ready() const {
  if (!conn_) return Status::Invalid("KVClient used before a successful Init()");
  return Status::OK();
}

Status KVClient::Init() {
  if (conn_) return Status::OK();
  TQDS_RETURN_NOT_OK(options_.Validate());
  if (const char* dir = std::getenv("DATASYSTEM_CLIENT_LOG_DIR"); dir != nullptr && *dir) {
    tqds::InitLogging("ds_client", dir, spdlog::level::info);
  }
  const std::string where = host_ + ":" + std::to_string(port_);
  // 1. Ask the worker (TCP) where its Unix socket is.
  TQDS_ASSIGN_OR_RETURN(auto keys, tqds::wire::ClientCurveKeys(options_.client_public_key, options_.client_secret_key,
                                                               options_.server_public_key));
  TQDS_ASSIGN_OR_RETURN(auto rpc, tqds::wire::RpcClient::Connect("tcp://" + where, std::move(keys)));
  auto hello = rpc->CallSync(Message(MsgType::kDsHello, 0),
                             std::chrono::milliseconds(options_.connect_timeout_ms));
  if (!hello.ok() && hello.status().IsPermissionDenied()) {  // a worker is there; the keys do not fit
    return Status::PermissionDenied("datasystem worker ", where, " refused this client: ", hello.status().message());
  }
  if (!hello.ok()) {
    return Status::Unavailable("no datasystem worker answers at ", where, " (",
                               hello.status().message(),
                               "); start one with: dscli start -w "
                               "--worker_address ",
                               where);
  }
  TQDS_ASSIGN_OR_RETURN(auto hr, msg::DecodeHello(hello->body()));
  const std::string& path = hr.socket;
  const uint64_t instance = hr.instance;
  // 2. Connect to it and receive the arena.
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof(addr.sun_path)) return Status::Invalid("socket path too long: ", path);
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    int e = errno;
    ::close(fd);
    return Status::Unavailable("worker ", where, " is not on this host (its socket ", path,
                               " is not reachable: ", std::strerror(e),
                               "); remote access comes with the cluster");
  }
  Message req(MsgType::kDsHello, 1);
  Status st = WriteFrame(fd, req);
  int arena_fd = -1;
  auto reply = st.ok() ? ReadFrame(fd, &arena_fd) : Result<Message>(st);
  auto fail = [&](Status s) {
    if (arena_fd >= 0) ::close(arena_fd);
    ::close(fd);
    return s.WithContext("connecting to the worker's socket " + path);
  };
  if (!reply.ok()) return fail(reply.status());
  if (!reply->status().ok()) return fail(reply->status());
  auto lr = msg::DecodeHello(reply->body());
  if (!lr.ok()) return fail(lr.status());
  const uint64_t arena_size = lr->arena_size;
  if (lr->instance != instance) {
    return fail(Status::Unavailable("the socket belongs to another worker than ", where));
  }
  if (arena_fd < 0) return fail(Status::Internal("worker did not pass its shared memory"));
  int flags = MAP_SHARED | (options_.populate_mapping ? MAP_POPULATE : 0);
  void* rw = ::mmap(nullptr, arena_size, PROT_READ | PROT_WRITE, flags, arena_fd, 0);
  if (rw == MAP_FAILED) {
    return fail(Status::IOError("cannot map the worker's shared memory: ", std::strerror(errno)));
  }
  auto views = internal::ViewMapping::Map(
      arena_fd, arena_size, options_.copy_on_write_views || g_copy_on_write_views.load());
  if (!views.ok()) {
    ::munmap(rw, arena_size);
    return fail(views.status());
  }
  ::close(arena_fd);
  conn_ = std::make_shared<internal::Connection>(fd, static_cast<uint8_t*>(rw), std::move(*views),
                                                options_.request_timeout_ms);
  worker_instance_ = instance;
  spdlog::debug("ds client connected to worker {} ({} MiB shared memory)", where, arena_size >> 20);
  return Status::OK();
}

Status KVClient::Set(std::string_view key, std::string_view value, const SetParam& param) {
  return MSet({std::string(key)}, {value}, param);
}

Result<std::string> KVClient::Get(std::string_view key, int32_t timeout_ms) {
  std::optional<std::string> value;
  TQDS_RETURN_NOT_OK(MGetVisit({std::string(key)}, timeout_ms, [&](const auto& values) {
    if (values[0]) value.emplace(*values[0]);
    return Status::OK();
  }));
  if (!value) {
    if (timeout_ms > 0) {
      return Status::NotFound("key '", key, "' not found (waited ", timeout_ms, " ms)");
    }
    return Status::NotFound("key '", key, "' not found");
  }
  return std::move(*value);
}

Result<std::vector<StatusCode>> KVClient::PutCodes(const std::vector<std::string>& keys,
                                                   const std::vector<std::string_view>& values,
                                                   const SetParam& param) {
  TQDS_RETURN_NOT_OK(Ready());
  TQDS_RETURN_NOT_OK(CheckKeys(keys));
  if (keys.size() != values.size()) {
    return Status::Invalid("MSet: ", keys.size(), " keys but ", values.size(), " values");
  }
  uint64_t total = 0;
  for (const auto& v : values) total += v.size();
  if (total > options_.inline_set_max) {  // create, copy once into shared memory, seal
    std::vector<uint64_t> sizes(values.size());
    for (size_t i = 0; i < values.size(); ++i) sizes[i] = values[i].size();
    auto created = MCreate(keys, sizes, param);
    if (!created.ok()) {
      // A batch of one reports its refusal as the call's error.
      if (keys.size() == 1 && created.status().IsAlreadyExists()) {
        return std::vector<StatusCode>{StatusCode::kAlreadyExists};
      }
      return created.status();
    }
    std::vector<WriteBuffer>& buffers = *created;
    for (size_t i = 0; i < buffers.size(); ++i) {
      if (buffers[i].data() == nullptr) continue;  // refused at create: AlreadyExists below
      if (!values[i].empty()) std::memcpy(buffers[i].data(), values[i].data(), values[i].size());
    }
    return SealCodes(buffers);
  }
  Message req(MsgType::kDsPut, 0);
  req.set_body(msg::EncodePut(keys, Flags(param)));
  req.payloads().reserve(values.size());
  for (const auto& v : values) req.payloads().push_back(Buffer::Borrow(v.data(), v.size()));
  TQDS_ASSIGN_OR_RETURN(Message reply, conn_->Call(std::move(req)));
  return msg::DecodeCodes(reply.body(), keys.size(), "Put reply");
}

Status KVClient::MSet(const std::vector<std::string>& keys,
                      const std::vector<std::string_view>& values, const SetParam& param) {
  TQDS_ASSIGN_OR_RETURN(auto codes, PutCodes(keys, values, param));
  return BatchError(codes, keys, "Set");
}

Status KVClient::MSetTx(const std::vector<std::string>& keys,
                        const std::vector<std::string_view>& values, const SetParam& param) {
  if (keys.empty() || keys.size() > kMaxTxKeys) {
    return Status::Invalid("MSetTx: ", keys.size(), " keys; a transaction writes 1 to ", kMaxTxKeys);
  }
  if (!param.if_absent) {
    return Status::Invalid("MSetTx: only new keys are written together: set if_absent (ExistenceOpt.NX)");
  }
  SetParam tx = param;
  tx.all_or_nothing = true;
  TQDS_ASSIGN_OR_RETURN(auto codes, PutCodes(keys, values, tx));
  Status st = BatchError(codes, keys, "MSetTx");
  if (st.IsAlreadyExists()) {
    for (size_t j = 0; j < codes.size(); ++j) {
      if (codes[j] == StatusCode::kOk) {  // cannot happen: the worker refuses them together
        return Status::Internal("MSetTx: key '", keys[j], "' was written in a refused transaction");
      }
    }
    return Status::AlreadyExists("MSetTx: none of the ", keys.size(), " keys was written: ", st.message());
  }
  return st;
}

Result<std::vector<Status>> KVClient::MSetEach(const std::vector<std::string>& keys,
                                               const std::vector<std::string_view>& values,
                                               const SetParam& param) {
  TQDS_ASSIGN_OR_RETURN(auto codes, PutCodes(keys, values, param));
  std::vector<Status> out(codes.size());
  for (size_t i = 0; i < codes.size(); ++i) out[i] = KeyError(codes[i], keys[i], "Set");
  return out;
}

namespace {
Result<GetReply> DoGet(internal::Connection& conn, const std::vector<std::string>& keys,
                       int32_t timeout_ms, uint64_t inline_max, const std::vector<ValueRange>& ranges = {}) {
  Message req(MsgType::kDsGet, 0);
  req.set_body(msg::EncodeGet(keys, static_cast<uint64_t>(std::max(timeout_ms, 0)), inline_max, ranges));
  GetReply out;
  TQDS_ASSIGN_OR_RETURN(out.message, conn.Call(std::move(req), static_cast<uint64_t>(std::max(timeout_ms, 0))));
  TQDS_ASSIGN_OR_RETURN(static_cast<msg::GetReply&>(out), msg::DecodeGetReply(out.message.body(), keys.size()));
  size_t n_inline = 0;
  for (size_t i = 0; i < keys.size(); ++i) {
    if (out.codes[i] == StatusCode::kOk && out.inline_[i]) ++n_inline;
    if (out.codes[i] == StatusCode::kOk && !out.inline_[i] && !conn.InBounds(out.offsets[i], out.sizes[i])) {
      return Status::Internal("worker returned an object outside shared memory");
    }
  }
  if (n_inline != out.message.payloads().size()) {
    return Status::Internal("Get reply carries ", out.message.payloads().size(), " payloads for ",
                            n_inline, " inline values");
  }
  return out;
}
}  // namespace

Status KVClient::MGetVisit(const std::vector<std::string>& keys, int32_t timeout_ms,
                           const ValueVisitor& visit) {
  TQDS_RETURN_NOT_OK(Ready());
  TQDS_RETURN_NOT_OK(CheckKeys(keys));
  TQDS_ASSIGN_OR_RETURN(GetReply g, DoGet(*conn_, keys, timeout_ms, options_.inline_get_max));
  std::vector<std::optional<std::string_view>> values(keys.size());
  // The shared-memory values stay pinned until visit() is done with them.
  struct ReleaseAtExit {
    internal::Connection& conn;
    std::vector<uint64_t> offsets;
    ~ReleaseAtExit() { conn.Release(offsets); }
  } pinned{*conn_, {}};
  size_t p = 0;
  for (size_t i = 0; i < keys.size(); ++i) {
    if (g.codes[i] != StatusCode::kOk) continue;
    if (g.inline_[i]) {
      values[i] = g.message.payloads()[p++].view();
    } else {
      values[i] = std::string_view(reinterpret_cast<const char*>(conn_->rw() + g.offsets[i]),
                                   g.sizes[i]);
      pinned.offsets.push_back(g.offsets[i]);
    }
  }
  return visit(values);
}

Result<std::vector<std::optional<std::string>>> KVClient::MGet(const std::vector<std::string>& keys,
                                                               int32_t timeout_ms) {
  std::vector<std::optional<std::string>> out;
  TQDS_RETURN_NOT_OK(MGetVisit(keys, timeout_ms, [&](const auto& values) {
    out.resize(values.size());
    for (size_t i = 0; i < values.size(); ++i) {
      if (values[i]) out[i].emplace(*values[i]);
    }
    return Status::OK();
  }));
  return out;
}

Result<std::vector<WriteBuffer>> KVClient::MCreate(const std::vector<std::string>& keys,
                                                   const std::vector<uint64_t>& sizes,
                                                   const SetParam& param) {
  TQDS_RETURN_NOT_OK(Ready());
  TQDS_RETURN_NOT_OK(CheckKeys(keys));
  if (keys.size() != sizes.size()) {
    return Status::Invalid("MCreate: ", keys.size(), " keys but ", sizes.size(), " sizes");
  }
  Message req(MsgType::kDsCreate, 0);
  req.set_body(msg::EncodeCreate(keys, sizes, Flags(param)));
  TQDS_ASSIGN_OR_RETURN(Message reply, conn_->Call(std::move(req)));
  TQDS_ASSIGN_OR_RETURN(auto r, msg::DecodeCreateReply(reply.body(), keys.size()));
  const std::vector<StatusCode>& codes = r.codes;
  const std::vector<uint64_t>& offsets = r.offsets;
  std::vector<WriteBuffer> out(keys.size());
  Status first;
  for (size_t i = 0; i < keys.size(); ++i) {
    out[i].key_ = keys[i];
    if (codes[i] != StatusCode::kOk) {
      if (first.ok()) first = KeyError(codes[i], keys[i], "Create");
      out[i].sealed_ = true;  // nothing to abort
      out[i].refused_ = codes[i];
      continue;
    }
    if (!conn_->InBounds(offsets[i], sizes[i])) return Status::Internal("Create: bad offset");
    out[i].data_ = conn_->rw() + offsets[i];
    out[i].size_ = sizes[i];
    out[i].conn_ = conn_;
  }
  if (!first.ok() && keys.size() == 1) return first;
  return out;
}

Result<std::vector<StatusCode>> KVClient::SealCodes(std::vector<WriteBuffer>& buffers) {
  TQDS_RETURN_NOT_OK(Ready());
  std::vector<StatusCode> codes(buffers.size(), StatusCode::kOk);
  std::vector<size_t> idx;
  idx.reserve(buffers.size());
  for (size_t i = 0; i < buffers.size(); ++i) {
    if (buffers[i].conn_ != nullptr && !buffers[i].sealed_) {
      if (buffers[i].conn_ != conn_) {
        return Status::Invalid("MSetBuffer: the buffer of key '", buffers[i].key_,
                               "' was created by another KVClient; seal it with that client");
      }
      idx.push_back(i);
    } else if (buffers[i].data_ == nullptr) {  // refused at create
      codes[i] = buffers[i].refused_ != StatusCode::kOk ? buffers[i].refused_ : StatusCode::kAlreadyExists;
    }
  }
  if (idx.empty()) return codes;
  Message req(MsgType::kDsSeal, 0);
  std::vector<uint64_t> offsets;
  offsets.reserve(idx.size());
  for (size_t i : idx) offsets.push_back(conn_->OffsetOf(buffers[i].data_));
  req.set_body(msg::EncodeOffsets(offsets));
  TQDS_ASSIGN_OR_RETURN(Message reply, conn_->Call(std::move(req)));
  TQDS_ASSIGN_OR_RETURN(auto sealed, msg::DecodeCodes(reply.body(), idx.size(), "Seal reply"));
  for (size_t j = 0; j < idx.size(); ++j) {
    buffers[idx[j]].sealed_ = true;  // sealed, or refused and freed by the worker
    codes[idx[j]] = sealed[j];
  }
  return codes;
}

Status KVClient::MSetBuffer(std::vector<WriteBuffer>& buffers) {
  TQDS_ASSIGN_OR_RETURN(auto codes, SealCodes(buffers));
  // The keys (copies) only to name a failure.
  if (std::all_of(codes.begin(), codes.end(), [](StatusCode c) { return c == StatusCode::kOk; })) {
    return Status::OK();
  }
  std::vector<std::string> keys;
  keys.reserve(buffers.size());
  for (const auto& b : buffers) keys.push_back(b.key_);
  return BatchError(codes, keys, "Seal");
}

Result<std::vector<std::optional<Buffer>>> KVClient::GetBuffers(
    const std::vector<std::string>& keys, int32_t timeout_ms) {
  return Views(keys, timeout_ms, nullptr, nullptr);
}

Result<std::vector<std::optional<Buffer>>> KVClient::Views(const std::vector<std::string>& keys,
                                                           int32_t timeout_ms,
                                                           const std::vector<ReadRange>* ranges,
                                                           std::vector<uint64_t>* from) {
  TQDS_RETURN_NOT_OK(Ready());
  TQDS_RETURN_NOT_OK(CheckKeys(keys));
  std::vector<ValueRange> asked;
  if (ranges != nullptr) {
    asked.reserve(ranges->size());
    for (const auto& r : *ranges) asked.push_back(ValueRange{r.offset, r.size});
  }
  TQDS_ASSIGN_OR_RETURN(GetReply g, DoGet(*conn_, keys, timeout_ms, /*inline_max=*/0, asked));
  if (!g.from.empty() && ranges == nullptr) {
    return Status::Internal("worker answered a Get of whole values with parts of them");
  }
  if (from != nullptr) {
    *from = g.from;
    from->resize(keys.size(), 0);
  }
  std::vector<std::optional<Buffer>> out(keys.size());
  auto pins = std::make_shared<ReadPins>();
  pins->conn = conn_;
  std::vector<uint64_t> sizes;
  for (size_t i = 0; i < keys.size(); ++i) {
    if (g.codes[i] != StatusCode::kOk) continue;
    pins->offsets.push_back(g.offsets[i]);
    sizes.push_back(g.sizes[i]);
  }
  // An object that a live result already shows, or whose end page a
  // neighbour's live view has written, is not viewable (see ViewMapping):
  // it is copied from the shared mapping or mapped alone.
  internal::ViewMapping& views = conn_->views();
  const std::vector<bool> viewable = views.View(pins->offsets, sizes);
  // Every counted view is recorded before anything can throw (a copy), so
  // the pins always end them.
  for (size_t j = 0; j < viewable.size(); ++j) {
    if (!viewable[j]) continue;
    pins->view_offsets.push_back(pins->offsets[j]);
    pins->view_sizes.push_back(sizes[j]);
  }
  std::shared_ptr<const void> holder = pins;
  for (size_t i = 0, j = 0; i < keys.size(); ++i) {
    if (g.codes[i] != StatusCode::kOk) continue;
    const uint64_t off = g.offsets[i], n = g.sizes[i];
    if (viewable[j++]) {
      out[i] = Buffer::Wrap(views.base() + off, n, holder);
      continue;
    }
    if (n >= kMapAloneMin) {
      auto alone = views.MapAlone(off, n);
      if (alone.ok()) {
        out[i] = Buffer::Wrap(alone->data(), n, holder);
        pins->alone.push_back(std::move(*alone));
        continue;
      }
    }
    out[i] = Buffer::Copy(conn_->rw() + off, n);
  }
  return out;
}

Result<size_t> KVClient::Delete(const std::vector<std::string>& keys) {
  TQDS_RETURN_NOT_OK(Ready());
  TQDS_RETURN_NOT_OK(CheckKeys(keys));
  Message req(MsgType::kDsDelete, 0);
  req.set_body(msg::EncodeKeys(keys));
  TQDS_ASSIGN_OR_RETURN(Message reply, conn_->Call(std::move(req)));
  TQDS_ASSIGN_OR_RETURN(uint64_t n, msg::DecodeDeleted(reply.body(), "Delete reply"));
  return static_cast<size_t>(n);
}

Result<std::vector<bool>> KVClient::Exist(const std::vector<std::string>& keys) {
  TQDS_RETURN_NOT_OK(Ready());
  TQDS_RETURN_NOT_OK(CheckKeys(keys));
  Message req(MsgType::kDsExist, 0);
  req.set_body(msg::EncodeKeys(keys));
  TQDS_ASSIGN_OR_RETURN(Message reply, conn_->Call(std::move(req)));
  return msg::DecodeExist(reply.body(), keys.size(), "Exist reply");
}

Result<std::vector<std::optional<Buffer>>> KVClient::Read(const std::vector<ReadRange>& ranges,
                                                          int32_t timeout_ms) {
  std::vector<std::string> keys;
  keys.reserve(ranges.size());
  for (const auto& r : ranges) keys.push_back(r.key);
  // A view of the whole value, then a slice: the bytes outside the range are
  // never copied (a local read costs no more than its range). A value held
  // by another worker comes as its range alone (block i starts at byte
  // from[i] of the value): only the range crosses the network.
  std::vector<uint64_t> from;
  TQDS_ASSIGN_OR_RETURN(auto block, Views(keys, timeout_ms, &ranges, &from));
  for (size_t i = 0; i < ranges.size(); ++i) {
    if (!block[i]) continue;
    const uint64_t size = block[i]->size();
    const ReadRange& r = ranges[i];
    if (from[i] != 0 && (r.offset < from[i] || r.offset - from[i] >= size)) {
      return Status::Internal("worker answered the read of bytes from ", r.offset, " of key '", r.key,
                              "' with bytes [", from[i], ", ", from[i] + size, ")");
    }
    if (r.offset - from[i] >= size) {
      return Status::Invalid("out of range: read offset ", r.offset, " of key '", r.key,
                             "' is not in [0, ", size, ")");
    }
    const uint64_t skip = r.offset - from[i];
    block[i] = block[i]->Slice(skip, RangeBytes(skip, r.size, size));
  }
  return block;
}

Result<std::vector<bool>> KVClient::Expire(const std::vector<std::string>& keys,
                                           uint32_t ttl_seconds) {
  TQDS_RETURN_NOT_OK(Ready());
  TQDS_RETURN_NOT_OK(CheckKeys(keys));
  Message req(MsgType::kDsExpire, 0);
  req.set_body(msg::EncodeExpire(keys, uint64_t{ttl_seconds} * 1000));
  TQDS_ASSIGN_OR_RETURN(Message reply, conn_->Call(std::move(req)));
  return msg::DecodeExist(reply.body(), keys.size(), "Expire reply");
}

Status KVClient::HealthCheck() { return Stats().status(); }

namespace {

// A version 4 UUID ("8-4-4-4-12" lowercase hex) from 128 bits.
std::string Uuid4(uint64_t hi, uint64_t lo) {
  hi = (hi & ~0xF000ull) | 0x4000ull;
  lo = (lo & ~(0xC000ull << 48)) | (0x8000ull << 48);
  char uuid[37];
  std::snprintf(uuid, sizeof(uuid), "%08llx-%04llx-%04llx-%04llx-%012llx",
                static_cast<unsigned long long>(hi >> 32),
                static_cast<unsigned long long>((hi >> 16) & 0xFFFF),
                static_cast<unsigned long long>(hi & 0xFFFF), static_cast<unsigned long long>(lo >> 48),
                static_cast<unsigned long long>(lo & 0xFFFFFFFFFFFFull));
  return uuid;
}

uint64_t SplitMix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

}  // namespace

Result<std::string> KVClient::GenerateKey(std::string_view prefix) {
  TQDS_RETURN_NOT_OK(Ready());
  static thread_local std::mt19937_64 rng{std::random_device{}()};
  // "<prefix, or a random UUID>;<the worker's id as a UUID>", as openYuanrong
  // datasystem forms them; the worker id comes from the worker process's
  // random instance number (the same for every client of that worker).
  std::string key = prefix.empty() ? Uuid4(rng(), rng()) : std::string(prefix);
  key += ';';
  key += Uuid4(worker_instance_, SplitMix64(worker_instance_));
  if (key.size() > proto::kMaxKeyBytes) {
    return Status::Invalid("GenerateKey: prefix of ", prefix.size(), " bytes makes a key longer than ",
                           proto::kMaxKeyBytes, " bytes");
  }
  return key;
}

Result<WorkerStats> KVClient::Stats() {
  TQDS_RETURN_NOT_OK(Ready());
  TQDS_ASSIGN_OR_RETURN(Message reply, conn_->Call(Message(MsgType::kDsStats, 0)));
  return DecodeWorkerStats(reply);
}

}  // namespace ds
