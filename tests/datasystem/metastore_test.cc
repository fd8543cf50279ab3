// Metastore (issue 13): the store's semantics without sockets (revisions,
// transactions, leases on an injected clock, watch history), the gateway
// codec on hostile input, and the HTTP service with the real EtcdClient and
// Membership pointed at it: KV, txn, lease expiry/keep-alive/revoke, watch
// events (also from a past revision and after compaction), three members
// and a kill -9, malformed requests, shutdown with open watches, and what
// clients see when the metastore dies or restarts empty.
#include "datasystem/cluster/metastore.h"

#include <gtest/gtest.h>
#include <httplib.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <condition_variable>
#include <mutex>
#include <thread>

#include "common/process.h"
#include "common/subprocess.h"
#include "common/test_util.h"
#include "datasystem/cluster/etcd_test_util.h"
#include "datasystem/cluster/etcd_client.h"
#include "datasystem/cluster/etcd_codec.h"
#include "datasystem/cluster/hash_ring.h"
#include "datasystem/cluster/membership.h"
#include "datasystem/cluster/metastore_gateway.h"
#include "datasystem/cluster/metastore_state.h"

namespace ds::cluster {
namespace {

using nlohmann::json;
using tqds::testing::Eventually;
using tqds::testing::FreePort;
using tqds::testing::SecondsSince;
using SteadyClock = std::chrono::steady_clock;
namespace ms = metastore;

constexpr auto kWait = std::chrono::seconds(10);

// ---------------------------------------------------------------------------
// The state machine, no sockets.

ms::TxnRequest PutTxn(std::string key, std::string value, int64_t lease = 0) {
  ms::TxnRequest t;
  ms::PutRequest p;
  p.key = std::move(key);
  p.value = std::move(value);
  p.lease = lease;
  t.success.emplace_back(std::move(p));
  return t;
}

ms::KeyRange Prefix(const std::string& p) { return {p, codec::PrefixRangeEnd(p)}; }

TEST(MetastoreStateTest, RevisionsFollowEtcd) {
  ms::MetastoreState s({}, 1);
  EXPECT_EQ(s.revision(), 1);  // a fresh etcd is at 1
  ASSERT_OK_AND_ASSIGN(auto r, s.Txn(PutTxn("a", "1")));
  EXPECT_EQ(r.revision, 2);
  ASSERT_OK_AND_ASSIGN(r, s.Txn(PutTxn("a", "2")));
  EXPECT_EQ(r.revision, 3);
  ASSERT_OK_AND_ASSIGN(auto got, s.Range({{"a", ""}}));
  ASSERT_EQ(got.kvs.size(), 1u);
  EXPECT_EQ(got.kvs[0].create_revision, 2);
  EXPECT_EQ(got.kvs[0].mod_revision, 3);
  EXPECT_EQ(got.kvs[0].version, 2);
  EXPECT_EQ(got.revision, 3);

  // A deleterange of nothing does not bump the revision.
  ms::TxnRequest del;
  del.success.emplace_back(ms::DeleteRequest{{"zzz", ""}, false});
  ASSERT_OK_AND_ASSIGN(r, s.Txn(del));
  EXPECT_EQ(r.revision, 3);

  // Every write of one transaction shares one revision.
  ms::TxnRequest multi = PutTxn("b", "x");
  multi.success.emplace_back(ms::PutRequest{"c", "y"});
  multi.success.emplace_back(ms::DeleteRequest{{"a", ""}, false});
  ASSERT_OK_AND_ASSIGN(r, s.Txn(multi));
  EXPECT_EQ(r.revision, 4);
  ASSERT_OK_AND_ASSIGN(got, s.Range({{"a", std::string(1, '\0')}}));
  ASSERT_EQ(got.kvs.size(), 2u);
  EXPECT_EQ(got.kvs[0].key, "b");
  EXPECT_EQ(got.kvs[1].mod_revision, 4);
}

TEST(MetastoreStateTest, RangesLimitsAndCompares) {
  ms::MetastoreState s({}, 1);
  for (const char* k : {"/p/a", "/p/b", "/p/c", "/q"}) ASSERT_OK(s.Txn(PutTxn(k, k)));
  ms::RangeRequest req{Prefix("/p/")};
  req.limit = 2;
  ASSERT_OK_AND_ASSIGN(auto r, s.Range(req));
  EXPECT_EQ(r.kvs.size(), 2u);
  EXPECT_EQ(r.count, 3);
  EXPECT_TRUE(r.more);
  req.limit = 0;
  req.count_only = true;
  ASSERT_OK_AND_ASSIGN(r, s.Range(req));
  EXPECT_TRUE(r.kvs.empty());
  EXPECT_EQ(r.count, 3);

  // Compares: over a range every key must hold; a value compare on an
  // absent key fails, other targets compare an absent key as zeros.
  ms::TxnRequest t;
  t.compares.push_back({Prefix("/p/"), Compare::Target::kVersion, Compare::Op::kEqual, 1, ""});
  t.compares.push_back({{"/none", ""}, Compare::Target::kCreateRevision, Compare::Op::kEqual, 0, ""});
  t.success.emplace_back(ms::RangeRequest{{"/q", ""}});
  ASSERT_OK_AND_ASSIGN(auto tr, s.Txn(t));
  EXPECT_TRUE(tr.succeeded);
  t.compares.push_back({{"/none", ""}, Compare::Target::kValue, Compare::Op::kNotEqual, 0, "x"});
  ASSERT_OK_AND_ASSIGN(tr, s.Txn(t));
  EXPECT_FALSE(tr.succeeded);

  // Malformed requests change nothing.
  const int64_t rev = s.revision();
  EXPECT_STATUS(s.Txn(PutTxn("", "v")), kInvalid, "key is not provided");
  ms::TxnRequest dup = PutTxn("k", "1");
  dup.success.emplace_back(ms::PutRequest{"k", "2"});
  EXPECT_STATUS(s.Txn(dup), kInvalid, "duplicate key");
  EXPECT_STATUS(s.Txn(PutTxn("k", "v", 12345)), kNotFound, "requested lease not found");
  EXPECT_EQ(s.revision(), rev);
}

TEST(MetastoreStateTest, LeasesExpireOnTheInjectedClock) {
  ms::MetastoreState s({}, 7);
  auto t0 = SteadyClock::now();
  ASSERT_OK_AND_ASSIGN(auto g, s.GrantLease(1, 0, t0));
  EXPECT_EQ(g.ttl_seconds, 2);  // raised to the minimum, like etcd
  EXPECT_GT(g.id, 0);
  ASSERT_OK(s.Txn(PutTxn("/l/a", "x", g.id)));
  ASSERT_OK(s.Txn(PutTxn("/l/b", "y", g.id)));
  ASSERT_OK(s.Txn(PutTxn("/l/c", "z")));
  int64_t next = s.revision() + 1;
  EXPECT_EQ(s.ExpireLeases(t0 + std::chrono::milliseconds(1900)), 0u);
  ASSERT_OK_AND_ASSIGN(int64_t ttl, s.KeepAlive(g.id, t0 + std::chrono::milliseconds(1900)));
  EXPECT_EQ(ttl, 2);
  EXPECT_EQ(s.ExpireLeases(t0 + std::chrono::milliseconds(3800)), 0u);  // renewed
  EXPECT_EQ(s.ExpireLeases(t0 + std::chrono::milliseconds(3900)), 1u);
  ASSERT_OK_AND_ASSIGN(auto left, s.Range({Prefix("/l/")}));
  ASSERT_EQ(left.kvs.size(), 1u);
  EXPECT_EQ(left.kvs[0].key, "/l/c");
  // Both keys went in one revision, as delete events.
  auto batch = s.WaitEvents(Prefix("/l/"), &next, SteadyClock::now(), 100);
  ASSERT_EQ(batch.events.size(), 2u);
  EXPECT_EQ(batch.events[0].type, EventType::kDelete);
  EXPECT_EQ(batch.events[0].kv.mod_revision, batch.events[1].kv.mod_revision);
  EXPECT_STATUS(s.KeepAlive(g.id, t0), kNotFound, "lease not found");
  EXPECT_STATUS(s.Revoke(g.id), kNotFound, "lease not found");
  EXPECT_STATUS(s.GrantLease(int64_t{1} << 40, 0, t0), kInvalid, "too large lease TTL");
}

TEST(MetastoreStateTest, HistoryBoundsCompactOldRevisions) {
  ms::StateLimits limits;
  limits.max_history_events = 4;
  ms::MetastoreState s(limits, 1);
  for (int i = 0; i < 10; ++i) ASSERT_OK(s.Txn(PutTxn("k", std::to_string(i))));
  EXPECT_EQ(s.revision(), 11);
  EXPECT_EQ(s.compact_revision(), 8);  // revisions 8..11 kept
  int64_t next = 2;
  auto b = s.WaitEvents({"k", ""}, &next, SteadyClock::now(), 100);
  EXPECT_TRUE(b.compacted);
  EXPECT_EQ(b.compact_revision, 8);
  next = 8;
  b = s.WaitEvents({"k", ""}, &next, SteadyClock::now(), 2);
  ASSERT_EQ(b.events.size(), 2u);  // capped at whole revisions
  EXPECT_EQ(next, 10);
  EXPECT_STATUS(s.Compact(12), kInvalid, "future revision");
  EXPECT_STATUS(s.Compact(5), kInvalid, "compacted");
  ASSERT_OK(s.Compact(10));
  EXPECT_EQ(s.compact_revision(), 10);
  // The data bound refuses writes instead of growing.
  limits.max_data_bytes = 10;
  ms::MetastoreState small(limits, 1);
  EXPECT_STATUS(small.Txn(PutTxn("key", "0123456789")), kOutOfSpace, "database space exceeded");
}

TEST(MetastoreStateTest, WaitEventsWakesOnWritesAndShutdown) {
  ms::MetastoreState s({}, 1);
  int64_t next = s.revision() + 1;
  std::thread writer([&] { ASSERT_OK(s.Txn(PutTxn("/w/x", "1"))); });
  auto b = s.WaitEvents(Prefix("/w/"), &next, SteadyClock::now() + kWait, 100);
  writer.join();
  ASSERT_EQ(b.events.size(), 1u);
  EXPECT_EQ(b.events[0].kv.value, "1");
  // Events outside the range advance the position but return nothing.
  ASSERT_OK(s.Txn(PutTxn("/other", "1")));
  b = s.WaitEvents(Prefix("/w/"), &next, SteadyClock::now(), 100);
  EXPECT_TRUE(b.events.empty());
  EXPECT_EQ(next, s.revision() + 1);
  std::thread stopper([&] { s.Shutdown(); });
  b = s.WaitEvents(Prefix("/w/"), &next, SteadyClock::now() + kWait, 100);
  stopper.join();
  EXPECT_TRUE(b.shutdown);
}

// ---------------------------------------------------------------------------
// The gateway codec on hostile input, no sockets.

TEST(MetastoreGatewayTest, ParsersRejectMalformedFields) {
  namespace gw = ms::gateway;
  EXPECT_STATUS(gw::ParsePut(json{{"key", "!!!"}}), kInvalid, "'key'");
  EXPECT_STATUS(gw::ParsePut(json{{"key", 5}}), kInvalid, "not a base64 string");
  EXPECT_STATUS(gw::ParsePut(json{{"key", "YQ=="}, {"lease", "12x"}}), kInvalid, "'lease'");
  EXPECT_STATUS(gw::ParsePut(json{{"key", "YQ=="}, {"lease", "-3"}}), kInvalid, ">= 0");
  EXPECT_STATUS(gw::ParsePut(json{{"key", "YQ=="}, {"lease", "99999999999999999999"}}), kInvalid,
                "'lease'");
  EXPECT_STATUS(gw::ParsePut(json{{"key", "YQ=="}, {"lease", 1.5}}), kInvalid, "'lease'");
  EXPECT_STATUS(gw::ParsePut(json{{"key", "YQ=="}, {"prev_kv", "yes"}}), kInvalid, "not a bool");
  EXPECT_STATUS(gw::ParsePut(json::array()), kInvalid, "JSON object");
  EXPECT_STATUS(gw::ParseTxn(json{{"compare", "x"}}), kInvalid, "not an array");
  EXPECT_STATUS(gw::ParseTxn(json{{"compare", {{{"key", "YQ=="}, {"target", "SIZE"}}}}}),
                kInvalid, "unknown value");
  EXPECT_STATUS(gw::ParseTxn(json{{"success", {{{"request_txn", json::object()}}}}}), kInvalid,
                "unsupported");
  EXPECT_STATUS(gw::ParseTxn(json{{"success", {json::object()}}}), kInvalid, "needs request_");
  EXPECT_STATUS(gw::ParseWatch(json{{"create_request", {{"key", "YQ=="}, {"prev_kv", true}}}}),
                kInvalid, "unsupported");
  EXPECT_STATUS(gw::ParseWatch(json{{"create_request", json::object()}}), kInvalid,
                "key is not provided");
  EXPECT_STATUS(gw::ParseWatch(json::object()), kInvalid, "create_request");
  EXPECT_STATUS(gw::ParseRange(json{{"key", "YQ=="}, {"sort_order", "DESCEND"}}), kInvalid,
                "unsupported");
  // What etcd accepts: numbers as strings or numbers, enums by name or
  // number, base64 without padding.
  ASSERT_OK_AND_ASSIGN(auto p, gw::ParsePut(json{{"key", "YQ"}, {"value", "Yg=="}, {"lease", 7}}));
  EXPECT_EQ(p.key, "a");
  EXPECT_EQ(p.value, "b");
  EXPECT_EQ(p.lease, 7);
  ASSERT_OK_AND_ASSIGN(auto t, gw::ParseTxn(json{{"compare",
                                                  {{{"key", "YQ=="},
                                                    {"target", 2},
                                                    {"result", "GREATER"},
                                                    {"mod_revision", "5"}}}}}));
  ASSERT_EQ(t.compares.size(), 1u);
  EXPECT_EQ(t.compares[0].target, Compare::Target::kModRevision);
  EXPECT_EQ(t.compares[0].op, Compare::Op::kGreater);
  EXPECT_EQ(t.compares[0].number, 5);
  // Our client's own request bodies parse back to what it meant.
  Txn txn;
  txn.compares.push_back(Compare::Absent("k"));
  txn.success.push_back(TxnOp::Put("k", "v", 9));
  txn.failure.push_back(TxnOp::Get("/p/", true));
  ASSERT_OK_AND_ASSIGN(auto back, gw::ParseTxn(codec::TxnRequest(txn)));
  EXPECT_EQ(back.compares[0].target, Compare::Target::kCreateRevision);
  EXPECT_EQ(std::get<ms::PutRequest>(back.success[0]).lease, 9);
  EXPECT_EQ(std::get<ms::RangeRequest>(back.failure[0]).range.range_end, "/p0");
}

TEST(MetastoreGatewayTest, AnswersParseWithOurClientCodec) {
  namespace gw = ms::gateway;
  gw::Header h{11, 22, 33};
  KeyValue kv{"k", std::string("v\0\xff", 3), 2, 3, 1, 9};
  ms::RangeResponse rr;
  rr.kvs.push_back(kv);
  rr.count = 1;
  ASSERT_OK_AND_ASSIGN(auto parsed, codec::ParseRange(gw::RangeJson(h, rr)));
  EXPECT_EQ(parsed.revision, 33);
  ASSERT_EQ(parsed.kvs.size(), 1u);
  EXPECT_EQ(parsed.kvs[0].value, kv.value);
  EXPECT_EQ(parsed.kvs[0].lease, 9);
  ASSERT_OK_AND_ASSIGN(auto st, codec::ParseServerStatus(gw::StatusJson(h, "3.4.0", 5)));
  EXPECT_EQ(st.cluster_id, 11u);
  EXPECT_EQ(st.leader, 22u);
  EXPECT_STATUS(codec::ParseKeepAliveTtl(gw::LeaseKeepAliveLine(h, 5, 0), 5), kNotFound,
                "expired or revoked");
  ASSERT_OK_AND_ASSIGN(auto line, codec::ParseWatchLine(gw::WatchCompactedLine(h, 0, 30)));
  EXPECT_TRUE(line.canceled);
  EXPECT_EQ(line.compact_revision, 30);
  WatchEvent del{EventType::kDelete, KeyValue{"gone", "", 0, 40, 0, 0}};
  ASSERT_OK_AND_ASSIGN(line, codec::ParseWatchLine(gw::WatchEventsLine(h, 0, {del})));
  ASSERT_EQ(line.events.size(), 1u);
  EXPECT_EQ(line.events[0].type, EventType::kDelete);
  EXPECT_EQ(line.events[0].kv.mod_revision, 40);
  // Errors map to the codes etcd gives and our client maps back.
  EXPECT_STATUS(codec::ErrorStatus(gw::ErrorJson(tqds::Status::NotFound(
                                       "etcdserver: requested lease not found")),
                                   "x"),
                kNotFound, "lease not found");
  EXPECT_EQ(gw::GrpcCode(tqds::Status::Invalid("etcdserver: mvcc: required revision has been "
                                               "compacted")),
            11);
  EXPECT_EQ(gw::GrpcCode(gw::Unsupported("x")), 12);
}

// ---------------------------------------------------------------------------
// The service, with the real EtcdClient.

class MetastoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    MetastoreOptions o;
    o.progress_interval = std::chrono::milliseconds(200);
    ASSERT_OK_AND_ASSIGN(store_, Metastore::Start(o));
    client_ = Client();
  }
  std::unique_ptr<EtcdClient> Client(std::chrono::milliseconds timeout = std::chrono::seconds(2)) {
    EtcdOptions o;
    o.address = store_->address();
    o.request_timeout = timeout;
    return std::move(EtcdClient::Create(o)).value();
  }
  // A raw POST; the status and the parsed body.
  std::pair<int, json> Post(const std::string& path, const std::string& body) {
    httplib::Client http("127.0.0.1", store_->port());
    http.set_read_timeout(5, 0);
    auto res = http.Post(path.c_str(), body, "application/json");
    if (!res) return {-1, json()};
    return {res->status, json::parse(res->body, nullptr, false)};
  }

  std::unique_ptr<Metastore> store_;
  std::unique_ptr<EtcdClient> client_;
};

using Recorder = testing::WatchRecorder;

TEST_F(MetastoreTest, KvPrefixAndTxnThroughEtcdClient) {
  ASSERT_OK_AND_ASSIGN(auto st, client_->GetServerStatus());
  EXPECT_NE(st.leader, 0u);
  EXPECT_NE(st.cluster_id, 0u);
  EXPECT_EQ(st.revision, 1);
  const std::string value("bin\0ary\xff", 8);
  ASSERT_OK_AND_ASSIGN(int64_t rev, client_->Put("/p/k", value));
  ASSERT_OK_AND_ASSIGN(auto kv, client_->Get("/p/k"));
  EXPECT_EQ(kv.value, value);
  EXPECT_EQ(kv.create_revision, rev);
  EXPECT_STATUS(client_->Get("/p/none"), kNotFound, "/p/none");
  for (const char* k : {"/p/c", "/p/a", "/pX"}) ASSERT_OK(client_->Put(k, k));
  ASSERT_OK_AND_ASSIGN(auto r, client_->GetPrefix("/p/"));
  ASSERT_EQ(r.kvs.size(), 3u);
  EXPECT_EQ(r.kvs[0].key, "/p/a");
  EXPECT_EQ(r.revision, store_->revision());
  ASSERT_OK_AND_ASSIGN(bool created, client_->PutIfAbsent("/p/owner", "w1"));
  EXPECT_TRUE(created);
  ASSERT_OK_AND_ASSIGN(created, client_->PutIfAbsent("/p/owner", "w2"));
  EXPECT_FALSE(created);
  ASSERT_OK_AND_ASSIGN(kv, client_->Get("/p/owner"));
  ASSERT_OK_AND_ASSIGN(bool swapped, client_->CompareAndSwap("/p/owner", kv.mod_revision + 1, "x"));
  EXPECT_FALSE(swapped);
  ASSERT_OK_AND_ASSIGN(swapped, client_->CompareAndSwap("/p/owner", kv.mod_revision, "w3"));
  EXPECT_TRUE(swapped);
  Txn txn;
  txn.compares.push_back(Compare::ValueIs("/p/owner", "nope"));
  txn.success.push_back(TxnOp::Delete("/p/owner"));
  txn.failure.push_back(TxnOp::Get("/p/owner"));
  txn.failure.push_back(TxnOp::Put("/p/audit", "seen"));
  ASSERT_OK_AND_ASSIGN(auto tr, client_->Commit(txn));
  EXPECT_FALSE(tr.succeeded);
  ASSERT_EQ(tr.gets.size(), 1u);
  ASSERT_EQ(tr.gets[0].kvs.size(), 1u);
  EXPECT_EQ(tr.gets[0].kvs[0].value, "w3");
  ASSERT_OK_AND_ASSIGN(int64_t n, client_->DeletePrefix("/p/"));
  EXPECT_EQ(n, 5);
  ASSERT_OK_AND_ASSIGN(n, client_->Delete("/p/k"));
  EXPECT_EQ(n, 0);
  ASSERT_OK(client_->Get("/pX"));
}

TEST_F(MetastoreTest, LeaseExpiryKeepAliveAndRevoke) {
  ASSERT_OK_AND_ASSIGN(auto lease, client_->GrantLease(2));
  EXPECT_EQ(lease.ttl_seconds, 2);
  ASSERT_OK(client_->Put("/l/ephemeral", "x", lease.id));
  auto t0 = SteadyClock::now();
  EXPECT_TRUE(Eventually([&] { return client_->Get("/l/ephemeral").status().IsNotFound(); },
                         std::chrono::seconds(5)));
  double took = SecondsSince(t0);
  EXPECT_GT(took, 1.5);
  EXPECT_LT(took, 2.8);
  EXPECT_STATUS(client_->KeepAliveOnce(lease.id), kNotFound, "expired or revoked");

  ASSERT_OK_AND_ASSIGN(auto kept, client_->GrantLease(2));
  ASSERT_OK(client_->Put("/l/kept", "x", kept.id));
  auto until = SteadyClock::now() + std::chrono::milliseconds(3000);
  while (SteadyClock::now() < until) {
    ASSERT_OK_AND_ASSIGN(int64_t ttl, client_->KeepAliveOnce(kept.id));
    EXPECT_EQ(ttl, 2);
    std::this_thread::sleep_for(std::chrono::milliseconds(500));  // the keep-alive period
  }
  ASSERT_OK_AND_ASSIGN(auto kv, client_->Get("/l/kept"));
  EXPECT_EQ(kv.lease, kept.id);
  ASSERT_OK(client_->RevokeLease(kept.id));
  EXPECT_STATUS(client_->Get("/l/kept"), kNotFound, "kept");
  EXPECT_STATUS(client_->RevokeLease(kept.id), kNotFound, "lease not found");
  EXPECT_STATUS(client_->Put("/l/x", "v", kept.id), kNotFound, "lease not found");
}

TEST_F(MetastoreTest, WatchDeliversEventsAndLeaseExpiryDeletes) {
  ASSERT_OK_AND_ASSIGN(auto start, client_->GetPrefix("/w/"));
  Recorder rec;
  ASSERT_OK_AND_ASSIGN(auto watch, client_->Watch("/w/", true, start.revision + 1, rec.Callbacks()));
  ASSERT_OK_AND_ASSIGN(auto lease, client_->GrantLease(2));
  ASSERT_OK(client_->Put("/w/a", "1"));
  ASSERT_OK(client_->Put("/w/b", "2", lease.id));
  ASSERT_OK(client_->Delete("/w/a"));
  ASSERT_OK(client_->Put("/elsewhere", "ignored"));
  ASSERT_TRUE(rec.WaitFor([&] { return rec.events.size() >= 3; }));
  // No keep-alive: the lease expires and its key's delete is an event.
  ASSERT_TRUE(rec.WaitFor([&] { return rec.events.size() >= 4; }));
  std::lock_guard<std::mutex> l(rec.mu);
  ASSERT_EQ(rec.events.size(), 4u);
  EXPECT_EQ(rec.events[0].kv.key, "/w/a");
  EXPECT_EQ(rec.events[1].kv.lease, lease.id);
  EXPECT_EQ(rec.events[2].type, EventType::kDelete);
  EXPECT_EQ(rec.events[3].type, EventType::kDelete);
  EXPECT_EQ(rec.events[3].kv.key, "/w/b");
  for (size_t i = 1; i < rec.events.size(); ++i) {
    EXPECT_GT(rec.events[i].kv.mod_revision, rec.events[i - 1].kv.mod_revision);
  }
  EXPECT_TRUE(rec.resyncs.empty());
  EXPECT_EQ(watch->next_revision(), rec.events.back().kv.mod_revision + 1);
}

TEST_F(MetastoreTest, WatchFromAPastRevisionReplaysAndCompactionResyncs) {
  ASSERT_OK_AND_ASSIGN(int64_t first, client_->Put("/h/k", "v1"));
  ASSERT_OK(client_->Put("/h/k", "v2"));
  ASSERT_OK(client_->Delete("/h/k"));
  ASSERT_OK_AND_ASSIGN(int64_t last, client_->Put("/h/k", "v3"));
  {
    Recorder rec;
    ASSERT_OK_AND_ASSIGN(auto w, client_->Watch("/h/", true, first, rec.Callbacks()));
    ASSERT_TRUE(rec.WaitFor([&] { return rec.events.size() >= 4; }));
    std::lock_guard<std::mutex> l(rec.mu);
    EXPECT_EQ(rec.events[0].kv.value, "v1");
    EXPECT_EQ(rec.events[2].type, EventType::kDelete);
    EXPECT_EQ(rec.events[3].kv.value, "v3");
    EXPECT_EQ(rec.events[3].kv.mod_revision, last);
  }
  ASSERT_OK(client_->Compact(last));
  Recorder rec;
  ASSERT_OK_AND_ASSIGN(auto w, client_->Watch("/h/", true, first, rec.Callbacks()));
  ASSERT_TRUE(rec.WaitFor([&] { return !rec.resyncs.empty(); }));
  ASSERT_OK(client_->Put("/h/k", "v4"));
  ASSERT_TRUE(rec.WaitFor([&] { return !rec.events.empty(); }));
  std::lock_guard<std::mutex> l(rec.mu);
  ASSERT_EQ(rec.resyncs[0].kvs.size(), 1u);
  EXPECT_EQ(rec.resyncs[0].kvs[0].value, "v3");
  ASSERT_EQ(rec.events.size(), 1u);
  EXPECT_EQ(rec.events[0].kv.value, "v4");
  EXPECT_EQ(w->resyncs(), 1);
}

TEST_F(MetastoreTest, ConcurrentClientsAndWatches) {
  std::vector<std::unique_ptr<Recorder>> recs;
  std::vector<std::unique_ptr<EtcdWatch>> watches;
  for (int i = 0; i < 4; ++i) {
    recs.push_back(std::make_unique<Recorder>());
    ASSERT_OK_AND_ASSIGN(auto w, client_->Watch("/c/", true, 2, recs.back()->Callbacks()));
    watches.push_back(std::move(w));
  }
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      auto c = Client();
      for (int i = 0; i < 40; ++i) {
        std::string key = "/c/" + std::to_string(t) + "/" + std::to_string(i);
        auto put = c->Put(key, key);
        if (!put.ok()) {
          ++failures;
          ADD_FAILURE() << put.status().ToString();
        }
        auto kv = c->Get(key);
        if (!kv.ok() || kv->value != key) {
          ++failures;
          ADD_FAILURE() << kv.status().ToString();
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(failures.load(), 0);
  for (auto& r : recs) {
    EXPECT_TRUE(r->WaitFor([&] { return r->events.size() == 320; }));
  }
  EXPECT_EQ(store_->watches(), 4u);
  watches.clear();
  // A watcher that hangs up is noticed at the next progress line.
  EXPECT_TRUE(Eventually([&] { return store_->watches() == 0; }, std::chrono::seconds(5)));
}

TEST_F(MetastoreTest, MalformedRequestsGet400AndTheServerCarriesOn) {
  struct Case {
    const char* path;
    std::string body;
    int http;
    const char* needle;
  };
  const std::vector<Case> cases = {
      {"/v3/kv/put", "{not json", 400, "not valid JSON"},
      {"/v3/kv/put", "[1,2]", 400, "JSON object"},
      {"/v3/kv/put", R"({"key":"%%%%","value":"eA=="})", 400, "base64"},
      {"/v3/kv/put", R"({"key":"eA==","lease":"abc"})", 400, "'lease'"},
      {"/v3/kv/put", R"({"value":"eA=="})", 400, "key is not provided"},
      {"/v3/kv/range", R"({"key":"eA==","limit":-1})", 400, ">= 0"},
      {"/v3/kv/txn", R"({"compare":[{"key":"eA==","target":"NOPE"}]})", 400, "unknown value"},
      {"/v3/kv/txn", R"({"success":[{"request_txn":{}}]})", 501, "unsupported"},
      {"/v3/lease/grant", R"({"TTL":"99999999999999999999"})", 400, "int64"},
      {"/v3/lease/revoke", R"({"ID":"42"})", 404, "lease not found"},
      {"/v3/kv/compaction", R"({"revision":"100"})", 400, "future revision"},
      {"/v3/watch", R"({"create_request":{"key":"eA==","prev_kv":true}})", 501, "unsupported"},
      {"/v3/watch", "{}", 400, "create_request"},
      {"/v3/nope", "{}", 404, "unsupported"},
      {"/v3/kv/put", std::string(100000, '[') + std::string(100000, ']'), 400, "nests deeper"},
      {"/v3/kv/put", "{\"key\":\"" + std::string(3 << 20, 'A') + "\"}", 400, "too large"},
  };
  for (const auto& c : cases) {
    auto [status, body] = Post(c.path, c.body);
    EXPECT_EQ(status, c.http) << c.path << " " << c.body.substr(0, 60);
    ASSERT_TRUE(body.is_object()) << c.path << " " << c.body.substr(0, 60);
    std::string message = body.value("message", "");
    EXPECT_NE(message.find(c.needle), std::string::npos) << message;
    EXPECT_TRUE(body.contains("error") && body.contains("code")) << body.dump();
  }
  // Not HTTP at all, and a connection dropped mid-request.
  for (const std::string& garbage : {std::string("\x16\x03\x01 hello\r\n\r\n"),
                                    std::string("POST /v3/kv/put HTTP/1.1\r\nContent-Length: "
                                                "100\r\n\r\n{\"key\"")}) {
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(store_->port()));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
    ASSERT_GT(::send(fd, garbage.data(), garbage.size(), MSG_NOSIGNAL), 0);
    ::shutdown(fd, SHUT_WR);
    char buf[512];
    while (::recv(fd, buf, sizeof(buf), 0) > 0) {
    }
    ::close(fd);
  }
  // Bodies cpp-httplib would read without a bound: chunked, or no length.
  for (const std::string& head :
       {std::string("POST /v3/kv/put HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                    "5\r\n{\"a\":\r\n"),
        std::string("POST /v3/kv/put HTTP/1.1\r\nHost: x\r\n\r\n{\"key\":")}) {
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(store_->port()));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
    ASSERT_GT(::send(fd, head.data(), head.size(), MSG_NOSIGNAL), 0);
    timeval tv{5, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    std::string answer;
    char buf[512];
    ssize_t n;
    while ((n = ::recv(fd, buf, sizeof(buf), 0)) > 0) answer.append(buf, static_cast<size_t>(n));
    ::close(fd);
    EXPECT_EQ(answer.rfind("HTTP/1.1 400", 0), 0u) << answer;
    EXPECT_NE(answer.find("needs a Content-Length"), std::string::npos) << answer;
  }
  // Still serving.
  ASSERT_OK(client_->Put("/after", "ok"));
  ASSERT_OK_AND_ASSIGN(auto kv, client_->Get("/after"));
  EXPECT_EQ(kv.value, "ok");
  // etcd's plain probes.
  httplib::Client http("127.0.0.1", store_->port());
  auto v = http.Get("/version");
  ASSERT_TRUE(v);
  EXPECT_NE(v->body.find("\"etcdserver\""), std::string::npos);
}

TEST_F(MetastoreTest, StopEndsOpenWatchesPromptlyAndClientsSeeTheAddress) {
  const std::string address = store_->address();
  std::vector<std::unique_ptr<Recorder>> recs;
  std::vector<std::unique_ptr<EtcdWatch>> watches;
  for (int i = 0; i < 3; ++i) {
    recs.push_back(std::make_unique<Recorder>());
    ASSERT_OK_AND_ASSIGN(auto w, client_->Watch("/s/", true, 0, recs.back()->Callbacks()));
    watches.push_back(std::move(w));
  }
  for (auto& r : recs) ASSERT_TRUE(r->WaitFor([&] { return !r->states.empty(); }));
  auto t0 = SteadyClock::now();
  store_->Stop();
  double took = SecondsSince(t0);
  std::printf("[ measure  ] Stop() with 3 open watches and idle connections: %.3f s\n", took);
  EXPECT_LT(took, 2.0);  // the 1 s idle-connection bound, plus margin
  // Every watch reports the break, naming the address.
  for (auto& r : recs) {
    ASSERT_TRUE(r->WaitFor([&] { return r->states.size() >= 2; }));
    std::lock_guard<std::mutex> l(r->mu);
    EXPECT_TRUE(r->states.back().IsUnavailable()) << r->states.back().ToString();
    EXPECT_NE(r->states.back().message().find(address), std::string::npos);
  }
  // Unary calls: connection refused, fast, naming the address.
  t0 = SteadyClock::now();
  EXPECT_STATUS(client_->Put("/s/x", "v"), kUnavailable, address);
  EXPECT_STATUS(client_->GrantLease(2), kUnavailable, address);
  EXPECT_LT(SecondsSince(t0), 1.0);
  watches.clear();  // cancel is prompt while the metastore is away
}

TEST_F(MetastoreTest, WatchesBeyondTheCapAreRefused) {
  MetastoreOptions o;
  o.max_watches = 1;
  o.server_threads = 4;
  ASSERT_OK_AND_ASSIGN(auto small, Metastore::Start(o));
  EtcdOptions eo;
  eo.address = small->address();
  ASSERT_OK_AND_ASSIGN(auto c, EtcdClient::Create(eo));
  Recorder rec;
  ASSERT_OK_AND_ASSIGN(auto w, c->Watch("/x/", true, 0, rec.Callbacks()));
  ASSERT_TRUE(rec.WaitFor([&] { return !rec.states.empty(); }));
  EXPECT_EQ(small->watches(), 1u);
  httplib::Client http("127.0.0.1", small->port());
  auto res = http.Post("/v3/watch", R"({"create_request":{"key":"eA=="}})", "application/json");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 429);
  EXPECT_NE(res->body.find("max_watches"), std::string::npos) << res->body;
  ASSERT_OK(c->Put("/x/a", "1"));  // unary calls still served
  ASSERT_TRUE(rec.WaitFor([&] { return !rec.events.empty(); }));
}

TEST_F(MetastoreTest, SecondMetastoreOnTheSamePortFails) {
  EXPECT_STATUS(Metastore::Start("127.0.0.1", store_->port()), kUnavailable,
                std::to_string(store_->port()));
  MetastoreOptions bad;
  bad.max_watches = bad.server_threads;
  EXPECT_STATUS(Metastore::Start(bad), kInvalid, "max_watches");
}

// ---------------------------------------------------------------------------
// Membership against the metastore: the etcd scenarios.

class MetastoreMembershipTest : public MetastoreTest {
 protected:
  MembershipOptions Options(const std::string& self, int ttl_s = 2) {
    MembershipOptions o;
    o.etcd.address = address_.empty() ? store_->address() : address_;
    o.self_address = self;
    o.lease_ttl = std::chrono::seconds(ttl_s);
    return o;
  }
  std::unique_ptr<Membership> StartMember(const std::string& self, int ttl_s = 2) {
    auto m = Membership::Start(Options(self, ttl_s));
    EXPECT_TRUE(m.ok()) << m.status().ToString();
    return m.ok() ? std::move(m).value() : nullptr;
  }
  tqds::Result<tqds::ChildProcess> SpawnMember(const std::string& self, int ttl_s) {
    TQDS_ASSIGN_OR_RETURN(auto child,
                          tqds::ChildProcess::Spawn({DS_CLUSTER_MEMBER_BIN, store_->address(),
                                                     self, std::to_string(ttl_s)}));
    TQDS_RETURN_NOT_OK(child.WaitForLine("READY", std::chrono::seconds(10)).status());
    return child;
  }
  static auto Has(const std::string& a) {
    return [a](const MembershipView& v) { return v.Contains(a); };
  }
  static auto Lacks(const std::string& a) {
    return [a](const MembershipView& v) { return !v.Contains(a); };
  }
  std::string address_;  // set while the metastore is down
};

TEST_F(MetastoreMembershipTest, ThreeJoinOneDiesTheRingFollows) {
  constexpr int kTtl = 3;
  auto a = StartMember("127.0.0.1:2001", kTtl);
  auto b = StartMember("127.0.0.1:2002", kTtl);
  ASSERT_TRUE(a && b);
  ASSERT_OK_AND_ASSIGN(auto child, SpawnMember("127.0.0.1:2003", kTtl));
  auto all3 = [](const MembershipView& v) { return v.members.size() == 3; };
  ASSERT_TRUE(a->WaitFor(all3, kWait));
  ASSERT_TRUE(b->WaitFor(all3, kWait));
  HashRing ring3(a->View().addresses());
  EXPECT_EQ(ring3.size(), 3u);
  EXPECT_EQ(HashRing(b->View().addresses()).nodes(), ring3.nodes());

  auto t0 = SteadyClock::now();
  child.Stop(SIGKILL);  // no revoke: only lease expiry removes it
  ASSERT_TRUE(a->WaitFor(Lacks("127.0.0.1:2003"), kWait));
  double took = SecondsSince(t0);
  std::printf("[ measure  ] kill -9 leave seen after %.3f s (TTL %d s)\n", took, kTtl);
  EXPECT_GT(took, kTtl * 2.0 / 3 - 0.3);
  EXPECT_LT(took, kTtl + 1.0);
  ASSERT_TRUE(b->WaitFor(Lacks("127.0.0.1:2003"), kWait));
  HashRing ring2(a->View().addresses());
  EXPECT_EQ(ring2.nodes(), (std::vector<std::string>{"127.0.0.1:2001", "127.0.0.1:2002"}));
  // Keys owned by the survivors keep their owner; the dead one's move.
  int moved = 0;
  for (int i = 0; i < 300; ++i) {
    std::string key = "key" + std::to_string(i);
    auto before = *ring3.Owner(key);
    auto after = *ring2.Owner(key);
    if (before != "127.0.0.1:2003") {
      EXPECT_EQ(before, after) << key;
    }
    if (before != after) ++moved;
  }
  EXPECT_GT(moved, 0);

  // A graceful stop leaves at once (revoke).
  t0 = SteadyClock::now();
  b->Stop();
  ASSERT_TRUE(a->WaitFor(Lacks("127.0.0.1:2002"), kWait));
  EXPECT_LT(SecondsSince(t0), 1.0);
}

TEST_F(MetastoreMembershipTest, MembersKeepTheirViewWhileTheMetastoreIsDownAndRejoinARestart) {
  auto a = StartMember("127.0.0.1:2001");
  auto b = StartMember("127.0.0.1:2002");
  ASSERT_TRUE(a && b);
  ASSERT_TRUE(a->WaitFor(Has("127.0.0.1:2002"), kWait));
  const int port = store_->port();
  address_ = store_->address();
  const uint64_t version = a->version();
  store_.reset();  // the metastore dies: every key and lease is gone with it
  // A new member cannot join, and says where it looked.
  EXPECT_STATUS(Membership::Start(Options("127.0.0.1:2009")), kUnavailable,
                "127.0.0.1:" + std::to_string(port));
  EXPECT_EQ(a->View().members.size(), 2u);  // last known view kept
  EXPECT_EQ(a->version(), version);
  // Restarted (empty) on the same address: members notice the new store
  // (revision behind their watch, new cluster id) and register again.
  MetastoreOptions o;
  o.port = port;
  ASSERT_OK_AND_ASSIGN(store_, Metastore::Start(o));
  EXPECT_TRUE(
      Eventually([&] { return a->registrations() == 2 && b->registrations() == 2; }, kWait));
  EXPECT_TRUE(Eventually(
      [&] { return client_->GetPrefix("/datasystem/workers/").ValueOr({}).kvs.size() == 2; },
      kWait));
  EXPECT_TRUE(a->WaitFor(Has("127.0.0.1:2002"), kWait));
  EXPECT_TRUE(b->WaitFor(Has("127.0.0.1:2001"), kWait));
}

}  // namespace
}  // namespace ds::cluster
