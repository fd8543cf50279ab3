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
  // Upstream TransferQueue's polling fetch, all or nothing: batch_size ready,
  // unconsumed samples now (marked consumed), else an empty meta at once;
  // a sampler's cached selection for the call (rank-aware) is returned as is.
  kPollAll = 3,
  // Upstream's force_fetch: every live sample of the partition in ascending
  // global index, produced or not (per-sample FieldInfo.produced says which
  // fields are), ignoring batch_size, task and consumption; marks nothing.
  // The meta's fields are the requested ones the partition has registered
  // (none requested: none).
  // An unknown partition is NotFound.
  kForceFetchAll = 4,
};
// "fetch", "force_fetch", "poll", "poll_all", "force_fetch_all"
Result<FetchMode> ParseFetchMode(const std::string& name);
const char* FetchModeName(FetchMode mode);

// Which sampler picks the samples and its parameters. Keys:
//   "sampler": "sequential" (default) | "grpo_group_n" | "rank_aware" | "seqlen_balanced"
//              (no "sampler" but "n_samples_per_prompt": grpo_group_n)
//   A group of n is a run of n consecutive GLOBAL INDEX values among the
//   ready samples (scanned in ascending index, as upstream does).
//   grpo_group_n:    "n_samples_per_prompt" (int n > 0; batch_size % n == 0): the first
//                    batch_size / n groups; with "dp_rank" (and optional "batch_index")
//                    the selection is cached per (task, dp_rank, batch_index) until the
//                    partition is cleared, as upstream's GRPOGroupNSampler does
//   rank_aware, upstream mode (no "ranks_per_group"): "dp_rank" (int >= 0) and
//                    "batch_index" (int) are required; the first call per (task, dp_rank,
//                    batch_index) takes batch_size ready samples, every later call with
//                    that key gets the same ones until the partition is cleared
//   rank_aware, group mode ("ranks_per_group" given): "dp_rank" (int), "ranks_per_group"
//                    (int), "rank" (int, caller's rank in its group, default 0): the
//                    ranks_per_group callers of a dp_rank get the same samples, then the
//                    selection is dropped; "batch_index" optional (default: the caller's
//                    own call count)
//   (both rank_aware modes: "n_samples_per_prompt" optional, selects whole groups)
//   seqlen_balanced: "dp_size" (int, default 1), "dp_rank" (int, default 0),
//                    "batch_index" (int, default 0), "n_samples_per_prompt" (default 1),
//                    "length_key" (custom meta key, default "total_lengths"; a sample
//                    without it weighs 1). batch_size is per rank: the first call per
//                    (task, batch_index) selects batch_size * dp_size samples in whole
//                    groups, splits them over dp_size ranks in equal counts with balanced
//                    length sums (whole groups when their count divides by dp_size) and
//                    caches every rank's share until the partition is cleared; each call
//                    returns its rank's share. Every share counts as consumed at once
//                    (upstream marks only the caller's, so a later batch_index could
//                    select a slower rank's pending share again)
using SamplingConfig = std::map<std::string, MetaValue>;

// A SamplingConfig from a JSON object of ints, floats, strings and bools
// (bool -> int; null: the key is left out), e.g. the `tq controller
// --default-sampling` flag.
Result<SamplingConfig> ParseSamplingConfigJson(const std::string& json);

}  // namespace tq
