// ds_cluster_member: a Membership in its own process, so tests can kill -9 a
// member (a real death: no revoke). Prints "READY <incarnation>" once
// registered, then "VIEW <version> <addr,addr,...>" on every change; exits on
// SIGTERM after Stop() (a graceful leave).
// Usage: ds_cluster_member ETCD_ADDR SELF_ADDR TTL_SECONDS [KEY_PREFIX]
#include <signal.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "datasystem/cluster/membership.h"

int main(int argc, char** argv) {
  if (argc != 4 && argc != 5) {
    std::fprintf(stderr, "usage: %s ETCD_ADDR SELF_ADDR TTL_SECONDS [KEY_PREFIX]\n", argv[0]);
    return 2;
  }
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);  // threads inherit the mask

  ds::cluster::MembershipOptions o;
  o.etcd.address = argv[1];
  o.self_address = argv[2];
  o.lease_ttl = std::chrono::seconds(std::atoi(argv[3]));
  if (argc == 5) o.key_prefix = argv[4];
  ds::cluster::MembershipCallbacks cb;
  cb.on_change = [](const ds::cluster::MembershipView& v) {
    std::string list;
    for (const auto& a : v.addresses()) list += (list.empty() ? "" : ",") + a;
    std::printf("VIEW %llu %s\n", static_cast<unsigned long long>(v.version), list.c_str());
    std::fflush(stdout);
  };
  auto m = ds::cluster::Membership::Start(o, cb);
  if (!m.ok()) {
    std::fprintf(stderr, "member: %s\n", m.status().ToString().c_str());
    return 1;
  }
  std::printf("READY %llu\n", static_cast<unsigned long long>((*m)->self().incarnation));
  std::fflush(stdout);
  int sig = 0;
  sigwait(&set, &sig);
  (*m)->Stop();
  return 0;
}
