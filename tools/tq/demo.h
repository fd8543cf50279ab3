// The main job: a rollout-like pipeline through real services on localhost.
#pragma once

#include <cstdint>
#include <string>

namespace tq::tools {

struct DemoOptions {
  int64_t samples = 8192;
  int64_t batch = 64;
  std::string backend = "simple";  // or "yuanrong"
  std::string worker_address;      // datasystem worker for the yuanrong backend
};

// Returns the process exit code (0 when every check passed).
int RunDemo(const DemoOptions& options);

}  // namespace tq::tools
