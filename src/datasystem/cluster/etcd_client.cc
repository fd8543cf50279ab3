// EtcdClient: unary calls of the etcd v3 JSON gateway over pooled libcurl
// easy handles. The watch stream lives in etcd_watch.cc.
#include "datasystem/cluster/etcd_client.h"

#include <curl/curl.h>

#include <nlohmann/json.hpp>

#include "datasystem/cluster/curl_util.h"
#include "datasystem/cluster/etcd_codec.h"

namespace ds::cluster {

using nlohmann::json;
using tqds::Result;
using tqds::Status;

Status EtcdOptions::Validate() const {
  auto colon = address.rfind(':');
  if (address.empty() || colon == std::string::npos || colon == 0 || colon + 1 == address.size()) {
    return Status::Invalid("etcd address '", address, "' is not host:port");
  }
  if (address.find("://") != std::string::npos) {
    return Status::Invalid("etcd address '", address, "': give host:port without a scheme");
  }
  if (request_timeout.count() <= 0) return Status::Invalid("etcd request_timeout must be > 0");
  if (connect_timeout.count() <= 0) return Status::Invalid("etcd connect_timeout must be > 0");
  if (watch_retry_min.count() <= 0 || watch_retry_max < watch_retry_min) {
    return Status::Invalid("etcd watch retry: need 0 < watch_retry_min <= watch_retry_max");
  }
  return Status::OK();
}

// Idle easy handles; each keeps its connection to etcd for the next call.
struct EtcdClient::HandlePool {
  static constexpr size_t kMaxIdle = 8;
  std::mutex mu;
  std::vector<CURL*> idle;  // guarded by mu

  CURL* Acquire() {
    {
      std::lock_guard<std::mutex> lock(mu);
      if (!idle.empty()) {
        CURL* h = idle.back();
        idle.pop_back();
        return h;
      }
    }
    return curl_easy_init();
  }
  // A handle whose transfer failed is dropped with its connection.
  void Release(CURL* h, bool healthy) {
    if (healthy) {
      std::lock_guard<std::mutex> lock(mu);
      if (idle.size() < kMaxIdle) {
        idle.push_back(h);
        return;
      }
    }
    curl_easy_cleanup(h);
  }
  ~HandlePool() {
    for (CURL* h : idle) curl_easy_cleanup(h);
  }
};

EtcdClient::EtcdClient(EtcdOptions options)
    : options_(std::move(options)),
      base_url_("http://" + options_.address),
      pool_(std::make_unique<HandlePool>()) {}

EtcdClient::~EtcdClient() = default;

Result<std::unique_ptr<EtcdClient>> EtcdClient::Create(EtcdOptions options) {
  TQDS_RETURN_NOT_OK(options.Validate());
  curl::GlobalInit();
  return std::unique_ptr<EtcdClient>(new EtcdClient(std::move(options)));
}

Result<json> EtcdClient::Call(const char* path, const json& body) {
  const std::string payload = body.dump();
  const std::string url = base_url_ + path;
  std::string answer;
  char error_buffer[CURL_ERROR_SIZE] = {0};
  auto headers = curl::JsonHeaders();
  auto connect = std::min(options_.connect_timeout, options_.request_timeout);

  CURL* h = pool_->Acquire();
  if (h == nullptr) return Status::Internal("curl_easy_init failed");
  curl_easy_reset(h);  // keeps the live connection
  curl_easy_setopt(h, CURLOPT_URL, url.c_str());
  curl_easy_setopt(h, CURLOPT_POST, 1L);
  curl_easy_setopt(h, CURLOPT_POSTFIELDS, payload.data());
  curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, static_cast<long>(payload.size()));
  curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers.get());
  curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, static_cast<long>(options_.request_timeout.count()));
  curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, static_cast<long>(connect.count()));
  curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, &curl::AppendToString);
  curl_easy_setopt(h, CURLOPT_WRITEDATA, &answer);
  curl_easy_setopt(h, CURLOPT_ERRORBUFFER, error_buffer);
  CURLcode rc = curl_easy_perform(h);
  long http_code = 0;
  curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &http_code);
  curl_easy_setopt(h, CURLOPT_ERRORBUFFER, nullptr);
  pool_->Release(h, rc == CURLE_OK);
  if (rc != CURLE_OK) return curl::TransferError(rc, options_.address, path, error_buffer);

  json parsed = json::parse(answer, nullptr, /*allow_exceptions=*/false);
  if (parsed.is_discarded()) {
    return Status::IOError("etcd at ", options_.address, " ", path, ": unparsable answer (HTTP ",
                           http_code, "): ", answer.substr(0, 200));
  }
  TQDS_RETURN_NOT_OK(codec::ErrorStatus(parsed, "etcd at " + options_.address + " " + path));
  if (http_code != 200) {
    return Status::IOError("etcd at ", options_.address, " ", path, ": HTTP ", http_code, ": ",
                           answer.substr(0, 200));
  }
  return parsed;
}

Result<ServerStatus> EtcdClient::GetServerStatus() {
  TQDS_ASSIGN_OR_RETURN(json body, Call("/v3/maintenance/status", json::object()));
  return codec::ParseServerStatus(body);
}

Result<int64_t> EtcdClient::Put(const std::string& key, const std::string& value, int64_t lease) {
  TQDS_ASSIGN_OR_RETURN(json body, Call("/v3/kv/put", codec::PutRequest(key, value, lease)));
  return codec::ParseHeaderRevision(body);
}

Result<RangeResult> EtcdClient::Range(const std::string& key, bool prefix) {
  TQDS_ASSIGN_OR_RETURN(json body, Call("/v3/kv/range", codec::RangeRequest(key, prefix)));
  return codec::ParseRange(body);
}

Result<KeyValue> EtcdClient::Get(const std::string& key) {
  TQDS_ASSIGN_OR_RETURN(RangeResult r, Range(key, /*prefix=*/false));
  if (r.kvs.empty()) return Status::NotFound("etcd key '", key, "' not found");
  return std::move(r.kvs.front());
}

Result<RangeResult> EtcdClient::GetPrefix(const std::string& prefix) {
  return Range(prefix, /*prefix=*/true);
}

Result<int64_t> EtcdClient::DeleteRange(const std::string& key, bool prefix) {
  TQDS_ASSIGN_OR_RETURN(json body, Call("/v3/kv/deleterange", codec::DeleteRequest(key, prefix)));
  return codec::GetInt64(body, "deleted");
}

Result<int64_t> EtcdClient::Delete(const std::string& key) { return DeleteRange(key, false); }

Result<int64_t> EtcdClient::DeletePrefix(const std::string& prefix) {
  return DeleteRange(prefix, true);
}

Result<TxnResult> EtcdClient::Commit(const Txn& txn) {
  TQDS_ASSIGN_OR_RETURN(json body, Call("/v3/kv/txn", codec::TxnRequest(txn)));
  return codec::ParseTxn(body);
}

Result<bool> EtcdClient::PutIfAbsent(const std::string& key, const std::string& value,
                                     int64_t lease) {
  return CompareAndSwap(key, 0, value, lease);
}

Result<bool> EtcdClient::CompareAndSwap(const std::string& key, int64_t expected_mod_revision,
                                        const std::string& value, int64_t lease) {
  Txn txn;
  txn.compares.push_back(expected_mod_revision == 0
                             ? Compare::Absent(key)
                             : Compare::ModRevisionIs(key, expected_mod_revision));
  txn.success.push_back(TxnOp::Put(key, value, lease));
  TQDS_ASSIGN_OR_RETURN(TxnResult r, Commit(txn));
  return r.succeeded;
}

Status EtcdClient::Compact(int64_t revision) {
  TQDS_ASSIGN_OR_RETURN(
      json body,
      Call("/v3/kv/compaction", {{"revision", std::to_string(revision)}, {"physical", true}}));
  (void)body;
  return Status::OK();
}

Result<LeaseGrant> EtcdClient::GrantLease(int64_t ttl_seconds) {
  if (ttl_seconds <= 0) return Status::Invalid("lease TTL must be > 0 s, got ", ttl_seconds);
  TQDS_ASSIGN_OR_RETURN(json body, Call("/v3/lease/grant", {{"TTL", std::to_string(ttl_seconds)}}));
  return codec::ParseLeaseGrant(body);
}

Result<int64_t> EtcdClient::KeepAliveOnce(int64_t lease) {
  // A bidirectional stream in gRPC; one request line gives one answer line.
  TQDS_ASSIGN_OR_RETURN(json body, Call("/v3/lease/keepalive", {{"ID", std::to_string(lease)}}));
  return codec::ParseKeepAliveTtl(body, lease);
}

Status EtcdClient::RevokeLease(int64_t lease) {
  TQDS_ASSIGN_OR_RETURN(json body, Call("/v3/lease/revoke", {{"ID", std::to_string(lease)}}));
  (void)body;
  return Status::OK();
}

Result<std::unique_ptr<EtcdWatch>> EtcdClient::Watch(const std::string& key, bool prefix,
                                                     int64_t from_revision,
                                                     WatchCallbacks callbacks) {
  if (from_revision < 0) return Status::Invalid("watch from_revision must be >= 0");
  std::unique_ptr<EtcdWatch> w(
      new EtcdWatch(this, key, prefix, from_revision, std::move(callbacks)));
  w->thread_ = std::thread([raw = w.get()] { raw->Run(); });
  return w;
}

}  // namespace ds::cluster
