// Membership against a real etcd: join, graceful leave, death by kill -9
// (lease expiry), restart with a new incarnation, an observer, a deleted
// key, and etcd outages (restart on the same data; restart with no data).
#include "datasystem/cluster/membership.h"

#include <gtest/gtest.h>
#include <signal.h>

#include <atomic>
#include <cstdio>

#include "common/test_util.h"
#include "etcd_test_util.h"

namespace ds::cluster {
namespace {

using Clock = std::chrono::steady_clock;
using testing::EtcdSuite;
using tqds::testing::Eventually;
using tqds::testing::SecondsSince;

class MembershipTest : public EtcdSuite {
 protected:
  MembershipOptions Options(const std::string& self, int ttl_s = 2) {
    MembershipOptions o;
    o.etcd.address = server_->address();
    o.self_address = self;
    o.key_prefix = prefix_;
    o.lease_ttl = std::chrono::seconds(ttl_s);
    return o;
  }
  std::unique_ptr<Membership> StartMember(const std::string& self, int ttl_s = 2,
                                          MembershipCallbacks cb = {}) {
    auto m = Membership::Start(Options(self, ttl_s), std::move(cb));
    EXPECT_TRUE(m.ok()) << m.status().ToString();
    return m.ok() ? std::move(m).value() : nullptr;
  }
  // A member in its own process (so it can die by SIGKILL).
  tqds::Result<tqds::ChildProcess> SpawnMember(const std::string& self, int ttl_s) {
    TQDS_ASSIGN_OR_RETURN(
        auto child, tqds::ChildProcess::Spawn({DS_CLUSTER_MEMBER_BIN, server_->address(), self,
                                               std::to_string(ttl_s), prefix_}));
    TQDS_RETURN_NOT_OK(child.WaitForLine("READY", std::chrono::seconds(10)).status());
    return child;
  }
  static auto Has(const std::string& a) {
    return [a](const MembershipView& v) { return v.Contains(a); };
  }
  static auto Lacks(const std::string& a) {
    return [a](const MembershipView& v) { return !v.Contains(a); };
  }
};

class EtcdOutageTest : public MembershipTest {};

constexpr auto kWait = std::chrono::seconds(10);

TEST_F(MembershipTest, TwoMembersSeeEachOther) {
  std::mutex mu;
  std::vector<std::string> joins;
  MembershipCallbacks cb;
  cb.on_join = [&](const Member& m) {
    std::lock_guard<std::mutex> l(mu);
    joins.push_back(m.address);
  };
  auto a = StartMember("127.0.0.1:1001", 2, cb);
  ASSERT_TRUE(a);
  auto b = StartMember("127.0.0.1:1002");
  ASSERT_TRUE(b);
  EXPECT_TRUE(a->WaitFor(Has("127.0.0.1:1002"), kWait));
  EXPECT_TRUE(b->WaitFor(Has("127.0.0.1:1001"), kWait));
  auto view = a->View();
  EXPECT_EQ(view.addresses(), (std::vector<std::string>{"127.0.0.1:1001", "127.0.0.1:1002"}));
  EXPECT_GE(view.version, 2u);
  EXPECT_EQ(a->registrations(), 1);
  EXPECT_NE(a->lease(), 0);
  // Callbacks run just after the view changes, on the watch thread.
  EXPECT_TRUE(Eventually([&] {
    std::lock_guard<std::mutex> l(mu);
    return joins.size() == 2;
  }));
  {
    std::lock_guard<std::mutex> l(mu);
    EXPECT_EQ(joins, (std::vector<std::string>{"127.0.0.1:1001", "127.0.0.1:1002"}));
  }

  ASSERT_OK_AND_ASSIGN(auto kv, client_->Get(prefix_ + "127.0.0.1:1001"));
  ASSERT_OK_AND_ASSIGN(auto rec, DecodeMember(kv.value));
  EXPECT_EQ(rec, a->self());
  EXPECT_EQ(kv.lease, a->lease());
}

TEST_F(MembershipTest, GracefulStopLeavesAtOnce) {
  auto a = StartMember("127.0.0.1:1001");
  auto b = StartMember("127.0.0.1:1002");
  ASSERT_TRUE(a && b);
  ASSERT_TRUE(a->WaitFor(Has("127.0.0.1:1002"), kWait));
  uint64_t before = a->version();
  auto t0 = Clock::now();
  b->Stop();
  ASSERT_TRUE(a->WaitFor(Lacks("127.0.0.1:1002"), kWait));
  double took = SecondsSince(t0);
  std::printf("[ measure  ] graceful leave seen after %.3f s\n", took);
  EXPECT_LT(took, 1.0);  // revoke: no waiting for the TTL
  EXPECT_GT(a->version(), before);
  EXPECT_STATUS(client_->Get(prefix_ + "127.0.0.1:1002"), kNotFound, "1002");
}

TEST_F(MembershipTest, KilledMemberLeavesWithinTtl) {
  constexpr int kTtl = 3;  // the default
  auto observer = StartMember("127.0.0.1:1001", kTtl);
  ASSERT_TRUE(observer);
  ASSERT_OK_AND_ASSIGN(auto child, SpawnMember("127.0.0.1:1009", kTtl));
  ASSERT_TRUE(observer->WaitFor(Has("127.0.0.1:1009"), kWait));
  auto t0 = Clock::now();
  child.Stop(SIGKILL);  // no revoke: only lease expiry can remove it
  ASSERT_TRUE(observer->WaitFor(Lacks("127.0.0.1:1009"), kWait));
  double took = SecondsSince(t0);
  std::printf("[ measure  ] kill -9 leave seen after %.3f s (TTL %d s)\n", took, kTtl);
  EXPECT_GT(took, kTtl * 2.0 / 3 - 0.3);  // the lease ran out; nothing faster removed it
  EXPECT_LT(took, kTtl + 1.0);            // TTL + etcd's 0.5 s expiry sweep + margin
}

TEST_F(MembershipTest, RestartedMemberRejoinsWithNewIncarnation) {
  std::mutex mu;
  std::vector<std::pair<bool, Member>> seen;
  MembershipCallbacks cb;
  cb.on_join = [&](const Member& m) {
    std::lock_guard<std::mutex> l(mu);
    seen.push_back({true, m});
  };
  cb.on_leave = [&](const Member& m) {
    std::lock_guard<std::mutex> l(mu);
    seen.push_back({false, m});
  };
  auto observer = StartMember("127.0.0.1:1001", 2, cb);
  ASSERT_TRUE(observer);
  const std::string addr = "127.0.0.1:1010";
  ASSERT_OK_AND_ASSIGN(auto first, SpawnMember(addr, 2));
  ASSERT_TRUE(observer->WaitFor(Has(addr), kWait));
  uint64_t inc1 = 0;
  for (const auto& m : observer->View().members) {
    if (m.address == addr) inc1 = m.incarnation;
  }
  first.Stop(SIGKILL);
  // Restarted at once, before the old lease expired: it replaces its old self.
  ASSERT_OK_AND_ASSIGN(auto second, SpawnMember(addr, 2));
  auto newer = [&](const MembershipView& v) {
    for (const auto& m : v.members) {
      if (m.address == addr) return m.incarnation > inc1;
    }
    return false;
  };
  ASSERT_TRUE(observer->WaitFor(newer, kWait));
  // The old lease expiring later must not remove the new registration.
  auto old_lease_gone = Clock::now() + std::chrono::seconds(3);
  EXPECT_FALSE(observer->WaitFor(Lacks(addr), std::chrono::duration_cast<std::chrono::milliseconds>(
                                                  old_lease_gone - Clock::now())));
  EXPECT_TRUE(Eventually([&] {
    std::lock_guard<std::mutex> l(mu);
    return seen.size() >= 4;  // join self, join first, leave first, join second
  }));
  std::lock_guard<std::mutex> l(mu);
  std::vector<std::pair<bool, uint64_t>> about;
  for (const auto& [join, m] : seen) {
    if (m.address == addr) about.push_back({join, m.incarnation});
  }
  ASSERT_EQ(about.size(), 3u);
  EXPECT_EQ(about[0], std::make_pair(true, inc1));
  EXPECT_EQ(about[1], std::make_pair(false, inc1));
  EXPECT_TRUE(about[2].first);
  EXPECT_GT(about[2].second, inc1);
}

TEST_F(MembershipTest, ObserverSeesButDoesNotRegister) {
  auto observer = StartMember("");
  auto a = StartMember("127.0.0.1:1001");
  ASSERT_TRUE(observer && a);
  ASSERT_TRUE(observer->WaitFor(Has("127.0.0.1:1001"), kWait));
  EXPECT_EQ(observer->View().members.size(), 1u);
  EXPECT_EQ(observer->lease(), 0);
  ASSERT_OK_AND_ASSIGN(auto r, client_->GetPrefix(prefix_));
  EXPECT_EQ(r.kvs.size(), 1u);
}

TEST_F(MembershipTest, ReRegistersWhenItsKeyIsDeleted) {
  auto a = StartMember("127.0.0.1:1001");
  auto b = StartMember("127.0.0.1:1002");
  ASSERT_TRUE(a && b);
  ASSERT_TRUE(b->WaitFor(Has("127.0.0.1:1001"), kWait));
  ASSERT_OK(client_->Delete(prefix_ + "127.0.0.1:1001"));
  EXPECT_TRUE(Eventually([&] { return a->registrations() == 2; }, kWait));
  EXPECT_TRUE(b->WaitFor(Has("127.0.0.1:1001"), kWait));
  EXPECT_OK(client_->Get(prefix_ + "127.0.0.1:1001"));
}

TEST_F(MembershipTest, StartFailsFastWithoutEtcd) {
  MembershipOptions o = Options("127.0.0.1:1001");
  o.etcd.address = "127.0.0.1:" + std::to_string(testing::FreePort());
  auto t0 = Clock::now();
  EXPECT_STATUS(Membership::Start(o), kUnavailable, o.etcd.address);
  EXPECT_LT(SecondsSince(t0), 1.5);
  o.key_prefix = "/no/slash";
  EXPECT_STATUS(Membership::Start(o), kInvalid, "must end with '/'");
}

TEST_F(EtcdOutageTest, WatchResumesAfterEtcdRestart) {
  ASSERT_OK_AND_ASSIGN(auto start, client_->GetPrefix(prefix_));
  std::mutex mu;
  std::condition_variable cv;
  std::vector<std::string> keys;
  int broken = 0;
  WatchCallbacks cb;
  cb.on_events = [&](const std::vector<WatchEvent>& evs) {
    std::lock_guard<std::mutex> l(mu);
    for (const auto& e : evs) keys.push_back(e.kv.key);
    cv.notify_all();
  };
  cb.on_stream_state = [&](const tqds::Status& s) {
    std::lock_guard<std::mutex> l(mu);
    if (!s.ok()) ++broken;
    cv.notify_all();
  };
  ASSERT_OK_AND_ASSIGN(auto watch, client_->Watch(prefix_, true, start.revision + 1, cb));
  ASSERT_OK(client_->Put(prefix_ + "before", "1"));
  {
    std::unique_lock<std::mutex> l(mu);
    ASSERT_TRUE(cv.wait_for(l, kWait, [&] { return keys.size() == 1; }));
  }
  server_->Kill();
  {
    std::unique_lock<std::mutex> l(mu);
    ASSERT_TRUE(cv.wait_for(l, kWait, [&] { return broken > 0; }));
  }
  ASSERT_OK(server_->Start());
  ASSERT_OK(client_->Put(prefix_ + "after", "2"));
  std::unique_lock<std::mutex> l(mu);
  ASSERT_TRUE(cv.wait_for(l, kWait, [&] { return keys.size() == 2; }));
  EXPECT_EQ(keys[1], prefix_ + "after");
  EXPECT_EQ(watch->resyncs(), 0);  // same data: resumed, no re-list needed
}

TEST_F(EtcdOutageTest, MembersKeepTheirViewAndLeasesAcrossAnEtcdRestart) {
  auto a = StartMember("127.0.0.1:1001");
  auto b = StartMember("127.0.0.1:1002");
  ASSERT_TRUE(a && b);
  ASSERT_TRUE(a->WaitFor(Has("127.0.0.1:1002"), kWait));
  ASSERT_TRUE(b->WaitFor(Has("127.0.0.1:1001"), kWait));
  uint64_t version = a->version();
  server_->Kill();
  // An outage longer than the TTL (2 s): the scenario, not a synchronisation.
  std::this_thread::sleep_for(std::chrono::milliseconds(3000));
  EXPECT_EQ(a->View().members.size(), 2u);  // last known view kept
  EXPECT_EQ(a->version(), version);
  ASSERT_OK(server_->Start());
  // etcd restores leases with a fresh TTL; keep-alives resume on them. Both
  // keys must outlive a full TTL after the restart.
  auto t0 = Clock::now();
  EXPECT_TRUE(
      Eventually([&] { return client_->GetPrefix(prefix_).ValueOr({}).kvs.size() == 2; }, kWait));
  std::this_thread::sleep_for(std::chrono::milliseconds(2500) - (Clock::now() - t0));
  ASSERT_OK_AND_ASSIGN(auto r, client_->GetPrefix(prefix_));
  EXPECT_EQ(r.kvs.size(), 2u);
  EXPECT_TRUE(a->View().Contains("127.0.0.1:1002"));
  EXPECT_TRUE(b->View().Contains("127.0.0.1:1001"));
  EXPECT_NE(a->lease(), 0);
  EXPECT_EQ(a->registrations(), 1);  // kept its lease: no re-registration
  EXPECT_EQ(b->registrations(), 1);
}

TEST_F(EtcdOutageTest, MembersReRegisterWhenEtcdComesBackEmpty) {
  auto a = StartMember("127.0.0.1:1001");
  auto b = StartMember("127.0.0.1:1002");
  ASSERT_TRUE(a && b);
  ASSERT_TRUE(a->WaitFor(Has("127.0.0.1:1002"), kWait));
  // Enough history that the new etcd's revision is behind the watches.
  for (int i = 0; i < 20; ++i) ASSERT_OK(client_->Put("/filler/" + prefix_, "x"));
  server_->Kill();
  ASSERT_OK(server_->Start(/*fresh_data=*/true));  // etcd lost everything
  EXPECT_TRUE(
      Eventually([&] { return a->registrations() == 2 && b->registrations() == 2; }, kWait));
  EXPECT_TRUE(
      Eventually([&] { return client_->GetPrefix(prefix_).ValueOr({}).kvs.size() == 2; }, kWait));
  EXPECT_TRUE(a->WaitFor(Has("127.0.0.1:1002"), kWait));
  EXPECT_TRUE(b->WaitFor(Has("127.0.0.1:1001"), kWait));
}

}  // namespace
}  // namespace ds::cluster
