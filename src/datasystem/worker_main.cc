// ds_worker: the datasystem worker process. Usually started by `dscli start`,
// which passes --ready_fd and waits for "READY <pid>" or "ERROR <message>".
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <string>

#include "common/logging.h"
#include "datasystem/worker.h"
#include "datasystem/worker_flags.h"

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

}  // namespace

int main(int argc, char** argv) {
  ds::WorkerOptions options;
  int ready_fd = -1;
  CLI::App app{"ds_worker: datasystem worker (normally started by `dscli start -w`)"};
  ds::AddWorkerFlags(app, options);
  app.add_option("--ready_fd", ready_fd, "descriptor to report readiness on");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (ready_fd >= 0) Report(ready_fd, "ERROR " + std::string(e.what()));
    return app.exit(e);
  }
  // Block the stop signals in every thread; the main thread waits for them.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  signal(SIGPIPE, SIG_IGN);

  const auto hp = ds::HostPort::Parse(options.worker_address, "--worker_address");
  tqds::InitLogging("ds_worker_" + std::to_string(hp.ok() ? hp->port : 0), options.log_dir,
                    spdlog::level::info);
  auto worker = ds::Worker::Start(options);
  if (!worker.ok()) {
    spdlog::error("worker failed to start: {}", worker.status().ToString());
    Report(ready_fd, "ERROR " + worker.status().ToString());
    return 1;
  }
  Report(ready_fd, "READY " + std::to_string(::getpid()));
  int sig = 0;
  sigwait(&stop_signals, &sig);
  spdlog::info("stopping on signal {}", sig);
  (*worker)->Stop();
  spdlog::shutdown();
  return 0;
}
