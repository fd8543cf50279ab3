// Fuzz target: the datasystem's cluster JSON decoders: etcd's v3 HTTP
// gateway replies and watch lines (a worker reads them from etcd), the
// metastore's gateway requests (a worker serving --start_metastore_service
// reads them from peers) and a member record.
#include <nlohmann/json.hpp>

#include <string>

#include "datasystem/cluster/etcd_codec.h"
#include "datasystem/cluster/membership.h"
#include "datasystem/cluster/metastore_gateway.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string text(reinterpret_cast<const char*>(data), size);
  (void)ds::cluster::DecodeMember(text);
  auto j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return 0;
  namespace codec = ds::cluster::codec;
  namespace gw = ds::cluster::metastore::gateway;
  (void)codec::ParseKeyValue(j);
  (void)codec::ParseRange(j);
  (void)codec::ParseHeaderRevision(j);
  (void)codec::ParseTxn(j);
  (void)codec::ParseLeaseGrant(j);
  (void)codec::ParseKeepAliveTtl(j, 7);
  (void)codec::ParseServerStatus(j);
  (void)codec::ParseWatchLine(j);
  (void)gw::ParseRange(j);
  (void)gw::ParsePut(j);
  (void)gw::ParseDelete(j);
  (void)gw::ParseTxn(j);
  (void)gw::ParseCompaction(j);
  (void)gw::ParseLeaseGrant(j);
  (void)gw::ParseLeaseId(j);
  (void)gw::ParseWatch(j);
  return 0;
}
