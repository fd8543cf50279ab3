// WorkerOptions: every setting of a datasystem worker, filled in from the
// command line (worker_flags.h: openYuanrong datasystem's flag names, units and
// defaults, plus our older spellings) by dscli or datasystem_worker, and
// checked by Validate(). Paths derived from the worker's identity (its full
// address: socket, pid file, spill subdirectory) are computed here only.
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
  // TCP address the worker serves. It is also the worker's identity on the
  // host: two workers with one port on two addresses (127.0.0.1:31501 and
  // 127.0.0.2:31501) are two workers. Default 127.0.0.1:31501 (as the real
  // dscli's).
  std::string worker_address = "127.0.0.1:31501";
  // Address the TCP server binds instead of worker_address; empty (default):
  // worker_address. Clients and peers still dial worker_address.
  std::string bind_address;
  // etcd client address ("127.0.0.1:2379"). Empty: no etcd (then
  // metastore_address, if set, is the coordination address; if neither is
  // set the worker runs alone). A comma list is accepted; the first is used.
  std::string etcd_address;
  // Metastore (an etcd v3 JSON-gateway subset served by a worker) address.
  // Used as the coordination address when etcd_address is empty.
  std::string metastore_address;
  // Start the metastore service at metastore_address in this worker (the
  // head node only). Default false.
  bool start_metastore_service = false;
  // Size of the shared-memory arena in MiB. Default 1024 (pages are
  // committed as objects are written, or at start with
  // shared_memory_populate).
  uint64_t shared_memory_size_mb = 1024;
  // Commit the arena's pages right after start, in a background thread (fresh
  // pages cost a fault each on first write; afterwards the worker's memory is
  // all resident). Default false, as the real worker's.
  bool shared_memory_populate = false;
  // Spill (SSD) tier. Empty: no spill; memory full means OutOfSpace.
  std::string spill_directory;
  // Cap on spilled bytes. 0 (default): 95% of the size of the file system
  // holding spill_directory.
  uint64_t spill_size_limit = 0;
  // Directory of the worker's log; empty logs to stderr (dscli fills in
  // <unix_domain_socket_dir>/logs).
  std::string log_dir;
  // Log file name prefix; empty: datasystem_worker_<host>_<port>.
  std::string log_filename;
  // Lowest level logged: 0 info (default), 1 warning, 2 error, 3 fatal.
  int min_log_level = 0;
  // Above 0: debug messages too. Default 0.
  int verbose = 0;
  // Where the Unix socket and pid file live. Default /tmp/ds_worker (the real
  // worker's default, ./datasystem/uds under the working directory, would
  // make a socket path depend on where dscli runs; see docs/dscli_flags.md).
  std::string unix_domain_socket_dir = "/tmp/ds_worker";
  // Files created once the worker serves and removed when it stops (for
  // probes); empty (default): none.
  std::string ready_check_path;
  std::string health_check_path;
  // Spill/evict when the arena is fuller than this fraction. Default 0.9.
  double eviction_high_watermark_ratio = 0.9;
  // Checked (0 < low <= high) and kept; the store spills/evicts until it is
  // back under the high watermark, so this changes nothing yet. Default 0.8.
  double eviction_low_watermark_ratio = 0.8;
  // Cluster: seconds a dead worker stays in the ring (its etcd lease TTL;
  // etcd's minimum is about 2). Default 60, as the real worker's.
  uint32_t node_timeout_s = 60;
  // Cluster: TCP connections one cross-node pull of a large object uses
  // (--oc_worker_worker_pool_size). Default 3.
  uint32_t pull_connections = 3;
  // Cluster: a get that pulls more keys than this from other workers keeps
  // no cached copies: the bytes land in blocks private to the reader, freed
  // when it releases them (bulk reads skip registering thousands of copies
  // with their owners). 0: never cache (--enable_data_replication false).
  // Default 256.
  uint32_t cache_max_keys = 256;
  // Cluster: TCP port of the worker-to-worker data plane
  // (--oc_worker_worker_direct_port); 0 (default): any free port.
  int data_port = 0;
  // Prometheus metrics (GET /metrics) on the worker's host at this port; 0:
  // a free port; -1 (default): none. The address is in Stats (dscli status).
  int metrics_port = -1;
  // Authentication (security.h): with enable_curve_zmq, every tcp socket of
  // the worker process (its port, its peers, dscli's calls) uses CURVE with
  // the keys in curve_key_dir (then required), as openYuanrong's flags.
  // Without keys, a worker address that is not loopback needs
  // allow_insecure (ours), which logs a warning.
  bool enable_curve_zmq = false;
  std::string curve_key_dir;
  bool allow_insecure = false;

  tqds::Status Validate() const;
  HostPort address() const;  // precondition: Validate() passed
  // The address the worker coordinates through: etcd_address (its first
  // entry), else metastore_address, else "" (standalone).
  std::string coordination_address() const;
  // "<host>_<port>": the worker's identity in file names.
  std::string identity() const;
  std::string socket_path() const;
  std::string pid_path() const;
  std::string spill_path() const;  // worker's own subdirectory of spill_directory
  // spill_size_limit, or for 0 95% of spill_directory's file system (0 when
  // there is no spill directory or it cannot be measured).
  uint64_t EffectiveSpillLimit() const;
};

// Checks that an etcd server answers HTTP GET /version at `address` within
// `timeout_ms`. Unavailable with a message saying what to do otherwise.
tqds::Status ProbeEtcd(const std::string& address, int timeout_ms);

}  // namespace ds
