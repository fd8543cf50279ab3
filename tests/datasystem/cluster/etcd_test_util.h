// Test helpers for the cluster suites: a real etcd (Debian's etcd-server) on
// loopback with free ports and a temp --data-dir, owned by pid (killed even
// when a test fails; setpriv --pdeathsig kills it if the test process dies),
// and readiness by polling its maintenance status, never a sleep.
#pragma once

#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <vector>
#include <mutex>
#include <functional>
#include <condition_variable>
#include <memory>
#include <optional>
#include <string>
#include <thread>

#include "common/process.h"
#include "common/subprocess.h"
#include "common/test_util.h"
#include "datasystem/cluster/etcd_client.h"

namespace ds::cluster::testing {

// Shared with the other suites (tests/common/subprocess.h).
using tqds::testing::FreePort;
using tqds::testing::TempDir;

class EtcdServer {
 public:
  EtcdServer() : client_port_(FreePort()), peer_port_(FreePort()) {}
  ~EtcdServer() { Kill(); }

  std::string address() const { return "127.0.0.1:" + std::to_string(client_port_); }
  const std::string& data_dir() const { return data_dir_; }

  // Starts etcd on the same ports; with `fresh_data` on an empty data dir
  // (an etcd that lost everything), else on the previous one. Waits until
  // it answers with a leader.
  tqds::Status Start(bool fresh_data = false) {
    if (fresh_data || data_dir_.empty()) {
      data_dir_ = dir_.path() + "/data" + std::to_string(++generation_);
    }
    std::string peer = "http://127.0.0.1:" + std::to_string(peer_port_);
    std::string client = "http://" + address();
    std::string cmd = "exec setpriv --pdeathsig KILL etcd --name t --data-dir " + data_dir_ +
                      " --listen-client-urls " + client + " --advertise-client-urls " + client +
                      " --listen-peer-urls " + peer + " --initial-advertise-peer-urls " + peer +
                      " --initial-cluster t=" + peer + " >>" + dir_.path() + "/etcd.log 2>&1";
    TQDS_ASSIGN_OR_RETURN(auto child, tqds::ChildProcess::Spawn({"/bin/sh", "-c", cmd}));
    proc_.emplace(std::move(child));
    return WaitReady(std::chrono::seconds(15));
  }

  // SIGKILL, like a crash; waits for the exit.
  void Kill() {
    if (proc_) {
      proc_->Stop(SIGKILL);
      proc_.reset();
    }
  }

  std::unique_ptr<EtcdClient> Client(std::chrono::milliseconds timeout = std::chrono::seconds(2)) {
    EtcdOptions o;
    o.address = address();
    o.request_timeout = timeout;
    return std::move(EtcdClient::Create(o)).value();
  }

 private:
  tqds::Status WaitReady(std::chrono::milliseconds timeout) {
    auto client = Client(std::chrono::milliseconds(300));
    auto deadline = std::chrono::steady_clock::now() + timeout;
    tqds::Status last;
    while (std::chrono::steady_clock::now() < deadline) {
      if (!proc_->running())
        return tqds::Status::Unavailable("etcd exited; see ", dir_.path(), "/etcd.log");
      auto st = client->GetServerStatus();
      if (st.ok() && st->leader != 0) return tqds::Status::OK();
      last = st.ok() ? tqds::Status::Unavailable("no leader yet") : st.status();
      std::this_thread::sleep_for(std::chrono::milliseconds(20));  // poll interval, not a wait-for
    }
    return tqds::Status::Timeout("etcd at ", address(), " not ready: ", last.ToString());
  }

  TempDir dir_{"dscl"};
  std::string data_dir_;
  int generation_ = 0;
  int client_port_;
  int peer_port_;
  std::optional<tqds::ChildProcess> proc_;
};

// A gtest fixture with one etcd per suite (each suite is its own ctest
// entry, so its own process and etcd); each test gets a key prefix of its own.
class EtcdSuite : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    server_ = new EtcdServer();
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

  inline static EtcdServer* server_ = nullptr;
  inline static tqds::Status start_status_;
  std::unique_ptr<EtcdClient> client_;
  std::string prefix_;
};

// Collects watch callbacks for assertions on the test thread (the etcd
// suites and the metastore's).
struct WatchRecorder {
  std::mutex mu;
  std::condition_variable cv;
  std::vector<WatchEvent> events;
  std::vector<RangeResult> resyncs;
  std::vector<tqds::Status> states;

  WatchCallbacks Callbacks() {
    WatchCallbacks cb;
    cb.on_events = [this](const std::vector<WatchEvent>& evs) {
      std::lock_guard<std::mutex> l(mu);
      events.insert(events.end(), evs.begin(), evs.end());
      cv.notify_all();
    };
    cb.on_resync = [this](const RangeResult& r) {
      std::lock_guard<std::mutex> l(mu);
      resyncs.push_back(r);
      cv.notify_all();
    };
    cb.on_stream_state = [this](const tqds::Status& s) {
      std::lock_guard<std::mutex> l(mu);
      states.push_back(s);
      cv.notify_all();
    };
    return cb;
  }
  bool WaitFor(const std::function<bool()>& pred,
               std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
    std::unique_lock<std::mutex> l(mu);
    return cv.wait_for(l, timeout, pred);
  }
};

}  // namespace ds::cluster::testing
