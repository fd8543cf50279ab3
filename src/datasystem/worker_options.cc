// Worker option checks and the etcd reachability probe.
#include "datasystem/worker_options.h"

#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>

#include "common/socket_io.h"

namespace ds {

using tqds::Result;
using tqds::Status;

Result<HostPort> HostPort::Parse(const std::string& text, const char* flag) {
  HostPort hp;
  TQDS_RETURN_NOT_OK(tqds::net::SplitHostPort(text, flag, &hp.host, &hp.port));
  return hp;
}

Status WorkerOptions::Validate() const {
  if (worker_address.empty()) return Status::Invalid("--worker_address must not be empty");
  if (enable_curve_zmq && curve_key_dir.empty()) {
    return Status::Invalid("--enable_curve_zmq needs --curve_key_dir (the directory of the deployment's CURVE "
                           "keys; `tq keys DIR` makes one)");
  }
  TQDS_RETURN_NOT_OK(HostPort::Parse(worker_address, "--worker_address").status());
  if (!bind_address.empty()) {
    TQDS_RETURN_NOT_OK(HostPort::Parse(bind_address, "--bind_address").status());
  }
  if (!etcd_address.empty()) {
    size_t start = 0;
    while (true) {
      size_t comma = etcd_address.find(',', start);
      TQDS_RETURN_NOT_OK(
          HostPort::Parse(etcd_address.substr(start, comma - start), "--etcd_address").status());
      if (comma == std::string::npos) break;
      start = comma + 1;
    }
  }
  if (!metastore_address.empty()) {
    TQDS_RETURN_NOT_OK(HostPort::Parse(metastore_address, "--metastore_address").status());
  }
  if (start_metastore_service && metastore_address.empty()) {
    return Status::Invalid("--start_metastore_service true needs --metastore_address HOST:PORT "
                           "(where the service listens)");
  }
  if (shared_memory_size_mb < 1 || shared_memory_size_mb > (1u << 22)) {
    return Status::Invalid("--shared_memory_size_mb must be between 1 and 4194304, got ",
                           shared_memory_size_mb);
  }
  if (unix_domain_socket_dir.empty()) {
    return Status::Invalid("--unix_domain_socket_dir must not be empty");
  }
  if (socket_path().size() > 100) {
    return Status::Invalid("--unix_domain_socket_dir '", unix_domain_socket_dir,
                           "' is too long for a Unix socket path (keep it under ~60 bytes)");
  }
  if (min_log_level < 0 || min_log_level > 3) {
    return Status::Invalid("--minloglevel must be between 0 and 3, got ", min_log_level);
  }
  if (node_timeout_s < 1 || node_timeout_s > 3600) {
    return Status::Invalid("--node_timeout_s must be between 1 and 3600, got ", node_timeout_s);
  }
  if (pull_connections < 1 || pull_connections > 64) {
    return Status::Invalid("--oc_worker_worker_pool_size must be between 1 and 64, got ",
                           pull_connections);
  }
  if (metrics_port < -1 || metrics_port > 65535) {
    return Status::Invalid("--metrics_port must be -1 (none), 0 (a free port) or a port, got ", metrics_port);
  }
  if (data_port < 0 || data_port > 65535) {
    return Status::Invalid("--oc_worker_worker_direct_port must be between 0 and 65535, got ",
                           data_port);
  }
  if (!(eviction_high_watermark_ratio > 0.0 && eviction_high_watermark_ratio <= 1.0)) {
    return Status::Invalid("--eviction_high_watermark_ratio must be in (0, 1], got ",
                           eviction_high_watermark_ratio);
  }
  if (!(eviction_low_watermark_ratio > 0.0 &&
        eviction_low_watermark_ratio <= eviction_high_watermark_ratio)) {
    return Status::Invalid("--eviction_low_watermark_ratio must be in (0, ",
                           eviction_high_watermark_ratio, "] (the high watermark), got ",
                           eviction_low_watermark_ratio);
  }
  return Status::OK();
}

HostPort WorkerOptions::address() const { return *HostPort::Parse(worker_address, "address"); }

std::string WorkerOptions::coordination_address() const {
  if (!etcd_address.empty()) return etcd_address.substr(0, etcd_address.find(','));
  return metastore_address;
}

std::string WorkerOptions::identity() const {
  auto hp = HostPort::Parse(worker_address, "address");
  if (!hp.ok()) return "invalid";
  std::string host = hp->host;
  for (char& c : host) {
    if (c == '/' || c == '[' || c == ']') c = '_';  // keep it one path component
  }
  return host + "_" + std::to_string(hp->port);
}

std::string WorkerOptions::socket_path() const {
  return unix_domain_socket_dir + "/datasystem_worker_" + identity() + ".sock";
}

std::string WorkerOptions::pid_path() const {
  return unix_domain_socket_dir + "/datasystem_worker_" + identity() + ".pid";
}

std::string WorkerOptions::spill_path() const {
  if (spill_directory.empty()) return "";
  return spill_directory + "/datasystem_worker_" + identity();
}

uint64_t WorkerOptions::EffectiveSpillLimit() const {
  if (spill_size_limit != 0 || spill_directory.empty()) return spill_size_limit;
  // The directory may not exist yet: measure its nearest existing ancestor.
  std::error_code ec;
  std::filesystem::path dir = std::filesystem::absolute(spill_directory, ec);
  while (dir.has_relative_path() && !std::filesystem::exists(dir, ec)) dir = dir.parent_path();
  const auto space = std::filesystem::space(dir, ec);
  if (ec) return 0;
  return static_cast<uint64_t>(static_cast<long double>(space.capacity) * 0.95L);
}

Status ProbeEtcd(const std::string& address, int timeout_ms) {
  TQDS_ASSIGN_OR_RETURN(HostPort hp, HostPort::Parse(address, "--etcd_address"));
  auto fail = [&](const std::string& why) {
    return Status::Unavailable("cannot reach etcd at ", address, ": ", why,
                               ". Start etcd there (e.g. etcd --listen-client-urls http://", address,
                               " --advertise-client-urls http://", address,
                               ") or omit --etcd_address to run a standalone worker");
  };
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  int rc = ::getaddrinfo(hp.host.c_str(), std::to_string(hp.port).c_str(), &hints, &res);
  if (rc != 0) return fail(std::string("cannot resolve host: ") + ::gai_strerror(rc));
  int fd = ::socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  rc = ::connect(fd, res->ai_addr, res->ai_addrlen);
  ::freeaddrinfo(res);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  auto wait = [&](short events) -> bool {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return false;
    pollfd p{fd, events, 0};
    return ::poll(&p, 1, static_cast<int>(left.count())) == 1;
  };
  if (rc != 0 && errno != EINPROGRESS) {
    int e = errno;
    ::close(fd);
    return fail(std::strerror(e));
  }
  if (!wait(POLLOUT)) {
    ::close(fd);
    return fail("connection timed out");
  }
  int err = 0;
  socklen_t len = sizeof(err);
  ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
  if (err != 0) {
    ::close(fd);
    return fail(std::strerror(err));
  }
  std::string req = "GET /version HTTP/1.1\r\nHost: " + address + "\r\nConnection: close\r\n\r\n";
  if (::send(fd, req.data(), req.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(req.size())) {
    ::close(fd);
    return fail("cannot send the request");
  }
  std::string resp;
  char buf[4096];
  while (resp.size() < 65536 && wait(POLLIN)) {
    ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
    if (n <= 0) break;
    resp.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  if (resp.rfind("HTTP/1.", 0) != 0) return fail("no HTTP answer (is this an etcd client port?)");
  if (resp.find(" 200 ") == std::string::npos || resp.find("etcdserver") == std::string::npos) {
    return fail("the server answered but is not etcd: " + resp.substr(0, resp.find('\r')));
  }
  return Status::OK();
}

}  // namespace ds
