// dscli's parts: one function per subcommand (start.cc, stop.cc, status.cc)
// and the process and output helpers they share (process.cc). Output follows
// openYuanrong datasystem's dscli: "[INFO] ..." on stdout, "[WARNING] ..."
// and "[ERROR] ..." on stderr. Single-threaded.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include "common/wire/message.h"
#include "datasystem/worker_options.h"
#include "tqds/status.h"

namespace dscli {

// The subcommands; `args` follow the subcommand's name. Exit codes.
int RunStart(const std::vector<std::string>& args);
int RunStop(const std::vector<std::string>& args);
int RunStatus(const std::vector<std::string>& args);
int RunGenerateConfig(const std::vector<std::string>& args);

// Output lines as the real dscli prints them. Error returns 1.
void Info(const std::string& line);
void Warn(const std::string& line);
int Error(const std::string& line);

// True when something accepts TCP connections at host:port.
bool PortOpen(const ds::HostPort& hp);
// Sends one request to a worker's TCP port and waits for the reply.
tqds::Result<tqds::wire::Message> Ask(const ds::HostPort& hp, tqds::wire::MsgType type,
                                      int timeout_ms);
// datasystem_worker: $DS_WORKER_BIN, else next to dscli, else on PATH.
std::string WorkerBinary();
bool OnPath(const std::string& program);
// The arguments of process `pid` (empty when it is gone or unreadable).
std::vector<std::string> Cmdline(pid_t pid);
// Value of --name (or -name; "=value" or the next argument) in a command
// line whose first element is the program.
std::optional<std::string> FlagIn(const std::vector<std::string>& args, const std::string& name);
// datasystem_worker processes of this pid and network namespace whose
// --worker_address is exactly `address` (as the real dscli finds its
// workers); one whose network namespace cannot be read is kept.
std::vector<pid_t> FindWorkers(const std::string& address);
// Waits up to `timeout` for `pid` to exit (pidfd); with pid 0 (a process of
// another pid namespace) for `hp` to stop accepting connections. True when
// it is gone.
bool WaitGone(pid_t pid, const ds::HostPort& hp, std::chrono::milliseconds timeout);

}  // namespace dscli
