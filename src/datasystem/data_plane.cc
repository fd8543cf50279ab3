// Worker-to-worker byte transfer: the pull server and the pulling client.
#include "datasystem/data_plane.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <spdlog/spdlog.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>

#include "datasystem/protocol.h"
#include "datasystem/worker_options.h"

namespace ds {
namespace {

// Items at least this large get their destination pages faulted in ahead of
// the sockets (see Pull).
constexpr uint64_t kPrefaultMin = 1ull << 20;

// Faults in [p, p + n) for writing (whole pages), without changing its bytes.
// False when the kernel does not support it (before Linux 5.14).
bool PrefaultForWrite(uint8_t* p, uint64_t n) {
  static const uintptr_t page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
  uintptr_t begin = reinterpret_cast<uintptr_t>(p) & ~(page - 1);
  uintptr_t end = (reinterpret_cast<uintptr_t>(p) + n + page - 1) & ~(page - 1);
  return ::madvise(reinterpret_cast<void*>(begin), end - begin, MADV_POPULATE_WRITE) == 0 ||
         errno != EINVAL;
}

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

// Reads exactly n bytes. false on EOF, error or timeout (errno tells).
bool ReadAll(int fd, void* buf, size_t n) {
  auto* p = static_cast<uint8_t*>(buf);
  while (n > 0) {
    ssize_t r = ::recv(fd, p, n, MSG_WAITALL);
    if (r > 0) {
      p += r;
      n -= static_cast<size_t>(r);
      continue;
    }
    if (r == 0) {
      errno = ECONNRESET;
      return false;
    }
    if (errno == EINTR) continue;
    return false;
  }
  return true;
}

bool WriteAll(int fd, const void* buf, size_t n, int flags = 0) {
  auto* p = static_cast<const uint8_t*>(buf);
  while (n > 0) {
    ssize_t r = ::send(fd, p, n, MSG_NOSIGNAL | flags);
    if (r > 0) {
      p += r;
      n -= static_cast<size_t>(r);
      continue;
    }
    if (r < 0 && errno == EINTR) continue;
    return false;
  }
  return true;
}

void SetTimeouts(int fd, int ms) {
  timeval tv{ms / 1000, (ms % 1000) * 1000};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

std::string ErrnoText(int e) { return e == EAGAIN ? "timed out" : std::strerror(e); }

}  // namespace

// ------------------------------------------------------------------ server

Result<std::unique_ptr<DataServer>> DataServer::Start(const std::string& ip, int port,
                                                      std::string name, ObjectStore& store) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return Status::IOError("data server socket: ", std::strerror(errno));
  int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  if (::inet_pton(AF_INET, ip.c_str(), &a.sin_addr) != 1) {
    ::close(fd);
    return Status::Invalid("data server: bad IPv4 address '", ip, "'");
  }
  if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0 || ::listen(fd, 128) != 0) {
    int e = errno;
    ::close(fd);
    return Status::IOError("cannot listen for worker-to-worker transfers on ", ip, ":", port, ": ",
                           std::strerror(e));
  }
  socklen_t len = sizeof(a);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  std::unique_ptr<DataServer> s(
      new DataServer(fd, ip + ":" + std::to_string(ntohs(a.sin_port)), std::move(name), store));
  s->wake_fd_ = ::eventfd(0, EFD_CLOEXEC);
  s->accept_thread_ = std::thread([p = s.get()] { p->AcceptLoop(); });
  return s;
}

void DataServer::AcceptLoop() {
  while (!stopping_.load()) {
    pollfd p[2] = {{listen_fd_, POLLIN, 0}, {wake_fd_, POLLIN, 0}};
    if (::poll(p, 2, 1000) < 0 && errno != EINTR) break;
    if (stopping_.load()) break;
    if (!(p[0].revents & POLLIN)) continue;
    int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) continue;
    int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    std::lock_guard<std::mutex> lock(mu_);
    ReapLocked(false);
    auto c = std::make_unique<Conn>();
    c->fd = fd;
    Conn* raw = c.get();
    conns_.push_back(std::move(c));
    raw->thread = std::thread([this, raw] { Serve(raw); });
  }
}

void DataServer::Serve(Conn* conn) {
  Session session;
  std::string key;
  while (!stopping_.load()) {
    RequestHeader h;
    if (!ReadAll(conn->fd, &h, sizeof(h))) break;
    if (h.magic != kPullMagic || h.key_len == 0 || h.key_len > proto::kMaxKeyBytes) break;
    key.resize(h.key_len);
    if (!ReadAll(conn->fd, key.data(), key.size())) break;
    auto reply_error = [&](StatusCode code, const std::string& msg) {
      ReplyHeader r{static_cast<uint8_t>(code), {0, 0, 0}, static_cast<uint32_t>(msg.size()), 0, 0};
      return WriteAll(conn->fd, &r, sizeof(r), MSG_MORE) && WriteAll(conn->fd, msg.data(), msg.size());
    };
    auto found = store_.Get(session, {key}, std::chrono::milliseconds(0));
    if (!found.ok()) {
      if (!reply_error(found.status().code(), found.status().message())) break;
      continue;
    }
    const Located& l = (*found)[0];
    if (l.code != StatusCode::kOk) {
      if (!reply_error(StatusCode::kNotFound, "worker " + name_ + " has no object '" + key + "'")) break;
      continue;
    }
    bool ok = true;
    if (l.version != h.version) {
      ok = reply_error(StatusCode::kNotFound, "worker " + name_ + " holds another version of '" +
                                                  key + "' (it was overwritten)");
    } else if (h.offset > l.size || h.length > l.size - h.offset) {
      ok = reply_error(StatusCode::kInvalid, "range beyond the object");
    } else {
      ReplyHeader r{0, {0, 0, 0}, 0, h.length, l.ttl_ms};
      ok = WriteAll(conn->fd, &r, sizeof(r), h.length > 0 ? MSG_MORE : 0) &&
           WriteAll(conn->fd, store_.base() + l.offset + h.offset, h.length);
    }
    store_.Release(session, {l.offset});
    if (!ok) break;
  }
  store_.CloseSession(session);
  ::shutdown(conn->fd, SHUT_RDWR);
  conn->done.store(true);
}

void DataServer::ReapLocked(bool all) {
  for (auto it = conns_.begin(); it != conns_.end();) {
    Conn& c = **it;
    if (all || c.done.load()) {
      if (all) ::shutdown(c.fd, SHUT_RDWR);
      if (c.thread.joinable()) c.thread.join();
      ::close(c.fd);
      it = conns_.erase(it);
    } else {
      ++it;
    }
  }
}

void DataServer::Stop() {
  if (stopping_.exchange(true)) return;
  uint64_t one = 1;
  ssize_t n = ::write(wake_fd_, &one, sizeof(one));
  (void)n;
  if (accept_thread_.joinable()) accept_thread_.join();
  std::lock_guard<std::mutex> lock(mu_);
  ReapLocked(true);
}

DataServer::~DataServer() {
  Stop();
  ::close(listen_fd_);
  if (wake_fd_ >= 0) ::close(wake_fd_);
}

// ------------------------------------------------------------------ client

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
  TQDS_ASSIGN_OR_RETURN(HostPort hp, HostPort::Parse(endpoint, "data endpoint"));
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(hp.port));
  if (::inet_pton(AF_INET, hp.host.c_str(), &a.sin_addr) != 1) {
    ::close(fd);
    return Status::Invalid("bad data endpoint ", endpoint);
  }
  int rc = ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a));
  if (rc != 0 && errno != EINPROGRESS) {
    int e = errno;
    ::close(fd);
    return Status::Unavailable("cannot connect to ", endpoint, ": ", std::strerror(e));
  }
  if (rc != 0) {
    pollfd p{fd, POLLOUT, 0};
    if (::poll(&p, 1, options_.connect_timeout_ms) != 1) {
      ::close(fd);
      return Status::Unavailable("cannot connect to ", endpoint, ": timed out");
    }
    int err = 0;
    socklen_t len = sizeof(err);
    ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
    if (err != 0) {
      ::close(fd);
      return Status::Unavailable("cannot connect to ", endpoint, ": ", std::strerror(err));
    }
  }
  ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) & ~O_NONBLOCK);
  SetTimeouts(fd, options_.io_timeout_ms);
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
        fail(chunks[k].item, Status::Unavailable("cannot fetch '", items[chunks[k].item].key,
                                                 "' from worker ", holder, ": ",
                                                 fd.status().message()));
      }
      return;
    }
    bool broken = false;
    std::string io_error;
    std::string req;
    for (size_t k = c; k < chunks.size(); k += nconn) {
      const PullItem& it = items[chunks[k].item];
      RequestHeader h{kPullMagic, static_cast<uint32_t>(it.key.size()), it.version,
                      chunks[k].offset, chunks[k].length};
      req.append(reinterpret_cast<const char*>(&h), sizeof(h));
      req.append(it.key);
    }
    if (!WriteAll(*fd, req.data(), req.size())) {
      broken = true;
      io_error = ErrnoText(errno);
    }
    std::string msg;
    for (size_t k = c; k < chunks.size() && !broken; k += nconn) {
      const Chunk& ch = chunks[k];
      PullItem& it = items[ch.item];
      ReplyHeader r;
      if (!ReadAll(*fd, &r, sizeof(r))) {
        broken = true;
        io_error = ErrnoText(errno);
        break;
      }
      if (r.code != 0) {
        msg.resize(std::min<uint32_t>(r.msg_len, 1u << 20));
        if (r.msg_len > (1u << 20) || !ReadAll(*fd, msg.data(), msg.size())) {
          broken = true;
          io_error = "bad reply";
          break;
        }
        fail(ch.item, Status(static_cast<StatusCode>(r.code), msg));
        continue;
      }
      if (r.length != ch.length || r.msg_len != 0) {
        broken = true;
        io_error = "reply of the wrong length";
        break;
      }
      if (r.ttl_ms != 0) {  // chunks may see different moments: keep the shortest
        std::lock_guard<std::mutex> lock(result_mu);
        if (it.ttl_ms == 0 || r.ttl_ms < it.ttl_ms) it.ttl_ms = r.ttl_ms;
      }
      if (!ReadAll(*fd, it.dest + ch.offset, ch.length)) {
        broken = true;
        io_error = ErrnoText(errno);
        break;
      }
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
  // A fresh shared-memory page costs a fault (and zeroing) on its first
  // write, which would stall the receiving threads; a helper thread faults
  // the destinations of large items in, in the order the chunks arrive, and
  // stays ahead because that is faster than the network.
  std::atomic<bool> received{false};
  std::thread prefault;
  if (nconn > 0 && std::any_of(items.begin(), items.end(),
                               [](const PullItem& it) { return it.size >= kPrefaultMin; })) {
    prefault = std::thread([&] {
      for (const Chunk& ch : chunks) {
        if (received) return;
        const PullItem& it = items[ch.item];
        if (it.size < kPrefaultMin || ch.length == 0) continue;
        if (!PrefaultForWrite(it.dest + ch.offset, ch.length)) return;
      }
    });
  }
  std::vector<std::thread> threads;
  for (size_t c = 1; c < nconn; ++c) threads.emplace_back(run, c);
  run(0);
  for (auto& t : threads) t.join();
  received = true;
  if (prefault.joinable()) prefault.join();
  return result;
}

}  // namespace ds
