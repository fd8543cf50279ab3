// The datasystem backend (YuanrongStorageManager) end to end: the seed's
// single-node flow in C++, config errors, ragged/object/scalar fields,
// clearing frees the worker's memory, zero-copy reads pin and release, and
// exactly-once delivery to 3 consumer processes through both backends.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <set>
#include <sstream>
#include <thread>

#include "backend_test_util.h"
#include "common/test_util.h"
#include "consumer_output.h"
#include "ds/kv_client.h"
#include "tq/client.h"
#include "tq/controller.h"

namespace tq {
namespace {

using testing::Collect;
using testing::Seen;
using testing::WaitUntilReady;
// How long a consumer may stay silent before its output is judged.
constexpr std::chrono::seconds kQuiet{60};

using testing::ControllerProcess;
using testing::DsWorker;

class YuanrongBackendTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(worker_.ok()) << "dscli start failed";
    ControllerOptions o;
    auto c = TransferQueueController::Start(o);
    ASSERT_TRUE(c.ok()) << c.status().ToString();
    controller_ = c.MoveValue();
  }
  std::unique_ptr<TransferQueueClient> Client(const std::string& id) {
    auto c = std::make_unique<TransferQueueClient>(id, controller_->address());
    Status st = c->initialize_storage_manager("YuanrongStorageManager", worker_.config());
    EXPECT_TRUE(st.ok()) << st.ToString();
    return c;
  }
  ds::WorkerStats Stats() {
    ds::KVClient kv("127.0.0.1", worker_.port());
    EXPECT_TRUE(kv.Init().ok());
    auto s = kv.Stats();
    EXPECT_TRUE(s.ok()) << s.status().ToString();
    return s.ok() ? *s : ds::WorkerStats{};
  }

  DsWorker worker_;
  std::unique_ptr<TransferQueueController> controller_;
};

// The seed's demo: {"text": float [[1,2],[3,4]], "prompt": ["5","6"]} into
// partition "train_0", read back by task "generate_sequences".
TEST_F(YuanrongBackendTest, SeedSingleNodeFlow) {
  auto client = Client("Trainer");
  Batch data(2);
  std::vector<float> text = {1, 2, 3, 4};
  ASSERT_TRUE(data.AddTensor("text", DType::kFloat32, {2, 2}, Buffer::Copy(text.data(), 16)).ok());
  ASSERT_TRUE(data.AddStrings("prompt", {"5", "6"}).ok());
  auto put = client->put(data, "train_0");
  ASSERT_TRUE(put.ok()) << put.status().ToString();

  auto meta = client->get_meta({"text", "prompt"}, 2, "train_0", "generate_sequences");
  ASSERT_TRUE(meta.ok()) << meta.status().ToString();
  ASSERT_EQ(meta->size(), 2u);
  auto out = client->get_data(*meta);
  ASSERT_TRUE(out.ok()) << out.status().ToString();
  EXPECT_TRUE(out->Equals(data));
  auto dense = out->Stack("text");
  ASSERT_TRUE(dense.ok());
  EXPECT_EQ(dense->shape(), (Shape{2, 2}));
  EXPECT_EQ(dense->as<float>()[3], 4.0f);
  EXPECT_EQ((**out->Get("prompt"))[1].str(), "6");
  // Each sample is read once per task: nothing is left for this task.
  auto again = client->get_meta({"text"}, 1, "train_0", "generate_sequences", {}, FetchMode::kPoll);
  ASSERT_TRUE(again.ok());
  EXPECT_TRUE(again->empty());
}

TEST_F(YuanrongBackendTest, RaggedObjectAndScalarFields) {
  auto client = Client("c");
  Batch b(3);
  Column ragged, scalars, blobs;
  for (int i = 0; i < 3; ++i) {
    std::vector<int32_t> v(static_cast<size_t>(i * 5 + 1), i);
    ragged.push_back(Value::Tensor(DType::kInt32, {i * 5 + 1}, Buffer::Copy(v.data(), v.size() * 4)).MoveValue());
    double d = i * 1.5;
    scalars.push_back(Value::Tensor(DType::kFloat64, {}, Buffer::Copy(&d, 8)).MoveValue());
    blobs.push_back(Value::Object(Buffer::CopyString(std::string(static_cast<size_t>(i), '\0') + "x")));
  }
  ASSERT_TRUE(b.AddField("ragged", ragged).ok());
  ASSERT_TRUE(b.AddField("scalar", scalars).ok());
  ASSERT_TRUE(b.AddField("blob", blobs).ok());
  ASSERT_TRUE(client->put(b, "p").ok());
  auto meta = client->get_meta({"ragged", "scalar", "blob"}, 3, "p", "t");
  ASSERT_TRUE(meta.ok());
  auto out = client->get_data(*meta);
  ASSERT_TRUE(out.ok()) << out.status().ToString();
  EXPECT_TRUE(out->Equals(b));
  EXPECT_TRUE((**out->Get("scalar"))[2].shape().empty()) << "0-d stays ()";
  EXPECT_FALSE(out->IsUniform("ragged"));
}

TEST_F(YuanrongBackendTest, ClearFreesDatasystemMemoryAndStaleMetaGetsNotFound) {
  auto client = Client("c");
  auto before = Stats();
  Batch b(50);
  std::vector<uint8_t> bytes(50 * 65536, 7);
  ASSERT_TRUE(b.AddTensor("x", DType::kUInt8, {50, 65536}, Buffer::Copy(bytes.data(), bytes.size())).ok());
  ASSERT_TRUE(client->put(b, "big").ok());
  auto during = Stats();
  EXPECT_GE(during.objects, before.objects + 50);
  EXPECT_GE(during.used, before.used + 50 * 65536);
  auto meta = client->get_meta({"x"}, 50, "big", "t");
  ASSERT_TRUE(meta.ok());
  ASSERT_TRUE(client->clear_partition("big").ok());
  auto after = Stats();
  EXPECT_EQ(after.objects, before.objects);
  EXPECT_EQ(after.used, before.used);
  auto stale = client->get_data(*meta);
  ASSERT_FALSE(stale.ok());
  EXPECT_TRUE(stale.status().IsNotFound()) << stale.status().ToString();
  EXPECT_TRUE(client->clear_partition("big").ok()) << "clears are idempotent";
}

TEST_F(YuanrongBackendTest, ReadsAreZeroCopyViewsThatPinUntilReleased) {
  auto client = Client("c");
  Batch b(4);
  std::vector<uint8_t> bytes(4 * 1024 * 1024, 3);
  ASSERT_TRUE(b.AddTensor("x", DType::kUInt8, {4, 1024 * 1024}, Buffer::Copy(bytes.data(), bytes.size())).ok());
  ASSERT_TRUE(client->put(b, "z").ok());
  auto meta = client->get_meta({"x"}, 4, "z", "t");
  ASSERT_TRUE(meta.ok());
  {
    auto out = client->get_data(*meta);
    ASSERT_TRUE(out.ok());
    EXPECT_GT(Stats().pinned_blocks, 0u) << "views of shared memory pin their objects";
    EXPECT_TRUE(out->Equals(b));
  }
  EXPECT_EQ(Stats().pinned_blocks, 0u) << "dropping the batch releases the pins";
}

TEST_F(YuanrongBackendTest, EachFieldOfALargePutStacksWithoutACopy) {
  // 3 fields x 1024 samples x 4 KiB (12 MiB, 3072 keys): large enough for
  // the two-part parallel put. Every field's samples must still come back
  // as adjacent views of one read, so Stack returns a view (what Python
  // hands out as one tensor).
  auto client = Client("c");
  const int64_t n = 1024, width = 4096;
  Batch b(n);
  for (int f = 0; f < 3; ++f) {
    std::vector<uint8_t> bytes(static_cast<size_t>(n * width));
    for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<uint8_t>(i * 7 + f);
    ASSERT_TRUE(b.AddTensor("f" + std::to_string(f), DType::kUInt8, {n, width},
                            Buffer::Copy(bytes.data(), bytes.size()))
                    .ok());
  }
  ASSERT_TRUE(client->put(b, "wide").ok());
  auto meta = client->get_meta({"f0", "f1", "f2"}, n, "wide", "t");
  ASSERT_TRUE(meta.ok());
  auto out = client->get_data(*meta);
  ASSERT_TRUE(out.ok()) << out.status().ToString();
  EXPECT_TRUE(out->Equals(b));
  for (size_t f = 0; f < 3; ++f) {
    EXPECT_NE(out->Dense(f), nullptr) << "field " << f << " lies in one pack back to back: read as one range";
  }
  for (const std::string name : {"f0", "f1", "f2"}) {
    auto stacked = out->Stack(name);
    ASSERT_TRUE(stacked.ok());
    EXPECT_EQ(stacked->data().data(), (*out->Get(name))->front().data().data())
        << "field " << name << " was copied by Stack: its samples are not adjacent views of one read";
  }
  // The get ran as two requests (12 MiB): once every sample is cleared,
  // their packs are freed and the stale meta's get fails with NotFound
  // naming a pack's key.
  out = Status::Internal("released");
  ASSERT_TRUE(client->clear_partition("wide").ok());
  auto broken = client->get_data(*meta);
  ASSERT_FALSE(broken.ok());
  EXPECT_TRUE(broken.status().IsNotFound()) << broken.status().ToString();
  EXPECT_NE(broken.status().message().find("/pack/"), std::string::npos) << broken.status().ToString();
  EXPECT_EQ(Stats().objects, 0u) << "clearing every sample frees every pack";
}

TEST_F(YuanrongBackendTest, AMetaThatPointsOutsideItsPackIsAnErrorNamingTheSample) {
  // A BatchMeta is the caller's (a pickle, a hand-edited copy): a recorded
  // place past the pack's end, or in a pack that does not exist, is an
  // error naming what was wrong, never bytes from somewhere else.
  auto client = Client("c");
  Batch b(4);
  std::vector<uint8_t> bytes(4 * 64);
  for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<uint8_t>(i);
  ASSERT_TRUE(b.AddTensor("x", DType::kUInt8, {4, 64}, Buffer::Copy(bytes.data(), bytes.size())).ok());
  ASSERT_OK_AND_ASSIGN(BatchMeta meta, client->put(b, "h"));
  const FieldInfo& fi = meta.samples()[1].fields[0];
  ASSERT_NE(fi.pack, 0u) << "64-byte values are packed";
  EXPECT_EQ(fi.offset, 64u) << "same-sized values lie back to back";
  ASSERT_OK_AND_ASSIGN(Batch ok, client->get_data(meta));
  EXPECT_TRUE(ok.Equals(b));

  BatchMeta past = meta;
  past.mutable_samples()[1].fields[0].offset = 4 * 64 - 8;  // 8 bytes of a 64-byte value fit
  EXPECT_STATUS(client->get_data(past), kInternal, "field 'x' of sample " +
                                                      std::to_string(meta.samples()[1].global_index) +
                                                      " in partition 'h' is recorded at bytes [248, 312) of pack");
  BatchMeta elsewhere = meta;
  elsewhere.mutable_samples()[2].fields[0].pack ^= 1;
  EXPECT_STATUS(client->get_data(elsewhere), kNotFound, "/pack/");

  // Read as one range (every record back to back in one pack), a field
  // whose range runs past its pack's end is refused the same way.
  ASSERT_NE(ok.Dense(0), nullptr);
  BatchMeta shifted = meta;
  for (auto& s : shifted.mutable_samples()) s.fields[0].offset += 8;
  EXPECT_STATUS(client->get_data(shifted), kInternal, "is recorded at bytes [8, 264) of pack");
  BatchMeta reshaped = meta;  // a shape that does not match the recorded sizes
  for (auto& s : reshaped.mutable_samples()) s.fields[0].shape = {32};
  EXPECT_STATUS(client->get_data(reshaped), kInvalid, "field 'x'");
}

TEST_F(YuanrongBackendTest, KvGetReadsDenseFieldsWholeAndOthersPerSample) {
  auto client = Client("c");
  const int64_t n = 300;
  std::vector<float> dense(static_cast<size_t>(n) * 8);
  for (size_t i = 0; i < dense.size(); ++i) dense[i] = static_cast<float>(i) * 0.5f;
  Batch b(n);
  ASSERT_OK(b.AddTensor("x", DType::kFloat32, {n, 8}, Buffer::Copy(dense.data(), dense.size() * 4)));
  ASSERT_OK(b.AddTensor("y", DType::kFloat32, {n, 2}, Buffer::Copy(dense.data(), static_cast<size_t>(n) * 8)));
  std::vector<std::string> keys;
  for (int64_t i = 0; i < n; ++i) keys.push_back("k" + std::to_string(i));
  ASSERT_OK_AND_ASSIGN(KvPutResult put, client->kv_put("kvget", keys, b));
  EXPECT_EQ(put.fields, (std::vector<std::string>{"x", "y"}));

  // Every field back to back in one pack: read whole, byte-identical, in
  // the order of the keys found (a missing key left out).
  std::vector<std::string> some = {"k5", "nope", "k6", "k7"};
  ASSERT_OK_AND_ASSIGN(KvGetResult all, client->kv_get("kvget", keys));
  EXPECT_EQ(all.fields, (std::vector<std::string>{"x", "y"}));
  EXPECT_EQ(all.found, static_cast<size_t>(n));
  ASSERT_TRUE(all.batch.has_value());
  ASSERT_NE(all.batch->Dense(0), nullptr);
  EXPECT_TRUE(all.batch->Equals(b));
  ASSERT_OK_AND_ASSIGN(KvGetResult part, client->kv_get("kvget", {"k5", "k6", "k7"}, std::vector<std::string>{"y"}));
  ASSERT_TRUE(part.batch.has_value());
  EXPECT_EQ(part.batch->keys(), (std::vector<std::string>{"y"}));
  ASSERT_OK_AND_ASSIGN(Value y, part.batch->Stack("y"));
  EXPECT_EQ(std::memcmp(y.data().data(), dense.data() + 10, 3 * 8), 0);

  // One key: its one record per field is read whole too.
  ASSERT_OK_AND_ASSIGN(KvGetResult one, client->kv_get("kvget", {"k3"}));
  ASSERT_TRUE(one.batch.has_value());
  EXPECT_NE(one.batch->Dense(0), nullptr);
  ASSERT_OK_AND_ASSIGN(Batch third, b.SelectSamples({3}));
  EXPECT_TRUE(one.batch->Equals(third));

  // Keys out of order and a missing key: read per sample, the same values.
  ASSERT_OK_AND_ASSIGN(KvGetResult mixed, client->kv_get("kvget", {"k7", "nope", "k5"}));
  EXPECT_EQ(mixed.found, 2u);
  ASSERT_TRUE(mixed.batch.has_value());
  EXPECT_EQ(mixed.batch->Dense(0), nullptr) << "k7 then k5 are not back to back";
  ASSERT_OK_AND_ASSIGN(Batch expect, b.SelectSamples({7, 5}));
  EXPECT_TRUE(mixed.batch->Equals(expect));

  // A field of ragged records (one per sample), named twice: read once.
  Batch r(3);
  tq::Column ragged;
  for (int64_t i = 0; i < 3; ++i) {
    ASSERT_OK_AND_ASSIGN(Value v, Value::Tensor(DType::kFloat32, {i + 1}, Buffer::Copy(dense.data() + i, 4 * (i + 1))));
    ragged.push_back(v);
  }
  ASSERT_OK(r.AddField("r", ragged));
  ASSERT_OK_AND_ASSIGN(KvPutResult rput, client->kv_put("ragged", {"a", "b", "c"}, r));
  ASSERT_OK_AND_ASSIGN(KvGetResult twice, client->kv_get("ragged", {"a", "b", "c"}, std::vector<std::string>{"r", "r"}));
  ASSERT_TRUE(twice.batch.has_value());
  EXPECT_EQ(twice.batch->keys(), (std::vector<std::string>{"r"}));
  EXPECT_TRUE(twice.batch->Equals(r));

  // A field some key lacks, or no key found: nothing read.
  ASSERT_OK_AND_ASSIGN(KvGetResult lacking, client->kv_get("kvget", {"k1"}, std::vector<std::string>{"x", "z"}));
  EXPECT_EQ(lacking.found, 1u);
  EXPECT_FALSE(lacking.batch.has_value());
  ASSERT_OK_AND_ASSIGN(KvGetResult none, client->kv_get("kvget", {"nope"}));
  EXPECT_EQ(none.found, 0u);
  EXPECT_FALSE(none.batch.has_value());
  ASSERT_OK_AND_ASSIGN(KvGetResult elsewhere, client->kv_get("no-such-partition", {"k1"}));
  EXPECT_EQ(elsewhere.found, 0u);
}

TEST_F(YuanrongBackendTest, ManySmallOddSizedValuesOfABigPutComeBackIntact) {
  // Over 4 MiB in values of 1 to 4099 bytes at every alignment: the put
  // copies them all with streaming stores (the big-put path), whose head,
  // whole lines and tail must each land where they belong.
  auto client = Client("c");
  const size_t n = 3000;
  Batch b(n);
  Column ragged, tiny;
  size_t total = 0;
  for (size_t i = 0; i < n; ++i) {
    const size_t len = 1 + (i * 1543) % 4099;
    std::vector<uint8_t> v(len);
    for (size_t j = 0; j < len; ++j) v[j] = static_cast<uint8_t>(i * 31 + j * 7 + 1);
    total += len + 3;
    ragged.push_back(Value::Tensor(DType::kUInt8, {static_cast<int64_t>(len)}, Buffer::Copy(v.data(), len))
                         .MoveValue());
    tiny.push_back(Value::Object(Buffer::CopyString(std::string(3, static_cast<char>('a' + i % 26)))));
  }
  ASSERT_GT(total, size_t{4} << 20);
  ASSERT_TRUE(b.AddField("ragged", ragged).ok());
  ASSERT_TRUE(b.AddField("tiny", tiny).ok());
  ASSERT_TRUE(client->put(b, "odd").ok());
  auto meta = client->get_meta({"ragged", "tiny"}, static_cast<int64_t>(n), "odd", "t");
  ASSERT_TRUE(meta.ok());
  auto out = client->get_data(*meta);
  ASSERT_TRUE(out.ok()) << out.status().ToString();
  EXPECT_TRUE(out->Equals(b));
}

TEST_F(YuanrongBackendTest, ValuesPutByRowsLieAsTheSameValuesPutOneByOne) {
  // A dense field handed over as one buffer of rows is copied into its
  // packs in runs: each value must get the place (same pack, same offset)
  // it gets when put one by one, also where the rows pass a pack's 64 MiB
  // and start another, and read back byte for byte.
  StorageContext ctx{worker_.config(), controller_->address(), "rows"};
  ASSERT_OK_AND_ASSIGN(auto storage, CreateStorageManager("YuanrongStorageManager", ctx));
  const size_t n = 1700;
  const uint64_t big = 40000, odd = 12;  // 1700 x 40000 B = 68 MB: two packs
  std::vector<uint8_t> a(n * big), b(n * odd);
  for (size_t i = 0; i < a.size(); ++i) a[i] = static_cast<uint8_t>(i * 131 + i / 40000);
  for (size_t i = 0; i < b.size(); ++i) b[i] = static_cast<uint8_t>(i * 7 + 3);
  const Buffer rows_a = Buffer::Copy(a.data(), a.size()), rows_b = Buffer::Copy(b.data(), b.size());
  const std::vector<std::string> fields = {"a", "b"};
  const std::vector<SampleKey> keys(n, SampleKey{"p", -1, 0, 1});
  std::vector<FieldValues> by_rows = {FieldValues::Rows(rows_a, big), FieldValues::Rows(rows_b, odd)};
  std::vector<std::vector<Buffer>> one_by_one(2);
  for (size_t s = 0; s < n; ++s) {
    one_by_one[0].push_back(rows_a.Slice(s * big, big));
    one_by_one[1].push_back(rows_b.Slice(s * odd, odd));
  }
  std::vector<std::vector<Placement>> p_rows, p_each;
  ASSERT_OK(storage->PutPackingColumns(keys, fields, by_rows, &p_rows));
  ASSERT_OK(storage->PutPacking(keys, fields, one_by_one, &p_each));
  ASSERT_EQ(p_rows.size(), 2u);
  std::set<uint64_t> packs_a;
  for (size_t f = 0; f < 2; ++f) {
    ASSERT_EQ(p_rows[f].size(), n);
    for (size_t s = 0; s < n; ++s) {
      ASSERT_NE(p_rows[f][s].pack, 0u);
      EXPECT_EQ(p_rows[f][s].offset, p_each[f][s].offset) << "field " << f << " sample " << s;
      if (s > 0) {  // the same grouping into packs (their ids are random)
        EXPECT_EQ(p_rows[f][s].pack == p_rows[f][s - 1].pack, p_each[f][s].pack == p_each[f][s - 1].pack) << s;
      }
      if (f == 0) packs_a.insert(p_rows[f][s].pack);
    }
  }
  EXPECT_EQ(packs_a.size(), 2u) << "68 MB of rows take two packs";
  EXPECT_EQ(p_rows[0][1677].offset, 0u) << "the second pack starts with the first row that did not fit";
  const std::vector<std::vector<uint64_t>> sizes = {std::vector<uint64_t>(n, big), std::vector<uint64_t>(n, odd)};
  ASSERT_OK_AND_ASSIGN(auto back, storage->GetPacked(keys, fields, sizes, p_rows));
  for (size_t s = 0; s < n; ++s) {
    ASSERT_EQ(back[0][s].view(), one_by_one[0][s].view()) << s;
    ASSERT_EQ(back[1][s].view(), one_by_one[1][s].view()) << s;
  }
  // Rows that do not cover every sample are refused, naming the field; nothing is written.
  std::vector<std::vector<Placement>> p_short;
  std::vector<FieldValues> short_rows = {FieldValues::Rows(rows_a.Slice(0, big * (n - 1)), big),
                                         FieldValues::Rows(rows_b, odd)};
  EXPECT_STATUS(storage->PutPackingColumns(keys, fields, short_rows, &p_short), kInvalid, "field 'a' holds");
  // Rows of 0 bytes are placed as 0-byte values one by one are.
  std::vector<FieldValues> empty_rows = {FieldValues::Rows(Buffer(), 0)};
  std::vector<std::vector<Placement>> p_empty;
  ASSERT_OK(storage->PutPackingColumns(std::vector<SampleKey>(3, keys[0]), {"e"}, empty_rows, &p_empty));
  ASSERT_EQ(p_empty[0].size(), 3u);
  EXPECT_NE(p_empty[0][0].pack, 0u);
  EXPECT_EQ(p_empty[0][2].pack, p_empty[0][0].pack);
  std::vector<uint64_t> all;
  for (const auto& pl : {p_rows, p_each, p_empty}) {
    for (const auto& field : pl) {
      for (const Placement& x : field) all.push_back(x.pack);
    }
  }
  std::sort(all.begin(), all.end());
  all.erase(std::unique(all.begin(), all.end()), all.end());
  ASSERT_OK(storage->DeletePacks(1, all));
}

TEST(YuanrongConfigTest, ErrorsAtInitialisationSayWhatIsWrong) {
  ControllerOptions o;
  auto c = TransferQueueController::Start(o);
  ASSERT_TRUE(c.ok());
  TransferQueueClient client("c", (*c)->address());
  auto expect = [&](const std::string& type, const Config& cfg, const std::string& needle) {
    Status st = client.initialize_storage_manager(type, cfg);
    EXPECT_FALSE(st.ok()) << type << " " << cfg.dump();
    EXPECT_NE(st.message().find(needle), std::string::npos) << st.ToString();
  };
  expect("NoSuchManager", Config::object(), "YuanrongStorageManager");  // lists the known ones
  expect("YuanrongStorageManager", Config{{"client_name", "Other"}, {"host", "127.0.0.1"}, {"port", 1}},
         "unknown client_name 'Other'");
  expect("YuanrongStorageManager", Config{{"port", 31501}}, "'host'");
  expect("YuanrongStorageManager", Config{{"host", "127.0.0.1"}}, "'port'");
  expect("YuanrongStorageManager", Config{{"host", "127.0.0.1"}, {"port", "abc"}}, "'port'");
  int dead = testing::FreePort();
  auto t0 = std::chrono::steady_clock::now();
  expect("YuanrongStorageManager", Config{{"host", "127.0.0.1"}, {"port", dead}}, "dscli start");
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(15)) << "no hang on a missing worker";
  // A put before a working storage manager fails clearly.
  Batch b(1);
  ASSERT_TRUE(b.AddStrings("s", {"x"}).ok());
  auto put = client.put(b, "p");
  ASSERT_FALSE(put.ok());
  EXPECT_NE(put.status().message().find("initialize_storage_manager"), std::string::npos);
}

// 2 producer processes and 3 consumer processes (2 share task "train", 1 runs
// "reward"): each task sees each sample exactly once, byte-identical.
class ExactlyOnceTest : public ::testing::TestWithParam<std::string> {};

TEST_P(ExactlyOnceTest, ThreeConsumerProcessesTwoTasks) {
  const bool yuanrong = GetParam() == "yuanrong";
  std::unique_ptr<DsWorker> worker;
  if (yuanrong) {
    worker = std::make_unique<DsWorker>();
    ASSERT_TRUE(worker->ok());
  }
  ControllerProcess ctl(yuanrong ? 0 : 2);
  ASSERT_TRUE(ctl.ok());
  std::string cfg = yuanrong ? worker->config().dump() : Config{{"manager_type", "SimpleStorageManager"}}.dump();
  const int64_t per_producer = 3000, total = 2 * per_producer;
  std::vector<tqds::ChildProcess> consumers;
  for (const char* task : {"train", "train", "reward"}) {
    auto c = tqds::ChildProcess::Spawn({TQ_ROLE_BIN, "consume", ctl.address(), cfg, "part", task,
                                        std::to_string(total), "64"});
    ASSERT_TRUE(c.ok());
    consumers.push_back(std::move(*c));
  }
  ASSERT_TRUE(WaitUntilReady(consumers).ok());
  std::vector<tqds::ChildProcess> producers;
  for (int i = 0; i < 2; ++i) {
    auto p = tqds::ChildProcess::Spawn({TQ_ROLE_BIN, "produce", ctl.address(), cfg, "part",
                                        std::to_string(i * per_producer), std::to_string(per_producer), "100"});
    ASSERT_TRUE(p.ok());
    producers.push_back(std::move(*p));
  }
  for (auto& p : producers) {
    ASSERT_TRUE(p.WaitForLine("done", std::chrono::seconds(120)).ok());
    auto code = p.Wait(std::chrono::seconds(10));
    ASSERT_TRUE(code.ok() && *code == 0);
  }
  Seen a = Collect(consumers[0], kQuiet), b = Collect(consumers[1], kQuiet),
       r = Collect(consumers[2], kQuiet);
  for (const Seen* s : {&a, &b, &r}) {
    EXPECT_TRUE(s->done);
    EXPECT_EQ(s->corrupt, 0);
  }
  std::multiset<int64_t> train = a.uids;
  train.insert(b.uids.begin(), b.uids.end());
  EXPECT_EQ(train.size(), static_cast<size_t>(total)) << "train consumers together read every sample once";
  EXPECT_EQ(std::set<int64_t>(train.begin(), train.end()).size(), static_cast<size_t>(total)) << "no duplicates";
  EXPECT_EQ(r.uids.size(), static_cast<size_t>(total));
  EXPECT_EQ(std::set<int64_t>(r.uids.begin(), r.uids.end()).size(), static_cast<size_t>(total));
  EXPECT_GT(a.uids.size(), 0u);
  EXPECT_GT(b.uids.size(), 0u) << "both consumers of one task got work";
}

INSTANTIATE_TEST_SUITE_P(Backends, ExactlyOnceTest, ::testing::Values("simple", "yuanrong"));

}  // namespace
}  // namespace tq
