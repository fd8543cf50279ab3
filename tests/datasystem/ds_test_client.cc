// A KVClient in its own process, for the multi-process tests:
//   ds_test_client load PORT PREFIX COUNT SIZE  -> writes, reads back, verifies; prints OK
//   ds_test_client hold PORT KEY                -> pins KEY, creates an unsealed object,
//                                                  prints HOLDING, then waits to be killed
// and, for the cluster tests (run inside network namespaces):
//   ds_test_client write HOST PORT PREFIX COUNT SIZE  -> writes PREFIX/0..COUNT-1; prints OK
//   ds_test_client read HOST PORT PREFIX COUNT SIZE [SECONDS]
//       -> reads every key one by one (for SECONDS, repeating), checks the bytes, prints
//          "OK key" / "MISS key" / "WRONG key" / "ERR key <status>" per key (first
//          round only), then "DONE ok=N miss=N wrong=N err=N max_ms=N"
//   ds_test_client probe_etcd HOST:PORT          -> exit 0 when etcd answers
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>

#include "datasystem/worker_options.h"
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

int Write(const std::string& host, int port, const std::string& prefix, int count, size_t size) {
  ds::KVClient c(host, port);
  if (auto st = c.Init(); !st.ok()) return std::printf("ERR init %s\n", st.ToString().c_str()), 1;
  for (int i = 0; i < count; ++i) {
    std::string key = prefix + "/" + std::to_string(i);
    if (auto st = c.Set(key, ValueOf(key, size)); !st.ok()) {
      return std::printf("ERR set %s %s\n", key.c_str(), st.ToString().c_str()), 1;
    }
  }
  std::printf("OK\n");
  return 0;
}

int Read(const std::string& host, int port, const std::string& prefix, int count, size_t size,
         int seconds) {
  ds::KVClient c(host, port);
  if (auto st = c.Init(); !st.ok()) return std::printf("ERR init %s\n", st.ToString().c_str()), 1;
  using Clock = std::chrono::steady_clock;
  const auto end = Clock::now() + std::chrono::seconds(seconds);
  long ok = 0, miss = 0, wrong = 0, err = 0, max_ms = 0;
  bool first = true;
  do {
    for (int i = 0; i < count; ++i) {
      std::string key = prefix + "/" + std::to_string(i);
      auto t0 = Clock::now();
      auto got = c.GetBuffers({key});
      long ms = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t0).count();
      max_ms = std::max(max_ms, ms);
      std::string line;
      if (!got.ok()) {
        ++err;
        line = "ERR " + key + " " + got.status().ToString();
      } else if (!(*got)[0]) {
        ++miss;
        line = "MISS " + key;
      } else if ((*got)[0]->view() != ValueOf(key, size)) {
        ++wrong;
        line = "WRONG " + key;
      } else {
        ++ok;
        line = "OK " + key;
      }
      if (first || line[0] == 'W') std::printf("%s\n", line.c_str());
    }
    first = false;
  } while (Clock::now() < end);
  std::printf("DONE ok=%ld miss=%ld wrong=%ld err=%ld max_ms=%ld\n", ok, miss, wrong, err, max_ms);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::string mode = argc > 1 ? argv[1] : "";
  if (mode == "load" && argc == 6) {
    return Load(std::stoi(argv[2]), argv[3], std::stoi(argv[4]), std::stoul(argv[5]));
  }
  if (mode == "hold" && argc == 4) return Hold(std::stoi(argv[2]), argv[3]);
  if (mode == "write" && argc == 7) {
    return Write(argv[2], std::stoi(argv[3]), argv[4], std::stoi(argv[5]), std::stoul(argv[6]));
  }
  if (mode == "read" && (argc == 7 || argc == 8)) {
    return Read(argv[2], std::stoi(argv[3]), argv[4], std::stoi(argv[5]), std::stoul(argv[6]),
                argc == 8 ? std::stoi(argv[7]) : 0);
  }
  if (mode == "probe_etcd" && argc == 3) return ds::ProbeEtcd(argv[2], 500).ok() ? 0 : 1;
  std::fprintf(stderr, "usage: ds_test_client load PORT PREFIX COUNT SIZE | hold PORT KEY\n");
  return 2;
}
