// TransferQueueClient: put / get_meta / get_data / clear over a controller
// connection and a storage manager.
#include "tq/client.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <mutex>
#include <random>
#include <shared_mutex>
#include <thread>
#include <type_traits>

#include "common/wire/rpc.h"
#include "queue/ctl_messages.h"
#include "queue/kv_protocol.h"
#include "queue/protocol.h"
#include "tq/controller.h"

namespace tq {

using tqds::wire::MapReader;
using tqds::wire::Message;
using tqds::wire::MsgType;
using tqds::wire::PackBody;
using internal::Packer;

namespace {
constexpr auto kControlTimeout = std::chrono::seconds(30);
constexpr int64_t kAllocateSlice = kDefaultMaxAllocatePerRequest;

// The storage identities of the samples of `meta` (with `only`: of those
// whose flag is not 0).
std::vector<SampleKey> KeysOf(const BatchMeta& meta, uint64_t controller_id,
                              const std::vector<uint8_t>* only = nullptr) {
  std::vector<SampleKey> keys;
  keys.reserve(meta.size());
  for (size_t i = 0; i < meta.size(); ++i) {
    if (only != nullptr && (*only)[i] == 0) continue;
    const SampleMeta& s = meta.samples()[i];
    keys.push_back({s.partition_id, s.global_index, s.generation, controller_id});
  }
  return keys;
}

// Whether each field at `fields` of `cols` (produced tensors of one record
// shared by all samples) lies back to back in one pack in sample order, as
// a put of a dense column writes it: each is then one range of its pack.
// The columns are the controller's word: every sum is checked.
bool WholeInOnePack(const internal::MetaColumns& cols, const std::vector<size_t>& fields) {
  const size_t n = cols.size();
  if (n == 0) return false;
  for (size_t f : fields) {
    const FieldInfo* shared = cols.records.Shared(f);
    const auto& p = cols.records.places(f);
    if (shared == nullptr || !shared->produced || shared->kind != FieldKind::kTensor || shared->nbytes == 0 ||
        !p.present) {
      return false;
    }
    const uint64_t pack = p.single ? p.one : p.packs[0];
    const uint64_t start = p.offsets[0];
    if (pack == 0 || shared->nbytes > (UINT64_MAX - start) / n) return false;
    // Rows back to back in one pack, as the columns' sequences say.
    if ((p.single || p.packs.step() == uint64_t{0}) && p.offsets.step() == shared->nbytes) continue;
    for (size_t i = 1; i < n; ++i) {
      if ((!p.single && p.packs[i] != pack) || p.offsets[i] != start + i * shared->nbytes) return false;
    }
  }
  return true;
}

// Whether every field of `meta` (of at least one sample, every record
// produced) holds tensors of one dtype and shape, packed back to back in
// one pack in sample order, as a put of a dense column writes them: each
// field is then one range of its pack. Every sum is checked, the records
// being the controller's word.
bool AllPackedWhole(const BatchMeta& meta) {
  const size_t n = meta.size(), nf = meta.field_names().size();
  if (n == 0) return false;
  for (const SampleMeta& s : meta.samples()) {
    if (s.fields.size() != nf) return false;
  }
  for (size_t f = 0; f < nf; ++f) {
    const FieldInfo& a = meta.samples()[0].fields[f];
    if (!a.produced || a.kind != FieldKind::kTensor || a.pack == 0 || a.nbytes == 0 ||
        a.nbytes > (UINT64_MAX - a.offset) / n) {
      return false;
    }
    for (size_t s = 1; s < n; ++s) {
      const FieldInfo& b = meta.samples()[s].fields[f];
      if (!b.produced || b.kind != a.kind || b.pack != a.pack || b.offset != a.offset + s * a.nbytes ||
          b.nbytes != a.nbytes || b.dtype != a.dtype || b.shape != a.shape) {
        return false;
      }
    }
  }
  return true;
}
}  // namespace

Result<std::chrono::milliseconds> TimeoutFromSeconds(double seconds, const char* what) {
  if (std::isnan(seconds)) return Status::Invalid(what, " must be a number of seconds, got nan");
  if (seconds < 0) return Status::Invalid(what, " must be >= 0 seconds, got ", seconds);
  // Compared in double before any conversion, so inf and 1e300 never reach
  // an integer cast (which would be undefined and used to give INT64_MIN).
  const double max_s = std::chrono::duration<double>(kMaxGetMetaTimeout).count();
  if (seconds >= max_s) return kMaxGetMetaTimeout;
  return std::chrono::milliseconds(static_cast<int64_t>(std::ceil(seconds * 1000.0)));
}

class TransferQueueClient::Impl {
 public:
  Impl(std::string id, std::string address) : id_(std::move(id)), address_(std::move(address)) {
    auto c = tqds::wire::RpcClient::Connect(address_);
    if (c.ok()) {
      ctl_ = c.MoveValue();
    } else {
      connect_error_ = c.status().WithContext("TransferQueueClient '" + id_ + "'");
    }
  }

  Result<Message> Call(Message m, std::chrono::milliseconds timeout = kControlTimeout) {
    if (!ctl_) return connect_error_;
    // A durable controller is waited for (the call would be resent anyway);
    // otherwise a dead one fails the call itself, at once.
    if (durable_) TQDS_RETURN_NOT_OK(CheckSameController());
    auto r = Send(std::move(m), timeout);
    if (!r.ok() && r.status().IsUnavailable()) return r;
    TQDS_RETURN_NOT_OK(CheckSameController());  // it answered: but is it the same one?
    return r;
  }

  // Connected anew since the controller was last seen: make sure it is the
  // same one (a controller started again without its state has another id,
  // and knows nothing of the samples this client used).
  Status CheckSameController() {
    if (controller_id_ == 0 || ctl_->connection_events() == verified_connections_) return Status::OK();
    uint64_t seen = ctl_->connection_events();
    // Not durable: it just answered, so a short wait suffices.
    auto wait = durable_ ? ReconnectTimeout() : std::chrono::milliseconds(5000);
    TQDS_RETURN_NOT_OK(AwaitController(std::chrono::steady_clock::now() + wait));
    verified_connections_ = seen;
    return Status::OK();
  }

  Result<Message> Send(Message m, std::chrono::milliseconds timeout) {
    if (!durable_) {
      auto r = ctl_->CallSync(std::move(m), timeout);
      if (!r.ok() && r.status().IsUnavailable()) return r.status().WithContext("controller");
      return r;
    }
    // The controller keeps its state (ControllerOptions::state_dir): a
    // request whose connection was lost is resent, with the same id, until
    // the controller (restarted or not) answers. It recognises a resend and
    // gives the first answer again, so nothing is done twice.
    m.set_request_id(tqds::wire::RpcClient::kCallerIdBit | (NextId() >> 1));
    const auto give_up = std::chrono::steady_clock::now() + ReconnectTimeout();
    while (true) {
      auto r = ctl_->CallWithId(m, timeout).get();
      if (r.ok() || !r.status().IsUnavailable()) return r;
      if (std::chrono::steady_clock::now() >= give_up) {
        return r.status().WithContext("controller (resent for " + std::to_string(ReconnectTimeout().count() / 1000) +
                                      " s, TQ_CONTROLLER_RECONNECT_TIMEOUT_S)");
      }
      TQDS_RETURN_NOT_OK(AwaitController(give_up));
    }
  }

  // Waits until the controller answers a ping again. One that answers with
  // another id started without the state this client has been using.
  Status AwaitController(std::chrono::steady_clock::time_point give_up) {
    while (std::chrono::steady_clock::now() < give_up) {
      auto sent = std::chrono::steady_clock::now();
      auto ping = ctl_->CallSync(Message(MsgType::kCtlPing, 0), std::chrono::seconds(2));
      if (ping.ok()) {
        TQDS_ASSIGN_OR_RETURN(auto pong, internal::PingReply::Decode(ping->body()));
        const uint64_t id = pong.controller_id;
        if (id != controller_id_) {
          return Status::Invalid("controller at ", address_, " came back without the state this client used ",
                                 "(controller id ", controller_id_.load(), " is now ", id,
                                 "); start it again on the same state_dir");
        }
        return Status::OK();
      }
      if (!ping.status().IsUnavailable()) return ping.status();
      // A refused connection fails at once: do not spin.
      if (std::chrono::steady_clock::now() - sent < std::chrono::milliseconds(100)) {
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
      }
    }
    return Status::Unavailable("controller at ", address_, " did not come back within ",
                               ReconnectTimeout().count() / 1000, " s (TQ_CONTROLLER_RECONNECT_TIMEOUT_S)");
  }

  static std::chrono::milliseconds ReconnectTimeout() {
    static const std::chrono::milliseconds t = [] {
      const char* env = std::getenv("TQ_CONTROLLER_RECONNECT_TIMEOUT_S");
      double s = env != nullptr ? std::atof(env) : 60.0;
      if (!(s > 0) || s > 86400) s = 60.0;
      return std::chrono::milliseconds(static_cast<int64_t>(s * 1000));
    }();
    return t;
  }

  uint64_t NextId() {
    std::lock_guard<std::mutex> lock(rng_mu_);
    return rng_();
  }

  Status InitStorage(const std::string& type, const Config& config) {
    if (!ctl_) return connect_error_;
    // Make sure the controller is there before choosing storage.
    auto ping = Call(Message(MsgType::kCtlPing, 0), std::chrono::seconds(10));
    if (!ping.ok()) return ping.status();
    TQDS_ASSIGN_OR_RETURN(auto pong, internal::PingReply::Decode(ping->body()));
    const uint64_t id = pong.controller_id;
    StorageContext ctx{config, address_, id_};
    TQDS_ASSIGN_OR_RETURN(auto mgr, CreateStorageManager(type, ctx));
    const bool durable = pong.durable;
    verified_connections_ = ctl_->connection_events();
    std::unique_lock<std::shared_mutex> lock(storage_mu_);
    storage_ = std::move(mgr);
    controller_id_ = id;
    durable_ = durable;
    return Status::OK();
  }

  Result<std::shared_ptr<StorageManager>> Storage() {
    std::shared_lock<std::shared_mutex> lock(storage_mu_);
    if (!storage_) {
      return Status::Invalid("TransferQueueClient '", id_,
                             "': call initialize_storage_manager(manager_type, config) first");
    }
    return storage_;
  }

  static Status CheckBatch(const Batch& batch) {
    if (batch.num_fields() == 0) return Status::Invalid("put: the batch has no fields");
    if (batch.batch_size() == 0) return Status::Invalid("put: the batch is empty");
    for (const auto& name : batch.keys()) TQDS_RETURN_NOT_OK(internal::ValidateName(name, "field name"));
    return Status::OK();
  }

  // The field records of the batch's values for `samples` (one per row,
  // their other members as given) and the values, by field.
  static BatchMeta Produced(const Batch& batch, std::vector<SampleMeta> samples,
                            std::vector<std::vector<Buffer>>* data) {
    data->assign(batch.num_fields(), {});
    for (auto& s : samples) s.fields.assign(batch.num_fields(), FieldInfo{});
    for (size_t f = 0; f < batch.num_fields(); ++f) {
      const Column& col = batch.column(f);
      (*data)[f].reserve(col.size());
      for (size_t s = 0; s < col.size(); ++s) {
        samples[s].fields[f] = internal::ProducedRecord(col[s]);
        (*data)[f].push_back(col[s].data());
      }
    }
    return BatchMeta(batch.keys(), std::move(samples));
  }

  // Writes `data` to storage; placed[f][i]: where data[f][i] went. On error
  // nothing of it stays in storage.
  template <typename Data>  // std::vector<std::vector<Buffer>> or std::vector<FieldValues>
  static Status StoreValues(StorageManager& storage, const std::vector<SampleKey>& keys,
                            const std::vector<std::string>& fields, const Data& data,
                            std::vector<std::vector<Placement>>* placed) {
    Status st;
    if constexpr (std::is_same_v<Data, std::vector<FieldValues>>) {
      st = storage.PutPackingColumns(keys, fields, data, placed);
    } else {
      st = storage.PutPacking(keys, fields, data, placed);
    }
    if (!st.ok()) (void)storage.Delete(keys, fields);  // best effort: no half-written sample stays
    return st;
  }

  // Writes `data` (the values of `produced`) to storage and sets each
  // record's place. On error nothing of it stays in storage.
  static Status Store(StorageManager& storage, const std::vector<SampleKey>& keys, BatchMeta& produced,
                      const std::vector<std::vector<Buffer>>& data, std::vector<std::vector<Placement>>* placed) {
    TQDS_RETURN_NOT_OK(StoreValues(storage, keys, produced.field_names(), data, placed));
    for (size_t f = 0; f < placed->size() && f < produced.field_names().size(); ++f) {
      for (size_t s = 0; s < (*placed)[f].size() && s < produced.size(); ++s) {
        FieldInfo& fi = produced.mutable_samples()[s].fields[f];
        fi.pack = (*placed)[f][s].pack;
        fi.offset = (*placed)[f][s].offset;
      }
    }
    return Status::OK();
  }

  // Frees the packs of a put whose records the controller did not take.
  void DropOwnPacks(StorageManager& storage, const std::vector<std::vector<Placement>>& placed) {
    std::vector<uint64_t> own_packs;  // this put's, each once
    for (const auto& field : placed) {
      for (const Placement& p : field) {
        if (p.pack != 0 && (own_packs.empty() || own_packs.back() != p.pack)) own_packs.push_back(p.pack);
      }
    }
    std::sort(own_packs.begin(), own_packs.end());
    own_packs.erase(std::unique(own_packs.begin(), own_packs.end()), own_packs.end());
    (void)storage.DeletePacks(controller_id_, own_packs);
  }

  // Writes the batch's fields for the samples of `targets` and records them.
  Result<BatchMeta> Write(const Batch& batch, const BatchMeta& targets) {
    TQDS_ASSIGN_OR_RETURN(auto storage, Storage());
    std::vector<std::vector<Buffer>> data;
    BatchMeta produced = Produced(batch, targets.samples(), &data);
    auto keys = KeysOf(produced, controller_id_);
    std::vector<std::vector<Placement>> placed;
    TQDS_RETURN_NOT_OK(Store(*storage, keys, produced, data, &placed).WithContext("put"));
    auto rep = Call(internal::MetaMessage(MsgType::kCtlNotifyProduced, produced));
    if (!rep.ok()) {
      (void)storage->Delete(keys, batch.keys());
      DropOwnPacks(*storage, placed);
      return rep.status().WithContext("put");
    }
    // Packs that this put's overwrites left without users.
    TQDS_RETURN_NOT_OK(FreePacks(*storage, *rep).WithContext("put"));
    return produced;
  }

  Result<KvPutResult> KvPut(const std::string& partition_id, const KeyColumns& keys,
                            const Batch& batch) {
    TQDS_RETURN_NOT_OK(internal::ValidateName(partition_id, "partition_id"));
    TQDS_RETURN_NOT_OK(internal::ValidateKeys(keys, "kv_put"));
    TQDS_RETURN_NOT_OK(CheckBatch(batch));
    if (keys.size() != batch.batch_size()) {
      return Status::Invalid("kv_put: ", keys.size(), " keys but the batch has ", batch.batch_size(), " rows");
    }
    TQDS_ASSIGN_OR_RETURN(auto storage, Storage());
    const uint64_t pack_below = storage->packs_values_below();
    const size_t n = batch.batch_size();
    bool all_packed = pack_below > 0;
    for (size_t f = 0; f < batch.num_fields() && all_packed; ++f) {
      if (const Value* whole = batch.Dense(f)) {
        all_packed = whole->nbytes() / n < pack_below;
        continue;
      }
      for (const Value& v : batch.column(f)) all_packed = all_packed && v.nbytes() < pack_below;
    }
    if (!all_packed) return KvPutInTwoSteps(partition_id, keys, batch);
    // The values first (packs name no sample), then one request that creates
    // the keys and records the fields, encoded from the batch and the places.
    // A field kept whole gives its rows' bytes as one buffer (copied into
    // its packs in runs), without a Value or a view per sample.
    std::vector<FieldValues> data(batch.num_fields());
    for (size_t f = 0; f < batch.num_fields(); ++f) {
      if (const Value* whole = batch.Dense(f)) {
        data[f] = FieldValues::Rows(whole->data(), whole->nbytes() / n);
        continue;
      }
      data[f].values.reserve(n);
      for (const Value& v : batch.column(f)) data[f].values.push_back(v.data());
    }
    const std::vector<SampleKey> unnamed(keys.size(), SampleKey{partition_id, -1, 0, controller_id_});
    std::vector<std::vector<Placement>> placed;
    TQDS_RETURN_NOT_OK(StoreValues(*storage, unnamed, batch.keys(), data, &placed).WithContext("kv_put"));
    Message m(MsgType::kCtlKvPut, 0);
    m.set_body(internal::KvPutRequest::Encode(partition_id, keys, batch, placed));
    auto rep = Call(std::move(m));
    if (!rep.ok()) {
      DropOwnPacks(*storage, placed);
      return rep.status().WithContext("kv_put");
    }
    TQDS_RETURN_NOT_OK(FreePacks(*storage, *rep).WithContext("kv_put"));
    TQDS_ASSIGN_OR_RETURN(auto result, internal::DecodeKvPutReply(rep->body()));
    if (!result.tags.empty() && result.tags.size() != keys.size()) {
      return Status::Internal("kv_put: the controller returned tags of ", result.tags.size(), " keys for ",
                              keys.size());
    }
    return result;
  }

  // kv_put where some value is stored under its sample's own key, which the
  // controller names first: kv_retrieve(create), then put(batch, meta).
  Result<KvPutResult> KvPutInTwoSteps(const std::string& partition_id, const KeyColumns& keys, const Batch& batch) {
    Message m(MsgType::kCtlKvRetrieve, 0);
    m.set_body(internal::EncodeKvRetrieve(partition_id, keys, true));
    TQDS_ASSIGN_OR_RETURN(Message rep, Call(std::move(m)));
    TQDS_ASSIGN_OR_RETURN(BatchMeta meta, internal::MetaFromMessage(rep));
    if (meta.size() != keys.size()) {
      return Status::Internal("kv_put: the controller returned ", meta.size(), " samples for ", keys.size(), " keys");
    }
    TQDS_RETURN_NOT_OK(Write(batch, meta).status());
    KvPutResult out;
    out.fields = meta.field_names();
    for (const auto& name : batch.keys()) {
      if (std::find(out.fields.begin(), out.fields.end(), name) == out.fields.end()) out.fields.push_back(name);
    }
    bool any_tags = false;
    for (const auto& s : meta.samples()) any_tags = any_tags || !s.custom.empty();
    if (any_tags) {
      for (const auto& s : meta.samples()) out.tags.push_back(s.custom);
    }
    return out;
  }

  // Frees the packs a controller reply names as unused.
  Status FreePacks(StorageManager& storage, const Message& rep) {
    TQDS_ASSIGN_OR_RETURN(auto dead, internal::DeadPacksFromMessage(rep));
    if (dead.empty()) return Status::OK();
    return storage.DeletePacks(controller_id_, dead);
  }

  // Sliced into requests of at most kAllocateSlice samples (the controller's
  // default max_allocate_per_request), so that a big put never holds the
  // controller's single thread for long; when a slice fails, the samples of
  // the earlier ones are cleared again.
  Result<BatchMeta> Allocate(const std::string& partition_id, int64_t count) {
    TQDS_RETURN_NOT_OK(internal::ValidateName(partition_id, "partition_id"));
    if (count <= kAllocateSlice) return AllocateOnce(partition_id, count);
    std::vector<SampleMeta> all;
    all.reserve(static_cast<size_t>(std::min<int64_t>(count, int64_t{1} << 22)));
    for (int64_t done = 0; done < count;) {
      const int64_t n = std::min(kAllocateSlice, count - done);
      auto slice = AllocateOnce(partition_id, n);
      if (!slice.ok()) {
        if (!all.empty()) (void)ClearSamples(partition_id, BatchMeta({}, std::move(all)).global_indexes());
        return slice.status().WithContext("allocating " + std::to_string(count) + " samples in slices of " +
                                          std::to_string(kAllocateSlice) + ", after " + std::to_string(done));
      }
      for (const auto& sm : slice->samples()) all.push_back(sm);
      done += n;
    }
    return BatchMeta({}, std::move(all));
  }

  Result<BatchMeta> AllocateOnce(const std::string& partition_id, int64_t count) {
    Message alloc(MsgType::kCtlAllocate, 0);
    alloc.set_body(internal::AllocateRequest{partition_id, count}.Encode());
    TQDS_ASSIGN_OR_RETURN(Message rep, Call(std::move(alloc)));
    return internal::MetaFromMessage(rep);
  }

  Result<BatchMeta> Put(const Batch& batch, const std::string& partition_id) {
    TQDS_RETURN_NOT_OK(internal::ValidateName(partition_id, "partition_id"));
    TQDS_RETURN_NOT_OK(CheckBatch(batch));
    TQDS_RETURN_NOT_OK(Storage().status());
    TQDS_ASSIGN_OR_RETURN(BatchMeta targets, Allocate(partition_id, static_cast<int64_t>(batch.batch_size())));
    if (targets.size() != batch.batch_size()) {
      return Status::Internal("controller allocated ", targets.size(), " samples for ", batch.batch_size());
    }
    auto written = Write(batch, targets);
    if (!written.ok()) (void)ClearSamples(partition_id, targets.global_indexes());
    return written;
  }

  Result<BatchMeta> PutInto(const Batch& batch, const BatchMeta& meta) {
    TQDS_RETURN_NOT_OK(CheckBatch(batch));
    if (meta.size() != batch.batch_size()) {
      return Status::Invalid("put: the batch has ", batch.batch_size(), " samples but the meta has ",
                             meta.size());
    }
    return Write(batch, meta);
  }

  Result<BatchMeta> GetMeta(internal::GetMetaRequest req, std::chrono::milliseconds timeout) {
    TQDS_RETURN_NOT_OK(internal::ValidateName(req.partition_id, "partition_id"));
    for (const auto& f : req.fields) TQDS_RETURN_NOT_OK(internal::ValidateName(f, "data field"));
    if (req.mode != FetchMode::kForceFetch && req.mode != FetchMode::kForceFetchAll) {
      TQDS_RETURN_NOT_OK(internal::ValidateName(req.task_name, "task_name"));
    }
    if (timeout.count() < 0) {
      return Status::Invalid("get_meta: timeout must be >= 0 ms, got ", timeout.count(), " ms");
    }
    timeout = std::min(timeout, kMaxGetMetaTimeout);  // so that timeout + kControlTimeout cannot wrap
    req.timeout_ms = req.mode == FetchMode::kFetch ? timeout.count() : 0;
    Message m(MsgType::kCtlGetMeta, 0);
    m.set_body(internal::EncodeGetMeta(req));
    TQDS_ASSIGN_OR_RETURN(Message rep, Call(std::move(m), timeout + kControlTimeout));
    return internal::MetaFromMessage(rep);
  }

  // The `n` samples of fields `names` whose values lie back to back in one
  // pack each (AllPackedWhole, WholeInOnePack), `firsts[f]` the first
  // sample's record in its place: one range per field, each added whole,
  // no view per sample.
  static Result<Batch> ReadWhole(StorageManager& storage, const SampleKey& first, size_t n,
                                 const std::vector<std::string>& names, const std::vector<FieldInfo>& firsts) {
    std::vector<std::vector<uint64_t>> total;
    std::vector<std::vector<Placement>> at;
    for (const FieldInfo& fi : firsts) {
      total.push_back({fi.nbytes * n});
      at.push_back({Placement{fi.pack, fi.offset}});
    }
    TQDS_ASSIGN_OR_RETURN(auto data, storage.GetPacked({first}, names, total, at));
    Batch out(n);
    for (size_t f = 0; f < names.size(); ++f) {
      Shape shape{static_cast<int64_t>(n)};
      shape.insert(shape.end(), firsts[f].shape.begin(), firsts[f].shape.end());
      TQDS_RETURN_NOT_OK(out.AddTensor(names[f], firsts[f].dtype, shape, std::move(data[f][0])));
    }
    return out;
  }

  Result<Batch> GetData(const BatchMeta& meta) {
    TQDS_ASSIGN_OR_RETURN(auto storage, Storage());
    Batch out(meta.size());
    if (meta.empty()) {
      for (const auto& f : meta.field_names()) TQDS_RETURN_NOT_OK(out.AddField(f, {}));
      return out;
    }
    const auto& names = meta.field_names();
    if (AllPackedWhole(meta)) {
      const SampleMeta& s0 = meta.samples()[0];
      return ReadWhole(*storage, SampleKey{s0.partition_id, s0.global_index, s0.generation, controller_id_},
                       meta.size(), names, {s0.fields.begin(), s0.fields.end()});
    }
    std::vector<std::vector<uint64_t>> nbytes(names.size(), std::vector<uint64_t>(meta.size()));
    std::vector<std::vector<Placement>> placed(names.size(), std::vector<Placement>(meta.size()));
    for (size_t s = 0; s < meta.size(); ++s) {
      const auto& sm = meta.samples()[s];
      for (size_t f = 0; f < names.size(); ++f) {
        if (f >= sm.fields.size() || !sm.fields[f].produced) {
          return Status::NotFound("get_data: field '", names[f], "' of sample ", sm.global_index,
                                  " in partition '", sm.partition_id, "' is not produced yet");
        }
        nbytes[f][s] = sm.fields[f].nbytes;
        placed[f][s] = Placement{sm.fields[f].pack, sm.fields[f].offset};
      }
    }
    TQDS_ASSIGN_OR_RETURN(auto data, storage->GetPacked(KeysOf(meta, controller_id_), names, nbytes, placed));
    for (size_t f = 0; f < names.size(); ++f) {
      Column col;
      col.reserve(meta.size());
      const FieldInfo* spec = nullptr;  // the record col.back() was made from
      for (size_t s = 0; s < meta.size(); ++s) {
        const FieldInfo& fi = meta.samples()[s].fields[f];
        // A sample recorded like the one before it (a dense field) needs no
        // second look at its spec.
        if (spec != nullptr && fi.kind == FieldKind::kTensor && fi.kind == spec->kind && fi.dtype == spec->dtype &&
            fi.shape == spec->shape) {
          TQDS_ASSIGN_OR_RETURN(Value v, col.back().WithData(std::move(data[f][s])));
          col.push_back(std::move(v));
          continue;
        }
        TQDS_ASSIGN_OR_RETURN(Value v, Value::FromSpec(fi.kind, fi.dtype, fi.shape, std::move(data[f][s])));
        col.push_back(std::move(v));
        spec = &fi;
      }
      TQDS_RETURN_NOT_OK(out.AddField(names[f], std::move(col)));
    }
    return out;
  }

  Result<KvGetResult> KvGet(const std::string& partition_id, const KeyColumns& keys,
                            const std::optional<std::vector<std::string>>& wanted) {
    TQDS_RETURN_NOT_OK(internal::ValidateName(partition_id, "partition_id"));
    TQDS_RETURN_NOT_OK(internal::ValidateKeys(keys, "kv_get"));
    Message m(MsgType::kCtlKvRetrieve, 0);
    m.set_body(internal::EncodeKvRetrieve(partition_id, keys, false));
    TQDS_ASSIGN_OR_RETURN(Message rep, Call(std::move(m)));
    TQDS_ASSIGN_OR_RETURN(internal::MetaColumns cols, internal::UnpackMetaColumns(rep.body(), "BatchMeta"));
    KvGetResult out;
    const auto& names = cols.records.field_names();
    out.fields = names;
    out.found = cols.size();
    if (out.found == 0) return out;
    std::vector<size_t> fields;  // positions in names
    if (!wanted) {
      for (size_t f = 0; f < names.size(); ++f) fields.push_back(f);
    } else {
      for (const std::string& w : *wanted) {
        auto it = std::find(names.begin(), names.end(), w);
        if (it == names.end()) return out;
        const size_t f = static_cast<size_t>(it - names.begin());
        // A field named twice is read once (as a selection of fields does).
        if (std::find(fields.begin(), fields.end(), f) == fields.end()) fields.push_back(f);
      }
    }
    TQDS_ASSIGN_OR_RETURN(auto storage, Storage());
    if (fields.empty()) {
      out.batch = Batch(out.found);
      return out;
    }
    if (WholeInOnePack(cols, fields)) {
      std::vector<std::string> read;
      std::vector<FieldInfo> firsts;  // sample 0's records, in their places
      for (size_t f : fields) {
        read.push_back(names[f]);
        firsts.push_back(cols.records.Record(0, f));
      }
      const SampleKey first{cols.partitions[cols.pidx[0]], cols.gidx[0], cols.gen[0], controller_id_};
      TQDS_ASSIGN_OR_RETURN(out.batch, ReadWhole(*storage, first, out.found, read, firsts));
      return out;
    }
    TQDS_ASSIGN_OR_RETURN(out.batch, GetData(std::move(cols).TakeMeta(fields)));
    return out;
  }

  // Two-phase clear: hide + list (controller), free storage, release indexes.
  Status Clear(Message begin) {
    TQDS_ASSIGN_OR_RETURN(Message rep, Call(std::move(begin)));
    TQDS_ASSIGN_OR_RETURN(BatchMeta victims, internal::SampleListFromMessage(rep));
    if (victims.empty()) return Status::OK();
    auto storage = Storage();
    if (storage.ok()) {
      // Samples whose every field is a packed value have nothing under their own keys.
      TQDS_ASSIGN_OR_RETURN(auto keyed, internal::KeyedFromMessage(rep, victims.size()));
      const std::vector<SampleKey> keys = KeysOf(victims, controller_id_, &keyed);
      if (!keys.empty()) {
        TQDS_RETURN_NOT_OK((*storage)->Delete(keys, victims.field_names()).WithContext("clear"));
      }
      TQDS_RETURN_NOT_OK(FreePacks(**storage, rep).WithContext("clear"));
    } else if (!victims.field_names().empty()) {
      return storage.status();
    }
    return Call(internal::SampleListMessage(MsgType::kCtlReleaseIndexes, victims)).status();
  }

  Status ClearPartition(const std::string& partition_id) {
    TQDS_RETURN_NOT_OK(internal::ValidateName(partition_id, "partition_id"));
    Message m(MsgType::kCtlClearPartition, 0);
    m.set_body(internal::PartitionRequest{partition_id}.Encode());
    return Clear(std::move(m));
  }

  Status ClearSamples(const std::string& partition_id, const std::vector<int64_t>& indexes) {
    TQDS_RETURN_NOT_OK(internal::ValidateName(partition_id, "partition_id"));
    Message m(MsgType::kCtlClearSamples, 0);
    m.set_body(internal::SamplesRequest{partition_id, indexes}.Encode());
    return Clear(std::move(m));
  }

  Status ClearSamples(const BatchMeta& meta) {
    std::map<std::string, std::vector<int64_t>> by_partition;
    for (const auto& s : meta.samples()) by_partition[s.partition_id].push_back(s.global_index);
    for (const auto& [p, idx] : by_partition) TQDS_RETURN_NOT_OK(ClearSamples(p, idx));
    return Status::OK();
  }

  const std::string id_;
  const std::string address_;
  std::unique_ptr<tqds::wire::RpcClient> ctl_;
  Status connect_error_;
  std::shared_mutex storage_mu_;
  std::shared_ptr<StorageManager> storage_;  // guarded by storage_mu_
  // Set with storage_ (read only after Storage() succeeded).
  std::atomic<uint64_t> controller_id_{0};
  std::atomic<bool> durable_{false};  // the controller keeps its state: resend across restarts
  std::atomic<uint64_t> verified_connections_{0};  // RpcClient::connection_events() when its id was last checked
  std::mutex rng_mu_;
  std::mt19937_64 rng_{(uint64_t{std::random_device{}()} << 32) ^ std::random_device{}()};
};

TransferQueueClient::TransferQueueClient(std::string client_id, std::string controller_address)
    : impl_(std::make_shared<Impl>(std::move(client_id), std::move(controller_address))) {}
TransferQueueClient::~TransferQueueClient() = default;

const std::string& TransferQueueClient::client_id() const { return impl_->id_; }
const std::string& TransferQueueClient::controller_address() const { return impl_->address_; }

Status TransferQueueClient::initialize_storage_manager(const std::string& manager_type, const Config& config) {
  return impl_->InitStorage(manager_type, config);
}

Result<BatchMeta> TransferQueueClient::allocate(const std::string& partition_id, int64_t count) {
  return impl_->Allocate(partition_id, count);
}

Result<BatchMeta> TransferQueueClient::put(const Batch& batch, const std::string& partition_id) {
  return impl_->Put(batch, partition_id);
}

Result<BatchMeta> TransferQueueClient::put(const Batch& batch, const BatchMeta& meta) {
  return impl_->PutInto(batch, meta);
}

Result<BatchMeta> TransferQueueClient::get_meta(const std::vector<std::string>& data_fields,
                                                int64_t batch_size, const std::string& partition_id,
                                                const std::string& task_name,
                                                const SamplingConfig& sampling_config, FetchMode mode,
                                                std::chrono::milliseconds timeout) {
  internal::GetMetaRequest req;
  req.partition_id = partition_id;
  req.task_name = task_name;
  req.fields = data_fields;
  req.batch_size = batch_size;
  req.mode = mode;
  req.sampling = sampling_config;
  return impl_->GetMeta(std::move(req), timeout);
}

Result<Batch> TransferQueueClient::get_data(const BatchMeta& meta) { return impl_->GetData(meta); }

Status TransferQueueClient::clear_partition(const std::string& partition_id) {
  return impl_->ClearPartition(partition_id);
}

Status TransferQueueClient::clear_samples(const BatchMeta& meta) { return impl_->ClearSamples(meta); }

Status TransferQueueClient::clear_samples(const std::string& partition_id,
                                          const std::vector<int64_t>& global_indexes) {
  return impl_->ClearSamples(partition_id, global_indexes);
}

Result<ProductionStatus> TransferQueueClient::get_production_status(const std::string& partition_id) {
  Message m(MsgType::kCtlProductionStatus, 0);
  m.set_body(internal::ProductionStatusRequest{partition_id, std::nullopt}.Encode());
  TQDS_ASSIGN_OR_RETURN(Message rep, impl_->Call(std::move(m)));
  return internal::DecodeProductionStatus(rep.body());
}

Result<ConsumptionStatus> TransferQueueClient::get_consumption_status(const std::string& partition_id,
                                                                      const std::string& task_name) {
  Message m(MsgType::kCtlConsumptionStatus, 0);
  m.set_body(internal::ConsumptionStatusRequest{partition_id, task_name, false}.Encode());
  TQDS_ASSIGN_OR_RETURN(Message rep, impl_->Call(std::move(m)));
  return internal::DecodeConsumptionStatus(rep.body());
}

Result<std::optional<SampleStatusMatrix>> TransferQueueClient::production_status(
    const std::string& partition_id, const std::vector<std::string>& fields) {
  Message m(MsgType::kCtlProductionStatus, 0);
  m.set_body(internal::ProductionStatusRequest{partition_id, fields}.Encode());
  TQDS_ASSIGN_OR_RETURN(Message rep, impl_->Call(std::move(m)));
  return internal::DecodeSampleStatus(rep.body());
}

Result<std::optional<SampleStatusMatrix>> TransferQueueClient::consumption_status(
    const std::string& partition_id, const std::string& task_name) {
  Message m(MsgType::kCtlConsumptionStatus, 0);
  m.set_body(internal::ConsumptionStatusRequest{partition_id, task_name, true}.Encode());
  TQDS_ASSIGN_OR_RETURN(Message rep, impl_->Call(std::move(m)));
  return internal::DecodeSampleStatus(rep.body());
}

Status TransferQueueClient::reset_consumption(const std::string& partition_id, const std::string& task_name) {
  Message m(MsgType::kCtlResetConsumption, 0);
  m.set_body(internal::ResetConsumptionRequest{partition_id, task_name}.Encode());
  return impl_->Call(std::move(m)).status();
}

Result<std::vector<std::string>> TransferQueueClient::list_partitions() {
  TQDS_ASSIGN_OR_RETURN(Message rep, impl_->Call(Message(MsgType::kCtlListPartitions, 0)));
  return internal::DecodePartitionList(rep.body());
}

Result<std::vector<PartitionSummary>> TransferQueueClient::partition_summaries() {
  Message req(MsgType::kCtlListPartitions, 0);
  req.set_body(internal::ListPartitionsRequest{true}.Encode());
  TQDS_ASSIGN_OR_RETURN(Message rep, impl_->Call(std::move(req)));
  return internal::DecodePartitionSummaries(rep.body());
}

Status TransferQueueClient::set_custom_meta(const BatchMeta& meta) {
  return impl_->Call(internal::MetaMessage(MsgType::kCtlSetCustomMeta, meta)).status();
}

Result<BatchMeta> TransferQueueClient::get_custom_meta(const std::string& partition_id,
                                                       const std::vector<int64_t>& global_indexes) {
  Message m(MsgType::kCtlGetCustomMeta, 0);
  m.set_body(internal::SamplesRequest{partition_id, global_indexes}.Encode());
  TQDS_ASSIGN_OR_RETURN(Message rep, impl_->Call(std::move(m)));
  return internal::MetaFromMessage(rep);
}

Result<BatchMeta> TransferQueueClient::kv_retrieve(const std::string& partition_id,
                                                   const std::vector<std::string>& keys, bool create) {
  internal::KvRetrieveRequest req{partition_id, keys, create};
  TQDS_RETURN_NOT_OK(internal::ValidateName(partition_id, "partition_id"));
  TQDS_RETURN_NOT_OK(internal::ValidateKeys(keys, "kv_retrieve"));
  Message m(MsgType::kCtlKvRetrieve, 0);
  m.set_body(req.Encode());
  TQDS_ASSIGN_OR_RETURN(Message rep, impl_->Call(std::move(m)));
  return internal::MetaFromMessage(rep);
}

Result<KvGetResult> TransferQueueClient::kv_get(const std::string& partition_id,
                                                const std::vector<std::string>& keys,
                                                const std::optional<std::vector<std::string>>& fields) {
  return impl_->KvGet(partition_id, KeyColumns::Of(keys), fields);
}

Result<KvGetResult> TransferQueueClient::kv_get(const std::string& partition_id, const KeyColumns& keys,
                                                const std::optional<std::vector<std::string>>& fields) {
  return impl_->KvGet(partition_id, keys, fields);
}

Result<KvPutResult> TransferQueueClient::kv_put(const std::string& partition_id,
                                                const std::vector<std::string>& keys, const Batch& batch) {
  return impl_->KvPut(partition_id, KeyColumns::Of(keys), batch);
}

Result<KvPutResult> TransferQueueClient::kv_put(const std::string& partition_id, const KeyColumns& keys,
                                                const Batch& batch) {
  return impl_->KvPut(partition_id, keys, batch);
}

Result<std::vector<std::optional<std::string>>> TransferQueueClient::kv_keys(
    const std::string& partition_id, const std::vector<int64_t>& global_indexes) {
  TQDS_RETURN_NOT_OK(internal::ValidateName(partition_id, "partition_id"));
  Message m(MsgType::kCtlKvKeys, 0);
  m.set_body(internal::KvKeysRequest{partition_id, global_indexes}.Encode());
  TQDS_ASSIGN_OR_RETURN(Message rep, impl_->Call(std::move(m)));
  TQDS_ASSIGN_OR_RETURN(auto keys, internal::DecodeKvKeysReply(rep.body()));
  if (keys.size() != global_indexes.size()) {
    return Status::Internal("controller returned ", keys.size(), " keys for ", global_indexes.size(), " indexes");
  }
  return keys;
}

Result<KvListing> TransferQueueClient::kv_list(const std::optional<std::string>& partition_id) {
  if (partition_id) TQDS_RETURN_NOT_OK(internal::ValidateName(*partition_id, "partition_id"));
  Message m(MsgType::kCtlKvList, 0);
  m.set_body(internal::KvListRequest{partition_id}.Encode());
  TQDS_ASSIGN_OR_RETURN(Message rep, impl_->Call(std::move(m)));
  return internal::DecodeKvListReply(rep.body());
}

Status TransferQueueClient::kv_clear(const std::string& partition_id, const std::vector<std::string>& keys) {
  return kv_clear(partition_id, KeyColumns::Of(keys));
}

Status TransferQueueClient::kv_clear(const std::string& partition_id, const KeyColumns& keys) {
  TQDS_RETURN_NOT_OK(internal::ValidateName(partition_id, "partition_id"));
  TQDS_RETURN_NOT_OK(internal::ValidateKeys(keys, "kv_clear"));
  Message m(MsgType::kCtlKvClear, 0);
  m.set_body(internal::EncodeKvClear(partition_id, keys));
  return impl_->Clear(std::move(m));
}

std::future<Result<BatchMeta>> TransferQueueClient::async_put(Batch batch, std::string partition_id) {
  return std::async(std::launch::async, [impl = impl_, batch = std::move(batch), p = std::move(partition_id)] {
    return impl->Put(batch, p);
  });
}

std::future<Result<BatchMeta>> TransferQueueClient::async_get_meta(
    std::vector<std::string> data_fields, int64_t batch_size, std::string partition_id,
    std::string task_name, SamplingConfig sampling_config, FetchMode mode, std::chrono::milliseconds timeout) {
  internal::GetMetaRequest req;
  req.partition_id = std::move(partition_id);
  req.task_name = std::move(task_name);
  req.fields = std::move(data_fields);
  req.batch_size = batch_size;
  req.mode = mode;
  req.sampling = std::move(sampling_config);
  return std::async(std::launch::async, [impl = impl_, req = std::move(req), timeout] {
    return impl->GetMeta(req, timeout);
  });
}

std::future<Result<Batch>> TransferQueueClient::async_get_data(BatchMeta meta) {
  return std::async(std::launch::async, [impl = impl_, meta = std::move(meta)] { return impl->GetData(meta); });
}

Result<std::string> TransferQueueClient::snapshot_controller() {
  TQDS_ASSIGN_OR_RETURN(Message rep, impl_->Call(Message(MsgType::kCtlSnapshot, 0)));
  if (rep.payloads().size() != 1) {
    return Status::Invalid("Snapshot reply: expected 1 payload frame, got ", rep.payloads().size());
  }
  return rep.payloads()[0].ToString();
}

Status TransferQueueClient::restore_controller(const std::string& snapshot, bool dry_run) {
  Message m(MsgType::kCtlRestore, 0);
  m.set_body(internal::RestoreRequest{dry_run}.Encode());
  m.payloads().push_back(tqds::Buffer::Borrow(snapshot.data(), snapshot.size()));
  return impl_->Call(std::move(m)).status();
}

std::future<Status> TransferQueueClient::async_clear_partition(std::string partition_id) {
  return std::async(std::launch::async,
                    [impl = impl_, p = std::move(partition_id)] { return impl->ClearPartition(p); });
}

std::future<Status> TransferQueueClient::async_clear_samples(BatchMeta meta) {
  return std::async(std::launch::async, [impl = impl_, meta = std::move(meta)] { return impl->ClearSamples(meta); });
}

}  // namespace tq
