// The etcd v3 JSON-gateway codec: builds request bodies and parses response
// bodies (base64 keys/values, int64 as strings, gRPC error objects). No I/O,
// so it is tested without an etcd (tests/datasystem/cluster). Stateless and
// thread-safe. The wire shapes are documented in docs/cluster.md.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "datasystem/cluster/etcd_types.h"
#include "tqds/status.h"

namespace ds::cluster::codec {

std::string Base64Encode(std::string_view bytes);
// Invalid on a character outside the standard alphabet or bad padding.
tqds::Result<std::string> Base64Decode(std::string_view text);

// The range_end that selects every key starting with `prefix` (the prefix
// with its last byte incremented, trailing 0xff bytes dropped); "\0" (all
// keys) when the prefix is empty or all 0xff.
std::string PrefixRangeEnd(std::string_view prefix);

// Reads an int64 that the gateway writes as a JSON string ("42") or number;
// a missing field is 0.
tqds::Result<int64_t> GetInt64(const nlohmann::json& obj, const char* field);

// Request bodies.
nlohmann::json RangeRequest(std::string_view key, bool prefix);
nlohmann::json PutRequest(std::string_view key, std::string_view value, int64_t lease);
nlohmann::json DeleteRequest(std::string_view key, bool prefix);
nlohmann::json TxnRequest(const Txn& txn);
nlohmann::json WatchCreateRequest(std::string_view key, bool prefix, int64_t start_revision);

// A non-OK Status for a gateway error body ({"error":..,"code":<gRPC code>}),
// OK when `body` is not an error. `what` names the call for the message.
tqds::Status ErrorStatus(const nlohmann::json& body, std::string_view what);

// Response bodies (after ErrorStatus said OK).
tqds::Result<KeyValue> ParseKeyValue(const nlohmann::json& kv);
tqds::Result<RangeResult> ParseRange(const nlohmann::json& body);
tqds::Result<int64_t> ParseHeaderRevision(const nlohmann::json& body);
tqds::Result<TxnResult> ParseTxn(const nlohmann::json& body);
tqds::Result<LeaseGrant> ParseLeaseGrant(const nlohmann::json& body);
// NotFound when the lease is gone (the gateway then omits TTL).
tqds::Result<int64_t> ParseKeepAliveTtl(const nlohmann::json& line, int64_t lease);
tqds::Result<ServerStatus> ParseServerStatus(const nlohmann::json& body);

// One line of the /v3/watch response stream.
struct WatchMessage {
  bool created = false;
  bool canceled = false;
  int64_t compact_revision = 0;  // > 0: the start revision was compacted away
  std::string cancel_reason;
  uint64_t cluster_id = 0;
  int64_t header_revision = 0;
  std::vector<WatchEvent> events;
};
// A gateway error line gives its Status.
tqds::Result<WatchMessage> ParseWatchLine(const nlohmann::json& line);

}  // namespace ds::cluster::codec
