// ChildProcess: starts a program, reads its stdout line by line (readiness
// lines such as "listening on tcp://..."), and owns its pid: the destructor
// kills (SIGTERM, then SIGKILL) and reaps it, so tests and demos never leak
// processes even on failure. Not thread-safe.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <string>
#include <vector>

#include "tqds/status.h"

namespace tqds {

// For a service process (storage units, the datasystem worker) that
// receives large messages into malloc'd memory and frees them soon after:
// keeps what it freed, up to 1 GiB, instead of glibc's default of mapping
// large blocks afresh and returning freed memory at once, which makes every
// such message fault in new pages (on some VMs that costs more than the
// copy: a 288 MiB put through two units took 310 ms, 210 ms with this).
// GLIBC_TUNABLES that set malloc options take precedence.
void KeepFreedMemory();

class ChildProcess {
 public:
  ChildProcess() = default;
  ChildProcess(ChildProcess&& other) noexcept;
  ChildProcess& operator=(ChildProcess&& other) noexcept;
  ~ChildProcess();

  // Starts argv[0] (a path, or a name looked up on PATH) with stdout piped
  // to us; stderr is inherited.
  static Result<ChildProcess> Spawn(const std::vector<std::string>& argv);

  // Reads lines until one contains `needle`; returns that line. Fails on
  // timeout or when the child exits first (with its exit status).
  Result<std::string> WaitForLine(const std::string& needle, std::chrono::milliseconds timeout);

  pid_t pid() const { return pid_; }
  // Whether it still runs; an exit seen here is kept for Wait.
  bool running();
  // Sends `signal`; then waits up to `grace` for exit and SIGKILLs after it.
  // Returns the exit status as from waitpid (or -1 if not running).
  int Stop(int signal = 15, std::chrono::milliseconds grace = std::chrono::seconds(5));
  // Waits for a normal exit; returns the exit code (128+sig if killed).
  Result<int> Wait(std::chrono::milliseconds timeout);

 private:
  static int ExitCode(int wait_status);
  pid_t pid_ = -1;
  int out_fd_ = -1;
  std::string pending_;
  int exited_ = -1;  // the exit code running() reaped, or -1
};

// Absolute path of the running executable.
std::string SelfExecutable();

// This process's resident memory in bytes (/proc/self/statm), 0 if unknown.
uint64_t ResidentBytes();

// A free loopback TCP port (the kernel picks it; the socket is closed again,
// so another process may take it first: fine for tests and demos).
int FreeLoopbackPort();

}  // namespace tqds
