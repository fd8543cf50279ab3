// etcd v3 JSON-gateway codec: request builders and response parsers.
#include "datasystem/cluster/etcd_codec.h"

#include <array>

namespace ds::cluster::codec {

using nlohmann::json;
using tqds::Result;
using tqds::Status;

namespace {

constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

constexpr std::array<int8_t, 256> MakeDecodeTable() {
  std::array<int8_t, 256> t{};
  for (auto& v : t) v = -1;
  for (int i = 0; i < 64; ++i) t[static_cast<unsigned char>(kAlphabet[i])] = static_cast<int8_t>(i);
  return t;
}
constexpr auto kDecode = MakeDecodeTable();

json RangeEndFields(std::string_view key, bool prefix) {
  json j = {{"key", Base64Encode(key)}};
  if (prefix) j["range_end"] = Base64Encode(PrefixRangeEnd(key));
  return j;
}

const char* CompareTarget(Compare::Target t) {
  switch (t) {
    case Compare::Target::kVersion:
      return "VERSION";
    case Compare::Target::kCreateRevision:
      return "CREATE";
    case Compare::Target::kModRevision:
      return "MOD";
    case Compare::Target::kValue:
      return "VALUE";
    case Compare::Target::kLease:
      return "LEASE";
  }
  return "CREATE";
}

const char* CompareOp(Compare::Op op) {
  switch (op) {
    case Compare::Op::kEqual:
      return "EQUAL";
    case Compare::Op::kGreater:
      return "GREATER";
    case Compare::Op::kLess:
      return "LESS";
    case Compare::Op::kNotEqual:
      return "NOT_EQUAL";
  }
  return "EQUAL";
}

json CompareJson(const Compare& c) {
  json j = {{"key", Base64Encode(c.key)},
            {"target", CompareTarget(c.target)},
            {"result", CompareOp(c.op)}};
  switch (c.target) {
    case Compare::Target::kVersion:
      j["version"] = std::to_string(c.number);
      break;
    case Compare::Target::kCreateRevision:
      j["create_revision"] = std::to_string(c.number);
      break;
    case Compare::Target::kModRevision:
      j["mod_revision"] = std::to_string(c.number);
      break;
    case Compare::Target::kValue:
      j["value"] = Base64Encode(c.value);
      break;
    case Compare::Target::kLease:
      j["lease"] = std::to_string(c.number);
      break;
  }
  return j;
}

json OpJson(const TxnOp& op) {
  switch (op.type) {
    case TxnOp::Type::kPut:
      return {{"request_put", PutRequest(op.key, op.value, op.lease)}};
    case TxnOp::Type::kDelete:
      return {{"request_delete_range", DeleteRequest(op.key, op.prefix)}};
    case TxnOp::Type::kGet:
      return {{"request_range", RangeRequest(op.key, op.prefix)}};
  }
  return json::object();
}

Result<uint64_t> GetUint64(const json& obj, const char* field) {
  auto it = obj.find(field);
  if (it == obj.end()) return uint64_t{0};
  try {
    if (it->is_string()) return static_cast<uint64_t>(std::stoull(it->get<std::string>()));
    if (it->is_number_unsigned()) return it->get<uint64_t>();
    if (it->is_number_integer()) return static_cast<uint64_t>(it->get<int64_t>());
  } catch (const std::exception&) {
  }
  return Status::Invalid("etcd response field '", field, "' is not an integer: ", it->dump());
}

Result<std::string> GetBytes(const json& obj, const char* field) {
  auto it = obj.find(field);
  if (it == obj.end()) return std::string();
  if (!it->is_string()) return Status::Invalid("etcd response field '", field, "' is not a string");
  return Base64Decode(it->get_ref<const std::string&>());
}

}  // namespace

std::string Base64Encode(std::string_view in) {
  std::string out;
  out.reserve((in.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 3 <= in.size(); i += 3) {
    uint32_t v = (uint32_t(uint8_t(in[i])) << 16) | (uint32_t(uint8_t(in[i + 1])) << 8) |
                 uint32_t(uint8_t(in[i + 2]));
    out.push_back(kAlphabet[(v >> 18) & 63]);
    out.push_back(kAlphabet[(v >> 12) & 63]);
    out.push_back(kAlphabet[(v >> 6) & 63]);
    out.push_back(kAlphabet[v & 63]);
  }
  size_t rest = in.size() - i;
  if (rest > 0) {
    uint32_t v = uint32_t(uint8_t(in[i])) << 16;
    if (rest == 2) v |= uint32_t(uint8_t(in[i + 1])) << 8;
    out.push_back(kAlphabet[(v >> 18) & 63]);
    out.push_back(kAlphabet[(v >> 12) & 63]);
    out.push_back(rest == 2 ? kAlphabet[(v >> 6) & 63] : '=');
    out.push_back('=');
  }
  return out;
}

Result<std::string> Base64Decode(std::string_view in) {
  if (in.size() % 4 != 0)
    return Status::Invalid("base64: length ", in.size(), " is not a multiple of 4");
  std::string out;
  out.reserve(in.size() / 4 * 3);
  for (size_t i = 0; i < in.size(); i += 4) {
    int pad = 0;
    uint32_t v = 0;
    for (size_t k = 0; k < 4; ++k) {
      char c = in[i + k];
      if (c == '=' && i + 4 == in.size() && k >= 2) {
        ++pad;
        v <<= 6;
        continue;
      }
      int8_t d = kDecode[static_cast<unsigned char>(c)];
      if (d < 0 || pad > 0) return Status::Invalid("base64: bad character at offset ", i + k);
      v = (v << 6) | uint32_t(d);
    }
    out.push_back(char((v >> 16) & 0xff));
    if (pad < 2) out.push_back(char((v >> 8) & 0xff));
    if (pad < 1) out.push_back(char(v & 0xff));
  }
  return out;
}

std::string PrefixRangeEnd(std::string_view prefix) {
  std::string end(prefix);
  while (!end.empty()) {
    auto last = static_cast<unsigned char>(end.back());
    if (last < 0xff) {
      end.back() = static_cast<char>(last + 1);
      return end;
    }
    end.pop_back();
  }
  return std::string(1, '\0');
}

Result<int64_t> GetInt64(const json& obj, const char* field) {
  auto it = obj.find(field);
  if (it == obj.end()) return int64_t{0};
  try {
    if (it->is_string()) return static_cast<int64_t>(std::stoll(it->get<std::string>()));
    if (it->is_number_integer()) return it->get<int64_t>();
  } catch (const std::exception&) {
  }
  return Status::Invalid("etcd response field '", field, "' is not an integer: ", it->dump());
}

json RangeRequest(std::string_view key, bool prefix) { return RangeEndFields(key, prefix); }

json PutRequest(std::string_view key, std::string_view value, int64_t lease) {
  json j = {{"key", Base64Encode(key)}, {"value", Base64Encode(value)}};
  if (lease != 0) j["lease"] = std::to_string(lease);
  return j;
}

json DeleteRequest(std::string_view key, bool prefix) { return RangeEndFields(key, prefix); }

json TxnRequest(const Txn& txn) {
  json j = {{"compare", json::array()}, {"success", json::array()}, {"failure", json::array()}};
  for (const auto& c : txn.compares) j["compare"].push_back(CompareJson(c));
  for (const auto& op : txn.success) j["success"].push_back(OpJson(op));
  for (const auto& op : txn.failure) j["failure"].push_back(OpJson(op));
  return j;
}

json WatchCreateRequest(std::string_view key, bool prefix, int64_t start_revision) {
  json req = RangeEndFields(key, prefix);
  if (start_revision > 0) req["start_revision"] = std::to_string(start_revision);
  return {{"create_request", req}};
}

Status ErrorStatus(const json& body, std::string_view what) {
  if (!body.is_object())
    return Status::Invalid(what, ": etcd answered a non-object: ", body.dump());
  auto it = body.find("error");
  if (it == body.end()) return Status::OK();
  std::string message;
  if (auto m = body.find("message"); m != body.end() && m->is_string()) {
    message = m->get<std::string>();
  } else if (it->is_string()) {
    message = it->get<std::string>();
  } else {
    message = it->dump();
  }
  int64_t code = 2;
  if (auto c = body.find("code"); c != body.end() && c->is_number_integer())
    code = c->get<int64_t>();
  // gRPC status codes (google.golang.org/grpc/codes).
  switch (code) {
    case 3:
      return Status::Invalid(what, ": ", message);
    case 4:
      return Status::Timeout(what, ": ", message);
    case 5:
      return Status::NotFound(what, ": ", message);
    case 6:
      return Status::AlreadyExists(what, ": ", message);
    case 1:
      return Status::Cancelled(what, ": ", message);
    case 8:
      return Status::OutOfSpace(what, ": ", message);
    case 11:
      return Status::Invalid(what, ": ", message);  // out of range: compacted / future revision
    case 14:
      return Status::Unavailable(what, ": ", message);
    default:
      return Status::IOError(what, ": etcd error (gRPC code ", code, "): ", message);
  }
}

Result<KeyValue> ParseKeyValue(const json& j) {
  if (!j.is_object()) return Status::Invalid("etcd kv is not an object");
  KeyValue kv;
  TQDS_ASSIGN_OR_RETURN(kv.key, GetBytes(j, "key"));
  TQDS_ASSIGN_OR_RETURN(kv.value, GetBytes(j, "value"));
  TQDS_ASSIGN_OR_RETURN(kv.create_revision, GetInt64(j, "create_revision"));
  TQDS_ASSIGN_OR_RETURN(kv.mod_revision, GetInt64(j, "mod_revision"));
  TQDS_ASSIGN_OR_RETURN(kv.version, GetInt64(j, "version"));
  TQDS_ASSIGN_OR_RETURN(kv.lease, GetInt64(j, "lease"));
  return kv;
}

Result<int64_t> ParseHeaderRevision(const json& body) {
  auto h = body.find("header");
  if (h == body.end() || !h->is_object()) return Status::Invalid("etcd response lacks a header");
  return GetInt64(*h, "revision");
}

Result<RangeResult> ParseRange(const json& body) {
  RangeResult r;
  TQDS_ASSIGN_OR_RETURN(r.revision, ParseHeaderRevision(body));
  if (auto kvs = body.find("kvs"); kvs != body.end()) {
    if (!kvs->is_array()) return Status::Invalid("etcd range: kvs is not an array");
    for (const auto& j : *kvs) {
      TQDS_ASSIGN_OR_RETURN(auto kv, ParseKeyValue(j));
      r.kvs.push_back(std::move(kv));
    }
  }
  return r;
}

Result<TxnResult> ParseTxn(const json& body) {
  TxnResult r;
  TQDS_ASSIGN_OR_RETURN(r.revision, ParseHeaderRevision(body));
  if (auto s = body.find("succeeded"); s != body.end() && s->is_boolean())
    r.succeeded = s->get<bool>();
  if (auto rs = body.find("responses"); rs != body.end() && rs->is_array()) {
    for (const auto& op : *rs) {
      auto range = op.find("response_range");
      if (range == op.end()) continue;
      RangeResult rr;
      if (auto kvs = range->find("kvs"); kvs != range->end() && kvs->is_array()) {
        for (const auto& j : *kvs) {
          TQDS_ASSIGN_OR_RETURN(auto kv, ParseKeyValue(j));
          rr.kvs.push_back(std::move(kv));
        }
      }
      rr.revision = r.revision;
      r.gets.push_back(std::move(rr));
    }
  }
  return r;
}

Result<LeaseGrant> ParseLeaseGrant(const json& body) {
  LeaseGrant g;
  TQDS_ASSIGN_OR_RETURN(g.id, GetInt64(body, "ID"));
  TQDS_ASSIGN_OR_RETURN(g.ttl_seconds, GetInt64(body, "TTL"));
  if (g.id == 0) return Status::Invalid("etcd lease grant: no lease ID in ", body.dump());
  return g;
}

Result<int64_t> ParseKeepAliveTtl(const json& line, int64_t lease) {
  auto res = line.find("result");
  const json& r = res == line.end() ? line : *res;
  TQDS_ASSIGN_OR_RETURN(int64_t ttl, GetInt64(r, "TTL"));
  if (ttl <= 0) return Status::NotFound("etcd lease ", lease, " not found (expired or revoked)");
  return ttl;
}

Result<ServerStatus> ParseServerStatus(const json& body) {
  ServerStatus s;
  if (auto v = body.find("version"); v != body.end() && v->is_string())
    s.version = v->get<std::string>();
  TQDS_ASSIGN_OR_RETURN(s.leader, GetUint64(body, "leader"));
  TQDS_ASSIGN_OR_RETURN(s.revision, ParseHeaderRevision(body));
  if (auto h = body.find("header"); h != body.end() && h->is_object()) {
    TQDS_ASSIGN_OR_RETURN(s.cluster_id, GetUint64(*h, "cluster_id"));
  }
  return s;
}

Result<WatchMessage> ParseWatchLine(const json& line) {
  if (!line.is_object()) return Status::Invalid("etcd watch: line is not an object");
  if (auto err = line.find("error"); err != line.end()) {
    // Streams carry {"error":{"grpc_code":..,"message":..}}; unary calls the flat form.
    json flat = line;
    if (err->is_object()) {
      flat = {{"error", err->value("message", err->dump())},
              {"message", err->value("message", err->dump())},
              {"code", err->value("grpc_code", 2)}};
    }
    TQDS_RETURN_NOT_OK(ErrorStatus(flat, "etcd watch"));
    return Status::IOError("etcd watch: error line ", line.dump());
  }
  auto res = line.find("result");
  if (res == line.end() || !res->is_object()) {
    return Status::Invalid("etcd watch: line without result: ", line.dump());
  }
  const json& r = *res;
  WatchMessage m;
  if (auto c = r.find("created"); c != r.end() && c->is_boolean()) m.created = c->get<bool>();
  if (auto c = r.find("canceled"); c != r.end() && c->is_boolean()) m.canceled = c->get<bool>();
  if (auto c = r.find("cancel_reason"); c != r.end() && c->is_string())
    m.cancel_reason = c->get<std::string>();
  TQDS_ASSIGN_OR_RETURN(m.compact_revision, GetInt64(r, "compact_revision"));
  if (auto h = r.find("header"); h != r.end() && h->is_object()) {
    TQDS_ASSIGN_OR_RETURN(m.header_revision, GetInt64(*h, "revision"));
    TQDS_ASSIGN_OR_RETURN(m.cluster_id, GetUint64(*h, "cluster_id"));
  }
  if (auto evs = r.find("events"); evs != r.end() && evs->is_array()) {
    for (const auto& e : *evs) {
      WatchEvent ev;
      auto type = e.find("type");
      if (type != e.end() && type->is_string()) {
        const auto& t = type->get_ref<const std::string&>();
        if (t == "DELETE") {
          ev.type = EventType::kDelete;
        } else if (t != "PUT") {
          return Status::Invalid("etcd watch: unknown event type '", t, "'");
        }
      }
      auto kv = e.find("kv");
      if (kv == e.end()) return Status::Invalid("etcd watch: event without kv");
      TQDS_ASSIGN_OR_RETURN(ev.kv, ParseKeyValue(*kv));
      m.events.push_back(std::move(ev));
    }
  }
  return m;
}

}  // namespace ds::cluster::codec
