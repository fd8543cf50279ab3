// ds_kv_ops_bench: times the ds::KVClient operations that the Python client
// binds (set, get, mset, mget, mcreate + fill + mset_buffer, get_buffers)
// and memcpy of the same bytes, for two shapes: 1000 keys of 4 KiB ("small")
// and one key of 64 MiB ("large"), against a worker started by the caller.
// It is the C++ half of bench/python/ds_py_bench.py, which runs the same
// protocol through the Python client and compares the two.
//
// Usage:
//   ds_kv_ops_bench --port P [--host H] [--reps N] [--no-cow]
//       runs every op x shape and prints one JSON object per line;
//   ds_kv_ops_bench --port P --serve
//       reads "OP SHAPE REPS" lines from stdin and answers each with one
//       JSON line (so that a driver can interleave C++ and Python runs over
//       one warm client); "quit" or end of input stops it.
// Each JSON line: {"op", "shape", "keys", "bytes", "times_s": [per rep],
// "faults_per_rep": minor page faults in the timed region; for mcreate also
// "parts_s": {"mcreate", "fill", "mset_buffer": [per rep]}, its three steps}; a
// rep times the whole op over the shape (e.g. 1000 Set calls, or one MSet of
// 1000 keys). Untimed: before each rep of a write op the keys are deleted;
// before the reps of a read op they are written once. Two untimed warm-up
// reps run first. Values are built
// once, outside the timed region. Results are dropped inside it (as a
// Python caller drops them), e.g. a Get's string or GetBuffers' views.
//
// The client uses default ClientOptions with copy-on-write views, as the
// Python package does (it calls ds::EnableCopyOnWriteViews at import);
// --no-cow turns that off.
#include <sys/resource.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <functional>
#include <iostream>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "ds/kv_client.h"

namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

void Check(const tqds::Status& st, const char* what) {
  if (!st.ok()) throw std::runtime_error(std::string(what) + ": " + st.ToString());
}

// The keys and values of one shape, built once.
struct Shape {
  std::string name;
  std::vector<std::string> keys;
  std::vector<std::string> values;
  std::vector<std::string_view> views;
  std::vector<uint64_t> sizes;
  std::vector<std::string> dst;  // memcpy destinations (warm)
  uint64_t bytes = 0;
};

Shape MakeShape(const std::string& name, size_t n, size_t size) {
  Shape s;
  s.name = name;
  std::mt19937_64 rng(42);
  for (size_t i = 0; i < n; ++i) {
    char key[64];
    std::snprintf(key, sizeof(key), "kvops/%s/%06zu", name.c_str(), i);
    s.keys.emplace_back(key);
    std::string v(size, '\0');
    for (size_t j = 0; j + 8 <= size; j += 8) {
      uint64_t r = rng();
      std::memcpy(v.data() + j, &r, 8);
    }
    s.values.push_back(std::move(v));
    s.dst.emplace_back(size, '\1');
    s.sizes.push_back(size);
    s.bytes += size;
  }
  for (const auto& v : s.values) s.views.emplace_back(v);
  return s;
}

long MinorFaults() {
  rusage u{};
  ::getrusage(RUSAGE_SELF, &u);
  return u.ru_minflt;
}

class Bench {
 public:
  Bench(ds::KVClient& kv, Shape small, Shape large) : kv_(kv) {
    shapes_.push_back(std::move(small));
    shapes_.push_back(std::move(large));
  }

  const Shape& FindShape(const std::string& name) const {
    for (const auto& s : shapes_) {
      if (s.name == name) return s;
    }
    throw std::runtime_error("unknown shape '" + name + "' (small, large)");
  }

  // Runs `reps` timed reps of `op` over `shape` (after two warm-ups).
  nlohmann::json Run(const std::string& op, const std::string& shape_name, int reps) {
    Shape& s = const_cast<Shape&>(FindShape(shape_name));
    std::function<void()> prep, body;
    bool prep_each_rep = true;  // false: once, before the warm-ups (reads)
    // Per rep of mcreate (warm-ups included): the MCreate call, the fill, the MSetBuffer call.
    std::vector<std::array<double, 3>> parts;
    auto del = [&] { Check(kv_.Delete(s.keys).status(), "delete"); };
    auto ensure = [&] { Check(kv_.MSet(s.keys, s.views), "mset (prepare)"); };
    if (op == "set") {
      prep = del;
      body = [&] {
        for (size_t i = 0; i < s.keys.size(); ++i) Check(kv_.Set(s.keys[i], s.views[i]), "set");
      };
    } else if (op == "mset") {
      prep = del;
      body = [&] { Check(kv_.MSet(s.keys, s.views), "mset"); };
    } else if (op == "mcreate") {  // mcreate + fill + mset_buffer
      prep = del;
      body = [&] {
        const auto t0 = Clock::now();
        auto bufs = kv_.MCreate(s.keys, s.sizes);
        Check(bufs.status(), "mcreate");
        const auto t1 = Clock::now();
        for (size_t i = 0; i < bufs->size(); ++i) {
          std::memcpy((*bufs)[i].data(), s.values[i].data(), s.values[i].size());
        }
        const auto t2 = Clock::now();
        Check(kv_.MSetBuffer(*bufs), "mset_buffer");
        const auto t3 = Clock::now();
        parts.push_back({Seconds(t1 - t0), Seconds(t2 - t1), Seconds(t3 - t2)});
      };
    } else if (op == "get") {
      prep = ensure;
      prep_each_rep = false;
      body = [&] {
        for (const auto& k : s.keys) {
          auto v = kv_.Get(k);
          Check(v.status(), "get");
        }
      };
    } else if (op == "mget") {
      prep = ensure;
      prep_each_rep = false;
      body = [&] {
        auto v = kv_.MGet(s.keys);
        Check(v.status(), "mget");
      };
    } else if (op == "get_buffers") {
      prep = ensure;
      prep_each_rep = false;
      body = [&] {
        auto v = kv_.GetBuffers(s.keys);
        Check(v.status(), "get_buffers");
      };
    } else if (op == "memcpy") {
      prep = [] {};
      body = [&] {
        for (size_t i = 0; i < s.values.size(); ++i) {
          std::memcpy(s.dst[i].data(), s.values[i].data(), s.values[i].size());
          asm volatile("" ::"r"(s.dst[i].data()) : "memory");
        }
      };
    } else {
      throw std::runtime_error("unknown op '" + op +
                               "' (set get mset mget mcreate get_buffers memcpy)");
    }
    std::vector<double> times;
    long faults = 0;  // minor page faults inside the timed region
    for (int r = -2; r < reps; ++r) {
      if (prep_each_rep || r == -2) prep();
      const long f0 = MinorFaults();
      auto t0 = Clock::now();
      body();
      double dt = Seconds(Clock::now() - t0);
      if (r >= 0) {
        times.push_back(dt);
        faults += MinorFaults() - f0;
      }
    }
    if (op == "get" || op == "mget") Verify(s);
    nlohmann::json out = {{"op", op},
                          {"shape", s.name},
                          {"keys", s.keys.size()},
                          {"bytes", s.bytes},
                          {"times_s", times},
                          {"faults_per_rep", static_cast<double>(faults) / reps}};
    if (!parts.empty()) {  // the timed reps' parts (after the two warm-ups)
      nlohmann::json& p = out["parts_s"];
      const char* names[] = {"mcreate", "fill", "mset_buffer"};
      for (size_t k = 0; k < 3; ++k) {
        std::vector<double> v;
        for (size_t r = 2; r < parts.size(); ++r) v.push_back(parts[r][k]);
        p[names[k]] = v;
      }
    }
    return out;
  }

 private:
  // The bytes read back are the bytes written (once, untimed).
  void Verify(const Shape& s) {
    auto v = kv_.MGet(s.keys);
    Check(v.status(), "mget (verify)");
    for (size_t i = 0; i < s.keys.size(); ++i) {
      if (!(*v)[i] || *(*v)[i] != s.values[i]) {
        throw std::runtime_error("value of '" + s.keys[i] + "' read back wrong");
      }
    }
  }

  ds::KVClient& kv_;
  std::vector<Shape> shapes_;
};

int Usage() {
  std::cerr << "usage: ds_kv_ops_bench --port P [--host H] [--reps N] [--serve] [--no-cow]\n";
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  std::string host = "127.0.0.1";
  int port = 0, reps = 10;
  bool serve = false, cow = true;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--port" && i + 1 < argc) port = std::atoi(argv[++i]);
    else if (a == "--host" && i + 1 < argc) host = argv[++i];
    else if (a == "--reps" && i + 1 < argc) reps = std::atoi(argv[++i]);
    else if (a == "--serve") serve = true;
    else if (a == "--no-cow") cow = false;
    else return Usage();
  }
  if (port <= 0 || reps <= 0) return Usage();
  try {
    if (cow) ds::EnableCopyOnWriteViews();
    ds::KVClient kv(host, port);
    Check(kv.Init(), "init");
    Bench bench(kv, MakeShape("small", 1000, 4096), MakeShape("large", 1, 64u << 20));
    if (!serve) {
      for (const char* shape : {"small", "large"}) {
        for (const char* op : {"memcpy", "set", "get", "mset", "mget", "mcreate", "get_buffers"}) {
          std::cout << bench.Run(op, shape, reps).dump() << std::endl;
        }
      }
      return 0;
    }
    std::cout << R"({"ready": true})" << std::endl;
    std::string line;
    while (std::getline(std::cin, line)) {
      std::istringstream in(line);
      std::string op, shape;
      int n = 0;
      if (!(in >> op) || op == "quit") break;
      if (!(in >> shape >> n) || n <= 0) {
        std::cout << nlohmann::json{{"error", "expected: OP SHAPE REPS"}}.dump() << std::endl;
        continue;
      }
      try {
        std::cout << bench.Run(op, shape, n).dump() << std::endl;
      } catch (const std::exception& e) {
        std::cout << nlohmann::json{{"error", e.what()}}.dump() << std::endl;
      }
    }
  } catch (const std::exception& e) {
    std::cerr << "ds_kv_ops_bench: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
