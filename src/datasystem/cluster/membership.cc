// Membership: lease registration + keep-alive thread, and the live set kept
// from a prefix watch.
#include "datasystem/cluster/membership.h"

#include <nlohmann/json.hpp>

#include "common/logging.h"

namespace ds::cluster {

using nlohmann::json;
using tqds::Result;
using tqds::Status;

Status MembershipOptions::Validate() const {
  TQDS_RETURN_NOT_OK(etcd.Validate());
  if (key_prefix.empty() || key_prefix.back() != '/') {
    return Status::Invalid("membership key_prefix '", key_prefix, "' must end with '/'");
  }
  if (!self_address.empty() && self_address.find(':') == std::string::npos) {
    return Status::Invalid("membership self_address '", self_address, "' is not host:port");
  }
  if (lease_ttl.count() < 1) return Status::Invalid("membership lease_ttl must be >= 1 s");
  if (keepalive_interval.count() < 0 || keepalive_interval >= lease_ttl) {
    return Status::Invalid("membership keepalive_interval must be in [0, lease_ttl)");
  }
  if (retry_interval.count() <= 0) return Status::Invalid("membership retry_interval must be > 0");
  return Status::OK();
}

std::chrono::milliseconds MembershipOptions::effective_keepalive_interval() const {
  if (keepalive_interval.count() > 0) return keepalive_interval;
  return std::chrono::duration_cast<std::chrono::milliseconds>(lease_ttl) / 3;
}

std::string EncodeMember(const Member& m) {
  return json{
      {"address", m.address}, {"started_at", m.started_at_ms}, {"incarnation", m.incarnation}}
      .dump();
}

Result<Member> DecodeMember(const std::string& text) {
  json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return Status::Invalid("member record is not a JSON object: ", text.substr(0, 100));
  }
  auto addr = j.find("address");
  auto started = j.find("started_at");
  auto inc = j.find("incarnation");
  if (addr == j.end() || !addr->is_string() || started == j.end() ||
      !started->is_number_integer() || inc == j.end() || !inc->is_number_unsigned()) {
    return Status::Invalid("member record lacks address/started_at/incarnation: ",
                           text.substr(0, 100));
  }
  Member m;
  m.address = addr->get<std::string>();
  m.started_at_ms = started->get<int64_t>();
  m.incarnation = inc->get<uint64_t>();
  return m;
}

std::vector<std::string> MembershipView::addresses() const {
  std::vector<std::string> out;
  out.reserve(members.size());
  for (const auto& m : members) out.push_back(m.address);
  return out;
}

bool MembershipView::Contains(const std::string& address) const {
  for (const auto& m : members) {
    if (m.address == address) return true;
  }
  return false;
}

Membership::Membership(MembershipOptions options, MembershipCallbacks callbacks,
                       std::unique_ptr<EtcdClient> client,
                       std::unique_ptr<EtcdClient> keepalive_client)
    : options_(std::move(options)),
      callbacks_(std::move(callbacks)),
      client_(std::move(client)),
      keepalive_client_(std::move(keepalive_client)) {
  auto now = std::chrono::system_clock::now().time_since_epoch();
  self_.address = options_.self_address;
  self_.started_at_ms = std::chrono::duration_cast<std::chrono::milliseconds>(now).count();
  self_.incarnation = options_.incarnation != 0
                          ? options_.incarnation
                          : static_cast<uint64_t>(
                                std::chrono::duration_cast<std::chrono::nanoseconds>(now).count());
}

Result<std::unique_ptr<Membership>> Membership::Start(MembershipOptions options,
                                                      MembershipCallbacks callbacks) {
  TQDS_RETURN_NOT_OK(options.Validate());
  TQDS_ASSIGN_OR_RETURN(auto client, EtcdClient::Create(options.etcd));
  // A keep-alive must not outlast its period, or one hung call eats the
  // lease: keep-alives get a client of their own with a shorter timeout.
  EtcdOptions ka = options.etcd;
  ka.request_timeout = std::min(ka.request_timeout, options.effective_keepalive_interval());
  TQDS_ASSIGN_OR_RETURN(auto keepalive_client, EtcdClient::Create(ka));
  std::unique_ptr<Membership> m(new Membership(std::move(options), std::move(callbacks),
                                               std::move(client), std::move(keepalive_client)));
  const auto& opts = m->options_;
  if (!opts.self_address.empty()) TQDS_RETURN_NOT_OK(m->Register());
  TQDS_ASSIGN_OR_RETURN(RangeResult snapshot, m->client_->GetPrefix(opts.key_prefix));
  m->ApplySnapshot(snapshot);

  WatchCallbacks wcb;
  Membership* raw = m.get();
  wcb.on_events = [raw](const std::vector<WatchEvent>& events) { raw->ApplyEvents(events); };
  wcb.on_resync = [raw](const RangeResult& snap) { raw->ApplySnapshot(snap); };
  TQDS_ASSIGN_OR_RETURN(m->watch_, m->client_->Watch(opts.key_prefix, /*prefix=*/true,
                                                     snapshot.revision + 1, std::move(wcb)));
  if (!opts.self_address.empty())
    m->keepalive_thread_ = std::thread([raw] { raw->KeepAliveLoop(); });
  spdlog::info("membership: {} joined via etcd {} (lease ttl {} s), {} member(s) live",
               opts.self_address.empty() ? "observer" : opts.self_address, opts.etcd.address,
               opts.lease_ttl.count(), m->View().members.size());
  return m;
}

Membership::~Membership() { Stop(); }

void Membership::Stop() {
  std::call_once(stop_once_, [this] {
    int64_t lease = 0;
    {
      std::lock_guard<std::mutex> lock(mu_);
      stopping_ = true;
      lease = lease_;
      lease_ = 0;
    }
    cv_.notify_all();
    if (keepalive_thread_.joinable()) keepalive_thread_.join();
    if (watch_) watch_->Cancel();
    if (lease != 0) {
      Status st = client_->RevokeLease(lease);
      if (!st.ok()) spdlog::info("membership: revoking lease {}: {}", lease, st.ToString());
    }
  });
}

std::string Membership::SelfKey() const { return options_.key_prefix + options_.self_address; }

std::string Membership::AddressOfKey(const std::string& key) const {
  return key.substr(std::min(key.size(), options_.key_prefix.size()));
}

Status Membership::Register() {
  TQDS_ASSIGN_OR_RETURN(LeaseGrant grant, client_->GrantLease(options_.lease_ttl.count()));
  auto put = client_->Put(SelfKey(), EncodeMember(self_), grant.id);
  if (!put.ok()) {
    (void)client_->RevokeLease(grant.id);
    return put.status();
  }
  std::unique_lock<std::mutex> lock(mu_);
  if (stopping_) {
    // Stop() ran meanwhile and could not see this lease: take it back here.
    lock.unlock();
    (void)client_->RevokeLease(grant.id);
    return Status::Cancelled("membership stopped");
  }
  lease_ = grant.id;
  self_put_revision_ = *put;
  reregister_ = false;
  ++registrations_;
  return Status::OK();
}

void Membership::KeepAliveLoop() {
  const auto interval = options_.effective_keepalive_interval();
  bool outage = false;  // etcd stopped answering; log once per outage
  auto wait = interval;
  std::unique_lock<std::mutex> lock(mu_);
  while (!stopping_) {
    if (lease_ == 0 || reregister_) {
      lock.unlock();
      Status st = Register();
      lock.lock();
      if (st.ok()) {
        spdlog::info("membership: {} registered again (lease {})", self_.address, lease_);
        outage = false;
        wait = interval;
      } else if (!stopping_) {
        if (!outage)
          spdlog::warn("membership: cannot register {}: {}", self_.address, st.ToString());
        outage = true;
        cv_.wait_for(lock, options_.retry_interval, [this] { return stopping_; });
      }
      continue;
    }
    if (cv_.wait_for(lock, wait, [this] { return stopping_ || reregister_; })) continue;
    const int64_t lease = lease_;
    lock.unlock();
    auto ttl = keepalive_client_->KeepAliveOnce(lease);
    lock.lock();
    if (ttl.ok()) {
      if (outage) spdlog::info("membership: etcd answers again; lease {} kept", lease);
      outage = false;
      wait = interval;
    } else if (ttl.status().IsNotFound()) {
      spdlog::warn("membership: lease {} of {} expired; registering again", lease, self_.address);
      if (lease_ == lease) lease_ = 0;
    } else {
      if (!outage) {
        spdlog::warn("membership: keep-alive of {} failed: {}; keeping the last view, retrying",
                     self_.address, ttl.status().ToString());
      }
      outage = true;
      wait = options_.retry_interval;
    }
  }
}

void Membership::PutLocked(const KeyValue& kv, std::vector<Change>* changes) {
  std::string address = AddressOfKey(kv.key);
  auto decoded = DecodeMember(kv.value);
  if (!decoded.ok()) {
    spdlog::warn("membership: ignoring {}: {}", kv.key, decoded.status().ToString());
    return;
  }
  Member m = std::move(decoded).value();
  if (m.address != address) {
    spdlog::warn("membership: {} holds address {}; using the key's", kv.key, m.address);
    m.address = address;
  }
  if (address == self_.address && m.incarnation != self_.incarnation) {
    spdlog::error("membership: another worker (incarnation {}) registered our address {}",
                  m.incarnation, address);
  }
  auto it = members_.find(address);
  if (it != members_.end()) {
    if (it->second.incarnation == m.incarnation) {
      it->second = m;
      return;
    }
    changes->push_back({false, it->second});  // a restarted worker replaced its old self
  }
  changes->push_back({true, m});
  members_[address] = std::move(m);
}

void Membership::DeleteLocked(const std::string& address, int64_t revision,
                              std::vector<Change>* changes) {
  auto it = members_.find(address);
  if (it != members_.end()) {
    changes->push_back({false, it->second});
    members_.erase(it);
  }
  // Our own key gone while our lease should hold it (deleted by hand, or
  // our lease lapsed): register again. Deletes of an older registration
  // (before our last put) are history.
  if (address == self_.address && !stopping_ && revision > self_put_revision_) {
    reregister_ = true;
  }
}

void Membership::ApplySnapshot(const RangeResult& snapshot) {
  std::vector<Change> changes;
  MembershipView view;
  {
    std::lock_guard<std::mutex> lock(mu_);
    std::map<std::string, const KeyValue*> now;
    for (const auto& kv : snapshot.kvs) now[AddressOfKey(kv.key)] = &kv;
    std::vector<std::string> gone;
    for (const auto& [address, m] : members_) {
      if (now.count(address) == 0) gone.push_back(address);
    }
    for (const auto& address : gone) DeleteLocked(address, snapshot.revision, &changes);
    for (const auto& [address, kv] : now) PutLocked(*kv, &changes);
    if (!self_.address.empty() && now.count(self_.address) == 0 && !stopping_ && lease_ != 0 &&
        snapshot.revision > self_put_revision_) {
      reregister_ = true;
    }
    view = CommitLocked(changes);
  }
  Publish(changes, view);
}

void Membership::ApplyEvents(const std::vector<WatchEvent>& events) {
  std::vector<Change> changes;
  MembershipView view;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& e : events) {
      if (e.type == EventType::kPut) {
        PutLocked(e.kv, &changes);
      } else {
        DeleteLocked(AddressOfKey(e.kv.key), e.kv.mod_revision, &changes);
      }
    }
    view = CommitLocked(changes);
  }
  Publish(changes, view);
}

MembershipView Membership::CommitLocked(const std::vector<Change>& changes) {
  // The version moves in the same critical section as the members, so no
  // reader sees new members under an old version.
  if (!changes.empty()) ++version_;
  return ViewLocked();
}

void Membership::Publish(const std::vector<Change>& changes, const MembershipView& view) {
  cv_.notify_all();  // view waiters, and the keep-alive thread on reregister_
  if (changes.empty()) return;
  for (const auto& c : changes) {
    spdlog::info("membership: {} {} (incarnation {}), view {}", c.member.address,
                 c.join ? "joined" : "left", c.member.incarnation, view.version);
    if (c.join && callbacks_.on_join) callbacks_.on_join(c.member);
    if (!c.join && callbacks_.on_leave) callbacks_.on_leave(c.member);
  }
  if (callbacks_.on_change) callbacks_.on_change(view);
}

MembershipView Membership::ViewLocked() const {
  MembershipView view;
  view.version = version_;
  for (const auto& [address, m] : members_) view.members.push_back(m);
  return view;
}

MembershipView Membership::View() const {
  std::lock_guard<std::mutex> lock(mu_);
  return ViewLocked();
}

uint64_t Membership::version() const {
  std::lock_guard<std::mutex> lock(mu_);
  return version_;
}

bool Membership::WaitFor(const std::function<bool(const MembershipView&)>& pred,
                         std::chrono::milliseconds timeout) const {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  std::unique_lock<std::mutex> lock(mu_);
  while (true) {
    MembershipView view = ViewLocked();
    lock.unlock();
    bool ok = pred(view);
    lock.lock();
    if (ok) return true;
    if (version_ != view.version) continue;
    if (cv_.wait_until(lock, deadline) == std::cv_status::timeout && version_ == view.version) {
      return false;
    }
  }
}

int64_t Membership::lease() const {
  std::lock_guard<std::mutex> lock(mu_);
  return lease_;
}

int64_t Membership::registrations() const {
  std::lock_guard<std::mutex> lock(mu_);
  return registrations_;
}

}  // namespace ds::cluster
