// The KV API end to end over real sockets: a controller with embedded
// storage units and TransferQueueClient's kv_* calls, plus malformed KV
// requests from a raw peer.
#include <gtest/gtest.h>

#include <chrono>
#include <string>
#include <vector>

#include "common/test_util.h"
#include "common/wire/rpc.h"
#include "tq/client.h"
#include "tq/controller.h"

namespace tq {
namespace {

using namespace std::chrono_literals;
using tqds::wire::Message;
using tqds::wire::MsgType;
using tqds::wire::RpcClient;

// One int64 scalar per sample.
Batch ScalarInts(const std::string& field, const std::vector<int64_t>& v) {
  Batch b(v.size());
  Column col;
  for (int64_t x : v) col.push_back(Value::Tensor(DType::kInt64, {}, Buffer::Copy(&x, 8)).MoveValue());
  EXPECT_OK(b.AddField(field, std::move(col)));
  return b;
}

std::vector<int64_t> IntsOf(const Batch& b, const std::string& field) {
  std::vector<int64_t> out;
  int f = -1;
  for (size_t i = 0; i < b.keys().size(); ++i) {
    if (b.keys()[i] == field) f = static_cast<int>(i);
  }
  if (f < 0) return out;
  for (const Value& v : b.column(static_cast<size_t>(f))) out.push_back(*v.as<int64_t>());
  return out;
}

class KvControllerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ControllerOptions o;
    o.embedded_storage_units = 2;
    o.storage_unit_capacity_bytes = uint64_t{1} << 26;
    ASSERT_OK_AND_ASSIGN(controller_, TransferQueueController::Start(o));
    client_ = std::make_unique<TransferQueueClient>("kv-test", controller_->address());
    ASSERT_OK(client_->initialize_storage_manager("SimpleStorageManager"));
  }

  uint64_t StoredKeys() {
    uint64_t total = 0;
    for (const auto& u : controller_->storage_units()) {
      auto c = RpcClient::Connect(u);
      EXPECT_TRUE(c.ok());
      if (!c.ok()) continue;
      auto rep = (*c)->CallSync(Message(MsgType::kUnitStats, 0), 10s);
      EXPECT_TRUE(rep.ok());
      if (!rep.ok()) continue;
      auto rd = tqds::wire::MapReader::Of(rep->body(), "UnitStats");
      EXPECT_TRUE(rd.ok());
      if (rd.ok()) total += rd->Get<uint64_t>("keys").ValueOr(0);
    }
    return total;
  }

  Result<Message> Raw(Message m) {
    if (!raw_) {
      auto c = RpcClient::Connect(controller_->address());
      if (!c.ok()) return c.status();
      raw_ = c.MoveValue();
    }
    return raw_->CallSync(std::move(m), 10s);
  }

  std::unique_ptr<TransferQueueController> controller_;
  std::unique_ptr<TransferQueueClient> client_;
  std::unique_ptr<RpcClient> raw_;
};

TEST_F(KvControllerTest, PutGetListClearByKey) {
  ASSERT_OK_AND_ASSIGN(BatchMeta created, client_->kv_retrieve("p", {"a", "b", "c"}, true));
  ASSERT_EQ(created.size(), 3u);
  ASSERT_OK(client_->put(ScalarInts("x", {10, 20, 30}), created));
  // Append a column to a subset of keys (how upstream adds fields).
  ASSERT_OK_AND_ASSIGN(BatchMeta ab, client_->kv_retrieve("p", {"b", "a"}, true));
  ASSERT_OK(client_->put(ScalarInts("y", {2, 1}), ab));

  ASSERT_OK_AND_ASSIGN(BatchMeta got, client_->kv_retrieve("p", {"c", "a", "nope"}, false));
  EXPECT_EQ(got.field_names(), (std::vector<std::string>{"x"})) << "c has no y";
  ASSERT_OK_AND_ASSIGN(Batch rows, client_->get_data(got));
  EXPECT_EQ(IntsOf(rows, "x"), (std::vector<int64_t>{30, 10}));
  ASSERT_OK_AND_ASSIGN(BatchMeta both, client_->kv_retrieve("p", {"a", "b"}));
  EXPECT_EQ(both.field_names(), (std::vector<std::string>{"x", "y"}));
  ASSERT_OK_AND_ASSIGN(rows, client_->get_data(both));
  EXPECT_EQ(IntsOf(rows, "y"), (std::vector<int64_t>{1, 2}));

  // Tags are custom meta, of any type.
  auto tagged = both;
  tagged.mutable_samples()[0].custom = {{"flag", true}, {"list", MetaList{int64_t{1}, MetaValue()}}};
  ASSERT_OK(client_->set_custom_meta(tagged));
  ASSERT_OK_AND_ASSIGN(KvListing listing, client_->kv_list(std::string("p")));
  ASSERT_EQ(listing.size(), 1u);
  ASSERT_EQ(listing[0].entries.size(), 3u);
  EXPECT_EQ(listing[0].entries[0], (KvEntry{"a", tagged.samples()[0].custom}));
  EXPECT_EQ(listing[0].entries[2], (KvEntry{"c", {}}));

  ASSERT_OK_AND_ASSIGN(auto keys, client_->kv_keys("p", {got.samples()[0].global_index, 999}));
  EXPECT_EQ(keys, (std::vector<std::optional<std::string>>{"c", std::nullopt}));
  EXPECT_STATUS(client_->kv_keys("nope", {0}), kNotFound, "nope");

  // kv_clear frees storage, the key vanishes, the partition stays.
  uint64_t before = StoredKeys();
  ASSERT_OK(client_->kv_clear("p", {"a", "missing"}));
  EXPECT_EQ(StoredKeys(), before - 2) << "a's x and y are freed";
  ASSERT_OK(client_->kv_clear("p", {"a"}));  // again: nothing
  ASSERT_OK(client_->kv_clear("nope", {"a"}));
  ASSERT_OK_AND_ASSIGN(listing, client_->kv_list(std::nullopt));
  ASSERT_EQ(listing.size(), 1u);
  ASSERT_EQ(listing[0].entries.size(), 2u);
  EXPECT_EQ(listing[0].entries[0].key, "b");
  ASSERT_OK(client_->kv_clear("p", {"b", "c"}));
  EXPECT_EQ(StoredKeys(), 0u);
  ASSERT_OK_AND_ASSIGN(auto parts, client_->list_partitions());
  EXPECT_EQ(parts, (std::vector<std::string>{"p"}));
  ASSERT_OK_AND_ASSIGN(listing, client_->kv_list(std::string("p")));
  EXPECT_EQ(listing, (KvListing{{"p", {}}}));
  // clear_partition drops the emptied partition.
  ASSERT_OK(client_->clear_partition("p"));
  ASSERT_OK_AND_ASSIGN(parts, client_->list_partitions());
  EXPECT_TRUE(parts.empty());
}

// kv_put on a storage that does not pack: the keys' samples are asked for
// first, then written; the answer is as the one-step put's.
TEST_F(KvControllerTest, KvPutOnUnpackedStorage) {
  ASSERT_OK_AND_ASSIGN(KvPutResult r, client_->kv_put("p", {"a", "b"}, ScalarInts("x", {1, 2})));
  EXPECT_EQ(r.fields, (std::vector<std::string>{"x"}));
  EXPECT_TRUE(r.tags.empty());
  ASSERT_OK_AND_ASSIGN(BatchMeta a, client_->kv_retrieve("p", {"a"}));
  a.mutable_samples()[0].custom = {{"t", int64_t{5}}};
  ASSERT_OK(client_->set_custom_meta(a));
  ASSERT_OK_AND_ASSIGN(r, client_->kv_put("p", {"c", "a"}, ScalarInts("y", {30, 10})));
  EXPECT_EQ(r.fields, (std::vector<std::string>{"y"}));
  EXPECT_EQ(r.tags, (std::vector<CustomMeta>{{}, {{"t", int64_t{5}}}}));
  ASSERT_OK_AND_ASSIGN(BatchMeta got, client_->kv_retrieve("p", {"a", "c"}));
  ASSERT_OK_AND_ASSIGN(Batch rows, client_->get_data(got));
  EXPECT_EQ(IntsOf(rows, "y"), (std::vector<int64_t>{10, 30}));
  EXPECT_STATUS(client_->kv_put("p", {"a"}, ScalarInts("x", {1, 2})), kInvalid, "1 keys but the batch has 2 rows");
  EXPECT_STATUS(client_->kv_put("p", {"a", "a"}, ScalarInts("x", {1, 2})), kInvalid, "listed twice");
}

TEST_F(KvControllerTest, ReusedIndexInAnotherPartitionHasNoKey) {
  ASSERT_OK_AND_ASSIGN(BatchMeta a, client_->kv_retrieve("A", {"k"}, true));
  ASSERT_OK(client_->put(ScalarInts("x", {1}), a));
  ASSERT_OK(client_->kv_clear("A", {"k"}));
  ASSERT_OK_AND_ASSIGN(BatchMeta b, client_->put(ScalarInts("x", {2}), "B"));
  ASSERT_EQ(b.samples()[0].global_index, a.samples()[0].global_index);
  ASSERT_OK_AND_ASSIGN(auto keys, client_->kv_keys("B", b.global_indexes()));
  EXPECT_EQ(keys[0], std::nullopt);
  // Re-putting the cleared key makes a fresh sample.
  ASSERT_OK_AND_ASSIGN(BatchMeta again, client_->kv_retrieve("A", {"k"}, true));
  EXPECT_NE(again.samples()[0].generation, a.samples()[0].generation);
  EXPECT_TRUE(again.field_names().empty());
}

TEST_F(KvControllerTest, BadArgumentsAndMalformedRequests) {
  EXPECT_STATUS(client_->kv_retrieve("p", {"a", "a"}, true), kInvalid, "listed twice");
  EXPECT_STATUS(client_->kv_retrieve("p", {""}, true), kInvalid, "must not be empty");
  EXPECT_STATUS(client_->kv_clear("", {"a"}), kInvalid, "partition_id");
  EXPECT_STATUS(client_->kv_list(std::string(300, 'x')), kInvalid, "256");
  for (auto t : {MsgType::kCtlKvRetrieve, MsgType::kCtlKvPut, MsgType::kCtlKvKeys, MsgType::kCtlKvClear}) {
    auto r = Raw(Message(t, 0));
    EXPECT_TRUE(r.status().IsInvalid()) << int(t) << ": " << r.status().ToString();
  }
  Message bad(MsgType::kCtlKvRetrieve, 0);
  bad.set_body(tqds::wire::PackBody([](auto& pk) {
    pk.pack_map(2);
    pk.pack("partition_id");
    pk.pack("p");
    pk.pack("keys");
    pk.pack_array(1);
    pk.pack_array(0);
  }));
  EXPECT_STATUS(Raw(std::move(bad)), kInvalid, "keys[0] must be a string");
  // A nil KvList body lists every partition; the controller still serves.
  ASSERT_OK(Raw(Message(MsgType::kCtlKvList, 0)));
  ASSERT_OK_AND_ASSIGN(BatchMeta m, client_->kv_retrieve("p", {"a"}, true));
  EXPECT_EQ(m.size(), 1u);
}

}  // namespace
}  // namespace tq
