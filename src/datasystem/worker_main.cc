// datasystem_worker: the datasystem worker process (named as openYuanrong
// datasystem's). Usually started by `dscli start -w`, which passes --ready_fd
// and waits for "READY <pid>" or "ERROR <message>" on it. Takes the flags of
// worker_flags.h.
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "common/logging.h"
#include "common/process.h"
#include "datasystem/worker.h"
#include "datasystem/worker_flags.h"

#ifndef TQDS_VERSION
#define TQDS_VERSION "unknown"
#endif

namespace {

void Report(int fd, const std::string& line) {
  if (fd < 0) {
    std::fprintf(stderr, "%s\n", line.c_str());
    return;
  }
  std::string s = line + "\n";
  ssize_t n = ::write(fd, s.data(), s.size());
  (void)n;
  ::close(fd);
}

// Creates a probe file (and its directory); a failure is logged, not fatal.
void Touch(const std::string& path) {
  if (path.empty()) return;
  std::error_code ec;
  std::filesystem::create_directories(std::filesystem::path(path).parent_path(), ec);
  std::ofstream f(path, std::ios::trunc);
  if (!f) spdlog::warn("cannot create probe file {}", path);
}

spdlog::level::level_enum LogLevel(const ds::WorkerOptions& o) {
  if (o.verbose > 0) return spdlog::level::debug;
  switch (o.min_log_level) {
    case 1: return spdlog::level::warn;
    case 2: return spdlog::level::err;
    case 3: return spdlog::level::critical;
    default: return spdlog::level::info;
  }
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  for (const auto& a : args) {
    if (a == "-h" || a == "--help" || a == "-help") {
      std::printf("datasystem_worker: the datasystem worker (normally started by "
                  "`dscli start -w`)\n"
                  "usage: datasystem_worker --worker_address HOST:PORT [flags]\n%s",
                  ds::WorkerFlagsHelp().c_str());
      return 0;
    }
    if (a == "--version" || a == "-version") {
      std::printf("datasystem_worker %s (flags of openYuanrong datasystem 0.8/0.9)\n",
                  TQDS_VERSION);
      return 0;
    }
  }
  // Request frames of large batches (a 16384-key get is about 1 MiB) are
  // malloc'd and freed per request: keep the freed memory warm.
  tqds::KeepFreedMemory();
  std::vector<std::pair<std::string, std::string>> internal;
  auto parsed = ds::ParseWorkerFlags(args, {"ready_fd"}, &internal);
  int ready_fd = -1;
  for (const auto& [name, value] : internal) {
    if (name == "ready_fd") ready_fd = std::atoi(value.c_str());
  }
  if (!parsed.ok()) {
    Report(ready_fd, "ERROR " + parsed.status().message());
    if (ready_fd >= 0) std::fprintf(stderr, "%s\n", parsed.status().message().c_str());
    return 2;
  }
  const ds::WorkerOptions& options = parsed->options;
  // Block the stop signals in every thread; the main thread waits for them.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  signal(SIGPIPE, SIG_IGN);

  const std::string log_name = options.log_filename.empty()
                                   ? "datasystem_worker_" + options.identity()
                                   : options.log_filename;
  tqds::InitLogging(log_name, options.log_dir, LogLevel(options));
  for (const auto& ne : parsed->no_effect) {
    spdlog::warn("--{} has no effect in this build (see docs/dscli_flags.md)", ne);
  }
  auto worker = ds::Worker::Start(options);
  if (!worker.ok()) {
    spdlog::error("worker failed to start: {}", worker.status().ToString());
    Report(ready_fd, "ERROR " + worker.status().ToString());
    return 1;
  }
  Touch(options.ready_check_path);
  Touch(options.health_check_path);
  Report(ready_fd, "READY " + std::to_string(::getpid()));
  int sig = 0;
  sigwait(&stop_signals, &sig);
  spdlog::info("stopping on signal {}", sig);
  for (const auto& path : {options.ready_check_path, options.health_check_path}) {
    if (!path.empty()) ::unlink(path.c_str());
  }
  (*worker)->Stop();
  spdlog::shutdown();
  return 0;
}
