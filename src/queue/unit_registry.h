// UnitRegistry: the storage units a controller lists to clients
// (GetStorageInfo), with a liveness check.
//
// - A registration is listed only after the controller reached the unit: it
//   must answer a UnitStats within verify_timeout, so an endpoint where no
//   storage unit answers is refused and never listed.
// - Every ping_interval, each registered unit gets a Ping (one in flight at a
//   time); a unit that has answered no Ping for liveness_timeout (a Ping
//   timed out, or failed and none answered since) is dropped (logged,
//   naming it). A unit that answers, however slowly, within
//   liveness_timeout is never dropped, so a busy unit holding data stays.
// - Units added with AddPermanent (the controller's embedded units, in its
//   own process) are never pinged or dropped.
//
// Thread-safe: all methods may be called from any thread. One background
// thread connects, verifies and pings; `Done` callbacks run on it and must
// not block or call back into the registry.
#pragma once

#include <chrono>
#include <condition_variable>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/wire/rpc.h"
#include "tqds/status.h"

namespace tq::internal {

class UnitRegistry {
 public:
  struct Options {
    std::chrono::milliseconds ping_interval{1000};
    std::chrono::milliseconds liveness_timeout{30000};
    std::chrono::milliseconds verify_timeout{5000};
    size_t max_units = 256;  // listed and being verified together
  };
  using Done = std::function<void(tqds::Status)>;

  explicit UnitRegistry(Options options);
  ~UnitRegistry();
  UnitRegistry(const UnitRegistry&) = delete;
  UnitRegistry& operator=(const UnitRegistry&) = delete;

  // Lists `endpoint` for good (no pings).
  void AddPermanent(std::string endpoint);
  // Lists `endpoint` at once, without verifying it, then pings it as a
  // registered unit (dropped when silent): a unit the controller's state
  // directory remembers, which likely still runs and holds data.
  void AddRecovered(std::string endpoint);
  // Verifies `endpoint` and lists it; `done` gets OK then (at once when it
  // is listed already), or an error naming the endpoint and why.
  void Register(std::string endpoint, Done done);
  // Listed endpoints, in registration order.
  std::vector<std::string> Units() const;
  // Stops the background thread; pending registrations get Unavailable.
  void Stop();

 private:
  struct Unit {
    std::string endpoint;
    std::unique_ptr<tqds::wire::RpcClient> client;  // null for permanent units
    std::future<tqds::Result<tqds::wire::Message>> ping;  // the one in flight, if valid
    std::chrono::steady_clock::time_point ping_sent;
    std::chrono::steady_clock::time_point last_answer;  // or when listed
  };
  struct Pending {
    std::string endpoint;
    Done done;
    std::unique_ptr<tqds::wire::RpcClient> client;
    std::future<tqds::Result<tqds::wire::Message>> stats;
  };
  void Run();
  // One round, with mu_ held (only non-blocking calls: Call() queues, a
  // future is polled). Returns the callbacks to run and the clients to
  // destroy after unlocking.
  void VerifyLocked(std::vector<std::pair<Done, tqds::Status>>& done,
                    std::vector<std::unique_ptr<tqds::wire::RpcClient>>& closed);
  void PingLocked(std::chrono::steady_clock::time_point now,
                  std::vector<std::unique_ptr<tqds::wire::RpcClient>>& closed);
  bool ListedLocked(const std::string& endpoint) const;

  const Options options_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;                 // guarded by mu_
  std::vector<Unit> units_;           // guarded by mu_
  std::vector<Pending> verifying_;    // guarded by mu_
  std::thread thread_;
};

}  // namespace tq::internal
