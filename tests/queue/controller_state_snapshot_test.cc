// ControllerState::Snapshot / Restore without sockets: a round trip keeps
// indexes, generations, fields, custom meta, keys and consumption; hostile
// bytes are refused and change nothing.
#include <gtest/gtest.h>

#include <functional>
#include <random>
#include <string>
#include <vector>

#include "common/test_util.h"
#include "queue/controller_state.h"
#include "queue/protocol.h"
#include "queue/field_info_util.h"

namespace tq::internal {
namespace {

GetMetaRequest Fetch(const std::string& partition, const std::string& task, int64_t batch,
                     FetchMode mode = FetchMode::kFetch) {
  GetMetaRequest r;
  r.partition_id = partition;
  r.task_name = task;
  r.fields = {"a"};
  r.batch_size = batch;
  r.mode = mode;
  return r;
}

class SnapshotTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // "p": 4 samples with field a and custom meta; the first 2 consumed by
    // task t; sample 1 cleared and released (a tombstone and a free index).
    ASSERT_OK_AND_ASSIGN(BatchMeta m, state_.Allocate("p", 4));
    std::vector<SampleMeta> samples = m.samples();
    for (auto& s : samples) {
      s.fields = {I64Field(2)};
      s.custom["score"] = MetaValue(int64_t{s.global_index * 10});
    }
    ASSERT_OK(state_.MarkProduced(BatchMeta({"a"}, samples)));
    ASSERT_OK_AND_ASSIGN(auto got, state_.TryGetMeta(Fetch("p", "t", 2)));
    ASSERT_TRUE(got.has_value());
    ASSERT_OK(state_.ReleaseSamples(state_.BeginClearSamples("p", {m.global_indexes()[1]})));
    // "kv": two keyed samples, one produced.
    ASSERT_OK_AND_ASSIGN(BatchMeta kv, state_.KvRetrieve("kv", {"k1", "k2"}, true));
    std::vector<SampleMeta> one = {kv.samples()[0]};
    one[0].fields = {I64Field(3)};
    ASSERT_OK(state_.MarkProduced(BatchMeta({"a"}, one)));
  }

  // Everything observable about a state, as text.
  static std::string Describe(ControllerState& s) {
    std::string out;
    for (const auto& p : s.ListPartitions()) {
      auto all = s.TryGetMeta(Fetch(p, "", 0, FetchMode::kForceFetchAll));
      out += p + ":";
      if (all.ok() && *all) {
        auto meta = s.GetSamples(p, (*all)->global_indexes());
        if (meta.ok()) {
          for (const auto& sm : meta->samples()) {
            out += " " + std::to_string(sm.global_index) + "/" + std::to_string(sm.generation) + "/" +
                   std::to_string(sm.fields.size()) + "/" + std::to_string(sm.custom.size());
          }
        }
      }
      auto cons = s.GetConsumptionStatus(p, "t");
      if (cons.ok()) out += " consumed=" + std::to_string(cons->consumed);
      auto keys = s.KvList(p);
      for (const auto& kp : keys) {
        for (const auto& e : kp.entries) out += " key=" + e.key;
      }
      out += ";";
    }
    out += " free=" + std::to_string(s.free_index_count()) + " next=" + std::to_string(s.next_index());
    return out;
  }

  ControllerState state_;
};

TEST_F(SnapshotTest, RoundTripKeepsTheWholeState) {
  std::string bytes = state_.Snapshot();
  std::string before = Describe(state_);

  ControllerState other;
  ASSERT_OK(other.Restore(bytes));
  EXPECT_EQ(Describe(other), before);
  EXPECT_EQ(other.Snapshot(), bytes);  // deterministic encoding

  // Both states go on alike: t gets the two unconsumed samples left, and
  // the next allocation takes the same index (after the restore, the
  // generation counter is where the original's is).
  for (ControllerState* s : {&state_, &other}) {
    ASSERT_OK_AND_ASSIGN(auto next, s->TryGetMeta(Fetch("p", "t", 2)));
    ASSERT_TRUE(next.has_value());
    EXPECT_EQ(next->global_indexes(), (std::vector<int64_t>{2, 3}));
    ASSERT_OK_AND_ASSIGN(BatchMeta fresh, s->Allocate("p", 1));
    EXPECT_EQ(fresh.global_indexes(), std::vector<int64_t>{5});
  }
  // Keys still name their samples.
  ASSERT_OK_AND_ASSIGN(BatchMeta k, other.KvRetrieve("kv", {"k1"}, false));
  ASSERT_EQ(k.size(), 1u);
  ASSERT_OK_AND_ASSIGN(BatchMeta k0, state_.KvRetrieve("kv", {"k1"}, false));
  EXPECT_EQ(k.samples()[0].global_index, k0.samples()[0].global_index);
  EXPECT_EQ(k.samples()[0].generation, k0.samples()[0].generation);
}

TEST_F(SnapshotTest, RestoreNeverLowersTheGenerationCounter) {
  std::string bytes = state_.Snapshot();
  ASSERT_OK_AND_ASSIGN(BatchMeta later, state_.Allocate("q", 3));
  uint64_t highest = later.samples().back().generation;
  ASSERT_OK(state_.Restore(bytes));
  ASSERT_OK_AND_ASSIGN(BatchMeta after, state_.Allocate("q", 1));
  EXPECT_GT(after.samples()[0].generation, highest);
  EXPECT_EQ(after.global_indexes(), std::vector<int64_t>{5});  // the index pool is the snapshot's
}

TEST_F(SnapshotTest, FreeIndexesAreReusedAfterRestore) {
  ASSERT_OK(state_.ReleaseSamples(state_.BeginClearSamples("p", {2})));
  ControllerState other;
  ASSERT_OK(other.Restore(state_.Snapshot()));
  EXPECT_EQ(other.free_index_count(), 1u);
  ASSERT_OK_AND_ASSIGN(BatchMeta fresh, other.Allocate("p", 1));
  EXPECT_EQ(fresh.global_indexes(), std::vector<int64_t>{2});
}

TEST_F(SnapshotTest, DeepestCustomMetaSurvives) {
  MetaValue deep = MetaValue(int64_t{1});
  for (int d = 0; d < kMaxMetaDepth; ++d) deep = MetaValue(MetaList{deep});
  ASSERT_OK_AND_ASSIGN(BatchMeta m, state_.GetSamples("p", {0}));
  std::vector<SampleMeta> samples = m.samples();
  samples[0].custom["deep"] = deep;
  ASSERT_OK(state_.SetCustomMeta(BatchMeta(m.field_names(), samples)));
  ControllerState other;
  ASSERT_OK(other.Restore(state_.Snapshot()));
  ASSERT_OK_AND_ASSIGN(BatchMeta back, other.GetSamples("p", {0}));
  EXPECT_EQ(back.samples()[0].custom.at("deep"), deep);
}

TEST_F(SnapshotTest, SamplesBeingClearedComeBackReleased) {
  BatchMeta hidden = state_.BeginClearSamples("p", {2});
  ASSERT_EQ(hidden.size(), 1u);
  ControllerState other;
  ASSERT_OK(other.Restore(state_.Snapshot()));
  EXPECT_EQ(other.free_index_count(), 1u);
  ASSERT_OK_AND_ASSIGN(auto all, other.TryGetMeta(Fetch("p", "", 0, FetchMode::kForceFetchAll)));
  EXPECT_EQ(all->global_indexes(), (std::vector<int64_t>{0, 3}));
  ASSERT_OK(other.ReleaseSamples(hidden));  // the clear finishing late changes nothing
  EXPECT_EQ(other.free_index_count(), 1u);
  ASSERT_OK_AND_ASSIGN(BatchMeta fresh, other.Allocate("p", 1));
  EXPECT_EQ(fresh.global_indexes(), std::vector<int64_t>{2});
  // A partition whose samples were all being cleared is dropped.
  state_.BeginClearPartition("p");
  ControllerState third;
  ASSERT_OK(third.Restore(state_.Snapshot()));
  EXPECT_EQ(third.ListPartitions(), std::vector<std::string>{"kv"});
}

TEST_F(SnapshotTest, DryRunChangesNothing) {
  ControllerState empty;
  std::string bytes = state_.Snapshot();
  ASSERT_OK(empty.Restore(bytes, /*dry_run=*/true));
  EXPECT_TRUE(empty.ListPartitions().empty());
}

TEST_F(SnapshotTest, CorruptBytesAreRefusedAndChangeNothing) {
  std::string bytes = state_.Snapshot();
  std::string before = Describe(state_);
  EXPECT_STATUS(state_.Restore(""), kInvalid, "empty");
  EXPECT_STATUS(state_.Restore("garbage!"), kInvalid, "snapshot");
  EXPECT_STATUS(state_.Restore(bytes.substr(0, bytes.size() / 2)), kInvalid, "snapshot");
  EXPECT_STATUS(state_.Restore(bytes + "x"), kInvalid, "trailing");
  // Random byte flips: never a crash; either refused or a consistent state.
  std::mt19937 rng(7);
  for (int i = 0; i < 2000; ++i) {
    std::string mutated = bytes;
    for (int k = 0; k < 3; ++k) mutated[rng() % mutated.size()] = static_cast<char>(rng());
    ControllerState scratch;
    (void)scratch.Restore(mutated);
  }
  EXPECT_EQ(Describe(state_), before);
}

// Builds a snapshot document by hand to hit each consistency check.
std::string Doc(const std::function<void(Packer&)>& partition, int64_t next_index = 4,
                std::vector<int64_t> free = {}) {
  return tqds::wire::PackBody([&](Packer& pk) {
    pk.pack_map(6);
    pk.pack("format");
    pk.pack("tqds-controller-snapshot");
    pk.pack("version");
    pk.pack(1);
    pk.pack("next_index");
    pk.pack(next_index);
    pk.pack("next_generation");
    pk.pack(10);
    pk.pack("free_indexes");
    pk.pack(free);
    pk.pack("partitions");
    pk.pack_array(1);
    partition(pk);
  });
}

// A partition with samples (index, generation) and optional keys.
std::function<void(Packer&)> Part(std::vector<std::pair<int64_t, uint64_t>> samples,
                                  std::vector<std::pair<uint64_t, std::string>> keys = {},
                                  uint64_t cursor = 0) {
  return [=](Packer& pk) {
    pk.pack_map(7);
    pk.pack("name");
    pk.pack("p");
    pk.pack("keep_when_empty");
    pk.pack(false);
    pk.pack("field_names");
    pk.pack(std::vector<std::string>{"a"});
    pk.pack("field_types");
    pk.pack_array(1);
    PackFieldInfoRecord(pk, I64Field(1));
    pk.pack("samples");
    pk.pack_array(static_cast<uint32_t>(samples.size()));
    for (auto [idx, gen] : samples) {
      pk.pack_array(6);
      pk.pack(idx);
      pk.pack(gen);
      pk.pack(true);
      pk.pack(false);
      pk.pack_array(1);
      PackFieldInfoRecord(pk, I64Field(1));
      pk.pack_map(0);
    }
    pk.pack("keys");
    pk.pack_array(static_cast<uint32_t>(keys.size()));
    for (const auto& [pos, key] : keys) {
      pk.pack_array(2);
      pk.pack(pos);
      pk.pack(key);
    }
    pk.pack("tasks");
    pk.pack_array(1);
    pk.pack_map(7);
    pk.pack("name");
    pk.pack("t");
    pk.pack("consumed");
    pk.pack_bin(0);
    pk.pack("cursor");
    pk.pack(cursor);
    pk.pack("consumed_count");
    pk.pack(0);
    pk.pack("call_counters");
    pk.pack_map(0);
    pk.pack("sticky");
    pk.pack_map(0);
    pk.pack("cache");
    pk.pack_map(0);
  };
}

TEST(SnapshotCheckTest, ConsistentDocumentIsAccepted) {
  ControllerState s;
  ASSERT_OK(s.Restore(Doc(Part({{0, 1}, {2, 2}}, {{1, "k"}}), 4, {1, 3})));
  EXPECT_EQ(s.ListPartitions(), std::vector<std::string>{"p"});
  EXPECT_EQ(s.free_index_count(), 2u);
}

TEST(SnapshotCheckTest, InconsistentDocumentsAreRefused) {
  ControllerState s;
  EXPECT_STATUS(s.Restore(Doc(Part({{0, 1}, {0, 2}}))), kInvalid, "in use twice");
  EXPECT_STATUS(s.Restore(Doc(Part({{0, 1}}), 4, {0})), kInvalid, "in use twice");
  EXPECT_STATUS(s.Restore(Doc(Part({{0, 1}, {1, 1}}))), kInvalid, "generation 1 is used twice");
  EXPECT_STATUS(s.Restore(Doc(Part({{7, 1}}))), kInvalid, "outside [0, 4)");
  EXPECT_STATUS(s.Restore(Doc(Part({{0, 10}}))), kInvalid, "generation 10");
  EXPECT_STATUS(s.Restore(Doc(Part({{0, 1}}), 4, {9})), kInvalid, "free index 9");
  EXPECT_STATUS(s.Restore(Doc(Part({{0, 1}}), 4, {2, 2})), kInvalid, "listed twice");
  EXPECT_STATUS(s.Restore(Doc(Part({{0, 1}}, {{5, "k"}}))), kInvalid, "position 5");
  EXPECT_STATUS(s.Restore(Doc(Part({{0, 1}, {1, 2}}, {{0, "k"}, {1, "k"}}))), kInvalid, "listed twice");
  EXPECT_STATUS(s.Restore(Doc(Part({{0, 1}}), -1)), kInvalid, "negative");
  EXPECT_STATUS(s.Restore(Doc(Part({{0, 1}}, {}, 9))), kInvalid, "cursor 9");
  EXPECT_TRUE(s.ListPartitions().empty());
}

}  // namespace
}  // namespace tq::internal
