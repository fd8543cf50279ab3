// Sequential, GRPO group-N, rank-aware and sequence-length balanced samplers.
#include "queue/sampler.h"

#include <algorithm>
#include <numeric>

namespace tq::internal {

Result<int64_t> ConfigInt(const SamplingConfig& config, const std::string& key,
                          std::optional<int64_t> fallback) {
  auto it = config.find(key);
  if (it == config.end()) {
    if (fallback) return *fallback;
    return Status::Invalid("sampling_config needs '", key, "'");
  }
  if (const auto* i = std::get_if<int64_t>(&it->second)) return *i;
  if (const auto* d = std::get_if<double>(&it->second)) return static_cast<int64_t>(*d);
  return Status::Invalid("sampling_config '", key, "' must be an integer");
}

std::string ConfigString(const SamplingConfig& config, const std::string& key,
                         const std::string& fallback) {
  auto it = config.find(key);
  if (it == config.end()) return fallback;
  if (const auto* s = std::get_if<std::string>(&it->second)) return *s;
  return fallback;
}

namespace {

// Takes the first batch_size candidates; with n > 1, only whole groups of n
// consecutive positions [g*n, g*n+n) that are all candidates.
std::optional<std::vector<size_t>> TakeSequential(const CandidateView& view, size_t batch_size,
                                                  size_t n, bool allow_partial) {
  std::vector<size_t> out;
  if (batch_size == 0) return out;
  if (n <= 1) {
    view.Scan([&](size_t pos) {
      out.push_back(pos);
      return out.size() < batch_size;
    });
  } else {
    size_t next_group_start = 0;
    view.Scan([&](size_t pos) {
      if (pos < next_group_start || pos % n != 0) return true;
      for (size_t k = 1; k < n; ++k) {
        if (!view.IsCandidate(pos + k)) return true;
      }
      for (size_t k = 0; k < n; ++k) out.push_back(pos + k);
      next_group_start = pos + n;
      return out.size() < batch_size;
    });
  }
  if (out.size() < batch_size && !allow_partial) return std::nullopt;
  return out;
}

class SequentialSampler : public Sampler {
 public:
  Result<std::optional<std::vector<size_t>>> Select(const CandidateView& view, size_t batch_size,
                                                    const SamplingConfig&, bool allow_partial) override {
    return TakeSequential(view, batch_size, 1, allow_partial);
  }
};

class GroupNSampler : public Sampler {
 public:
  Result<std::optional<std::vector<size_t>>> Select(const CandidateView& view, size_t batch_size,
                                                    const SamplingConfig& config,
                                                    bool allow_partial) override {
    TQDS_ASSIGN_OR_RETURN(int64_t n, ConfigInt(config, "n_samples_per_prompt"));
    if (n <= 0) return Status::Invalid("n_samples_per_prompt must be positive, got ", n);
    if (batch_size % n != 0) {
      return Status::Invalid("grpo_group_n: batch_size ", batch_size,
                             " is not a multiple of n_samples_per_prompt ", n);
    }
    return TakeSequential(view, batch_size, static_cast<size_t>(n), allow_partial);
  }
};

// Shared selection for a group of callers: the first caller of a step selects
// for everyone, later callers get the cached answer; the entry is dropped when
// all expected callers were served.
class SharedSelection {
 public:
  template <typename MakeFn>
  static Result<std::optional<std::vector<size_t>>> Serve(TaskState& task, const std::string& key,
                                                          size_t rank, size_t expected,
                                                          MakeFn&& make) {
    auto it = task.cache.find(key);
    if (it == task.cache.end()) {
      TQDS_ASSIGN_OR_RETURN(auto made, make());
      if (!made) return std::optional<std::vector<size_t>>();
      CachedSelection sel;
      sel.per_rank = std::move(*made);
      sel.expected = expected;
      it = task.cache.emplace(key, std::move(sel)).first;
    }
    CachedSelection& sel = it->second;
    std::vector<size_t> out = sel.per_rank.size() == 1 ? sel.per_rank[0] : sel.per_rank.at(rank);
    if (++sel.served >= sel.expected) task.cache.erase(it);
    return std::optional<std::vector<size_t>>(std::move(out));
  }

  // The step a caller is at: explicit batch_index, else its own call count.
  static Result<int64_t> Step(TaskState& task, const SamplingConfig& config,
                              const std::string& caller) {
    if (config.count("batch_index")) return ConfigInt(config, "batch_index");
    return task.call_counters[caller];
  }
  static void Advance(TaskState& task, const SamplingConfig& config, const std::string& caller) {
    if (!config.count("batch_index")) ++task.call_counters[caller];
  }
};

class RankAwareSampler : public Sampler {
 public:
  Result<std::optional<std::vector<size_t>>> Select(const CandidateView& view, size_t batch_size,
                                                    const SamplingConfig& config,
                                                    bool allow_partial) override {
    TQDS_ASSIGN_OR_RETURN(int64_t dp_rank, ConfigInt(config, "dp_rank"));
    TQDS_ASSIGN_OR_RETURN(int64_t ranks, ConfigInt(config, "ranks_per_group", 1));
    TQDS_ASSIGN_OR_RETURN(int64_t rank, ConfigInt(config, "rank", 0));
    TQDS_ASSIGN_OR_RETURN(int64_t n, ConfigInt(config, "n_samples_per_prompt", 1));
    if (ranks <= 0 || rank < 0 || rank >= ranks || n <= 0) {
      return Status::Invalid("rank_aware: need 0 <= rank < ranks_per_group and n_samples_per_prompt > 0");
    }
    std::string caller = "ra/" + std::to_string(dp_rank) + "/" + std::to_string(rank);
    TQDS_ASSIGN_OR_RETURN(int64_t step, SharedSelection::Step(view.task(), config, caller));
    std::string key = "ra/" + std::to_string(dp_rank) + "/step/" + std::to_string(step);
    auto res = SharedSelection::Serve(view.task(), key, 0, static_cast<size_t>(ranks), [&]() {
      auto taken = TakeSequential(view, batch_size, static_cast<size_t>(n), allow_partial);
      using R = std::optional<std::vector<std::vector<size_t>>>;
      return Result<R>(taken ? R(std::vector<std::vector<size_t>>{*taken}) : R());
    });
    if (res.ok() && res->has_value()) SharedSelection::Advance(view.task(), config, caller);
    return res;
  }
};

class SeqlenBalancedSampler : public Sampler {
 public:
  Result<std::optional<std::vector<size_t>>> Select(const CandidateView& view, size_t batch_size,
                                                    const SamplingConfig& config,
                                                    bool allow_partial) override {
    TQDS_ASSIGN_OR_RETURN(int64_t dp_size, ConfigInt(config, "dp_size"));
    TQDS_ASSIGN_OR_RETURN(int64_t dp_rank, ConfigInt(config, "dp_rank"));
    if (dp_size <= 0 || dp_rank < 0 || dp_rank >= dp_size) {
      return Status::Invalid("seqlen_balanced: need 0 <= dp_rank < dp_size, got dp_rank=", dp_rank,
                             " dp_size=", dp_size);
    }
    std::string length_key = ConfigString(config, "length_key", "seq_len");
    std::string caller = "sb/" + std::to_string(dp_rank);
    TQDS_ASSIGN_OR_RETURN(int64_t step, SharedSelection::Step(view.task(), config, caller));
    std::string key = "sb/step/" + std::to_string(step);
    Status length_error;
    auto res = SharedSelection::Serve(
        view.task(), key, static_cast<size_t>(dp_rank), static_cast<size_t>(dp_size),
        [&]() -> Result<std::optional<std::vector<std::vector<size_t>>>> {
          auto taken = TakeSequential(view, batch_size * dp_size, 1, allow_partial);
          if (!taken) return std::optional<std::vector<std::vector<size_t>>>();
          std::vector<int64_t> lengths;
          for (size_t pos : *taken) {
            const auto& custom = view.partition().samples[pos].custom;
            auto it = custom.find(length_key);
            if (it == custom.end()) {
              return Status::Invalid("seqlen_balanced: sample ",
                                     view.partition().samples[pos].global_index,
                                     " has no custom meta '", length_key, "'");
            }
            if (const auto* i = std::get_if<int64_t>(&it->second)) {
              lengths.push_back(*i);
            } else if (const auto* d = std::get_if<double>(&it->second)) {
              lengths.push_back(static_cast<int64_t>(*d));
            } else {
              return Status::Invalid("seqlen_balanced: custom meta '", length_key,
                                     "' must be a number");
            }
          }
          auto bins = BalanceByLength(lengths, static_cast<size_t>(dp_size));
          std::vector<std::vector<size_t>> per_rank(bins.size());
          for (size_t b = 0; b < bins.size(); ++b) {
            for (size_t i : bins[b]) per_rank[b].push_back((*taken)[i]);
            std::sort(per_rank[b].begin(), per_rank[b].end());
          }
          return std::optional<std::vector<std::vector<size_t>>>(std::move(per_rank));
        });
    if (res.ok() && res->has_value()) SharedSelection::Advance(view.task(), config, caller);
    return res;
  }
};

}  // namespace

std::vector<std::vector<size_t>> BalanceByLength(const std::vector<int64_t>& lengths, size_t bins) {
  std::vector<std::vector<size_t>> out(bins);
  if (bins == 0) return out;
  std::vector<size_t> order(lengths.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return lengths[a] > lengths[b]; });
  size_t cap = (lengths.size() + bins - 1) / bins;
  size_t full_bins_allowed = lengths.size() % bins == 0 ? bins : lengths.size() % bins;
  std::vector<int64_t> sums(bins, 0);
  size_t bins_at_cap = 0;
  for (size_t i : order) {
    size_t best = bins;
    for (size_t b = 0; b < bins; ++b) {
      size_t limit = (bins_at_cap >= full_bins_allowed) ? cap - (lengths.size() % bins != 0) : cap;
      if (out[b].size() >= limit) continue;
      if (best == bins || sums[b] < sums[best]) best = b;
    }
    out[best].push_back(i);
    sums[best] += lengths[i];
    if (out[best].size() == cap) ++bins_at_cap;
  }
  return out;
}

Result<Sampler*> SamplerFor(const SamplingConfig& config) {
  static SequentialSampler sequential;
  static GroupNSampler group_n;
  static RankAwareSampler rank_aware;
  static SeqlenBalancedSampler balanced;
  std::string name = ConfigString(config, "sampler", "");
  if (name.empty()) {
    // Upstream passes n_samples_per_prompt alone to mean GRPO grouping.
    name = config.count("n_samples_per_prompt") ? "grpo_group_n" : "sequential";
  }
  if (name == "sequential") return static_cast<Sampler*>(&sequential);
  if (name == "grpo_group_n" || name == "grpo") return static_cast<Sampler*>(&group_n);
  if (name == "rank_aware") return static_cast<Sampler*>(&rank_aware);
  if (name == "seqlen_balanced") return static_cast<Sampler*>(&balanced);
  return Status::Invalid("unknown sampler '", name,
                         "' (known: sequential, grpo_group_n, rank_aware, seqlen_balanced)");
}

}  // namespace tq::internal

