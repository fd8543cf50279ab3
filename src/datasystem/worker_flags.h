// Registers the worker's command-line flags on a CLI11 app; shared by
// `dscli start` and `ds_worker` so both accept exactly the same flags.
#pragma once

#include <CLI/CLI.hpp>

#include "datasystem/worker_options.h"

namespace ds {

inline void AddWorkerFlags(CLI::App& app, WorkerOptions& o) {
  app.add_option("--worker_address", o.worker_address, "HOST:PORT the worker serves (TCP)")
      ->required();
  app.add_option("--etcd_address", o.etcd_address,
                 "HOST:PORT of etcd; omitted: standalone single-node worker");
  app.add_option("--shared_memory_size_mb", o.shared_memory_size_mb,
                 "size of the shared-memory arena in MiB")
      ->capture_default_str();
  app.add_option("--spill_directory", o.spill_directory,
                 "directory for the disk (spill) tier; empty: no spill");
  app.add_option("--spill_size_limit_mb", o.spill_size_limit_mb, "cap on spilled bytes in MiB")
      ->capture_default_str();
  app.add_option("--log_dir", o.log_dir, "directory for the worker log");
  app.add_option("--unix_socket_dir", o.unix_socket_dir,
                 "directory for the local socket and pid file")
      ->capture_default_str();
  app.add_option("--high_watermark", o.high_watermark,
                 "spill/evict above this fraction of shared memory")
      ->capture_default_str();
  app.add_option("--node_timeout_s", o.node_timeout_s,
                 "cluster: seconds until a dead worker leaves the ring (etcd lease TTL)")
      ->capture_default_str();
  app.add_option("--pull_connections", o.pull_connections,
                 "cluster: TCP connections per cross-node pull of a large object")
      ->capture_default_str();
  app.add_option("--cache_max_keys", o.cache_max_keys,
                 "cluster: a get pulling more keys than this from other workers keeps no cached "
                 "copies (0: never cache)")
      ->capture_default_str();
  app.add_option("--data_port", o.data_port,
                 "cluster: TCP port for worker-to-worker transfers (0: any free port)")
      ->capture_default_str();
  app.add_flag("--populate_memory,!--no_populate_memory", o.populate_memory,
               "commit the shared memory in the background after start (default; "
               "--no_populate_memory: commit pages on first use)")
      ->capture_default_str();
}

}  // namespace ds
