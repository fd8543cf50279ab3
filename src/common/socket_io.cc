// Blocking TCP socket helpers and the thread-per-connection server.
#include "common/socket_io.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>

namespace tqds::net {

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

bool ReadAllV(int fd, iovec* iov, size_t count) {
  size_t first = 0;
  while (first < count && iov[first].iov_len == 0) ++first;
  while (first < count) {
    msghdr msg{};
    msg.msg_iov = iov + first;
    msg.msg_iovlen = std::min<size_t>(count - first, IOV_MAX);
    ssize_t r = ::recvmsg(fd, &msg, MSG_WAITALL);
    if (r == 0) {
      errno = ECONNRESET;
      return false;
    }
    if (r < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    auto got = static_cast<size_t>(r);
    while (first < count && got >= iov[first].iov_len) {
      got -= iov[first].iov_len;
      ++first;
    }
    if (first < count) {
      iov[first].iov_base = static_cast<uint8_t*>(iov[first].iov_base) + got;
      iov[first].iov_len -= got;
    }
  }
  return true;
}

bool WriteAll(int fd, const void* buf, size_t n) {
  auto* p = static_cast<const uint8_t*>(buf);
  while (n > 0) {
    ssize_t r = ::send(fd, p, n, MSG_NOSIGNAL);
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

bool WriteAllV(int fd, std::vector<iovec>& iov) {
  size_t first = 0;
  while (first < iov.size()) {
    msghdr msg{};
    msg.msg_iov = iov.data() + first;
    msg.msg_iovlen = std::min<size_t>(iov.size() - first, IOV_MAX);
    ssize_t r = ::sendmsg(fd, &msg, MSG_NOSIGNAL);
    if (r < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    auto sent = static_cast<size_t>(r);
    while (first < iov.size() && sent >= iov[first].iov_len) {
      sent -= iov[first].iov_len;
      ++first;
    }
    if (first < iov.size()) {
      iov[first].iov_base = static_cast<uint8_t*>(iov[first].iov_base) + sent;
      iov[first].iov_len -= sent;
    }
  }
  return true;
}

void SetRecvTimeout(int fd, int ms) {
  timeval tv{ms / 1000, (ms % 1000) * 1000};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
}

void SetSendTimeout(int fd, int ms) {
  timeval tv{ms / 1000, (ms % 1000) * 1000};
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
}

void SetIoTimeouts(int fd, int ms) {
  SetRecvTimeout(fd, ms);
  SetSendTimeout(fd, ms);
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

std::string ErrnoText(int e) { return e == EAGAIN ? "timed out" : std::strerror(e); }

Result<int> ListenTcp(const std::string& ip, int port, const std::string& what, int* bound_port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  if (::inet_pton(AF_INET, ip.c_str(), &a.sin_addr) != 1) {
    return Status::Invalid(what, ": bad IPv4 address '", ip, "'");
  }
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return Status::IOError(what, ": socket: ", std::strerror(errno));
  int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0 || ::listen(fd, 128) != 0) {
    int e = errno;
    ::close(fd);
    return Status::IOError("cannot listen for ", what, " on ", ip, ":", port, ": ", std::strerror(e));
  }
  socklen_t len = sizeof(a);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  *bound_port = ntohs(a.sin_port);
  return fd;
}

Result<int> ConnectTcp(const std::string& host, int port, int timeout_ms, const std::string& endpoint) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  if (::inet_pton(AF_INET, host.c_str(), &a.sin_addr) != 1) {
    return Status::Invalid("bad endpoint ", endpoint, ": '", host, "' is not an IPv4 address");
  }
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return Status::IOError("socket: ", std::strerror(errno));
  int rc = ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a));
  if (rc != 0 && errno != EINPROGRESS) {
    int e = errno;
    ::close(fd);
    return Status::Unavailable("cannot connect to ", endpoint, ": ", std::strerror(e));
  }
  if (rc != 0) {
    pollfd p{fd, POLLOUT, 0};
    if (::poll(&p, 1, timeout_ms) != 1) {
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
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  return fd;
}

Status SplitHostPort(const std::string& endpoint, const std::string& what, std::string* host, int* port) {
  const size_t colon = endpoint.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == endpoint.size()) {
    return Status::Invalid(what, " must look like HOST:PORT (e.g. 127.0.0.1:31501), got '", endpoint, "'");
  }
  const std::string digits = endpoint.substr(colon + 1);
  if (digits.size() > 5 || digits.find_first_not_of("0123456789") != std::string::npos) {
    return Status::Invalid(what, ": port '", digits, "' is not a number");
  }
  const int p = std::stoi(digits);
  if (p < 1 || p > 65535) return Status::Invalid(what, ": port ", p, " is outside 1-65535");
  *host = endpoint.substr(0, colon);
  *port = p;
  return Status::OK();
}

std::string TcpEndpointHost(const std::string& endpoint) {
  if (endpoint.rfind("tcp://", 0) != 0) return "";
  const size_t colon = endpoint.rfind(':');  // found: "tcp://" has one
  return colon < 6 ? endpoint.substr(6) : endpoint.substr(6, colon - 6);
}

// ---------------------------------------------------------- ConnectionServer

ConnectionServer::ConnectionServer(int listen_fd, ConnectionServerOptions options, Serve serve, Refuse refuse)
    : listen_fd_(listen_fd), options_(options), serve_(std::move(serve)), refuse_(std::move(refuse)) {
  wake_fd_ = ::eventfd(0, EFD_CLOEXEC);
  accept_thread_ = std::thread([this] { AcceptLoop(); });
}

void ConnectionServer::AcceptLoop() {
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
    if (conns_.size() >= options_.max_connections) {
      SetSendTimeout(fd, 100);  // a peer that never reads must not block the accept thread
      if (refuse_) refuse_(fd, conns_.size());
      ::shutdown(fd, SHUT_WR);
      ::close(fd);
      continue;
    }
    SetRecvTimeout(fd, options_.idle_timeout_ms);
    SetSendTimeout(fd, options_.send_timeout_ms);
    auto c = std::make_unique<Conn>();
    c->fd = fd;
    Conn* raw = c.get();
    conns_.push_back(std::move(c));
    raw->thread = std::thread([this, raw] {
      serve_(raw->fd);
      ::shutdown(raw->fd, SHUT_RDWR);
      raw->done.store(true);
    });
  }
}

void ConnectionServer::ReapLocked(bool all) {
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

void ConnectionServer::Stop() {
  if (stopping_.exchange(true)) return;
  uint64_t one = 1;
  ssize_t n = ::write(wake_fd_, &one, sizeof(one));
  (void)n;
  if (accept_thread_.joinable()) accept_thread_.join();
  std::lock_guard<std::mutex> lock(mu_);
  ReapLocked(true);
}

ConnectionServer::~ConnectionServer() {
  Stop();
  ::close(listen_fd_);
  if (wake_fd_ >= 0) ::close(wake_fd_);
}

}  // namespace tqds::net
