// TransferQueueClient: what producers and consumers use. It splits a batch
// into per-sample, per-field payloads, writes them through the storage
// manager and tells the controller; reads are the reverse. Tensor bytes never
// pass through the controller.
//
// Method names follow the seed's (Python) API, so C++ and Python read alike.
// Thread-safe: any number of threads may call any method concurrently (one
// persistent controller connection multiplexes their requests); async_*
// twins run the same call on a background thread and return a future.
#pragma once

#include <chrono>
#include <future>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "tq/batch.h"
#include "tq/batch_meta.h"
#include "tq/kv.h"
#include "tq/partition_status.h"
#include "tq/sampling.h"
#include "tq/storage.h"

namespace tq {

// The longest a get_meta waits: 30 days. A longer timeout (including
// std::chrono::milliseconds::max()) waits this long, so no deadline overflows.
inline constexpr std::chrono::milliseconds kMaxGetMetaTimeout = std::chrono::hours(24 * 30);

// A timeout in seconds (a binding's or CLI's float) as milliseconds, rounded
// up to whole ms: NaN or a negative value is InvalidArgument naming `what`;
// +inf and anything above kMaxGetMetaTimeout become kMaxGetMetaTimeout.
Result<std::chrono::milliseconds> TimeoutFromSeconds(double seconds, const char* what = "timeout");

class TransferQueueClient {
 public:
  // Connects to the controller at `controller_address` ("tcp://host:port").
  // A bad address makes every later call fail with its error.
  TransferQueueClient(std::string client_id, std::string controller_address);
  ~TransferQueueClient();
  TransferQueueClient(const TransferQueueClient&) = delete;
  TransferQueueClient& operator=(const TransferQueueClient&) = delete;

  // Chooses the storage backend by its registered name, e.g.
  // "SimpleStorageManager" or "YuanrongStorageManager" (seed config keys).
  Status initialize_storage_manager(const std::string& manager_type, const Config& config = Config::object());

  // Writes a batch as new samples of `partition_id`; returns their meta.
  Result<BatchMeta> put(const Batch& batch, const std::string& partition_id);
  // Writes more fields of existing samples (e.g. responses for prompts):
  // batch row i belongs to meta sample i.
  Result<BatchMeta> put(const Batch& batch, const BatchMeta& meta);

  // Reserves `count` new samples of `partition_id` (created if needed), with
  // nothing produced yet: upstream's get_meta(mode="insert"). Fill them with
  // put(batch, meta).
  Result<BatchMeta> allocate(const std::string& partition_id, int64_t count);

  // Selects samples whose `data_fields` are all produced (see FetchMode and
  // SamplingConfig). kFetch waits up to `timeout` for batch_size samples
  // (a negative timeout is InvalidArgument; one above kMaxGetMetaTimeout
  // waits kMaxGetMetaTimeout).
  Result<BatchMeta> get_meta(const std::vector<std::string>& data_fields, int64_t batch_size,
                             const std::string& partition_id, const std::string& task_name,
                             const SamplingConfig& sampling_config = {},
                             FetchMode mode = FetchMode::kFetch,
                             std::chrono::milliseconds timeout = std::chrono::seconds(60));
  // Fetches exactly the samples and fields of `meta`.
  Result<Batch> get_data(const BatchMeta& meta);

  // Frees the storage of every sample of the partition, then releases its
  // indexes. Idempotent; an unknown partition is not an error.
  Status clear_partition(const std::string& partition_id);
  // Same for the samples of `meta` (or of the given indexes).
  Status clear_samples(const BatchMeta& meta);
  Status clear_samples(const std::string& partition_id, const std::vector<int64_t>& global_indexes);

  Result<ProductionStatus> get_production_status(const std::string& partition_id);
  Result<ConsumptionStatus> get_consumption_status(const std::string& partition_id,
                                                   const std::string& task_name);
  // Upstream-shaped per-sample status (see SampleStatusMatrix). std::nullopt
  // when the partition is unknown, `fields` is empty or a requested field was
  // never produced in the partition.
  Result<std::optional<SampleStatusMatrix>> production_status(const std::string& partition_id,
                                                              const std::vector<std::string>& fields);
  // std::nullopt for an unknown partition; an unknown task gets zeros.
  Result<std::optional<SampleStatusMatrix>> consumption_status(const std::string& partition_id,
                                                               const std::string& task_name);
  // Forgets what `task_name` (or every task, when empty) consumed.
  Status reset_consumption(const std::string& partition_id, const std::string& task_name = "");
  Result<std::vector<std::string>> list_partitions();
  // Every partition in creation order with its production per field and
  // consumption per task (what `tq status` prints).
  Result<std::vector<PartitionSummary>> partition_summaries();
  // Stores each sample's `custom` map (merged into what is there).
  Status set_custom_meta(const BatchMeta& meta);
  // The samples' meta with every field and their custom maps.
  Result<BatchMeta> get_custom_meta(const std::string& partition_id,
                                    const std::vector<int64_t>& global_indexes);

  // KV API: string keys naming samples of a partition (keys are names:
  // non-empty, at most 256 bytes, no NUL). Keyed samples are ordinary
  // samples: put(batch, meta) writes their fields, get_data reads them.
  //
  // The samples of `keys` in request order, with the fields that all of them
  // have produced and their custom meta (tags). With `create`, each missing
  // key (and a missing partition) gets a fresh, unproduced sample; without,
  // missing keys are left out (unknown partition: an empty meta). A key
  // listed twice is InvalidArgument.
  Result<BatchMeta> kv_retrieve(const std::string& partition_id, const std::vector<std::string>& keys,
                                bool create = false);
  // The values of the samples of `keys` (missing keys left out): `fields`
  // in that order, or every field all found samples have produced. What
  // kv_retrieve then get_data read, in one call: where every field's values
  // lie back to back in one pack each (a put of dense columns), without a
  // SampleMeta per key. See KvGetResult.
  Result<KvGetResult> kv_get(const std::string& partition_id, const std::vector<std::string>& keys,
                             const std::optional<std::vector<std::string>>& fields = std::nullopt);
  Result<KvGetResult> kv_get(const std::string& partition_id, const KeyColumns& keys,
                             const std::optional<std::vector<std::string>>& fields = std::nullopt);
  // Writes row i of `batch` as the fields of key i's sample (created when
  // missing, as kv_retrieve with create) and tells what the samples hold
  // now. Where the storage packs every value of the batch (the datasystem,
  // values under 64 KiB) the values are written first and the controller
  // creates the keys and records the fields in one request, so a key never
  // exists without its fields and a failed put leaves no key behind;
  // otherwise it is kv_retrieve(create) followed by put(batch, meta).
  Result<KvPutResult> kv_put(const std::string& partition_id, const std::vector<std::string>& keys,
                             const Batch& batch);
  Result<KvPutResult> kv_put(const std::string& partition_id, const KeyColumns& keys, const Batch& batch);
  // The key of each index; nullopt for an index without one or not in the
  // partition. Unknown partition: NotFound.
  Result<std::vector<std::optional<std::string>>> kv_keys(const std::string& partition_id,
                                                          const std::vector<int64_t>& global_indexes);
  // Keys (creation order) and tags of one partition, or of every partition
  // (nullopt; partitions without keys list no entries). Unknown: empty.
  Result<KvListing> kv_list(const std::optional<std::string>& partition_id = std::nullopt);
  // Frees the samples of `keys` like clear_samples; their keys vanish at
  // once. Missing keys or partition: nothing happens. The partition stays.
  Status kv_clear(const std::string& partition_id, const std::vector<std::string>& keys);
  Status kv_clear(const std::string& partition_id, const KeyColumns& keys);

  // Checkpoint of the controller's metadata (not the stored data): every
  // partition, sample (index, generation, fields, custom meta), key and
  // task's consumption, as opaque bytes. restore_controller replaces the
  // controller's whole state by them (with `dry_run` it only checks them);
  // malformed bytes are InvalidArgument and change nothing, as does a
  // restore while some get_meta waits for data. Storage is untouched: the
  // caller frees the old samples' data first and writes the restored ones'.
  Result<std::string> snapshot_controller();
  Status restore_controller(const std::string& snapshot, bool dry_run = false);

  std::future<Result<BatchMeta>> async_put(Batch batch, std::string partition_id);
  std::future<Result<BatchMeta>> async_get_meta(std::vector<std::string> data_fields, int64_t batch_size,
                                                std::string partition_id, std::string task_name,
                                                SamplingConfig sampling_config = {},
                                                FetchMode mode = FetchMode::kFetch,
                                                std::chrono::milliseconds timeout = std::chrono::seconds(60));
  std::future<Result<Batch>> async_get_data(BatchMeta meta);
  std::future<Status> async_clear_partition(std::string partition_id);
  std::future<Status> async_clear_samples(BatchMeta meta);

  const std::string& client_id() const;
  const std::string& controller_address() const;

 private:
  class Impl;
  std::shared_ptr<Impl> impl_;
};

}  // namespace tq
