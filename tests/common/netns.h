// Network namespaces standing in for nodes on one machine, for tests and
// benchmarks: two namespaces joined by one veth pair, created and deleted by
// this code (traffic never leaves them), and the `ip netns exec` prefix for
// programs run inside one. Needs root and iproute2 (/usr/sbin/ip); callers
// check and skip otherwise. Header-only. Not thread-safe.
#pragma once

#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <regex>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include <cstdlib>
#include <filesystem>

#include "common/subprocess.h"
#include "common/wire/security.h"

namespace tqds::testing {

inline constexpr const char* kIpBin = "/usr/sbin/ip";

// The deployment's CURVE keys for the processes of a multi-node test (its
// addresses are not loopback, so every tcp socket must authenticate): a
// fresh key directory, exported as TQDS_CURVE_KEY_DIR for the children and
// installed in this process. Undone, and the directory removed, when it goes.
class ScopedCurveKeys {
 public:
  ScopedCurveKeys() {
    char tmpl[] = "/tmp/tqds-keys-XXXXXX";
    if (::mkdtemp(tmpl) == nullptr) {
      status_ = Status::IOError("mkdtemp failed");
      return;
    }
    dir_ = tmpl;
    status_ = wire::GenerateCurveKeys(dir_);
    if (status_.ok()) status_ = wire::UseCurveKeys(dir_);
    if (status_.ok()) ::setenv("TQDS_CURVE_KEY_DIR", dir_.c_str(), 1);
  }
  ~ScopedCurveKeys() {
    ::unsetenv("TQDS_CURVE_KEY_DIR");
    (void)wire::UseCurveKeys("");
    std::error_code ec;
    if (!dir_.empty()) std::filesystem::remove_all(dir_, ec);
  }
  ScopedCurveKeys(const ScopedCurveKeys&) = delete;
  ScopedCurveKeys& operator=(const ScopedCurveKeys&) = delete;
  const Status& status() const { return status_; }
  const std::string& dir() const { return dir_; }

 private:
  std::string dir_;
  Status status_;
};

// Explicit consent to plain tcp on the namespaces' addresses, for
// benchmarks that measure the transport itself (TQDS_ALLOW_INSECURE=1 for
// the children, AllowInsecure here); undone when it goes.
class ScopedPlainTcp {
 public:
  ScopedPlainTcp() {
    ::setenv("TQDS_ALLOW_INSECURE", "1", 1);
    wire::AllowInsecure(true);
  }
  ~ScopedPlainTcp() {
    ::unsetenv("TQDS_ALLOW_INSECURE");
    wire::AllowInsecure(false);
  }
  ScopedPlainTcp(const ScopedPlainTcp&) = delete;
  ScopedPlainTcp& operator=(const ScopedPlainTcp&) = delete;
};

// argv run inside namespace `ns` (`ip netns exec NS ...`); unchanged when
// `ns` is empty (the host's namespace).
inline std::vector<std::string> InNetns(const std::string& ns, std::vector<std::string> argv) {
  if (!ns.empty()) argv.insert(argv.begin(), {kIpBin, "netns", "exec", ns});
  return argv;
}

inline bool NetnsExists(const std::string& ns) {
  struct stat st;
  return ::stat(("/var/run/netns/" + ns).c_str(), &st) == 0;
}

// SIGKILLs every process still inside namespace `ns` (only leftovers of the
// caller's own run can live in a namespace it created) and deletes it.
// No-op when it does not exist.
inline void RemoveNetns(const std::string& ns) {
  if (!NetnsExists(ns)) return;
  std::istringstream pids(RunProgram({kIpBin, "netns", "pids", ns}).output);
  pid_t pid;
  while (pids >> pid) {
    if (pid > 1 && pid != ::getpid()) ::kill(pid, SIGKILL);
  }
  (void)RunProgram({kIpBin, "netns", "del", ns});
}

// Two namespaces, <prefix><pid>a and <prefix><pid>b, joined by one veth pair
// (eth0 in each, `ip_a`/24 and `ip_b`/24), loopback up in both. Build()
// creates them; Remove() and the destructor delete them, killing anything
// still inside, so declare this before the processes that run in it.
class TwoNodeNet {
 public:
  // `prefix`: letters only; it tells this program's namespaces apart.
  TwoNodeNet(const std::string& prefix, std::string ip_a, std::string ip_b)
      : prefix_(prefix),
        a_(prefix + std::to_string(::getpid()) + "a"),
        b_(prefix + std::to_string(::getpid()) + "b"),
        ip_a_(std::move(ip_a)),
        ip_b_(std::move(ip_b)) {}
  TwoNodeNet(const TwoNodeNet&) = delete;
  TwoNodeNet& operator=(const TwoNodeNet&) = delete;
  ~TwoNodeNet() { Remove(); }

  // "" once built, else why not (e.g. not permitted: for a skip message).
  // First removes namespaces of this prefix whose owner pid is gone (left
  // by a crashed earlier run).
  std::string Build() {
    RemoveStale();
    Remove();
    for (const auto& ns : {a_, b_}) {
      auto r = RunProgram({kIpBin, "netns", "add", ns});
      if (r.code != 0) return "ip netns add " + ns + " failed: " + r.output;
    }
    const std::vector<std::vector<std::string>> steps = {
        {kIpBin, "-n", a_, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns",
         b_},
        {kIpBin, "-n", a_, "addr", "add", ip_a_ + "/24", "dev", "eth0"},
        {kIpBin, "-n", b_, "addr", "add", ip_b_ + "/24", "dev", "eth0"},
        {kIpBin, "-n", a_, "link", "set", "eth0", "up"},
        {kIpBin, "-n", b_, "link", "set", "eth0", "up"},
        {kIpBin, "-n", a_, "link", "set", "lo", "up"},
        {kIpBin, "-n", b_, "link", "set", "lo", "up"}};
    for (const auto& s : steps) {
      auto r = RunProgram(s);
      if (r.code != 0) {
        return "cannot build the network (ip -n " + s[2] + " " + s[3] + " " + s[4] +
               " ...): " + r.output;
      }
    }
    return "";
  }

  // Deletes both namespaces (killing what is still inside); idempotent.
  void Remove() {
    RemoveNetns(a_);
    RemoveNetns(b_);
  }

  const std::string& a() const { return a_; }
  const std::string& b() const { return b_; }
  const std::string& ip_a() const { return ip_a_; }
  const std::string& ip_b() const { return ip_b_; }

 private:
  void RemoveStale() const {
    DIR* d = ::opendir("/var/run/netns");
    if (!d) return;
    const std::regex re(prefix_ + "(\\d+)[ab]");
    std::vector<std::string> stale;
    while (dirent* e = ::readdir(d)) {
      std::cmatch m;
      if (!std::regex_match(e->d_name, m, re)) continue;
      pid_t owner = static_cast<pid_t>(std::stol(m[1]));
      if (owner != ::getpid() && ::kill(owner, 0) != 0 && errno == ESRCH) {
        stale.push_back(e->d_name);
      }
    }
    ::closedir(d);
    for (const auto& ns : stale) RemoveNetns(ns);
  }

  const std::string prefix_;
  const std::string a_, b_;
  const std::string ip_a_, ip_b_;
};

}  // namespace tqds::testing
