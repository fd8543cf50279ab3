// ClusterNode: membership, key ownership, cross-node get/delete, rebalancing.
#include "datasystem/cluster_node.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <set>

#include "datasystem/peer_messages.h"
#include "datasystem/protocol.h"

namespace ds {
namespace {

using tqds::Result;
using tqds::Status;
using tqds::StatusCode;
using tqds::wire::Message;
using tqds::wire::MsgType;
using proto::PublishMode;

constexpr size_t kBatch = 20000;  // entries per control message

int64_t NowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

Message KeysMessage(MsgType type, const std::vector<std::string>& keys) {
  Message m(type, 0);
  m.set_body(msg::EncodeKeys(keys));
  return m;
}

template <typename T>
std::vector<std::vector<T>> Chunks(const std::vector<T>& v) {
  std::vector<std::vector<T>> out;
  for (size_t i = 0; i < v.size(); i += kBatch) {
    out.emplace_back(v.begin() + static_cast<std::ptrdiff_t>(i),
                     v.begin() + static_cast<std::ptrdiff_t>(std::min(v.size(), i + kBatch)));
  }
  return out;
}

}  // namespace

ClusterNode::ClusterNode(ClusterOptions options, ObjectStore& store)
    : options_(std::move(options)), store_(store) {}

Result<std::unique_ptr<ClusterNode>> ClusterNode::Start(ClusterOptions options,
                                                        ObjectStore& store) {
  // The hot paths find owners without allocating, at most kMaxOwners each.
  options.metadata_replicas =
      std::clamp<size_t>(options.metadata_replicas, 1, cluster::HashRing::kMaxOwners);
  std::unique_ptr<ClusterNode> n(new ClusterNode(std::move(options), store));
  n->incarnation_ = static_cast<uint64_t>(NowNs());
  n->puller_ = std::make_unique<PullClient>(n->options_.pull);
  TQDS_ASSIGN_OR_RETURN(n->data_, DataServer::Start(n->options_.self_ip, n->options_.data_port,
                                                    n->options_.self, store));
  cluster::MembershipOptions mo;
  mo.etcd.address = n->options_.etcd_address;
  mo.self_address = n->options_.self;
  mo.lease_ttl = n->options_.node_timeout;
  mo.incarnation = n->incarnation_;
  cluster::MembershipCallbacks cb;
  ClusterNode* raw = n.get();
  cb.on_change = [raw](const cluster::MembershipView& v) { raw->OnViewChange(v); };
  n->announcer_ = std::thread([raw] { raw->AnnounceLoop(); });
  auto m = cluster::Membership::Start(mo, cb);
  if (!m.ok()) {
    n->Stop();
    return m.status().WithContext("joining the cluster through etcd " + n->options_.etcd_address);
  }
  n->membership_ = std::move(m).value();
  spdlog::info("cluster: {} joined (data plane {}, node timeout {} s)", n->options_.self,
               n->data_->endpoint(), n->options_.node_timeout.count());
  return n;
}

ClusterNode::~ClusterNode() { Stop(); }

void ClusterNode::Stop() {
  if (membership_) membership_->Stop();  // leave first: others stop routing to us
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_ && !announcer_.joinable()) return;
    stopping_ = true;
  }
  cv_.notify_all();
  if (announcer_.joinable()) announcer_.join();
  if (data_) data_->Stop();
  std::lock_guard<std::mutex> lock(mu_);
  peers_.clear();
}

void ClusterNode::OnViewChange(const cluster::MembershipView& view) {
  LiveSet live;
  for (const auto& m : view.members) live[m.address] = m.incarnation;
  auto ring = std::make_shared<const cluster::HashRing>(view.addresses());
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto it = peers_.begin(); it != peers_.end();) {
      it = live.count(it->first) ? std::next(it) : peers_.erase(it);
    }
    live_ = std::move(live);
    ring_ = std::move(ring);
    ++view_version_;
  }
  spdlog::info("cluster: view {} has {} worker(s)", view.version, view.members.size());
  cv_.notify_all();
}

std::pair<LiveSet, ClusterNode::RingPtr> ClusterNode::Snapshot() const {
  std::lock_guard<std::mutex> lock(mu_);
  return {live_, ring_};
}

Replica ClusterNode::SelfReplica(uint64_t version) const {
  return Replica{options_.self, incarnation_, data_->endpoint(), version};
}

std::shared_ptr<tqds::wire::RpcClient> ClusterNode::Peer(const std::string& address) {
  std::lock_guard<std::mutex> lock(mu_);
  auto& p = peers_[address];
  if (!p) {
    auto c = tqds::wire::RpcClient::Connect("tcp://" + address);
    if (!c.ok()) return nullptr;
    p = std::move(c).value();
  }
  return p;
}

ClusterNode::Future ClusterNode::Send(const std::string& to, Message request) {
  if (to == options_.self) {  // run here, through the codec like a peer's request
    std::promise<Result<Message>> p;
    auto roundtrip = [](const Message& m) {
      std::string h = m.EncodeHeader();
      return Message::DecodeHeader(h.data(), h.size());
    };
    auto decoded = roundtrip(request);
    if (!decoded.ok()) {
      p.set_value(decoded.status());
    } else {
      auto reply = HandlePeer(*decoded);
      p.set_value(reply.ok() ? roundtrip(*reply) : Result<Message>(reply.status()));
    }
    return p.get_future();
  }
  auto peer = Peer(to);
  if (!peer) {
    std::promise<Result<Message>> p;
    p.set_value(Status::Unavailable("cannot connect to worker ", to));
    return p.get_future();
  }
  return peer->Call(std::move(request), options_.rpc_timeout);
}

void ClusterNode::Later(std::function<void()> task) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) return;
    tasks_.push_back(std::move(task));
  }
  cv_.notify_all();
}

// ------------------------------------------------------------------ publish

namespace {

// Per owner (an index into ring.nodes()), the items that go to it; then as
// a map by owner address. Owners are found without allocating: a batch of
// thousands of keys costs no strings or vectors per key.
template <typename T>
class ByOwner {
 public:
  explicit ByOwner(const cluster::HashRing& ring) : ring_(ring), per_node_(ring.size()) {}
  // The first `replicas` owners of `key` are where the next Put goes (two
  // steps, so that the item may take the key's own string).
  void Find(std::string_view key, size_t replicas) {
    found_ = ring_.OwnerIndexes(key, replicas, idx_);
  }
  void Put(T item) {
    for (size_t j = 0; j + 1 < found_; ++j) per_node_[idx_[j]].push_back(item);
    if (found_ > 0) per_node_[idx_[found_ - 1]].push_back(std::move(item));
  }
  std::map<std::string, std::vector<T>> Take() && {
    std::map<std::string, std::vector<T>> out;
    for (size_t i = 0; i < per_node_.size(); ++i) {
      if (!per_node_[i].empty()) out.emplace(ring_.nodes()[i], std::move(per_node_[i]));
    }
    return out;
  }

 private:
  const cluster::HashRing& ring_;
  std::vector<std::vector<T>> per_node_;
  uint32_t idx_[cluster::HashRing::kMaxOwners] = {};
  size_t found_ = 0;
};

// The holder of a removed record's copy: from a peer's reply, or from this
// worker's own table.
std::string& HolderOf(std::string& holder) { return holder; }
std::string& HolderOf(Replica& replica) { return replica.holder; }

}  // namespace

void ClusterNode::Published(const std::vector<std::string>& keys, bool wait) {
  auto [live, ring] = Snapshot();
  if (!ring || ring->empty()) return;
  ByOwner<PublishEntry> by_owner(*ring);
  for (auto& info : store_.Describe(keys)) {
    if (info.code != StatusCode::kOk || info.cached) continue;
    by_owner.Find(info.key, options_.metadata_replicas);
    by_owner.Put(PublishEntry{std::move(info.key), info.size, SelfReplica(info.version)});
  }
  SendPublish(PublishMode::kPrimary, std::move(by_owner).Take(), wait);
}

void ClusterNode::SendPublish(PublishMode mode, std::map<std::string, std::vector<PublishEntry>> by_owner,
                              bool wait) {
  if (by_owner.empty()) return;
  if (!wait) {
    Later([this, mode, by_owner = std::move(by_owner)]() mutable { SendPublish(mode, std::move(by_owner), true); });
    return;
  }
  // kCache only: CopiesToDrop counts the owners that answered per key.
  auto keys_of = [&](std::span<const PublishEntry> entries) {
    std::vector<std::string> keys;
    if (mode == PublishMode::kCache) {
      keys.reserve(entries.size());
      for (const auto& e : entries) keys.push_back(e.key);
    }
    return keys;
  };
  struct Call {
    std::string owner;
    std::vector<std::string> keys;
    Future reply;
  };
  // The other owners' requests go out first; this worker records its own
  // share meanwhile, in its table, without a message.
  std::vector<Call> calls;
  for (const auto& [owner, entries] : by_owner) {
    if (owner == options_.self) continue;
    for (size_t i = 0; i < entries.size(); i += kBatch) {
      std::span<const PublishEntry> chunk(entries.data() + i, std::min(kBatch, entries.size() - i));
      Message m(MsgType::kDsMetaPublish, 0);
      m.set_body(peer::EncodePublish(mode, chunk));
      calls.push_back(Call{owner, keys_of(chunk), Send(owner, std::move(m))});
    }
  }
  std::vector<PublishAnswer> answers;
  if (auto self = by_owner.find(options_.self); self != by_owner.end()) {
    auto& entries = self->second;
    for (size_t i = 0; i < entries.size(); i += kBatch) {  // chunks: the table's lock is held per chunk
      const auto from = entries.begin() + static_cast<std::ptrdiff_t>(i);
      std::vector<PublishEntry> chunk(std::make_move_iterator(from),
                                      std::make_move_iterator(from + static_cast<std::ptrdiff_t>(
                                                                         std::min(kBatch, entries.size() - i))));
      auto keys = keys_of(chunk);
      answers.push_back(PublishAnswer{std::move(keys), owners_.Publish(mode, std::move(chunk))});
    }
  }
  for (auto& c : calls) {
    auto reply = c.reply.get();
    auto s = reply.ok() ? peer::DecodePublishReply(reply->body()) : Result<std::vector<StaleCopy>>(reply.status());
    if (!s.ok()) {
      spdlog::warn("cluster: publishing locations to owner {} failed: {}", c.owner,
                   s.status().ToString());
      continue;
    }
    answers.push_back(PublishAnswer{std::move(c.keys), std::move(s).value()});
  }
  DropStale(CopiesToDrop(mode, answers), true);
}

void ClusterNode::DropStale(const std::vector<StaleCopy>& stale, bool wait) {
  if (stale.empty()) return;
  if (!wait) {
    Later([this, stale] { DropStale(stale, true); });
    return;
  }
  const LiveSet live = Snapshot().first;
  // Per holder: key -> the version to drop (0: any; two drops of one key
  // with different versions drop any).
  std::map<std::string, std::map<std::string, uint64_t>> by_holder;
  for (const auto& s : stale) {
    if (!live.count(s.holder)) continue;  // a dead holder has nothing
    auto [it, fresh] = by_holder[s.holder].emplace(s.key, s.version);
    if (!fresh && it->second != s.version) it->second = 0;
  }
  std::vector<Future> calls;
  for (const auto& [holder, drops] : by_holder) {
    std::vector<std::pair<std::string, uint64_t>> all(drops.begin(), drops.end());
    for (const auto& chunk : Chunks(all)) {
      peer::Drop drop;
      for (const auto& [k, v] : chunk) {
        drop.keys.push_back(k);
        drop.versions.push_back(v);
      }
      if (holder == options_.self) {
        store_.DeleteVersions(drop.keys, drop.versions);
        continue;
      }
      Message m(MsgType::kDsDropCopies, 0);
      m.set_body(peer::Encode(drop));
      calls.push_back(Send(holder, std::move(m)));
    }
  }
  for (auto& f : calls) (void)f.get();  // best effort
}

// ------------------------------------------------------------------ get

Result<std::vector<LookupResult>> ClusterNode::Locate(const std::vector<std::string>& keys,
                                                     const cluster::HashRing& ring) {
  const size_t reps = std::max<size_t>(1, options_.metadata_replicas);
  // 1. Locate: ask each key's owner; on no answer, the next owner.
  std::vector<std::optional<LookupResult>> found(keys.size());
  std::vector<bool> answered(keys.size(), false);  // some owner said "no record"
  struct Owners {
    uint32_t node[cluster::HashRing::kMaxOwners];  // indexes into ring.nodes()
    size_t size = 0;
  };
  std::vector<Owners> owners(keys.size());
  for (size_t i = 0; i < keys.size(); ++i) {
    owners[i].size = ring.OwnerIndexes(keys[i], reps, owners[i].node);
  }
  Status last_error;
  for (size_t attempt = 0; attempt < reps; ++attempt) {
    std::vector<std::vector<size_t>> per_node(ring.size());
    bool any = false;
    for (size_t i = 0; i < keys.size(); ++i) {
      if (!found[i] && attempt < owners[i].size) {
        per_node[owners[i].node[attempt]].push_back(i);
        any = true;
      }
    }
    if (!any) break;
    // The other owners are asked first; this worker's share is looked up
    // in its own table meanwhile, without a message.
    std::vector<std::pair<std::vector<size_t>, Future>> calls;
    std::vector<size_t> mine;
    for (size_t node = 0; node < per_node.size(); ++node) {
      auto& idx = per_node[node];
      if (idx.empty()) continue;
      if (ring.nodes()[node] == options_.self) {
        mine = std::move(idx);
        continue;
      }
      std::vector<std::string> ks;
      ks.reserve(idx.size());
      for (size_t i : idx) ks.push_back(keys[i]);
      calls.emplace_back(std::move(idx), Send(ring.nodes()[node], KeysMessage(MsgType::kDsMetaLookup, ks)));
    }
    auto take = [&](const std::vector<size_t>& idx, std::vector<LookupResult>& answers) {
      for (size_t j = 0; j < idx.size(); ++j) {
        LookupResult& lr = answers[j];
        // Right after a view change a new owner may not have the record
        // yet: ask the next owner (often the previous one) before a miss.
        if (lr.code == StatusCode::kNotFound && attempt + 1 < owners[idx[j]].size) {
          answered[idx[j]] = true;
          continue;
        }
        found[idx[j]] = std::move(lr);
      }
    };
    if (!mine.empty()) {
      auto answers = owners_.Lookup(keys, mine, Snapshot().first);
      take(mine, answers);
    }
    for (auto& [idx, f] : calls) {
      auto reply = f.get();
      Status st = reply.status();
      if (st.ok()) {
        auto answers = peer::DecodeLookupReply(reply->body(), idx.size());
        st = answers.status();
        if (st.ok()) {
          take(idx, *answers);
          continue;
        }
      }
      last_error = st;
    }
  }

  std::vector<LookupResult> out(keys.size());
  for (size_t i = 0; i < keys.size(); ++i) {
    if (found[i]) {
      out[i] = std::move(*found[i]);
    } else if (!answered[i]) {  // no owner answered at all
      std::string names;
      for (size_t j = 0; j < owners[i].size; ++j) {
        names += (names.empty() ? "" : ", ") + ring.nodes()[owners[i].node[j]];
      }
      return Status::Unavailable("cannot locate '", keys[i], "': its owner worker(s) ", names,
                                 " do not answer (", last_error.message(), ")");
    }  // else: every owner that answered has no record (a miss)
  }
  return out;
}

Status ClusterNode::Fetch(Session& reader, const std::vector<std::string>& keys,
                         const std::vector<ValueRange>& ranges, std::vector<Located>* pulled) {
  auto [live, ring] = Snapshot();
  if (!ring || ring->empty() || keys.empty()) return Status::OK();
  if (!ranges.empty() && ranges.size() != keys.size()) {
    return Status::Invalid("Fetch: ", ranges.size(), " ranges for ", keys.size(), " keys");
  }
  TQDS_ASSIGN_OR_RETURN(auto found, Locate(keys, *ring));

  // 2. Decide per key: pull (whole, or only the range asked for), stay
  // missing, or fail fast.
  std::vector<Wanted> whole, part;
  for (size_t i = 0; i < keys.size(); ++i) {
    const LookupResult& lr = found[i];
    if (lr.code == StatusCode::kUnavailable) {
      return Status::Unavailable("key '", keys[i], "' is lost: its only copy was on worker ",
                                 lr.lost, ", which left the cluster");
    }
    if (lr.code != StatusCode::kOk) continue;
    Wanted w{keys[i], i, 0, lr.size, {}};
    for (const auto& rep : lr.live) {
      if (rep.holder != options_.self) w.candidates.push_back(rep);
    }
    if (w.candidates.empty()) continue;
    // A range that starts past the end is the caller's to report: the key
    // is pulled whole, as without a range.
    const ValueRange r = ranges.empty() ? ValueRange{} : ranges[i];
    const uint64_t n = RangeBytes(r.offset, r.length, lr.size);
    if (n > 0 && n < lr.size) {
      w.offset = r.offset;
      w.size = n;
      part.push_back(std::move(w));
      continue;
    }
    whole.push_back(std::move(w));
  }
  // 3. Whole values of a small fetch become cached copies; a bulk fetch's
  // and every part are private to the reader.
  Status failure;
  if (!whole.empty()) {
    failure = PullAndKeep(reader, whole, whole.size() <= options_.cache_max_keys, *ring, pulled);
  }
  if (!part.empty()) {
    Status st = PullAndKeep(reader, part, /*cache=*/false, *ring, pulled);
    if (failure.ok()) failure = st;
  }
  return failure;
}

Status ClusterNode::PullAndKeep(Session& reader, std::vector<Wanted>& wanted, bool cache,
                                const cluster::HashRing& ring, std::vector<Located>* pulled) {
  // Pull into fresh blocks: created in a private session and sealed as
  // cached copies when complete, or created in the reader's session and
  // pinned there as its private copies.
  Session own;
  Session& session = cache ? own : reader;
  WriteOptions wo;
  wo.evictable = true;
  wo.cached = true;
  std::vector<std::string> pull_keys;
  std::vector<uint64_t> sizes;
  pull_keys.reserve(wanted.size());
  sizes.reserve(wanted.size());
  for (const auto& w : wanted) {
    pull_keys.push_back(w.key);
    sizes.push_back(w.size);
  }
  TQDS_ASSIGN_OR_RETURN(auto slots, store_.Create(session, pull_keys, sizes, wo));
  std::vector<size_t> next(wanted.size(), 0);
  std::vector<bool> done(wanted.size(), false);
  std::vector<Status> errors(wanted.size());
  while (true) {
    std::map<std::pair<std::string, std::string>, std::vector<size_t>> by_holder;
    for (size_t i = 0; i < wanted.size(); ++i) {
      if (done[i] || next[i] >= wanted[i].candidates.size()) continue;
      const Replica& r = wanted[i].candidates[next[i]];
      by_holder[{r.holder, r.data}].push_back(i);
    }
    if (by_holder.empty()) break;
    for (auto& [holder, idx] : by_holder) {
      std::vector<PullItem> items;
      for (size_t i : idx) {
        items.push_back(PullItem{wanted[i].key, wanted[i].candidates[next[i]].version, wanted[i].size,
                                 store_.base() + slots[i].offset, wanted[i].offset});
      }
      auto st = puller_->Pull(holder.second, holder.first, items);
      for (size_t j = 0; j < idx.size(); ++j) {
        size_t i = idx[j];
        if (st[j].ok()) {
          done[i] = true;
          pulls_.fetch_add(1, std::memory_order_relaxed);
          pulled_bytes_.fetch_add(wanted[i].size, std::memory_order_relaxed);
          // A cached copy expires with its source, never later.
          if (items[j].ttl_ms != 0) store_.SetPendingTtl(session, slots[i].offset, items[j].ttl_ms);
        } else {
          pull_failures_.fetch_add(1, std::memory_order_relaxed);
          if (errors[i].ok() || !st[j].IsNotFound()) errors[i] = st[j];
          ++next[i];
        }
      }
    }
  }
  std::vector<std::string> seal;
  std::vector<uint64_t> seal_offsets, abort_offsets;
  std::vector<size_t> sealed_index;
  Status failure;
  for (size_t i = 0; i < wanted.size(); ++i) {
    if (done[i]) {
      seal.push_back(wanted[i].key);
      seal_offsets.push_back(slots[i].offset);
      sealed_index.push_back(i);
    } else {
      abort_offsets.push_back(slots[i].offset);
      if (!errors[i].IsNotFound() && failure.ok()) failure = errors[i];
    }
  }
  store_.Abort(session, abort_offsets);
  if (!cache) {
    auto located = store_.PinPrivate(session, seal_offsets);
    for (size_t j = 0; j < located.size(); ++j) {
      const Wanted& w = wanted[sealed_index[j]];
      located[j].from = w.offset;
      (*pulled)[w.index] = located[j];
    }
    return failure;
  }
  store_.Seal(session, seal_offsets);
  store_.CloseSession(session);

  // Register the cached copies with their owners before serving them, so
  // a delete that starts after this get returns reaches them; a copy of a
  // key deleted meanwhile comes back stale and is dropped here.
  if (!seal.empty()) {
    const size_t reps = std::max<size_t>(1, options_.metadata_replicas);
    ByOwner<PublishEntry> by_owner(ring);
    for (auto& info : store_.Describe(seal)) {
      if (info.code != StatusCode::kOk) continue;
      by_owner.Find(info.key, reps);
      by_owner.Put(PublishEntry{std::move(info.key), info.size, SelfReplica(info.version)});
    }
    SendPublish(PublishMode::kCache, std::move(by_owner).Take(), /*wait=*/true);
  }
  return failure;
}

ClusterStats ClusterNode::Stats() const {
  ClusterStats s;
  s.coordination = options_.etcd_address;
  for (const auto& [address, incarnation] : Snapshot().first) {
    if (address != options_.self) s.peers.push_back(address);
  }
  std::sort(s.peers.begin(), s.peers.end());
  s.pulls = pulls_.load(std::memory_order_relaxed);
  s.pulled_bytes = pulled_bytes_.load(std::memory_order_relaxed);
  s.pull_failures = pull_failures_.load(std::memory_order_relaxed);
  return s;
}

Result<std::vector<bool>> ClusterNode::ExistRemote(const std::vector<std::string>& keys) {
  std::vector<bool> out(keys.size(), false);
  auto [live, ring] = Snapshot();
  if (!ring || ring->empty() || keys.empty()) return out;
  TQDS_ASSIGN_OR_RETURN(auto found, Locate(keys, *ring));
  for (size_t i = 0; i < keys.size(); ++i) out[i] = found[i].code == StatusCode::kOk;
  return out;
}

// ------------------------------------------------------------------ expire

std::vector<bool> ClusterNode::ExpireRemote(const std::vector<std::string>& keys, uint64_t ttl_ms) {
  std::vector<bool> out(keys.size(), false);
  auto [live, ring] = Snapshot();
  if (!ring || ring->empty() || keys.empty()) return out;
  auto found = Locate(keys, *ring);
  if (!found.ok()) return out;
  // Every live copy, cached ones included: a cached copy never outlives its
  // source, so a shorter time to live must reach it too.
  std::map<std::string, std::vector<size_t>> by_holder;
  for (size_t i = 0; i < keys.size(); ++i) {
    if ((*found)[i].code != StatusCode::kOk) continue;
    for (const auto& rep : (*found)[i].live) {
      if (rep.holder != options_.self) by_holder[rep.holder].push_back(i);
    }
  }
  std::vector<std::pair<std::vector<size_t>, Future>> calls;
  for (auto& [holder, idx] : by_holder) {
    Message m(MsgType::kDsExpire, 0);  // served by the holder's store alone (a worker's request)
    std::vector<std::string> ks;
    ks.reserve(idx.size());
    for (size_t i : idx) ks.push_back(keys[i]);
    m.set_body(msg::EncodeExpire(ks, ttl_ms));
    calls.emplace_back(idx, Send(holder, std::move(m)));
  }
  for (auto& [idx, f] : calls) {
    auto reply = f.get();
    if (!reply.ok()) continue;
    auto exist = msg::DecodeExist(reply->body(), idx.size(), "Expire reply");
    if (!exist.ok()) continue;
    for (size_t j = 0; j < idx.size(); ++j) out[idx[j]] = out[idx[j]] || (*exist)[j];
  }
  return out;
}

// ------------------------------------------------------------------ delete

std::vector<bool> ClusterNode::DeleteRemote(const std::vector<std::string>& keys, bool wait) {
  std::vector<bool> existed(keys.size(), false);
  if (!wait) {
    Later([this, keys] { (void)DeleteRemote(keys, true); });
    return existed;
  }
  auto [live, ring] = Snapshot();
  if (!ring || ring->empty()) return existed;
  ByOwner<size_t> owners(*ring);
  for (size_t i = 0; i < keys.size(); ++i) {
    owners.Find(keys[i], options_.metadata_replicas);
    owners.Put(i);
  }
  // The other owners are asked first; this worker forgets its own share
  // meanwhile, in its table, without a message.
  std::vector<std::pair<std::vector<size_t>, Future>> calls;
  std::vector<size_t> mine;
  for (auto& [owner, idx] : std::move(owners).Take()) {
    if (owner == options_.self) {
      mine = std::move(idx);
      continue;
    }
    std::vector<std::string> ks;
    ks.reserve(idx.size());
    for (size_t i : idx) ks.push_back(keys[i]);
    calls.emplace_back(std::move(idx), Send(owner, KeysMessage(MsgType::kDsMetaRemove, ks)));
  }
  std::vector<StaleCopy> drop;
  // `holders(j)`: the workers that held keys[idx[j]] (none: no record).
  auto take = [&](const std::vector<size_t>& idx, auto&& holders) {
    for (size_t j = 0; j < idx.size(); ++j) {
      auto&& hs = holders(j);
      if (!hs.empty()) existed[idx[j]] = true;
      for (auto& h : hs) {
        std::string& holder = HolderOf(h);
        if (holder != options_.self) drop.push_back({keys[idx[j]], std::move(holder)});
      }
    }
  };
  if (!mine.empty()) {
    auto removed = owners_.Remove(keys, mine);
    take(mine, [&](size_t j) -> std::vector<Replica>& { return removed[j]; });
  }
  for (auto& [idx, f] : calls) {
    auto reply = f.get();
    if (!reply.ok()) continue;
    auto removed = peer::DecodeRemoveReply(reply->body(), idx.size());
    if (!removed.ok()) {
      spdlog::warn("cluster: a MetaRemove reply: {}", removed.status().ToString());
      continue;
    }
    take(idx, [&](size_t j) -> std::vector<std::string>& { return (*removed)[j]; });
  }
  DropStale(drop, true);
  return existed;
}

// ------------------------------------------------------------------ peer requests

Result<Message> ClusterNode::HandlePeer(const Message& request) {
  switch (request.type()) {
    case MsgType::kDsMetaPublish: {
      TQDS_ASSIGN_OR_RETURN(auto m, peer::DecodePublish(request.body()));
      return Message::ReplyTo(request, peer::EncodePublishReply(owners_.Publish(m.mode, std::move(m.entries))));
    }
    case MsgType::kDsMetaLookup: {
      TQDS_ASSIGN_OR_RETURN(auto keys, msg::DecodeKeys(request.body(), "MetaLookup"));
      LiveSet live = Snapshot().first;
      return Message::ReplyTo(request, peer::EncodeLookupReply(owners_.Lookup(keys, live)));
    }
    case MsgType::kDsMetaRemove: {
      TQDS_ASSIGN_OR_RETURN(auto keys, msg::DecodeKeys(request.body(), "MetaRemove"));
      return Message::ReplyTo(request, peer::EncodeRemoveReply(owners_.Remove(keys)));
    }
    case MsgType::kDsDropCopies: {
      TQDS_ASSIGN_OR_RETURN(auto m, peer::DecodeDrop(request.body()));
      return Message::ReplyTo(request, msg::EncodeDeleted(store_.DeleteVersions(m.keys, m.versions)));
    }
    default:
      return Status::Invalid("not a cluster message: type ", static_cast<int>(request.type()));
  }
}

// ------------------------------------------------------------------ rebalancing

void ClusterNode::AnnounceLoop() {
  LiveSet seen_live;
  RingPtr seen_ring;
  uint64_t seen_version = 0;
  std::unique_lock<std::mutex> lock(mu_);
  while (true) {
    cv_.wait(lock, [&] { return stopping_ || !tasks_.empty() || view_version_ != seen_version; });
    if (stopping_) return;
    if (!tasks_.empty()) {
      auto task = std::move(tasks_.front());
      tasks_.pop_front();
      lock.unlock();
      task();
      lock.lock();
      continue;
    }
    seen_version = view_version_;
    LiveSet new_live = live_;
    RingPtr new_ring = ring_;
    lock.unlock();
    Rebalance(seen_live, seen_ring);
    seen_live = std::move(new_live);
    seen_ring = std::move(new_ring);
    lock.lock();
  }
}

void ClusterNode::Rebalance(const LiveSet& old_live, const RingPtr& old_ring) {
  const auto snapshot = Snapshot();  // not a structured binding: the lambda below captures these
  const LiveSet& live = snapshot.first;
  const RingPtr& ring = snapshot.second;
  if (!ring || ring->empty()) return;
  const size_t reps = std::max<size_t>(1, options_.metadata_replicas);
  // Owners of `key` that did not hold its metadata before (new, or restarted).
  auto fresh_owners = [&](const std::string& key) {
    std::vector<std::string> now = ring->Owners(key, reps);
    std::vector<std::string> before;
    if (old_ring && !old_ring->empty()) before = old_ring->Owners(key, reps);
    std::vector<std::string> out;
    for (auto& o : now) {
      bool had = std::find(before.begin(), before.end(), o) != before.end();
      auto a = old_live.find(o);
      auto b = live.find(o);
      bool same_run = a != old_live.end() && b != live.end() && a->second == b->second;
      if (!had || !same_run) out.push_back(o);
    }
    return out;
  };
  size_t announced = 0, handed = 0;
  {
    std::map<std::string, std::vector<PublishEntry>> by_owner;
    for (auto& info : store_.ListPrimaries()) {
      for (const auto& o : fresh_owners(info.key)) {
        by_owner[o].push_back(PublishEntry{info.key, info.size, SelfReplica(info.version)});
        ++announced;
      }
    }
    SendPublish(PublishMode::kPrimary, std::move(by_owner), true);
  }
  {
    std::map<std::string, std::vector<PublishEntry>> by_owner;
    std::vector<std::string> not_mine;
    for (auto& [key, rec] : owners_.Snapshot()) {
      auto now = ring->Owners(key, reps);
      if (std::find(now.begin(), now.end(), options_.self) == now.end()) not_mine.push_back(key);
      for (const auto& o : fresh_owners(key)) {
        if (o == options_.self) continue;
        for (const auto& rep : rec.replicas) {
          by_owner[o].push_back(PublishEntry{key, rec.size, rep});
          ++handed;
        }
      }
    }
    SendPublish(PublishMode::kHandoff, std::move(by_owner), true);
    owners_.Erase(not_mine);
  }
  if (announced + handed > 0) {
    spdlog::info("cluster: view change: re-announced {} location(s), handed over {}", announced,
                 handed);
  }
}

}  // namespace ds
