// Samplers decide which ready samples a get_meta returns. One interface,
// chosen by SamplingConfig["sampler"]; each is stateless except for what it
// keeps in the task's TaskState (shared selections, call counters, and the
// upstream-mode selections kept until the partition is cleared). Semantics
// follow upstream TransferQueue 0.1.11's samplers (see include/tq/sampling.h).
#pragma once

#include <memory>
#include <optional>
#include <vector>

#include "queue/controller_state.h"
#include "tq/controller.h"

namespace tq::internal {

// The candidates a sampler may pick: visible samples whose requested fields
// are produced and which this task has not consumed.
class CandidateView {
 public:
  CandidateView(const Partition& p, TaskState& task, std::vector<int> fids)
      : p_(p), task_(task), fids_(std::move(fids)) {}
  bool IsCandidate(size_t pos) const {
    return pos < p_.samples.size() && p_.IsVisible(pos) &&
           (pos >= task_.consumed.size() || !task_.consumed[pos]) && p_.IsProduced(pos, fids_);
  }
  // Calls fn(pos) for candidates in position order until fn returns false.
  template <typename Fn>
  void Scan(Fn&& fn) const {
    for (size_t pos = task_.cursor; pos < p_.samples.size(); ++pos) {
      if (IsCandidate(pos) && !fn(pos)) return;
    }
  }
  const Partition& partition() const { return p_; }
  TaskState& task() const { return task_; }
  // Set when the sampler said it has a cached answer for this call
  // (Sampler::HasCachedResult): it is then asked even with too few ready.
  bool ask_cached() const { return ask_cached_; }
  void set_ask_cached(bool v) { ask_cached_ = v; }

 private:
  const Partition& p_;
  TaskState& task_;
  std::vector<int> fids_;
  bool ask_cached_ = false;
};

class Sampler {
 public:
  virtual ~Sampler() = default;
  // Positions for this caller, or nullopt when not enough are ready and
  // `allow_partial` is false. Returned positions get marked consumed.
  virtual Result<std::optional<std::vector<size_t>>> Select(const CandidateView& view,
                                                            size_t batch_size,
                                                            const SamplingConfig& config,
                                                            bool allow_partial) = 0;
  // True when Select marks consumption itself (then its caller must not mark
  // the returned positions).
  virtual bool MarksConsumed() const { return false; }
  // The partition is being cleared; forget what was cached for it.
  virtual void ForgetPartition(const std::string& /*partition_id*/) {}
  // Whether the sampler holds an answer for this call already (upstream's
  // has_cached_result; only custom samplers say so, built-ins keep theirs
  // in TaskState::sticky).
  virtual bool HasCachedResult(const std::string& /*partition_id*/, const std::string& /*task_name*/,
                               const SamplingConfig& /*config*/) {
    return false;
  }
};

// A Sampler over an embedding program's CustomSampler (tq/controller.h):
// hands it the ready global indexes, checks what it returns, and marks only
// the indexes it reports consumed.
std::shared_ptr<Sampler> MakeCustomSamplerAdapter(std::shared_ptr<CustomSampler> custom);

// Returns the sampler named by config["sampler"] (default sequential).
Result<Sampler*> SamplerFor(const SamplingConfig& config);

// Helpers for reading sampling parameters with clear errors.
Result<int64_t> ConfigInt(const SamplingConfig& config, const std::string& key,
                          std::optional<int64_t> fallback = std::nullopt);
std::string ConfigString(const SamplingConfig& config, const std::string& key,
                         const std::string& fallback);
// True when `key` is present and not nil (a Python None counts as absent).
bool ConfigHas(const SamplingConfig& config, const std::string& key);

// Splits items (by length) into `bins` bins of equal count (±1) with nearly
// equal length sums (Karmarkar-Karp's differencing method, as upstream's
// seqlen balancing). Returns, per bin (heaviest first), the indexes into
// `lengths`.
std::vector<std::vector<size_t>> BalanceByLength(const std::vector<int64_t>& lengths, size_t bins);

// The candidates of `view` in ascending global index (upstream's "ready").
std::vector<size_t> ReadyByIndex(const CandidateView& view);

// Upstream's GRPO group scan: walks `ready` (positions in ascending global
// index) for runs of `n` consecutive global index values and takes the first
// batch_size / n runs. Fewer: std::nullopt, or the runs found when
// `allow_partial`.
std::optional<std::vector<size_t>> TakeIndexRuns(const Partition& p, const std::vector<size_t>& ready,
                                                 size_t batch_size, size_t n, bool allow_partial);

}  // namespace tq::internal
