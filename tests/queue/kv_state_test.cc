// ControllerState's KV API without sockets: key creation and lookup, the
// fields a keyed meta reports, key listing, and keys vanishing on every clear
// path (so a reused index never resolves to an old key).
#include <gtest/gtest.h>

#include <optional>
#include <string>
#include <vector>

#include "common/test_util.h"
#include "queue/controller_state.h"
#include "queue/field_info_util.h"
#include "queue/protocol.h"

namespace tq::internal {
namespace {

class KvStateTest : public ::testing::Test {
 protected:
  BatchMeta Retrieve(const std::string& p, const std::vector<std::string>& keys, bool create) {
    auto r = state_.KvRetrieve(p, keys, create);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return r.ok() ? *r : BatchMeta();
  }
  // Marks `fields` of the meta's samples produced (field i of length i + 1).
  void Produce(const BatchMeta& meta, const std::vector<std::string>& fields, const CustomMeta& custom = {}) {
    std::vector<SampleMeta> samples = meta.samples();
    for (auto& s : samples) {
      s.fields.clear();
      for (size_t i = 0; i < fields.size(); ++i) s.fields.push_back(I64Field(static_cast<int64_t>(i) + 1));
      s.custom = custom;
    }
    ASSERT_OK(state_.MarkProduced(BatchMeta(fields, samples)));
  }
  // Both phases of a clear, as the client runs them.
  void Release(const BatchMeta& victims) { ASSERT_OK(state_.ReleaseSamples(victims)); }
  std::vector<std::string> KeysOf(const std::string& p) {
    std::vector<std::string> out;
    for (const auto& part : state_.KvList(p)) {
      for (const auto& e : part.entries) out.push_back(e.key);
    }
    return out;
  }
  static GetMetaRequest Req(const std::string& p, const std::string& task, std::vector<std::string> fields,
                            int64_t batch, FetchMode mode = FetchMode::kFetch) {
    GetMetaRequest req;
    req.partition_id = p;
    req.task_name = task;
    req.fields = std::move(fields);
    req.batch_size = batch;
    req.mode = mode;
    return req;
  }
  std::optional<std::string> KeyOf(const std::string& p, int64_t index) {
    auto r = state_.KvKeys(p, {index});
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return r.ok() ? (*r)[0] : std::nullopt;
  }

  ControllerState state_;
};

TEST_F(KvStateTest, CreateMakesFreshSamplesInRequestOrder) {
  BatchMeta m = Retrieve("p", {"a", "b", "c"}, true);
  ASSERT_EQ(m.size(), 3u);
  EXPECT_TRUE(m.field_names().empty());
  EXPECT_NE(m.samples()[0].generation, m.samples()[1].generation);
  EXPECT_EQ(m.partition_ids(), (std::vector<std::string>{"p", "p", "p"}));
  // Found again, in the new request's order, without allocating.
  int64_t next = state_.next_index();
  BatchMeta again = Retrieve("p", {"c", "a"}, true);
  EXPECT_EQ(state_.next_index(), next);
  EXPECT_EQ(again.global_indexes(), (std::vector<int64_t>{m.global_indexes()[2], m.global_indexes()[0]}));
  EXPECT_EQ(again.samples()[0].generation, m.samples()[2].generation);
  // Known and new keys mixed: only the new one gets a sample.
  BatchMeta mixed = Retrieve("p", {"b", "d"}, true);
  EXPECT_EQ(mixed.samples()[0].global_index, m.samples()[1].global_index);
  EXPECT_EQ(state_.next_index(), next + 1);
  EXPECT_EQ(KeysOf("p"), (std::vector<std::string>{"a", "b", "c", "d"}));
  ASSERT_OK_AND_ASSIGN(auto st, state_.GetProductionStatus("p"));
  EXPECT_EQ(st.num_samples, 4u) << "keyed samples are ordinary samples";
}

TEST_F(KvStateTest, WithoutCreateMissingKeysAreDropped) {
  ASSERT_OK_AND_ASSIGN(BatchMeta none, state_.KvRetrieve("nope", {"a"}, false));
  EXPECT_TRUE(none.empty());
  EXPECT_EQ(state_.FindPartition("nope"), nullptr) << "a lookup creates nothing";
  BatchMeta m = Retrieve("p", {"a", "b"}, true);
  int64_t next = state_.next_index();
  BatchMeta got = Retrieve("p", {"x", "b", "y", "a"}, false);
  EXPECT_EQ(got.global_indexes(), (std::vector<int64_t>{m.global_indexes()[1], m.global_indexes()[0]}));
  EXPECT_EQ(state_.next_index(), next);
  EXPECT_TRUE(Retrieve("p", {"zz"}, false).empty());
}

TEST_F(KvStateTest, BadKeysChangeNothing) {
  EXPECT_STATUS(state_.KvRetrieve("p", {"a", "b", "a"}, true), kInvalid, "'a' is listed twice");
  EXPECT_STATUS(state_.KvRetrieve("p", {""}, true), kInvalid, "must not be empty");
  EXPECT_STATUS(state_.KvRetrieve("", {"a"}, true), kInvalid, "partition_id");
  EXPECT_EQ(state_.FindPartition("p"), nullptr);
  EXPECT_EQ(state_.next_index(), 0);
}

TEST_F(KvStateTest, ARefusedCreateInAnExistingPartitionLeavesItsKeysAsTheyWere) {
  BatchMeta ab = Retrieve("p", {"a", "b"}, true);
  const int64_t next = state_.next_index();
  // New keys are entered into the key map one by one; "n2" twice is found
  // after "n1" and "n2" are in: both are taken out again.
  EXPECT_STATUS(state_.KvRetrieve("p", {"a", "n1", "n2", "b", "n2"}, true), kInvalid, "'n2' is listed twice");
  EXPECT_EQ(KeysOf("p"), (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(state_.next_index(), next);
  EXPECT_TRUE(Retrieve("p", {"n1", "n2"}, false).empty());
  // The same keys once each are created, after the old ones.
  BatchMeta made = Retrieve("p", {"a", "n1", "n2", "b"}, true);
  EXPECT_EQ(made.global_indexes()[0], ab.global_indexes()[0]);
  EXPECT_EQ(made.global_indexes()[3], ab.global_indexes()[1]);
  EXPECT_EQ(KeysOf("p"), (std::vector<std::string>{"a", "b", "n1", "n2"}));
  EXPECT_EQ(Retrieve("p", {"n2", "n1"}, false).global_indexes(),
            (std::vector<int64_t>{made.global_indexes()[2], made.global_indexes()[1]}));
  // Refused by the allocation limits: no key entered.
  AllocationLimits limits;
  limits.per_partition = 5;
  state_.set_allocation_limits(limits);
  EXPECT_STATUS(state_.KvRetrieve("p", {"n3", "n4"}, true), kOutOfSpace, "limit");
  EXPECT_EQ(KeysOf("p"), (std::vector<std::string>{"a", "b", "n1", "n2"}));
  state_.set_allocation_limits(AllocationLimits{});
  // A new partition with a key twice is not created.
  EXPECT_STATUS(state_.KvRetrieve("q", {"x", "y", "x"}, true), kInvalid, "'x' is listed twice");
  EXPECT_EQ(state_.FindPartition("q"), nullptr);
}

TEST_F(KvStateTest, KeysStayFoundWhenClearedRecordsAreCompactedAway) {
  // The key index holds positions; compaction renumbers them and the index
  // is made again from the records' keys.
  std::vector<std::string> keys;
  for (int i = 0; i < 3000; ++i) keys.push_back("k" + std::to_string(i));
  BatchMeta all = Retrieve("p", keys, true);
  const std::vector<std::string> gone(keys.begin(), keys.begin() + 2500);
  Release(state_.BeginKvClear("p", gone));
  EXPECT_EQ(state_.RecordCount("p"), 500u) << "the released records are compacted away";
  // Out of order, so that each is looked up in the index, not guessed.
  std::vector<std::string> kept(keys.rbegin(), keys.rbegin() + 500);
  BatchMeta found = Retrieve("p", kept, false);
  ASSERT_EQ(found.size(), 500u);
  for (size_t i = 0; i < kept.size(); ++i) {
    EXPECT_EQ(found.samples()[i].global_index, all.samples()[2999 - i].global_index) << kept[i];
  }
  EXPECT_TRUE(Retrieve("p", {"k7", "k2499"}, false).empty());
  EXPECT_STATUS(state_.KvRetrieve("p", {"k2600", "k2700", "k2600"}, false), kInvalid, "'k2600' is listed twice");
  // A cleared key made again gets a fresh sample; the kept ones keep theirs.
  BatchMeta again = Retrieve("p", {"k2999", "k7"}, true);
  EXPECT_EQ(again.samples()[0].global_index, all.samples()[2999].global_index);
  EXPECT_NE(again.samples()[1].generation, all.samples()[7].generation);
  EXPECT_EQ(KeysOf("p").size(), 501u);
}

TEST_F(KvStateTest, MetaHasTheFieldsEverySampleProducedAndTheTags) {
  BatchMeta ab = Retrieve("p", {"a", "b"}, true);
  Produce(ab.SelectSamples({0}).MoveValue(), {"x", "y", "z"}, {{"tag", std::string("A")}});
  Produce(ab.SelectSamples({1}).MoveValue(), {"z", "x"}, {{"flag", true}});
  BatchMeta both = Retrieve("p", {"b", "a"}, false);
  EXPECT_EQ(both.field_names(), (std::vector<std::string>{"x", "z"})) << "registration order";
  // Per-sample records: b wrote x as its 2nd field (length 2), a as its 1st.
  EXPECT_EQ(both.samples()[0].fields[0].shape, (Shape{2}));
  EXPECT_EQ(both.samples()[1].fields[0].shape, (Shape{1}));
  EXPECT_TRUE(both.samples()[0].fields[1].produced);
  EXPECT_EQ(both.samples()[0].custom, (CustomMeta{{"flag", true}}));
  EXPECT_EQ(both.samples()[1].custom, (CustomMeta{{"tag", std::string("A")}}));
  EXPECT_EQ(Retrieve("p", {"a"}, false).field_names(), (std::vector<std::string>{"x", "y", "z"}));
  // A fresh key has produced nothing, so nothing is common.
  EXPECT_TRUE(Retrieve("p", {"a", "new"}, true).field_names().empty());
}

// A KvPut request's meta: one sample per key, each field of length i + 1
// (as Produce), packed in `pack` at offset 64 * sample (pack 0: unpacked).
BatchMeta PutMeta(size_t n, const std::vector<std::string>& fields, uint64_t pack = 0) {
  std::vector<SampleMeta> samples(n);
  for (size_t s = 0; s < n; ++s) {
    for (size_t i = 0; i < fields.size(); ++i) {
      FieldInfo fi = I64Field(static_cast<int64_t>(i) + 1);
      fi.pack = pack;
      fi.offset = pack == 0 ? 0 : 64 * s;
      samples[s].fields.push_back(fi);
    }
  }
  return BatchMeta(fields, std::move(samples));
}

TEST_F(KvStateTest, KvPutCreatesTheKeysAndRecordsTheFieldsInOneStep) {
  ASSERT_OK_AND_ASSIGN(KvPutResult r, state_.KvPut("p", {"a", "b"}, PutMeta(2, {"x", "y"}, 11)));
  EXPECT_EQ(r.fields, (std::vector<std::string>{"x", "y"}));
  EXPECT_TRUE(r.tags.empty()) << "no key has tags";
  EXPECT_EQ(KeysOf("p"), (std::vector<std::string>{"a", "b"}));
  BatchMeta got = Retrieve("p", {"b", "a"}, false);
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got.field_names(), (std::vector<std::string>{"x", "y"}));
  EXPECT_EQ(got.samples()[0].fields[1].shape, (Shape{2}));
  EXPECT_EQ(got.samples()[0].fields[0].offset, 64u) << "b's records, placed as its put said";
  EXPECT_EQ(got.samples()[1].fields[0].offset, 0u);
  EXPECT_EQ(state_.pack_users(11), 4u);
  // A key's sample serves get_meta like any other (a fetch waiting for x sees it).
  ASSERT_OK_AND_ASSIGN(auto fetched, state_.TryGetMeta(Req("p", "t", {"x"}, 2)));
  ASSERT_TRUE(fetched.has_value());
  EXPECT_EQ(fetched->size(), 2u);

  // A known key and a new one: the known keeps its index and its other
  // field; fields common to both after the put are reported; rewriting x
  // of a and b leaves pack 11 with a's and b's y only.
  const int64_t a_index = got.samples()[1].global_index;
  ASSERT_OK_AND_ASSIGN(r, state_.KvPut("p", {"a", "c"}, PutMeta(2, {"x"}, 12)));
  EXPECT_EQ(r.fields, (std::vector<std::string>{"x"})) << "c has no y";
  ASSERT_OK_AND_ASSIGN(r, state_.KvPut("p", {"b"}, PutMeta(1, {"x"}, 13)));
  EXPECT_EQ(r.fields, (std::vector<std::string>{"x", "y"})) << "b kept its y";
  EXPECT_EQ(Retrieve("p", {"a"}, false).samples()[0].global_index, a_index);
  EXPECT_EQ(state_.pack_users(11), 2u);
  EXPECT_TRUE(state_.TakeDeadPacks().empty()) << "pack 11 still holds y";
  ASSERT_OK_AND_ASSIGN(r, state_.KvPut("p", {"a", "b"}, PutMeta(2, {"y"}, 14)));
  EXPECT_EQ(state_.TakeDeadPacks(), (std::vector<uint64_t>{11})) << "its last users were overwritten";

  // Tags stored with another call come back, one per key in request order.
  BatchMeta c = Retrieve("p", {"c"}, false);
  Produce(c, {"x"}, {{"score", int64_t{3}}});
  ASSERT_OK_AND_ASSIGN(r, state_.KvPut("p", {"c", "a"}, PutMeta(2, {"x"})));
  ASSERT_EQ(r.tags.size(), 2u);
  EXPECT_EQ(r.tags[0], (CustomMeta{{"score", int64_t{3}}}));
  EXPECT_TRUE(r.tags[1].empty());
}

TEST_F(KvStateTest, ABadKvPutChangesNothing) {
  ASSERT_OK_AND_ASSIGN(KvPutResult first, state_.KvPut("p", {"a"}, PutMeta(1, {"x"})));
  EXPECT_EQ(first.fields, (std::vector<std::string>{"x"}));
  const int64_t next = state_.next_index();
  EXPECT_STATUS(state_.KvPut("p", {"b", "c"}, PutMeta(1, {"x"})), kInvalid, "2 keys but 1 samples");
  EXPECT_STATUS(state_.KvPut("p", {"b"}, PutMeta(1, {"x", "x"})), kInvalid, "'x' is listed twice");
  EXPECT_STATUS(state_.KvPut("p", {"b"}, PutMeta(1, {""})), kInvalid, "field name");
  EXPECT_STATUS(state_.KvPut("p", {"b", "b"}, PutMeta(2, {"x"})), kInvalid, "'b' is listed twice");
  EXPECT_STATUS(state_.KvPut("", {"b"}, PutMeta(1, {"x"})), kInvalid, "partition_id");
  BatchMeta short_records = PutMeta(1, {"x", "y"});
  short_records.mutable_samples()[0].fields.pop_back();
  EXPECT_STATUS(state_.KvPut("p", {"b"}, short_records), kInvalid, "carries 1 field records for 2 fields");
  EXPECT_EQ(KeysOf("p"), (std::vector<std::string>{"a"}));
  EXPECT_EQ(state_.next_index(), next);
  EXPECT_EQ(state_.FindPartition("p")->field_names, (std::vector<std::string>{"x"}));
}

TEST_F(KvStateTest, KeysOfIndexes) {
  BatchMeta keyed = Retrieve("p", {"a", "b"}, true);
  ASSERT_OK_AND_ASSIGN(BatchMeta plain, state_.Allocate("p", 1));
  ASSERT_OK_AND_ASSIGN(BatchMeta other, state_.Allocate("q", 1));
  ASSERT_OK_AND_ASSIGN(auto keys, state_.KvKeys("p", {keyed.global_indexes()[1], plain.global_indexes()[0],
                                                      other.global_indexes()[0], 12345, keyed.global_indexes()[0]}));
  ASSERT_EQ(keys.size(), 5u);
  EXPECT_EQ(keys[0], "b");
  EXPECT_EQ(keys[1], std::nullopt) << "an index without a key";
  EXPECT_EQ(keys[2], std::nullopt) << "another partition's index";
  EXPECT_EQ(keys[3], std::nullopt);
  EXPECT_EQ(keys[4], "a");
  EXPECT_STATUS(state_.KvKeys("nope", {0}), kNotFound, "'nope'");
}

TEST_F(KvStateTest, ListShowsKeysInCreationOrderWithTags) {
  BatchMeta m = Retrieve("p", {"z", "a"}, true);
  Produce(m, {"x"}, {{"n", int64_t{1}}});
  Retrieve("p", {"m"}, true);
  ASSERT_OK(state_.Allocate("plain", 2));
  KvListing one = state_.KvList(std::string("p"));
  ASSERT_EQ(one.size(), 1u);
  EXPECT_EQ(one[0].partition_id, "p");
  ASSERT_EQ(one[0].entries.size(), 3u);
  EXPECT_EQ(one[0].entries[0], (KvEntry{"z", {{"n", int64_t{1}}}}));
  EXPECT_EQ(one[0].entries[1].key, "a");
  EXPECT_EQ(one[0].entries[2], (KvEntry{"m", {}}));
  KvListing all = state_.KvList(std::nullopt);
  ASSERT_EQ(all.size(), 2u);
  EXPECT_EQ(all[0].partition_id, "p");
  EXPECT_EQ(all[1], (KvPartition{"plain", {}})) << "a partition without keys lists as empty";
  EXPECT_TRUE(state_.KvList(std::string("nope")).empty());
}

TEST_F(KvStateTest, ClearRemovesKeysAtOnceAndKeepsThePartition) {
  BatchMeta m = Retrieve("p", {"a", "b"}, true);
  Produce(m, {"x"});
  BatchMeta victims = state_.BeginKvClear("p", {"a", "missing", "a"});
  ASSERT_EQ(victims.size(), 1u) << "missing keys are skipped, duplicates cleared once";
  EXPECT_EQ(victims.samples()[0].global_index, m.samples()[0].global_index);
  EXPECT_EQ(victims.field_names(), (std::vector<std::string>{"x"})) << "storage frees every field";
  // Phase 1 already hides the key.
  EXPECT_EQ(KeysOf("p"), (std::vector<std::string>{"b"}));
  EXPECT_TRUE(Retrieve("p", {"a"}, false).empty());
  EXPECT_EQ(KeyOf("p", m.samples()[0].global_index), std::nullopt);
  Release(victims);
  // Clearing again is a no-op.
  EXPECT_TRUE(state_.BeginKvClear("p", {"a"}).empty());
  EXPECT_TRUE(state_.BeginKvClear("nope", {"a"}).empty());
  // Emptied, the partition stays listed.
  Release(state_.BeginKvClear("p", {"b"}));
  EXPECT_EQ(state_.ListPartitions(), (std::vector<std::string>{"p"}));
  ASSERT_EQ(state_.KvList(std::nullopt).size(), 1u);
  EXPECT_TRUE(state_.KvList(std::nullopt)[0].entries.empty());
  ASSERT_OK_AND_ASSIGN(auto st, state_.GetProductionStatus("p"));
  EXPECT_EQ(st.num_samples, 0u);
  // Re-putting a cleared key makes a fresh sample.
  BatchMeta again = Retrieve("p", {"a"}, true);
  ASSERT_EQ(again.size(), 1u);
  EXPECT_GT(again.samples()[0].generation, m.samples()[1].generation);
  EXPECT_TRUE(again.field_names().empty()) << "the old sample's fields are gone";
}

TEST_F(KvStateTest, KeysInAnyOrderFindTheirOwnSamples) {
  // A lookup first tries the position after the previous key's (keys often
  // come in creation order); whatever the order, each key finds its sample.
  BatchMeta m = Retrieve("p", {"a", "b", "c", "d", "e"}, true);
  auto index_of = [&](const BatchMeta& meta) {
    std::vector<int64_t> out;
    for (const auto& s : meta.samples()) out.push_back(s.global_index);
    return out;
  };
  const std::vector<int64_t> idx = index_of(m);
  // c cleared and made again: a fresh sample at the end; its old position,
  // right after b's, now holds no key.
  Release(state_.BeginKvClear("p", {"c"}));
  BatchMeta c2 = Retrieve("p", {"c"}, true);
  const int64_t c_idx = c2.samples()[0].global_index;
  EXPECT_EQ(index_of(Retrieve("p", {"a", "b", "c", "d", "e"}, false)),
            (std::vector<int64_t>{idx[0], idx[1], c_idx, idx[3], idx[4]}));
  EXPECT_EQ(index_of(Retrieve("p", {"e", "d", "c", "b", "a"}, false)),
            (std::vector<int64_t>{idx[4], idx[3], c_idx, idx[1], idx[0]}));
  EXPECT_EQ(index_of(Retrieve("p", {"d", "e", "zz", "a", "b"}, false)),
            (std::vector<int64_t>{idx[3], idx[4], idx[0], idx[1]})) << "a missing key in the run is dropped";
  // A key twice in a row: the guess after the first misses, the table finds it again.
  auto twice = state_.KvRetrieve("p", {"a", "a"}, false);
  ASSERT_FALSE(twice.ok());
  EXPECT_NE(twice.status().message().find("'a' is listed twice"), std::string::npos) << twice.status().ToString();
  auto twice_apart = state_.KvRetrieve("p", {"a", "b", "a"}, false);
  EXPECT_FALSE(twice_apart.ok());
  // A key with the same text in another partition is not this one's.
  Retrieve("q", {"b", "a"}, true);
  EXPECT_EQ(index_of(Retrieve("p", {"a", "b"}, false)), (std::vector<int64_t>{idx[0], idx[1]}));
  // Clears take the same path: in order, reversed, with repeats.
  BatchMeta gone = state_.BeginKvClear("p", {"d", "e", "e", "d"});
  EXPECT_EQ(index_of(gone), (std::vector<int64_t>{idx[3], idx[4]}));
  Release(gone);
  EXPECT_EQ(KeysOf("p"), (std::vector<std::string>{"a", "b", "c"}));
}

TEST_F(KvStateTest, AKeyListedTwiceInAFewKeysOfABigPartitionIsFoundOnce) {
  // A request of a few keys in a partition of many samples tracks the
  // positions it saw in a set, not a bitmap over the partition.
  std::vector<std::string> keys;
  for (int i = 0; i < 300; ++i) keys.push_back("k" + std::to_string(i));
  BatchMeta m = Retrieve("p", keys, true);
  auto twice = state_.KvRetrieve("p", {"k7", "k7"}, false);
  ASSERT_FALSE(twice.ok());
  EXPECT_NE(twice.status().message().find("'k7' is listed twice"), std::string::npos) << twice.status().ToString();
  BatchMeta gone = state_.BeginKvClear("p", {"k5", "k9", "k5"});
  ASSERT_EQ(gone.size(), 2u) << "cleared once";
  EXPECT_EQ(gone.samples()[0].global_index, m.samples()[5].global_index);
  EXPECT_EQ(gone.samples()[1].global_index, m.samples()[9].global_index);
  Release(gone);
  EXPECT_EQ(KeysOf("p").size(), 298u);
}

TEST_F(KvStateTest, ReusedIndexInAnotherPartitionNeverResolvesToTheOldKey) {
  BatchMeta a = Retrieve("A", {"k"}, true);
  int64_t index = a.samples()[0].global_index;
  Release(state_.BeginKvClear("A", {"k"}));
  ASSERT_OK_AND_ASSIGN(BatchMeta b, state_.Allocate("B", 1));
  ASSERT_EQ(b.samples()[0].global_index, index) << "the index is reused";
  EXPECT_EQ(KeyOf("B", index), std::nullopt);
  EXPECT_EQ(KeyOf("A", index), std::nullopt);
  // And a key created in B on the reused index is B's alone.
  Release(state_.BeginClearSamples("B", {index}));
  BatchMeta kb = Retrieve("B", {"k2"}, true);
  ASSERT_EQ(kb.samples()[0].global_index, index);
  EXPECT_EQ(KeyOf("B", index), "k2");
  EXPECT_EQ(KeyOf("A", index), std::nullopt);
}

TEST_F(KvStateTest, EveryClearPathErasesKeys) {
  BatchMeta m = Retrieve("p", {"a", "b", "c"}, true);
  // By index.
  BatchMeta by_index = state_.BeginClearSamples("p", {m.samples()[1].global_index});
  EXPECT_EQ(KeysOf("p"), (std::vector<std::string>{"a", "c"}));
  Release(by_index);
  EXPECT_EQ(KeyOf("p", m.samples()[1].global_index), std::nullopt);
  // The whole partition: keys vanish at once, the partition after release.
  BatchMeta all = state_.BeginClearPartition("p");
  EXPECT_EQ(all.size(), 2u);
  EXPECT_TRUE(KeysOf("p").empty());
  EXPECT_TRUE(Retrieve("p", {"a", "c"}, false).empty());
  Release(all);
  EXPECT_TRUE(state_.ListPartitions().empty()) << "clear_partition drops a keyed partition";
}

TEST_F(KvStateTest, ClearPartitionDropsAnEmptiedKeyedPartitionAtOnce) {
  Release(state_.BeginKvClear("p", {}));  // unknown: nothing
  Retrieve("p", {"a"}, true);
  Release(state_.BeginKvClear("p", {"a"}));
  ASSERT_EQ(state_.ListPartitions(), (std::vector<std::string>{"p"}));
  // No sample left to release, so phase 1 drops it itself.
  EXPECT_TRUE(state_.BeginClearPartition("p").empty());
  EXPECT_TRUE(state_.ListPartitions().empty());
}

TEST_F(KvStateTest, KeyedSamplesServeGetMetaLikeAnyOther) {
  BatchMeta m = Retrieve("p", {"a", "b"}, true);
  Produce(m, {"x"});
  ASSERT_OK_AND_ASSIGN(auto got, state_.TryGetMeta(Req("p", "t", {"x"}, 2)));
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ(got->global_indexes(), m.global_indexes());
}

TEST_F(KvStateTest, APartitionPutToAndClearedOverAndOverKeepsOnlyItsLiveRecords) {
  // An RL loop on one partition: every step puts a batch under the same
  // keys and clears it. Released samples must not pile up as records (each
  // scan of the partition would slow down with every step), and what is
  // still live keeps its key, its place in each task's consumption and its
  // cached selections through the renumbering.
  BatchMeta early = Retrieve("p", {"e0", "e1", "e2", "e3", "e4", "e5"}, true);
  Produce(early, {"x"});
  GetMetaRequest req = Req("p", "t", {"x"}, 3, FetchMode::kPoll);
  ASSERT_OK_AND_ASSIGN(auto first, state_.TryGetMeta(req));
  ASSERT_TRUE(first.has_value());
  EXPECT_EQ(first->global_indexes(), (std::vector<int64_t>{0, 1, 2}));
  std::vector<std::string> keys;
  for (int i = 0; i < 1500; ++i) keys.push_back("k" + std::to_string(i));
  size_t most = 0;
  for (int step = 0; step < 12; ++step) {
    BatchMeta batch = Retrieve("p", keys, true);
    ASSERT_EQ(batch.size(), keys.size());
    Produce(batch, {"x"});
    BatchMeta victims = state_.BeginKvClear("p", keys);
    ASSERT_EQ(victims.size(), keys.size());
    Release(victims);
    most = std::max(most, state_.RecordCount("p"));
  }
  EXPECT_LE(most, 2 * keys.size() + 6) << "released records pile up";
  EXPECT_EQ(state_.RecordCount("p"), 6u) << "the last release leaves only the live samples";
  // The live samples keep their keys, and task t is where it was: the
  // three it consumed are not served again, the other three are.
  BatchMeta found = Retrieve("p", {"e5", "e0"}, false);
  EXPECT_EQ(found.global_indexes(), (std::vector<int64_t>{5, 0}));
  EXPECT_EQ(KeyOf("p", 4), "e4");
  req.batch_size = 10;
  ASSERT_OK_AND_ASSIGN(auto rest, state_.TryGetMeta(req));
  ASSERT_TRUE(rest.has_value());
  EXPECT_EQ(rest->global_indexes(), (std::vector<int64_t>{3, 4, 5}));
  // New samples after the renumbering are served in order, once.
  Produce(Retrieve("p", {"n0", "n1"}, true), {"x"});
  ASSERT_OK_AND_ASSIGN(auto fresh, state_.TryGetMeta(req));
  ASSERT_TRUE(fresh.has_value());
  EXPECT_EQ(fresh->size(), 2u);
  EXPECT_EQ(KeysOf("p"), (std::vector<std::string>{"e0", "e1", "e2", "e3", "e4", "e5", "n0", "n1"}));
}

TEST_F(KvStateTest, ARetrieveReplyPackedFromRecordsIsTheMetasBytes) {
  // The controller packs kv_retrieve replies straight from its records
  // (SampleRows); they must be byte for byte what the meta packs to.
  std::vector<std::string> keys;
  for (int i = 0; i < 40; ++i) keys.push_back("k" + std::to_string(i));
  BatchMeta m = Retrieve("p", keys, true);
  std::vector<SampleMeta> samples = m.samples();
  for (size_t i = 0; i < samples.size(); ++i) {
    FieldInfo same = I64Field(4), own = I64Field(static_cast<int64_t>(i % 3) + 1), packed = I64Field(2);
    packed.pack = i < 20 ? 7 : 9;  // two packs: a column of ids
    packed.offset = 16 * (i % 20);
    own.pack = i % 2 == 0 ? 0 : 11;  // some values under their own keys
    own.offset = own.pack == 0 ? 0 : 64 * i;
    samples[i].fields = {same, own, packed};
    if (i == 5) samples[i].custom["score"] = MetaValue(int64_t{3});
  }
  ASSERT_OK(state_.MarkProduced(BatchMeta({"same", "own", "packed"}, samples)));
  auto bytes = [](const auto& meta) {
    return tqds::wire::PackBody([&](Packer& pk) { PackBatchMeta(pk, meta); });
  };
  std::vector<std::string> pick = {"k3", "k0", "k39", "k17", "k20"};
  for (const auto& ask : {keys, pick, std::vector<std::string>{"k1"}, std::vector<std::string>{"nobody"}}) {
    ASSERT_OK_AND_ASSIGN(SampleRows rows, state_.KvRetrieveRows("p", ask, false));
    ASSERT_OK_AND_ASSIGN(BatchMeta meta, state_.KvRetrieve("p", ask, false));
    EXPECT_EQ(rows.size(), meta.size());
    EXPECT_EQ(bytes(rows), bytes(meta)) << ask.size() << " keys";
  }
  // An unknown partition: no rows, the bytes of an empty meta.
  ASSERT_OK_AND_ASSIGN(SampleRows none, state_.KvRetrieveRows("q", {"a"}, false));
  EXPECT_EQ(bytes(none), bytes(BatchMeta()));
  // get_meta answers too (the modes that change nothing, so both can run),
  // a field no sample has included.
  for (FetchMode mode : {FetchMode::kForceFetch, FetchMode::kForceFetchAll}) {
    GetMetaRequest req = Req("p", "", {"packed", "nothing", "same"}, 25, mode);
    ASSERT_OK_AND_ASSIGN(auto rows, state_.TryGetMetaRows(req));
    ASSERT_OK_AND_ASSIGN(auto meta, state_.TryGetMeta(req));
    ASSERT_TRUE(rows.has_value() && meta.has_value());
    EXPECT_EQ(bytes(*rows), bytes(*meta));
    EXPECT_EQ(rows->size(), mode == FetchMode::kForceFetchAll ? 40u : 0u) << "no sample has 'nothing'";
    req.fields = {"own", "same"};
    ASSERT_OK_AND_ASSIGN(rows, state_.TryGetMetaRows(req));
    ASSERT_OK_AND_ASSIGN(meta, state_.TryGetMeta(req));
    EXPECT_EQ(bytes(*rows), bytes(*meta));
    EXPECT_EQ(rows->size(), mode == FetchMode::kForceFetchAll ? 40u : 25u);
  }
}

}  // namespace
}  // namespace tq::internal
