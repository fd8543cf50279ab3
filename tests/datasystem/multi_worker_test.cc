// Cluster tests on loopback: a real etcd and several real datasystem_worker
// processes on 127.0.0.1 (different ports and socket directories), clients in
// this process. Cross-worker gets, overwrite, expire and delete of every copy, a
// killed worker (fast, named errors), a restarted worker, an etcd outage.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "common/test_util.h"
#include "ds/kv_client.h"
#include "test_util.h"

namespace ds {
namespace {

using Clock = std::chrono::steady_clock;

std::string ValueOf(const std::string& key, size_t size) {
  std::string v(size, '\0');
  uint64_t x = std::hash<std::string>{}(key) | 1;
  for (size_t i = 0; i < size; ++i) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    v[i] = static_cast<char>(x);
  }
  return v;
}

class MultiWorker : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!testing::EtcdProcess::Installed()) GTEST_SKIP() << "etcd (etcd-server) is not installed";
    etcd_ = std::make_unique<testing::EtcdProcess>();
    etcd_->Start();
    ASSERT_TRUE(testing::Eventually([&] { return ProbeEtcd(etcd_->address(), 500).ok(); },
                                    std::chrono::seconds(20)))
        << "etcd did not start";
    for (int i = 0; i < 3; ++i) AddWorker();
  }

  testing::WorkerConfig Config() {
    testing::WorkerConfig c;
    c.shm_mb = 256;
    c.etcd = etcd_->address();
    c.extra = {"--node_timeout_s", NodeTimeoutSeconds()};
    return c;
  }
  // How long a crashed worker stays in the others' view.
  virtual const char* NodeTimeoutSeconds() const { return "2"; }

  void AddWorker() {
    workers_.push_back(std::make_unique<testing::WorkerProcess>(Config()));
    ASSERT_EQ(workers_.back()->Start(), "");
  }

  std::unique_ptr<KVClient> Client(size_t worker) {
    auto c = std::make_unique<KVClient>("127.0.0.1", workers_[worker]->port());
    EXPECT_TRUE(c->Init().ok());
    return c;
  }

  // Keys written through `client` with their deterministic values.
  void Write(KVClient& c, const std::vector<std::string>& keys, size_t size) {
    std::vector<std::string> values;
    for (const auto& k : keys) values.push_back(ValueOf(k, size));
    std::vector<std::string_view> views(values.begin(), values.end());
    ASSERT_TRUE(c.MSet(keys, views).ok());
  }

  void ExpectValues(KVClient& c, const std::vector<std::string>& keys, size_t size) {
    auto got = c.GetBuffers(keys);
    ASSERT_TRUE(got.ok()) << got.status().ToString();
    for (size_t i = 0; i < keys.size(); ++i) {
      ASSERT_TRUE((*got)[i].has_value()) << keys[i];
      EXPECT_TRUE((*got)[i]->view() == ValueOf(keys[i], size)) << "wrong bytes for " << keys[i];
    }
  }

  std::unique_ptr<testing::EtcdProcess> etcd_;
  std::vector<std::unique_ptr<testing::WorkerProcess>> workers_;
};

std::vector<std::string> Keys(const std::string& prefix, int n) {
  std::vector<std::string> k;
  for (int i = 0; i < n; ++i) k.push_back(prefix + "/" + std::to_string(i));
  return k;
}

TEST_F(MultiWorker, GetOnAnyWorkerReturnsTheWritersBytes) {
  auto a = Client(0), b = Client(1), c = Client(2);
  auto small = Keys("small", 200), mid = Keys("mid", 4), big = Keys("big", 2);
  Write(*a, small, 100);
  Write(*a, mid, 1 << 20);
  Write(*b, big, 24 << 20);
  // Exist sees keys held by other workers (before any read copies them here).
  auto ex = b->Exist({mid[0], "nobody", big[0]});
  ASSERT_TRUE(ex.ok());
  EXPECT_EQ(*ex, (std::vector<bool>{true, false, true}));
  ExpectValues(*b, small, 100);
  ExpectValues(*c, small, 100);
  ExpectValues(*c, mid, 1 << 20);
  ExpectValues(*a, big, 24 << 20);
  ExpectValues(*c, big, 24 << 20);
  // Copying reads and zero-copy writes work across workers too.
  auto wb = a->MCreate({"zc"}, {3 << 20});
  ASSERT_TRUE(wb.ok());
  std::string v = ValueOf("zc", 3 << 20);
  ASSERT_TRUE((*wb)[0].Write(v).ok());
  ASSERT_TRUE(a->MSetBuffer(*wb).ok());
  auto got = c->Get("zc");
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_TRUE(*got == v);
  // A key nobody wrote is a plain miss.
  auto miss = b->GetBuffers({"nobody"});
  ASSERT_TRUE(miss.ok());
  EXPECT_FALSE((*miss)[0].has_value());
  EXPECT_TRUE(b->Get("nobody").status().IsNotFound());
}

TEST_F(MultiWorker, BulkGetFromAnotherWorkerKeepsNoCachedCopies) {
  // More keys than --cache_max_keys (default 256): the reader's worker pulls
  // them into blocks private to the reader and frees them at release.
  auto a = Client(0), b = Client(1);
  auto keys = Keys("bulk", 600);
  Write(*a, keys, 4096);
  auto before = b->Stats();
  ASSERT_TRUE(before.ok());
  {
    auto got = b->GetBuffers(keys);
    ASSERT_TRUE(got.ok()) << got.status().ToString();
    for (size_t i = 0; i < keys.size(); ++i) {
      ASSERT_TRUE((*got)[i].has_value()) << keys[i];
      ASSERT_TRUE((*got)[i]->view() == ValueOf(keys[i], 4096)) << "wrong bytes for " << keys[i];
    }
    auto during = b->Stats();
    ASSERT_TRUE(during.ok());
    EXPECT_EQ(during->objects, before->objects);  // nothing entered b's table
    EXPECT_GE(during->used, before->used + 600 * 4096);
    EXPECT_EQ(during->pinned_blocks, 600u);
    // A delete while the reader holds its views does not disturb them.
    ASSERT_TRUE(a->Delete({keys[0]}).ok());
    EXPECT_TRUE((*got)[0]->view() == ValueOf(keys[0], 4096));
  }
  EXPECT_TRUE(testing::Eventually([&] {
    auto s = b->Stats();
    return s.ok() && s->pinned_blocks == 0 && s->used == before->used;
  }));
  // Deleted stays deleted everywhere; the rest is read again (pulled anew).
  auto again = b->GetBuffers(keys);
  ASSERT_TRUE(again.ok());
  EXPECT_FALSE((*again)[0].has_value());
  for (size_t i = 1; i < keys.size(); ++i) {
    ASSERT_TRUE((*again)[i].has_value()) << keys[i];
    ASSERT_TRUE((*again)[i]->view() == ValueOf(keys[i], 4096));
  }
}

TEST_F(MultiWorker, CachedCopyExpiresWithItsSource) {
  auto a = Client(0), b = Client(1);
  SetParam ttl;
  ttl.ttl_seconds = 1;
  const auto written = Clock::now();
  ASSERT_TRUE(a->Set("short-lived", "v", ttl).ok());
  ASSERT_TRUE(a->Set("long-lived", "w").ok());
  const uint64_t objects_before = b->Stats()->objects;
  EXPECT_EQ(b->Get("short-lived").ValueOr(""), "v");  // b caches both copies
  EXPECT_EQ(b->Get("long-lived").ValueOr(""), "w");
  EXPECT_EQ(b->Stats()->objects, objects_before + 2);
  // Within about a second of the write, the copy on b is gone too (before,
  // a cached copy outlived its source's TTL and served expired bytes).
  EXPECT_TRUE(testing::Eventually([&] { return b->Get("short-lived").status().IsNotFound(); },
                                  std::chrono::seconds(5)));
  EXPECT_LT(Clock::now() - written, std::chrono::milliseconds(2500));
  EXPECT_TRUE(a->Get("short-lived").status().IsNotFound());
  EXPECT_EQ(b->Get("long-lived").ValueOr(""), "w");  // no TTL: kept
}

TEST_F(MultiWorker, ExpireReachesEveryCopy) {
  auto a = Client(0), b = Client(1), c = Client(2);
  ASSERT_TRUE(a->Set("e", "v").ok());       // on a, no time to live
  ASSERT_TRUE(a->Set("kept", "w").ok());
  EXPECT_EQ(c->Get("e").ValueOr(""), "v");  // c caches a copy
  // b holds no copy: its expire reaches a's value and c's cached copy (it
  // used to reach b's store only and report the key missing).
  auto found = b->Expire({"e", "nowhere"}, 1);
  ASSERT_TRUE(found.ok()) << found.status().ToString();
  EXPECT_EQ(*found, (std::vector<bool>{true, false}));
  EXPECT_TRUE(testing::Eventually(
      [&] { return a->Get("e").status().IsNotFound() && c->Get("e").status().IsNotFound(); },
      std::chrono::seconds(5)))
      << "a copy outlived the time to live that expire gave it";
  EXPECT_TRUE(b->Get("e").status().IsNotFound());
  EXPECT_EQ(b->Get("kept").ValueOr(""), "w");  // expire touched only its keys
}

// openYuanrong's NX (msettx, mset NX) sees the whole cluster: a key that
// only another worker holds exists.
TEST_F(MultiWorker, IfAbsentWritesSeeKeysHeldByOtherWorkers) {
  auto a = Client(0), b = Client(1);
  ASSERT_TRUE(a->Set("nx/held", "first").ok());  // held by a only
  SetParam nx;
  nx.if_absent = true;
  // A transaction on b that names it writes nothing, anywhere.
  Status tx = b->MSetTx({"nx/held", "nx/new"}, {"second", "x"}, nx);
  EXPECT_TRUE(tx.IsAlreadyExists()) << tx.ToString();
  EXPECT_TRUE(b->Get("nx/new").status().IsNotFound());
  EXPECT_TRUE(a->Get("nx/new").status().IsNotFound());
  // A batch with NX: that key fails, the new one is written.
  auto each = b->MSetEach({"nx/held", "nx/other"}, {"second", "y"}, nx);
  ASSERT_TRUE(each.ok()) << each.status().ToString();
  EXPECT_TRUE((*each)[0].IsAlreadyExists()) << (*each)[0].ToString();
  EXPECT_TRUE((*each)[1].ok()) << (*each)[1].ToString();
  // The same through shared memory (a value too large to travel inline).
  Status big = b->Set("nx/held", std::string(2 << 20, 'z'), nx);
  EXPECT_TRUE(big.IsAlreadyExists()) << big.ToString();
  // The held key keeps its first value on every worker.
  EXPECT_EQ(b->Get("nx/held").ValueOr(""), "first");
  EXPECT_EQ(a->Get("nx/held").ValueOr(""), "first");
  EXPECT_EQ(a->Get("nx/other").ValueOr(""), "y");
  // Without NX a write still replaces it, wherever it is held.
  ASSERT_TRUE(b->Set("nx/held", "third").ok());
  EXPECT_TRUE(testing::Eventually([&] { return a->Get("nx/held").ValueOr("") == "third"; },
                                  std::chrono::seconds(5)));
}

// Crashed workers stay in the view for a minute: long enough to see what a
// worker does while the owners it must ask do not answer.
class MultiWorkerSlowToForget : public MultiWorker {
 protected:
  const char* NodeTimeoutSeconds() const override { return "60"; }
};

TEST_F(MultiWorkerSlowToForget, IfAbsentWritesFailWhenNoOwnerOfAKeyAnswers) {
  auto b = Client(1);
  const std::string dead0 = workers_[0]->address(), dead2 = workers_[2]->address();
  workers_[0]->Crash();
  workers_[2]->Crash();
  // Each key's record lives on two owners of the three. For a key whose
  // owners were both crashed nobody can say whether it exists: Exist and an
  // if-absent write must fail (Unavailable, naming the key and the owners),
  // not answer "absent" and write. A key with a live owner is answered.
  std::vector<std::string> unknown, answered;
  for (const auto& k : Keys("nxdead", 24)) {
    auto ex = b->Exist({k});
    if (ex.ok()) {
      EXPECT_FALSE((*ex)[0]) << k;
      answered.push_back(k);
      continue;
    }
    EXPECT_TRUE(ex.status().IsUnavailable()) << ex.status().ToString();
    EXPECT_NE(ex.status().message().find(k), std::string::npos) << ex.status().ToString();
    EXPECT_TRUE(ex.status().message().find(dead0) != std::string::npos &&
                ex.status().message().find(dead2) != std::string::npos)
        << ex.status().ToString();
    unknown.push_back(k);
  }
  ASSERT_FALSE(unknown.empty()) << "no key of 24 has both crashed workers as owners";
  ASSERT_FALSE(answered.empty()) << "every key of 24 has both crashed workers as owners";
  SetParam nx;
  nx.if_absent = true;
  Status one = b->Set(unknown[0], "v", nx);
  EXPECT_TRUE(one.IsUnavailable()) << one.ToString();
  Status big = b->Set(unknown[0], std::string(2 << 20, 'z'), nx);  // through shared memory
  EXPECT_TRUE(big.IsUnavailable()) << big.ToString();
  Status tx = b->MSetTx({answered[0], unknown[0]}, {"x", "y"}, nx);
  EXPECT_TRUE(tx.IsUnavailable()) << tx.ToString();
  auto each = b->MSetEach({answered[0], unknown[0]}, {"x", "y"}, nx);
  EXPECT_TRUE(each.status().IsUnavailable()) << each.status().ToString();
  // None of those wrote anything here (a local copy would be read at once;
  // without one, the unanswered owners make the read fail too).
  EXPECT_TRUE(b->Get(answered[0]).status().IsNotFound());
  auto lost = b->Get(unknown[0]);
  EXPECT_TRUE(lost.status().IsUnavailable()) << lost.status().ToString();
  // A key whose owner answers is written as before.
  ASSERT_TRUE(b->Set(answered[0], "x", nx).ok());
  EXPECT_EQ(b->Get(answered[0]).ValueOr(""), "x");
  EXPECT_TRUE(b->Set(answered[0], "again", nx).IsAlreadyExists());
}

TEST_F(MultiWorker, OverwriteAndDeleteReachEveryCopy) {
  auto a = Client(0), b = Client(1), c = Client(2);
  ASSERT_TRUE(a->Set("k", "first").ok());
  EXPECT_EQ(b->Get("k").ValueOr(""), "first");  // b now caches a copy
  EXPECT_EQ(c->Get("k").ValueOr(""), "first");
  ASSERT_TRUE(c->Set("k", "second").ok());      // overwrite elsewhere drops the copies
  EXPECT_EQ(b->Get("k").ValueOr(""), "second");
  EXPECT_EQ(a->Get("k").ValueOr(""), "second");
  auto n = b->Delete({"k"});
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, 1u);
  for (auto* cl : {a.get(), b.get(), c.get()}) {
    EXPECT_TRUE(cl->Get("k").status().IsNotFound());
    EXPECT_FALSE((*cl->Exist({"k"}))[0]);
  }
}

TEST_F(MultiWorker, KilledWorkerFailsFastNamingKeyAndWorker) {
  auto a = Client(0), b = Client(1), c = Client(2);
  auto on_a = Keys("a", 20), on_c = Keys("c", 20);
  Write(*a, on_a, 64 << 10);
  Write(*c, on_c, 64 << 10);
  const std::string dead = workers_[0]->address();
  a.reset();
  workers_[0]->Crash();  // kill -9
  // Before the lease runs out: the pull fails at once (connection refused).
  auto t0 = Clock::now();
  auto r = b->GetBuffers({on_a[0]});
  auto took = Clock::now() - t0;
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find(on_a[0]), std::string::npos) << r.status().ToString();
  EXPECT_NE(r.status().message().find(dead), std::string::npos) << r.status().ToString();
  EXPECT_LT(took, std::chrono::seconds(3));
  ExpectValues(*b, on_c, 64 << 10);  // keys on live workers still read fine
  // Once the worker left the ring, the owner reports the key lost.
  ASSERT_TRUE(testing::Eventually(
      [&] {
        auto x = b->Get(on_a[1]);
        return !x.ok() && x.status().message().find("lost") != std::string::npos;
      },
      std::chrono::seconds(15)));
  auto lost = b->Get(on_a[2]);
  EXPECT_NE(lost.status().message().find(on_a[2]), std::string::npos);
  EXPECT_NE(lost.status().message().find(dead), std::string::npos);
  ExpectValues(*c, on_c, 64 << 10);
  ExpectValues(*b, on_c, 64 << 10);
}

TEST_F(MultiWorker, RestartedWorkerRejoins) {
  auto b = Client(1);
  {
    auto a = Client(0);
    Write(*a, Keys("old", 5), 1000);
  }
  const int port = workers_[0]->port();
  workers_[0]->Stop();
  ASSERT_EQ(workers_[0]->Start(port), "");
  auto a = Client(0);
  Write(*a, Keys("new", 5), 1000);
  ExpectValues(*b, Keys("new", 5), 1000);
  auto old = b->Get("old/0");
  ASSERT_FALSE(old.ok());  // its bytes died with the old run: never stale bytes
  // The restarted worker serves as an owner again.
  Write(*b, Keys("fromb", 50), 100);
  ExpectValues(*a, Keys("fromb", 50), 100);
}

TEST_F(MultiWorker, EtcdOutageKeepsServingAndRejoins) {
  auto a = Client(0), b = Client(1), c = Client(2);
  Write(*a, Keys("pre", 30), 4096);
  etcd_->Stop();
  // Workers keep serving what they hold, also across nodes.
  ExpectValues(*b, Keys("pre", 30), 4096);
  Write(*c, Keys("during", 10), 4096);
  ExpectValues(*a, Keys("during", 10), 4096);
  etcd_->Start();
  ASSERT_TRUE(testing::Eventually([&] { return ProbeEtcd(etcd_->address(), 500).ok(); },
                                  std::chrono::seconds(20)));
  // A new worker joins the returned etcd and sees everything.
  AddWorker();
  auto d = Client(3);
  ExpectValues(*d, Keys("pre", 30), 4096);
  ExpectValues(*d, Keys("during", 10), 4096);
  Write(*d, Keys("post", 10), 4096);
  ExpectValues(*a, Keys("post", 10), 4096);
}

// `dscli status --worker_address` of one worker: its JSON (null when the
// output is not JSON, with the output in *text).
nlohmann::json StatusJson(const std::string& address, std::string* text) {
  auto r = testing::RunProgram({DSCLI_BIN, "status", "--worker_address", address, "--json"});
  *text = r.output;
  if (r.code != 0) return nullptr;
  return nlohmann::json::parse(r.output, nullptr, /*allow_exceptions=*/false);
}

const nlohmann::json* Row(const nlohmann::json& doc, const std::string& worker) {
  for (const auto& w : doc["workers"]) {
    if (w["worker"] == worker) return &w;
  }
  return nullptr;
}

TEST_F(MultiWorker, AReadOfPartOfAValueOnAnotherWorkerPullsOnlyThatPart) {
  auto a = Client(0), c = Client(2);
  const std::string key = "ranged";
  const size_t size = 4 << 20;
  Write(*a, {key}, size);
  const std::string value = ValueOf(key, size);
  ASSERT_OK_AND_ASSIGN(auto before, c->Stats());
  {
    // Two ranges of the one value, the second running past its end.
    ASSERT_OK_AND_ASSIGN(auto parts, c->Read({{key, (1 << 20) + 3, 64 << 10}, {key, size - 10, 100}}));
    ASSERT_TRUE(parts[0].has_value() && parts[1].has_value());
    EXPECT_TRUE(parts[0]->view() == std::string_view(value).substr((1 << 20) + 3, 64 << 10));
    EXPECT_TRUE(parts[1]->view() == std::string_view(value).substr(size - 10));
    ASSERT_OK_AND_ASSIGN(auto during, c->Stats());
    EXPECT_EQ(during.pulls - before.pulls, 2u);
    EXPECT_EQ(during.pulled_bytes - before.pulled_bytes, (64u << 10) + 10);
    // The parts are the reader's own: no copy of the key is kept here.
    EXPECT_EQ(during.objects, before.objects);
  }
  ASSERT_OK_AND_ASSIGN(auto after, c->Stats());
  EXPECT_EQ(after.used, before.used) << "the parts' memory goes with their last view";
  // A range that starts past the end is an error naming the key, as for a
  // local value; one that covers the whole value pulls (and keeps) it whole.
  auto past = c->Read({{key, size, 1}});
  ASSERT_TRUE(past.status().IsInvalid()) << past.status().ToString();
  EXPECT_NE(past.status().message().find("out of range: read offset 4194304 of key 'ranged'"), std::string::npos)
      << past.status().ToString();
  ASSERT_OK_AND_ASSIGN(auto whole, c->Read({{key, 0, 0}}));
  ASSERT_TRUE(whole[0].has_value());
  EXPECT_TRUE(whole[0]->view() == value);
  ASSERT_OK_AND_ASSIGN(auto cached, c->Stats());
  EXPECT_EQ(cached.objects, before.objects + 1);
  // Now local: a part of it is a slice of the cached copy, no pull.
  ASSERT_OK_AND_ASSIGN(auto again, c->Read({{key, 5, 7}}));
  EXPECT_TRUE(again[0]->view() == std::string_view(value).substr(5, 7));
  ASSERT_OK_AND_ASSIGN(auto last, c->Stats());
  EXPECT_EQ(last.pulls, cached.pulls);
}

TEST_F(MultiWorker, DscliStatusShowsEveryWorkerOfTheCluster) {
  auto a = Client(0), c = Client(2);
  Write(*a, Keys("st", 4), 1 << 20);
  ExpectValues(*c, Keys("st", 4), 1 << 20);  // four pulls into worker 2
  std::string text;
  nlohmann::json doc;
  // Every worker sees the other two (views settle after the joins).
  ASSERT_TRUE(testing::Eventually(
      [&] {
        doc = StatusJson(workers_[2]->address(), &text);
        if (!doc.is_object() || doc["workers"].size() != 3) return false;
        for (const auto& w : doc["workers"]) {
          if (w["state"] != "running" || w["peers"].size() != 2) return false;
        }
        return true;
      },
      std::chrono::seconds(10)))
      << text;
  EXPECT_EQ(doc["coordination"], etcd_->address());
  const auto* reader = Row(doc, workers_[2]->address());
  const auto* writer = Row(doc, workers_[0]->address());
  ASSERT_TRUE(reader != nullptr && writer != nullptr) << text;
  EXPECT_EQ((*reader)["pid"], workers_[2]->pid());
  EXPECT_EQ((*reader)["pulls"], 4);
  EXPECT_EQ((*reader)["pulled_bytes"], 4 << 20);
  EXPECT_EQ((*reader)["pull_failures"], 0);
  EXPECT_GE((*reader)["clients"], 1);  // c
  EXPECT_EQ((*writer)["pulls"], 0);
  EXPECT_GE((*writer)["objects"], 4);
  EXPECT_GE((*writer)["used"], 4 << 20);

  // The table: a line per worker, read at a glance.
  auto table = testing::RunProgram({DSCLI_BIN, "status", "--worker_address", workers_[0]->address()});
  ASSERT_EQ(table.code, 0) << table.output;
  EXPECT_NE(table.output.find("cluster through " + etcd_->address() + ": 3 workers, 3 answering"),
            std::string::npos)
      << table.output;
  for (const auto& w : workers_) {
    EXPECT_NE(table.output.find(w->address() + "  running"), std::string::npos) << table.output;
  }
  EXPECT_NE(table.output.find("4.0 MiB"), std::string::npos) << table.output;  // worker 2 pulled

  // A worker killed with -9: a row that says it does not answer (until it
  // leaves the view), never a failed status; then two workers.
  workers_[1]->Crash();
  doc = StatusJson(workers_[0]->address(), &text);
  ASSERT_TRUE(doc.is_object()) << text;
  if (const auto* dead = Row(doc, workers_[1]->address())) {
    EXPECT_EQ((*dead)["state"], "no answer") << text;
    EXPECT_NE((*dead)["error"].get<std::string>().find("no answer in"), std::string::npos) << text;
  }
  EXPECT_TRUE(testing::Eventually(
      [&] {
        doc = StatusJson(workers_[0]->address(), &text);
        return doc.is_object() && doc["workers"].size() == 2 &&
               Row(doc, workers_[1]->address()) == nullptr;
      },
      std::chrono::seconds(10)))
      << text;
}

}  // namespace
}  // namespace ds
