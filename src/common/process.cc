// ChildProcess: fork/exec with an stdout pipe and pid ownership.
#include "common/process.h"

#include <cstdio>

#include <arpa/inet.h>
#include <fcntl.h>
#include <malloc.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>

namespace tqds {

using Clock = std::chrono::steady_clock;

std::string SelfExecutable() {
  char buf[PATH_MAX];
  ssize_t n = ::readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  if (n <= 0) return "";
  buf[n] = '\0';
  return buf;
}

uint64_t ResidentBytes() {
  FILE* f = std::fopen("/proc/self/statm", "r");
  if (f == nullptr) return 0;
  unsigned long long size = 0, resident = 0;
  int n = std::fscanf(f, "%llu %llu", &size, &resident);
  std::fclose(f);
  if (n != 2) return 0;
  long page = ::sysconf(_SC_PAGESIZE);
  return page > 0 ? resident * static_cast<uint64_t>(page) : 0;
}

int FreeLoopbackPort() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return 0;
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(a);
  int port = 0;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0) {
    port = ntohs(a.sin_port);
  }
  ::close(fd);
  return port;
}

ChildProcess::ChildProcess(ChildProcess&& o) noexcept
    : pid_(o.pid_), out_fd_(o.out_fd_), pending_(std::move(o.pending_)), exited_(o.exited_) {
  o.pid_ = -1;
  o.out_fd_ = -1;
}

ChildProcess& ChildProcess::operator=(ChildProcess&& o) noexcept {
  if (this != &o) {
    Stop();
    if (out_fd_ >= 0) ::close(out_fd_);
    pid_ = o.pid_;
    out_fd_ = o.out_fd_;
    pending_ = std::move(o.pending_);
    exited_ = o.exited_;
    o.pid_ = -1;
    o.out_fd_ = -1;
  }
  return *this;
}

ChildProcess::~ChildProcess() {
  Stop(SIGTERM, std::chrono::seconds(3));
  if (out_fd_ >= 0) ::close(out_fd_);
}

Result<ChildProcess> ChildProcess::Spawn(const std::vector<std::string>& argv) {
  if (argv.empty()) return Status::Invalid("Spawn: empty argv");
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return Status::IOError("pipe: ", std::strerror(errno));
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = ::fork();
  if (pid < 0) {
    ::close(fds[0]);
    ::close(fds[1]);
    return Status::IOError("fork: ", std::strerror(errno));
  }
  if (pid == 0) {
    ::dup2(fds[1], STDOUT_FILENO);
    ::execvp(args[0], args.data());
    std::fprintf(stderr, "exec %s failed: %s\n", args[0], std::strerror(errno));
    ::_exit(127);
  }
  ::close(fds[1]);
  ChildProcess c;
  c.pid_ = pid;
  c.out_fd_ = fds[0];
  return c;
}

Result<std::string> ChildProcess::WaitForLine(const std::string& needle, std::chrono::milliseconds timeout) {
  auto deadline = Clock::now() + timeout;
  while (true) {
    size_t nl;
    while ((nl = pending_.find('\n')) != std::string::npos) {
      std::string line = pending_.substr(0, nl);
      pending_.erase(0, nl + 1);
      if (line.find(needle) != std::string::npos) return line;
    }
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) return Status::Timeout("child ", pid_, " did not print '", needle, "' in time");
    pollfd p{out_fd_, POLLIN, 0};
    int r = ::poll(&p, 1, static_cast<int>(left));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) continue;
    char buf[4096];
    ssize_t n = ::read(out_fd_, buf, sizeof(buf));
    if (n <= 0) {
      auto code = Wait(std::chrono::seconds(2));
      return Status::Unavailable("child ", pid_, " exited (status ", code.ok() ? *code : -1,
                                 ") before printing '", needle, "'");
    }
    pending_.append(buf, static_cast<size_t>(n));
  }
}

bool ChildProcess::running() {
  if (pid_ <= 0) return false;
  int status;
  pid_t r = ::waitpid(pid_, &status, WNOHANG);
  if (r == pid_) {
    pid_ = -1;
    exited_ = ExitCode(status);
    return false;
  }
  return true;
}

int ChildProcess::ExitCode(int wait_status) {
  if (WIFEXITED(wait_status)) return WEXITSTATUS(wait_status);
  if (WIFSIGNALED(wait_status)) return 128 + WTERMSIG(wait_status);
  return -1;
}

Result<int> ChildProcess::Wait(std::chrono::milliseconds timeout) {
  if (pid_ <= 0) {
    if (exited_ >= 0) return exited_;  // reaped by running()
    return Status::Invalid("no child running");
  }
  auto deadline = Clock::now() + timeout;
  while (true) {
    int status;
    pid_t r = ::waitpid(pid_, &status, WNOHANG);
    if (r == pid_) {
      pid_ = -1;
      exited_ = ExitCode(status);
      return exited_;
    }
    if (Clock::now() >= deadline) return Status::Timeout("child ", pid_, " still running");
    ::usleep(2000);  // polling the OS for exit; there is no fd to wait on
  }
}

int ChildProcess::Stop(int signal, std::chrono::milliseconds grace) {
  if (pid_ <= 0) return -1;
  ::kill(pid_, signal);
  auto code = Wait(grace);
  if (code.ok()) return *code;
  ::kill(pid_, SIGKILL);
  auto again = Wait(std::chrono::seconds(5));
  return again.ok() ? *again : -1;
}

void KeepFreedMemory() {
  const char* tunables = std::getenv("GLIBC_TUNABLES");
  if (tunables != nullptr && std::strstr(tunables, "glibc.malloc.") != nullptr) return;
  mallopt(M_MMAP_THRESHOLD, 32 << 20);  // glibc's largest
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
}

}  // namespace tqds
