// FetchMode names and SamplingConfig from JSON.
#include "tq/sampling.h"

#include <nlohmann/json.hpp>

namespace tq {

Result<FetchMode> ParseFetchMode(const std::string& name) {
  if (name == "fetch") return FetchMode::kFetch;
  if (name == "force_fetch") return FetchMode::kForceFetch;
  if (name == "poll") return FetchMode::kPoll;
  if (name == "poll_all") return FetchMode::kPollAll;
  if (name == "force_fetch_all") return FetchMode::kForceFetchAll;
  return Status::Invalid("unknown get_meta mode '", name,
                         "' (known: fetch, force_fetch, poll, poll_all, force_fetch_all)");
}

const char* FetchModeName(FetchMode mode) {
  switch (mode) {
    case FetchMode::kFetch: return "fetch";
    case FetchMode::kForceFetch: return "force_fetch";
    case FetchMode::kPoll: return "poll";
    case FetchMode::kPollAll: return "poll_all";
    case FetchMode::kForceFetchAll: return "force_fetch_all";
  }
  return "unknown";
}

Result<SamplingConfig> ParseSamplingConfigJson(const std::string& json) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(json);
  } catch (const std::exception& e) {
    return Status::Invalid("sampling config is not valid JSON: ", e.what());
  }
  if (!j.is_object()) return Status::Invalid("sampling config must be a JSON object, got ", j.type_name());
  SamplingConfig out;
  for (const auto& [key, v] : j.items()) {
    if (v.is_null()) {
      continue;  // absent, as a None in a Python sampling_config
    } else if (v.is_boolean()) {
      out[key] = static_cast<int64_t>(v.get<bool>());
    } else if (v.is_number_integer()) {
      out[key] = v.get<int64_t>();
    } else if (v.is_number_float()) {
      out[key] = v.get<double>();
    } else if (v.is_string()) {
      out[key] = v.get<std::string>();
    } else {
      return Status::Invalid("sampling config '", key, "' must be an int, float, bool or string, got ",
                             v.type_name());
    }
  }
  return out;
}

}  // namespace tq
