// Unix socket accept loop and per-connection threads.
#include "datasystem/local_server.h"

#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>

namespace ds {
namespace {

Result<sockaddr_un> MakeAddr(const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof(addr.sun_path)) {
    return Status::Invalid("unix socket path '", path, "' is longer than ",
                           sizeof(addr.sun_path) - 1, " bytes; use a shorter --unix_socket_dir");
  }
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  return addr;
}

}  // namespace

Result<std::unique_ptr<LocalServer>> LocalServer::Start(const std::string& path, int arena_fd,
                                                        RequestHandler& handler,
                                                        ObjectStore& store,
                                                        LocalServerOptions options) {
  TQDS_ASSIGN_OR_RETURN(sockaddr_un addr, MakeAddr(path));
  struct stat st{};
  if (::lstat(path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) {
      return Status::AlreadyExists("'", path, "' exists and is not a socket; remove it");
    }
    int probe = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    bool live = ::connect(probe, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
    ::close(probe);
    if (live) return Status::AlreadyExists("another worker is serving ", path);
    ::unlink(path.c_str());  // stale: its worker died
    spdlog::info("removed stale socket {}", path);
  }
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return Status::IOError("socket(AF_UNIX) failed: ", std::strerror(errno));
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 || ::listen(fd, 128) != 0) {
    int e = errno;
    ::close(fd);
    return Status::IOError("cannot listen on unix socket ", path, ": ", std::strerror(e));
  }
  std::unique_ptr<LocalServer> s(new LocalServer(path, fd, arena_fd, handler, store, options));
  s->accept_thread_ = std::thread([raw = s.get()] { raw->AcceptLoop(); });
  return s;
}

LocalServer::~LocalServer() { Stop(); }

void LocalServer::Stop() {
  if (stopping_.exchange(true)) return;
  ::shutdown(listen_fd_, SHUT_RDWR);
  if (accept_thread_.joinable()) accept_thread_.join();
  ::close(listen_fd_);
  ::unlink(path_.c_str());
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& c : conns_) ::shutdown(c->fd, SHUT_RDWR);
  ReapLocked(/*all=*/true);
}

size_t LocalServer::connections() const {
  std::lock_guard<std::mutex> lock(mu_);
  size_t n = 0;
  for (const auto& c : conns_) n += c->done ? 0 : 1;
  return n;
}

void LocalServer::ReapLocked(bool all) {
  for (auto it = conns_.begin(); it != conns_.end();) {
    if (all || (*it)->done) {
      if ((*it)->thread.joinable()) (*it)->thread.join();
      ::close((*it)->fd);
      it = conns_.erase(it);
    } else {
      ++it;
    }
  }
}

void LocalServer::AcceptLoop() {
  while (!stopping_) {
    int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      if (!stopping_) spdlog::error("accept on {} failed: {}", path_, std::strerror(errno));
      return;
    }
    std::lock_guard<std::mutex> lock(mu_);
    ReapLocked(/*all=*/false);
    if (stopping_) {
      ::close(fd);
      return;
    }
    if (conns_.size() >= options_.max_connections) {
      Refuse(fd);
      continue;
    }
    auto conn = std::make_unique<Conn>();
    conn->fd = fd;
    Conn* raw = conn.get();
    conns_.push_back(std::move(conn));
    raw->thread = std::thread([this, raw] { Serve(raw); });
  }
}

void LocalServer::Refuse(int fd) {
  // Rate-limited: a flood of connections must not flood the log too.
  const auto now = std::chrono::steady_clock::now();
  ++refused_;
  if (now - last_refusal_log_ > std::chrono::seconds(10)) {
    spdlog::warn("refusing local connections on {}: {} clients are connected (the limit); {} "
                 "refused since the last message",
                 path_, conns_.size(), refused_);
    last_refusal_log_ = now;
    refused_ = 0;
  }
  Message m(tqds::wire::MsgType::kError, 0);
  m.set_status(Status::Unavailable("the datasystem worker refuses this connection: ",
                                   options_.max_connections,
                                   " local client connections are open (its limit); close "
                                   "idle clients and retry"));
  timeval tv{0, 100000};  // a peer that never reads must not block the accept thread
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
  (void)WriteFrame(fd, m);
  ::close(fd);
}

void LocalServer::Serve(Conn* conn) {
  Session session;
  FrameLimits limits;
  limits.max_payload_bytes = options_.max_frame_bytes;
  limits.budget = &budget_;
  limits.stall_timeout_ms = options_.frame_stall_timeout_ms;
  while (true) {
    auto request = ReadFrame(conn->fd, nullptr, limits);
    if (!request.ok()) {
      if (request.status().IsInvalid()) {  // framing broken: say why, then hang up
        spdlog::warn("closing local client: {}", request.status().ToString());
        Message m(tqds::wire::MsgType::kError, 0);
        m.set_status(request.status());
        (void)WriteFrame(conn->fd, m);
      } else if (!request.status().IsUnavailable()) {
        spdlog::info("local client dropped: {}", request.status().ToString());
      }
      break;
    }
    bool hello = request->type() == tqds::wire::MsgType::kDsHello && request->status().ok();
    auto reply = handler_.HandleLocal(std::move(request).value(), session);
    if (!reply) continue;
    if (!WriteFrame(conn->fd, *reply, hello ? arena_fd_ : -1).ok()) break;
  }
  store_.CloseSession(session);
  ::shutdown(conn->fd, SHUT_RDWR);
  conn->done = true;
}

}  // namespace ds
