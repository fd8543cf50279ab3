// The metastore's side of etcd's v3 JSON gateway: parses request bodies
// into MetastoreState requests and renders answers and watch lines in the
// JSON etcd's grpc-gateway writes (base64 bytes, int64 as strings, zero
// fields omitted, errors as {"error","code","message"}). The mirror image of
// etcd_codec.h (the client side). No I/O: tested without sockets. Every
// parser treats its input as hostile: wrong types, bad base64, numbers out
// of range and unsupported options give Invalid naming the field.
// Stateless and thread-safe.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "datasystem/cluster/metastore_state.h"
#include "tqds/status.h"

namespace ds::cluster::metastore::gateway {

// The response header every answer carries.
struct Header {
  uint64_t cluster_id = 0;
  uint64_t member_id = 0;
  int64_t revision = 0;
};

// The gRPC code etcd would answer for `st` (3 invalid argument, 5 not
// found, 8 resource exhausted, 11 out of range for compacted/future
// revisions, 12 unimplemented for "metastore: unsupported ..." ...), and
// the HTTP status grpc-gateway maps it to.
int GrpcCode(const tqds::Status& st);
int HttpStatus(int grpc_code);
// {"error": msg, "code": c, "message": msg}.
nlohmann::json ErrorJson(const tqds::Status& st);
// Invalid with etcd's wording for an unsupported option.
tqds::Status Unsupported(const std::string& what);

// Request bodies. `body` must be a JSON object.
tqds::Result<RangeRequest> ParseRange(const nlohmann::json& body);
tqds::Result<PutRequest> ParsePut(const nlohmann::json& body);
tqds::Result<DeleteRequest> ParseDelete(const nlohmann::json& body);
tqds::Result<TxnRequest> ParseTxn(const nlohmann::json& body);
tqds::Result<int64_t> ParseCompaction(const nlohmann::json& body);
struct LeaseGrantRequest {
  int64_t ttl_s = 0;
  int64_t id = 0;
};
tqds::Result<LeaseGrantRequest> ParseLeaseGrant(const nlohmann::json& body);
// {"ID": ...} of keepalive, revoke and timetolive.
tqds::Result<int64_t> ParseLeaseId(const nlohmann::json& body);

struct WatchCreate {
  KeyRange range;
  int64_t start_revision = 0;  // 0: from now
  int64_t watch_id = 0;
  bool no_put = false;  // filters
  bool no_delete = false;
};
enum class WatchRequestKind { kCreate, kCancel, kProgress };
struct WatchRequest {
  WatchRequestKind kind = WatchRequestKind::kCreate;
  WatchCreate create;    // kCreate
  int64_t watch_id = 0;  // kCancel
};
tqds::Result<WatchRequest> ParseWatch(const nlohmann::json& body);

// Answers.
nlohmann::json HeaderJson(const Header& h);
nlohmann::json KeyValueJson(const KeyValue& kv);
nlohmann::json RangeJson(const Header& h, const RangeResponse& r);
nlohmann::json PutJson(const Header& h, const PutResponse& r);
nlohmann::json DeleteJson(const Header& h, const DeleteResponse& r);
nlohmann::json TxnJson(const Header& h, const TxnResponse& r);
nlohmann::json StatusJson(const Header& h, const std::string& version, size_t db_size);
nlohmann::json LeaseGrantJson(const Header& h, const LeaseGrant& g);
// {"result": ...}; ttl 0 (a missing lease) is omitted, as etcd does.
nlohmann::json LeaseKeepAliveLine(const Header& h, int64_t id, int64_t ttl);
// ttl -1: no such lease (etcd's answer).
nlohmann::json LeaseTimeToLiveJson(const Header& h, int64_t id, int64_t ttl, int64_t granted);

// Watch stream lines ({"result": WatchResponse}).
nlohmann::json WatchCreatedLine(const Header& h, int64_t watch_id);
nlohmann::json WatchEventsLine(const Header& h, int64_t watch_id,
                               const std::vector<WatchEvent>& events);
nlohmann::json WatchProgressLine(const Header& h, int64_t watch_id);
nlohmann::json WatchCompactedLine(const Header& h, int64_t watch_id, int64_t compact_revision);
nlohmann::json WatchCanceledLine(const Header& h, int64_t watch_id, const std::string& reason);

}  // namespace ds::cluster::metastore::gateway
