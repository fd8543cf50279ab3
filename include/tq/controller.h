// TransferQueueController: the metadata service. Allocates global indexes per
// partition, records production and per-task consumption, and answers
// get_meta through pluggable samplers. Payload bytes never pass through it.
// It serves all requests on one thread; a get_meta that waits is parked and
// never delays other requests. Embeddable (Start) or run as `tq controller`.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "tq/request_stats.h"
#include "tq/sampling.h"
#include "tqds/status.h"

namespace tq {

// A sampler supplied by the program that embeds the controller (the Python
// binding wraps a transfer_queue.sampler.BaseSampler in one). It replaces the
// built-in samplers for every fetch/poll get_meta, as upstream's controller
// calls its one sampler object. Called only on the controller's server thread,
// one call at a time, so an implementation needs no locking of its own; it
// must not call back into this controller (that thread is the one waiting).
class CustomSampler {
 public:
  struct Call {
    std::string partition_id;
    // Ascending global indexes whose requested fields are produced and which
    // the calling task has not consumed. Never fewer than batch_size, except
    // in mode "poll" (then batch_size is lowered to ready.size(), never 0).
    std::vector<int64_t> ready;
    size_t batch_size = 0;
    // The call's sampling_config (every key, none interpreted).
    const SamplingConfig* config = nullptr;
    // The custom meta of those of `indexes` that are live in the partition
    // and have some set (upstream's partition.get_custom_meta). Valid only
    // during Sample.
    std::function<std::map<int64_t, CustomMeta>(const std::vector<int64_t>& indexes)> custom_meta;
  };
  struct Choice {
    std::vector<int64_t> sampled;   // returned in this order (repeats allowed)
    std::vector<int64_t> consumed;  // marked consumed for the task (may be empty: with replacement)
  };
  virtual ~CustomSampler() = default;
  // Every returned index must be a live sample of the partition, else the
  // get_meta fails with Invalid; an error status fails the get_meta with it.
  virtual Result<Choice> Sample(const Call& call) = 0;
  // The partition is being cleared: forget what was cached for it.
  virtual void ClearCache(const std::string& partition_id) = 0;
  // Upstream's has_cached_result: whether this sampler holds an answer for
  // (partition, task, the config's dp_rank / batch_index). In polling mode
  // (and mode poll_all), a get_meta that finds too few samples ready still
  // calls Sample when this is true, with the ready ones and the full
  // batch_size, instead of answering empty. Default: false.
  virtual bool HasCachedResult(const std::string& /*partition_id*/, const std::string& /*task_name*/,
                               const SamplingConfig& /*config*/) {
    return false;
  }
};

// ControllerOptions::max_allocate_per_request's default, and the slice
// size of TransferQueueClient's allocations.
inline constexpr int64_t kDefaultMaxAllocatePerRequest = int64_t{1} << 16;

struct ControllerOptions {
  // ZMQ endpoint to bind; port 0 picks a free one. "inproc://NAME" serves
  // clients of this process only (embedded units then use inproc too).
  std::string address = "tcp://127.0.0.1:0";
  // Simple storage units to run inside the controller's process (the
  // embedded default, so no other service is needed). 0: none.
  int embedded_storage_units = 0;
  // Capacity of each embedded unit.
  uint64_t storage_unit_capacity_bytes = uint64_t{8} << 30;
  // Samples each embedded unit may hold (StorageUnitOptions::capacity_samples;
  // upstream's total_storage_size divided over the units). 0: no limit.
  uint64_t storage_unit_capacity_samples = 0;
  // Upstream TransferQueue's polling mode: a get_meta in mode "fetch" behaves
  // like "poll_all" (an empty meta at once when too few samples are ready,
  // instead of waiting). Default false: fetch waits up to its timeout.
  bool polling_mode = false;
  // Indexes each new partition reserves at creation (upstream's
  // TQ_PRE_ALLOC_SAMPLE_NUM): its status views list them, not yet produced
  // or consumed, until allocations take them (smallest first), so a
  // consumer knows the expected size before the producers have written.
  // Default 1, which the first allocation always takes (no visible
  // effect); 0 reserves nothing. At most 2^24.
  int64_t pre_alloc_samples = 1;
  // Allocation limits, so that no request makes the single-threaded
  // controller do unbounded work or commit unbounded memory (a sample costs
  // about 1 us and 150 bytes of metadata). "Holds" counts live samples,
  // samples being cleared and reserved indexes.
  // Most samples one Allocate request (or kv_retrieve with create) may
  // create; a larger request is InvalidArgument. Default 2^16 (tens of ms
  // of work; TransferQueueClient slices bigger allocations and puts into
  // requests of this size, so other requests are served in between).
  int64_t max_allocate_per_request = kDefaultMaxAllocatePerRequest;
  // Most samples one partition may hold; an allocation beyond it is
  // OutOfSpace naming the partition. Default 2^22. Must be >= pre_alloc_samples.
  int64_t max_samples_per_partition = int64_t{1} << 22;
  // Most samples all partitions together may hold (OutOfSpace beyond).
  // Default 2^24 (about 2.5 GiB of metadata).
  int64_t max_samples_total = int64_t{1} << 24;
  // Storage units that register themselves (`tq storage-unit --controller`)
  // are listed to clients only after the controller reached them (a
  // UnitStats answered within storage_unit_verify_timeout_ms), then pinged
  // every storage_unit_ping_interval_ms; one that leaves a ping unanswered
  // for storage_unit_liveness_timeout_ms is dropped from the list. A unit
  // that answers, however slowly, within that time is kept (it may hold
  // data), so the default is generous. Embedded units are never dropped.
  int64_t storage_unit_ping_interval_ms = 1000;
  int64_t storage_unit_liveness_timeout_ms = 30000;
  int64_t storage_unit_verify_timeout_ms = 5000;
  // Most registered storage units (embedded ones included); more
  // registrations are refused. Default 256.
  int64_t max_storage_units = 256;
  // Sampling used by a get_meta whose sampling_config names no "sampler":
  // the call's keys are laid over these (the call wins), so a controller set
  // up like upstream's `sampler=` argument serves callers that pass only
  // dp_rank / batch_index. Empty (the default): the call's config alone.
  // Validate() rejects an unknown sampler name.
  SamplingConfig default_sampling;
  // A sampler of the embedding program used instead of the built-ins (and
  // of default_sampling, which must then be empty). Null (the default): the
  // built-in samplers. Shared: the controller keeps it alive until it stops.
  std::shared_ptr<CustomSampler> custom_sampler;
  // A directory where the controller keeps its state, so that a controller
  // killed at any point (kill -9 included) and started again on the same
  // directory and address resumes exactly: every get_meta that was answered
  // stays consumed, none is answered twice, every finished put stays
  // visible, and registered storage units are listed again. Clients
  // (TransferQueueClient) resend their requests across the restart by
  // themselves. Each change is journaled before its reply is sent; the
  // journal is folded into a base file every state_rotate_bytes. Empty (the
  // default): the state lives in memory only. Exclusive with
  // custom_sampler. Start again with the same options: the replay applies
  // them. Embedded storage units keep their data in this process, so it does
  // not survive; run `tq storage-unit`s (or the datasystem) for that.
  std::string state_dir;
  // fdatasync each journal record: survives a host crash too, at the cost of
  // a disk flush per change. Default false: a killed process loses nothing,
  // a crashed host may lose the last changes (and their replies).
  bool state_sync = false;
  int64_t state_rotate_bytes = int64_t{64} << 20;
  tqds::Status Validate() const;
};

// Requests the controller served, per kind (upstream TransferQueue's
// op_type names: GET_META, NOTIFY_DATA_UPDATE, CLEAR_META, ...), for its
// Prometheus endpoint. Latency runs from receipt to reply, so a get_meta that
// waited for data counts its wait.
struct ControllerRequestStats {
  using Op = RequestOpStats;
  std::map<std::string, Op> ops;
  uint64_t index_allocated = 0;  // global indexes held (live, being cleared, reserved)
  uint64_t index_reusable = 0;   // released indexes waiting for reuse
};

class TransferQueueController {
 public:
  static tqds::Result<std::unique_ptr<TransferQueueController>> Start(const ControllerOptions& options);
  virtual ~TransferQueueController() = default;
  // The endpoint clients connect to, e.g. "tcp://127.0.0.1:40123".
  virtual const std::string& address() const = 0;
  // Endpoints of the storage units clients are told: the embedded ones and
  // the registered ones that answer.
  virtual std::vector<std::string> storage_units() const = 0;
  // A copy of the request counters (thread-safe).
  virtual ControllerRequestStats request_stats() const = 0;
  virtual void Stop() = 0;
};

}  // namespace tq
