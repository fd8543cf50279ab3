// libcurl plumbing shared by EtcdClient's unary calls and watch streams:
// one-time global init, a request header list, and mapping a transport
// failure to Unavailable naming the etcd address.
#pragma once

#include <curl/curl.h>

#include <memory>
#include <string>
#include <string_view>

#include "tqds/status.h"

namespace ds::cluster::curl {

// curl_global_init exactly once per process (thread-safe).
void GlobalInit();

struct SlistDeleter {
  void operator()(curl_slist* l) const { curl_slist_free_all(l); }
};
using HeaderList = std::unique_ptr<curl_slist, SlistDeleter>;

// "Content-Type: application/json" and no "Expect: 100-continue".
HeaderList JsonHeaders();

// Status for a failed transfer to etcd at `address`.
tqds::Status TransferError(CURLcode code, std::string_view address, std::string_view path,
                           const char* error_buffer);

// Appends the received bytes to the std::string* in `userdata`.
size_t AppendToString(char* data, size_t size, size_t nmemb, void* userdata);

}  // namespace ds::cluster::curl
