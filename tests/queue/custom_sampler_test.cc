// The CustomSampler hook through ControllerState: what the embedding
// program's sampler is given (ready global indexes, batch_size, the call's
// config, custom meta), that only its `consumed` list is marked, that its
// answers are checked, and that a partition clear reaches its cache.
#include <gtest/gtest.h>

#include <functional>
#include <numeric>
#include <string>
#include <vector>

#include "common/test_util.h"
#include "queue/controller_state.h"
#include "queue/sampler.h"
#include "tq/controller.h"
#include "queue/field_info_util.h"

namespace tq::internal {
namespace {

// A scripted sampler: returns `answer(call)` and records each call.
class FakeSampler : public CustomSampler {
 public:
  std::function<Result<Choice>(const Call&)> answer;
  std::vector<std::vector<int64_t>> ready_seen;
  std::vector<SamplingConfig> configs_seen;
  std::vector<std::string> cleared;

  Result<Choice> Sample(const Call& call) override {
    ready_seen.push_back(call.ready);
    configs_seen.push_back(*call.config);
    return answer(call);
  }
  void ClearCache(const std::string& partition_id) override { cleared.push_back(partition_id); }
};

class CustomSamplerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    sampler_ = std::make_shared<FakeSampler>();
    state_.set_custom_sampler(MakeCustomSamplerAdapter(sampler_));
  }
  // Allocates n samples of partition "p" and produces field "a" of those in
  // `produce` (all when empty).
  void Add(size_t n, std::vector<size_t> produce = {}) {
    auto m = state_.Allocate("p", n);
    ASSERT_TRUE(m.ok());
    if (produce.empty()) {
      produce.resize(n);
      std::iota(produce.begin(), produce.end(), 0);
    }
    std::vector<SampleMeta> samples;
    for (size_t i : produce) {
      SampleMeta s = m->samples()[i];
      s.fields = {Produced()};
      s.custom["rank"] = static_cast<int64_t>(i);
      samples.push_back(s);
    }
    ASSERT_OK(state_.MarkProduced(BatchMeta({"a"}, samples)));
  }
  Result<std::optional<BatchMeta>> Try(int64_t batch, SamplingConfig cfg = {},
                                       FetchMode mode = FetchMode::kFetch) {
    GetMetaRequest r;
    r.partition_id = "p";
    r.task_name = "t";
    r.fields = {"a"};
    r.batch_size = batch;
    r.mode = mode;
    r.sampling = std::move(cfg);
    return state_.TryGetMeta(r);
  }
  std::vector<int64_t> Consumed() {
    auto m = state_.ConsumptionMatrix("p", "t");
    std::vector<int64_t> out;
    for (size_t i = 0; i < m->global_indexes.size(); ++i) {
      if (m->status[i]) out.push_back(m->global_indexes[i]);
    }
    return out;
  }

  std::shared_ptr<FakeSampler> sampler_;
  ControllerState state_;
};

using Choice = CustomSampler::Choice;

TEST_F(CustomSamplerTest, GetsReadyIndexesAndConfigAndMarksOnlyConsumed) {
  Add(5, {0, 1, 3, 4});
  sampler_->answer = [](const CustomSampler::Call& c) {
    return Result<Choice>(Choice{{c.ready[2], c.ready[0]}, {c.ready[2]}});
  };
  SamplingConfig cfg{{"weights", MetaPickled{"\x80"}}, {"sampler", std::string("mine")}};
  ASSERT_OK_AND_ASSIGN(auto got, Try(2, cfg));
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ(got->global_indexes(), (std::vector<int64_t>{3, 0}));
  EXPECT_EQ(sampler_->ready_seen.back(), (std::vector<int64_t>{0, 1, 3, 4}));
  EXPECT_EQ(sampler_->configs_seen.back().count("weights"), 1u) << "the call's config, every key";
  EXPECT_EQ(Consumed(), (std::vector<int64_t>{3}));
}

TEST_F(CustomSamplerTest, WithReplacementConsumesNothing) {
  Add(3);
  sampler_->answer = [](const CustomSampler::Call& c) { return Result<Choice>(Choice{{c.ready[0]}, {}}); };
  for (int i = 0; i < 2; ++i) {
    ASSERT_OK_AND_ASSIGN(auto got, Try(1));
    EXPECT_EQ(got->global_indexes(), (std::vector<int64_t>{0}));
  }
  EXPECT_TRUE(Consumed().empty());
}

TEST_F(CustomSamplerTest, FetchWaitsWithoutCallingTheSamplerWhenTooFewAreReady) {
  Add(2);
  sampler_->answer = [](const CustomSampler::Call&) {
    return Result<Choice>(Status::Internal("not called"));
  };
  ASSERT_OK_AND_ASSIGN(auto got, Try(3));
  EXPECT_FALSE(got.has_value()) << "fetch waits";
  EXPECT_TRUE(sampler_->ready_seen.empty());
  // Poll asks for what is there: batch_size is lowered to the ready count.
  sampler_->answer = [](const CustomSampler::Call& c) {
    EXPECT_EQ(c.batch_size, 2u);
    return Result<Choice>(Choice{c.ready, c.ready});
  };
  ASSERT_OK_AND_ASSIGN(got, Try(3, {}, FetchMode::kPoll));
  EXPECT_EQ(got->global_indexes(), (std::vector<int64_t>{0, 1}));
}

TEST_F(CustomSamplerTest, CustomMetaIsReadableDuringTheCall) {
  Add(3);
  sampler_->answer = [](const CustomSampler::Call& c) {
    auto meta = c.custom_meta({2, 0, 99});
    EXPECT_EQ(meta.size(), 2u) << "99 is not in the partition";
    EXPECT_EQ(meta.at(2).at("rank"), MetaValue(int64_t{2}));
    return Result<Choice>(Choice{{2}, {2}});
  };
  ASSERT_OK_AND_ASSIGN(auto got, Try(1));
  EXPECT_EQ(got->global_indexes(), (std::vector<int64_t>{2}));
}

TEST_F(CustomSamplerTest, ErrorsAndBadAnswersFailTheCall) {
  Add(2);
  sampler_->answer = [](const CustomSampler::Call&) {
    return Result<Choice>(Status::Invalid("sampler X raised"));
  };
  ASSERT_STATUS(Try(1), kInvalid, "sampler X raised");
  sampler_->answer = [](const CustomSampler::Call&) { return Result<Choice>(Choice{{42}, {}}); };
  ASSERT_STATUS(Try(1), kInvalid, "42 is not a live sample");
  sampler_->answer = [](const CustomSampler::Call&) { return Result<Choice>(Choice{{0}, {42}}); };
  ASSERT_STATUS(Try(1), kInvalid, "consumed index 42");
  sampler_->answer = [](const CustomSampler::Call&) { return Result<Choice>(Choice{}); };
  ASSERT_STATUS(Try(1), kInvalid, "no samples");
  EXPECT_TRUE(Consumed().empty()) << "a refused answer consumes nothing";
}

TEST_F(CustomSamplerTest, ClearingThePartitionClearsTheSamplersCache) {
  Add(1);
  (void)state_.BeginClearPartition("p");
  (void)state_.BeginClearPartition("unknown");
  EXPECT_EQ(sampler_->cleared, (std::vector<std::string>{"p"}));
}

TEST(CustomSamplerOptions, ExcludesDefaultSampling) {
  ControllerOptions o;
  o.custom_sampler = std::make_shared<FakeSampler>();
  EXPECT_OK(o.Validate());
  o.default_sampling = {{"sampler", std::string("sequential")}};
  EXPECT_STATUS(o.Validate(), kInvalid, "exclusive");
}

}  // namespace
}  // namespace tq::internal
