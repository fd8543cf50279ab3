// Test fixtures for the storage backends: a datasystem worker started with
// `dscli start` (stopped with `dscli stop`, killed by pid as a fallback) and a
// `tq controller` process, each owned by an RAII guard.
#pragma once

#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "common/process.h"
#include "tq/storage.h"

namespace tq::testing {

inline int FreePort() { return tqds::FreeLoopbackPort(); }

// A datasystem worker on 127.0.0.1:<free port> with its own socket dir.
class DsWorker {
 public:
  explicit DsWorker(int shm_mb = 256) : port_(FreePort()) {
    char tmpl[] = "/tmp/tqb_XXXXXX";
    dir_ = ::mkdtemp(tmpl);
    auto start = tqds::ChildProcess::Spawn({DSCLI_BIN, "start", "-w", "--worker_address", address(),
                                            "--unix_socket_dir", dir_, "--shared_memory_size_mb",
                                            std::to_string(shm_mb)});
    if (start.ok()) {
      auto code = start->Wait(std::chrono::seconds(30));
      ok_ = code.ok() && *code == 0;
    }
    // The worker's pid, to kill it if a graceful stop fails.
    std::ifstream pidfile(dir_ + "/datasystem_worker_127.0.0.1_" + std::to_string(port_) + ".pid");
    pidfile >> pid_;
  }
  ~DsWorker() {
    auto stop = tqds::ChildProcess::Spawn({DSCLI_BIN, "stop", "--worker_address", address()});
    bool stopped = false;
    if (stop.ok()) {
      auto code = stop->Wait(std::chrono::seconds(40));
      stopped = code.ok() && *code == 0;
    }
    if (!stopped && pid_ > 0) ::kill(pid_, SIGKILL);
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  bool ok() const { return ok_; }
  int port() const { return port_; }
  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }
  Config config() const {
    return Config{{"manager_type", "YuanrongStorageManager"},
                  {"client_name", "YuanrongStorageClient"},
                  {"host", "127.0.0.1"},
                  {"port", port_}};
  }

 private:
  int port_;
  std::string dir_;
  bool ok_ = false;
  pid_t pid_ = -1;
};

// A `tq controller` process (with embedded simple storage units).
class ControllerProcess {
 public:
  explicit ControllerProcess(int units = 2) {
    auto c = tqds::ChildProcess::Spawn({TQ_BIN, "controller", "--port", "0", "--storage-units",
                                        std::to_string(units), "--unit-capacity-mb", "1024"});
    if (!c.ok()) return;
    proc_ = std::move(*c);
    auto line = proc_.WaitForLine("controller listening on", std::chrono::seconds(20));
    if (line.ok()) address_ = line->substr(line->find("tcp://"));
    for (int i = 0; i < units; ++i) (void)proc_.WaitForLine("storage unit listening on", std::chrono::seconds(20));
  }
  bool ok() const { return !address_.empty(); }
  const std::string& address() const { return address_; }
  tqds::ChildProcess& process() { return proc_; }

 private:
  tqds::ChildProcess proc_;
  std::string address_;
};

}  // namespace tq::testing
