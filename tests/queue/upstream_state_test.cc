// Upstream TransferQueue 0.1.11 behaviour of ControllerState, without
// sockets: per-sample status shapes, get_meta modes poll_all and
// force_fetch_all, the controller-wide polling_mode and default_sampling,
// and the codec of the per-sample status reply.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "common/test_util.h"
#include "queue/controller_state.h"
#include "queue/protocol.h"
#include "queue/field_info_util.h"

namespace tq::internal {
namespace {

class UpstreamStateTest : public ::testing::Test {
 protected:
  BatchMeta Alloc(const std::string& partition, size_t n) {
    auto r = state_.Allocate(partition, n);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return r.ok() ? *r : BatchMeta();
  }
  // Marks `fields` produced for the samples of `meta` at `positions` (all when empty).
  void Produce(const BatchMeta& meta, const std::vector<std::string>& fields, std::vector<size_t> positions = {}) {
    if (positions.empty()) {
      for (size_t i = 0; i < meta.size(); ++i) positions.push_back(i);
    }
    std::vector<SampleMeta> samples;
    for (size_t i : positions) {
      SampleMeta s = meta.samples()[i];
      s.fields.assign(fields.size(), Produced());
      samples.push_back(s);
    }
    ASSERT_OK(state_.MarkProduced(BatchMeta(fields, samples)));
  }
  GetMetaRequest Req(const std::string& task, int64_t batch, FetchMode mode, std::vector<std::string> fields = {"a"},
                     SamplingConfig sampling = {}, const std::string& partition = "p") {
    GetMetaRequest r;
    r.partition_id = partition;
    r.task_name = task;
    r.fields = std::move(fields);
    r.batch_size = batch;
    r.mode = mode;
    r.sampling = std::move(sampling);
    return r;
  }
  // A get_meta that is answered now (not parked).
  BatchMeta Get(const GetMetaRequest& req) {
    auto r = state_.TryGetMeta(req);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    if (!r.ok()) return BatchMeta();
    EXPECT_TRUE(r->has_value()) << "get_meta would wait";
    return r->has_value() ? **r : BatchMeta();
  }
  std::vector<uint8_t> Consumed(const std::string& task) {
    auto m = state_.ConsumptionMatrix("p", task);
    EXPECT_TRUE(m.has_value());
    return m ? m->status : std::vector<uint8_t>{};
  }

  ControllerState state_;
};

// ------------------------------------------------------------ status shapes

TEST_F(UpstreamStateTest, ProductionMatrixColumnsFollowRegistrationOrder) {
  BatchMeta m = Alloc("p", 3);
  Produce(m, {"x"});
  Produce(m, {"w"}, {0, 2});
  Produce(m, {"y"}, {1});
  auto st = state_.ProductionMatrix("p", {"y", "w"});
  ASSERT_TRUE(st.has_value());
  EXPECT_EQ(st->global_indexes, (std::vector<int64_t>{0, 1, 2}));
  EXPECT_EQ(st->columns, (std::vector<std::string>{"w", "y"})) << "registration order, not the requested order";
  EXPECT_EQ(st->status, (std::vector<uint8_t>{1, 0,  //
                                              0, 1,  //
                                              1, 0}));
}

TEST_F(UpstreamStateTest, ProductionMatrixIsNoneWhenUnknownEmptyOrNeverProduced) {
  EXPECT_FALSE(state_.ProductionMatrix("p", {"a"}).has_value()) << "unknown partition";
  BatchMeta m = Alloc("p", 2);
  EXPECT_FALSE(state_.ProductionMatrix("p", {"a"}).has_value()) << "field never produced";
  Produce(m, {"a"}, {0});
  EXPECT_FALSE(state_.ProductionMatrix("p", {}).has_value()) << "no fields";
  EXPECT_FALSE(state_.ProductionMatrix("p", {"a", "b"}).has_value()) << "any field never produced";
  auto st = state_.ProductionMatrix("p", {"a"});
  ASSERT_TRUE(st.has_value());
  EXPECT_EQ(st->status, (std::vector<uint8_t>{1, 0})) << "allocated but unproduced samples are rows too";
}

TEST_F(UpstreamStateTest, StatusRowsAreLiveSamplesInAscendingGlobalIndex) {
  // Partition p gets indexes 4-7, then 0-3 (reused from q): rows sorted.
  BatchMeta q = Alloc("q", 4);
  BatchMeta first = Alloc("p", 4);
  ASSERT_OK(state_.ReleaseSamples(state_.BeginClearPartition("q")));
  BatchMeta second = Alloc("p", 4);
  Produce(first, {"a"});
  auto st = state_.ProductionMatrix("p", {"a"});
  ASSERT_TRUE(st.has_value());
  EXPECT_EQ(st->global_indexes, (std::vector<int64_t>{0, 1, 2, 3, 4, 5, 6, 7}));
  EXPECT_EQ(st->status, (std::vector<uint8_t>{0, 0, 0, 0, 1, 1, 1, 1}));
  // Cleared samples leave the rows at once (phase 1 already hides them).
  state_.BeginClearSamples("p", {0, 5});
  st = state_.ProductionMatrix("p", {"a"});
  ASSERT_TRUE(st.has_value());
  EXPECT_EQ(st->global_indexes, (std::vector<int64_t>{1, 2, 3, 4, 6, 7}));
  auto cs = state_.ConsumptionMatrix("p", "t");
  ASSERT_TRUE(cs.has_value());
  EXPECT_EQ(cs->global_indexes, st->global_indexes);
}

TEST_F(UpstreamStateTest, ConsumptionMatrix) {
  EXPECT_FALSE(state_.ConsumptionMatrix("p", "t").has_value()) << "unknown partition";
  BatchMeta m = Alloc("p", 4);
  Produce(m, {"a"});
  auto st = state_.ConsumptionMatrix("p", "t");
  ASSERT_TRUE(st.has_value());
  EXPECT_EQ(st->global_indexes, (std::vector<int64_t>{0, 1, 2, 3}));
  EXPECT_EQ(st->status, (std::vector<uint8_t>{0, 0, 0, 0})) << "an unknown task gets zeros";
  EXPECT_EQ(st->columns, (std::vector<std::string>{"t"}));
  EXPECT_TRUE(state_.FindPartition("p")->tasks.count("u") == 0);
  (void)state_.ConsumptionMatrix("p", "u");
  EXPECT_TRUE(state_.FindPartition("p")->tasks.count("u") == 1) << "and from then on it exists";
  Get(Req("t", 2, FetchMode::kFetch));
  EXPECT_EQ(Consumed("t"), (std::vector<uint8_t>{1, 1, 0, 0}));
  EXPECT_EQ(Consumed("u"), (std::vector<uint8_t>{0, 0, 0, 0}));
  ASSERT_OK(state_.ResetConsumption("p", "t"));
  EXPECT_EQ(Consumed("t"), (std::vector<uint8_t>{0, 0, 0, 0}));
}

// ------------------------------------------------------------ poll_all

TEST_F(UpstreamStateTest, PollAllIsAllOrNothing) {
  BatchMeta m = Alloc("p", 4);
  Produce(m, {"a"}, {0, 1, 2});
  BatchMeta none = Get(Req("t", 4, FetchMode::kPollAll));
  EXPECT_TRUE(none.empty()) << "3 of 4 ready: nothing, at once";
  EXPECT_EQ(none.field_names(), (std::vector<std::string>{"a"}));
  EXPECT_EQ(Consumed("t"), (std::vector<uint8_t>{0, 0, 0, 0})) << "and nothing consumed";
  EXPECT_EQ(Get(Req("t", 3, FetchMode::kPollAll)).global_indexes(), (std::vector<int64_t>{0, 1, 2}));
  EXPECT_EQ(Consumed("t"), (std::vector<uint8_t>{1, 1, 1, 0}));
  EXPECT_TRUE(Get(Req("t", 1, FetchMode::kPollAll)).empty());
  EXPECT_TRUE(Get(Req("t", 1, FetchMode::kPollAll, {"a"}, {}, "nope")).empty()) << "unknown partition: empty";
  EXPECT_STATUS(state_.TryGetMeta(Req("", 1, FetchMode::kPollAll)), kInvalid, "task_name");
}

TEST_F(UpstreamStateTest, PollAllReturnsTheSamplersCachedSelection) {
  BatchMeta m = Alloc("p", 4);
  Produce(m, {"a"});
  SamplingConfig rank = {{"sampler", std::string("rank_aware")}, {"dp_rank", int64_t{0}},
                         {"batch_index", int64_t{0}}};
  auto first = Get(Req("t", 4, FetchMode::kPollAll, {"a"}, rank)).global_indexes();
  EXPECT_EQ(first, (std::vector<int64_t>{0, 1, 2, 3}));
  // Nothing is ready any more, but the (dp_rank, batch_index) is cached.
  EXPECT_EQ(Get(Req("t", 4, FetchMode::kPollAll, {"a"}, rank)).global_indexes(), first);
  rank["batch_index"] = int64_t{1};
  EXPECT_TRUE(Get(Req("t", 4, FetchMode::kPollAll, {"a"}, rank)).empty());
}

TEST_F(UpstreamStateTest, ACachedSelectionSurvivesTheCompactionOfItsPartition) {
  // Positions are renumbered when released records are compacted away; a
  // sampler's cached (dp_rank, batch_index) selection must still name the
  // same samples afterwards. The kept samples come after 1500 that are
  // released, so their positions change from 1500.. to 0...
  BatchMeta churn = Alloc("p", 1500);  // never produced: not selectable
  BatchMeta kept = Alloc("p", 4);
  Produce(kept, {"a"});
  SamplingConfig rank = {{"sampler", std::string("rank_aware")}, {"dp_rank", int64_t{0}},
                         {"batch_index", int64_t{0}}};
  auto first = Get(Req("t", 4, FetchMode::kPollAll, {"a"}, rank)).global_indexes();
  EXPECT_EQ(first, kept.global_indexes());
  ASSERT_EQ(state_.BeginClearSamples("p", churn.global_indexes()).size(), churn.size());
  ASSERT_OK(state_.ReleaseSamples(churn));
  EXPECT_EQ(state_.RecordCount("p"), 4u) << "the released records are compacted away";
  // The cached selection still names the kept samples, and the task's
  // consumption moved with them: nothing is served twice.
  EXPECT_EQ(Get(Req("t", 4, FetchMode::kPollAll, {"a"}, rank)).global_indexes(), first);
  EXPECT_TRUE(Get(Req("t", 4, FetchMode::kPollAll)).empty());
  BatchMeta later = Alloc("p", 2);
  Produce(later, {"a"});
  EXPECT_EQ(Get(Req("t", 4, FetchMode::kPoll)).global_indexes(), later.global_indexes());
}

TEST_F(UpstreamStateTest, PollingModeMakesFetchAnswerAtOnce) {
  BatchMeta m = Alloc("p", 2);
  Produce(m, {"a"});
  auto waits = state_.TryGetMeta(Req("t", 3, FetchMode::kFetch));
  ASSERT_OK(waits.status());
  EXPECT_FALSE(waits->has_value()) << "without polling_mode a fetch waits";
  state_.set_get_meta_defaults({true, {}});
  BatchMeta empty = Get(Req("t", 3, FetchMode::kFetch));
  EXPECT_TRUE(empty.empty());
  EXPECT_TRUE(Get(Req("t", 3, FetchMode::kFetch, {"a"}, {}, "nope")).empty()) << "unknown partition too";
  EXPECT_EQ(Get(Req("t", 2, FetchMode::kFetch)).size(), 2u);
  EXPECT_EQ(Get(Req("t", 2, FetchMode::kPoll)).size(), 0u) << "poll keeps its partial semantics";
}

TEST_F(UpstreamStateTest, DefaultSamplingAppliesWhenTheCallNamesNoSampler) {
  // Index 2 is not ready: GRPO (n = 2) takes runs [0, 1], [3, 4].
  BatchMeta m = Alloc("p", 6);
  Produce(m, {"a"}, {0, 1, 3, 4, 5});
  state_.set_get_meta_defaults({false, {{"sampler", std::string("grpo_group_n")}, {"n_samples_per_prompt", int64_t{2}}}});
  EXPECT_EQ(Get(Req("t", 4, FetchMode::kFetch)).global_indexes(), (std::vector<int64_t>{0, 1, 3, 4}));
  EXPECT_STATUS(state_.TryGetMeta(Req("u", 3, FetchMode::kFetch)), kInvalid, "not a multiple");
  // The call's keys lie over the defaults ...
  SamplingConfig n1 = {{"n_samples_per_prompt", int64_t{1}}};
  EXPECT_EQ(Get(Req("u", 3, FetchMode::kFetch, {"a"}, n1)).global_indexes(), (std::vector<int64_t>{0, 1, 3}));
  // (a None leaves the default) ...
  SamplingConfig none = {{"n_samples_per_prompt", MetaValue{}}};
  EXPECT_STATUS(state_.TryGetMeta(Req("w", 3, FetchMode::kFetch, {"a"}, none)), kInvalid, "not a multiple");
  // ... and a call that names its sampler ignores them.
  SamplingConfig seq = {{"sampler", std::string("sequential")}};
  EXPECT_EQ(Get(Req("v", 3, FetchMode::kFetch, {"a"}, seq)).global_indexes(), (std::vector<int64_t>{0, 1, 3}));
}

// ------------------------------------------------------------ force_fetch_all

TEST_F(UpstreamStateTest, ForceFetchAllReturnsEveryLiveSampleAndMarksNothing) {
  BatchMeta q = Alloc("q", 2);
  BatchMeta first = Alloc("p", 2);  // indexes 2, 3
  ASSERT_OK(state_.ReleaseSamples(state_.BeginClearPartition("q")));
  BatchMeta second = Alloc("p", 2);  // indexes 0, 1
  Produce(first, {"a"});
  Produce(second, {"b"}, {1});
  GetMetaRequest req = Req("", -1, FetchMode::kForceFetchAll, {"b", "a", "never", "a"});
  BatchMeta all = Get(req);
  EXPECT_EQ(all.global_indexes(), (std::vector<int64_t>{0, 1, 2, 3})) << "ascending global index";
  EXPECT_EQ(all.field_names(), (std::vector<std::string>{"b", "a"})) << "only registered fields";
  std::vector<std::vector<bool>> produced;
  for (const auto& s : all.samples()) produced.push_back({s.fields[0].produced, s.fields[1].produced});
  EXPECT_EQ(produced, (std::vector<std::vector<bool>>{{false, false}, {true, false}, {false, true}, {false, true}}));
  EXPECT_EQ(Consumed("t"), (std::vector<uint8_t>{0, 0, 0, 0}));
  EXPECT_EQ(Get(Req("t", 2, FetchMode::kPoll)).global_indexes(), (std::vector<int64_t>{2, 3}))
      << "nothing was consumed by the force fetch";
  EXPECT_STATUS(state_.TryGetMeta(Req("", 0, FetchMode::kForceFetchAll, {"a"}, {}, "nope")), kNotFound, "nope");
  BatchMeta bare = Get(Req("", 0, FetchMode::kForceFetchAll, {}));
  EXPECT_EQ(bare.size(), 4u) << "no fields asked: the samples alone";
  EXPECT_TRUE(bare.field_names().empty());
}

// ------------------------------------------------------------ codec

// ------------------------------------------------------------ pre-allocation

TEST_F(UpstreamStateTest, PreAllocatedIndexesAreRowsUntilAllocationsTakeThem) {
  state_.set_pre_alloc_samples(4);
  BatchMeta a = Alloc("p", 1);
  EXPECT_EQ(a.global_indexes(), std::vector<int64_t>{0});
  // Another partition reserves its own four after p's.
  EXPECT_EQ(Alloc("q", 1).global_indexes(), std::vector<int64_t>{4});
  Produce(a, {"a"});
  auto prod = state_.ProductionMatrix("p", {"a"});
  ASSERT_TRUE(prod.has_value());
  EXPECT_EQ(prod->global_indexes, (std::vector<int64_t>{0, 1, 2, 3}));
  EXPECT_EQ(prod->status, (std::vector<uint8_t>{1, 0, 0, 0}));
  EXPECT_EQ(Get(Req("t", 1, FetchMode::kFetch)).global_indexes(), std::vector<int64_t>{0});
  EXPECT_EQ(Consumed("t"), (std::vector<uint8_t>{1, 0, 0, 0}));
  // The next allocation takes the reserved 1..3 first, then fresh indexes.
  BatchMeta b = Alloc("p", 5);
  EXPECT_EQ(b.global_indexes(), (std::vector<int64_t>{1, 2, 3, 8, 9}));
  // The seed's summary counts samples only.
  ASSERT_OK_AND_ASSIGN(auto st, state_.GetConsumptionStatus("q", "t"));
  EXPECT_EQ(st.num_samples, 1u);
  // Clearing a partition frees its reservation at once.
  const size_t free_before = state_.free_index_count();
  (void)state_.BeginClearPartition("q");
  EXPECT_EQ(state_.free_index_count(), free_before + 3);
}

TEST_F(UpstreamStateTest, ZeroPreAllocationReservesNothing) {
  state_.set_pre_alloc_samples(0);
  EXPECT_EQ(Alloc("p", 2).global_indexes(), (std::vector<int64_t>{0, 1}));
  EXPECT_EQ(Alloc("q", 1).global_indexes(), std::vector<int64_t>{2});
  EXPECT_EQ(Consumed("t").size(), 2u);
}

TEST_F(UpstreamStateTest, ReservedIndexesSurviveASnapshot) {
  state_.set_pre_alloc_samples(3);
  Alloc("p", 1);
  ControllerState other;
  ASSERT_OK(other.Restore(state_.Snapshot()));
  auto m = other.ConsumptionMatrix("p", "t");
  ASSERT_TRUE(m.has_value());
  EXPECT_EQ(m->global_indexes, (std::vector<int64_t>{0, 1, 2}));
  ASSERT_OK_AND_ASSIGN(BatchMeta more, other.Allocate("p", 2));
  EXPECT_EQ(more.global_indexes(), (std::vector<int64_t>{1, 2}));
}

TEST(SampleStatusCodecTest, RoundTripAndHostileInput) {
  SampleStatusMatrix m;
  m.global_indexes = {3, 7};
  m.columns = {"a", "b"};
  m.status = {1, 0, 0, 1};
  std::string body = EncodeSampleStatus(m);
  auto h = msgpack::unpack(body.data(), body.size());
  ASSERT_OK_AND_ASSIGN(auto back, DecodeSampleStatus(h.get()));
  ASSERT_TRUE(back.has_value());
  EXPECT_EQ(back->global_indexes, m.global_indexes);
  EXPECT_EQ(back->columns, m.columns);
  EXPECT_EQ(back->status, m.status);

  std::string none = EncodeSampleStatus(std::nullopt);
  auto hn = msgpack::unpack(none.data(), none.size());
  ASSERT_OK_AND_ASSIGN(auto nothing, DecodeSampleStatus(hn.get()));
  EXPECT_FALSE(nothing.has_value());

  m.status.pop_back();  // 3 bytes for 2 x 2
  std::string bad = EncodeSampleStatus(m);
  auto hb = msgpack::unpack(bad.data(), bad.size());
  EXPECT_STATUS(DecodeSampleStatus(hb.get()), kInvalid, "3 status bytes for 2 samples x 2 columns");
}

TEST(GetMetaCodecTest, NewModesRoundTrip) {
  for (FetchMode mode : {FetchMode::kPollAll, FetchMode::kForceFetchAll}) {
    GetMetaRequest req;
    req.partition_id = "p";
    req.fields = {"a"};
    req.mode = mode;
    std::string body = EncodeGetMeta(req);
    auto h = msgpack::unpack(body.data(), body.size());
    ASSERT_OK_AND_ASSIGN(auto back, DecodeGetMeta(h.get()));
    EXPECT_EQ(back.mode, mode);
  }
  EXPECT_EQ(*ParseFetchMode("poll_all"), FetchMode::kPollAll);
  EXPECT_EQ(*ParseFetchMode("force_fetch_all"), FetchMode::kForceFetchAll);
  EXPECT_STREQ(FetchModeName(FetchMode::kForceFetchAll), "force_fetch_all");
  EXPECT_STATUS(ParseFetchMode("insert"), kInvalid, "poll_all");
}

TEST(SamplingJsonTest, ParsesScalarsAndRejectsTheRest) {
  ASSERT_OK_AND_ASSIGN(auto c, ParseSamplingConfigJson(
                                   R"({"sampler": "grpo_group_n", "n_samples_per_prompt": 4, "r": 0.5, "b": true})"));
  EXPECT_EQ(std::get<std::string>(c.at("sampler")), "grpo_group_n");
  EXPECT_EQ(std::get<int64_t>(c.at("n_samples_per_prompt")), 4);
  EXPECT_EQ(std::get<double>(c.at("r")), 0.5);
  EXPECT_EQ(std::get<int64_t>(c.at("b")), 1);
  ASSERT_OK_AND_ASSIGN(auto nulls, ParseSamplingConfigJson(R"({"dp_rank": null, "sampler": "rank_aware"})"));
  EXPECT_EQ(nulls.count("dp_rank"), 0u) << "null: absent";
  EXPECT_STATUS(ParseSamplingConfigJson("[1]"), kInvalid, "must be a JSON object");
  EXPECT_STATUS(ParseSamplingConfigJson("{"), kInvalid, "not valid JSON");
  EXPECT_STATUS(ParseSamplingConfigJson(R"({"x": [1]})"), kInvalid, "'x' must be an int");
}

}  // namespace
}  // namespace tq::internal
