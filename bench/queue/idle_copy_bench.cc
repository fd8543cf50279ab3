// idle_copy_bench: what a pause costs the next large copy on this machine.
// peer_bench, by upstream's perftest method, sleeps 0.3 s before each put
// and get; a put copies the batch into the datasystem's shared memory
// (non-temporal stores, two threads, as YuanrongStorageManager does). This
// program times that copy of the same bytes back to back and after a
// pause, with 4 KiB pages (a memfd, as the worker's arena) and with 2 MiB
// transparent huge pages on both sides, next to a loop of arithmetic that
// touches no memory. A program, not a test:
//
//   idle_copy_bench [--mib 64] [--threads 2] [--pause-ms 300] [--iters 15] [--json FILE]
//
// Each row is the median of --iters copies (each into the other half of a
// destination twice the size, so no copy finds the last one's lines).
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "common/stream_copy.h"

namespace {

using Clock = std::chrono::steady_clock;
constexpr size_t kHuge = 2u << 20;

struct Options {
  size_t mib = 64;
  size_t threads = 2;
  size_t pause_ms = 300;
  int iters = 15;
  std::string json;
};

[[noreturn]] void Usage(const char* why) {
  std::fprintf(stderr,
               "idle_copy_bench: %s\nusage: idle_copy_bench [--mib N] [--threads T] [--pause-ms MS] "
               "[--iters I] [--json FILE]\n",
               why);
  std::exit(2);
}

Options Parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (i + 1 >= argc) Usage(("missing value after " + a).c_str());
    const char* v = argv[++i];
    char* end = nullptr;
    const unsigned long long n = std::strtoull(v, &end, 10);
    const bool number = end != v && *end == '\0';
    if (a == "--json") {
      o.json = v;
    } else if (!number) {
      Usage(("not a number: " + a + " " + v).c_str());
    } else if (a == "--mib" && n >= 1 && n <= 4096) {
      o.mib = n;
    } else if (a == "--threads" && n >= 1 && n <= 64) {
      o.threads = n;
    } else if (a == "--pause-ms" && n <= 10000) {
      o.pause_ms = n;
    } else if (a == "--iters" && n >= 1 && n <= 1000) {
      o.iters = static_cast<int>(n);
    } else {
      Usage(("unknown option or value out of range: " + a + " " + v).c_str());
    }
  }
  return o;
}

enum class Pages { kShared4K, kAnon4K, kAnonHuge };

// A mapping of `n` bytes, every page written once: a memfd (shared memory,
// as the worker's arena), or anonymous memory (the caller's tensor) with
// transparent huge pages refused or asked for (2 MiB aligned).
uint8_t* Map(size_t n, Pages pages) {
  uint8_t* a = nullptr;
  if (pages == Pages::kShared4K) {
    const int fd = ::memfd_create("idle_copy_bench", MFD_CLOEXEC);
    if (fd < 0 || ::ftruncate(fd, static_cast<off_t>(n)) != 0) return nullptr;
    void* p = ::mmap(nullptr, n, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    ::close(fd);
    if (p == MAP_FAILED) return nullptr;
    a = static_cast<uint8_t*>(p);
  } else {
    // Rounded up to whole huge pages; the slack stays mapped until exit.
    void* p = ::mmap(nullptr, n + kHuge, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return nullptr;
    a = reinterpret_cast<uint8_t*>((reinterpret_cast<uintptr_t>(p) + kHuge - 1) & ~(kHuge - 1));
    ::madvise(a, n, pages == Pages::kAnonHuge ? MADV_HUGEPAGE : MADV_NOHUGEPAGE);
  }
  std::memset(a, 1, n);
  return a;
}

// Huge pages this process holds (AnonHugePages of /proc/self/smaps_rollup), in KiB.
long HugeKiB() {
  std::ifstream f("/proc/self/smaps_rollup");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("AnonHugePages:", 0) == 0) return std::strtol(line.c_str() + 14, nullptr, 10);
  }
  return 0;
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Milliseconds of `work` (median), each run after `pause_ms` of sleep.
double Time(const Options& o, size_t pause_ms, const std::function<void(int)>& work) {
  std::vector<double> ms;
  work(-1);  // untimed: every page touched once
  for (int i = 0; i < o.iters; ++i) {
    if (pause_ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(pause_ms));
    const auto t0 = Clock::now();
    work(i);
    ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
  }
  return Median(ms);
}

struct Row {
  std::string name;
  double ms;
  double gbps;  // 0: not a copy
  std::string note;
};

}  // namespace

int main(int argc, char** argv) {
  const Options o = Parse(argc, argv);
  const size_t n = o.mib << 20;
  std::vector<Row> rows;
  double base = 0;
  for (bool huge : {false, true}) {
    const long before = HugeKiB();
    uint8_t* src = Map(n, huge ? Pages::kAnonHuge : Pages::kAnon4K);
    uint8_t* dst = Map(2 * n, huge ? Pages::kAnonHuge : Pages::kShared4K);
    if (src == nullptr || dst == nullptr) {
      std::fprintf(stderr, "idle_copy_bench: cannot map %zu MiB\n", 3 * o.mib);
      return 1;
    }
    const long huge_kib = HugeKiB() - before;
    auto copy = [&](int i) {
      uint8_t* d = dst + (i & 1 ? n : 0);
      const size_t part = (n / o.threads) & ~size_t{63};
      std::vector<std::thread> helpers;
      for (size_t t = 1; t < o.threads; ++t) {
        const size_t off = t * part, len = t + 1 == o.threads ? n - off : part;
        helpers.emplace_back([=] { tqds::StreamCopyUnfenced(d + off, src + off, len); });
      }
      tqds::StreamCopyUnfenced(d, src, o.threads == 1 ? n : part);
      for (auto& h : helpers) h.join();
      tqds::StreamFence();
    };
    const char* pages = huge ? "2 MiB pages" : "4 KiB pages";
    std::string note;
    if (huge && huge_kib < static_cast<long>((3 * n) >> 10) / 2) {
      note = "only " + std::to_string(huge_kib >> 10) + " MiB in huge pages (transparent huge pages off?)";
    }
    for (size_t pause : {size_t{0}, o.pause_ms}) {
      const double ms = Time(o, pause, copy);
      if (!huge && pause == 0) base = ms;
      rows.push_back({std::string("copy, ") + pages + (pause ? ", after " + std::to_string(pause) + " ms idle" : ", back to back"),
                      ms, static_cast<double>(n) / (ms * 1e6), note});
    }
    ::munmap(src, n);
    ::munmap(dst, 2 * n);
  }
  volatile uint64_t x = 1;
  auto compute = [&](int) {
    for (int i = 0; i < 3000000; ++i) x = x * 6364136223846793005ULL + 1;
  };
  rows.push_back({"arithmetic only, back to back", Time(o, 0, compute), 0, ""});
  rows.push_back({"arithmetic only, after " + std::to_string(o.pause_ms) + " ms idle", Time(o, o.pause_ms, compute), 0, ""});

  std::printf("idle_copy_bench: %zu MiB, %zu threads, non-temporal stores; median of %d\n", o.mib, o.threads, o.iters);
  std::printf("%-48s %9s %8s %10s  %s\n", "row", "ms", "GB/s", "x first", "note");
  for (const Row& r : rows) {
    const bool copy = r.gbps > 0;
    std::printf("%-48s %9.3f %8s %10s  %s\n", r.name.c_str(), r.ms,
                copy ? std::to_string(r.gbps).substr(0, 6).c_str() : "-",
                copy ? std::to_string(r.ms / base).substr(0, 5).c_str() : "-", r.note.c_str());
  }
  if (!o.json.empty()) {
    std::ofstream f(o.json);
    f << "{\"mib\": " << o.mib << ", \"threads\": " << o.threads << ", \"pause_ms\": " << o.pause_ms
      << ", \"iters\": " << o.iters << ", \"rows\": [";
    for (size_t i = 0; i < rows.size(); ++i) {
      f << (i ? ", " : "") << "{\"row\": \"" << rows[i].name << "\", \"ms\": " << rows[i].ms
        << ", \"gbps\": " << rows[i].gbps << ", \"note\": \"" << rows[i].note << "\"}";
    }
    f << "]}\n";
  }
  return 0;
}
