// Worker-to-worker byte transfer: the pull server and the pulling client.
#include "datasystem/data_plane.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <spdlog/spdlog.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <sodium.h>
#include <zmq.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>

#include "common/wire/security.h"
#include "common/wire/stream_codec.h"
#include "common/wire/transport.h"
#include "datasystem/protocol.h"
#include "datasystem/worker_options.h"

namespace ds {
namespace {

using tqds::net::ErrnoText;
using tqds::net::ReadAll;
using tqds::net::SetRecvTimeout;
using tqds::net::WriteAll;
using tqds::net::WriteAllV;

struct RequestHeader {
  uint32_t magic;
  uint32_t key_len;
  uint64_t version;
  uint64_t offset;
  uint64_t length;
};
static_assert(sizeof(RequestHeader) == 32);

struct ReplyHeader {
  uint8_t code;
  uint8_t pad[3];
  uint32_t msg_len;
  uint64_t length;
  uint64_t ttl_ms;  // the object's time left to live; 0: never expires
};
static_assert(sizeof(ReplyHeader) == 24);

// Reads exactly na bytes into a, then nb into b, in as few syscalls as the
// socket allows (one reply's payload and the next reply's header together).
bool ReadTwo(int fd, void* a, size_t na, void* b, size_t nb) {
  iovec iov[2] = {{a, na}, {b, nb}};
  return tqds::net::ReadAllV(fd, iov, 2);
}

struct Hello {
  uint32_t magic;
  uint32_t version;
  uint8_t nonce[32];
};
static_assert(sizeof(Hello) == 40);
constexpr uint32_t kHandshakeVersion = 1;
constexpr int kHandshakeTimeoutMs = 5000;


}  // namespace

// ------------------------------------------------------------------ messages

void EncodePullRequest(const std::string& key, const PullRange& range, std::string* out) {
  RequestHeader h{kPullMagic, static_cast<uint32_t>(key.size()), range.version, range.offset, range.length};
  out->append(reinterpret_cast<const char*>(&h), sizeof(h));
  out->append(key);
}

Result<size_t> DecodePullRequests(const uint8_t* in, size_t n, size_t max, std::vector<PullRange>* ranges,
                                  std::vector<std::string>* keys) {
  const size_t ranges_before = ranges->size(), keys_before = keys->size();
  auto refuse = [&](Status st) -> Result<size_t> {  // keeps nothing of this batch
    ranges->resize(ranges_before);
    keys->resize(keys_before);
    return st;
  };
  size_t used = 0;
  while (ranges->size() - ranges_before < max && n - used >= sizeof(RequestHeader)) {
    RequestHeader h;
    std::memcpy(&h, in + used, sizeof(h));
    if (h.magic != kPullMagic) return refuse(Status::Invalid("not a data-plane request: magic 0x", std::hex, h.magic));
    if (h.key_len == 0 || h.key_len > proto::kMaxKeyBytes) {
      return refuse(Status::Invalid("data-plane request with a key of ", h.key_len, " bytes (1 to ",
                                    proto::kMaxKeyBytes, " allowed)"));
    }
    if (n - used - sizeof(h) < h.key_len) break;  // the key is not here yet
    ranges->push_back(PullRange{h.version, h.offset, h.length});
    keys->emplace_back(reinterpret_cast<const char*>(in + used + sizeof(h)), h.key_len);
    used += sizeof(h) + h.key_len;
  }
  return used;
}

void EncodePullReply(const PullReply& r, uint8_t* out) {
  ReplyHeader h{};
  h.code = static_cast<uint8_t>(r.code);
  h.msg_len = r.msg_len;
  h.length = r.length;
  h.ttl_ms = r.ttl_ms;
  std::memcpy(out, &h, sizeof(h));
}

Result<PullReply> DecodePullReply(const uint8_t* in, uint64_t expected) {
  ReplyHeader h;
  std::memcpy(&h, in, sizeof(h));
  if (h.code > static_cast<uint8_t>(tqds::kLastStatusCode)) {
    return Status::Invalid("a reply with unknown status ", static_cast<int>(h.code), " (not this protocol)");
  }
  PullReply r{static_cast<StatusCode>(h.code), h.msg_len, h.length, h.ttl_ms};
  if (r.code != StatusCode::kOk) {
    if (h.msg_len > (1u << 20)) return Status::Invalid("a reply with a message of ", h.msg_len, " bytes");
    return r;
  }
  if (h.length != expected || h.msg_len != 0) {
    return Status::Invalid("reply of the wrong length: ", h.length, " bytes where ", expected, " were asked for");
  }
  return r;
}

Result<HandshakeKey> LoadHandshakeKey() {
  TQDS_ASSIGN_OR_RETURN(auto keys, tqds::wire::ProcessCurveKeys());
  HandshakeKey h;
  if (!keys) return h;
  if (keys->server_secret.empty()) {
    return Status::PermissionDenied("the worker-to-worker data plane needs the deployment's server.key_secret (",
                                    keys->dir, " has none)");
  }
  if (sodium_init() < 0) return Status::Internal("libsodium cannot initialise");
  uint8_t raw[32];
  if (zmq_z85_decode(raw, keys->server_secret.c_str()) == nullptr) {
    return Status::Invalid(keys->dir, "/server.key_secret is not a Z85 key");
  }
  static constexpr char kContext[] = "tqds data plane v1";
  crypto_generichash(h.k, sizeof(h.k), reinterpret_cast<const uint8_t*>(kContext), sizeof(kContext) - 1, raw,
                     sizeof(raw));
  sodium_memzero(raw, sizeof(raw));
  h.on = true;
  return h;
}

// ------------------------------------------------------------------ server

Result<std::unique_ptr<DataServer>> DataServer::Start(const std::string& ip, int port,
                                                      std::string name, ObjectStore& store,
                                                      DataServerOptions options) {
  TQDS_ASSIGN_OR_RETURN(HandshakeKey key, LoadHandshakeKey());
  if (!key.on) TQDS_RETURN_NOT_OK(tqds::wire::CheckPlainServe("tcp://" + ip + ":" + std::to_string(port)));
  int bound = 0;
  TQDS_ASSIGN_OR_RETURN(int fd, tqds::net::ListenTcp(ip, port, "worker-to-worker transfers", &bound));
  std::unique_ptr<DataServer> s(
      new DataServer(ip + ":" + std::to_string(bound), std::move(name), store, options, key));
  tqds::net::ConnectionServerOptions co;
  co.max_connections = options.max_connections;
  co.idle_timeout_ms = options.idle_timeout_ms;
  co.send_timeout_ms = options.send_timeout_ms;
  DataServer* p = s.get();
  s->server_ = std::make_unique<tqds::net::ConnectionServer>(
      fd, co, [p](int c) { p->Serve(c); }, [p](int c, size_t open) { p->Refuse(c, open); });
  return s;
}

void DataServer::Refuse(int fd, size_t open) {
  const auto now = std::chrono::steady_clock::now();
  ++refused_;
  if (now - last_refusal_log_ > std::chrono::seconds(10)) {
    spdlog::warn("worker {} refuses data connections on {}: {} are open (the limit); {} refused "
                 "since the last message",
                 name_, endpoint_, open, refused_);
    last_refusal_log_ = now;
    refused_ = 0;
  }
  const std::string msg = "worker " + name_ + " refuses this data connection: " +
                          std::to_string(options_.max_connections) +
                          " are open (its limit)";
  ReplyHeader r{};
  r.code = static_cast<uint8_t>(StatusCode::kUnavailable);
  r.msg_len = static_cast<uint32_t>(msg.size());
  std::vector<iovec> iov = {{&r, sizeof(r)}, {const_cast<char*>(msg.data()), msg.size()}};
  (void)WriteAllV(fd, iov);
}

bool DataServer::Handshake(int fd) {
  Hello hello{kHandshakeMagic, kHandshakeVersion, {}};
  randombytes_buf(hello.nonce, sizeof(hello.nonce));
  std::vector<iovec> out = {{&hello, sizeof(hello)}};
  uint8_t answer[64], want[32], proof[32];
  SetRecvTimeout(fd, kHandshakeTimeoutMs);
  bool ok = WriteAllV(fd, out) && ReadAll(fd, answer, sizeof(answer));
  if (ok) {
    tqds::wire::StreamTag(key_.k, 'C', hello.nonce, answer, want);
    ok = sodium_memcmp(want, answer + 32, 32) == 0;
  }
  if (!ok) {
    const int64_t now = std::chrono::duration_cast<std::chrono::milliseconds>(
                            std::chrono::steady_clock::now().time_since_epoch())
                            .count();
    if (now - last_handshake_log_ms_.exchange(now) > 10000) {
      spdlog::warn("worker {}: a data connection on {} failed the handshake (no or other keys); closed",
                   name_, endpoint_);
    }
    return false;
  }
  tqds::wire::StreamTag(key_.k, 'S', answer, hello.nonce, proof);
  std::vector<iovec> reply = {{proof, sizeof(proof)}};
  SetRecvTimeout(fd, options_.idle_timeout_ms);
  return WriteAllV(fd, reply);
}

void DataServer::Serve(int fd) {
  // Requests are pipelined: parse every complete one that is buffered, look
  // them up under one lock, answer them with one gathered write straight
  // from shared memory, release their pins under one lock.
  constexpr size_t kMaxBatch = 512;
  Session session;
  std::vector<uint8_t> in(256 << 10);
  size_t begin = 0, end = 0;  // unparsed bytes: in[begin, end)
  std::vector<PullRange> heads;
  std::vector<std::string> keys;
  std::vector<ReplyHeader> replies;
  std::vector<std::string> errors;
  std::vector<iovec> iov;
  std::vector<uint64_t> pinned;
  bool alive = !key_.on || Handshake(fd);
  while (alive && !stopping_.load()) {
    heads.clear();
    keys.clear();
    while (true) {
      auto used = DecodePullRequests(in.data() + begin, end - begin, kMaxBatch, &heads, &keys);
      if (!used.ok()) {
        alive = false;  // not our protocol: drop the connection
        break;
      }
      if (*used > 0 && tqds::wire::CaptureOn()) {
        tqds::wire::CaptureInput("data-", static_cast<int>(heads.size()), in.data() + begin, *used);
      }
      begin += *used;
      if (!heads.empty()) break;  // serve what is complete; read more later
      if (begin > 0) {
        std::memmove(in.data(), in.data() + begin, end - begin);
        end -= begin;
        begin = 0;
      }
      ssize_t r = ::recv(fd, in.data() + end, in.size() - end, 0);
      if (r < 0 && errno == EINTR) continue;
      if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        SPDLOG_DEBUG("closing a data connection idle for {} ms", options_.idle_timeout_ms);
        alive = false;
        break;
      }
      if (r <= 0) {
        alive = false;
        break;
      }
      end += static_cast<size_t>(r);
    }
    if (!alive || heads.empty()) break;

    auto found = store_.Get(session, keys, std::chrono::milliseconds(0));
    replies.assign(heads.size(), ReplyHeader{});
    errors.assign(heads.size(), std::string());
    iov.clear();
    pinned.clear();
    for (size_t i = 0; i < heads.size(); ++i) {
      const PullRange& h = heads[i];
      ReplyHeader& r = replies[i];
      std::string& err = errors[i];
      if (!found.ok()) {
        r.code = static_cast<uint8_t>(found.status().code());
        err = found.status().message();
      } else {
        const Located& l = (*found)[i];
        if (l.code == StatusCode::kOk) pinned.push_back(l.offset);
        if (l.code != StatusCode::kOk) {
          r.code = static_cast<uint8_t>(StatusCode::kNotFound);
          err = "worker " + name_ + " has no object '" + keys[i] + "'";
        } else if (l.version != h.version) {
          r.code = static_cast<uint8_t>(StatusCode::kNotFound);
          err = "worker " + name_ + " holds another version of '" + keys[i] + "' (it was overwritten)";
        } else if (h.offset > l.size || h.length > l.size - h.offset) {
          r.code = static_cast<uint8_t>(StatusCode::kInvalid);
          err = "range beyond the object";
        } else {
          r.length = h.length;
          r.ttl_ms = l.ttl_ms;
        }
      }
      r.msg_len = static_cast<uint32_t>(err.size());
      iov.push_back({&r, sizeof(r)});
      if (!err.empty()) {
        iov.push_back({err.data(), err.size()});
      } else if (r.length > 0) {
        iov.push_back({store_.base() + (*found)[i].offset + h.offset, r.length});
      }
    }
    alive = WriteAllV(fd, iov);
    store_.Release(session, pinned);
  }
  store_.CloseSession(session);
}

void DataServer::Stop() {
  stopping_.store(true);
  if (server_) server_->Stop();
}

DataServer::~DataServer() { Stop(); }

// ------------------------------------------------------------------ client

PullClient::PullClient(PullOptions options) : options_(options), key_(LoadHandshakeKey()) {}

Status PullClient::Handshake(int fd, const std::string& endpoint) {
  Hello hello{};
  if (!ReadAll(fd, &hello, sizeof(hello))) {
    return Status::Unavailable("no handshake from data endpoint ", endpoint, ": ", ErrnoText(errno),
                               " (its worker may have no keys while this one has)");
  }
  if (hello.magic != kHandshakeMagic || hello.version != kHandshakeVersion) {
    // A server over its connection cap answers with a refusal instead.
    ReplyHeader r;
    std::memcpy(&r, &hello, sizeof(r));
    if (r.code > 0 && r.code <= static_cast<uint8_t>(tqds::kLastStatusCode) && r.msg_len >= sizeof(hello) - sizeof(r) &&
        r.msg_len <= 4096) {
      std::string msg(reinterpret_cast<const char*>(&hello) + sizeof(r), sizeof(hello) - sizeof(r));
      msg.resize(r.msg_len);
      if (ReadAll(fd, msg.data() + (sizeof(hello) - sizeof(r)), r.msg_len - (sizeof(hello) - sizeof(r)))) {
        return Status(static_cast<StatusCode>(r.code), msg);
      }
    }
    return Status::PermissionDenied("data endpoint ", endpoint, " did not start the handshake this worker's keys "
                                    "require (a worker without keys, or another program)");
  }
  uint8_t answer[64], want[32], proof[32];
  randombytes_buf(answer, 32);
  tqds::wire::StreamTag(key_->k, 'C', hello.nonce, answer, answer + 32);
  std::vector<iovec> out = {{answer, sizeof(answer)}};
  if (!WriteAllV(fd, out) || !ReadAll(fd, proof, sizeof(proof))) {
    return Status::PermissionDenied("data endpoint ", endpoint, " closed the handshake: it does not hold this "
                                    "worker's keys (another deployment's server key?)");
  }
  tqds::wire::StreamTag(key_->k, 'S', answer, hello.nonce, want);
  if (sodium_memcmp(want, proof, 32) != 0) {
    return Status::PermissionDenied("data endpoint ", endpoint, " failed to prove the deployment's key");
  }
  return Status::OK();
}

PullClient::~PullClient() {
  for (auto& [ep, fds] : idle_) {
    (void)ep;
    for (int fd : fds) ::close(fd);
  }
}

Result<int> PullClient::Acquire(const std::string& endpoint) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto& fds = idle_[endpoint];
    while (!fds.empty()) {
      int fd = fds.back();
      fds.pop_back();
      pollfd p{fd, POLLIN | POLLRDHUP, 0};
      if (::poll(&p, 1, 0) == 0) return fd;  // idle and still open
      ::close(fd);                           // the peer closed it (e.g. restarted)
    }
  }
  if (!key_.ok()) return key_.status();
  TQDS_ASSIGN_OR_RETURN(HostPort hp, HostPort::Parse(endpoint, "data endpoint"));
  TQDS_ASSIGN_OR_RETURN(int fd, tqds::net::ConnectTcp(hp.host, hp.port, options_.connect_timeout_ms, endpoint));
  tqds::net::SetIoTimeouts(fd, options_.io_timeout_ms);
  if (!key_.ok()) {
    ::close(fd);
    return key_.status();
  }
  if (key_->on) {
    Status st = Handshake(fd, endpoint);
    if (!st.ok()) {
      ::close(fd);
      return st;
    }
  }
  return fd;
}

void PullClient::Return(const std::string& endpoint, int fd) {
  std::lock_guard<std::mutex> lock(mu_);
  auto& fds = idle_[endpoint];
  if (fds.size() >= options_.connections * 2) {
    ::close(fd);
    return;
  }
  fds.push_back(fd);
}

std::vector<Status> PullClient::Pull(const std::string& endpoint, const std::string& holder,
                                     std::vector<PullItem>& items) {
  struct Chunk {
    size_t item;
    uint64_t offset, length;
  };
  std::vector<Chunk> chunks;
  const uint64_t cb = std::max<uint64_t>(options_.chunk_bytes, 1);
  for (size_t i = 0; i < items.size(); ++i) {
    if (items[i].size == 0) {
      chunks.push_back({i, 0, 0});
      continue;
    }
    for (uint64_t off = 0; off < items[i].size; off += cb) {
      chunks.push_back({i, off, std::min(cb, items[i].size - off)});
    }
  }
  const size_t nconn = std::max<size_t>(1, std::min(options_.connections, chunks.size()));
  std::vector<Status> result(items.size());
  std::mutex result_mu;
  auto fail = [&](size_t item, Status st) {
    std::lock_guard<std::mutex> lock(result_mu);
    if (result[item].ok()) result[item] = std::move(st);
  };
  // Connection c carries chunks c, c + nconn, ...: requests first, then replies in order.
  auto run = [&](size_t c) {
    auto fd = Acquire(endpoint);
    if (!fd.ok()) {
      for (size_t k = c; k < chunks.size(); k += nconn) {
        // A failed handshake stays PermissionDenied: the peer is up, the keys differ.
        fail(chunks[k].item, Status(fd.status().IsPermissionDenied() ? StatusCode::kPermissionDenied
                                                                      : StatusCode::kUnavailable,
                                    "cannot fetch '" + items[chunks[k].item].key + "' from worker " + holder +
                                        ": " + fd.status().message()));
      }
      return;
    }
    bool broken = false;
    std::string io_error;
    std::string req;
    for (size_t k = c; k < chunks.size(); k += nconn) {
      const PullItem& it = items[chunks[k].item];
      EncodePullRequest(it.key, PullRange{it.version, it.offset + chunks[k].offset, chunks[k].length}, &req);
    }
    if (!WriteAll(*fd, req.data(), req.size())) {
      broken = true;
      io_error = ErrnoText(errno);
    }
    std::string msg;
    ReplyHeader next{};
    bool have_next = false;
    for (size_t k = c; k < chunks.size() && !broken; k += nconn) {
      const Chunk& ch = chunks[k];
      PullItem& it = items[ch.item];
      ReplyHeader r;
      if (have_next) {
        r = next;
        have_next = false;
      } else if (!ReadAll(*fd, &r, sizeof(r))) {
        broken = true;
        io_error = ErrnoText(errno);
        break;
      }
      auto reply = DecodePullReply(reinterpret_cast<const uint8_t*>(&r), ch.length);
      if (!reply.ok()) {
        broken = true;
        io_error = reply.status().message();
        break;
      }
      if (reply->code != StatusCode::kOk) {
        msg.resize(reply->msg_len);
        if (!ReadAll(*fd, msg.data(), msg.size())) {
          broken = true;
          io_error = "bad reply";
          break;
        }
        fail(ch.item, Status(reply->code, msg));
        continue;
      }
      if (r.ttl_ms != 0) {  // chunks may see different moments: keep the shortest
        std::lock_guard<std::mutex> lock(result_mu);
        if (it.ttl_ms == 0 || r.ttl_ms < it.ttl_ms) it.ttl_ms = r.ttl_ms;
      }
      // This payload and the next reply's header in one go.
      const bool more = k + nconn < chunks.size();
      if (more ? !ReadTwo(*fd, it.dest + ch.offset, ch.length, &next, sizeof(next))
               : !ReadAll(*fd, it.dest + ch.offset, ch.length)) {
        broken = true;
        io_error = ErrnoText(errno);
        break;
      }
      have_next = more;
    }
    if (broken) {
      ::close(*fd);
      for (size_t k = c; k < chunks.size(); k += nconn) {
        fail(chunks[k].item, Status::Unavailable("cannot fetch '", items[chunks[k].item].key,
                                                 "' from worker ", holder, " (", endpoint,
                                                 "): ", io_error));
      }
      return;
    }
    Return(endpoint, *fd);
  };
  std::vector<std::thread> threads;
  for (size_t c = 1; c < nconn; ++c) threads.emplace_back(run, c);
  run(0);
  for (auto& t : threads) t.join();
  return result;
}

}  // namespace ds
