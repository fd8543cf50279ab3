// FetchMode names.
#include "tq/sampling.h"

namespace tq {

Result<FetchMode> ParseFetchMode(const std::string& name) {
  if (name == "fetch") return FetchMode::kFetch;
  if (name == "force_fetch") return FetchMode::kForceFetch;
  if (name == "poll") return FetchMode::kPoll;
  return Status::Invalid("unknown get_meta mode '", name, "' (known: fetch, force_fetch, poll)");
}

const char* FetchModeName(FetchMode mode) {
  switch (mode) {
    case FetchMode::kFetch: return "fetch";
    case FetchMode::kForceFetch: return "force_fetch";
    case FetchMode::kPoll: return "poll";
  }
  return "unknown";
}

}  // namespace tq
