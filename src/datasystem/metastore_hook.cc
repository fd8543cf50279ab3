// Metastore hook: starts the in-process Metastore (the etcd v3 JSON-gateway
// subset, src/datasystem/cluster/metastore.h) at --metastore_address and
// keeps it until StopMetastore, for the worker's lifetime.
#include "datasystem/metastore_hook.h"

#include <memory>
#include <mutex>

#include "datasystem/cluster/metastore.h"

namespace ds {

namespace {

std::mutex g_mu;
// Deliberately never destroyed: a worker that exits without StopMetastore
// must not join server threads from a static destructor.
std::unique_ptr<cluster::Metastore>* const g_metastore = new std::unique_ptr<cluster::Metastore>();

}  // namespace

tqds::Status StartMetastore(const WorkerOptions& options) {
  TQDS_ASSIGN_OR_RETURN(HostPort hp,
                        HostPort::Parse(options.metastore_address, "--metastore_address"));
  std::lock_guard<std::mutex> lock(g_mu);
  if (*g_metastore) {
    return tqds::Status::AlreadyExists("a metastore already runs in this process at ",
                                       (*g_metastore)->address());
  }
  // Answers (GET /version included) as soon as Start returns.
  TQDS_ASSIGN_OR_RETURN(*g_metastore, cluster::Metastore::Start(hp.host, hp.port));
  return tqds::Status::OK();
}

void StopMetastore() {
  std::unique_ptr<cluster::Metastore> m;
  {
    std::lock_guard<std::mutex> lock(g_mu);
    m = std::move(*g_metastore);
  }
  m.reset();  // Stop(): ends watch streams, joins the server threads
}

}  // namespace ds
