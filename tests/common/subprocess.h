// Helpers for tests and benchmarks that run real programs: fork + exec with
// chosen standard streams, run to completion with output captured, wait for
// and stop a process by pid, read a readiness line, plus a scratch directory
// and a free loopback port. Header-only; used by tests/ and bench/, never by
// the libraries. The functions keep no state; a child only dup2s and execs
// (its argv is built before fork), so they may be called from any thread.
#pragma once

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <string>
#include <system_error>
#include <vector>

#include "common/process.h"

namespace tqds::testing {

// A free loopback TCP port (the kernel picks it; closed again at once).
inline int FreePort() { return tqds::FreeLoopbackPort(); }

// A fresh directory /tmp/<prefix>_XXXXXX (short: it may hold Unix sockets),
// removed with everything in it on destruction.
class TempDir {
 public:
  explicit TempDir(const std::string& prefix = "dst") {
    std::string tmpl = "/tmp/" + prefix + "_XXXXXX";
    if (::mkdtemp(tmpl.data()) != nullptr) path_ = tmpl;
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  ~TempDir() {
    if (path_.empty()) return;
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// The standard streams of a child: each a descriptor that the child dup2s
// onto 0, 1 or 2, or -1 to inherit ours.
struct StdStreams {
  int in = -1;
  int out = -1;
  int err = -1;
};

// Starts argv[0] (an absolute path: no PATH lookup) with `streams`. Returns
// the pid, or -1 when fork fails; a child whose exec fails exits with 127.
// Open descriptors should be O_CLOEXEC except those the child is meant to
// keep (e.g. a --ready_fd pipe). The caller owns the pid (stop and reap it).
inline pid_t ForkExec(const std::vector<std::string>& argv, StdStreams streams = {}) {
  if (argv.empty()) return -1;
  std::vector<char*> args;
  args.reserve(argv.size() + 1);
  for (const auto& s : argv) args.push_back(const_cast<char*>(s.c_str()));
  args.push_back(nullptr);
  pid_t pid = ::fork();
  if (pid == 0) {
    if (streams.in >= 0) ::dup2(streams.in, 0);
    if (streams.out >= 0) ::dup2(streams.out, 1);
    if (streams.err >= 0) ::dup2(streams.err, 2);
    ::execv(args[0], args.data());
    ::_exit(127);
  }
  return pid;
}

// The exit code in a waitpid status: the program's own, or 128 + signal.
inline int ExitCode(int status) {
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

// Reads `fd` to EOF, then closes it.
inline std::string ReadToEnd(int fd) {
  std::string out;
  char buf[65536];
  ssize_t n;
  while ((n = ::read(fd, buf, sizeof(buf))) > 0) out.append(buf, static_cast<size_t>(n));
  ::close(fd);
  return out;
}

// Reads one line from `fd` (blocking; without the '\n'; "" on EOF first).
inline std::string ReadLine(int fd) {
  std::string line;
  char c;
  while (::read(fd, &c, 1) == 1 && c != '\n') line.push_back(c);
  return line;
}

// A child whose stdout (and, if asked, stderr) is a pipe to us.
struct PipedChild {
  pid_t pid = -1;  // -1: it could not be started
  int out = -1;    // the pipe's read end; the caller closes it
};

// Starts argv with stdout on a pipe; stderr goes to the same pipe when
// `with_stderr`, else it is inherited.
inline PipedChild SpawnPiped(const std::vector<std::string>& argv, bool with_stderr) {
  int p[2];
  if (::pipe2(p, O_CLOEXEC) != 0) return {};
  pid_t pid = ForkExec(argv, {.out = p[1], .err = with_stderr ? p[1] : -1});
  ::close(p[1]);
  if (pid < 0) {
    ::close(p[0]);
    return {};
  }
  return {pid, p[0]};
}

// Starts argv with stdout and stderr appended to the file `log` (created if
// missing; /dev/null to drop them). Returns the pid, or -1.
inline pid_t SpawnLogged(const std::vector<std::string>& argv, const std::string& log) {
  int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  pid_t pid = ForkExec(argv, {.out = fd, .err = fd});
  if (fd >= 0) ::close(fd);
  return pid;
}

struct RunResult {
  int code = -1;       // exit code (128 + signal if killed); -1: not started
  std::string output;  // stdout + stderr
};

// Runs argv to completion, stdout and stderr captured together.
inline RunResult RunProgram(const std::vector<std::string>& argv) {
  PipedChild child = SpawnPiped(argv, /*with_stderr=*/true);
  if (child.pid < 0) return {};
  RunResult r;
  r.output = ReadToEnd(child.out);
  int status = 0;
  ::waitpid(child.pid, &status, 0);
  r.code = ExitCode(status);
  return r;
}

// Waits up to `timeout_ms` for process `pid` (ours or not) to exit, and
// reaps it if it is our child. True once it is gone.
inline bool WaitExit(pid_t pid, int timeout_ms) {
  int fd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
  if (fd < 0) return true;  // already gone
  pollfd p{fd, POLLIN, 0};
  bool done = ::poll(&p, 1, timeout_ms) == 1;
  ::close(fd);
  ::waitpid(pid, nullptr, WNOHANG);
  return done;
}

// Sends `sig` to `pid`, waits up to `grace_ms` for the exit, then SIGKILLs
// it and waits again; reaps it if it is our child. No-op for pid <= 0.
inline void StopProcess(pid_t pid, int sig = SIGTERM, int grace_ms = 5000) {
  if (pid <= 0) return;
  ::kill(pid, sig);
  if (!WaitExit(pid, grace_ms)) {
    ::kill(pid, SIGKILL);
    WaitExit(pid, 5000);
  }
  ::waitpid(pid, nullptr, WNOHANG);
}

}  // namespace tqds::testing
