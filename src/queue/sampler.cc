// Sequential, GRPO group-N, rank-aware and sequence-length balanced samplers.
#include "queue/sampler.h"

#include <algorithm>
#include <map>
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
  if (const auto* b = std::get_if<bool>(&it->second)) return static_cast<int64_t>(*b);
  if (it->second.is_nil()) {  // None: absent (upstream reads kwargs.get(key, None))
    if (fallback) return *fallback;
    return Status::Invalid("sampling_config needs '", key, "' (got None)");
  }
  return Status::Invalid("sampling_config '", key, "' must be an integer");
}

bool ConfigHas(const SamplingConfig& config, const std::string& key) {
  auto it = config.find(key);
  return it != config.end() && !it->second.is_nil();
}

std::string ConfigString(const SamplingConfig& config, const std::string& key,
                         const std::string& fallback) {
  auto it = config.find(key);
  if (it == config.end()) return fallback;
  if (const auto* s = std::get_if<std::string>(&it->second)) return *s;
  return fallback;
}

namespace {

using Selection = std::optional<std::vector<size_t>>;

// Takes the first batch_size candidates (position order); with n > 1, only
// whole groups: runs of n consecutive global indexes (TakeIndexRuns).
Selection TakeSequential(const CandidateView& view, size_t batch_size, size_t n, bool allow_partial) {
  if (n > 1) return TakeIndexRuns(view.partition(), ReadyByIndex(view), batch_size, n, allow_partial);
  std::vector<size_t> out;
  if (batch_size == 0) return out;
  view.Scan([&](size_t pos) {
    out.push_back(pos);
    return out.size() < batch_size;
  });
  if (out.size() < batch_size && !allow_partial) return std::nullopt;
  return out;
}

// An upstream-mode selection cached under `key` for this task, without
// samples cleared since; std::nullopt when there is none.
Selection Sticky(const CandidateView& view, const std::string& key) {
  const auto& sticky = view.task().sticky;
  auto it = sticky.find(key);
  if (it == sticky.end()) return std::nullopt;
  std::vector<size_t> out;
  out.reserve(it->second.size());
  for (size_t pos : it->second) {
    if (view.partition().IsVisible(pos)) out.push_back(pos);
  }
  return out;
}

Result<int64_t> GroupSize(const SamplingConfig& config, std::optional<int64_t> fallback) {
  TQDS_ASSIGN_OR_RETURN(int64_t n, ConfigInt(config, "n_samples_per_prompt", fallback));
  if (n <= 0) return Status::Invalid("n_samples_per_prompt must be positive, got ", n);
  return n;
}

class SequentialSampler : public Sampler {
 public:
  Result<Selection> Select(const CandidateView& view, size_t batch_size, const SamplingConfig&,
                           bool allow_partial) override {
    return TakeSequential(view, batch_size, 1, allow_partial);
  }
};

// Upstream's GRPOGroupNSampler: the first batch_size / n runs of n
// consecutive global indexes. With "dp_rank" in the config the selection is
// cached per (dp_rank, batch_index) until the partition is cleared.
class GroupNSampler : public Sampler {
 public:
  Result<Selection> Select(const CandidateView& view, size_t batch_size, const SamplingConfig& config,
                           bool allow_partial) override {
    TQDS_ASSIGN_OR_RETURN(int64_t n, GroupSize(config, std::nullopt));
    std::string key;
    if (ConfigHas(config, "dp_rank")) {
      TQDS_ASSIGN_OR_RETURN(int64_t dp_rank, ConfigInt(config, "dp_rank"));
      std::string batch_index = "-";
      if (ConfigHas(config, "batch_index")) {
        TQDS_ASSIGN_OR_RETURN(int64_t b, ConfigInt(config, "batch_index"));
        batch_index = std::to_string(b);
      }
      key = "grpo/" + std::to_string(dp_rank) + "/" + batch_index;
      if (auto cached = Sticky(view, key)) return cached;
    }
    if (batch_size % n != 0) {
      return Status::Invalid("grpo_group_n: batch_size ", batch_size,
                             " is not a multiple of n_samples_per_prompt ", n);
    }
    Selection taken = TakeSequential(view, batch_size, static_cast<size_t>(n), allow_partial);
    if (!key.empty() && taken && batch_size > 0 && taken->size() == batch_size) {
      view.task().sticky[key] = *taken;
    }
    return taken;
  }
};

// Shared selection for a group of callers: the first caller of a step selects
// for everyone, later callers get the cached answer; the entry is dropped when
// all expected callers were served.
class SharedSelection {
 public:
  template <typename MakeFn>
  static Result<Selection> Serve(TaskState& task, const std::string& key, size_t rank, size_t expected,
                                 MakeFn&& make) {
    auto it = task.cache.find(key);
    if (it == task.cache.end()) {
      TQDS_ASSIGN_OR_RETURN(auto made, make());
      if (!made) return Selection();
      CachedSelection sel;
      sel.per_rank = std::move(*made);
      sel.expected = expected;
      it = task.cache.emplace(key, std::move(sel)).first;
    }
    CachedSelection& sel = it->second;
    std::vector<size_t> out = sel.per_rank.size() == 1 ? sel.per_rank[0] : sel.per_rank.at(rank);
    if (++sel.served >= sel.expected) task.cache.erase(it);
    return Selection(std::move(out));
  }

  // The step a caller is at: explicit batch_index, else its own call count.
  static Result<int64_t> Step(TaskState& task, const SamplingConfig& config,
                              const std::string& caller) {
    if (ConfigHas(config, "batch_index")) return ConfigInt(config, "batch_index");
    return task.call_counters[caller];
  }
  static void Advance(TaskState& task, const SamplingConfig& config, const std::string& caller) {
    if (!ConfigHas(config, "batch_index")) ++task.call_counters[caller];
  }
};

class RankAwareSampler : public Sampler {
 public:
  Result<Selection> Select(const CandidateView& view, size_t batch_size, const SamplingConfig& config,
                           bool allow_partial) override {
    if (!ConfigHas(config, "ranks_per_group")) return SelectUpstream(view, batch_size, config, allow_partial);
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

 private:
  // Upstream's RankAwareSampler: the first call per (dp_rank, batch_index)
  // takes batch_size ready samples; later calls get the same ones until the
  // partition is cleared. Too few: nothing, and nothing is cached.
  static Result<Selection> SelectUpstream(const CandidateView& view, size_t batch_size,
                                          const SamplingConfig& config, bool allow_partial) {
    TQDS_ASSIGN_OR_RETURN(int64_t dp_rank, ConfigInt(config, "dp_rank"));
    TQDS_ASSIGN_OR_RETURN(int64_t batch_index, ConfigInt(config, "batch_index"));
    TQDS_ASSIGN_OR_RETURN(int64_t n, GroupSize(config, 1));
    if (dp_rank < 0) return Status::Invalid("rank_aware: dp_rank must be >= 0, got ", dp_rank);
    std::string key = "ra/" + std::to_string(dp_rank) + "/" + std::to_string(batch_index);
    if (auto cached = Sticky(view, key)) return cached;
    Selection taken = TakeSequential(view, batch_size, static_cast<size_t>(n), allow_partial);
    if (taken && batch_size > 0 && taken->size() == batch_size) view.task().sticky[key] = *taken;
    return taken;
  }
};

// Upstream's SeqlenBalancedSampler: batch_size is per rank. The first call
// per batch_index selects batch_size * dp_size samples in whole groups and
// splits them over the ranks (equal counts, balanced length sums); every
// rank's share is cached until the partition is cleared.
class SeqlenBalancedSampler : public Sampler {
 public:
  Result<Selection> Select(const CandidateView& view, size_t batch_size, const SamplingConfig& config,
                           bool allow_partial) override {
    TQDS_ASSIGN_OR_RETURN(int64_t dp_size, ConfigInt(config, "dp_size", 1));
    TQDS_ASSIGN_OR_RETURN(int64_t dp_rank, ConfigInt(config, "dp_rank", 0));
    TQDS_ASSIGN_OR_RETURN(int64_t batch_index, ConfigInt(config, "batch_index", 0));
    TQDS_ASSIGN_OR_RETURN(int64_t n, GroupSize(config, 1));
    if (dp_size <= 0 || dp_rank < 0 || dp_rank >= dp_size) {
      return Status::Invalid("seqlen_balanced: need 0 <= dp_rank < dp_size, got dp_rank=", dp_rank,
                             " dp_size=", dp_size);
    }
    std::string length_key = ConfigString(config, "length_key", "total_lengths");
    std::string prefix = "sb/" + std::to_string(batch_index) + "/";
    if (auto cached = Sticky(view, prefix + std::to_string(dp_rank))) return cached;
    size_t global = batch_size * static_cast<size_t>(dp_size);
    if (global % n != 0) {
      return Status::Invalid("seqlen_balanced: batch_size ", batch_size, " x dp_size ", dp_size,
                             " is not a multiple of n_samples_per_prompt ", n);
    }
    Selection taken = TakeSequential(view, global, static_cast<size_t>(n), false);
    if (!taken || global == 0) return allow_partial ? Selection(std::vector<size_t>{}) : Selection();
    const Partition& p = view.partition();
    std::vector<int64_t> lengths;
    lengths.reserve(taken->size());
    for (size_t pos : *taken) {
      const CustomMeta& tags = p.samples[pos].custom.get();
      auto it = tags.find(length_key);
      if (it == tags.end()) {
        lengths.push_back(1);  // upstream's weight for a sample without the key
      } else if (const auto* i = std::get_if<int64_t>(&it->second)) {
        lengths.push_back(*i);
      } else if (const auto* d = std::get_if<double>(&it->second)) {
        lengths.push_back(static_cast<int64_t>(*d));
      } else {
        return Status::Invalid("seqlen_balanced: custom meta '", length_key, "' of sample ",
                               p.samples[pos].global_index, " must be a number");
      }
    }
    // Whole groups when they divide evenly over the ranks, else single samples.
    size_t group = static_cast<size_t>(n);
    size_t groups = taken->size() / group;
    if (group > 1 && groups % static_cast<size_t>(dp_size) != 0) group = 1;
    std::vector<int64_t> weights(taken->size() / group, 0);
    for (size_t i = 0; i < lengths.size(); ++i) weights[i / group] += lengths[i];
    auto bins = BalanceByLength(weights, static_cast<size_t>(dp_size));
    auto by_index = [&](size_t a, size_t b) { return p.samples[a].global_index < p.samples[b].global_index; };
    for (size_t r = 0; r < bins.size(); ++r) {
      std::vector<size_t> share;
      for (size_t g : bins[r]) {
        for (size_t k = 0; k < group; ++k) share.push_back((*taken)[g * group + k]);
      }
      std::sort(share.begin(), share.end(), by_index);
      // Every rank's share counts as consumed now, not when that rank asks:
      // upstream marks only the caller's, so a later batch_index could hand
      // a slower rank's pending share to a second rank.
      MarkConsumed(p, view.task(), share);
      view.task().sticky[prefix + std::to_string(r)] = std::move(share);
    }
    return Sticky(view, prefix + std::to_string(dp_rank));
  }
};

}  // namespace

std::vector<size_t> ReadyByIndex(const CandidateView& view) {
  std::vector<size_t> out;
  view.Scan([&](size_t pos) {
    out.push_back(pos);
    return true;
  });
  const auto& samples = view.partition().samples;
  auto by_index = [&](size_t a, size_t b) { return samples[a].global_index < samples[b].global_index; };
  if (!std::is_sorted(out.begin(), out.end(), by_index)) std::sort(out.begin(), out.end(), by_index);
  return out;
}

std::optional<std::vector<size_t>> TakeIndexRuns(const Partition& p, const std::vector<size_t>& ready,
                                                 size_t batch_size, size_t n, bool allow_partial) {
  std::vector<size_t> out;
  if (n == 0) return std::nullopt;
  size_t i = 0;
  while (out.size() + n <= batch_size && i + n <= ready.size()) {
    // The window [i, i + n) is a run unless some step breaks it; a window
    // starting before the break would contain it too, so skip past it.
    size_t k = 1;
    while (k < n && p.samples[ready[i + k]].global_index == p.samples[ready[i + k - 1]].global_index + 1) ++k;
    if (k == n) {
      out.insert(out.end(), ready.begin() + i, ready.begin() + i + n);
      i += n;
    } else {
      i += k;
    }
  }
  if (out.size() < batch_size && !allow_partial) return std::nullopt;
  return out;
}

namespace {

// One way of splitting some items into k bins, for the differencing method.
struct Split {
  struct Bin {
    int64_t sum = 0;
    std::vector<size_t> items;
  };
  std::vector<Bin> bins;  // heaviest first
  int64_t spread() const { return bins.front().sum - bins.back().sum; }
  void Order() {
    std::stable_sort(bins.begin(), bins.end(), [](const Bin& a, const Bin& b) { return a.sum > b.sum; });
  }
};

}  // namespace

// Karmarkar-Karp's largest differencing method with equal bin sizes: the
// items, sorted by length, are cut into rows of `bins` (one item per bin);
// repeatedly the two splits with the largest spreads are combined, the
// heaviest bin of one with the lightest of the other, until one is left.
// When the count does not divide, zero-length placeholders fill the lightest
// row; they all sit in one row, so no bin gets two of them and the real
// counts differ by at most one.
std::vector<std::vector<size_t>> BalanceByLength(const std::vector<int64_t>& lengths, size_t bins) {
  std::vector<std::vector<size_t>> out(bins);
  if (bins == 0 || lengths.empty()) return out;
  const size_t n = lengths.size();
  const size_t padded = (n + bins - 1) / bins * bins;
  auto weight = [&](size_t i) { return i < n ? lengths[i] : int64_t{0}; };
  std::vector<size_t> order(padded);
  std::iota(order.begin(), order.end(), 0);
  // Placeholders (index >= n) sort first, so they share the lightest row.
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    if ((a >= n) != (b >= n)) return a >= n;
    return weight(a) < weight(b);
  });
  auto smaller_spread = [](const Split& a, const Split& b) { return a.spread() < b.spread(); };
  std::vector<Split> heap;
  heap.reserve(padded / bins);
  for (size_t row = 0; row < padded; row += bins) {
    Split s;
    s.bins.resize(bins);
    for (size_t j = 0; j < bins; ++j) {
      s.bins[j].sum = weight(order[row + j]);
      s.bins[j].items.push_back(order[row + j]);
    }
    s.Order();
    heap.push_back(std::move(s));
    std::push_heap(heap.begin(), heap.end(), smaller_spread);
  }
  while (heap.size() > 1) {
    std::pop_heap(heap.begin(), heap.end(), smaller_spread);
    Split a = std::move(heap.back());
    heap.pop_back();
    std::pop_heap(heap.begin(), heap.end(), smaller_spread);
    Split& b = heap.back();
    for (size_t j = 0; j < bins; ++j) {
      Split::Bin& from = b.bins[bins - 1 - j];
      a.bins[j].sum += from.sum;
      a.bins[j].items.insert(a.bins[j].items.end(), from.items.begin(), from.items.end());
    }
    a.Order();
    b = std::move(a);
    std::push_heap(heap.begin(), heap.end(), smaller_spread);
  }
  for (size_t j = 0; j < bins; ++j) {
    for (size_t i : heap.front().bins[j].items) {
      if (i < n) out[j].push_back(i);
    }
  }
  return out;
}

namespace {

// Adapts an embedding program's CustomSampler: global indexes in and out,
// each checked against the partition; marks only what it reports consumed.
class CustomSamplerAdapter : public Sampler {
 public:
  explicit CustomSamplerAdapter(std::shared_ptr<CustomSampler> custom) : custom_(std::move(custom)) {}

  Result<Selection> Select(const CandidateView& view, size_t batch_size, const SamplingConfig& config,
                           bool allow_partial) override {
    const Partition& p = view.partition();
    std::vector<size_t> ready = ReadyByIndex(view);
    if (ready.size() < batch_size && !view.ask_cached()) {
      if (!allow_partial) return Selection();  // upstream waits until batch_size are ready
      batch_size = ready.size();
    }
    if (batch_size == 0) return Selection(std::vector<size_t>{});
    CustomSampler::Call call;
    call.partition_id = p.name;
    call.ready.reserve(ready.size());
    for (size_t pos : ready) call.ready.push_back(p.samples[pos].global_index);
    call.batch_size = batch_size;
    call.config = &config;
    call.custom_meta = [&p](const std::vector<int64_t>& indexes) {
      std::map<int64_t, CustomMeta> out;
      for (int64_t gi : indexes) {
        const size_t pos = p.position_of.Find(gi);
        if (pos != PositionMap::kNone && p.IsVisible(pos) && !p.samples[pos].custom.empty()) {
          out[gi] = p.samples[pos].custom.get();
        }
      }
      return out;
    };
    TQDS_ASSIGN_OR_RETURN(CustomSampler::Choice choice, custom_->Sample(call));
    if (choice.sampled.empty() && view.ask_cached()) return Selection();  // polling: an empty answer
    if (choice.sampled.empty()) {
      return Status::Invalid("the sampler returned no samples for batch_size ", batch_size, " from ",
                             ready.size(), " ready in partition '", p.name, "'");
    }
    TQDS_ASSIGN_OR_RETURN(std::vector<size_t> sampled, Positions(p, choice.sampled, "sampled"));
    TQDS_ASSIGN_OR_RETURN(std::vector<size_t> consumed, Positions(p, choice.consumed, "consumed"));
    MarkConsumed(p, view.task(), consumed);
    return Selection(std::move(sampled));
  }
  bool MarksConsumed() const override { return true; }
  void ForgetPartition(const std::string& partition_id) override { custom_->ClearCache(partition_id); }
  bool HasCachedResult(const std::string& partition_id, const std::string& task_name,
                       const SamplingConfig& config) override {
    return custom_->HasCachedResult(partition_id, task_name, config);
  }

 private:
  static Result<std::vector<size_t>> Positions(const Partition& p, const std::vector<int64_t>& indexes,
                                               const char* what) {
    std::vector<size_t> out;
    out.reserve(indexes.size());
    for (int64_t gi : indexes) {
      const size_t pos = p.position_of.Find(gi);
      if (pos == PositionMap::kNone || !p.IsVisible(pos)) {
        return Status::Invalid("the sampler's ", what, " index ", gi, " is not a live sample of partition '",
                               p.name, "'");
      }
      out.push_back(pos);
    }
    return out;
  }

  std::shared_ptr<CustomSampler> custom_;
};

}  // namespace

std::shared_ptr<Sampler> MakeCustomSamplerAdapter(std::shared_ptr<CustomSampler> custom) {
  return std::make_shared<CustomSamplerAdapter>(std::move(custom));
}

Result<Sampler*> SamplerFor(const SamplingConfig& config) {
  static SequentialSampler sequential;
  static GroupNSampler group_n;
  static RankAwareSampler rank_aware;
  static SeqlenBalancedSampler balanced;
  std::string name = ConfigString(config, "sampler", "");
  if (name.empty()) {
    // Upstream passes n_samples_per_prompt alone to mean GRPO grouping.
    name = ConfigHas(config, "n_samples_per_prompt") ? "grpo_group_n" : "sequential";
  }
  if (name == "sequential") return static_cast<Sampler*>(&sequential);
  if (name == "grpo_group_n" || name == "grpo") return static_cast<Sampler*>(&group_n);
  if (name == "rank_aware") return static_cast<Sampler*>(&rank_aware);
  if (name == "seqlen_balanced") return static_cast<Sampler*>(&balanced);
  return Status::Invalid("unknown sampler '", name,
                         "' (known: sequential, grpo_group_n, rank_aware, seqlen_balanced)");
}

}  // namespace tq::internal

