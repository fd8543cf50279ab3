// ds_bench: set/get throughput and latency of the datasystem at 4 KiB,
// 64 KiB, 1 MiB and 64 MiB, next to memcpy of the same bytes and Redis
// (redis-server started and stopped here, on loopback) measured in the same
// run, with ratios. Usage: ds_bench [--json FILE] [--quick]
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "ds/kv_client.h"
#include "common/process.h"

namespace {

using Clock = std::chrono::steady_clock;

int FreePort() { return tqds::FreeLoopbackPort(); }

// A child process killed (by pid) when this goes out of scope.
struct Child {
  pid_t pid = -1;
  ~Child() {
    if (pid > 0) {
      ::kill(pid, SIGTERM);
      ::waitpid(pid, nullptr, 0);
    }
  }
};

pid_t SpawnQuiet(std::vector<std::string> argv, int keep_fd = -1) {
  pid_t pid = ::fork();
  if (pid == 0) {
    int devnull = ::open("/dev/null", O_RDWR);
    ::dup2(devnull, 1);
    ::dup2(devnull, 2);
    (void)keep_fd;
    std::vector<char*> a;
    for (auto& s : argv) a.push_back(s.data());
    a.push_back(nullptr);
    ::execvp(a[0], a.data());
    ::_exit(127);
  }
  return pid;
}

// ------------------------------------------------------------ tiny RESP client
class Redis {
 public:
  bool Connect(int port) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0) {
      ::close(fd_);
      fd_ = -1;
      return false;
    }
    int one = 1;
    ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    return true;
  }
  ~Redis() {
    if (fd_ >= 0) ::close(fd_);
  }
  static void Append(std::string& out, const std::vector<std::string_view>& args) {
    out += "*" + std::to_string(args.size()) + "\r\n";
    for (auto a : args) {
      out += "$" + std::to_string(a.size()) + "\r\n";
      out.append(a.data(), a.size());
      out += "\r\n";
    }
  }
  // Sends a SET with the value written straight from the caller's memory.
  void SendSet(std::string_view key, std::string_view value) {
    std::string head = "*3\r\n$3\r\nSET\r\n$" + std::to_string(key.size()) + "\r\n" +
                       std::string(key) + "\r\n$" + std::to_string(value.size()) + "\r\n";
    SendAll(head.data(), head.size());
    SendAll(value.data(), value.size());
    SendAll("\r\n", 2);
  }
  void SendAll(const void* p, size_t n) {
    auto* c = static_cast<const char*>(p);
    while (n > 0) {
      ssize_t w = ::send(fd_, c, n, MSG_NOSIGNAL);
      if (w <= 0) throw std::runtime_error("redis send failed");
      c += w;
      n -= static_cast<size_t>(w);
    }
  }
  // Reads one reply; returns its bulk payload (or the status line).
  std::string Reply() {
    std::string line = Line();
    if (line.empty()) throw std::runtime_error("redis: empty reply");
    if (line[0] == '-') throw std::runtime_error("redis error: " + line);
    if (line[0] != '$') return line;
    long n = std::stol(line.substr(1));
    if (n < 0) return "";
    std::string out(static_cast<size_t>(n), '\0');
    Read(out.data(), out.size());
    char crlf[2];
    Read(crlf, 2);
    return out;
  }

 private:
  void Fill() {
    buf_.erase(0, pos_);
    pos_ = 0;
    char tmp[1 << 16];
    ssize_t r = ::recv(fd_, tmp, sizeof(tmp), 0);
    if (r <= 0) throw std::runtime_error("redis connection closed");
    buf_.append(tmp, static_cast<size_t>(r));
  }
  std::string Line() {
    while (true) {
      auto e = buf_.find("\r\n", pos_);
      if (e != std::string::npos) {
        std::string l = buf_.substr(pos_, e - pos_);
        pos_ = e + 2;
        return l;
      }
      Fill();
    }
  }
  void Read(char* dst, size_t n) {
    size_t have = std::min(n, buf_.size() - pos_);
    std::memcpy(dst, buf_.data() + pos_, have);
    pos_ += have;
    dst += have;
    n -= have;
    while (n > 0) {  // large values: straight into dst
      ssize_t r = ::recv(fd_, dst, n, 0);
      if (r <= 0) throw std::runtime_error("redis connection closed");
      dst += r;
      n -= static_cast<size_t>(r);
    }
  }
  int fd_ = -1;
  std::string buf_;
  size_t pos_ = 0;
};

// ----------------------------------------------------------------- measuring
struct Row {
  std::string op, backend;
  size_t size = 0, batch = 1;
  double ops_per_s = 0, gib_per_s = 0, p50_us = 0, mean_us = 0;
};

// Runs fn (which does `batch` operations) until min_time has passed.
Row Measure(const std::string& op, const std::string& backend, size_t size, size_t batch,
            const std::function<void()>& fn, double min_time_s) {
  for (int i = 0; i < 2; ++i) fn();  // warm-up
  std::vector<double> lat;
  auto start = Clock::now();
  double total = 0;
  while ((total < min_time_s || lat.size() < 5) && lat.size() < 200000) {
    auto t0 = Clock::now();
    fn();
    double s = std::chrono::duration<double>(Clock::now() - t0).count();
    lat.push_back(s);
    total = std::chrono::duration<double>(Clock::now() - start).count();
  }
  double sum = 0;
  for (double l : lat) sum += l;
  std::sort(lat.begin(), lat.end());
  Row r{op, backend, size, batch};
  r.p50_us = lat[lat.size() / 2] * 1e6;
  r.mean_us = sum / lat.size() * 1e6;
  r.ops_per_s = static_cast<double>(lat.size() * batch) / sum;
  r.gib_per_s = r.ops_per_s * static_cast<double>(size) / (1u << 30);
  return r;
}

std::string SizeName(size_t n) {
  if (n >= (1u << 20)) return std::to_string(n >> 20) + " MiB";
  return std::to_string(n >> 10) + " KiB";
}

void Check(const tqds::Status& st, const char* what) {
  if (!st.ok()) throw std::runtime_error(std::string(what) + ": " + st.ToString());
}

}  // namespace

int main(int argc, char** argv) {
  std::string json_path;
  bool quick = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--json" && i + 1 < argc) json_path = argv[++i];
    else if (a == "--quick") quick = true;
    else {
      std::cerr << "usage: ds_bench [--json FILE] [--quick]\n";
      return 2;
    }
  }
  const double min_time = quick ? 0.1 : 0.4;
  char tmpl[] = "/tmp/dsb_XXXXXX";
  std::string dir = ::mkdtemp(tmpl);
  int ds_port = FreePort(), redis_port = FreePort();

  // The datasystem worker (readiness through its --ready_fd pipe).
  Child worker;
  {
    int p[2];
    if (::pipe(p) != 0) return 1;
    worker.pid = ::fork();
    if (worker.pid == 0) {
      ::close(p[0]);
      int devnull = ::open("/dev/null", O_WRONLY);
      ::dup2(devnull, 2);
      std::string addr = "127.0.0.1:" + std::to_string(ds_port), fd = std::to_string(p[1]);
      ::execl(DS_WORKER_BIN, DS_WORKER_BIN, "--worker_address", addr.c_str(), "--unix_socket_dir",
              dir.c_str(), "--shared_memory_size_mb", "1024", "--populate_memory", "--ready_fd",
              fd.c_str(), static_cast<char*>(nullptr));
      ::_exit(127);
    }
    ::close(p[1]);
    char line[256] = {0};
    ssize_t n = ::read(p[0], line, sizeof(line) - 1);
    ::close(p[0]);
    if (n <= 0 || std::strncmp(line, "READY", 5) != 0) {
      std::cerr << "worker failed: " << line << "\n";
      return 1;
    }
  }
  // Redis, no persistence; ready when it answers PING.
  Child redis_proc;
  redis_proc.pid = SpawnQuiet({"redis-server", "--port", std::to_string(redis_port), "--bind",
                               "127.0.0.1", "--save", "", "--appendonly", "no", "--daemonize", "no"});
  Redis redis;
  auto deadline = Clock::now() + std::chrono::seconds(10);
  while (!redis.Connect(redis_port)) {
    if (Clock::now() > deadline) {
      std::cerr << "redis-server did not start\n";
      return 1;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));  // nothing to observe but the port
  }
  {
    std::string ping;
    Redis::Append(ping, {"PING"});
    redis.SendAll(ping.data(), ping.size());
    redis.Reply();
  }

  ds::ClientOptions copts;
  copts.populate_mapping = true;
  ds::KVClient kv("127.0.0.1", ds_port, copts);
  Check(kv.Init(), "init");

  std::vector<Row> rows;
  const std::vector<size_t> sizes = {4u << 10, 64u << 10, 1u << 20, 64u << 20};
  for (size_t size : sizes) {
    std::string src(size, 'x'), dst(size, 'y');
    for (size_t i = 0; i < size; i += 4096) src[i] = static_cast<char>(i);
    rows.push_back(Measure("copy", "memcpy", size, 1, [&] {
      std::memcpy(dst.data(), src.data(), size);
      asm volatile("" ::"r"(dst.data()) : "memory");
    }, min_time));
    const std::string key = "bench/" + std::to_string(size);
    rows.push_back(Measure("set", "ds Set", size, 1, [&] { Check(kv.Set(key, src), "set"); }, min_time));
    rows.push_back(Measure("set", "ds MCreate+fill+MSetBuffer", size, 1, [&] {
      auto b = kv.MCreate({key}, {size});
      Check(b.status(), "mcreate");
      std::memcpy((*b)[0].data(), src.data(), size);
      Check(kv.MSetBuffer(*b), "msetbuffer");
    }, min_time));
    rows.push_back(Measure("get", "ds Get (copy)", size, 1, [&] {
      auto v = kv.Get(key);
      Check(v.status(), "get");
    }, min_time));
    rows.push_back(Measure("get", "ds GetBuffers (zero-copy)", size, 1, [&] {
      auto v = kv.GetBuffers({key});
      Check(v.status(), "getbuffers");
      if (!(*v)[0] || (*v)[0]->size() != size) throw std::runtime_error("bad view");
    }, min_time));
    rows.push_back(Measure("set", "redis SET", size, 1, [&] {
      redis.SendSet(key, src);
      redis.Reply();
    }, min_time));
    rows.push_back(Measure("get", "redis GET", size, 1, [&] {
      std::string cmd;
      Redis::Append(cmd, {"GET", key});
      redis.SendAll(cmd.data(), cmd.size());
      if (redis.Reply().size() != size) throw std::runtime_error("redis GET size");
    }, min_time));
    std::string del;
    Redis::Append(del, {"DEL", key});
    redis.SendAll(del.data(), del.size());
    redis.Reply();
  }
  // Batched 4 KiB: one request per batch (ds) vs one pipelined burst (Redis).
  const size_t kBatch = 1000, kSmall = 4096;
  std::vector<std::string> keys;
  for (size_t i = 0; i < kBatch; ++i) keys.push_back("batch/" + std::to_string(i));
  std::string value(kSmall, 'v');
  std::vector<std::string_view> values(kBatch, value);
  std::vector<uint64_t> bsizes(kBatch, kSmall);
  rows.push_back(Measure("batch set", "ds MSet", kSmall, kBatch, [&] { Check(kv.MSet(keys, values), "mset"); }, min_time));
  rows.push_back(Measure("batch set", "ds MCreate+fill+MSetBuffer", kSmall, kBatch, [&] {
    auto b = kv.MCreate(keys, bsizes);
    Check(b.status(), "mcreate");
    for (auto& w : *b) std::memcpy(w.data(), value.data(), kSmall);
    Check(kv.MSetBuffer(*b), "msetbuffer");
  }, min_time));
  rows.push_back(Measure("batch get", "ds MGet (copy)", kSmall, kBatch, [&] { Check(kv.MGet(keys).status(), "mget"); }, min_time));
  rows.push_back(Measure("batch get", "ds GetBuffers (zero-copy)", kSmall, kBatch, [&] {
    Check(kv.GetBuffers(keys).status(), "getbuffers");
  }, min_time));
  rows.push_back(Measure("batch set", "redis pipelined SET", kSmall, kBatch, [&] {
    std::string cmds;
    cmds.reserve(kBatch * (kSmall + 64));
    for (const auto& k : keys) Redis::Append(cmds, {"SET", k, value});
    redis.SendAll(cmds.data(), cmds.size());
    for (size_t i = 0; i < kBatch; ++i) redis.Reply();
  }, min_time));
  rows.push_back(Measure("batch get", "redis pipelined GET", kSmall, kBatch, [&] {
    std::string cmds;
    for (const auto& k : keys) Redis::Append(cmds, {"GET", k});
    redis.SendAll(cmds.data(), cmds.size());
    for (size_t i = 0; i < kBatch; ++i) redis.Reply();
  }, min_time));

  // ------------------------------------------------------------------ report
  std::map<std::pair<std::string, size_t>, double> memcpy_gib;
  std::map<std::string, double> redis_ops;
  for (const auto& r : rows) {
    if (r.backend == "memcpy") memcpy_gib[{"", r.size}] = r.gib_per_s;
    if (r.backend.rfind("redis", 0) == 0) redis_ops[r.op + std::to_string(r.size) + "/" + std::to_string(r.batch)] = r.ops_per_s;
  }
  std::printf("%-10s %-8s %-30s %6s %14s %10s %11s %11s %9s %9s\n", "op", "size", "backend", "batch",
              "ops/s", "GiB/s", "p50 us", "mean us", "x memcpy", "x redis");
  nlohmann::json out = nlohmann::json::array();
  for (const auto& r : rows) {
    double xm = memcpy_gib[{"", r.size}] > 0 ? r.gib_per_s / memcpy_gib[{"", r.size}] : 0;
    auto it = redis_ops.find(r.op + std::to_string(r.size) + "/" + std::to_string(r.batch));
    double xr = (it != redis_ops.end() && r.backend.rfind("ds", 0) == 0) ? r.ops_per_s / it->second : 0;
    std::printf("%-10s %-8s %-30s %6zu %14.0f %10.2f %11.1f %11.1f %9s %9s\n", r.op.c_str(),
                SizeName(r.size).c_str(), r.backend.c_str(), r.batch, r.ops_per_s, r.gib_per_s,
                r.p50_us, r.mean_us, xm > 0 && r.backend != "memcpy" ? std::to_string(xm).substr(0, 5).c_str() : "",
                xr > 0 ? std::to_string(xr).substr(0, 5).c_str() : "");
    out.push_back({{"op", r.op}, {"backend", r.backend}, {"size", r.size}, {"batch", r.batch},
                   {"ops_per_s", r.ops_per_s}, {"gib_per_s", r.gib_per_s}, {"p50_us", r.p50_us},
                   {"mean_us", r.mean_us}, {"x_memcpy", xm}, {"x_redis", xr}});
  }
  if (!json_path.empty()) std::ofstream(json_path) << out.dump(2) << "\n";
  std::error_code ec;
  ::rmdir(dir.c_str());
  return 0;
}
