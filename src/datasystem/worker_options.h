// WorkerOptions: every setting of a datasystem worker, filled in by dscli or
// ds_worker's command line and checked by Validate(). Paths derived from the
// address (socket, pid file, spill subdirectory) are computed here only.
#pragma once

#include <cstdint>
#include <string>

#include "tqds/status.h"

namespace ds {

// "host:port" split and checked (port 1-65535, host non-empty).
struct HostPort {
  std::string host;
  int port = 0;
  static tqds::Result<HostPort> Parse(const std::string& text, const char* flag);
  std::string ToString() const { return host + ":" + std::to_string(port); }
};

struct WorkerOptions {
  // TCP address the worker serves ("127.0.0.1:31501"). Required.
  std::string worker_address;
  // etcd client address ("127.0.0.1:2379"). Empty: standalone worker. With
  // it, the worker joins the cluster of workers registered there.
  std::string etcd_address;
  // Size of the shared-memory arena. Default 1024 MiB (reserved lazily: pages
  // are committed as objects are written).
  uint64_t shared_memory_size_mb = 1024;
  // Spill (SSD) tier. Empty: no spill; memory full means OutOfSpace.
  std::string spill_directory;
  // Cap on spilled bytes. Default 10 GiB.
  uint64_t spill_size_limit_mb = 10240;
  // Log directory; empty logs to stderr.
  std::string log_dir;
  // Where the Unix socket and pid file live. Default /tmp/ds_worker.
  std::string unix_socket_dir = "/tmp/ds_worker";
  // Spill/evict when the arena is fuller than this fraction. Default 0.9.
  double high_watermark = 0.9;
  // Commit the arena's pages in the background after start (fresh pages
  // cost a fault each on first write; the worker's memory is then all
  // resident). Default true; --no_populate_memory commits pages on first use.
  bool populate_memory = true;
  // Cluster (with etcd_address): seconds a dead worker stays in the ring
  // (its etcd lease TTL; etcd's minimum is about 2). Default 3.
  uint32_t node_timeout_s = 3;
  // Cluster: TCP connections one cross-node pull of a large object uses.
  // Default 4.
  uint32_t pull_connections = 4;
  // Cluster: a get that pulls more keys than this from other workers keeps
  // no cached copies: the bytes land in blocks private to the reader, freed
  // when it releases them (bulk reads skip registering thousands of copies
  // with their owners). 0: never cache. Default 256.
  uint32_t cache_max_keys = 256;
  // Cluster: TCP port of the worker-to-worker data plane; 0 (default): any free port.
  int data_port = 0;

  tqds::Status Validate() const;
  HostPort address() const;  // precondition: Validate() passed
  std::string socket_path() const;
  std::string pid_path() const;
  std::string spill_path() const;  // worker's own subdirectory of spill_directory
};

// Checks that an etcd server answers HTTP GET /version at `address` within
// `timeout_ms`. Unavailable with a message saying what to do otherwise.
tqds::Status ProbeEtcd(const std::string& address, int timeout_ms);

}  // namespace ds
