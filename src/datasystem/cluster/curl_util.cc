// libcurl plumbing for EtcdClient.
#include "datasystem/cluster/curl_util.h"

#include <mutex>

namespace ds::cluster::curl {

void GlobalInit() {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

HeaderList JsonHeaders() {
  curl_slist* l = curl_slist_append(nullptr, "Content-Type: application/json");
  l = curl_slist_append(l, "Expect:");
  return HeaderList(l);
}

tqds::Status TransferError(CURLcode code, std::string_view address, std::string_view path,
                           const char* error_buffer) {
  std::string detail = (error_buffer != nullptr && error_buffer[0] != '\0')
                           ? std::string(error_buffer)
                           : std::string(curl_easy_strerror(code));
  return tqds::Status::Unavailable("etcd at ", address, " unreachable (", path, "): ", detail,
                                   "; check that etcd runs there (etcd_address)");
}

size_t AppendToString(char* data, size_t size, size_t nmemb, void* userdata) {
  static_cast<std::string*>(userdata)->append(data, size * nmemb);
  return size * nmemb;
}

}  // namespace ds::cluster::curl
