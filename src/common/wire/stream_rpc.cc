// The stream channel's server and client (stream_rpc.h).
#include "common/wire/stream_rpc.h"

#include <poll.h>
#include <sodium.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>
#include <zmq.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace tqds::wire {

using tqds::net::ErrnoText;
using tqds::net::ReadAll;
using tqds::net::WriteAllV;

namespace {

constexpr int kHandshakeTimeoutMs = 5000;
constexpr uint64_t kStreamGroupBytes = 4u << 20;

struct Hello {
  uint32_t magic;
  uint32_t version;
  uint8_t nonce[32];
};
static_assert(sizeof(Hello) == kStreamHelloBytes);

bool DecodeZ85(const std::string& z85, uint8_t out[32]) {
  return z85.size() == 40 && zmq_z85_decode(out, z85.c_str()) != nullptr;
}

int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

int ClampMs(std::chrono::milliseconds t) {
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(t.count(), INT32_MAX / 2)));
}

}  // namespace

Result<std::shared_ptr<const StreamIdentity>> ProcessStreamIdentity() {
  TQDS_ASSIGN_OR_RETURN(auto keys, ProcessCurveKeys());
  if (!keys) return std::shared_ptr<const StreamIdentity>();
  auto id = std::make_shared<StreamIdentity>();
  if (!DecodeZ85(keys->server_public, id->server_public)) {
    return Status::Invalid(keys->dir, "/server.key is not a Z85 key");
  }
  if (!keys->server_secret.empty()) {
    if (!DecodeZ85(keys->server_secret, id->server_secret)) {
      return Status::Invalid(keys->dir, "/server.key_secret is not a Z85 key");
    }
    id->can_serve = true;
  }
  if (!keys->client_secret.empty() && !keys->client_public.empty()) {
    if (!DecodeZ85(keys->client_public, id->client_public) || !DecodeZ85(keys->client_secret, id->client_secret)) {
      return Status::Invalid(keys->dir, "/client.key or client.key_secret is not a Z85 key");
    }
    id->can_connect = true;
  }
  for (const std::string& z : keys->authorized) {
    uint8_t raw[32];
    if (DecodeZ85(z, raw)) id->authorized.emplace_back(reinterpret_cast<const char*>(raw), 32);
  }
  return std::shared_ptr<const StreamIdentity>(std::move(id));
}

// ------------------------------------------------------------------ framing

Status WriteStreamMessage(int fd, const Message& m) {
  const std::string header = m.EncodeHeader();
  const std::string table = EncodeStreamTable(header.size(), m.payloads());
  std::vector<iovec> iov;
  iov.reserve(2 + m.payloads().size());
  iov.push_back({const_cast<char*>(table.data()), table.size()});
  iov.push_back({const_cast<char*>(header.data()), header.size()});
  for (const Buffer& p : m.payloads()) {
    if (p.size() > 0) iov.push_back({const_cast<uint8_t*>(p.data()), p.size()});
  }
  if (!WriteAllV(fd, iov)) return Status::IOError("sending: ", ErrnoText(errno));
  return Status::OK();
}

namespace {

// The rest of a message whose prefix has been read.
Result<Message> ReadAfterPrefix(int fd, const uint8_t* prefix, const StreamLimits& limits) {
  TQDS_ASSIGN_OR_RETURN(uint32_t count, DecodeStreamPrefix(prefix, limits));
  std::vector<uint64_t> lengths(count);
  if (!ReadAll(fd, lengths.data(), 8 * size_t{count})) return Status::IOError("receiving: ", ErrnoText(errno));
  TQDS_RETURN_NOT_OK(CheckStreamTable(lengths.data(), count, limits).status());
  std::string header(lengths[0], '\0');
  if (!ReadAll(fd, header.data(), header.size())) return Status::IOError("receiving: ", ErrnoText(errno));
  TQDS_ASSIGN_OR_RETURN(Message m, Message::DecodeHeader(header.data(), header.size()));
  m.set_raw_header(Buffer::FromString(std::move(header)));
  // The payloads go into buffers of about kStreamGroupBytes (a larger frame
  // alone in its own), each frame at a 64-byte boundary: a reader may view
  // values in place, and a receiver that keeps some values and drops others
  // pins at most one group's worth beside them.
  struct Group {
    uint64_t bytes = 0;
    Buffer buffer;
  };
  std::vector<Group> groups;
  std::vector<std::pair<size_t, uint64_t>> where(count);  // frame -> (group, offset)
  for (size_t i = 1; i < count; ++i) {
    const uint64_t padded = (lengths[i] + 63) / 64 * 64;
    if (groups.empty() || (groups.back().bytes > 0 && groups.back().bytes + padded > kStreamGroupBytes)) {
      groups.emplace_back();
    }
    where[i] = {groups.size() - 1, groups.back().bytes};
    groups.back().bytes += padded;
  }
  std::vector<MutableBuffer> memory;
  memory.reserve(groups.size());
  for (const Group& g : groups) {
    auto buf = MutableBuffer::Allocate(std::max<uint64_t>(g.bytes, 1));
    if (!buf.ok()) return buf.status().WithContext("a stream-channel message's payload");
    memory.push_back(buf.MoveValue());
  }
  std::vector<iovec> iov;
  iov.reserve(count - 1);
  for (size_t i = 1; i < count; ++i) {
    if (lengths[i] > 0) iov.push_back({memory[where[i].first].mutable_data() + where[i].second, lengths[i]});
  }
  if (!tqds::net::ReadAllV(fd, iov)) return Status::IOError("receiving: ", ErrnoText(errno));
  for (size_t g = 0; g < groups.size(); ++g) groups[g].buffer = std::move(memory[g]).Freeze();
  m.payloads().reserve(count - 1);
  for (size_t i = 1; i < count; ++i) {
    m.payloads().push_back(lengths[i] == 0 ? Buffer() : groups[where[i].first].buffer.Slice(where[i].second, lengths[i]));
  }
  return m;
}

}  // namespace

Result<Message> ReadStreamMessage(int fd, const StreamLimits& limits) {
  uint8_t prefix[kStreamPrefixBytes];
  if (!ReadAll(fd, prefix, sizeof(prefix))) return Status::IOError("receiving: ", ErrnoText(errno));
  return ReadAfterPrefix(fd, prefix, limits);
}

// ------------------------------------------------------------------ server

Result<std::unique_ptr<StreamServer>> StreamServer::Start(const std::string& ip, int port, std::string name,
                                                          RpcServer::Handler handler, StreamServerOptions options) {
  TQDS_ASSIGN_OR_RETURN(auto id, ProcessStreamIdentity());
  if (!id || !id->can_serve) {
    return Status::PermissionDenied("the stream channel of ", name,
                                    " needs the deployment's server keys (TQDS_CURVE_KEY_DIR with server.key_secret)");
  }
  int bound = 0;
  TQDS_ASSIGN_OR_RETURN(int fd, tqds::net::ListenTcp(ip, port, "the stream channel of " + name, &bound));
  std::unique_ptr<StreamServer> s(
      new StreamServer(ip, bound, std::move(name), std::move(handler), options, std::move(id)));
  StreamServer* p = s.get();
  s->server_ = std::make_unique<tqds::net::ConnectionServer>(
      fd, options.connections, [p](int c) { p->Serve(c); },
      [p](int c, size_t open) {
        Message refusal(MsgType::kInvalid, 0);
        refusal.set_status(Status::Unavailable(p->name_, " refuses this stream connection: ", open,
                                               " are open (its limit)"));
        (void)WriteStreamMessage(c, refusal);
      });
  return s;
}

bool StreamServer::Handshake(int fd) {
  Hello hello{kStreamHelloMagic, kStreamVersion, {}};
  randombytes_buf(hello.nonce, sizeof(hello.nonce));
  uint8_t answer[kStreamAnswerBytes], want[32], proof[kStreamProofBytes];
  tqds::net::SetRecvTimeout(fd, kHandshakeTimeoutMs);
  std::vector<iovec> out = {{&hello, sizeof(hello)}};
  bool ok = WriteAllV(fd, out) && ReadAll(fd, answer, sizeof(answer));
  const char* why = "closed or stalled";
  Result<StreamKey> key = Status::Invalid("no answer");
  if (ok) {
    const std::string client(reinterpret_cast<const char*>(answer), 32);
    ok = std::find(id_->authorized.begin(), id_->authorized.end(), client) != id_->authorized.end();
    why = "a client key it does not authorize";
  }
  if (ok) {
    key = DeriveStreamKey(id_->server_secret, answer, answer, id_->server_public);
    ok = key.ok();
    why = "an unusable client key";
  }
  if (ok) {
    StreamTag(key->k, 'C', hello.nonce, answer + 32, want);
    ok = sodium_memcmp(want, answer + 64, 32) == 0;
    why = "a wrong proof (another deployment's server key?)";
  }
  if (!ok) {
    const int64_t now = NowMs();
    if (now - last_refusal_log_ms_.exchange(now) > 10000) {
      spdlog::warn("{}: a stream connection on {} failed the handshake ({}); closed", name_, endpoint_, why);
    }
    return false;
  }
  StreamTag(key->k, 'S', answer + 32, hello.nonce, proof);
  std::vector<iovec> reply = {{proof, sizeof(proof)}};
  tqds::net::SetRecvTimeout(fd, options_.connections.idle_timeout_ms);
  return WriteAllV(fd, reply);
}

void StreamServer::Serve(int fd) {
  if (!Handshake(fd)) return;
  while (!stopping_.load()) {
    auto request = ReadStreamMessage(fd, options_.limits);
    if (!request.ok()) {
      if (request.status().IsIOError()) return;  // closed, idle or stalled
      const int64_t now = NowMs();
      if (now - last_refusal_log_ms_.exchange(now) > 10000) {
        spdlog::warn("{}: refused a stream-channel message on {}: {}", name_, endpoint_,
                     request.status().ToString());
      }
      Message refusal(MsgType::kInvalid, 0);
      refusal.set_status(request.status().WithContext(name_));
      (void)WriteStreamMessage(fd, refusal);
      return;
    }
    const MsgType type = request->type();
    const uint64_t id = request->request_id();
    Message reply;
    bool answered = false;
    try {
      handler_(std::move(*request), Responder::Capture(type, id, [&](Message r) {
                 reply = std::move(r);
                 answered = true;
               }));
    } catch (const std::exception& e) {
      reply = Message(type, id);
      reply.set_status(Status::Internal(name_, ": the handler failed: ", e.what()));
      answered = true;
    }
    if (!answered) {
      reply = Message(type, id);
      reply.set_status(Status::Internal(name_, ": no reply to a stream-channel request of type ", int(type)));
    }
    if (!WriteStreamMessage(fd, reply).ok()) return;
  }
}

void StreamServer::Stop() {
  stopping_.store(true);
  if (server_) server_->Stop();
}

StreamServer::~StreamServer() { Stop(); }

// ------------------------------------------------------------------ client

Result<std::unique_ptr<StreamClient>> StreamClient::Create(const std::string& endpoint, StreamClientOptions options) {
  std::string host;
  int port = 0;
  TQDS_RETURN_NOT_OK(tqds::net::SplitHostPort(endpoint, "stream endpoint", &host, &port));
  TQDS_ASSIGN_OR_RETURN(auto id, ProcessStreamIdentity());
  if (!id || !id->can_connect) {
    return Status::PermissionDenied("the stream channel to ", endpoint,
                                    " needs the deployment's client keys (TQDS_CURVE_KEY_DIR with client.key_secret)");
  }
  return std::unique_ptr<StreamClient>(new StreamClient(endpoint, std::move(host), port, options, std::move(id)));
}

StreamClient::~StreamClient() {
  for (int fd : idle_) ::close(fd);
}

Status StreamClient::Handshake(int fd) {
  Hello hello{};
  auto* raw = reinterpret_cast<uint8_t*>(&hello);
  if (!ReadAll(fd, raw, kStreamPrefixBytes)) {
    return Status::Unavailable("no handshake from stream endpoint ", endpoint_, ": ", ErrnoText(errno));
  }
  if (hello.magic == kStreamMessageMagic) {  // a server over its connection cap says so instead
    StreamLimits small;
    small.max_frames = 1;
    small.max_header_bytes = 4096;
    auto refusal = ReadAfterPrefix(fd, raw, small);
    if (refusal.ok() && !refusal->status().ok()) return refusal->status();
    return Status::PermissionDenied("stream endpoint ", endpoint_, " sent a message instead of its handshake");
  }
  if (!ReadAll(fd, raw + kStreamPrefixBytes, sizeof(hello) - kStreamPrefixBytes)) {
    return Status::Unavailable("no handshake from stream endpoint ", endpoint_, ": ", ErrnoText(errno));
  }
  if (hello.magic != kStreamHelloMagic || hello.version != kStreamVersion) {
    return Status::PermissionDenied("stream endpoint ", endpoint_,
                                    " did not start the stream channel's handshake (another program?)");
  }
  uint8_t answer[kStreamAnswerBytes], proof[kStreamProofBytes], want[32];
  std::memcpy(answer, id_->client_public, 32);
  randombytes_buf(answer + 32, 32);
  TQDS_ASSIGN_OR_RETURN(StreamKey key,
                        DeriveStreamKey(id_->client_secret, id_->server_public, id_->client_public, id_->server_public));
  StreamTag(key.k, 'C', hello.nonce, answer + 32, answer + 64);
  std::vector<iovec> out = {{answer, sizeof(answer)}};
  if (!WriteAllV(fd, out) || !ReadAll(fd, proof, sizeof(proof))) {
    return Status::PermissionDenied("stream endpoint ", endpoint_,
                                    " closed the handshake: it does not authorize this client's key, or holds "
                                    "another deployment's server key");
  }
  StreamTag(key.k, 'S', answer + 32, hello.nonce, want);
  if (sodium_memcmp(want, proof, 32) != 0) {
    return Status::PermissionDenied("stream endpoint ", endpoint_, " failed to prove the deployment's server key");
  }
  return Status::OK();
}

Result<int> StreamClient::Acquire(int timeout_ms) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    while (!idle_.empty()) {
      int fd = idle_.back();
      idle_.pop_back();
      pollfd p{fd, POLLIN | POLLRDHUP, 0};
      if (::poll(&p, 1, 0) == 0) return fd;  // idle and still open
      ::close(fd);                           // the server closed it (idle, restarted)
    }
  }
  TQDS_ASSIGN_OR_RETURN(int fd,
                        tqds::net::ConnectTcp(host_, port_, std::min(timeout_ms, options_.connect_timeout_ms), endpoint_));
  tqds::net::SetIoTimeouts(fd, std::min(timeout_ms, kHandshakeTimeoutMs));
  Status st = Handshake(fd);
  if (!st.ok()) {
    ::close(fd);
    return st;
  }
  return fd;
}

void StreamClient::Return(int fd) {
  std::lock_guard<std::mutex> lock(mu_);
  if (idle_.size() >= options_.max_idle) {
    ::close(fd);
    return;
  }
  idle_.push_back(fd);
}

Result<Message> StreamClient::CallSync(Message request, std::chrono::milliseconds timeout) {
  if (request.request_id() == 0) request.set_request_id(next_id_.fetch_add(1));
  const int ms = ClampMs(timeout);
  TQDS_ASSIGN_OR_RETURN(int fd, Acquire(ms));
  tqds::net::SetIoTimeouts(fd, ms);
  Status sent = WriteStreamMessage(fd, request);
  if (!sent.ok()) {
    ::close(fd);
    return Status::Unavailable("stream endpoint ", endpoint_, ": ", sent.message());
  }
  auto reply = ReadStreamMessage(fd, options_.limits);
  if (!reply.ok()) {
    ::close(fd);
    return Status(reply.status().IsIOError() ? StatusCode::kUnavailable : reply.status().code(),
                  "stream endpoint " + endpoint_ + ": " + reply.status().message());
  }
  if (reply->request_id() == 0 && !reply->status().ok()) {  // the server refused the connection or request
    ::close(fd);
    return reply->status();
  }
  if (reply->request_id() != request.request_id() || reply->type() != request.type()) {
    ::close(fd);
    return Status::Invalid("stream endpoint ", endpoint_, " answered request ", request.request_id(),
                           " with a reply to ", reply->request_id());
  }
  Return(fd);
  if (!reply->status().ok()) return reply->status();
  return reply;
}

std::future<Result<Message>> StreamClient::Call(Message request, std::chrono::milliseconds timeout) {
  return std::async(std::launch::async,
                    [this, timeout](Message m) { return CallSync(std::move(m), timeout); }, std::move(request));
}

}  // namespace tqds::wire
