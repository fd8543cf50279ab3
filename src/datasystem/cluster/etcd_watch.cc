// EtcdWatch: one /v3/watch stream (chunked JSON lines) on its own thread,
// re-opened after breaks and resynced when the history to resume is gone.
#include <curl/curl.h>

#include <nlohmann/json.hpp>

#include "common/logging.h"
#include "datasystem/cluster/curl_util.h"
#include "datasystem/cluster/etcd_client.h"
#include "datasystem/cluster/etcd_codec.h"

namespace ds::cluster {

using nlohmann::json;
using tqds::Status;

struct EtcdWatch::StreamState {
  EtcdWatch* watch = nullptr;
  std::string pending;  // bytes after the last complete line
  Status end;           // why OnLine stopped the stream
  bool stopped = false;
};

EtcdWatch::EtcdWatch(EtcdClient* client, std::string key, bool prefix, int64_t from_revision,
                     WatchCallbacks callbacks)
    : client_(client),
      key_(std::move(key)),
      prefix_(prefix),
      callbacks_(std::move(callbacks)),
      next_revision_(from_revision) {}

EtcdWatch::~EtcdWatch() { Cancel(); }

void EtcdWatch::Cancel() {
  {
    std::lock_guard<std::mutex> lock(wake_mu_);
    cancelled_.store(true);
    if (multi_ != nullptr) curl_multi_wakeup(static_cast<CURLM*>(multi_));
  }
  wake_cv_.notify_all();
  if (thread_.joinable() && thread_.get_id() != std::this_thread::get_id()) thread_.join();
}

void EtcdWatch::WaitBackoff(std::chrono::milliseconds pause) {
  std::unique_lock<std::mutex> lock(wake_mu_);
  wake_cv_.wait_for(lock, pause, [this] { return cancelled_.load(); });
}

void EtcdWatch::Report(const Status& state) {
  if (reported_once_ && state.ok() == last_state_ok_) return;
  reported_once_ = true;
  last_state_ok_ = state.ok();
  if (state.ok()) {
    SPDLOG_DEBUG("etcd watch on '{}' connected at revision {}", key_, next_revision_.load());
  } else {
    spdlog::warn("etcd watch on '{}' broke: {}; retrying", key_, state.ToString());
  }
  if (callbacks_.on_stream_state) callbacks_.on_stream_state(state);
}

Status EtcdWatch::Resync() {
  TQDS_ASSIGN_OR_RETURN(RangeResult snapshot, client_->Range(key_, prefix_));
  if (cancelled_.load()) return Status::Cancelled("watch cancelled");
  next_revision_.store(snapshot.revision + 1);
  need_resync_ = false;
  cluster_id_ = 0;
  resyncs_.fetch_add(1);
  if (callbacks_.on_resync) callbacks_.on_resync(snapshot);
  return Status::OK();
}

void EtcdWatch::Run() {
  if (next_revision_.load() == 0) need_resync_ = true;
  const auto& opts = client_->options();
  auto backoff = opts.watch_retry_min;
  while (!cancelled_.load()) {
    Status st;
    if (need_resync_) {
      st = Resync();
      if (st.ok()) continue;  // on to the stream
    } else {
      int64_t connects_before = connects_.load();
      st = RunStream();  // returns only when the stream ended
      if (cancelled_.load()) break;
      if (connects_.load() > connects_before) backoff = opts.watch_retry_min;
      if (need_resync_) {
        spdlog::info("etcd watch on '{}': {}; re-listing", key_, st.ToString());
        continue;
      }
    }
    if (cancelled_.load()) break;
    Report(st);
    WaitBackoff(backoff);
    backoff = std::min(backoff * 2, opts.watch_retry_max);
  }
}

bool EtcdWatch::OnLine(StreamState& st, const std::string& line) {
  json parsed = json::parse(line, nullptr, /*allow_exceptions=*/false);
  if (parsed.is_discarded()) {
    st.end = Status::IOError("etcd watch: unparsable line: ", line.substr(0, 200));
    return false;
  }
  auto msg = codec::ParseWatchLine(parsed);
  if (!msg.ok()) {
    st.end = msg.status();
    return false;
  }
  if (msg->cluster_id != 0 && cluster_id_ != 0 && msg->cluster_id != cluster_id_) {
    need_resync_ = true;
    st.end = Status::Invalid("etcd watch: cluster id changed (etcd was replaced)");
    return false;
  }
  if (msg->canceled) {
    if (msg->compact_revision > 0) {
      need_resync_ = true;
      st.end = Status::Invalid("etcd watch: revision ", next_revision_.load(),
                               " compacted (compact_revision ", msg->compact_revision, ")");
    } else {
      st.end = Status::IOError("etcd watch canceled by etcd: ", msg->cancel_reason);
    }
    return false;
  }
  if (msg->created) {
    // An etcd whose revision is behind what we saw lost its history (restored
    // or replaced): what we hold may be stale, so start over from a snapshot.
    if (msg->header_revision + 1 < next_revision_.load()) {
      need_resync_ = true;
      st.end = Status::Invalid("etcd watch: etcd revision ", msg->header_revision,
                               " is behind the watch (", next_revision_.load() - 1,
                               "); etcd lost its history");
      return false;
    }
    if (msg->cluster_id != 0) cluster_id_ = msg->cluster_id;
    connects_.fetch_add(1);
    Report(Status::OK());
  }
  if (!msg->events.empty()) {
    int64_t last = next_revision_.load() - 1;
    for (const auto& e : msg->events) last = std::max(last, e.kv.mod_revision);
    next_revision_.store(last + 1);
    if (callbacks_.on_events) callbacks_.on_events(msg->events);
  }
  return true;
}

Status EtcdWatch::RunStream() {
  StreamState st;
  st.watch = this;
  const std::string url = "http://" + client_->address() + "/v3/watch";
  const std::string body = codec::WatchCreateRequest(key_, prefix_, next_revision_.load()).dump();
  const auto& opts = client_->options();
  auto headers = curl::JsonHeaders();
  char error_buffer[CURL_ERROR_SIZE] = {0};

  CURL* h = curl_easy_init();
  CURLM* m = curl_multi_init();
  if (h == nullptr || m == nullptr) {
    if (h != nullptr) curl_easy_cleanup(h);
    if (m != nullptr) curl_multi_cleanup(m);
    return Status::Internal("curl init failed");
  }
  curl_easy_setopt(h, CURLOPT_URL, url.c_str());
  curl_easy_setopt(h, CURLOPT_POST, 1L);
  curl_easy_setopt(h, CURLOPT_POSTFIELDS, body.data());
  curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, static_cast<long>(body.size()));
  curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers.get());
  curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS,
                   static_cast<long>(std::min(opts.connect_timeout, opts.request_timeout).count()));
  // No overall timeout (the stream is meant to stay open); TCP keep-alive
  // notices a peer that vanished without closing the connection.
  curl_easy_setopt(h, CURLOPT_TCP_KEEPALIVE, 1L);
  curl_easy_setopt(h, CURLOPT_TCP_KEEPIDLE, 2L);
  curl_easy_setopt(h, CURLOPT_TCP_KEEPINTVL, 1L);
  curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, &EtcdWatch::OnBytes);
  curl_easy_setopt(h, CURLOPT_WRITEDATA, &st);
  curl_easy_setopt(h, CURLOPT_ERRORBUFFER, error_buffer);
  curl_multi_add_handle(m, h);
  {
    std::lock_guard<std::mutex> lock(wake_mu_);
    multi_ = m;
  }

  CURLcode result = CURLE_OK;
  bool finished = false;
  while (!cancelled_.load() && !finished) {
    int running = 0;
    CURLMcode mc = curl_multi_perform(m, &running);
    if (mc != CURLM_OK) {
      st.end = Status::IOError("etcd watch: ", curl_multi_strerror(mc));
      break;
    }
    int queued = 0;
    while (CURLMsg* msg = curl_multi_info_read(m, &queued)) {
      if (msg->msg == CURLMSG_DONE) {
        result = msg->data.result;
        finished = true;
      }
    }
    if (finished || cancelled_.load()) break;
    curl_multi_poll(m, nullptr, 0, 1000, nullptr);
  }

  {
    std::lock_guard<std::mutex> lock(wake_mu_);
    multi_ = nullptr;
  }
  curl_multi_remove_handle(m, h);
  curl_easy_cleanup(h);
  curl_multi_cleanup(m);

  if (cancelled_.load()) return Status::Cancelled("watch cancelled");
  if (st.stopped) return st.end;
  if (!st.end.ok()) return st.end;
  if (finished && result != CURLE_OK) {
    return curl::TransferError(result, client_->address(), "/v3/watch", error_buffer);
  }
  return Status::Unavailable("etcd at ", client_->address(), " closed the watch stream");
}

size_t EtcdWatch::OnBytes(char* data, size_t size, size_t nmemb, void* userdata) {
  auto* st = static_cast<StreamState*>(userdata);
  st->pending.append(data, size * nmemb);
  size_t start = 0;
  size_t nl;
  while ((nl = st->pending.find('\n', start)) != std::string::npos) {
    std::string line = st->pending.substr(start, nl - start);
    start = nl + 1;
    if (line.find_first_not_of(" \r\t") == std::string::npos) continue;
    if (!st->watch->OnLine(*st, line)) {
      st->stopped = true;
      return 0;  // aborts the transfer
    }
  }
  st->pending.erase(0, start);
  return size * nmemb;
}

}  // namespace ds::cluster
