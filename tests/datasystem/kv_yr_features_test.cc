// The client calls behind yr.datasystem (openYuanrong's Python API) against a
// real worker: per-key outcomes of a batch write, zero-copy partial reads,
// Expire, HealthCheck and GenerateKey.
#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>
#include <thread>

#include "ds/kv_client.h"
#include "test_util.h"

namespace ds {
namespace {

using testing::WorkerProcess;

class KVYrFeaturesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    worker_ = std::make_unique<WorkerProcess>(WorkerProcess::Config{});
    ASSERT_EQ(worker_->Start(), "");
    client_ = std::make_unique<KVClient>("127.0.0.1", worker_->port());
    Status st = client_->Init();
    ASSERT_TRUE(st.ok()) << st.ToString();
  }
  std::unique_ptr<WorkerProcess> worker_;
  std::unique_ptr<KVClient> client_;
};

TEST_F(KVYrFeaturesTest, MSetEachReportsEveryKeyInlineAndThroughSharedMemory) {
  ASSERT_TRUE(client_->Set("a", "old").ok());
  SetParam nx;
  nx.if_absent = true;
  for (size_t size : {size_t{3}, size_t{200 << 10}}) {  // inline, then create + seal
    const std::string value(size, 'v');
    const std::string fresh = "fresh" + std::to_string(size);
    auto each = client_->MSetEach({"a", fresh}, {value, value}, nx);
    ASSERT_TRUE(each.ok()) << each.status().ToString();
    ASSERT_EQ(each->size(), 2u);
    EXPECT_TRUE((*each)[0].IsAlreadyExists()) << (*each)[0].ToString();
    EXPECT_NE((*each)[0].message().find("'a'"), std::string::npos);
    EXPECT_TRUE((*each)[1].ok());
    EXPECT_EQ(*client_->Get("a"), "old");
    EXPECT_EQ(*client_->Get(fresh), value);
  }
  // A batch of one existing key: its outcome, not a failed call.
  auto one = client_->MSetEach({"a"}, {std::string(200 << 10, 'x')}, nx);
  ASSERT_TRUE(one.ok());
  EXPECT_TRUE((*one)[0].IsAlreadyExists());
  EXPECT_TRUE(client_->MSetEach({"a"}, {"1", "2"}).status().IsInvalid());
}

TEST_F(KVYrFeaturesTest, ReadReturnsRangesAsViews) {
  ASSERT_TRUE(client_->Set("w", "world").ok());
  auto got = client_->Read({{"w", 1, 3}, {"w", 0, 100}, {"w", 4, 0}, {"missing", 0, 1}});
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ((*got)[0]->view(), "orl");
  EXPECT_EQ((*got)[1]->view(), "world");
  EXPECT_EQ((*got)[2]->view(), "d");
  EXPECT_FALSE((*got)[3].has_value());
  for (uint64_t offset : {uint64_t{5}, uint64_t{6}, UINT64_MAX}) {
    auto bad = client_->Read({{"w", offset, 1}});
    EXPECT_TRUE(bad.status().IsInvalid());
    EXPECT_EQ(bad.status().message().rfind("out of range", 0), 0u) << bad.status().message();
  }
  // A range past the end of a value stops at its end, even when offset + size wraps.
  auto wrap = client_->Read({{"w", 2, UINT64_MAX}});
  ASSERT_TRUE(wrap.ok());
  EXPECT_EQ((*wrap)[0]->view(), "rld");
}

TEST_F(KVYrFeaturesTest, ExpireSetsAndReplacesTheTimeToLive) {
  ASSERT_TRUE(client_->MSet({"e1", "e2", "keep"}, {"1", "2", "3"}).ok());
  auto exist = client_->Expire({"e1", "missing", "keep"}, 0);
  ASSERT_TRUE(exist.ok()) << exist.status().ToString();
  EXPECT_EQ(*exist, (std::vector<bool>{true, false, true}));
  ASSERT_TRUE(client_->Expire({"e1"}, 1).ok());
  EXPECT_TRUE(testing::Eventually([&] { return !(*client_->Exist({"e1"}))[0]; }));
  EXPECT_TRUE((*client_->Exist({"e2", "keep"}))[0]);
  // A longer TTL given later wins over the one set at write time.
  SetParam ttl;
  ttl.ttl_seconds = 1;
  ASSERT_TRUE(client_->Set("t", "v", ttl).ok());
  ASSERT_TRUE(client_->Expire({"t"}, 3600).ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(1600));  // past the first TTL: nothing to poll
  EXPECT_TRUE((*client_->Exist({"t"}))[0]);
}

TEST_F(KVYrFeaturesTest, MSetTxWritesEveryKeyOrNone) {
  SetParam nx;
  nx.if_absent = true;
  // Small values travel inline (Put), large ones through shared memory
  // (Create + Seal): both all or nothing.
  for (size_t size : {size_t{16}, size_t{200} << 10}) {
    const std::string tag = std::to_string(size);
    const std::string v(size, 'v');
    ASSERT_TRUE(client_->MSetTx({"tx1_" + tag, "tx2_" + tag}, {v, v}, nx).ok());
    EXPECT_EQ(*client_->Get("tx2_" + tag), v);
    ASSERT_TRUE(client_->Set("taken_" + tag, "old").ok());
    auto st = client_->MSetTx({"new1_" + tag, "taken_" + tag, "new2_" + tag}, {v, v, v}, nx);
    EXPECT_TRUE(st.IsAlreadyExists()) << st.ToString();
    EXPECT_NE(st.message().find("'taken_" + tag + "'"), std::string::npos) << st.ToString();
    EXPECT_NE(st.message().find("none of the 3 keys"), std::string::npos) << st.ToString();
    auto ex = client_->Exist({"new1_" + tag, "taken_" + tag, "new2_" + tag});
    ASSERT_TRUE(ex.ok());
    EXPECT_EQ(*ex, (std::vector<bool>{false, true, false})) << "a refused transaction wrote a key";
    EXPECT_EQ(*client_->Get("taken_" + tag), "old");
  }
  // Bounds and the required if-absent.
  std::vector<std::string> nine;
  std::vector<std::string_view> vals;
  for (int i = 0; i < 9; ++i) nine.push_back("nine" + std::to_string(i));
  vals.assign(9, "x");
  EXPECT_TRUE(client_->MSetTx(nine, vals, nx).IsInvalid());
  EXPECT_TRUE(client_->MSetTx({}, {}, nx).IsInvalid());
  EXPECT_TRUE(client_->MSetTx({"plain"}, {"x"}, SetParam{}).IsInvalid());
  EXPECT_FALSE(*client_->Exist({"plain"}).ValueOr({true}).begin());
}

TEST_F(KVYrFeaturesTest, AMovedBufferKeepsWhyItWasRefused) {
  // A refused transaction's buffers, moved (as the Python binding moves
  // them into its objects): the seal still names the key that exists, not
  // the one that was only cancelled with it.
  ASSERT_TRUE(client_->Set("moved_taken", "v").ok());
  SetParam tx;
  tx.if_absent = true;
  tx.all_or_nothing = true;
  auto bufs = client_->MCreate({"moved_fresh", "moved_taken"}, {4, 4}, tx);
  ASSERT_TRUE(bufs.ok()) << bufs.status().ToString();
  std::vector<WriteBuffer> moved;
  for (auto& b : *bufs) moved.push_back(std::move(b));
  Status st = client_->MSetBuffer(moved);
  EXPECT_TRUE(st.IsAlreadyExists()) << st.ToString();
  EXPECT_NE(st.message().find("moved_taken"), std::string::npos) << st.ToString();
  EXPECT_EQ(st.message().find("moved_fresh"), std::string::npos) << st.ToString();
  EXPECT_EQ(*client_->Exist({"moved_fresh"}), std::vector<bool>{false});
}

TEST_F(KVYrFeaturesTest, MSetTxLosesWholeWhenAKeyAppearsBeforeItsSeal) {
  // A transaction created in shared memory; another client writes one of its
  // keys before the seal: the seal refuses every key of the transaction.
  SetParam tx;
  tx.if_absent = true;
  tx.all_or_nothing = true;
  auto bufs = client_->MCreate({"race_a", "race_b"}, {4, 4}, tx);
  ASSERT_TRUE(bufs.ok()) << bufs.status().ToString();
  ASSERT_TRUE((*bufs)[0].Write("AAAA").ok());
  ASSERT_TRUE((*bufs)[1].Write("BBBB").ok());
  KVClient other("127.0.0.1", worker_->port());
  ASSERT_TRUE(other.Init().ok());
  ASSERT_TRUE(other.Set("race_b", "won!").ok());
  auto sealed = client_->MSetBuffer(*bufs);
  EXPECT_TRUE(sealed.IsAlreadyExists()) << sealed.ToString();
  auto ex = client_->Exist({"race_a", "race_b"});
  ASSERT_TRUE(ex.ok());
  EXPECT_EQ(*ex, (std::vector<bool>{false, true}));
  EXPECT_EQ(*client_->Get("race_b"), "won!");
  // Nothing is left pending or allocated by the refused transaction.
  auto stats = client_->Stats();
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->pending_creates, 0u);
  EXPECT_EQ(stats->objects, 1u);
}

TEST_F(KVYrFeaturesTest, HealthCheckAndGenerateKey) {
  EXPECT_TRUE(client_->HealthCheck().ok());
  std::set<std::string> keys;
  std::string worker_id;
  for (int i = 0; i < 100; ++i) {
    auto k = client_->GenerateKey();
    ASSERT_TRUE(k.ok());
    auto semi = k->find(';');
    ASSERT_EQ(semi, 36u) << *k;  // a UUID, then the worker's id
    EXPECT_EQ((*k)[14], '4');    // version 4
    if (worker_id.empty()) worker_id = k->substr(semi + 1);
    EXPECT_EQ(k->substr(semi + 1), worker_id);
    keys.insert(*k);
  }
  EXPECT_EQ(keys.size(), 100u);
  // The worker's id is a version 4 UUID too, as openYuanrong's keys end.
  ASSERT_EQ(worker_id.size(), 36u) << worker_id;
  EXPECT_EQ(worker_id[14], '4') << worker_id;
  for (size_t dash : {8u, 13u, 18u, 23u}) EXPECT_EQ(worker_id[dash], '-') << worker_id;
  EXPECT_EQ(*client_->GenerateKey("pre"), "pre;" + worker_id);
  // Every client of the worker names it the same way.
  KVClient other("127.0.0.1", worker_->port());
  ASSERT_TRUE(other.Init().ok());
  EXPECT_EQ(other.GenerateKey("x")->substr(2), worker_id);
  EXPECT_TRUE(client_->GenerateKey(std::string(2000, 'p')).status().IsInvalid());
  KVClient not_ready("127.0.0.1", worker_->port());
  EXPECT_FALSE(not_ready.HealthCheck().ok());
  worker_->Stop();
  EXPECT_FALSE(client_->HealthCheck().ok());
}

// Waits (up to 5 s) until every thread of `pid` is in state T (stopped).
bool AllThreadsStopped(pid_t pid) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  const std::string tasks = "/proc/" + std::to_string(pid) + "/task";
  while (std::chrono::steady_clock::now() < deadline) {
    bool all = true;
    for (const auto& t : std::filesystem::directory_iterator(tasks)) {
      std::ifstream f(t.path() / "stat");
      std::string stat((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
      const size_t paren = stat.rfind(')');
      if (paren == std::string::npos || paren + 2 >= stat.size() || stat[paren + 2] != 'T') all = false;
    }
    if (all) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return false;
}

TEST_F(KVYrFeaturesTest, RequestTimeoutGivesUpTheConnection) {
  ClientOptions options;
  options.request_timeout_ms = 300;
  KVClient client("127.0.0.1", worker_->port(), options);
  ASSERT_TRUE(client.Init().ok());
  ASSERT_TRUE(client.Set("k", "v").ok());
  // A Get may wait longer than the request timeout when it asks to.
  auto waited = client.MGet({"later"}, 600);
  ASSERT_TRUE(waited.ok()) << waited.status().ToString();
  EXPECT_FALSE((*waited)[0].has_value());
  // A stopped worker answers nothing: Timeout, then Unavailable at once.
  ASSERT_EQ(::kill(worker_->pid(), SIGSTOP), 0);
  ASSERT_TRUE(AllThreadsStopped(worker_->pid()));  // a running thread could still answer
  const auto t0 = std::chrono::steady_clock::now();
  Status st = client.Exist({"k"}).status();
  const auto waited_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                             std::chrono::steady_clock::now() - t0).count();
  ::kill(worker_->pid(), SIGCONT);
  EXPECT_TRUE(st.IsTimeout()) << st.ToString();
  EXPECT_GE(waited_ms, 250);
  // The longer limit of the waiting Get above (300 + 600 ms) is not kept.
  EXPECT_LT(waited_ms, 880);
  EXPECT_TRUE(client.Get("k").status().IsUnavailable());
  // The worker itself is fine, and so is the other client.
  EXPECT_EQ(*client_->Get("k"), "v");
}

}  // namespace
}  // namespace ds
