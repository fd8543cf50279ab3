// YuanrongStorageManager / YuanrongStorageClient over ds::KVClient.
#include "queue/yuanrong_storage_manager.h"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <thread>

#include "common/stream_copy.h"
#include "ds/kv_client.h"

namespace tq::internal {

namespace {

constexpr int kClients = 2;                      // parallel requests to the worker
constexpr size_t kParallelBytes = 8u << 20;  // bigger puts and gets run as two halves at once
// A put of this many bytes or more overflows the writer's cache whatever
// its values' sizes: every value is copied with streaming stores.
constexpr uint64_t kStreamAllBytes = 4u << 20;

// Where to split n values (sizes from size_of(i)) into two requests run at
// once: 0 (one request) below kParallelBytes in all, else at a multiple of
// `group` (one field's values stay in one part: they are allocated next to
// each other, and read by one request, so a reader can stack them without
// a copy) where the two parts' bytes are closest; 0 when no such split
// exists.
template <typename SizeOf>
size_t SplitPoint(size_t n, SizeOf size_of, size_t group) {
  uint64_t total = 0;
  for (size_t i = 0; i < n; ++i) total += size_of(i);
  if (total < kParallelBytes || group == 0) return 0;
  uint64_t acc = 0;
  size_t best = 0;
  uint64_t best_gap = UINT64_MAX;
  for (size_t i = 0; i < n; ++i) {
    if (i > 0 && i % group == 0) {
      uint64_t gap = acc > total / 2 ? acc - total / 2 : total / 2 - acc;
      if (gap < best_gap) best = i, best_gap = gap;
    }
    acc += size_of(i);
  }
  return best;
}

// Runs f(0) here and f(1) on another thread; returns the first error. An
// exception in either (say, bad_alloc) becomes an Internal status: the
// other half is always joined.
template <typename F>
Status BothHalves(F&& f) {
  auto run = [&f](int h) -> Status {
    try {
      return f(h);
    } catch (const std::exception& e) {
      return Status::Internal("datasystem request half ", h, " failed: ", e.what());
    }
  };
  Status second;
  std::thread t([&] { second = run(1); });
  Status first = run(0);
  t.join();
  return first.ok() ? second : first;
}

// The adapter around the datasystem client (the seed's YuanrongStorageClient).
class YuanrongStorageClient {
 public:
  static Result<std::unique_ptr<YuanrongStorageClient>> Connect(const std::string& host, int port) {
    auto c = std::unique_ptr<YuanrongStorageClient>(new YuanrongStorageClient());
    c->address_ = host + ":" + std::to_string(port);
    for (int i = 0; i < kClients; ++i) {
      // Pre-fault the worker's arena in this process once, at init: writes
      // into fresh shared memory otherwise take a page fault per 4 KiB.
      ds::ClientOptions options;
      options.populate_mapping = true;
      auto kv = std::make_unique<ds::KVClient>(host, port, options);
      Status st = kv->Init();
      if (!st.ok()) {
        return st.WithContext("YuanrongStorageClient: no datasystem worker at " + host + ":" +
                              std::to_string(port) + " (start one with `dscli start -w --worker_address " +
                              host + ":" + std::to_string(port) + "`)");
      }
      c->clients_.push_back(std::move(kv));
    }
    return c;
  }

  ds::KVClient& Pick() { return *clients_[next_.fetch_add(1) % clients_.size()]; }

  // A broken connection means the worker is gone: say so, naming it.
  Status Explain(Status st) const {
    if (st.ok() || !(st.IsIOError() || st.IsUnavailable())) return st;
    return Status::Unavailable("datasystem worker at ", address_, " is not reachable (", st.message(),
                               "); is it running? (dscli status)");
  }

  // A large put runs as two parts, each create -> fill -> seal on its own
  // connection and thread: the worker handles the two parts' requests on
  // two threads and the two fills share the memory bandwidth. Values come in
  // groups of `group` (one field of every sample); a group is never split.
  Status Put(std::vector<std::string> keys, const std::vector<const Buffer*>& values, size_t group) {
    const size_t mid =
        clients_.size() < 2 ? 0 : SplitPoint(values.size(), [&](size_t i) { return values[i]->size(); }, group);
    if (mid == 0) return Explain(PutOnce(Pick(), keys, values));
    const auto m = static_cast<std::ptrdiff_t>(mid);
    std::vector<std::string> k[2];
    k[0].assign(std::make_move_iterator(keys.begin()), std::make_move_iterator(keys.begin() + m));
    k[1].assign(std::make_move_iterator(keys.begin() + m), std::make_move_iterator(keys.end()));
    const std::vector<const Buffer*> v[2] = {{values.begin(), values.begin() + m},
                                             {values.begin() + m, values.end()}};
    return Explain(BothHalves([&](int h) { return PutOnce(*clients_[h], k[h], v[h]); }));
  }

  // The views of one request share one holder, which lets a reader stack
  // a field's contiguous views without a copy. A large get (`sizes`: the
  // recorded bytes of each key, in groups of `group`, one field of every
  // sample) runs as two requests on two connections at once, split between
  // groups: the worker looks up, pins (and, across nodes, locates and
  // pulls) the two halves on two threads.
  Result<std::vector<Buffer>> Get(const std::vector<std::string>& keys, const std::vector<uint64_t>& sizes,
                                  size_t group) {
    const size_t mid = clients_.size() < 2 || sizes.size() != keys.size()
                           ? 0
                           : SplitPoint(sizes.size(), [&](size_t i) { return sizes[i]; }, group);
    if (mid == 0) {
      auto r = GetOnce(Pick(), keys);
      if (!r.ok()) return Explain(r.status());
      return r;
    }
    const auto m = static_cast<std::ptrdiff_t>(mid);
    const std::vector<std::string> k[2] = {{keys.begin(), keys.begin() + m}, {keys.begin() + m, keys.end()}};
    std::vector<Buffer> part[2];
    TQDS_RETURN_NOT_OK(Explain(BothHalves([&](int h) -> Status {
      TQDS_ASSIGN_OR_RETURN(part[h], GetOnce(*clients_[h], k[h]));
      return Status::OK();
    })));
    part[0].reserve(keys.size());
    for (auto& b : part[1]) part[0].push_back(std::move(b));
    return std::move(part[0]);
  }
  Status Delete(const std::vector<std::string>& keys) { return Explain(Pick().Delete(keys).status()); }

 private:
  Status PutOnce(ds::KVClient& kv, const std::vector<std::string>& keys,
                 const std::vector<const Buffer*>& values) {
    std::vector<uint64_t> sizes;
    sizes.reserve(values.size());
    for (const Buffer* v : values) sizes.push_back(v->size());
    auto created = kv.MCreate(keys, sizes);
    if (!created.ok() && created.status().IsAlreadyExists()) {
      // Rewriting fields of existing samples: replace them.
      TQDS_RETURN_NOT_OK(kv.Delete(keys).status());
      created = kv.MCreate(keys, sizes);
    }
    if (!created.ok()) return created.status();
    uint64_t total = 0;
    for (uint64_t n : sizes) total += n;
    const bool stream_all = total >= kStreamAllBytes;
    for (size_t i = 0; i < values.size(); ++i) {
      auto copy = stream_all ? tqds::StreamCopyUnfenced : tqds::StreamCopy;
      copy((*created)[i].data(), values[i]->data(), values[i]->size());
    }
    if (stream_all) tqds::StreamFence();
    Status st = kv.MSetBuffer(*created);
    if (st.IsAlreadyExists()) {
      TQDS_RETURN_NOT_OK(kv.Delete(keys).status());
      return PutOnce(kv, keys, values);
    }
    return st;
  }

  static Result<std::vector<Buffer>> GetOnce(ds::KVClient& kv, const std::vector<std::string>& keys) {
    TQDS_ASSIGN_OR_RETURN(auto views, kv.GetBuffers(keys));
    std::vector<Buffer> out;
    out.reserve(views.size());
    for (size_t i = 0; i < views.size(); ++i) {
      if (!views[i]) {
        return Status::NotFound("key '", keys[i], "' not found in the datasystem (cleared, or never written)");
      }
      out.push_back(std::move(*views[i]));
    }
    return out;
  }

  YuanrongStorageClient() = default;
  std::string address_;
  std::vector<std::unique_ptr<ds::KVClient>> clients_;
  std::atomic<size_t> next_{0};
};

class YuanrongStorageManager : public StorageManager {
 public:
  explicit YuanrongStorageManager(std::unique_ptr<YuanrongStorageClient> client) : client_(std::move(client)) {}
  std::string name() const override { return "YuanrongStorageManager"; }

  Status Put(const std::vector<SampleKey>& samples, const std::vector<std::string>& fields,
             const std::vector<std::vector<Buffer>>& data) override {
    std::vector<std::string> keys;
    std::vector<const Buffer*> values;
    keys.reserve(samples.size() * fields.size());
    values.reserve(samples.size() * fields.size());
    for (size_t f = 0; f < fields.size(); ++f) {
      for (size_t s = 0; s < samples.size(); ++s) {
        keys.push_back(StorageKey(samples[s], fields[f]));
        values.push_back(&data[f][s]);
      }
    }
    return client_->Put(std::move(keys), values, samples.size());
  }

  Result<std::vector<std::vector<Buffer>>> Get(const std::vector<SampleKey>& samples,
                                               const std::vector<std::string>& fields,
                                               const std::vector<std::vector<uint64_t>>& nbytes) override {
    std::vector<std::string> keys;
    keys.reserve(samples.size() * fields.size());
    for (size_t f = 0; f < fields.size(); ++f) {
      for (const auto& s : samples) keys.push_back(StorageKey(s, fields[f]));
    }
    std::vector<uint64_t> sizes;
    if (!nbytes.empty()) {
      sizes.reserve(keys.size());
      for (const auto& field : nbytes) sizes.insert(sizes.end(), field.begin(), field.end());
    }
    TQDS_ASSIGN_OR_RETURN(auto flat, client_->Get(keys, sizes, samples.size()));
    std::vector<std::vector<Buffer>> out(fields.size());
    size_t i = 0;
    for (size_t f = 0; f < fields.size(); ++f) {
      out[f].reserve(samples.size());
      for (size_t s = 0; s < samples.size(); ++s, ++i) {
        if (!nbytes.empty() && flat[i].size() != nbytes[f][s]) {
          return Status::Internal("key '", keys[i], "' has ", flat[i].size(), " bytes in the datasystem but ",
                                  nbytes[f][s], " were recorded");
        }
        out[f].push_back(std::move(flat[i]));
      }
    }
    return out;
  }

  Status Delete(const std::vector<SampleKey>& samples, const std::vector<std::string>& fields) override {
    std::vector<std::string> keys;
    for (const auto& s : samples) {
      for (const auto& f : fields) keys.push_back(StorageKey(s, f));
    }
    if (keys.empty()) return Status::OK();
    return client_->Delete(keys);
  }

 private:
  std::unique_ptr<YuanrongStorageClient> client_;
};

Result<int> PortOf(const Config& c) {
  const auto& p = c["port"];
  if (p.is_number_integer()) return p.get<int>();
  if (p.is_string()) {
    try {
      size_t used = 0;
      int v = std::stoi(p.get<std::string>(), &used);
      if (used == p.get<std::string>().size()) return v;
    } catch (const std::exception&) {
    }
  }
  return Status::Invalid("YuanrongStorageManager: config 'port' must be an integer, got ", p.dump());
}

}  // namespace

Result<std::unique_ptr<StorageManager>> CreateYuanrongStorageManager(const StorageContext& ctx) {
  const Config& c = ctx.config;
  if (!c.is_object()) return Status::Invalid("YuanrongStorageManager: config must be a mapping");
  std::string client_name = "YuanrongStorageClient";
  if (c.contains("client_name")) {
    if (!c["client_name"].is_string()) return Status::Invalid("YuanrongStorageManager: 'client_name' must be a string");
    client_name = c["client_name"].get<std::string>();
  }
  if (client_name != "YuanrongStorageClient") {
    return Status::Invalid("YuanrongStorageManager: unknown client_name '", client_name,
                           "' (known: YuanrongStorageClient)");
  }
  if (!c.contains("host") || !c["host"].is_string() || c["host"].get<std::string>().empty()) {
    return Status::Invalid("YuanrongStorageManager: config needs 'host' (the datasystem worker's address on this node)");
  }
  if (!c.contains("port")) {
    return Status::Invalid("YuanrongStorageManager: config needs 'port' (the datasystem worker's port, e.g. 31501)");
  }
  TQDS_ASSIGN_OR_RETURN(int port, PortOf(c));
  if (port <= 0 || port > 65535) return Status::Invalid("YuanrongStorageManager: port ", port, " is out of range");
  TQDS_ASSIGN_OR_RETURN(auto client, YuanrongStorageClient::Connect(c["host"].get<std::string>(), port));
  return std::unique_ptr<StorageManager>(new YuanrongStorageManager(std::move(client)));
}

}  // namespace tq::internal
