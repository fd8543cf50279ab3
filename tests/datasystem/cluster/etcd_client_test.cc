// EtcdClient against a real etcd: KV, prefix, transactions, leases, watch
// (order, snapshot start, compaction resync) and unreachable-etcd errors.
#include "datasystem/cluster/etcd_client.h"

#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <condition_variable>
#include <mutex>

#include "common/test_util.h"
#include "etcd_test_util.h"

namespace ds::cluster {
namespace {

using Clock = std::chrono::steady_clock;
using testing::EtcdServer;
using tqds::testing::Eventually;
using tqds::testing::SecondsSince;

using testing::EtcdSuite;

class EtcdClientTest : public EtcdSuite {};
class EtcdWatchTest : public EtcdSuite {};

TEST_F(EtcdClientTest, ServerStatusAnswers) {
  ASSERT_OK_AND_ASSIGN(auto st, client_->GetServerStatus());
  EXPECT_EQ(st.version.rfind("3.", 0), 0u) << st.version;
  EXPECT_NE(st.leader, 0u);
  EXPECT_NE(st.cluster_id, 0u);
  EXPECT_GT(st.revision, 0);
}

TEST_F(EtcdClientTest, PutGetDelete) {
  const std::string key = prefix_ + "k";
  const std::string value("bin\0ary\xff", 8);
  ASSERT_OK_AND_ASSIGN(int64_t rev, client_->Put(key, value));
  ASSERT_OK_AND_ASSIGN(auto kv, client_->Get(key));
  EXPECT_EQ(kv.value, value);
  EXPECT_EQ(kv.mod_revision, rev);
  EXPECT_EQ(kv.create_revision, rev);
  EXPECT_EQ(kv.version, 1);
  ASSERT_OK_AND_ASSIGN(int64_t deleted, client_->Delete(key));
  EXPECT_EQ(deleted, 1);
  EXPECT_STATUS(client_->Get(key), kNotFound, key);
  ASSERT_OK_AND_ASSIGN(deleted, client_->Delete(key));
  EXPECT_EQ(deleted, 0);  // idempotent
}

TEST_F(EtcdClientTest, PrefixReadAndDelete) {
  for (const char* k : {"c", "a", "b"}) ASSERT_OK(client_->Put(prefix_ + k, k));
  ASSERT_OK(client_->Put(prefix_.substr(0, prefix_.size() - 1) + "X", "outside"));
  ASSERT_OK_AND_ASSIGN(auto r, client_->GetPrefix(prefix_));
  ASSERT_EQ(r.kvs.size(), 3u);
  EXPECT_EQ(r.kvs[0].key, prefix_ + "a");
  EXPECT_EQ(r.kvs[2].value, "c");
  EXPECT_GE(r.revision, r.kvs[2].mod_revision);
  ASSERT_OK_AND_ASSIGN(int64_t n, client_->DeletePrefix(prefix_));
  EXPECT_EQ(n, 3);
  ASSERT_OK_AND_ASSIGN(r, client_->GetPrefix(prefix_));
  EXPECT_TRUE(r.kvs.empty());
  ASSERT_OK(client_->Get(prefix_.substr(0, prefix_.size() - 1) + "X"));
}

TEST_F(EtcdClientTest, TxnCompareAndSwap) {
  const std::string key = prefix_ + "owner";
  ASSERT_OK_AND_ASSIGN(bool created, client_->PutIfAbsent(key, "w1"));
  EXPECT_TRUE(created);
  ASSERT_OK_AND_ASSIGN(created, client_->PutIfAbsent(key, "w2"));
  EXPECT_FALSE(created);
  ASSERT_OK_AND_ASSIGN(auto kv, client_->Get(key));
  EXPECT_EQ(kv.value, "w1");

  ASSERT_OK_AND_ASSIGN(bool swapped, client_->CompareAndSwap(key, kv.mod_revision + 100, "w3"));
  EXPECT_FALSE(swapped);
  ASSERT_OK_AND_ASSIGN(swapped, client_->CompareAndSwap(key, kv.mod_revision, "w3"));
  EXPECT_TRUE(swapped);

  // A general transaction: the failure branch reads the current value.
  Txn txn;
  txn.compares.push_back(Compare::ValueIs(key, "nope"));
  txn.success.push_back(TxnOp::Delete(key));
  txn.failure.push_back(TxnOp::Get(key));
  txn.failure.push_back(TxnOp::Put(prefix_ + "audit", "seen"));
  ASSERT_OK_AND_ASSIGN(auto r, client_->Commit(txn));
  EXPECT_FALSE(r.succeeded);
  ASSERT_EQ(r.gets.size(), 1u);
  ASSERT_EQ(r.gets[0].kvs.size(), 1u);
  EXPECT_EQ(r.gets[0].kvs[0].value, "w3");
  ASSERT_OK(client_->Get(prefix_ + "audit"));
}

TEST_F(EtcdClientTest, LeaseExpiryRemovesKeys) {
  ASSERT_OK_AND_ASSIGN(auto lease, client_->GrantLease(2));
  EXPECT_GE(lease.ttl_seconds, 2);
  ASSERT_OK(client_->Put(prefix_ + "ephemeral", "x", lease.id));
  auto t0 = Clock::now();
  EXPECT_TRUE(Eventually([&] { return client_->Get(prefix_ + "ephemeral").status().IsNotFound(); },
                         std::chrono::seconds(5)));
  double took = SecondsSince(t0);
  EXPECT_GT(took, 1.0);  // not before the TTL (2 s) had mostly run
  EXPECT_LT(took, 3.5);
  EXPECT_STATUS(client_->KeepAliveOnce(lease.id), kNotFound, "expired or revoked");
}

TEST_F(EtcdClientTest, KeepAliveKeepsKeysAndRevokeDeletesThem) {
  ASSERT_OK_AND_ASSIGN(auto lease, client_->GrantLease(2));
  ASSERT_OK(client_->Put(prefix_ + "kept", "x", lease.id));
  auto until = Clock::now() + std::chrono::milliseconds(3500);  // longer than the TTL
  while (Clock::now() < until) {
    ASSERT_OK_AND_ASSIGN(int64_t ttl, client_->KeepAliveOnce(lease.id));
    EXPECT_GE(ttl, 2);
    std::this_thread::sleep_for(std::chrono::milliseconds(500));  // the keep-alive period
  }
  ASSERT_OK_AND_ASSIGN(auto kv, client_->Get(prefix_ + "kept"));
  EXPECT_EQ(kv.lease, lease.id);
  ASSERT_OK(client_->RevokeLease(lease.id));
  EXPECT_STATUS(client_->Get(prefix_ + "kept"), kNotFound, "kept");
  EXPECT_STATUS(client_->RevokeLease(lease.id), kNotFound, "lease not found");
}

TEST_F(EtcdClientTest, ConcurrentCallsFromManyThreads) {
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 50; ++i) {
        std::string key = prefix_ + std::to_string(t) + "/" + std::to_string(i);
        if (!client_->Put(key, key).ok()) ++failures;
        auto kv = client_->Get(key);
        if (!kv.ok() || kv->value != key) ++failures;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(failures.load(), 0);
  ASSERT_OK_AND_ASSIGN(auto r, client_->GetPrefix(prefix_));
  EXPECT_EQ(r.kvs.size(), 400u);
}

TEST_F(EtcdClientTest, UnreachableEtcdIsUnavailableFast) {
  // Nothing listens: connection refused.
  EtcdOptions o;
  o.address = "127.0.0.1:" + std::to_string(testing::FreePort());
  o.request_timeout = std::chrono::milliseconds(500);
  ASSERT_OK_AND_ASSIGN(auto refused, EtcdClient::Create(o));
  auto t0 = Clock::now();
  EXPECT_STATUS(refused->Put("k", "v"), kUnavailable, o.address);
  EXPECT_STATUS(refused->GrantLease(3), kUnavailable, o.address);
  EXPECT_LT(SecondsSince(t0), 1.0);

  // A listener that accepts nothing and never answers: the call's timeout.
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
  ASSERT_EQ(::listen(fd, 4), 0);
  socklen_t len = sizeof(a);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  o.address = "127.0.0.1:" + std::to_string(ntohs(a.sin_port));
  ASSERT_OK_AND_ASSIGN(auto silent, EtcdClient::Create(o));
  t0 = Clock::now();
  EXPECT_STATUS(silent->Get("k"), kUnavailable, o.address);
  double took = SecondsSince(t0);
  EXPECT_GE(took, 0.4);
  EXPECT_LT(took, 1.5);
  ::close(fd);

  EXPECT_STATUS(EtcdClient::Create(EtcdOptions{"http://x:1"}), kInvalid, "without a scheme");
  EXPECT_STATUS(EtcdClient::Create(EtcdOptions{"nohost"}), kInvalid, "host:port");
}

using Recorder = testing::WatchRecorder;

TEST_F(EtcdWatchTest, SeesPutsAndDeletesInOrder) {
  ASSERT_OK_AND_ASSIGN(auto start, client_->GetPrefix(prefix_));
  Recorder rec;
  ASSERT_OK_AND_ASSIGN(auto watch,
                       client_->Watch(prefix_, true, start.revision + 1, rec.Callbacks()));
  ASSERT_OK(client_->Put(prefix_ + "a", "1"));
  ASSERT_OK(client_->Put(prefix_ + "b", "2"));
  ASSERT_OK(client_->Delete(prefix_ + "a"));
  ASSERT_OK(client_->Put(prefix_ + "a", "3"));
  ASSERT_OK(client_->Put("/elsewhere", "ignored"));
  ASSERT_OK(client_->DeletePrefix(prefix_));
  ASSERT_TRUE(rec.WaitFor([&] { return rec.events.size() >= 6; }));
  std::lock_guard<std::mutex> l(rec.mu);
  ASSERT_EQ(rec.events.size(), 6u);
  struct Want {
    EventType type;
    const char* key;
    const char* value;
  };
  const Want want[] = {{EventType::kPut, "a", "1"},   {EventType::kPut, "b", "2"},
                       {EventType::kDelete, "a", ""}, {EventType::kPut, "a", "3"},
                       {EventType::kDelete, "a", ""}, {EventType::kDelete, "b", ""}};
  int64_t last_rev = start.revision;
  for (size_t i = 0; i < 6; ++i) {
    EXPECT_EQ(rec.events[i].type, want[i].type) << i;
    EXPECT_EQ(rec.events[i].kv.key, prefix_ + want[i].key) << i;
    EXPECT_EQ(rec.events[i].kv.value, want[i].value) << i;
    EXPECT_GE(rec.events[i].kv.mod_revision, last_rev) << i;
    last_rev = rec.events[i].kv.mod_revision;
  }
  EXPECT_TRUE(rec.resyncs.empty());
  EXPECT_EQ(watch->next_revision(), last_rev + 1);
}

TEST_F(EtcdWatchTest, FromZeroStartsWithASnapshot) {
  ASSERT_OK(client_->Put(prefix_ + "x", "1"));
  ASSERT_OK(client_->Put(prefix_ + "y", "2"));
  Recorder rec;
  ASSERT_OK_AND_ASSIGN(auto watch, client_->Watch(prefix_, true, 0, rec.Callbacks()));
  ASSERT_TRUE(rec.WaitFor([&] { return !rec.resyncs.empty(); }));
  ASSERT_OK(client_->Put(prefix_ + "z", "3"));
  ASSERT_TRUE(rec.WaitFor([&] { return !rec.events.empty(); }));
  std::lock_guard<std::mutex> l(rec.mu);
  EXPECT_EQ(rec.resyncs[0].kvs.size(), 2u);
  EXPECT_EQ(rec.events[0].kv.key, prefix_ + "z");
  EXPECT_GT(rec.events[0].kv.mod_revision, rec.resyncs[0].revision);
}

TEST_F(EtcdWatchTest, CompactedHistoryResyncs) {
  ASSERT_OK_AND_ASSIGN(int64_t first, client_->Put(prefix_ + "k", "v1"));
  ASSERT_OK(client_->Put(prefix_ + "k", "v2"));
  ASSERT_OK_AND_ASSIGN(int64_t last, client_->Put(prefix_ + "k", "v3"));
  ASSERT_OK(client_->Compact(last));
  Recorder rec;
  ASSERT_OK_AND_ASSIGN(auto watch, client_->Watch(prefix_, true, first, rec.Callbacks()));
  ASSERT_TRUE(rec.WaitFor([&] { return !rec.resyncs.empty(); }));
  ASSERT_OK(client_->Put(prefix_ + "k", "v4"));
  ASSERT_TRUE(rec.WaitFor([&] { return !rec.events.empty(); }));
  std::lock_guard<std::mutex> l(rec.mu);
  ASSERT_EQ(rec.resyncs[0].kvs.size(), 1u);
  EXPECT_EQ(rec.resyncs[0].kvs[0].value, "v3");
  ASSERT_EQ(rec.events.size(), 1u);  // v1..v3 were never replayed
  EXPECT_EQ(rec.events[0].kv.value, "v4");
  EXPECT_EQ(watch->resyncs(), 1);
}

TEST_F(EtcdWatchTest, CancelIsPromptEvenWhileEtcdIsAway) {
  Recorder rec;
  ASSERT_OK_AND_ASSIGN(auto watch, client_->Watch(prefix_, true, 0, rec.Callbacks()));
  ASSERT_TRUE(rec.WaitFor([&] { return !rec.states.empty(); }));
  auto t0 = Clock::now();
  watch->Cancel();
  EXPECT_LT(SecondsSince(t0), 0.5);

  EtcdOptions o;
  o.address = "127.0.0.1:" + std::to_string(testing::FreePort());
  ASSERT_OK_AND_ASSIGN(auto away, EtcdClient::Create(o));
  Recorder rec2;
  ASSERT_OK_AND_ASSIGN(auto w2, away->Watch("/x/", true, 5, rec2.Callbacks()));
  ASSERT_TRUE(rec2.WaitFor([&] { return !rec2.states.empty(); }));
  {
    std::lock_guard<std::mutex> l(rec2.mu);
    EXPECT_TRUE(rec2.states[0].IsUnavailable()) << rec2.states[0].ToString();
    EXPECT_NE(rec2.states[0].message().find(o.address), std::string::npos);
  }
  t0 = Clock::now();
  w2.reset();
  EXPECT_LT(SecondsSince(t0), 0.5);
}

}  // namespace
}  // namespace ds::cluster
