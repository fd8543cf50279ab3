// spdlog configuration from the environment.
#include "common/logging.h"

#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_color_sinks.h>

#include <cstdlib>
#include <filesystem>
#include <mutex>

namespace tqds {

void InitLogging(const std::string& name, const std::string& log_dir,
                 spdlog::level::level_enum default_level) {
  static std::mutex mu;
  std::lock_guard<std::mutex> lock(mu);
  std::shared_ptr<spdlog::logger> logger;
  try {
    if (!log_dir.empty()) {
      std::filesystem::create_directories(log_dir);
      logger = spdlog::basic_logger_mt(name + "-file", log_dir + "/" + name + ".log");
    } else {
      logger = spdlog::stderr_color_mt(name);
    }
  } catch (const spdlog::spdlog_ex&) {
    logger = spdlog::get(log_dir.empty() ? name : name + "-file");
    if (!logger) return;
  } catch (const std::filesystem::filesystem_error& e) {
    spdlog::warn("cannot create log directory {}: {}; logging to stderr", log_dir, e.what());
    return;
  }
  auto level = default_level;
  if (const char* env = std::getenv("TQ_LOG_LEVEL"); env != nullptr && *env != '\0') {
    level = spdlog::level::from_str(env);
  }
  logger->set_level(level);
  logger->flush_on(spdlog::level::warn);
  spdlog::set_default_logger(logger);
}

}  // namespace tqds
