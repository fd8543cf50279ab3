// dscli: starts, stops and inspects datasystem workers with openYuanrong
// datasystem's command line: `dscli start -w <worker flags>` (or -f CONFIG),
// `dscli stop --worker_address H:P` (or -w H:P, -f CONFIG), `dscli
// generate_config -o DIR`, `dscli --version`, plus `dscli status`. Output
// lines are the real one's ("[INFO] [  OK  ] Start worker service @ H:P
// success, PID: N", "[ERROR] [  FAILED  ] ..."); docs/dscli_flags.md lists
// the worker flags. The subcommands live in start.cc, stop.cc, status.cc.
#include <cstdio>
#include <string>
#include <vector>

#include "dscli_internal.h"

#ifndef TQDS_VERSION
#define TQDS_VERSION "unknown"
#endif

namespace {

const char* kUsage =
    "usage: dscli [-h] [--version] {start,stop,status,generate_config} ...\n"
    "\n"
    "Start, stop and inspect datasystem workers (openYuanrong datasystem's dscli).\n"
    "  start            start a worker: dscli start -w --worker_address H:P [worker flags]\n"
    "                   or dscli start -f worker_config.json\n"
    "  stop             stop a worker: dscli stop --worker_address H:P (or -w H:P, -f FILE)\n"
    "  status           one worker's counters (--worker_address H:P) or the local workers\n"
    "  generate_config  write worker_config.json (every flag, defaults here): -o DIR\n";

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.empty() || args[0] == "-h" || args[0] == "--help" || args[0] == "help") {
    std::printf("%s", kUsage);
    return 0;
  }
  if (args[0] == "--version" || args[0] == "-v") {
    std::printf("dscli %s (the command line of openYuanrong datasystem 0.8/0.9, this project's "
                "worker)\n",
                TQDS_VERSION);
    return 0;
  }
  const std::string sub = args[0];
  const std::vector<std::string> rest(args.begin() + 1, args.end());
  if (sub == "start") return dscli::RunStart(rest);
  if (sub == "stop") return dscli::RunStop(rest);
  if (sub == "status") return dscli::RunStatus(rest);
  if (sub == "generate_config") return dscli::RunGenerateConfig(rest);
  std::fprintf(stderr, "%s", kUsage);
  return dscli::Error("dscli: unknown subcommand '" + sub +
                      "' (choose from start, stop, status, generate_config)");
}
