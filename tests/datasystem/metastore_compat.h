// Runs the etcd-backed cluster suites (tests/datasystem/cluster/
// etcd_client_test.cc, membership_test.cc) unchanged against a Metastore:
// ds_metastore_compat_test compiles those files with this header
// force-included (-include). It loads etcd_test_util.h first (its #pragma
// once then skips the suites' own include) and renames their base fixture,
// EtcdSuite, to MetastoreSuite below, whose server_ is an in-process
// Metastore with EtcdServer's interface (address, Start, Kill, Client).
// Kill() then Start() is a metastore restart: an empty store (in memory
// only), like etcd's Start(fresh_data=true). Cleaner long-term: a backend
// parameter in etcd_test_util.h (owned by the cluster suites).
#pragma once

#include "datasystem/cluster/etcd_test_util.h"
#include "datasystem/cluster/metastore.h"

namespace ds::cluster::testing {

class MetastoreServer {
 public:
  MetastoreServer() : port_(FreePort()) {}
  ~MetastoreServer() { Kill(); }

  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }

  // (Re)starts on the same port. `fresh_data` is moot: a metastore always
  // starts empty.
  tqds::Status Start(bool fresh_data = false) {
    (void)fresh_data;
    MetastoreOptions o;
    o.port = port_;
    TQDS_ASSIGN_OR_RETURN(store_, Metastore::Start(o));
    return tqds::Status::OK();
  }
  void Kill() { store_.reset(); }

  std::unique_ptr<EtcdClient> Client(std::chrono::milliseconds timeout = std::chrono::seconds(2)) {
    EtcdOptions o;
    o.address = address();
    o.request_timeout = timeout;
    return std::move(EtcdClient::Create(o)).value();
  }

 private:
  int port_;
  std::unique_ptr<Metastore> store_;
};

class MetastoreSuite : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    server_ = new MetastoreServer();
    start_status_ = server_->Start();
  }
  static void TearDownTestSuite() {
    delete server_;
    server_ = nullptr;
  }
  void SetUp() override {
    ASSERT_OK(start_status_);
    client_ = server_->Client();
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    prefix_ = std::string("/test/") + info->name() + "/";
  }

  inline static MetastoreServer* server_ = nullptr;
  inline static tqds::Status start_status_;
  std::unique_ptr<EtcdClient> client_;
  std::string prefix_;
};

}  // namespace ds::cluster::testing

#define EtcdSuite MetastoreSuite
