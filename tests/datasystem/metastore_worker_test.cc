// Real datasystem_worker processes forming a cluster with no etcd: the head
// runs the metastore (--start_metastore_service true), the others join
// through --metastore_address (upstream TransferQueue 0.1.11's bootstrap).
// Cross-worker reads, a killed worker leaving, and the head's death: new
// workers are refused naming the address, and a restarted head's empty
// metastore is filled again by the survivors.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "datasystem/cluster/etcd_client.h"
#include "ds/kv_client.h"
#include "test_util.h"

namespace ds {
namespace {

constexpr char kRegistry[] = "/datasystem/workers/";

class MetastoreCluster : public ::testing::Test {
 protected:
  void SetUp() override {
    metastore_ = "127.0.0.1:" + std::to_string(testing::FreePort());
    StartHead();
    for (int i = 0; i < 2; ++i) {
      workers_.push_back(std::make_unique<testing::WorkerProcess>(Config(false)));
      ASSERT_EQ(workers_.back()->Start(), "");
    }
    cluster::EtcdOptions o;
    o.address = metastore_;
    registry_ = std::move(cluster::EtcdClient::Create(o)).value();
  }

  testing::WorkerConfig Config(bool head) {
    testing::WorkerConfig c;
    c.shm_mb = 64;
    c.extra = {"--metastore_address", metastore_, "--node_timeout_s", "2"};
    if (head) c.extra.insert(c.extra.end(), {"--start_metastore_service", "true"});
    return c;
  }

  void StartHead(int port = 0) {
    if (!head_) head_ = std::make_unique<testing::WorkerProcess>(Config(true));
    ASSERT_EQ(head_->Start(port), "");
  }

  std::unique_ptr<KVClient> Client(testing::WorkerProcess& w) {
    auto c = std::make_unique<KVClient>("127.0.0.1", w.port());
    EXPECT_TRUE(c->Init().ok());
    return c;
  }

  size_t Registered() {
    auto r = registry_->GetPrefix(kRegistry);
    return r.ok() ? r->kvs.size() : 0;
  }

  std::string metastore_;
  std::unique_ptr<testing::WorkerProcess> head_;
  std::vector<std::unique_ptr<testing::WorkerProcess>> workers_;
  std::unique_ptr<cluster::EtcdClient> registry_;
};

TEST_F(MetastoreCluster, WorkersShareKeysAndAKilledWorkerLeaves) {
  ASSERT_TRUE(testing::Eventually([&] { return Registered() == 3; }));
  auto head = Client(*head_), a = Client(*workers_[0]), b = Client(*workers_[1]);
  ASSERT_TRUE(a->Set("from-a", "bytes of a").ok());
  ASSERT_TRUE(head->Set("from-head", "bytes of head").ok());
  EXPECT_EQ(b->Get("from-a").ValueOr("<miss>"), "bytes of a");
  EXPECT_EQ(b->Get("from-head").ValueOr("<miss>"), "bytes of head");
  EXPECT_EQ(head->Get("from-a").ValueOr("<miss>"), "bytes of a");

  a.reset();
  workers_[0]->Crash();  // kill -9: only its lease running out removes it
  EXPECT_TRUE(testing::Eventually([&] { return Registered() == 2; }, std::chrono::seconds(10)));
  EXPECT_EQ(b->Get("from-head").ValueOr("<miss>"), "bytes of head");
}

TEST_F(MetastoreCluster, HeadDeathRefusesNewWorkersAndARestartedHeadIsRefilled) {
  ASSERT_TRUE(testing::Eventually([&] { return Registered() == 3; }));
  const int head_port = head_->port();
  head_->Crash();  // the metastore dies with it

  // A worker that joins now is refused, naming the metastore address.
  testing::WorkerProcess late(Config(false));
  std::string err = late.Start();
  std::printf("[ message  ] a worker joining a dead metastore: %s\n", err.c_str());
  EXPECT_NE(err, "");
  EXPECT_NE(err.find(metastore_), std::string::npos) << err;
  auto r = registry_->GetPrefix(kRegistry);
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(r.status().IsUnavailable()) << r.status().ToString();
  EXPECT_NE(r.status().message().find(metastore_), std::string::npos);

  // The head comes back: an empty metastore, which the survivors fill again.
  StartHead(head_port);
  EXPECT_TRUE(testing::Eventually([&] { return Registered() == 3; }, std::chrono::seconds(15)));
  testing::WorkerProcess d(Config(false));
  ASSERT_EQ(d.Start(), "");
  auto dc = Client(d), b = Client(*workers_[1]);
  ASSERT_TRUE(dc->Set("from-d", "bytes of d").ok());
  EXPECT_EQ(b->Get("from-d").ValueOr("<miss>"), "bytes of d");
}

}  // namespace
}  // namespace ds
