// Default metastore hook: the service is not built yet, so a worker asked to
// start it fails to start with a message saying so.
#include "datasystem/metastore_hook.h"

namespace ds {

tqds::Status StartMetastore(const WorkerOptions& options) {
  return tqds::Status::Unavailable(
      "metastore service not built yet: --start_metastore_service true cannot start one at ",
      options.metastore_address,
      "; run etcd there and pass --etcd_address (or --metastore_address alone) instead");
}

void StopMetastore() {}

}  // namespace ds
