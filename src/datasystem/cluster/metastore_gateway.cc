// The metastore's etcd v3 JSON-gateway codec: request parsers and answer
// renderers.
#include "datasystem/cluster/metastore_gateway.h"

#include <charconv>
#include <limits>

#include "datasystem/cluster/etcd_codec.h"

namespace ds::cluster::metastore::gateway {

using nlohmann::json;
using tqds::Result;
using tqds::Status;

namespace {

constexpr char kUnsupported[] = "metastore: unsupported";
constexpr char kRevisionError[] = "etcdserver: mvcc: required revision";

Status NotObject(const char* what) {
  return Status::Invalid("metastore: ", what, " must be a JSON object");
}

// int64 as the gateway writes it: a JSON integer or a decimal string.
Result<int64_t> GetInt(const json& obj, const char* field) {
  auto it = obj.find(field);
  if (it == obj.end() || it->is_null()) return int64_t{0};
  if (it->is_number_integer()) {
    if (it->is_number_unsigned() &&
        it->get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      return Status::Invalid("metastore: field '", field, "' is out of the int64 range");
    }
    return it->get<int64_t>();
  }
  if (it->is_string()) {
    const auto& s = it->get_ref<const std::string&>();
    int64_t v = 0;
    auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (ec == std::errc() && end == s.data() + s.size() && !s.empty()) return v;
  }
  return Status::Invalid("metastore: field '", field, "' is not an int64: ",
                         it->dump().substr(0, 64));
}

Result<int64_t> GetNonNegative(const json& obj, const char* field) {
  TQDS_ASSIGN_OR_RETURN(int64_t v, GetInt(obj, field));
  if (v < 0) return Status::Invalid("metastore: field '", field, "' must be >= 0, got ", v);
  return v;
}

Result<bool> GetBool(const json& obj, const char* field) {
  auto it = obj.find(field);
  if (it == obj.end() || it->is_null()) return false;
  if (!it->is_boolean()) return Status::Invalid("metastore: field '", field, "' is not a bool");
  return it->get<bool>();
}

// Base64 bytes (padding optional, as protobuf's JSON accepts).
Result<std::string> GetBytes(const json& obj, const char* field) {
  auto it = obj.find(field);
  if (it == obj.end() || it->is_null()) return std::string();
  if (!it->is_string()) {
    return Status::Invalid("metastore: field '", field, "' is not a base64 string");
  }
  std::string text = it->get<std::string>();
  while (text.size() % 4 != 0) text.push_back('=');
  auto decoded = codec::Base64Decode(text);
  if (!decoded.ok()) {
    return Status::Invalid("metastore: field '", field, "': ", decoded.status().message());
  }
  return std::move(decoded).value();
}

// An enum as its name or its number; a missing field is `names[0]`.
Result<int> GetEnum(const json& obj, const char* field, std::initializer_list<const char*> names) {
  auto it = obj.find(field);
  if (it == obj.end() || it->is_null()) return 0;
  int i = 0;
  if (it->is_string()) {
    for (const char* n : names) {
      if (it->get_ref<const std::string&>() == n) return i;
      ++i;
    }
  } else if (it->is_number_integer()) {
    int64_t v = it->get<int64_t>();
    if (v >= 0 && v < static_cast<int64_t>(names.size())) return static_cast<int>(v);
  }
  return Status::Invalid("metastore: field '", field, "' has an unknown value ",
                         it->dump().substr(0, 64));
}

Result<KeyRange> GetRange(const json& body) {
  KeyRange r;
  TQDS_ASSIGN_OR_RETURN(r.key, GetBytes(body, "key"));
  TQDS_ASSIGN_OR_RETURN(r.range_end, GetBytes(body, "range_end"));
  return r;
}

Status RejectSet(const json& body, std::initializer_list<const char*> fields, const char* what) {
  for (const char* f : fields) {
    auto it = body.find(f);
    if (it == body.end() || it->is_null()) continue;
    bool set = (it->is_boolean() && it->get<bool>()) ||
               (it->is_number() && it->get<double>() != 0) ||
               (it->is_string() && !it->get_ref<const std::string&>().empty() &&
                it->get_ref<const std::string&>() != "0") ||
               (it->is_array() && !it->empty()) || (it->is_object() && !it->empty());
    if (set) return Unsupported(std::string(what) + " option '" + f + "'");
  }
  return Status::OK();
}

Result<OpRequest> ParseOp(const json& op) {
  if (!op.is_object()) return NotObject("a txn operation");
  if (auto r = op.find("request_range"); r != op.end()) {
    if (!r->is_object()) return NotObject("request_range");
    TQDS_ASSIGN_OR_RETURN(auto req, ParseRange(*r));
    return OpRequest(std::move(req));
  }
  if (auto p = op.find("request_put"); p != op.end()) {
    if (!p->is_object()) return NotObject("request_put");
    TQDS_ASSIGN_OR_RETURN(auto req, ParsePut(*p));
    return OpRequest(std::move(req));
  }
  if (auto d = op.find("request_delete_range"); d != op.end()) {
    if (!d->is_object()) return NotObject("request_delete_range");
    TQDS_ASSIGN_OR_RETURN(auto req, ParseDelete(*d));
    return OpRequest(std::move(req));
  }
  if (op.contains("request_txn")) return Unsupported("nested transactions (request_txn)");
  return Status::Invalid("metastore: a txn operation needs request_range, request_put or "
                         "request_delete_range");
}

Result<std::vector<OpRequest>> ParseOps(const json& body, const char* field) {
  std::vector<OpRequest> out;
  auto it = body.find(field);
  if (it == body.end() || it->is_null()) return out;
  if (!it->is_array()) return Status::Invalid("metastore: txn '", field, "' is not an array");
  for (const auto& op : *it) {
    TQDS_ASSIGN_OR_RETURN(auto parsed, ParseOp(op));
    out.push_back(std::move(parsed));
  }
  return out;
}

Result<CompareRequest> ParseCompare(const json& c) {
  if (!c.is_object()) return NotObject("a txn compare");
  CompareRequest out;
  TQDS_ASSIGN_OR_RETURN(out.range, GetRange(c));
  // etcd's enum orders: CompareResult EQUAL GREATER LESS NOT_EQUAL,
  // CompareTarget VERSION CREATE MOD VALUE LEASE.
  TQDS_ASSIGN_OR_RETURN(int result, GetEnum(c, "result", {"EQUAL", "GREATER", "LESS", "NOT_EQUAL"}));
  TQDS_ASSIGN_OR_RETURN(int target,
                        GetEnum(c, "target", {"VERSION", "CREATE", "MOD", "VALUE", "LEASE"}));
  static constexpr Compare::Op kOps[] = {Compare::Op::kEqual, Compare::Op::kGreater,
                                         Compare::Op::kLess, Compare::Op::kNotEqual};
  out.op = kOps[result];
  static constexpr Compare::Target kTargets[] = {
      Compare::Target::kVersion, Compare::Target::kCreateRevision, Compare::Target::kModRevision,
      Compare::Target::kValue, Compare::Target::kLease};
  static constexpr const char* kFields[] = {"version", "create_revision", "mod_revision", "value",
                                            "lease"};
  out.target = kTargets[target];
  if (out.target == Compare::Target::kValue) {
    TQDS_ASSIGN_OR_RETURN(out.value, GetBytes(c, kFields[target]));
  } else {
    TQDS_ASSIGN_OR_RETURN(out.number, GetInt(c, kFields[target]));
  }
  return out;
}

json StreamResult(json result) { return json{{"result", std::move(result)}}; }

void SetIfNonZero(json* j, const char* field, int64_t v) {
  if (v != 0) (*j)[field] = std::to_string(v);
}

json WatchResult(const Header& h, int64_t watch_id) {
  json r = {{"header", HeaderJson(h)}};
  SetIfNonZero(&r, "watch_id", watch_id);
  return r;
}

}  // namespace

Status Unsupported(const std::string& what) {
  return Status::Invalid(kUnsupported, ": ", what,
                         " (the metastore serves the etcd subset our EtcdClient uses; see "
                         "docs/metastore.md)");
}

int GrpcCode(const Status& st) {
  using tqds::StatusCode;
  switch (st.code()) {
    case StatusCode::kOk:
      return 0;
    case StatusCode::kInvalid:
      if (st.message().rfind(kUnsupported, 0) == 0) return 12;     // Unimplemented
      if (st.message().rfind(kRevisionError, 0) == 0) return 11;   // OutOfRange
      if (st.message() == "etcdserver: too large lease TTL") return 11;
      return 3;  // InvalidArgument
    case StatusCode::kNotFound:
      return 5;
    case StatusCode::kAlreadyExists:
      return 9;  // etcd: "lease already exists" is FailedPrecondition
    case StatusCode::kOutOfSpace:
      return 8;  // ResourceExhausted
    case StatusCode::kTimeout:
      return 4;
    case StatusCode::kUnavailable:
      return 14;
    case StatusCode::kCancelled:
      return 1;
    case StatusCode::kPermissionDenied:
      return 7;
    default:
      return 13;  // Internal
  }
}

int HttpStatus(int grpc_code) {
  // grpc-gateway's runtime.HTTPStatusFromCode.
  switch (grpc_code) {
    case 0:
      return 200;
    case 1:
      return 408;
    case 3:
    case 9:
    case 11:
      return 400;
    case 4:
      return 504;
    case 5:
      return 404;
    case 6:
      return 409;
    case 8:
      return 429;
    case 12:
      return 501;
    case 14:
      return 503;
    default:
      return 500;
  }
}

json ErrorJson(const Status& st) {
  const std::string& msg = st.message();
  return json{{"error", msg}, {"code", GrpcCode(st)}, {"message", msg}};
}

Result<RangeRequest> ParseRange(const json& body) {
  if (!body.is_object()) return NotObject("a range request");
  RangeRequest r;
  TQDS_ASSIGN_OR_RETURN(r.range, GetRange(body));
  TQDS_ASSIGN_OR_RETURN(r.limit, GetNonNegative(body, "limit"));
  TQDS_ASSIGN_OR_RETURN(r.revision, GetNonNegative(body, "revision"));
  TQDS_ASSIGN_OR_RETURN(r.keys_only, GetBool(body, "keys_only"));
  TQDS_ASSIGN_OR_RETURN(r.count_only, GetBool(body, "count_only"));
  TQDS_ASSIGN_OR_RETURN(bool serializable, GetBool(body, "serializable"));
  (void)serializable;  // one node: every read is linearizable
  // Keys come sorted ascending; any other order is not served.
  TQDS_ASSIGN_OR_RETURN(int order, GetEnum(body, "sort_order", {"NONE", "ASCEND", "DESCEND"}));
  TQDS_ASSIGN_OR_RETURN(int target,
                        GetEnum(body, "sort_target", {"KEY", "VERSION", "CREATE", "MOD", "VALUE"}));
  if (order == 2 || (order == 1 && target != 0)) return Unsupported("range sort order");
  TQDS_RETURN_NOT_OK(RejectSet(body,
                               {"min_mod_revision", "max_mod_revision", "min_create_revision",
                                "max_create_revision"},
                               "range"));
  return r;
}

Result<PutRequest> ParsePut(const json& body) {
  if (!body.is_object()) return NotObject("a put request");
  PutRequest p;
  TQDS_ASSIGN_OR_RETURN(p.key, GetBytes(body, "key"));
  TQDS_ASSIGN_OR_RETURN(p.value, GetBytes(body, "value"));
  TQDS_ASSIGN_OR_RETURN(p.lease, GetNonNegative(body, "lease"));
  TQDS_ASSIGN_OR_RETURN(p.prev_kv, GetBool(body, "prev_kv"));
  TQDS_ASSIGN_OR_RETURN(p.ignore_value, GetBool(body, "ignore_value"));
  TQDS_ASSIGN_OR_RETURN(p.ignore_lease, GetBool(body, "ignore_lease"));
  return p;
}

Result<DeleteRequest> ParseDelete(const json& body) {
  if (!body.is_object()) return NotObject("a delete request");
  DeleteRequest d;
  TQDS_ASSIGN_OR_RETURN(d.range, GetRange(body));
  TQDS_ASSIGN_OR_RETURN(d.prev_kv, GetBool(body, "prev_kv"));
  return d;
}

Result<TxnRequest> ParseTxn(const json& body) {
  if (!body.is_object()) return NotObject("a txn request");
  TxnRequest t;
  if (auto cs = body.find("compare"); cs != body.end() && !cs->is_null()) {
    if (!cs->is_array()) return Status::Invalid("metastore: txn 'compare' is not an array");
    for (const auto& c : *cs) {
      TQDS_ASSIGN_OR_RETURN(auto parsed, ParseCompare(c));
      t.compares.push_back(std::move(parsed));
    }
  }
  TQDS_ASSIGN_OR_RETURN(t.success, ParseOps(body, "success"));
  TQDS_ASSIGN_OR_RETURN(t.failure, ParseOps(body, "failure"));
  return t;
}

Result<int64_t> ParseCompaction(const json& body) {
  if (!body.is_object()) return NotObject("a compaction request");
  return GetNonNegative(body, "revision");  // "physical" has no meaning in memory
}

Result<LeaseGrantRequest> ParseLeaseGrant(const json& body) {
  if (!body.is_object()) return NotObject("a lease grant request");
  LeaseGrantRequest g;
  TQDS_ASSIGN_OR_RETURN(g.ttl_s, GetInt(body, "TTL"));
  TQDS_ASSIGN_OR_RETURN(g.id, GetNonNegative(body, "ID"));
  return g;
}

Result<int64_t> ParseLeaseId(const json& body) {
  if (!body.is_object()) return NotObject("a lease request");
  return GetInt(body, "ID");
}

Result<WatchRequest> ParseWatch(const json& body) {
  if (!body.is_object()) return NotObject("a watch request");
  WatchRequest w;
  if (auto c = body.find("create_request"); c != body.end()) {
    if (!c->is_object()) return NotObject("create_request");
    w.kind = WatchRequestKind::kCreate;
    TQDS_ASSIGN_OR_RETURN(w.create.range, GetRange(*c));
    if (w.create.range.key.empty()) return Status::Invalid("etcdserver: key is not provided");
    TQDS_ASSIGN_OR_RETURN(w.create.start_revision, GetNonNegative(*c, "start_revision"));
    TQDS_ASSIGN_OR_RETURN(w.create.watch_id, GetNonNegative(*c, "watch_id"));
    TQDS_ASSIGN_OR_RETURN(bool progress_notify, GetBool(*c, "progress_notify"));
    (void)progress_notify;  // idle streams always get progress notifications
    TQDS_RETURN_NOT_OK(RejectSet(*c, {"prev_kv", "fragment"}, "watch"));
    if (auto f = c->find("filters"); f != c->end() && !f->is_null()) {
      if (!f->is_array()) return Status::Invalid("metastore: watch 'filters' is not an array");
      for (const auto& one : *f) {
        json holder = {{"filter", one}};
        TQDS_ASSIGN_OR_RETURN(int filter, GetEnum(holder, "filter", {"NOPUT", "NODELETE"}));
        (filter == 0 ? w.create.no_put : w.create.no_delete) = true;
      }
    }
    return w;
  }
  if (auto c = body.find("cancel_request"); c != body.end()) {
    if (!c->is_object()) return NotObject("cancel_request");
    w.kind = WatchRequestKind::kCancel;
    TQDS_ASSIGN_OR_RETURN(w.watch_id, GetInt(*c, "watch_id"));
    return w;
  }
  if (auto c = body.find("progress_request"); c != body.end()) {
    w.kind = WatchRequestKind::kProgress;
    return w;
  }
  return Status::Invalid(
      "metastore: a watch request needs create_request, cancel_request or progress_request");
}

json HeaderJson(const Header& h) {
  return json{{"cluster_id", std::to_string(h.cluster_id)},
              {"member_id", std::to_string(h.member_id)},
              {"revision", std::to_string(h.revision)},
              {"raft_term", "1"}};
}

json KeyValueJson(const KeyValue& kv) {
  json j = {{"key", codec::Base64Encode(kv.key)}};
  SetIfNonZero(&j, "create_revision", kv.create_revision);
  SetIfNonZero(&j, "mod_revision", kv.mod_revision);
  SetIfNonZero(&j, "version", kv.version);
  if (!kv.value.empty()) j["value"] = codec::Base64Encode(kv.value);
  SetIfNonZero(&j, "lease", kv.lease);
  return j;
}

namespace {

json RangeBody(const RangeResponse& r) {
  json j = json::object();
  if (!r.kvs.empty()) {
    json kvs = json::array();
    for (const auto& kv : r.kvs) kvs.push_back(KeyValueJson(kv));
    j["kvs"] = std::move(kvs);
  }
  if (r.more) j["more"] = true;
  SetIfNonZero(&j, "count", r.count);
  return j;
}

json PutBody(const PutResponse& r) {
  json j = json::object();
  if (r.prev_kv) j["prev_kv"] = KeyValueJson(*r.prev_kv);
  return j;
}

json DeleteBody(const DeleteResponse& r) {
  json j = json::object();
  SetIfNonZero(&j, "deleted", r.deleted);
  if (!r.prev_kvs.empty()) {
    json kvs = json::array();
    for (const auto& kv : r.prev_kvs) kvs.push_back(KeyValueJson(kv));
    j["prev_kvs"] = std::move(kvs);
  }
  return j;
}

}  // namespace

json RangeJson(const Header& h, const RangeResponse& r) {
  json j = RangeBody(r);
  j["header"] = HeaderJson(h);
  return j;
}

json PutJson(const Header& h, const PutResponse& r) {
  json j = PutBody(r);
  j["header"] = HeaderJson(h);
  return j;
}

json DeleteJson(const Header& h, const DeleteResponse& r) {
  json j = DeleteBody(r);
  j["header"] = HeaderJson(h);
  return j;
}

json TxnJson(const Header& h, const TxnResponse& r) {
  json j = {{"header", HeaderJson(h)}};
  if (r.succeeded) j["succeeded"] = true;
  json responses = json::array();
  for (const auto& op : r.responses) {
    json body;
    const char* name = nullptr;
    if (const auto* range = std::get_if<RangeResponse>(&op)) {
      body = RangeBody(*range);
      name = "response_range";
    } else if (const auto* put = std::get_if<PutResponse>(&op)) {
      body = PutBody(*put);
      name = "response_put";
    } else {
      body = DeleteBody(std::get<DeleteResponse>(op));
      name = "response_delete_range";
    }
    body["header"] = HeaderJson(h);
    responses.push_back(json{{name, std::move(body)}});
  }
  if (!responses.empty()) j["responses"] = std::move(responses);
  return j;
}

json StatusJson(const Header& h, const std::string& version, size_t db_size) {
  return json{{"header", HeaderJson(h)},
              {"version", version},
              {"dbSize", std::to_string(db_size)},
              {"leader", std::to_string(h.member_id)},
              {"raftIndex", std::to_string(h.revision)},
              {"raftTerm", "1"},
              {"raftAppliedIndex", std::to_string(h.revision)},
              {"dbSizeInUse", std::to_string(db_size)}};
}

json LeaseGrantJson(const Header& h, const LeaseGrant& g) {
  return json{{"header", HeaderJson(h)},
              {"ID", std::to_string(g.id)},
              {"TTL", std::to_string(g.ttl_seconds)}};
}

json LeaseKeepAliveLine(const Header& h, int64_t id, int64_t ttl) {
  json r = {{"header", HeaderJson(h)}, {"ID", std::to_string(id)}};
  SetIfNonZero(&r, "TTL", ttl);
  return StreamResult(std::move(r));
}

json LeaseTimeToLiveJson(const Header& h, int64_t id, int64_t ttl, int64_t granted) {
  json j = {{"header", HeaderJson(h)}, {"ID", std::to_string(id)}};
  SetIfNonZero(&j, "TTL", ttl);
  SetIfNonZero(&j, "grantedTTL", granted);
  return j;
}

json WatchCreatedLine(const Header& h, int64_t watch_id) {
  json r = WatchResult(h, watch_id);
  r["created"] = true;
  return StreamResult(std::move(r));
}

json WatchEventsLine(const Header& h, int64_t watch_id, const std::vector<WatchEvent>& events) {
  json r = WatchResult(h, watch_id);
  json evs = json::array();
  for (const auto& e : events) {
    json ev = {{"kv", KeyValueJson(e.kv)}};
    if (e.type == EventType::kDelete) ev["type"] = "DELETE";  // PUT is the zero value
    evs.push_back(std::move(ev));
  }
  r["events"] = std::move(evs);
  return StreamResult(std::move(r));
}

json WatchProgressLine(const Header& h, int64_t watch_id) {
  return StreamResult(WatchResult(h, watch_id));
}

json WatchCompactedLine(const Header& h, int64_t watch_id, int64_t compact_revision) {
  json r = WatchResult(h, watch_id);
  r["compact_revision"] = std::to_string(compact_revision);
  r["canceled"] = true;
  r["cancel_reason"] = "etcdserver: mvcc: required revision has been compacted";
  return StreamResult(std::move(r));
}

json WatchCanceledLine(const Header& h, int64_t watch_id, const std::string& reason) {
  json r = WatchResult(h, watch_id);
  r["canceled"] = true;
  if (!reason.empty()) r["cancel_reason"] = reason;
  return StreamResult(std::move(r));
}

}  // namespace ds::cluster::metastore::gateway
