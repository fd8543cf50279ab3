// The worker's command-line flags, shared by `dscli start -w` and
// datasystem_worker so both accept exactly the same flags: every flag of
// openYuanrong datasystem 0.8/0.9's worker by its real name, unit and default
// (those that mean something here take effect, the others are accepted and
// reported as having no effect), plus this project's older spellings
// (--unix_socket_dir, --spill_size_limit_mb, --high_watermark,
// --populate_memory, ...). A flag in neither set is refused. The full list is
// docs/dscli_flags.md. Pure functions; thread-compatible.
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "datasystem/worker_options.h"
#include "tqds/status.h"

namespace ds {

enum class FlagKind : uint8_t { kBool, kInt32, kUint32, kInt64, kUint64, kDouble, kString };
// The gflags type name of a kind ("bool", "int32", ... "string").
const char* KindName(FlagKind k);

enum class FlagUse : uint8_t {
  kEffect,    // a real flag that changes this worker
  kNoEffect,  // a real flag with no meaning in this build: accepted, reported once
  kAlias,     // our older spelling of a real flag (alias_of)
  kOwn,       // a flag of ours with no real counterpart
};

struct FlagSpec {
  std::string_view name;
  FlagKind kind;
  FlagUse use;
  // The real worker's default as its --help prints it; for kAlias/kOwn ours.
  std::string_view default_value;
  std::string_view unit;      // "MiB", "bytes", "s", "fraction", "path", ... or ""
  std::string_view versions;  // real releases that have it: "0.8/0.9", "0.8", "0.9"; "" ours
  std::string_view note;      // what it does here, or why it does nothing
  std::string_view alias_of;  // kAlias: the real flag it spells
};

// Every flag either program accepts, sorted by name (worker_flag_table.cc).
const std::vector<FlagSpec>& WorkerFlagTable();
// nullptr when `name` is no flag of ours nor of the real worker.
const FlagSpec* FindWorkerFlag(std::string_view name);

// The result of parsing worker flags.
struct WorkerFlags {
  WorkerOptions options;
  // Real flags given that have no effect here, "name=value", in the order
  // given; only those whose value differs from the real default (passing a
  // default changes nothing anywhere).
  std::vector<std::string> no_effect;
  // Every flag given, (canonical real name or own name, value), in order; the
  // last of repeated flags wins, as with gflags.
  std::vector<std::pair<std::string, std::string>> given;
};

// Sets one flag: checks `value` against the flag's kind, then applies it to
// `flags` (kEffect/kAlias/kOwn) or records it (kNoEffect). Invalid for an
// unknown flag or a bad value, naming the flag.
tqds::Status SetWorkerFlag(WorkerFlags& flags, std::string_view name, std::string_view value);

// Parses worker flags as gflags and the real dscli accept them:
// "--name=value", "--name value", "-name=value"; a bool flag also alone
// ("--name": true) or as "--noname" (false). Values for non-bool flags are the
// next argument even when it starts with '-' ("--io_thread_nice -15").
// Unknown arguments are refused with the offending argument named.
// `extra`, if given, receives flags not in the table that the caller handles
// itself (e.g. datasystem_worker's --ready_fd): names listed in `extra_names`.
tqds::Result<WorkerFlags> ParseWorkerFlags(
    const std::vector<std::string>& args, const std::vector<std::string>& extra_names = {},
    std::vector<std::pair<std::string, std::string>>* extra = nullptr);

// Reads a worker configuration file as the real `dscli generate_config`
// writes it: a JSON object {"flag": {"value": "..."}, ...} (a plain
// {"flag": value} works too). Empty values keep the default; a value starting
// with "./" is taken relative to `home_dir` (empty: the current directory).
// Returns (name, value) pairs to feed SetWorkerFlag.
tqds::Result<std::vector<std::pair<std::string, std::string>>> ReadWorkerConfigFile(
    const std::string& path, const std::string& home_dir);

// A configuration file listing every flag with its default here, in the
// format ReadWorkerConfigFile reads (what `dscli generate_config` writes).
std::string WorkerConfigTemplate();

// The datasystem_worker command line (after argv[0]) that reproduces
// `flags`: every effective option as --name=value by its real name, then the
// no-effect flags that were given (so the worker reports them too).
std::vector<std::string> WorkerArgv(const WorkerFlags& flags);

// The lines `--help` prints for the table (name, type, default, note).
std::string WorkerFlagsHelp();

}  // namespace ds
