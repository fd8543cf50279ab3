// ClusterHooks: what the request handler asks of the cluster (if any). The
// handler stays transport- and etcd-free; ClusterNode implements this, and
// a standalone worker passes none.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/wire/message.h"
#include "datasystem/object_store.h"
#include "datasystem/protocol.h"
#include "tqds/status.h"

namespace ds {

// What a worker reports of its cluster (Stats, `dscli status`).
struct ClusterStats {
  std::string coordination;        // the etcd (or metastore) address
  std::vector<std::string> peers;  // the other live workers, sorted
  uint64_t pulls = 0;              // objects pulled from other workers
  uint64_t pulled_bytes = 0;
  uint64_t pull_failures = 0;      // pulls of an object that failed (each holder tried counts)
};

class ClusterHooks {
 public:
  virtual ~ClusterHooks() = default;

  // `keys` were just sealed on this worker: tell their owners where they
  // are (and drop older copies elsewhere). `wait`: return only once the
  // owners answered (local clients: a reader on another node then finds
  // the key); false on the TCP server thread, which must not block.
  virtual void Published(const std::vector<std::string>& keys, bool wait) = 0;

  // Pulls `keys`, missing on this worker, from the workers holding them into
  // local shared memory. A small fetch keeps them as cached copies (found by
  // a store Get afterwards); a bulk fetch pins them as blocks private to
  // `session` and fills (*pulled)[i] (sized like keys) for each such key.
  // With `ranges` (empty, or one per key): a key whose range is only part of
  // its value is pulled as that part alone, into a private block, and
  // (*pulled)[i].from says where in the value it starts. Keys no worker has
  // stay missing. Fails fast (Unavailable naming the key and the worker)
  // when a key's only copies were on workers that left or cannot be reached.
  virtual tqds::Status Fetch(Session& session, const std::vector<std::string>& keys,
                             const std::vector<ValueRange>& ranges, std::vector<Located>* pulled) = 0;

  // Whether another worker holds a live copy of each key (local misses).
  // Unavailable, naming the key and its owners, when no owner of some key
  // answers: "absent" would let an if-absent write replace a key that may
  // still exist.
  virtual tqds::Result<std::vector<bool>> ExistRemote(const std::vector<std::string>& keys) = 0;

  // Gives every copy of `keys` on other workers (the primary and cached
  // copies) `ttl_ms` to live. Per key: whether another worker held one.
  virtual std::vector<bool> ExpireRemote(const std::vector<std::string>& keys, uint64_t ttl_ms) = 0;

  // Deletes every other copy of `keys` and their owners' records. Per key:
  // whether a record existed. `wait` as for Published.
  virtual std::vector<bool> DeleteRemote(const std::vector<std::string>& keys, bool wait) = 0;

  // The cluster as this worker sees it now. Never blocks.
  virtual ClusterStats Stats() const = 0;

  // A cluster message from a peer (ids 111-114). Never blocks.
  virtual tqds::Result<tqds::wire::Message> HandlePeer(const tqds::wire::Message& request) = 0;
};

}  // namespace ds
