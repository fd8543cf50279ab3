// KVClient against a real datasystem_worker process: every call, many processes at
// once, a client killed while holding buffers, spill and reload, out of
// space, and hostile input on both of the worker's sockets.
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <cstring>
#include <thread>

#include "common/wire/rpc.h"
#include "datasystem/local_frame.h"
#include "datasystem/protocol.h"
#include "ds/kv_client.h"
#include "test_util.h"

namespace ds {
namespace {

using testing::RandomBytes;
using testing::WorkerProcess;
using tqds::wire::Message;
using tqds::wire::MsgType;

class KVClientTest : public ::testing::Test {
 protected:
  void StartWorker(WorkerProcess::Config config = {}) {
    worker_ = std::make_unique<WorkerProcess>(config);
    std::string err = worker_->Start();
    ASSERT_EQ(err, "");
    client_ = NewClient();
  }
  void SetUp() override { StartWorker(); }
  std::unique_ptr<KVClient> NewClient() {
    auto c = std::make_unique<KVClient>("127.0.0.1", worker_->port());
    Status st = c->Init();
    EXPECT_TRUE(st.ok()) << st.ToString();
    return c;
  }
  WorkerStats Stats() { return *client_->Stats(); }

  std::unique_ptr<WorkerProcess> worker_;
  std::unique_ptr<KVClient> client_;
};

TEST_F(KVClientTest, SetGetSmallAndLarge) {
  ASSERT_TRUE(client_->Set("small", "hello").ok());
  EXPECT_EQ(*client_->Get("small"), "hello");
  std::string big = RandomBytes(3 << 20, 1);
  ASSERT_TRUE(client_->Set("big", big).ok());
  EXPECT_EQ(*client_->Get("big"), big);
  ASSERT_TRUE(client_->Set("empty", "").ok());
  EXPECT_EQ(*client_->Get("empty"), "");
  auto miss = client_->Get("nope");
  EXPECT_TRUE(miss.status().IsNotFound());
  EXPECT_NE(miss.status().message().find("'nope'"), std::string::npos);
  ASSERT_TRUE(client_->Set("small", "overwritten").ok());
  EXPECT_EQ(*client_->Get("small"), "overwritten");
  EXPECT_TRUE(client_->Set(std::string(1025, 'k'), "x").IsInvalid());
  EXPECT_TRUE(client_->Set(std::string(1024, 'k'), "x").ok());
}

TEST_F(KVClientTest, MSetMGet) {
  std::vector<std::string> keys = {"a", "b", "c"};
  std::string big = RandomBytes(100 << 10, 2);
  ASSERT_TRUE(client_->MSet(keys, {"1", "22", big}).ok());
  auto got = client_->MGet({"a", "missing", "c", "b"});
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(*(*got)[0], "1");
  EXPECT_FALSE((*got)[1].has_value());
  EXPECT_EQ(*(*got)[2], big);
  EXPECT_EQ(*(*got)[3], "22");
  EXPECT_TRUE(client_->MSet({"x"}, {"1", "2"}).IsInvalid());
}

TEST_F(KVClientTest, ZeroCopyWriteAndRead) {
  std::vector<std::string> keys;
  std::vector<uint64_t> sizes;
  for (int i = 0; i < 2000; ++i) {
    keys.push_back("zc/" + std::to_string(i));
    sizes.push_back(64 + i);
  }
  auto created = client_->MCreate(keys, sizes);
  ASSERT_TRUE(created.ok()) << created.status().ToString();
  for (auto& b : *created) std::memset(b.data(), b.key().back(), b.size());
  // Not visible before the seal.
  EXPECT_FALSE((*client_->Exist({keys[0]}))[0]);
  ASSERT_TRUE(client_->MSetBuffer(*created).ok());
  std::vector<std::string> ask = keys;
  ask.push_back("zc/missing");
  auto views = client_->GetBuffers(ask);
  ASSERT_TRUE(views.ok());
  for (size_t i = 0; i < keys.size(); ++i) {
    ASSERT_TRUE((*views)[i].has_value());
    EXPECT_EQ((*views)[i]->size(), sizes[i]);
    EXPECT_EQ((*views)[i]->data()[0], static_cast<uint8_t>(keys[i].back()));
  }
  EXPECT_FALSE(views->back().has_value());  // a miss is an empty entry
  EXPECT_EQ(Stats().pinned_blocks, keys.size());
  views->clear();  // releasing the views releases the pins
  EXPECT_TRUE(testing::Eventually([&] { return Stats().pinned_blocks == 0; }));
}

TEST_F(KVClientTest, ViewsStayValidAcrossDeleteOverwriteAndClientDestruction) {
  ASSERT_TRUE(client_->Set("k", std::string(100000, 'a')).ok());
  auto views = client_->GetBuffers({"k"});
  ASSERT_TRUE(views.ok());
  ASSERT_TRUE(client_->Set("k", std::string(100000, 'b')).ok());
  ASSERT_EQ(*client_->Delete({"k"}), 1u);
  client_.reset();
  EXPECT_EQ((*views)[0]->view(), std::string(100000, 'a'));
}

TEST_F(KVClientTest, UnsealedWriteBufferAbortsOnDestruction) {
  {
    auto created = client_->MCreate({"u"}, {4096});
    ASSERT_TRUE(created.ok());
    EXPECT_EQ(Stats().pending_creates, 1u);
  }
  EXPECT_EQ(Stats().pending_creates, 0u);
  EXPECT_EQ(Stats().used, 0u);
}

TEST_F(KVClientTest, DeleteExist) {
  ASSERT_TRUE(client_->MSet({"d1", "d2"}, {"x", "y"}).ok());
  EXPECT_EQ(*client_->Exist({"d1", "d2", "d3"}), (std::vector<bool>{true, true, false}));
  EXPECT_EQ(*client_->Delete({"d1", "d3"}), 1u);
  EXPECT_EQ(*client_->Delete({"d1"}), 0u);  // idempotent
  EXPECT_EQ(*client_->Exist({"d1", "d2"}), (std::vector<bool>{false, true}));
}

TEST_F(KVClientTest, SetIfAbsent) {
  SetParam nx;
  nx.if_absent = true;
  ASSERT_TRUE(client_->Set("once", "first", nx).ok());
  EXPECT_TRUE(client_->Set("once", "second", nx).IsAlreadyExists());
  EXPECT_EQ(*client_->Get("once"), "first");
  auto created = client_->MCreate({"once"}, {10}, nx);
  EXPECT_TRUE(created.status().IsAlreadyExists());
}

TEST_F(KVClientTest, TtlExpires) {
  SetParam ttl;
  ttl.ttl_seconds = 1;
  ASSERT_TRUE(client_->Set("short", "lived", ttl).ok());
  ASSERT_TRUE(client_->Set("long", "lived").ok());
  EXPECT_TRUE((*client_->Exist({"short"}))[0]);
  EXPECT_TRUE(testing::Eventually([&] { return !(*client_->Exist({"short"}))[0]; },
                                  std::chrono::seconds(5)));
  EXPECT_TRUE((*client_->Exist({"long"}))[0]);
}

TEST_F(KVClientTest, GetWaitsForAKeyToAppear) {
  auto writer = NewClient();
  std::thread t([&] { ASSERT_TRUE(writer->Set("later", "arrived").ok()); });
  auto got = client_->Get("later", 10000);
  t.join();
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(*got, "arrived");
  auto miss = client_->Get("never", 50);
  EXPECT_TRUE(miss.status().IsNotFound());
  EXPECT_NE(miss.status().message().find("waited"), std::string::npos);
}

TEST_F(KVClientTest, OneClientManyThreads) {
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 500; ++i) {
        std::string k = "t" + std::to_string(t) + "/" + std::to_string(i);
        if (!client_->Set(k, k).ok()) ++failures;
        auto v = client_->Get(k);
        if (!v.ok() || *v != k) ++failures;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(failures, 0);
  EXPECT_EQ(Stats().objects, 2000u);
}

TEST_F(KVClientTest, EightProcessesTenThousandKeysEach) {
  std::vector<testing::ProcessGuard> guards(8);
  std::vector<int> fds(8);
  for (int p = 0; p < 8; ++p) {
    guards[p].Reset(testing::Spawn({DS_TEST_CLIENT_BIN, "load", std::to_string(worker_->port()),
                                    "proc" + std::to_string(p), "10000", "256"},
                                   &fds[p]));
  }
  for (int p = 0; p < 8; ++p) {
    std::string line = testing::ReadLine(fds[p]);
    ::close(fds[p]);
    EXPECT_EQ(line, "OK") << "client " << p;
    int status = 0;
    ::waitpid(guards[p].pid(), &status, 0);
    guards[p].Forget();
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  }
  EXPECT_EQ(Stats().objects, 80000u);
  // The worker drops a dead client's pins when it sees the connection close,
  // which can come a moment after the process exited.
  EXPECT_TRUE(testing::Eventually([&] { return Stats().pinned_blocks == 0; }));
  auto v = client_->Get("proc7/9999");
  ASSERT_TRUE(v.ok());
  EXPECT_EQ(v->size(), 256u);
}

TEST_F(KVClientTest, KilledClientGivesItsMemoryBack) {
  ASSERT_TRUE(client_->Set("held", std::string(1 << 20, 'h')).ok());
  const uint64_t baseline = Stats().used;
  int fd = -1;
  testing::ProcessGuard holder(testing::Spawn(
      {DS_TEST_CLIENT_BIN, "hold", std::to_string(worker_->port()), "held"}, &fd));
  ASSERT_EQ(testing::ReadLine(fd), "HOLDING");
  ::close(fd);
  auto s = Stats();
  EXPECT_EQ(s.pinned_blocks, 1u);
  EXPECT_EQ(s.pending_creates, 1u);
  EXPECT_GT(s.used, baseline);
  ASSERT_EQ(*client_->Delete({"held"}), 1u);  // orphaned: still pinned by the holder
  EXPECT_GT(Stats().used, 0u);
  holder.Kill(SIGKILL);
  EXPECT_TRUE(testing::Eventually([&] {
    auto st = Stats();
    return st.pinned_blocks == 0 && st.pending_creates == 0 && st.used == 0;
  }));
}

TEST_F(KVClientTest, SpillAndReloadAreByteIdentical) {
  testing::TempDir spill;
  WorkerProcess::Config cfg;
  cfg.shm_mb = 16;
  cfg.spill_dir = spill.path();
  cfg.spill_mb = 128;
  StartWorker(cfg);
  std::vector<std::string> values;
  for (int i = 0; i < 48; ++i) {  // 48 MiB through a 16 MiB arena
    values.push_back(RandomBytes(1 << 20, 100 + i));
    ASSERT_TRUE(client_->Set("s" + std::to_string(i), values.back()).ok()) << i;
  }
  auto s = Stats();
  EXPECT_GT(s.spills, 0u);
  EXPECT_GT(s.spilled_objects, 0u);
  EXPECT_LE(s.used, 16u << 20);
  for (int i = 0; i < 48; ++i) {
    auto v = client_->Get("s" + std::to_string(i));
    ASSERT_TRUE(v.ok()) << v.status().ToString();
    EXPECT_TRUE(*v == values[i]) << "key s" << i << " differs after reload";
  }
  EXPECT_GT(Stats().reloads, 0u);
  // Every spill file sits inside the spill directory.
  for (const auto& e : std::filesystem::recursive_directory_iterator(spill.path())) {
    EXPECT_EQ(e.path().string().rfind(spill.path(), 0), 0u);
  }
}

TEST_F(KVClientTest, OutOfSpaceIsClearAndNothingIsDropped) {
  testing::TempDir spill;
  WorkerProcess::Config cfg;
  cfg.shm_mb = 8;
  cfg.spill_dir = spill.path();
  cfg.spill_mb = 4;
  StartWorker(cfg);
  Status st;
  int written = 0;
  for (; written < 64; ++written) {
    st = client_->Set("o" + std::to_string(written), std::string(1 << 20, 'o'));
    if (!st.ok()) break;
  }
  ASSERT_TRUE(st.IsOutOfSpace()) << st.ToString();
  EXPECT_NE(st.message().find("--shared_memory_size_mb"), std::string::npos) << st.message();
  EXPECT_NE(st.message().find("--spill_size_limit_mb"), std::string::npos);
  for (int i = 0; i < written; ++i) EXPECT_TRUE(client_->Get("o" + std::to_string(i)).ok()) << i;
  // Evictable writes still succeed by dropping only evictable objects.
  ASSERT_EQ(*client_->Delete({"o0", "o1", "o2"}), 3u);
  SetParam ev;
  ev.evictable = true;
  for (int i = 0; i < 10; ++i) {
    ASSERT_TRUE(client_->Set("e" + std::to_string(i), std::string(1 << 20, 'e'), ev).ok()) << i;
  }
  for (int i = 3; i < written; ++i) {
    auto v = client_->Get("o" + std::to_string(i));
    EXPECT_TRUE(v.ok()) << i << " " << v.status().ToString();
  }
}

// Raw Unix-socket access for hostile-input tests.
int ConnectUnix(const std::string& path) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::strncpy(a.sun_path, path.c_str(), sizeof(a.sun_path) - 1);
  EXPECT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
  return fd;
}

TEST_F(KVClientTest, MalformedAndTruncatedRequestsGetErrorsAndTheWorkerKeepsServing) {
  ASSERT_TRUE(client_->Set("alive", "yes").ok());
  {  // garbage framing: an error frame, then the connection is closed
    int fd = ConnectUnix(worker_->socket_path());
    const char junk[] = "GET / HTTP/1.1\r\n\r\n";
    ASSERT_GT(::write(fd, junk, sizeof(junk)), 0);
    auto reply = ReadFrame(fd);
    ASSERT_TRUE(reply.ok()) << reply.status().ToString();
    EXPECT_TRUE(reply->status().IsInvalid());
    EXPECT_TRUE(ReadFrame(fd).status().IsUnavailable());
    ::close(fd);
  }
  {  // bad header, bad bodies, unknown type: errors on a connection that stays usable
    int fd = ConnectUnix(worker_->socket_path());
    uint32_t prefix[4] = {kFrameMagic, 2, 0, 0};
    ASSERT_EQ(::write(fd, prefix, 16), 16);
    ASSERT_EQ(::write(fd, "\x93\x01", 2), 2);
    auto r1 = ReadFrame(fd);
    ASSERT_TRUE(r1.ok());
    EXPECT_TRUE(r1->status().IsInvalid());
    std::vector<Message> bad;
    bad.emplace_back(MsgType::kDsGet, 1);  // no body
    bad.emplace_back(MsgType::kDsCreate, 2);
    bad.back().set_body(tqds::wire::PackBody([](auto& pk) {
      pk.pack_map(2);
      pk.pack("keys");
      pk.pack(std::vector<std::string>{"a", "b"});
      pk.pack("sizes");
      pk.pack(std::vector<uint64_t>{1});
    }));
    bad.emplace_back(MsgType::kDsPut, 3);  // keys without payloads
    bad.back().set_body(tqds::wire::PackBody([](auto& pk) {
      pk.pack_map(1);
      pk.pack("keys");
      pk.pack(std::vector<std::string>{"a"});
    }));
    bad.emplace_back(static_cast<MsgType>(4242), 4);
    bad.emplace_back(MsgType::kDsGet, 5);  // keys of the wrong type
    bad.back().set_body(tqds::wire::PackBody([](auto& pk) {
      pk.pack_map(1);
      pk.pack("keys");
      pk.pack(17);
    }));
    for (const auto& m : bad) {
      ASSERT_TRUE(WriteFrame(fd, m).ok());
      auto r = ReadFrame(fd);
      ASSERT_TRUE(r.ok());
      EXPECT_FALSE(r->status().ok()) << static_cast<int>(m.type());
      EXPECT_EQ(r->request_id(), m.request_id());
    }
    // Hostile releases of offsets this connection never pinned are ignored.
    Message rel(MsgType::kDsRelease, 0);
    rel.set_body(tqds::wire::PackBody([](auto& pk) {
      pk.pack_map(1);
      pk.pack("offsets");
      pk.pack(std::vector<uint64_t>{0, 64, 1ull << 60});
    }));
    ASSERT_TRUE(WriteFrame(fd, rel).ok());
    ASSERT_TRUE(WriteFrame(fd, Message(MsgType::kDsStats, 6)).ok());
    auto ok = ReadFrame(fd);
    ASSERT_TRUE(ok.ok());
    EXPECT_TRUE(ok->status().ok());
    ::close(fd);
  }
  {  // truncated frame, then hang up
    int fd = ConnectUnix(worker_->socket_path());
    uint32_t prefix[4] = {kFrameMagic, 1000, 1, 0};
    ASSERT_EQ(::write(fd, prefix, 16), 16);
    ::close(fd);
  }
  {  // hostile input over TCP
    auto rpc = tqds::wire::RpcClient::Connect("tcp://" + worker_->address());
    ASSERT_TRUE(rpc.ok());
    Message bad(MsgType::kDsGet, 0);
    bad.set_body(tqds::wire::PackBody([](auto& pk) { pk.pack("not a map"); }));
    auto r = (*rpc)->CallSync(std::move(bad), std::chrono::seconds(5));
    EXPECT_TRUE(r.status().IsInvalid()) << r.status().ToString();
    auto c = (*rpc)->CallSync(Message(MsgType::kDsCreate, 0), std::chrono::seconds(5));
    EXPECT_TRUE(c.status().IsInvalid());
  }
  EXPECT_EQ(*client_->Get("alive"), "yes");
  auto fresh = NewClient();
  EXPECT_EQ(*fresh->Get("alive"), "yes");
}

TEST_F(KVClientTest, TcpCopyingPath) {
  auto rpc = tqds::wire::RpcClient::Connect("tcp://" + worker_->address());
  ASSERT_TRUE(rpc.ok());
  Message put(MsgType::kDsPut, 0);
  put.set_body(tqds::wire::PackBody([](auto& pk) {
    pk.pack_map(1);
    pk.pack("keys");
    pk.pack(std::vector<std::string>{"tcp1", "tcp2"});
  }));
  put.payloads().push_back(tqds::Buffer::CopyString("one"));
  put.payloads().push_back(tqds::Buffer::CopyString(std::string(200000, 't')));
  ASSERT_TRUE((*rpc)->CallSync(std::move(put), std::chrono::seconds(5)).ok());
  EXPECT_EQ(*client_->Get("tcp1"), "one");
  // A waiting TCP Get is answered when the key appears, without blocking others.
  Message get(MsgType::kDsGet, 0);
  get.set_body(tqds::wire::PackBody([](auto& pk) {
    pk.pack_map(2);
    pk.pack("keys");
    pk.pack(std::vector<std::string>{"tcp2", "tcp3"});
    pk.pack("wait_ms");
    pk.pack(10000);
  }));
  auto fut = (*rpc)->Call(std::move(get), std::chrono::seconds(20));
  auto stats = (*rpc)->CallSync(Message(MsgType::kDsStats, 0), std::chrono::seconds(5));
  EXPECT_TRUE(stats.ok());
  ASSERT_TRUE(client_->Set("tcp3", "three").ok());
  auto reply = fut.get();
  ASSERT_TRUE(reply.ok()) << reply.status().ToString();
  ASSERT_EQ(reply->payloads().size(), 2u);
  EXPECT_EQ(reply->payloads()[0].size(), 200000u);
  EXPECT_EQ(reply->payloads()[1].ToString(), "three");
}

TEST(KVClientNoWorker, InitSaysNoWorkerAnswers) {
  ClientOptions o;
  o.connect_timeout_ms = 300;
  KVClient c("127.0.0.1", testing::FreePort(), o);
  Status st = c.Init();
  EXPECT_TRUE(st.IsUnavailable()) << st.ToString();
  EXPECT_NE(st.message().find("dscli start"), std::string::npos);
  EXPECT_TRUE(c.Set("k", "v").IsInvalid());
}

}  // namespace
}  // namespace ds
