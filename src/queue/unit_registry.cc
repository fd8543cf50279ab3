// UnitRegistry: verified registration and ping-based liveness of the storage
// units a controller lists.
#include "queue/unit_registry.h"

#include <spdlog/spdlog.h>

#include <algorithm>

namespace tq::internal {

using tqds::Status;
using tqds::wire::Message;
using tqds::wire::MsgType;
using tqds::wire::RpcClient;
using Clock = std::chrono::steady_clock;

namespace {

constexpr size_t kMaxEndpointBytes = 512;

Status CheckEndpoint(const std::string& ep) {
  if (ep.empty()) return Status::Invalid("RegisterStorage: endpoint must not be empty");
  if (ep.size() > kMaxEndpointBytes) {
    return Status::Invalid("RegisterStorage: endpoint of ", ep.size(), " bytes (at most ", kMaxEndpointBytes, ")");
  }
  if (ep.find('\0') != std::string::npos) return Status::Invalid("RegisterStorage: endpoint contains a NUL byte");
  if (ep.rfind("tcp://", 0) != 0 && ep.rfind("ipc://", 0) != 0 && ep.rfind("inproc://", 0) != 0) {
    return Status::Invalid("RegisterStorage: endpoint '", ep, "' is not tcp://, ipc:// or inproc://");
  }
  return Status::OK();
}

bool Ready(const std::future<tqds::Result<Message>>& f) {
  return f.valid() && f.wait_for(std::chrono::seconds(0)) == std::future_status::ready;
}

}  // namespace

UnitRegistry::UnitRegistry(Options options) : options_(options), thread_([this] { Run(); }) {}

UnitRegistry::~UnitRegistry() { Stop(); }

void UnitRegistry::AddPermanent(std::string endpoint) {
  std::lock_guard<std::mutex> lock(mu_);
  if (!ListedLocked(endpoint)) units_.push_back(Unit{std::move(endpoint), nullptr, {}, {}, {}});
}

void UnitRegistry::AddRecovered(std::string endpoint) {
  if (!CheckEndpoint(endpoint).ok()) return;
  auto client = RpcClient::Connect(endpoint);
  if (!client.ok()) {
    spdlog::warn("controller: not listing recovered storage unit {}: {}", endpoint, client.status().ToString());
    return;
  }
  std::lock_guard<std::mutex> lock(mu_);
  if (ListedLocked(endpoint) || units_.size() >= options_.max_units) return;
  spdlog::info("controller: storage unit {} listed again (from the state directory)", endpoint);
  units_.push_back(Unit{std::move(endpoint), client.MoveValue(), {}, Clock::now(), Clock::now()});
}

bool UnitRegistry::ListedLocked(const std::string& endpoint) const {
  return std::any_of(units_.begin(), units_.end(), [&](const Unit& u) { return u.endpoint == endpoint; });
}

void UnitRegistry::Register(std::string endpoint, Done done) {
  Status st = CheckEndpoint(endpoint);
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (st.ok() && stop_) st = Status::Unavailable("RegisterStorage: the controller is stopping");
    if (st.ok() && ListedLocked(endpoint)) {
      // Listed already (a unit registering again): nothing to verify.
    } else if (st.ok() && units_.size() + verifying_.size() >= options_.max_units) {
      st = Status::OutOfSpace("RegisterStorage: the controller already has ", options_.max_units,
                              " storage units registered or being verified; '", endpoint, "' is refused");
    } else if (st.ok()) {
      auto client = RpcClient::Connect(endpoint);
      if (!client.ok()) {
        st = client.status().WithContext("RegisterStorage: storage unit '" + endpoint + "'");
      } else {
        Pending p{std::move(endpoint), std::move(done), client.MoveValue(), {}};
        p.stats = p.client->Call(Message(MsgType::kUnitStats, 0), options_.verify_timeout);
        verifying_.push_back(std::move(p));
        cv_.notify_all();
        return;
      }
    }
  }
  done(st);
}

std::vector<std::string> UnitRegistry::Units() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<std::string> out;
  out.reserve(units_.size());
  for (const auto& u : units_) out.push_back(u.endpoint);
  return out;
}

void UnitRegistry::Stop() {
  std::vector<Pending> pending;
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
    pending.swap(verifying_);
    cv_.notify_all();
  }
  if (thread_.joinable()) thread_.join();
  for (auto& p : pending) p.done(Status::Unavailable("RegisterStorage: the controller stopped"));
}

void UnitRegistry::VerifyLocked(std::vector<std::pair<Done, Status>>& done,
                                std::vector<std::unique_ptr<RpcClient>>& closed) {
  for (auto it = verifying_.begin(); it != verifying_.end();) {
    if (!Ready(it->stats)) {
      ++it;
      continue;
    }
    auto rep = it->stats.get();
    if (rep.ok()) {
      if (!ListedLocked(it->endpoint)) {
        spdlog::info("controller: storage unit {} registered", it->endpoint);
        units_.push_back(Unit{it->endpoint, std::move(it->client), {}, Clock::now(), Clock::now()});
      }
      done.emplace_back(std::move(it->done), Status::OK());
    } else {
      done.emplace_back(std::move(it->done),
                        Status::Unavailable("RegisterStorage: the controller could not reach a storage unit at '",
                                            it->endpoint, "' (", rep.status().message(),
                                            "); register only a running unit, reachable from the controller"));
    }
    if (it->client) closed.push_back(std::move(it->client));
    it = verifying_.erase(it);
  }
}

void UnitRegistry::PingLocked(Clock::time_point now, std::vector<std::unique_ptr<RpcClient>>& closed) {
  for (auto it = units_.begin(); it != units_.end();) {
    Unit& u = *it;
    if (!u.client) {  // permanent
      ++it;
      continue;
    }
    if (Ready(u.ping)) {
      auto rep = u.ping.get();
      if (rep.ok()) {
        u.last_answer = now;
      } else if (now - u.last_answer >= options_.liveness_timeout) {
        // A refused connection fails a Ping at once: only a silence as long
        // as the liveness timeout drops the unit.
        spdlog::warn("controller: dropping storage unit {}: it answered no ping for {} ms ({})", u.endpoint,
                     options_.liveness_timeout.count(), rep.status().ToString());
        closed.push_back(std::move(u.client));
        it = units_.erase(it);
        continue;
      }
    }
    if (!u.ping.valid() && now - u.ping_sent >= options_.ping_interval) {
      u.ping = u.client->Call(Message(MsgType::kCtlPing, 0), options_.liveness_timeout);
      u.ping_sent = now;
    }
    ++it;
  }
}

void UnitRegistry::Run() {
  // Poll often while a registration waits for its answer (the unit is
  // blocked in its own start until the reply), else once per tick.
  const auto tick = std::min<std::chrono::milliseconds>(options_.ping_interval, std::chrono::milliseconds(100));
  std::unique_lock<std::mutex> lock(mu_);
  while (!stop_) {
    cv_.wait_for(lock, verifying_.empty() ? tick : std::chrono::milliseconds(2));
    if (stop_) break;
    std::vector<std::pair<Done, Status>> done;
    std::vector<std::unique_ptr<RpcClient>> closed;
    VerifyLocked(done, closed);
    PingLocked(Clock::now(), closed);
    lock.unlock();
    for (auto& [cb, st] : done) cb(st);
    closed.clear();  // joins their I/O threads, outside the lock
    lock.lock();
  }
}

}  // namespace tq::internal
