// Logging setup shared by every binary and library: spdlog, level from the
// TQ_LOG_LEVEL environment variable (trace|debug|info|warn|error|off;
// default warn for libraries, info for daemons).
#pragma once

#include <spdlog/spdlog.h>

#include <string>

namespace tqds {

// Configures the default logger once per process. `log_dir` empty: stderr;
// otherwise logs go to <log_dir>/<name>.log (created if missing).
// Safe to call several times; later calls with a new log_dir re-target.
void InitLogging(const std::string& name, const std::string& log_dir = "",
                 spdlog::level::level_enum default_level = spdlog::level::warn);

}  // namespace tqds
