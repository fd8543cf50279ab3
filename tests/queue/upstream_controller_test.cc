// Upstream TransferQueue 0.1.11 behaviour over real sockets: per-sample
// status calls, get_meta modes poll_all / force_fetch_all, and a controller
// started with polling_mode and default_sampling.
#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <vector>

#include "common/test_util.h"
#include "tq/client.h"
#include "tq/controller.h"

namespace tq {
namespace {

using namespace std::chrono_literals;

Batch Ints(const std::string& field, std::vector<int64_t> values) {
  Batch b(values.size());
  Shape shape = {static_cast<int64_t>(values.size())};
  EXPECT_OK(b.AddTensor(field, DType::kInt64, shape, Buffer::Copy(values.data(), values.size() * 8)));
  return b;
}

class UpstreamControllerTest : public ::testing::Test {
 protected:
  void Start(ControllerOptions o) {
    o.embedded_storage_units = 1;
    o.storage_unit_capacity_bytes = 64 << 20;
    auto c = TransferQueueController::Start(o);
    ASSERT_TRUE(c.ok()) << c.status().ToString();
    controller_ = c.MoveValue();
    client_ = NewClient("upstream");
    ASSERT_NE(client_, nullptr);
  }
  std::unique_ptr<TransferQueueClient> NewClient(const std::string& id) {
    auto c = std::make_unique<TransferQueueClient>(id, controller_->address());
    Status st = c->initialize_storage_manager("SimpleStorageManager");
    EXPECT_TRUE(st.ok()) << st.ToString();
    return st.ok() ? std::move(c) : nullptr;
  }

  std::unique_ptr<TransferQueueController> controller_;
  std::unique_ptr<TransferQueueClient> client_;
};

TEST_F(UpstreamControllerTest, PerSampleStatusNextToTheSummaries) {
  Start({});
  ASSERT_OK_AND_ASSIGN(BatchMeta m, client_->put(Ints("x", {1, 2, 3}), "p"));
  ASSERT_OK_AND_ASSIGN(BatchMeta sub, m.SelectSamples({0, 2}));
  ASSERT_OK(client_->put(Ints("w", {5, 6}), sub));

  ASSERT_OK_AND_ASSIGN(auto st, client_->production_status("p", {"w", "x"}));
  ASSERT_TRUE(st.has_value());
  EXPECT_EQ(st->global_indexes, m.global_indexes());
  EXPECT_EQ(st->columns, (std::vector<std::string>{"x", "w"}));
  EXPECT_EQ(st->status, (std::vector<uint8_t>{1, 1, 1, 0, 1, 1}));
  ASSERT_OK_AND_ASSIGN(auto none, client_->production_status("p", {"never"}));
  EXPECT_FALSE(none.has_value());
  ASSERT_OK_AND_ASSIGN(none, client_->production_status("unknown", {"x"}));
  EXPECT_FALSE(none.has_value());

  ASSERT_OK(client_->get_meta({"x", "w"}, 2, "p", "t", {}, FetchMode::kFetch, 10s));
  ASSERT_OK_AND_ASSIGN(auto cs, client_->consumption_status("p", "t"));
  ASSERT_TRUE(cs.has_value());
  EXPECT_EQ(cs->status, (std::vector<uint8_t>{1, 0, 1}));
  ASSERT_OK_AND_ASSIGN(auto fresh, client_->consumption_status("p", "other"));
  ASSERT_TRUE(fresh.has_value());
  EXPECT_EQ(fresh->status, (std::vector<uint8_t>{0, 0, 0}));
  ASSERT_OK_AND_ASSIGN(auto missing, client_->consumption_status("unknown", "t"));
  EXPECT_FALSE(missing.has_value());

  // The seed's summaries are unchanged.
  ASSERT_OK_AND_ASSIGN(ProductionStatus ps, client_->get_production_status("p"));
  EXPECT_EQ(ps.num_samples, 3u);
  EXPECT_EQ(ps.produced.at("w"), 2u);
  ASSERT_OK_AND_ASSIGN(ConsumptionStatus c, client_->get_consumption_status("p", "t"));
  EXPECT_EQ(c.consumed, 2u);
  EXPECT_STATUS(client_->get_production_status("unknown"), kNotFound, "unknown");
}

TEST_F(UpstreamControllerTest, PollAllAndForceFetchAllOverTheWire) {
  Start({});
  ASSERT_OK_AND_ASSIGN(BatchMeta m, client_->put(Ints("x", {1, 2, 3}), "p"));
  ASSERT_OK_AND_ASSIGN(BatchMeta none, client_->get_meta({"x"}, 4, "p", "t", {}, FetchMode::kPollAll));
  EXPECT_TRUE(none.empty());
  ASSERT_OK_AND_ASSIGN(BatchMeta three, client_->get_meta({"x"}, 3, "p", "t", {}, FetchMode::kPollAll));
  EXPECT_EQ(three.global_indexes(), m.global_indexes());

  ASSERT_OK_AND_ASSIGN(BatchMeta more, client_->put(Ints("y", {7, 8}), "p"));  // no "x"
  ASSERT_OK_AND_ASSIGN(BatchMeta all, client_->get_meta({"x", "z"}, 0, "p", "", {}, FetchMode::kForceFetchAll));
  EXPECT_EQ(all.size(), 5u);
  EXPECT_EQ(all.field_names(), (std::vector<std::string>{"x"}));
  EXPECT_TRUE(all.samples()[0].fields[0].produced);
  EXPECT_FALSE(all.samples()[4].fields[0].produced);
  EXPECT_STATUS(client_->get_meta({"x"}, 0, "nope", "", {}, FetchMode::kForceFetchAll), kNotFound, "nope");
}

TEST_F(UpstreamControllerTest, PollingModeFetchAnswersAtOnce) {
  ControllerOptions o;
  o.polling_mode = true;
  Start(o);
  ASSERT_OK(client_->put(Ints("x", {1, 2}), "p"));
  // Without polling_mode this fetch would wait its 30 s and fail with Timeout.
  ASSERT_OK_AND_ASSIGN(BatchMeta empty, client_->get_meta({"x"}, 3, "p", "t", {}, FetchMode::kFetch, 30s));
  EXPECT_TRUE(empty.empty());
  ASSERT_OK_AND_ASSIGN(BatchMeta two, client_->get_meta({"x"}, 2, "p", "t", {}, FetchMode::kFetch, 30s));
  EXPECT_EQ(two.size(), 2u);
}

TEST_F(UpstreamControllerTest, DefaultSamplingServesCallersThatPassOnlyRanks) {
  ControllerOptions o;
  o.default_sampling = {{"sampler", std::string("rank_aware")}};
  Start(o);
  ASSERT_OK(client_->put(Ints("x", {1, 2, 3, 4, 5, 6}), "p"));
  auto other = NewClient("rank1");
  ASSERT_NE(other, nullptr);
  SamplingConfig dp0 = {{"dp_rank", int64_t{0}}, {"batch_index", int64_t{0}}};
  SamplingConfig dp1 = {{"dp_rank", int64_t{1}}, {"batch_index", int64_t{0}}};
  ASSERT_OK_AND_ASSIGN(BatchMeta a, client_->get_meta({"x"}, 3, "p", "t", dp0, FetchMode::kFetch, 10s));
  ASSERT_OK_AND_ASSIGN(BatchMeta b, other->get_meta({"x"}, 3, "p", "t", dp0, FetchMode::kFetch, 10s));
  ASSERT_OK_AND_ASSIGN(BatchMeta c, other->get_meta({"x"}, 3, "p", "t", dp1, FetchMode::kFetch, 10s));
  EXPECT_EQ(a.global_indexes(), b.global_indexes()) << "same dp_rank and batch_index: same samples";
  EXPECT_EQ(a.size(), 3u);
  EXPECT_EQ(c.size(), 3u);
  std::vector<int64_t> taken = a.global_indexes();
  for (int64_t gi : c.global_indexes()) {
    EXPECT_EQ(std::count(taken.begin(), taken.end(), gi), 0) << "sample " << gi << " went to both dp ranks";
  }
  EXPECT_STATUS(client_->get_meta({"x"}, 3, "p", "t", {{"dp_rank", int64_t{0}}}, FetchMode::kPoll), kInvalid,
                "batch_index");
}

TEST_F(UpstreamControllerTest, AllocateThenPutIntoTheReservedSamples) {
  Start({});
  ASSERT_OK_AND_ASSIGN(BatchMeta reserved, client_->allocate("p", 3));
  ASSERT_EQ(reserved.size(), 3u);
  EXPECT_TRUE(reserved.field_names().empty());
  ASSERT_OK_AND_ASSIGN(BatchMeta all, client_->get_meta({"x"}, 0, "p", "", {}, FetchMode::kForceFetchAll));
  EXPECT_EQ(all.global_indexes(), reserved.global_indexes()) << "reserved samples are live, unproduced";
  ASSERT_OK_AND_ASSIGN(BatchMeta none, client_->get_meta({"x"}, 1, "p", "t", {}, FetchMode::kPollAll));
  EXPECT_TRUE(none.empty());
  ASSERT_OK(client_->put(Ints("x", {4, 5, 6}), reserved));
  ASSERT_OK_AND_ASSIGN(BatchMeta got, client_->get_meta({"x"}, 3, "p", "t", {}, FetchMode::kPollAll));
  EXPECT_EQ(got.global_indexes(), reserved.global_indexes());
  EXPECT_STATUS(client_->allocate("p", 0), kInvalid, "count");
  EXPECT_STATUS(client_->allocate("", 1), kInvalid, "partition_id");
}

TEST(UpstreamControllerOptionsTest, UnknownDefaultSamplerIsRejected) {
  ControllerOptions o;
  o.default_sampling = {{"sampler", std::string("random")}};
  auto c = TransferQueueController::Start(o);
  EXPECT_STATUS(c, kInvalid, "default_sampling");
  EXPECT_STATUS(c, kInvalid, "unknown sampler 'random'");
}

}  // namespace
}  // namespace tq
