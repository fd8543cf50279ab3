// TransferQueueController: the metadata service. Allocates global indexes per
// partition, records production and per-task consumption, and answers
// get_meta through pluggable samplers. Payload bytes never pass through it.
// It serves all requests on one thread; a get_meta that waits is parked and
// never delays other requests. Embeddable (Start) or run as `tq controller`.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "tq/sampling.h"
#include "tqds/status.h"

namespace tq {

struct ControllerOptions {
  // ZMQ endpoint to bind; port 0 picks a free one. "inproc://NAME" serves
  // clients of this process only (embedded units then use inproc too).
  std::string address = "tcp://127.0.0.1:0";
  // Simple storage units to run inside the controller's process (the
  // embedded default, so no other service is needed). 0: none.
  int embedded_storage_units = 0;
  // Capacity of each embedded unit.
  uint64_t storage_unit_capacity_bytes = uint64_t{8} << 30;
  // Upstream TransferQueue's polling mode: a get_meta in mode "fetch" behaves
  // like "poll_all" (an empty meta at once when too few samples are ready,
  // instead of waiting). Default false: fetch waits up to its timeout.
  bool polling_mode = false;
  // Sampling used by a get_meta whose sampling_config names no "sampler":
  // the call's keys are laid over these (the call wins), so a controller set
  // up like upstream's `sampler=` argument serves callers that pass only
  // dp_rank / batch_index. Empty (the default): the call's config alone.
  // Validate() rejects an unknown sampler name.
  SamplingConfig default_sampling;
  tqds::Status Validate() const;
};

class TransferQueueController {
 public:
  static tqds::Result<std::unique_ptr<TransferQueueController>> Start(const ControllerOptions& options);
  virtual ~TransferQueueController() = default;
  // The endpoint clients connect to, e.g. "tcp://127.0.0.1:40123".
  virtual const std::string& address() const = 0;
  // Endpoints of the embedded storage units.
  virtual std::vector<std::string> storage_units() const = 0;
  virtual void Stop() = 0;
};

}  // namespace tq
