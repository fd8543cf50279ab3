// The seam between the worker and the metastore service (an in-process
// server speaking the subset of etcd's v3 JSON gateway our etcd client uses,
// src/datasystem/cluster/metastore.*). The worker calls StartMetastore when
// --start_metastore_service is true, before it joins the cluster through
// --metastore_address, and StopMetastore after it has left.
//
// Contract for an implementation: StartMetastore returns once the service
// answers at options.metastore_address (including etcd's `GET /version`
// with an "etcdserver" field: the worker probes the coordination address
// that way before joining), or an error saying what went wrong. It keeps the
// service alive until StopMetastore. Both are called from the worker's main
// thread only; StopMetastore is a no-op when nothing was started.
#pragma once

#include "datasystem/worker_options.h"
#include "tqds/status.h"

namespace ds {

tqds::Status StartMetastore(const WorkerOptions& options);
void StopMetastore();

}  // namespace ds
