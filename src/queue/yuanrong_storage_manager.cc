// YuanrongStorageManager / YuanrongStorageClient over ds::KVClient.
#include "queue/yuanrong_storage_manager.h"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <mutex>
#include <random>
#include <thread>
#include <unordered_map>

#include "common/stream_copy.h"
#include "ds/kv_client.h"

namespace tq::internal {

namespace {

constexpr int kClients = 2;                      // parallel requests to the worker
constexpr size_t kParallelBytes = 8u << 20;  // bigger puts and gets run as two halves at once
// A put of this many bytes or more overflows the writer's cache whatever
// its values' sizes: every value is copied with streaming stores.
constexpr uint64_t kStreamAllBytes = 4u << 20;

// Values smaller than this are packed (StorageManager::PutPacking): one
// object each would cost more in the worker than their bytes.
constexpr uint64_t kPackValueBelow = 64u << 10;
// A pack is closed when the next value would take it past this (a reader of
// one value of a pack on another node pulls the whole pack).
constexpr uint64_t kPackMaxBytes = 64u << 20;

// Where to split objects (their sizes) into two requests run at once: at
// one of `cuts` (the object indexes where a field's objects begin: a
// field's values stay in one request, allocated next to each other and read
// by one request, so that a reader can stack them without a copy) where
// the two parts' bytes are closest. 0 (one request) below kParallelBytes in
// all, or when no cut lies inside.
size_t SplitPoint(const std::vector<uint64_t>& sizes, const std::vector<size_t>& cuts) {
  uint64_t total = 0;
  for (uint64_t n : sizes) total += n;
  if (total < kParallelBytes) return 0;
  size_t best = 0;
  uint64_t best_gap = UINT64_MAX;
  uint64_t acc = 0;
  size_t i = 0;
  for (size_t cut : cuts) {
    if (cut == 0 || cut >= sizes.size()) continue;
    for (; i < cut; ++i) acc += sizes[i];
    const uint64_t gap = acc > total / 2 ? acc - total / 2 : total / 2 - acc;
    if (gap < best_gap) best = cut, best_gap = gap;
  }
  return best;
}

// The alignment a packed value gets: its size's largest power-of-two
// divisor, at most 64. Same-sized values of a field lie back to back; a
// value of n elements of k bytes (k a power of two) starts on a multiple of k.
uint64_t PackAlignment(uint64_t size) {
  if (size == 0) return 1;
  return std::min<uint64_t>(64, size & (~size + 1));
}

uint64_t RoundUp(uint64_t n, uint64_t align) { return (n + align - 1) / align * align; }

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

// One object of a put: a pack (pack != 0) or one value under its own key.
struct PutObject {
  std::string key;
  uint64_t size = 0;
  uint64_t pack = 0;
};

// Bytes of one value, or of a run of values back to back, and where they go.
struct PutPiece {
  size_t object = 0;
  uint64_t offset = 0;
  const uint8_t* src = nullptr;
  uint64_t size = 0;
};

// The two ways a put's values come (Write): per field one Buffer per
// sample, or FieldValues (possibly by rows).
const FieldValues* RowsOf(const std::vector<std::vector<Buffer>>&, size_t) { return nullptr; }
const FieldValues* RowsOf(const std::vector<FieldValues>& d, size_t f) { return d[f].by_rows ? &d[f] : nullptr; }
const std::vector<Buffer>& ValuesOf(const std::vector<std::vector<Buffer>>& d, size_t f) { return d[f]; }
const std::vector<Buffer>& ValuesOf(const std::vector<FieldValues>& d, size_t f) { return d[f].values; }

// A fresh pack id: random, never 0. Ids are 64 random bits, so two live
// packs of one controller share one with odds of about n^2 / 2^65; a put
// that meets one that exists fails (the pack is created only if absent)
// instead of touching it.
uint64_t NewPackId() {
  static std::mutex mu;
  static std::mt19937_64 rng{(uint64_t{std::random_device{}()} << 32) ^ std::random_device{}()};
  std::lock_guard<std::mutex> lock(mu);
  uint64_t id = 0;
  while (id == 0) id = rng();
  return id;
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

  // Writes `objects`, filled from `pieces`. A large put runs as two parts
  // split at one of `cuts`, each create -> fill -> seal on its own
  // connection and thread: the worker handles the two parts' requests on
  // two threads and the two fills share the memory bandwidth. On error the
  // packs already sealed are deleted again.
  Status Put(const std::vector<PutObject>& objects, const std::vector<PutPiece>& pieces,
             const std::vector<size_t>& cuts) {
    std::vector<uint64_t> sizes;
    sizes.reserve(objects.size());
    for (const auto& o : objects) sizes.push_back(o.size);
    const size_t mid = clients_.size() < 2 ? 0 : SplitPoint(sizes, cuts);
    std::vector<std::string> sealed_packs[2];
    Status st;
    if (mid == 0) {
      st = PutRange(Pick(), objects, pieces, 0, objects.size(), &sealed_packs[0]);
    } else {
      const size_t lo[2] = {0, mid}, hi[2] = {mid, objects.size()};
      st = BothHalves([&](int h) {
        return PutRange(*clients_[h], objects, pieces, lo[h], hi[h], &sealed_packs[h]);
      });
    }
    if (!st.ok()) {
      std::vector<std::string> drop = std::move(sealed_packs[0]);
      drop.insert(drop.end(), sealed_packs[1].begin(), sealed_packs[1].end());
      if (!drop.empty()) (void)Pick().Delete(drop);
    }
    return Explain(st);
  }

  // The views of one request share one holder, which lets a reader stack
  // a field's contiguous views without a copy. A large get (`sizes`: the
  // expected bytes of each key) runs as two requests on two connections at
  // once, split at one of `cuts`: the worker looks up, pins (and, across
  // nodes, locates and pulls) the two halves on two threads. With `ranges`
  // (one per key; {0, 0}: all of it) each view is of that range: of a value
  // held by another node's worker only the range is pulled. (*starts)[i]:
  // where in its value view i starts (0 when a range could not be read,
  // and the whole value was).
  Result<std::vector<Buffer>> Get(const std::vector<std::string>& keys, const std::vector<uint64_t>& sizes,
                                  const std::vector<size_t>& cuts, const std::vector<ds::ReadRange>& ranges,
                                  std::vector<uint64_t>* starts) {
    const size_t mid = clients_.size() < 2 || sizes.size() != keys.size() ? 0 : SplitPoint(sizes, cuts);
    starts->assign(keys.size(), 0);
    if (mid == 0) {
      auto r = GetOnce(Pick(), keys, ranges, starts->data());
      if (!r.ok()) return Explain(r.status());
      return r;
    }
    const auto m = static_cast<std::ptrdiff_t>(mid);
    const std::vector<std::string> k[2] = {{keys.begin(), keys.begin() + m}, {keys.begin() + m, keys.end()}};
    std::vector<ds::ReadRange> r[2];
    if (!ranges.empty()) {
      r[0].assign(ranges.begin(), ranges.begin() + m);
      r[1].assign(ranges.begin() + m, ranges.end());
    }
    std::vector<Buffer> part[2];
    TQDS_RETURN_NOT_OK(Explain(BothHalves([&](int h) -> Status {
      TQDS_ASSIGN_OR_RETURN(part[h], GetOnce(*clients_[h], k[h], r[h], starts->data() + (h == 0 ? 0 : mid)));
      return Status::OK();
    })));
    part[0].reserve(keys.size());
    for (auto& b : part[1]) part[0].push_back(std::move(b));
    return std::move(part[0]);
  }
  Status Delete(const std::vector<std::string>& keys) { return Explain(Pick().Delete(keys).status()); }

 private:
  // Objects [lo, hi): create, fill, seal. A value's own key that exists is
  // replaced (rewriting a sample's field); a pack is created only if absent.
  // Appends the keys of the packs it sealed to `sealed_packs`.
  Status PutRange(ds::KVClient& kv, const std::vector<PutObject>& objects, const std::vector<PutPiece>& pieces,
                  size_t lo, size_t hi, std::vector<std::string>* sealed_packs) {
    std::vector<std::string> single_keys, pack_keys;
    std::vector<uint64_t> single_sizes, pack_sizes;
    std::vector<size_t> slot(hi - lo);  // object -> index into the created buffers (singles, then packs)
    for (size_t i = lo; i < hi; ++i) {
      auto& keys = objects[i].pack != 0 ? pack_keys : single_keys;
      (objects[i].pack != 0 ? pack_sizes : single_sizes).push_back(objects[i].size);
      slot[i - lo] = keys.size();
      keys.push_back(objects[i].key);
    }
    uint64_t total = 0;
    for (size_t i = lo; i < hi; ++i) total += objects[i].size;
    for (int attempt = 0;; ++attempt) {
      std::vector<ds::WriteBuffer> buffers;
      if (!single_keys.empty()) {
        auto created = kv.MCreate(single_keys, single_sizes);
        if (!created.ok() && created.status().IsAlreadyExists()) {
          // Rewriting fields of existing samples: replace them.
          TQDS_RETURN_NOT_OK(kv.Delete(single_keys).status());
          created = kv.MCreate(single_keys, single_sizes);
        }
        if (!created.ok()) return created.status();
        buffers = std::move(*created);
      }
      const size_t first_pack = buffers.size();
      if (!pack_keys.empty()) {
        ds::SetParam if_absent;
        if_absent.if_absent = true;
        auto created = kv.MCreate(pack_keys, pack_sizes, if_absent);
        if (!created.ok()) return PackCollision(created.status());
        for (auto& b : *created) {
          // Refused (its id exists): no memory, and never ours to seal or delete.
          if (b.data() == nullptr) return PackCollision(Status::AlreadyExists("key '", b.key(), "'"));
          buffers.push_back(std::move(b));
        }
      }
      const bool stream_all = total >= kStreamAllBytes;
      auto copy = stream_all ? tqds::StreamCopyUnfenced : tqds::StreamCopy;
      for (const PutPiece& pc : pieces) {
        if (pc.object < lo || pc.object >= hi || pc.size == 0) continue;
        const size_t b = (objects[pc.object].pack != 0 ? first_pack : 0) + slot[pc.object - lo];
        copy(buffers[b].data() + pc.offset, pc.src, pc.size);
      }
      if (stream_all) tqds::StreamFence();
      Status st = kv.MSetBuffer(buffers);
      for (size_t b = first_pack; b < buffers.size(); ++b) {
        if (buffers[b].sealed()) sealed_packs->push_back(buffers[b].key());
      }
      if (!st.IsAlreadyExists() || attempt > 0) return st;
      // A value's own key was written by someone else between create and
      // seal: replace it, once.
      if (!sealed_packs->empty()) {
        TQDS_RETURN_NOT_OK(kv.Delete(*sealed_packs).status());
        sealed_packs->clear();
      }
      if (!single_keys.empty()) TQDS_RETURN_NOT_OK(kv.Delete(single_keys).status());
    }
  }

  static Status PackCollision(const Status& st) {
    if (!st.IsAlreadyExists()) return st;
    return Status::AlreadyExists("a new pack's id is taken in the datasystem (", st.message(),
                                 "; two random 64-bit ids met): nothing was written, put again");
  }

  // `starts`: one per key, set to where each view starts in its value.
  static Result<std::vector<Buffer>> GetOnce(ds::KVClient& kv, const std::vector<std::string>& keys,
                                             const std::vector<ds::ReadRange>& ranges, uint64_t* starts) {
    auto got = ranges.empty() ? kv.GetBuffers(keys) : kv.Read(ranges);
    if (!got.ok() && got.status().IsInvalid() && !ranges.empty()) {
      // A range that starts past its value's end (a hostile or stale
      // place): read the values whole, so that the caller names the value.
      got = kv.GetBuffers(keys);
    } else {
      for (size_t i = 0; i < ranges.size(); ++i) starts[i] = ranges[i].offset;
    }
    TQDS_ASSIGN_OR_RETURN(auto views, std::move(got));
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
    std::vector<std::vector<Placement>> placed;
    return Write(samples, fields, data, /*pack=*/false, &placed);
  }

  // Values below kPackValueBelow go into packs, one field's values into
  // the same packs (in sample order, each aligned to PackAlignment), a
  // pack closed at kPackMaxBytes; bigger values are their own objects.
  Status PutPacking(const std::vector<SampleKey>& samples, const std::vector<std::string>& fields,
                    const std::vector<std::vector<Buffer>>& data,
                    std::vector<std::vector<Placement>>* placed) override {
    return Write(samples, fields, data, /*pack=*/true, placed);
  }
  Status PutPackingColumns(const std::vector<SampleKey>& samples, const std::vector<std::string>& fields,
                           const std::vector<FieldValues>& data,
                           std::vector<std::vector<Placement>>* placed) override {
    return Write(samples, fields, data, /*pack=*/true, placed);
  }
  uint64_t packs_values_below() const override { return kPackValueBelow; }

  Result<std::vector<std::vector<Buffer>>> Get(const std::vector<SampleKey>& samples,
                                               const std::vector<std::string>& fields,
                                               const std::vector<std::vector<uint64_t>>& nbytes) override {
    return GetPacked(samples, fields, nbytes, {});
  }

  Result<std::vector<std::vector<Buffer>>> GetPacked(const std::vector<SampleKey>& samples,
                                                     const std::vector<std::string>& fields,
                                                     const std::vector<std::vector<uint64_t>>& nbytes,
                                                     const std::vector<std::vector<Placement>>& placed) override {
    const size_t n = samples.size();
    const bool sized = !nbytes.empty();
    const bool has_places = !placed.empty();
    if ((sized && nbytes.size() != fields.size()) || (has_places && placed.size() != fields.size())) {
      return Status::Invalid("YuanrongStorageManager: sizes or places for ", nbytes.size(), " / ", placed.size(),
                             " fields, but ", fields.size(), " fields are read");
    }
    // Each value's object: a pack (read once however many values it holds)
    // or its own key.
    std::vector<std::string> keys;
    std::vector<uint64_t> sizes;
    std::vector<size_t> cuts;
    std::vector<size_t> object_of(fields.size() * n);
    std::unordered_map<uint64_t, size_t> pack_object;
    uint64_t last_pack = 0;  // a field's values come in runs of one pack: looked up once a run
    size_t last_object = 0;
    // Per object, the bytes of it that are read: all of a value's own key;
    // of a pack, from its first value read to the end of its last.
    std::vector<uint64_t> lo, hi;
    for (size_t f = 0; f < fields.size(); ++f) {
      if ((sized && nbytes[f].size() != n) || (has_places && placed[f].size() != n)) {
        return Status::Invalid("YuanrongStorageManager: field '", fields[f], "' has sizes or places for ",
                               sized ? nbytes[f].size() : n, " / ", has_places ? placed[f].size() : n, " of ", n,
                               " samples");
      }
      cuts.push_back(keys.size());
      for (size_t s = 0; s < n; ++s) {
        const uint64_t nb = sized ? nbytes[f][s] : 0;
        const Placement p = has_places ? placed[f][s] : Placement{};
        if (p.pack == 0) {
          object_of[f * n + s] = keys.size();
          keys.push_back(StorageKey(samples[s], fields[f]));
          sizes.push_back(nb);
          lo.push_back(0);
          hi.push_back(0);
          continue;
        }
        if (!sized) {
          return Status::Invalid("YuanrongStorageManager: field '", fields[f], "' of sample ", samples[s].global_index,
                                 " is in pack ", p.pack, ", which cannot be read without the value's recorded size");
        }
        if (nb > UINT64_MAX - p.offset) {
          return Status::Invalid("YuanrongStorageManager: field '", fields[f], "' of sample ", samples[s].global_index,
                                 " is recorded at offset ", p.offset, " with ", nb, " bytes, past any pack's end");
        }
        if (p.pack != last_pack) {
          auto [it, fresh] = pack_object.try_emplace(p.pack, keys.size());
          if (fresh) {
            keys.push_back(PackKey(samples[s].controller_id, p.pack));
            sizes.push_back(0);
            lo.push_back(p.offset);
            hi.push_back(p.offset + nb);
          }
          last_pack = p.pack;
          last_object = it->second;
        }
        const size_t o = last_object;
        lo[o] = std::min(lo[o], p.offset);
        hi[o] = std::max(hi[o], p.offset + nb);
        object_of[f * n + s] = o;
      }
    }
    // A pack's range; one with no bytes to read (empty values only) is read
    // whole, which also says whether it exists.
    std::vector<ds::ReadRange> ranges;
    if (!pack_object.empty()) {
      ranges.reserve(keys.size());
      for (size_t o = 0; o < keys.size(); ++o) {
        if (hi[o] == lo[o]) lo[o] = 0;
        if (hi[o] > lo[o]) sizes[o] = hi[o] - lo[o];  // a pack: the bytes read of it
        ranges.push_back(ds::ReadRange{keys[o], lo[o], hi[o] - lo[o]});
      }
    }
    std::vector<uint64_t> starts;
    TQDS_ASSIGN_OR_RETURN(auto objects, client_->Get(keys, sizes, cuts, ranges, &starts));
    std::vector<std::vector<Buffer>> out(fields.size());
    for (size_t f = 0; f < fields.size(); ++f) {
      out[f].reserve(n);
      for (size_t s = 0; s < n; ++s) {
        const size_t o = object_of[f * n + s];
        const Buffer& b = objects[o];
        const Placement p = has_places ? placed[f][s] : Placement{};
        if (p.pack == 0) {
          if (sized && b.size() != nbytes[f][s]) {
            return Status::Internal("key '", keys[o], "' has ", b.size(), " bytes in the datasystem but ",
                                    nbytes[f][s], " were recorded");
          }
          out[f].push_back(b);
          continue;
        }
        // b holds the pack's bytes from `start` (its range, or all of it
        // when the range could not be read).
        const uint64_t nb = sized ? nbytes[f][s] : 0;
        const uint64_t start = starts[o];
        if (p.offset - start > b.size() || nb > b.size() - (p.offset - start)) {
          return Status::Internal("field '", fields[f], "' of sample ", samples[s].global_index, " in partition '",
                                  samples[s].partition_id, "' is recorded at bytes [", p.offset, ", ",
                                  p.offset + nb, ") of pack '", keys[o], "', which holds ", start + b.size(),
                                  " bytes");
        }
        out[f].push_back(b.Slice(p.offset - start, nb));
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

  Status DeletePacks(uint64_t controller_id, const std::vector<uint64_t>& packs) override {
    std::vector<std::string> keys;
    keys.reserve(packs.size());
    for (uint64_t p : packs) keys.push_back(PackKey(controller_id, p));
    if (keys.empty()) return Status::OK();
    return client_->Delete(keys);
  }

 private:
  template <typename Data>
  Status Write(const std::vector<SampleKey>& samples, const std::vector<std::string>& fields, const Data& data,
               bool pack, std::vector<std::vector<Placement>>* placed) {
    if (data.size() != fields.size()) {
      return Status::Invalid("YuanrongStorageManager: ", data.size(), " value columns for ", fields.size(),
                             " fields");
    }
    const size_t n = samples.size();
    placed->assign(fields.size(), std::vector<Placement>(n));
    std::vector<PutObject> objects;
    std::vector<PutPiece> pieces;
    std::vector<size_t> cuts;
    for (size_t f = 0; f < fields.size(); ++f) {
      const FieldValues* rows = RowsOf(data, f);
      if (rows != nullptr) TQDS_RETURN_NOT_OK(rows->CheckRows(n, fields[f]).WithContext("YuanrongStorageManager"));
      if (rows == nullptr && ValuesOf(data, f).size() != n) {
        return Status::Invalid("YuanrongStorageManager: field '", fields[f], "' has ", ValuesOf(data, f).size(),
                               " values for ", n, " samples");
      }
      cuts.push_back(objects.size());
      if (rows != nullptr && pack && rows->row_bytes > 0 && rows->row_bytes < kPackValueBelow) {
        PackRows(*rows, n, samples, &objects, &pieces, &(*placed)[f]);
        continue;
      }
      pieces.reserve(pieces.size() + n);
      size_t open = SIZE_MAX;  // the field's pack being filled
      for (size_t s = 0; s < n; ++s) {
        const uint8_t* src = nullptr;
        uint64_t size = 0;
        if (rows != nullptr) {
          src = rows->rows.data() + s * rows->row_bytes;
          size = rows->row_bytes;
        } else {
          src = ValuesOf(data, f)[s].data();
          size = ValuesOf(data, f)[s].size();
        }
        if (!pack || size >= kPackValueBelow) {
          pieces.push_back(PutPiece{objects.size(), 0, src, size});
          objects.push_back(PutObject{StorageKey(samples[s], fields[f]), size, 0});
          continue;
        }
        const uint64_t align = PackAlignment(size);
        if (open == SIZE_MAX || RoundUp(objects[open].size, align) + size > kPackMaxBytes) {
          const uint64_t id = NewPackId();
          open = objects.size();
          objects.push_back(PutObject{PackKey(samples[s].controller_id, id), 0, id});
        }
        const uint64_t offset = RoundUp(objects[open].size, align);
        objects[open].size = offset + size;
        pieces.push_back(PutPiece{open, offset, src, size});
        (*placed)[f][s] = Placement{objects[open].pack, offset};
      }
    }
    return client_->Put(objects, pieces, cuts);
  }

  // A field's rows (each 0 < row_bytes < kPackValueBelow) packed as the
  // values one by one would be (a row size is a multiple of its alignment,
  // so rows lie back to back), one piece per pack: a run of rows is one copy.
  static void PackRows(const FieldValues& rows, size_t n, const std::vector<SampleKey>& samples,
                       std::vector<PutObject>* objects, std::vector<PutPiece>* pieces, std::vector<Placement>* placed) {
    const uint64_t per = rows.row_bytes;
    const uint64_t align = PackAlignment(per);
    size_t open = SIZE_MAX;
    for (size_t s = 0; s < n;) {
      uint64_t start = open == SIZE_MAX ? 0 : RoundUp((*objects)[open].size, align);
      if (open == SIZE_MAX || start + per > kPackMaxBytes) {
        const uint64_t id = NewPackId();
        open = objects->size();
        objects->push_back(PutObject{PackKey(samples[s].controller_id, id), 0, id});
        start = 0;
      }
      const size_t fit = static_cast<size_t>(std::min<uint64_t>(n - s, (kPackMaxBytes - start) / per));
      const uint64_t pack = (*objects)[open].pack;
      pieces->push_back(PutPiece{open, start, rows.rows.data() + s * per, fit * per});
      for (size_t j = 0; j < fit; ++j) (*placed)[s + j] = Placement{pack, start + j * per};
      (*objects)[open].size = start + fit * per;
      s += fit;
    }
  }

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
