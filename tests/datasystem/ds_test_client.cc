// A KVClient in its own process, for the multi-process tests:
//   ds_test_client load PORT PREFIX COUNT SIZE  -> writes, reads back, verifies; prints OK
//   ds_test_client hold PORT KEY                -> pins KEY, creates an unsealed object,
//                                                  prints HOLDING, then waits to be killed
#include <unistd.h>

#include <cstdio>
#include <string>

#include "ds/kv_client.h"

namespace {

std::string ValueOf(const std::string& key, size_t size) {
  std::string v(size, '\0');
  for (size_t i = 0; i < size; ++i) v[i] = static_cast<char>(key[i % key.size()] + i);
  return v;
}

int Load(int port, const std::string& prefix, int count, size_t size) {
  ds::KVClient c("127.0.0.1", port);
  if (auto st = c.Init(); !st.ok()) return std::printf("ERR init %s\n", st.ToString().c_str()), 1;
  const int batch = 500;
  for (int b = 0; b < count; b += batch) {
    std::vector<std::string> keys;
    std::vector<std::string> values;
    for (int i = b; i < std::min(count, b + batch); ++i) {
      keys.push_back(prefix + "/" + std::to_string(i));
      values.push_back(ValueOf(keys.back(), size));
    }
    std::vector<std::string_view> views(values.begin(), values.end());
    if (auto st = c.MSet(keys, views); !st.ok()) return std::printf("ERR mset %s\n", st.ToString().c_str()), 1;
    auto got = c.MGet(keys);
    if (!got.ok()) return std::printf("ERR mget %s\n", got.status().ToString().c_str()), 1;
    auto bufs = c.GetBuffers(keys);
    if (!bufs.ok()) return std::printf("ERR getbuffers\n"), 1;
    for (size_t i = 0; i < keys.size(); ++i) {
      if (!(*got)[i] || *(*got)[i] != values[i]) return std::printf("ERR mismatch %s\n", keys[i].c_str()), 1;
      if (!(*bufs)[i] || (*bufs)[i]->view() != values[i]) return std::printf("ERR view %s\n", keys[i].c_str()), 1;
    }
  }
  std::printf("OK\n");
  return 0;
}

int Hold(int port, const std::string& key) {
  ds::KVClient c("127.0.0.1", port);
  if (auto st = c.Init(); !st.ok()) return std::printf("ERR init %s\n", st.ToString().c_str()), 1;
  auto bufs = c.GetBuffers({key});
  if (!bufs.ok() || !(*bufs)[0]) return std::printf("ERR get\n"), 1;
  auto created = c.MCreate({key + "_unsealed"}, {1 << 20});
  if (!created.ok()) return std::printf("ERR create\n"), 1;
  std::printf("HOLDING\n");
  std::fflush(stdout);
  while (true) ::pause();
}

}  // namespace

int main(int argc, char** argv) {
  std::string mode = argc > 1 ? argv[1] : "";
  if (mode == "load" && argc == 6) {
    return Load(std::stoi(argv[2]), argv[3], std::stoi(argv[4]), std::stoul(argv[5]));
  }
  if (mode == "hold" && argc == 4) return Hold(std::stoi(argv[2]), argv[3]);
  std::fprintf(stderr, "usage: ds_test_client load PORT PREFIX COUNT SIZE | hold PORT KEY\n");
  return 2;
}
