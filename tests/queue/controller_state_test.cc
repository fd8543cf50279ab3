// ControllerState without sockets: allocation, production, per-task
// consumption, fetch modes, two-phase clear, custom meta.
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "common/test_util.h"
#include "queue/controller_state.h"
#include "queue/field_info_util.h"

namespace tq::internal {
namespace {

class ControllerStateTest : public ::testing::Test {
 protected:
  // Allocates n samples in `partition`.
  BatchMeta Alloc(const std::string& partition, size_t n) {
    auto r = state_.Allocate(partition, n);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return r.ok() ? *r : BatchMeta();
  }
  // Marks `fields` of the allocated samples produced.
  void Produce(const BatchMeta& allocated, const std::vector<std::string>& fields,
               const CustomMeta& custom = {}) {
    std::vector<SampleMeta> samples = allocated.samples();
    for (auto& s : samples) {
      s.fields.assign(fields.size(), I64Field(2));
      s.custom = custom;
    }
    ASSERT_OK(state_.MarkProduced(BatchMeta(fields, samples)));
  }
  BatchMeta AllocProduce(const std::string& partition, size_t n, const std::vector<std::string>& fields = {"a"}) {
    BatchMeta m = Alloc(partition, n);
    Produce(m, fields);
    return m;
  }
  GetMetaRequest Req(const std::string& partition, const std::string& task, int64_t batch,
                     FetchMode mode = FetchMode::kFetch, std::vector<std::string> fields = {"a"},
                     SamplingConfig sampling = {}) {
    GetMetaRequest r;
    r.partition_id = partition;
    r.task_name = task;
    r.fields = std::move(fields);
    r.batch_size = batch;
    r.mode = mode;
    r.sampling = std::move(sampling);
    return r;
  }
  // A get_meta that must be answered now.
  BatchMeta Get(const GetMetaRequest& req) {
    auto r = state_.TryGetMeta(req);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    if (!r.ok()) return BatchMeta();
    EXPECT_TRUE(r->has_value()) << "get_meta would wait";
    return r->has_value() ? **r : BatchMeta();
  }
  // True when a fetch would wait.
  bool Waits(const GetMetaRequest& req) {
    auto r = state_.TryGetMeta(req);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return r.ok() && !r->has_value();
  }

  ControllerState state_;
};

TEST(RecordTagsTest, CopiesAreDeepAndEmptyTagsHoldNothing) {
  RecordTags none;
  EXPECT_TRUE(none.empty());
  EXPECT_TRUE(none.get().empty());
  RecordTags a;
  a = CustomMeta{{"seq_len", int64_t{7}}};
  RecordTags b = a;  // a copy of its own
  b.mutable_get()["seq_len"] = int64_t{8};
  EXPECT_EQ(std::get<int64_t>(a.get().at("seq_len")), 7);
  EXPECT_EQ(std::get<int64_t>(b.get().at("seq_len")), 8);
  a = b;
  EXPECT_EQ(a.get(), b.get());
  const RecordTags& same = a;
  a = same;  // assigned to itself: the tags stay
  EXPECT_EQ(std::get<int64_t>(a.get().at("seq_len")), 8);
  RecordTags moved = std::move(b);
  EXPECT_EQ(std::get<int64_t>(moved.get().at("seq_len")), 8);
  a = CustomMeta{};  // assigning no tags frees them
  EXPECT_TRUE(a.empty());
  moved.clear();
  EXPECT_TRUE(moved.empty());
  EXPECT_TRUE(moved.get().empty());
}

TEST_F(ControllerStateTest, AllocateGivesFreshIndexesAndUniqueGenerations) {
  BatchMeta a = Alloc("p", 3);
  BatchMeta b = Alloc("q", 2);
  EXPECT_EQ(a.global_indexes(), (std::vector<int64_t>{0, 1, 2}));
  EXPECT_EQ(b.global_indexes(), (std::vector<int64_t>{3, 4}));
  std::set<uint64_t> gens;
  for (const auto& m : {a, b}) {
    for (const auto& s : m.samples()) EXPECT_TRUE(gens.insert(s.generation).second);
  }
  EXPECT_EQ(a.samples()[0].partition_id, "p");
  EXPECT_STATUS(state_.Allocate("", 1), kInvalid, "partition_id");
}

TEST_F(ControllerStateTest, FetchReturnsReadySamplesAndMarksThemConsumed) {
  AllocProduce("p", 4);
  BatchMeta first = Get(Req("p", "t", 3));
  EXPECT_EQ(first.global_indexes(), (std::vector<int64_t>{0, 1, 2}));
  EXPECT_EQ(first.field_names(), (std::vector<std::string>{"a"}));
  EXPECT_TRUE(first.samples()[0].fields[0].produced);
  EXPECT_EQ(first.samples()[0].fields[0].shape, (Shape{2}));
  // Only one left: a fetch of 2 waits, a fetch of 1 gets it.
  EXPECT_TRUE(Waits(Req("p", "t", 2)));
  EXPECT_EQ(Get(Req("p", "t", 1)).global_indexes(), (std::vector<int64_t>{3}));
  EXPECT_TRUE(Waits(Req("p", "t", 1)));
  ASSERT_OK_AND_ASSIGN(auto cs, state_.GetConsumptionStatus("p", "t"));
  EXPECT_EQ(cs.consumed, 4u);
  EXPECT_EQ(cs.num_samples, 4u);
}

TEST_F(ControllerStateTest, FetchWaitsForAllRequestedFields) {
  BatchMeta m = Alloc("p", 4);
  Produce(m, {"prompt"});
  EXPECT_TRUE(Waits(Req("p", "t", 1, FetchMode::kFetch, {"prompt", "response"})));
  Produce(*m.SelectSamples({1, 3}), {"response"});
  BatchMeta got = Get(Req("p", "t", 2, FetchMode::kFetch, {"prompt", "response"}));
  EXPECT_EQ(got.global_indexes(), (std::vector<int64_t>{1, 3}));
  EXPECT_EQ(got.field_names(), (std::vector<std::string>{"prompt", "response"}));
  // Consuming (prompt, response) consumed those samples for this task.
  EXPECT_EQ(Get(Req("p", "t", 2, FetchMode::kFetch, {"prompt"})).global_indexes(),
            (std::vector<int64_t>{0, 2}));
}

TEST_F(ControllerStateTest, ForceFetchReturnsEverythingAndMarksNothing) {
  AllocProduce("p", 5);
  for (int i = 0; i < 3; ++i) {
    BatchMeta all = Get(Req("p", "", 0, FetchMode::kForceFetch));
    EXPECT_EQ(all.size(), 5u);
  }
  EXPECT_EQ(Get(Req("p", "t", 2, FetchMode::kForceFetch)).global_indexes(), (std::vector<int64_t>{0, 1}));
  ASSERT_OK_AND_ASSIGN(auto cs, state_.GetConsumptionStatus("p", "t"));
  EXPECT_EQ(cs.consumed, 0u);
  EXPECT_EQ(Get(Req("p", "t", 5)).size(), 5u) << "force_fetch must not have consumed anything";
  // Unknown partition: empty, not an error, not a wait.
  EXPECT_TRUE(Get(Req("nope", "", 4, FetchMode::kForceFetch)).empty());
}

TEST_F(ControllerStateTest, PollReturnsWhatIsReadyNow) {
  EXPECT_TRUE(Get(Req("p", "t", 4, FetchMode::kPoll)).empty());  // unknown partition
  AllocProduce("p", 3);
  EXPECT_EQ(Get(Req("p", "t", 5, FetchMode::kPoll)).size(), 3u);
  BatchMeta none = Get(Req("p", "t", 5, FetchMode::kPoll));
  EXPECT_TRUE(none.empty());
  EXPECT_EQ(none.field_names(), (std::vector<std::string>{"a"}));
  AllocProduce("p", 2);
  EXPECT_EQ(Get(Req("p", "t", 1, FetchMode::kPoll)).global_indexes(), (std::vector<int64_t>{3}));
}

TEST_F(ControllerStateTest, FetchOnUnknownPartitionWaits) {
  EXPECT_TRUE(Waits(Req("later", "t", 1)));
  AllocProduce("later", 1);
  EXPECT_EQ(Get(Req("later", "t", 1)).size(), 1u);
  // batch_size 0 never waits.
  EXPECT_TRUE(Get(Req("other", "t", 0)).empty());
}

TEST_F(ControllerStateTest, BadRequests) {
  AllocProduce("p", 1);
  EXPECT_STATUS(state_.TryGetMeta(Req("p", "t", 1, FetchMode::kFetch, {})), kInvalid, "at least one data field");
  EXPECT_STATUS(state_.TryGetMeta(Req("p", "t", -1)), kInvalid, "batch_size");
  EXPECT_STATUS(state_.TryGetMeta(Req("p", "", 1)), kInvalid, "task_name");
  EXPECT_STATUS(state_.TryGetMeta(Req("p", "", 1, FetchMode::kPoll)), kInvalid, "task_name");
  EXPECT_STATUS(state_.TryGetMeta(Req("p", "t", 1, FetchMode::kFetch, {"a"}, {{"sampler", std::string("magic")}})),
                kInvalid, "unknown sampler 'magic'");
}

TEST_F(ControllerStateTest, TwoTasksEachReadEverySampleOnceAndOneTaskNeverTwice) {
  std::mt19937 rng(7);
  std::map<std::string, std::vector<int64_t>> seen;
  const size_t kTotal = 500;
  size_t produced = 0;
  while (produced < kTotal) {
    size_t n = std::min<size_t>(1 + rng() % 37, kTotal - produced);
    AllocProduce("p", n);
    produced += n;
    for (const std::string task : {"train", "reward"}) {
      BatchMeta got = Get(Req("p", task, 1 + rng() % 40, FetchMode::kPoll));
      for (int64_t gi : got.global_indexes()) seen[task].push_back(gi);
    }
  }
  for (const std::string task : {"train", "reward"}) {
    while (true) {
      BatchMeta got = Get(Req("p", task, 16, FetchMode::kPoll));
      if (got.empty()) break;
      for (int64_t gi : got.global_indexes()) seen[task].push_back(gi);
    }
    auto v = seen[task];
    std::sort(v.begin(), v.end());
    EXPECT_EQ(v.size(), kTotal) << task;
    EXPECT_EQ(std::adjacent_find(v.begin(), v.end()), v.end()) << task << " saw a sample twice";
    EXPECT_EQ(v.front(), 0);
    EXPECT_EQ(v.back(), static_cast<int64_t>(kTotal) - 1);
  }
}

TEST_F(ControllerStateTest, ConsumptionIsPerPartition) {
  AllocProduce("p", 2);
  AllocProduce("q", 2);
  EXPECT_EQ(Get(Req("p", "t", 2)).size(), 2u);
  EXPECT_EQ(Get(Req("q", "t", 2)).global_indexes(), (std::vector<int64_t>{2, 3}));
}

TEST_F(ControllerStateTest, ProductionStatus) {
  BatchMeta m = Alloc("p", 4);
  Produce(m, {"prompt"});
  Produce(*m.SelectSamples({0}), {"response", "reward"});
  ASSERT_OK_AND_ASSIGN(auto st, state_.GetProductionStatus("p"));
  EXPECT_EQ(st.num_samples, 4u);
  EXPECT_EQ(st.produced.at("prompt"), 4u);
  EXPECT_EQ(st.produced.at("response"), 1u);
  EXPECT_EQ(st.produced.at("reward"), 1u);
  EXPECT_STATUS(state_.GetProductionStatus("nope"), kNotFound, "nope");
  EXPECT_STATUS(state_.GetConsumptionStatus("nope", "t"), kNotFound, "nope");
}

TEST_F(ControllerStateTest, MarkProducedValidatesBeforeChangingAnything) {
  BatchMeta m = Alloc("p", 2);
  std::vector<SampleMeta> samples = m.samples();
  for (auto& s : samples) s.fields = {I64Field(1)};
  samples[1].generation += 1000;  // stale
  EXPECT_STATUS(state_.MarkProduced(BatchMeta({"a"}, samples)), kNotFound, "generation");
  ASSERT_OK_AND_ASSIGN(auto st, state_.GetProductionStatus("p"));
  EXPECT_EQ(st.produced.count("a") ? st.produced.at("a") : 0u, 0u) << "a failed request changed state";

  samples = m.samples();
  for (auto& s : samples) s.fields = {I64Field(1)};
  EXPECT_STATUS(state_.MarkProduced(BatchMeta({"a", "b"}, samples)), kInvalid, "1 field records for 2 fields");
  samples[0].partition_id = "elsewhere";
  EXPECT_STATUS(state_.MarkProduced(BatchMeta({"a"}, samples)), kNotFound, "elsewhere");
}

TEST_F(ControllerStateTest, ResetConsumption) {
  AllocProduce("p", 3);
  EXPECT_EQ(Get(Req("p", "a", 3)).size(), 3u);
  EXPECT_EQ(Get(Req("p", "b", 3)).size(), 3u);
  ASSERT_OK(state_.ResetConsumption("p", "a"));
  EXPECT_EQ(Get(Req("p", "a", 3)).size(), 3u) << "task a reads again after its reset";
  EXPECT_TRUE(Waits(Req("p", "b", 1))) << "resetting a must not reset b";
  ASSERT_OK(state_.ResetConsumption("p", ""));
  EXPECT_EQ(Get(Req("p", "a", 3)).size(), 3u);
  EXPECT_EQ(Get(Req("p", "b", 3)).size(), 3u);
  EXPECT_STATUS(state_.ResetConsumption("nope", "a"), kNotFound, "nope");
  ASSERT_OK_AND_ASSIGN(auto cs, state_.GetConsumptionStatus("p", "a"));
  EXPECT_EQ(cs.consumed, 3u);
}

TEST_F(ControllerStateTest, CustomMetaIsMergedAndReturned) {
  BatchMeta m = Alloc("p", 2);
  Produce(m, {"a"}, {{"seq_len", int64_t{5}}});
  std::vector<SampleMeta> samples = m.samples();
  samples[0].custom = {{"score", 0.5}, {"seq_len", int64_t{9}}};
  samples[1].custom = {{"tag", std::string("x")}};
  ASSERT_OK(state_.SetCustomMeta(BatchMeta({}, samples)));
  ASSERT_OK_AND_ASSIGN(BatchMeta got, state_.GetSamples("p", {0, 1}));
  EXPECT_EQ(std::get<int64_t>(got.samples()[0].custom.at("seq_len")), 9);
  EXPECT_EQ(std::get<double>(got.samples()[0].custom.at("score")), 0.5);
  EXPECT_EQ(std::get<int64_t>(got.samples()[1].custom.at("seq_len")), 5);
  EXPECT_EQ(std::get<std::string>(got.samples()[1].custom.at("tag")), "x");
  EXPECT_EQ(got.field_names(), (std::vector<std::string>{"a"}));
  // get_meta carries custom meta too.
  EXPECT_EQ(std::get<int64_t>(Get(Req("p", "t", 1)).samples()[0].custom.at("seq_len")), 9);

  samples[0].global_index = 99;
  EXPECT_STATUS(state_.SetCustomMeta(BatchMeta({}, samples)), kNotFound, "99");
  EXPECT_STATUS(state_.GetSamples("p", {0, 99}), kNotFound, "99");
  EXPECT_STATUS(state_.GetSamples("nope", {0}), kNotFound, "nope");
}

TEST_F(ControllerStateTest, ListPartitions) {
  EXPECT_TRUE(state_.ListPartitions().empty());
  AllocProduce("b", 1);
  AllocProduce("a", 1);
  auto list = state_.ListPartitions();
  std::sort(list.begin(), list.end());
  EXPECT_EQ(list, (std::vector<std::string>{"a", "b"}));
}

// ---------------------------------------------------------------- clears

TEST_F(ControllerStateTest, ClearIsTwoPhaseAndHidesSamplesAtOnce) {
  AllocProduce("p", 3, {"a", "b"});
  BatchMeta victims = state_.BeginClearPartition("p");
  EXPECT_EQ(victims.size(), 3u);
  EXPECT_EQ(victims.field_names(), (std::vector<std::string>{"a", "b"})) << "storage must learn every field";
  // Hidden from every read while storage is being freed.
  EXPECT_TRUE(Get(Req("p", "t", 3, FetchMode::kPoll)).empty());
  EXPECT_TRUE(Get(Req("p", "", 0, FetchMode::kForceFetch)).empty());
  EXPECT_STATUS(state_.GetSamples("p", {0}), kNotFound, "0");
  ASSERT_OK_AND_ASSIGN(auto st, state_.GetProductionStatus("p"));
  EXPECT_EQ(st.num_samples, 0u);
  // Writing into a clearing sample is refused.
  std::vector<SampleMeta> late = victims.samples();
  for (auto& s : late) s.fields = {I64Field(1)};
  EXPECT_STATUS(state_.MarkProduced(BatchMeta({"c"}, late)), kNotFound, "not live");

  ASSERT_OK(state_.ReleaseSamples(victims));
  EXPECT_TRUE(state_.ListPartitions().empty());
}

TEST_F(ControllerStateTest, IndexesAreNotReusableBeforeRelease) {
  BatchMeta a = AllocProduce("A", 4);
  BatchMeta victims = state_.BeginClearPartition("A");
  BatchMeta during = Alloc("B", 4);
  for (int64_t gi : during.global_indexes()) {
    EXPECT_GE(gi, 4) << "index " << gi << " reused while its storage may not be freed yet";
  }
  EXPECT_EQ(state_.free_index_count(), 0u);
  ASSERT_OK(state_.ReleaseSamples(victims));
  EXPECT_EQ(state_.free_index_count(), 4u);
  BatchMeta after = Alloc("B", 4);
  auto idx = after.global_indexes();
  std::sort(idx.begin(), idx.end());
  EXPECT_EQ(idx, (std::vector<int64_t>{0, 1, 2, 3})) << "released indexes are reused";
  for (size_t i = 0; i < 4; ++i) {
    for (const auto& old : a.samples()) {
      EXPECT_NE(after.samples()[i].generation, old.generation) << "a reused index needs a new generation";
    }
    EXPECT_EQ(after.samples()[i].partition_id, "B");
  }
}

TEST_F(ControllerStateTest, StaleMetaCannotProduceIntoReusedIndex) {
  BatchMeta a = Alloc("A", 2);
  ASSERT_OK(state_.ReleaseSamples(state_.BeginClearPartition("A")));
  BatchMeta b = Alloc("A", 2);  // same partition, same indexes
  ASSERT_EQ(b.global_indexes(), a.global_indexes());
  std::vector<SampleMeta> stale = a.samples();
  for (auto& s : stale) s.fields = {I64Field(1)};
  EXPECT_STATUS(state_.MarkProduced(BatchMeta({"x"}, stale)), kNotFound, "generation");
  EXPECT_TRUE(Get(Req("A", "t", 2, FetchMode::kPoll, {"x"})).empty());
}

TEST_F(ControllerStateTest, StaleMetaCannotSetCustomMetaOfReusedIndex) {
  BatchMeta a = Alloc("A", 1);
  ASSERT_OK(state_.ReleaseSamples(state_.BeginClearSamples("A", {0})));
  BatchMeta keep = Alloc("A", 1);  // keeps the partition alive... and reuses index 0
  ASSERT_EQ(keep.global_indexes(), a.global_indexes());
  std::vector<SampleMeta> stale = a.samples();
  stale[0].custom = {{"seq_len", int64_t{999}}};
  auto st = state_.SetCustomMeta(BatchMeta({}, stale));
  EXPECT_FALSE(st.ok()) << "a stale meta (generation " << a.samples()[0].generation
                        << ") changed the custom meta of the sample now at index 0 (generation "
                        << keep.samples()[0].generation << ")";
  ASSERT_OK_AND_ASSIGN(BatchMeta now, state_.GetSamples("A", {0}));
  EXPECT_EQ(now.samples()[0].custom.count("seq_len"), 0u);
}

TEST_F(ControllerStateTest, ClearIsIdempotent) {
  AllocProduce("p", 2);
  BatchMeta v1 = state_.BeginClearPartition("p");
  BatchMeta v2 = state_.BeginClearPartition("p");  // a retry before release
  EXPECT_EQ(v2.global_indexes(), v1.global_indexes());
  ASSERT_OK(state_.ReleaseSamples(v1));
  ASSERT_OK(state_.ReleaseSamples(v2));
  ASSERT_OK(state_.ReleaseSamples(v1));
  EXPECT_EQ(state_.free_index_count(), 2u) << "an index must be freed once";
  EXPECT_TRUE(state_.BeginClearPartition("p").empty());
  EXPECT_TRUE(state_.BeginClearPartition("never").empty());
  EXPECT_TRUE(state_.BeginClearSamples("never", {1, 2}).empty());
  // Release of an old generation after reuse leaves the new sample alone.
  BatchMeta fresh = AllocProduce("q", 2);
  ASSERT_OK(state_.ReleaseSamples(v1));
  EXPECT_EQ(Get(Req("q", "t", 2)).global_indexes(), fresh.global_indexes());
}

TEST_F(ControllerStateTest, ReleaseWithoutBeginIsRefused) {
  BatchMeta m = AllocProduce("p", 1);
  EXPECT_STATUS(state_.ReleaseSamples(m), kInvalid, "without a clear first");
  EXPECT_EQ(Get(Req("p", "t", 1)).size(), 1u);
}

TEST_F(ControllerStateTest, ClearSamplesLeavesTheRest) {
  AllocProduce("p", 4);
  BatchMeta victims = state_.BeginClearSamples("p", {1, 3, 77});
  EXPECT_EQ(victims.global_indexes(), (std::vector<int64_t>{1, 3}));
  ASSERT_OK(state_.ReleaseSamples(victims));
  EXPECT_EQ(Get(Req("p", "t", 2)).global_indexes(), (std::vector<int64_t>{0, 2}));
  ASSERT_OK_AND_ASSIGN(auto st, state_.GetProductionStatus("p"));
  EXPECT_EQ(st.num_samples, 2u);
  EXPECT_EQ(st.produced.at("a"), 2u);
}

TEST_F(ControllerStateTest, ClearedPartitionStartsFreshWhenReused) {
  AllocProduce("p", 2);
  EXPECT_EQ(Get(Req("p", "t", 2)).size(), 2u);
  ASSERT_OK(state_.ReleaseSamples(state_.BeginClearPartition("p")));
  AllocProduce("p", 2);
  EXPECT_EQ(Get(Req("p", "t", 2)).size(), 2u) << "new samples are unconsumed";
}

// Packed values (FieldInfo::pack): the state counts each pack's produced,
// visible records and names a pack once when its last one goes, by a clear
// or an overwrite, and after a restore from a snapshot.
TEST_F(ControllerStateTest, APackIsDeadWhenItsLastValueIsClearedOrOverwritten) {
  BatchMeta m = Alloc("p", 4);
  const uint64_t kA = 0xa, kB = 0xb, kC = 0xc;
  auto placed = [&](const BatchMeta& targets, std::vector<uint64_t> packs) {
    std::vector<SampleMeta> samples = targets.samples();
    for (size_t i = 0; i < samples.size(); ++i) {
      samples[i].fields = {I64Field(2), I64Field(2)};  // x packed, y its own key
      samples[i].fields[0].pack = packs[i];
      samples[i].fields[0].offset = 16 * i;
    }
    return BatchMeta({"x", "y"}, samples);
  };
  ASSERT_OK(state_.MarkProduced(placed(m, {kA, kA, kB, kB})));
  EXPECT_TRUE(state_.TakeDeadPacks().empty());
  EXPECT_EQ(state_.pack_users(kA), 2u);
  EXPECT_EQ(state_.pack_users(kB), 2u);
  // The meta handed out keeps each value's place.
  ASSERT_OK_AND_ASSIGN(BatchMeta got, state_.GetSamples("p", m.global_indexes()));
  ASSERT_EQ(got.field_names(), (std::vector<std::string>{"x", "y"}));
  EXPECT_EQ(got.samples()[3].fields[0].pack, kB);
  EXPECT_EQ(got.samples()[3].fields[0].offset, 48u);
  EXPECT_EQ(got.samples()[3].fields[1].pack, 0u);

  const int64_t s0 = m.samples()[0].global_index, s1 = m.samples()[1].global_index,
                s2 = m.samples()[2].global_index;
  // One of pack A's two values cleared: A still has a user.
  EXPECT_EQ(state_.BeginClearSamples("p", {s0}).size(), 1u);
  EXPECT_EQ(state_.TakeClearKeyed(), (std::vector<uint8_t>{1})) << "field y is under the sample's own key";
  EXPECT_TRUE(state_.TakeDeadPacks().empty());
  EXPECT_EQ(state_.pack_users(kA), 1u);
  // Sample 1's x rewritten into pack C: A has no user left.
  BatchMeta one = *m.SelectSamples({1});
  ASSERT_OK(state_.MarkProduced(placed(one, {kC})));
  EXPECT_EQ(state_.TakeDeadPacks(), (std::vector<uint64_t>{kA}));
  EXPECT_TRUE(state_.TakeDeadPacks().empty()) << "a dead pack is named once";
  // A clear that empties C but not B.
  EXPECT_EQ(state_.BeginClearSamples("p", {s1, s2}).size(), 2u);
  EXPECT_EQ(state_.TakeDeadPacks(), (std::vector<uint64_t>{kC}));
  EXPECT_EQ(state_.pack_users(kB), 1u);
  // Clearing a sample that is already being cleared changes no count.
  state_.BeginClearSamples("p", {s2});
  EXPECT_TRUE(state_.TakeDeadPacks().empty());
  EXPECT_EQ(state_.pack_users(kB), 1u);

  // A restored state counts the same users.
  ControllerState restored;
  ASSERT_OK(restored.Restore(state_.Snapshot()));
  EXPECT_EQ(restored.pack_users(kB), 1u);
  EXPECT_EQ(restored.pack_users(kA), 0u);
  EXPECT_EQ(restored.BeginClearPartition("p").size(), 1u) << "the cleared ones come back released";
  EXPECT_EQ(restored.TakeDeadPacks(), (std::vector<uint64_t>{kB}));
}

TEST_F(ControllerStateTest, AClearSaysWhichSamplesHaveValuesUnderTheirOwnKeys) {
  BatchMeta m = Alloc("p", 3);
  std::vector<SampleMeta> samples = m.samples();
  for (auto& s : samples) {
    s.fields = {I64Field(2)};
    s.fields[0].pack = 5;
  }
  samples[1].fields[0].pack = 0;  // its own key
  ASSERT_OK(state_.MarkProduced(BatchMeta({"x"}, samples)));
  // Sample 2 also gets a field it never produces ("y", registered by sample 0).
  std::vector<SampleMeta> first = {samples[0]};
  first[0].fields = {I64Field(2)};
  first[0].fields[0].pack = 6;
  ASSERT_OK(state_.MarkProduced(BatchMeta({"y"}, first)));
  EXPECT_EQ(state_.BeginClearPartition("p").size(), 3u);
  EXPECT_EQ(state_.TakeClearKeyed(), (std::vector<uint8_t>{0, 1, 1}))
      << "only sample 0 has every field produced and packed";
  std::vector<uint64_t> dead = state_.TakeDeadPacks();
  std::sort(dead.begin(), dead.end());
  EXPECT_EQ(dead, (std::vector<uint64_t>{5, 6}));
}

}  // namespace
}  // namespace tq::internal
