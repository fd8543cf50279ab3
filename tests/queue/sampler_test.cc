// Samplers through ControllerState: GRPO groups (runs of consecutive global
// indexes, as upstream), rank-aware (group mode and upstream mode),
// seqlen-balanced, BalanceByLength, and config errors.
#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "common/test_util.h"
#include "queue/controller_state.h"
#include "queue/sampler.h"
#include "queue/field_info_util.h"

namespace tq::internal {
namespace {

class SamplerTest : public ::testing::Test {
 protected:
  // Allocates n samples; produces field "a" for those at the positions in
  // `produce` (all when empty), with custom total_lengths (upstream's
  // seqlen key) from `lengths`.
  BatchMeta Add(size_t n, std::vector<size_t> produce = {}, std::vector<int64_t> lengths = {}) {
    auto m = state_.Allocate("p", n);
    EXPECT_TRUE(m.ok());
    if (produce.empty()) {
      produce.resize(n);
      std::iota(produce.begin(), produce.end(), 0);
    }
    std::vector<SampleMeta> samples;
    for (size_t i : produce) {
      SampleMeta s = m->samples()[i];
      s.fields = {Produced()};
      if (!lengths.empty()) s.custom["total_lengths"] = lengths[i];
      samples.push_back(s);
    }
    EXPECT_OK(state_.MarkProduced(BatchMeta({"a"}, samples)));
    return *m;
  }
  Result<std::optional<BatchMeta>> Try(int64_t batch, SamplingConfig cfg, FetchMode mode = FetchMode::kFetch,
                                       const std::string& task = "t") {
    GetMetaRequest r;
    r.partition_id = "p";
    r.task_name = task;
    r.fields = {"a"};
    r.batch_size = batch;
    r.mode = mode;
    r.sampling = std::move(cfg);
    return state_.TryGetMeta(r);
  }
  std::vector<int64_t> Take(int64_t batch, SamplingConfig cfg, FetchMode mode = FetchMode::kFetch,
                            const std::string& task = "t") {
    auto r = Try(batch, std::move(cfg), mode, task);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    if (!r.ok() || !r->has_value()) {
      ADD_FAILURE() << "get_meta would wait";
      return {};
    }
    return (*r)->global_indexes();
  }
  bool Waits(int64_t batch, SamplingConfig cfg) {
    auto r = Try(batch, std::move(cfg));
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return r.ok() && !r->has_value();
  }

  ControllerState state_;
};

SamplingConfig Grpo(int64_t n) { return {{"sampler", std::string("grpo_group_n")}, {"n_samples_per_prompt", n}}; }

TEST_F(SamplerTest, SequentialIsTheDefault) {
  Add(5);
  EXPECT_EQ(Take(2, {}), (std::vector<int64_t>{0, 1}));
  EXPECT_EQ(Take(2, {{"sampler", std::string("sequential")}}), (std::vector<int64_t>{2, 3}));
}

TEST_F(SamplerTest, GrpoReturnsOnlyRunsOfConsecutiveGlobalIndexes) {
  // Index 6 is not ready: upstream's scan takes [0-3], breaks at 4,5,(6),
  // and takes the next run of 4 consecutive indexes, [7-10].
  Add(12, {0, 1, 2, 3, 4, 5, 7, 8, 9, 10, 11});
  auto got = Take(8, Grpo(4));
  EXPECT_EQ(got, (std::vector<int64_t>{0, 1, 2, 3, 7, 8, 9, 10})) << "runs of 4 consecutive indexes";
  EXPECT_TRUE(Waits(4, Grpo(4))) << "4, 5 and 11 hold no run of 4";
  // Poll may return fewer samples, but still whole groups only: none here.
  EXPECT_TRUE(Take(4, Grpo(4), FetchMode::kPoll).empty());
}

TEST_F(SamplerTest, GrpoCompletesAGroupLater) {
  BatchMeta m = Add(8, {0, 1, 2, 4, 5, 6, 7});
  EXPECT_EQ(Take(4, Grpo(4), FetchMode::kPoll), (std::vector<int64_t>{4, 5, 6, 7}));
  std::vector<SampleMeta> last = {m.samples()[3]};
  last[0].fields = {Produced()};
  ASSERT_OK(state_.MarkProduced(BatchMeta({"a"}, last)));
  EXPECT_EQ(Take(4, Grpo(4)), (std::vector<int64_t>{0, 1, 2, 3}));
}

TEST_F(SamplerTest, GrpoPollGivesWholeGroupsUpToBatch) {
  Add(10);  // groups of 3: [0-2] [3-5] [6-8], 9 alone
  auto got = Take(9, Grpo(3), FetchMode::kPoll);
  EXPECT_EQ(got.size(), 9u);
  EXPECT_TRUE(Take(3, Grpo(3), FetchMode::kPoll).empty()) << "sample 9 is not a whole group";
}

TEST_F(SamplerTest, NSamplesPerPromptAloneMeansGrpo) {
  Add(6, {0, 1, 3, 4, 5});
  EXPECT_EQ(Take(3, {{"n_samples_per_prompt", int64_t{3}}}), (std::vector<int64_t>{3, 4, 5}));
}

TEST_F(SamplerTest, GrpoBadConfigs) {
  Add(4);
  EXPECT_STATUS(Try(4, {{"sampler", std::string("grpo_group_n")}}), kInvalid, "n_samples_per_prompt");
  EXPECT_STATUS(Try(4, Grpo(0)), kInvalid, "must be positive");
  EXPECT_STATUS(Try(4, Grpo(-2)), kInvalid, "must be positive");
  EXPECT_STATUS(Try(5, Grpo(2)), kInvalid, "not a multiple");
  EXPECT_STATUS(Try(4, {{"sampler", std::string("grpo_group_n")}, {"n_samples_per_prompt", std::string("x")}}),
                kInvalid, "must be an integer");
}

SamplingConfig Rank(int64_t dp_rank, int64_t rank, int64_t ranks_per_group) {
  return {{"sampler", std::string("rank_aware")},
          {"dp_rank", dp_rank},
          {"rank", rank},
          {"ranks_per_group", ranks_per_group}};
}

TEST_F(SamplerTest, RankAwareSameSamplesWithinGroupDisjointAcrossGroups) {
  Add(48);
  const int kGroups = 3, kRanks = 2, kSteps = 2, kBatch = 4;
  std::set<int64_t> all;
  for (int step = 0; step < kSteps; ++step) {
    std::vector<std::vector<int64_t>> group_pick(kGroups);
    // Interleave callers so groups race each other.
    for (int r = 0; r < kRanks; ++r) {
      for (int g = 0; g < kGroups; ++g) {
        auto got = Take(kBatch, Rank(g, r, kRanks));
        ASSERT_EQ(got.size(), static_cast<size_t>(kBatch));
        if (r == 0) {
          group_pick[g] = got;
        } else {
          EXPECT_EQ(got, group_pick[g]) << "rank " << r << " of dp group " << g << " at step " << step;
        }
      }
    }
    for (int g = 0; g < kGroups; ++g) {
      for (int64_t gi : group_pick[g]) {
        EXPECT_TRUE(all.insert(gi).second) << "sample " << gi << " went to two dp groups or steps";
      }
    }
  }
  EXPECT_EQ(all.size(), static_cast<size_t>(kGroups * kSteps * kBatch));
}

TEST_F(SamplerTest, RankAwareExplicitBatchIndex) {
  Add(8);
  auto cfg = [](int64_t rank, int64_t step) {
    SamplingConfig c = Rank(0, rank, 2);
    c["batch_index"] = step;
    return c;
  };
  auto s0r0 = Take(2, cfg(0, 0));
  auto s1r1 = Take(2, cfg(1, 1));  // rank 1 runs ahead to step 1
  auto s0r1 = Take(2, cfg(1, 0));
  auto s1r0 = Take(2, cfg(0, 1));
  EXPECT_EQ(s0r0, s0r1);
  EXPECT_EQ(s1r0, s1r1);
  EXPECT_NE(s0r0, s1r0);
}

TEST_F(SamplerTest, RankAwareWithGroups) {
  Add(8, {0, 1, 3, 4, 5, 6, 7});
  SamplingConfig c = Rank(0, 0, 1);
  c["n_samples_per_prompt"] = int64_t{2};
  // Index 2 is not ready: runs of 2 consecutive indexes are [0, 1], [3, 4].
  EXPECT_EQ(Take(4, c), (std::vector<int64_t>{0, 1, 3, 4}));
}

TEST_F(SamplerTest, RankAwareBadConfigs) {
  Add(4);
  EXPECT_STATUS(Try(2, {{"sampler", std::string("rank_aware")}}), kInvalid, "dp_rank");
  EXPECT_STATUS(Try(2, Rank(0, 2, 2)), kInvalid, "rank < ranks_per_group");
  EXPECT_STATUS(Try(2, Rank(0, -1, 2)), kInvalid, "rank");
  EXPECT_STATUS(Try(2, Rank(0, 0, 0)), kInvalid, "ranks_per_group");
}

SamplingConfig Balanced(int64_t dp_size, int64_t dp_rank) {
  return {{"sampler", std::string("seqlen_balanced")}, {"dp_size", dp_size}, {"dp_rank", dp_rank}};
}

int64_t Spread(const std::vector<int64_t>& sums) {
  return *std::max_element(sums.begin(), sums.end()) - *std::min_element(sums.begin(), sums.end());
}

TEST_F(SamplerTest, SeqlenBalancedGivesEachRankBatchSizeWithBalancedSums) {
  const int64_t kDp = 4, kBatch = 8, kN = kDp * kBatch;
  std::mt19937 rng(3);
  std::vector<int64_t> lengths(kN);
  for (auto& l : lengths) l = 16 + static_cast<int64_t>(rng() % 4000);
  // Sorted input is the worst case for a contiguous split.
  std::sort(lengths.begin(), lengths.end());
  Add(kN, {}, lengths);

  std::set<int64_t> union_set;
  std::vector<int64_t> sums(kDp, 0);
  for (int64_t r = kDp - 1; r >= 0; --r) {  // any rank may come first
    auto got = Take(kBatch, Balanced(kDp, r));
    ASSERT_EQ(got.size(), static_cast<size_t>(kBatch)) << "rank " << r;
    for (int64_t gi : got) {
      EXPECT_TRUE(union_set.insert(gi).second) << "sample " << gi << " given to two ranks";
      sums[r] += lengths[gi];
    }
  }
  EXPECT_EQ(union_set.size(), static_cast<size_t>(kN));
  // Naive split: contiguous chunks of batch_size.
  std::vector<int64_t> naive(kDp, 0);
  for (int64_t i = 0; i < kN; ++i) naive[i / kBatch] += lengths[i];
  EXPECT_LT(Spread(sums), Spread(naive) / 4) << "balanced spread " << Spread(sums) << " vs naive " << Spread(naive);
  EXPECT_LE(Spread(sums), *std::max_element(lengths.begin(), lengths.end()));
}

TEST_F(SamplerTest, SeqlenBalancedWaitsForAllRanksWorth) {
  Add(6, {}, {1, 2, 3, 4, 5, 6});
  EXPECT_TRUE(Waits(4, Balanced(2, 0))) << "needs 2 x 4 samples";
}

TEST_F(SamplerTest, SeqlenBalancedBadConfigs) {
  BatchMeta m = Add(4, {}, {1, 2, 3, 4});
  EXPECT_STATUS(Try(2, Balanced(2, 2)), kInvalid, "dp_rank=2 dp_size=2");
  EXPECT_STATUS(Try(2, Balanced(0, 0)), kInvalid, "dp_size");
  EXPECT_STATUS(Try(2, Balanced(2, -1)), kInvalid, "dp_rank=-1");
  SamplingConfig grouped = Balanced(2, 0);
  grouped["n_samples_per_prompt"] = int64_t{3};
  EXPECT_STATUS(Try(2, grouped), kInvalid, "not a multiple of n_samples_per_prompt 3");
  std::vector<SampleMeta> texts = {m.samples()[0]};
  texts[0].custom = {{"total_lengths", std::string("long")}};
  ASSERT_OK(state_.SetCustomMeta(BatchMeta({}, texts)));
  EXPECT_STATUS(Try(2, Balanced(2, 0)), kInvalid, "must be a number");
}

TEST_F(SamplerTest, SeqlenBalancedDefaultsAndWeightOneWithoutLengths) {
  // No lengths at all: every sample weighs 1 (upstream); dp_size defaults to
  // 1, dp_rank and batch_index to 0.
  Add(8);
  auto r0 = Take(2, Balanced(2, 0));
  EXPECT_EQ(r0.size(), 2u);
  EXPECT_EQ(Take(4, {{"sampler", std::string("seqlen_balanced")}}), r0)
      << "no dp_size, dp_rank, batch_index: batch_index 0 of rank 0, cached";
  SamplingConfig other_key = Balanced(2, 1);
  other_key["length_key"] = std::string("num_tokens");  // absent: weight 1
  other_key["batch_index"] = int64_t{1};
  auto next = Take(2, other_key);
  EXPECT_EQ(next.size(), 2u);
  for (int64_t gi : next) EXPECT_GE(gi, 4) << "batch_index 1 selects from what batch 0 left";
}

// ------------------------------------------------ upstream semantics

// Gives partition "p" samples whose global indexes are NOT in allocation
// order: indexes 4-7 first, then (reused from partition "q") 0-3.
void AllocateOutOfOrder(ControllerState& state) {
  auto q = state.Allocate("q", 4);
  ASSERT_OK(q.status());
  auto first = state.Allocate("p", 4);
  ASSERT_OK(first.status());
  BatchMeta gone = state.BeginClearPartition("q");
  ASSERT_OK(state.ReleaseSamples(gone));
  auto second = state.Allocate("p", 4);
  ASSERT_OK(second.status());
  ASSERT_EQ(second->global_indexes(), (std::vector<int64_t>{0, 1, 2, 3}));
  std::vector<SampleMeta> all = first->samples();
  all.insert(all.end(), second->samples().begin(), second->samples().end());
  for (auto& s : all) s.fields = {Produced()};
  ASSERT_OK(state.MarkProduced(BatchMeta({"a"}, all)));
}

TEST_F(SamplerTest, GrpoScansInGlobalIndexOrderNotAllocationOrder) {
  AllocateOutOfOrder(state_);
  EXPECT_EQ(Take(4, Grpo(4)), (std::vector<int64_t>{0, 1, 2, 3}))
      << "upstream sorts the ready indexes before looking for runs";
  EXPECT_EQ(Take(4, Grpo(4)), (std::vector<int64_t>{4, 5, 6, 7}));
}

TEST_F(SamplerTest, GrpoRunsMaySpanPromptBoundaries) {
  // Upstream does not align groups to multiples of n: [1, 2] is a run.
  Add(6, {1, 2, 4, 5});
  EXPECT_EQ(Take(4, Grpo(2)), (std::vector<int64_t>{1, 2, 4, 5}));
}

TEST_F(SamplerTest, GrpoWithDpRankIsCachedPerBatchIndex) {
  Add(8);
  SamplingConfig c = Grpo(2);
  c["dp_rank"] = int64_t{0};
  c["batch_index"] = int64_t{0};
  auto first = Take(4, c);
  EXPECT_EQ(first, (std::vector<int64_t>{0, 1, 2, 3}));
  EXPECT_EQ(Take(4, c), first) << "same (dp_rank, batch_index): the cached selection";
  c["batch_index"] = int64_t{1};
  EXPECT_EQ(Take(4, c), (std::vector<int64_t>{4, 5, 6, 7}));
}

SamplingConfig Upstream(int64_t dp_rank, int64_t batch_index) {
  return {{"sampler", std::string("rank_aware")}, {"dp_rank", dp_rank}, {"batch_index", batch_index}};
}

TEST_F(SamplerTest, RankAwareUpstreamCachesPerDpRankAndBatchIndex) {
  BatchMeta m = Add(6, {0, 1, 2, 3, 4});
  auto a = Take(2, Upstream(0, 0));
  EXPECT_EQ(a, (std::vector<int64_t>{0, 1}));
  EXPECT_EQ(Take(2, Upstream(0, 0)), a) << "a second rank of dp group 0 gets the same samples";
  EXPECT_EQ(Take(2, Upstream(1, 0)), (std::vector<int64_t>{2, 3})) << "another dp group gets others";
  EXPECT_EQ(Take(2, Upstream(0, 1), FetchMode::kPoll), (std::vector<int64_t>{4})) << "poll: what is ready";
  // Too few for a fetch: nothing, and nothing cached for (0, 2).
  EXPECT_TRUE(Waits(2, Upstream(0, 2)));
  std::vector<SampleMeta> last = {m.samples()[5]};
  last[0].fields = {Produced()};
  ASSERT_OK(state_.MarkProduced(BatchMeta({"a"}, last)));
  EXPECT_EQ(Take(1, Upstream(0, 2)), (std::vector<int64_t>{5}));
  // Nothing is ready now, yet the cached keys still answer.
  EXPECT_EQ(Take(2, Upstream(1, 0)), (std::vector<int64_t>{2, 3}));
}

TEST_F(SamplerTest, RankAwareUpstreamCacheOutlivesResetButNotAClear) {
  Add(4);
  auto a = Take(2, Upstream(0, 0));
  ASSERT_OK(state_.ResetConsumption("p", ""));
  EXPECT_EQ(Take(2, Upstream(0, 0)), a) << "upstream keeps its sampler cache across reset_consumption";
  BatchMeta gone = state_.BeginClearPartition("p");
  // New samples arrive before the clear finishes: the partition lives on,
  // but its sampler cache went with the clear.
  Add(4);
  ASSERT_OK(state_.ReleaseSamples(gone));
  auto fresh = Take(2, Upstream(0, 0));
  EXPECT_EQ(fresh.size(), 2u);
  std::set<int64_t> now;
  for (int64_t gi : Take(0, {}, FetchMode::kForceFetch)) now.insert(gi);
  for (int64_t gi : fresh) EXPECT_TRUE(now.count(gi)) << "sample " << gi << " is from before the clear";
}

TEST_F(SamplerTest, RankAwareUpstreamBadConfigs) {
  Add(4);
  EXPECT_STATUS(Try(2, {{"sampler", std::string("rank_aware")}, {"dp_rank", int64_t{0}}}), kInvalid,
                "batch_index");
  EXPECT_STATUS(Try(2, {{"sampler", std::string("rank_aware")}, {"batch_index", int64_t{0}}}), kInvalid,
                "dp_rank");
  EXPECT_STATUS(Try(2, Upstream(-1, 0)), kInvalid, "dp_rank must be >= 0");
}

TEST_F(SamplerTest, SeqlenBalancedSplitsWholeGroupsAndCachesEveryRank) {
  // 4 groups of 2 (n_samples_per_prompt): group sums 2, 4, 100, 102.
  Add(8, {}, {1, 1, 2, 2, 50, 50, 51, 51});
  auto cfg = [](int64_t rank, int64_t batch_index) {
    SamplingConfig c = Balanced(2, rank);
    c["n_samples_per_prompt"] = int64_t{2};
    c["batch_index"] = batch_index;
    return c;
  };
  auto r1 = Take(4, cfg(1, 0));  // any rank may come first
  auto r0 = Take(4, cfg(0, 0));
  ASSERT_EQ(r0.size(), 4u);
  ASSERT_EQ(r1.size(), 4u);
  auto sum = [](const std::vector<int64_t>& v) {
    const int64_t len[] = {1, 1, 2, 2, 50, 50, 51, 51};
    int64_t t = 0;
    for (int64_t gi : v) t += len[gi];
    return t;
  };
  EXPECT_EQ(sum(r0), 104);
  EXPECT_EQ(sum(r1), 104) << "balanced: one small and one large group each";
  for (const auto& share : {r0, r1}) {
    for (size_t i = 0; i < share.size(); i += 2) {
      EXPECT_EQ(share[i] % 2, 0);
      EXPECT_EQ(share[i + 1], share[i] + 1) << "groups stay whole";
    }
    EXPECT_TRUE(std::is_sorted(share.begin(), share.end()));
  }
  EXPECT_EQ(Take(4, cfg(0, 0)), r0) << "cached until the partition is cleared";
  EXPECT_TRUE(Waits(4, cfg(0, 1))) << "batch_index 1 needs 8 more samples";
}

TEST_F(SamplerTest, SeqlenBalancedSplitsSamplesWhenGroupsDoNotDivide) {
  Add(6, {}, {10, 1, 1, 10, 1, 1});
  SamplingConfig c = Balanced(2, 0);
  c["n_samples_per_prompt"] = int64_t{2};  // 3 groups over 2 ranks
  auto r0 = Take(3, c);
  c["dp_rank"] = int64_t{1};
  auto r1 = Take(3, c);
  EXPECT_EQ(r0.size(), 3u);
  EXPECT_EQ(r1.size(), 3u);
  std::set<int64_t> all(r0.begin(), r0.end());
  all.insert(r1.begin(), r1.end());
  EXPECT_EQ(all.size(), 6u);
}

TEST_F(SamplerTest, UnknownSamplerNamesTheKnownOnes) {
  Add(1);
  auto r = Try(1, {{"sampler", std::string("random")}});
  EXPECT_STATUS(r, kInvalid, "unknown sampler 'random'");
  EXPECT_STATUS(r, kInvalid, "seqlen_balanced");
}

// ------------------------------------------------------- BalanceByLength

TEST(BalanceByLengthTest, EqualCountsAndNearEqualSums) {
  std::mt19937 rng(11);
  for (int trial = 0; trial < 50; ++trial) {
    size_t bins = 1 + rng() % 8;
    size_t n = bins * (1 + rng() % 16) + rng() % bins;  // not always divisible
    std::vector<int64_t> lengths(n);
    for (auto& l : lengths) l = 1 + static_cast<int64_t>(rng() % 1000);
    auto out = BalanceByLength(lengths, bins);
    ASSERT_EQ(out.size(), bins);
    std::vector<int> seen(n, 0);
    std::vector<int64_t> sums(bins, 0);
    size_t min_count = n, max_count = 0;
    for (size_t b = 0; b < bins; ++b) {
      min_count = std::min(min_count, out[b].size());
      max_count = std::max(max_count, out[b].size());
      for (size_t i : out[b]) {
        ASSERT_LT(i, n);
        ++seen[i];
        sums[b] += lengths[i];
      }
    }
    for (size_t i = 0; i < n; ++i) ASSERT_EQ(seen[i], 1) << "item " << i;
    EXPECT_LE(max_count - min_count, 1u) << "n=" << n << " bins=" << bins;
    std::vector<int64_t> sorted = lengths;
    std::sort(sorted.begin(), sorted.end());
    std::vector<int64_t> naive(bins, 0);
    size_t pos = 0;
    for (size_t b = 0; b < bins; ++b) {
      size_t cnt = n / bins + (b < n % bins ? 1 : 0);
      for (size_t k = 0; k < cnt; ++k) naive[b] += sorted[pos++];
    }
    EXPECT_LE(Spread(sums), std::max<int64_t>(Spread(naive), 1000)) << "n=" << n << " bins=" << bins;
    EXPECT_LE(Spread(sums), 1000 * 2) << "n=" << n << " bins=" << bins;
  }
}

TEST(TakeIndexRunsTest, MatchesUpstreamScan) {
  // Upstream's docstring example: n = 3, ready [0, 1, 3, 4, 5, 6, 7, 9, 10, 11].
  Partition p;
  std::vector<size_t> ready;
  for (int64_t gi : {0, 1, 3, 4, 5, 6, 7, 9, 10, 11}) {
    SampleRecord r;
    r.global_index = gi;
    ready.push_back(p.samples.size());
    p.samples.push_back(r);
  }
  auto idx = [&](const std::optional<std::vector<size_t>>& sel) {
    std::vector<int64_t> out;
    for (size_t pos : *sel) out.push_back(p.samples[pos].global_index);
    return out;
  };
  auto two = TakeIndexRuns(p, ready, 6, 3, false);
  ASSERT_TRUE(two.has_value());
  EXPECT_EQ(idx(two), (std::vector<int64_t>{3, 4, 5, 9, 10, 11}));
  EXPECT_FALSE(TakeIndexRuns(p, ready, 9, 3, false).has_value()) << "only 2 runs of 3";
  EXPECT_EQ(idx(TakeIndexRuns(p, ready, 9, 3, true)).size(), 6u);
  EXPECT_EQ(idx(TakeIndexRuns(p, ready, 4, 2, false)), (std::vector<int64_t>{0, 1, 3, 4}));
}

TEST(BalanceByLengthTest, EdgeCases) {
  EXPECT_TRUE(BalanceByLength({1, 2}, 0).empty());
  auto empty = BalanceByLength({}, 3);
  ASSERT_EQ(empty.size(), 3u);
  for (const auto& b : empty) EXPECT_TRUE(b.empty());
  auto one = BalanceByLength({5, 5, 5, 5}, 1);
  EXPECT_EQ(one[0].size(), 4u);
}

TEST(SamplerConfigTest, ConfigIntAndString) {
  SamplingConfig c = {{"i", int64_t{3}}, {"d", 4.0}, {"s", std::string("x")}};
  EXPECT_EQ(*ConfigInt(c, "i"), 3);
  EXPECT_EQ(*ConfigInt(c, "d"), 4);
  EXPECT_EQ(*ConfigInt(c, "missing", 9), 9);
  EXPECT_STATUS(ConfigInt(c, "missing"), kInvalid, "needs 'missing'");
  EXPECT_STATUS(ConfigInt(c, "s"), kInvalid, "'s' must be an integer");
  SamplingConfig odd = {{"b", true}, {"nil", MetaValue{}}};
  EXPECT_EQ(*ConfigInt(odd, "b"), 1);
  EXPECT_EQ(*ConfigInt(odd, "nil", 7), 7) << "None reads as absent";
  EXPECT_STATUS(ConfigInt(odd, "nil"), kInvalid, "needs 'nil'");
  EXPECT_EQ(ConfigString(c, "s", "f"), "x");
  EXPECT_EQ(ConfigString(c, "i", "f"), "f");
}

}  // namespace
}  // namespace tq::internal
