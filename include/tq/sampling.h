// Request-side types for get_meta: fetch modes and sampling configuration.
#pragma once

#include <map>
#include <string>

#include "tq/types.h"

namespace tq {

// Wire-stable: never renumber.
enum class FetchMode : uint8_t {
  kFetch = 0,       // wait (up to a timeout) for batch_size ready, unconsumed samples; mark consumed
  kForceFetch = 1,  // every present sample with the fields produced; marks nothing
  kPoll = 2,        // up to batch_size ready, unconsumed samples now (maybe none); mark consumed
};
Result<FetchMode> ParseFetchMode(const std::string& name);  // "fetch", "force_fetch", "poll"
const char* FetchModeName(FetchMode mode);

// Which sampler picks the samples and its parameters. Keys:
//   "sampler": "sequential" (default) | "grpo_group_n" | "rank_aware" | "seqlen_balanced"
//   grpo_group_n:    "n_samples_per_prompt" (int): only whole groups of n consecutive samples
//   rank_aware:      "dp_rank" (int): ranks with the same dp_rank get the same samples;
//                    "ranks_per_group" (int, default 1); "rank" (int, caller's rank in group);
//                    "batch_index" (int, optional; default: the caller's own call count)
//                    "n_samples_per_prompt" (optional: select whole groups)
//   seqlen_balanced: "dp_size", "dp_rank" (int), "length_key" (custom meta key, default
//                    "seq_len"), "batch_index" (optional); batch_size is per rank
using SamplingConfig = std::map<std::string, MetaValue>;

}  // namespace tq
