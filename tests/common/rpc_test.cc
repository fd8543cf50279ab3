// RpcServer / RpcClient over tcp loopback: failing handlers, dead peers,
// deferred replies, concurrency and hostile raw peers.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <deque>
#include <future>
#include <string>
#include <thread>
#include <vector>

#include "common/test_util.h"
#include "common/wire/rpc.h"

namespace tqds::wire {
namespace {

using namespace std::chrono_literals;
using Packer = msgpack::packer<msgpack::sbuffer>;

// Request types the test servers understand.
constexpr MsgType kEcho = MsgType::kCtlPing;        // replies with the request's body + payloads
constexpr MsgType kThrow = MsgType::kCtlAllocate;   // handler throws std::runtime_error
constexpr MsgType kFail = MsgType::kCtlGetMeta;     // handler replies with an error status
constexpr MsgType kDefer = MsgType::kCtlNotifyProduced;  // reply later, from the tick hook
constexpr MsgType kThrowInt = MsgType::kCtlListPartitions;  // handler throws a non-std exception

Message Request(MsgType type, const std::string& text) {
  Message m(type, 0);
  m.set_body(PackBody([&](Packer& pk) {
    pk.pack_map(1);
    pk.pack("text");
    pk.pack(text);
  }));
  return m;
}

std::string TextOf(const Message& m) {
  auto rd = MapReader::Of(m.body(), "reply");
  if (!rd.ok()) return "<" + rd.status().ToString() + ">";
  auto t = rd->Get<std::string>("text");
  return t.ok() ? *t : "<" + t.status().ToString() + ">";
}

Message Echo(const Message& req) {
  Message rep = Message::ReplyTo(req);
  rep.set_body(PackBody([&](Packer& pk) {
    pk.pack_map(1);
    pk.pack("text");
    pk.pack(TextOf(req));
  }));
  rep.payloads() = req.payloads();
  return rep;
}

// A server on a free tcp port with deferred replies released by the tick
// hook once `release_deferred` is set.
class TestServer {
 public:
  TestServer() {
    auto s = RpcServer::Bind(
        "tcp://127.0.0.1:0",
        [this](Message&& m, Responder r) {
          ++handled;
          switch (m.type()) {
            case kEcho: r.Reply(Echo(m)); return;
            case kThrow: throw std::runtime_error("handler exploded: " + TextOf(m));
            case kFail: r.ReplyError(Status::NotFound("no such thing: ", TextOf(m))); return;
            case kDefer: deferred_.push_back({std::move(r), TextOf(m)}); return;
            case kThrowInt: throw 42;
            default: r.ReplyError(Status::Invalid("unknown type ", int(m.type())));
          }
        },
        [this](Clock::time_point) {
          ++ticks;
          if (release_deferred.load()) {
            for (auto& entry : deferred_) {
              Message rep(kDefer, 0);
              const std::string late = "late " + entry.second;
              rep.set_body(PackBody([&](Packer& pk) {
                pk.pack_map(1);
                pk.pack("text");
                pk.pack(late);
              }));
              entry.first.Reply(std::move(rep));
            }
            deferred_.clear();
          }
          return std::chrono::milliseconds(5);
        });
    EXPECT_TRUE(s.ok()) << s.status().ToString();
    server = s.MoveValue();
    server->Start();
  }
  ~TestServer() { server->Stop(); }

  std::unique_ptr<RpcServer> server;
  std::atomic<int> handled{0};
  std::atomic<int> ticks{0};
  std::atomic<bool> release_deferred{false};

 private:
  std::deque<std::pair<Responder, std::string>> deferred_;  // server thread only
};

std::unique_ptr<RpcClient> ConnectTo(const std::string& ep) {
  auto c = RpcClient::Connect(ep);
  EXPECT_TRUE(c.ok()) << c.status().ToString();
  return c.MoveValue();
}

TEST(RpcTest, BindReportsTheRealPort) {
  TestServer s;
  const std::string& ep = s.server->endpoint();
  EXPECT_EQ(ep.rfind("tcp://127.0.0.1:", 0), 0u) << ep;
  EXPECT_EQ(ep.find(":0", ep.size() - 2), std::string::npos) << ep;
}

TEST(RpcTest, BindingATakenAddressFailsClearly) {
  TestServer s;
  auto again = RpcServer::Bind(s.server->endpoint(), [](Message&&, Responder) {});
  EXPECT_STATUS(again, kIOError, "cannot bind");
}

TEST(RpcTest, ConnectRejectsMalformedEndpoint) {
  EXPECT_STATUS(RpcClient::Connect("not-an-endpoint"), kInvalid, "not-an-endpoint");
}

TEST(RpcTest, EchoWithPayloads) {
  TestServer s;
  auto c = ConnectTo(s.server->endpoint());
  Message req = Request(kEcho, "hi");
  req.payloads().push_back(Buffer::CopyString("small"));
  req.payloads().push_back(Buffer::FromString(std::string(100000, 'z')));  // zero-copy path
  req.payloads().push_back(Buffer());
  ASSERT_OK_AND_ASSIGN(Message rep, c->CallSync(std::move(req), 10s));
  EXPECT_EQ(TextOf(rep), "hi");
  ASSERT_EQ(rep.payloads().size(), 3u);
  EXPECT_EQ(rep.payloads()[0].ToString(), "small");
  EXPECT_EQ(rep.payloads()[1].ToString(), std::string(100000, 'z'));
  EXPECT_TRUE(rep.payloads()[2].empty());
}

TEST(RpcTest, ErrorStatusCrossesTheWire) {
  TestServer s;
  auto c = ConnectTo(s.server->endpoint());
  EXPECT_STATUS(c->CallSync(Request(kFail, "x"), 10s), kNotFound, "no such thing: x");
}

TEST(RpcTest, ThrowingHandlerReturnsErrorAndServerKeepsServing) {
  TestServer s;
  auto c = ConnectTo(s.server->endpoint());
  for (int i = 0; i < 3; ++i) {
    EXPECT_STATUS(c->CallSync(Request(kThrow, "boom"), 10s), kInternal, "handler exploded: boom");
    ASSERT_OK_AND_ASSIGN(Message rep, c->CallSync(Request(kEcho, "still here"), 10s));
    EXPECT_EQ(TextOf(rep), "still here");
  }
}

TEST(RpcTest, HandlerThrowingNonStdExceptionReturnsErrorAndServerKeepsServing) {
  TestServer s;
  auto c = ConnectTo(s.server->endpoint());
  auto r = c->CallSync(Request(kThrowInt, ""), 5s);
  EXPECT_FALSE(r.ok());
  EXPECT_FALSE(r.status().IsUnavailable()) << "the server died or never answered: " << r.status().ToString();
  ASSERT_OK_AND_ASSIGN(Message rep, c->CallSync(Request(kEcho, "alive"), 5s));
  EXPECT_EQ(TextOf(rep), "alive");
}

TEST(RpcTest, DeadEndpointFailsWithUnavailableAtTheDeadline) {
  std::string ep;
  {
    TestServer s;  // grab a free port, then free it
    ep = s.server->endpoint();
  }
  auto c = ConnectTo(ep);
  auto t0 = std::chrono::steady_clock::now();
  auto r = c->CallSync(Request(kEcho, "anyone?"), 300ms);
  double secs = testing::SecondsSince(t0);
  // Unavailable by the deadline at the latest (sooner when the transport
  // already knows the peer is gone); the message names the endpoint.
  EXPECT_STATUS(r, kUnavailable, ep);
  EXPECT_LT(secs, 10.0) << "the call must end at its deadline, not hang";
}

TEST(RpcTest, SilentPeerFailsWithUnavailableAtTheDeadline) {
  // A peer that accepts the connection but never answers.
  zmq::socket_t silent(Context(), zmq::socket_type::router);
  silent.set(zmq::sockopt::linger, 0);
  silent.bind("tcp://127.0.0.1:*");
  std::string ep = silent.get(zmq::sockopt::last_endpoint);
  auto c = ConnectTo(ep);
  auto t0 = std::chrono::steady_clock::now();
  auto r = c->CallSync(Request(kEcho, "hello?"), 300ms);
  double secs = testing::SecondsSince(t0);
  EXPECT_STATUS(r, kUnavailable, ep);
  EXPECT_GE(secs, 0.25) << "failed before its deadline although the peer is connected";
  EXPECT_LT(secs, 10.0) << "the call must end at its deadline, not hang";
}

TEST(RpcTest, ManyPendingCallsToADeadPeerAllTimeOut) {
  std::string ep;
  {
    TestServer s;
    ep = s.server->endpoint();
  }
  auto c = ConnectTo(ep);
  std::vector<std::future<Result<Message>>> fs;
  for (int i = 0; i < 50; ++i) fs.push_back(c->Call(Request(kEcho, "x"), std::chrono::milliseconds(100 + i)));
  for (auto& f : fs) {
    ASSERT_EQ(f.wait_for(10s), std::future_status::ready);
    EXPECT_TRUE(f.get().status().IsUnavailable());
  }
}

TEST(RpcTest, DestroyingClientCancelsPendingCalls) {
  std::string ep;
  {
    TestServer s;
    ep = s.server->endpoint();
  }
  std::future<Result<Message>> f;
  {
    auto c = ConnectTo(ep);
    f = c->Call(Request(kEcho, "x"), 60s);
  }
  ASSERT_EQ(f.wait_for(5s), std::future_status::ready);
  EXPECT_EQ(f.get().status().code(), StatusCode::kCancelled);
}

TEST(RpcTest, ClientReconnectsWhenServerStartsLater) {
  // A client created before its server exists still gets an answer.
  std::string ep;
  {
    TestServer s;
    ep = s.server->endpoint();
  }
  auto c = ConnectTo(ep);
  // The old socket is closed asynchronously by ZMQ: retry the bind until
  // the port is free again.
  std::unique_ptr<RpcServer> server;
  ASSERT_TRUE(testing::Eventually([&] {
    auto bound = RpcServer::Bind(ep, [](Message&& m, Responder r) { r.Reply(Echo(m)); });
    if (bound.ok()) server = bound.MoveValue();
    return server != nullptr;
  }, 10s)) << "could not re-bind " << ep;
  server->Start();
  ASSERT_OK_AND_ASSIGN(Message rep, c->CallSync(Request(kEcho, "late server"), 10s));
  EXPECT_EQ(TextOf(rep), "late server");
}

TEST(RpcTest, DeferredReplyDoesNotDelayOtherRequests) {
  TestServer s;
  auto waiting_client = ConnectTo(s.server->endpoint());
  auto other_client = ConnectTo(s.server->endpoint());
  auto deferred = waiting_client->Call(Request(kDefer, "d1"), 30s);
  // Requests from the same and from another connection are answered while
  // the deferred one is parked.
  for (int i = 0; i < 20; ++i) {
    auto t0 = std::chrono::steady_clock::now();
    ASSERT_OK_AND_ASSIGN(Message rep, other_client->CallSync(Request(kEcho, "quick"), 10s));
    EXPECT_EQ(TextOf(rep), "quick");
    ASSERT_OK_AND_ASSIGN(Message rep2, waiting_client->CallSync(Request(kEcho, "same conn"), 10s));
    EXPECT_EQ(TextOf(rep2), "same conn");
    EXPECT_LT(testing::SecondsSince(t0), 1.0);
  }
  EXPECT_EQ(deferred.wait_for(0ms), std::future_status::timeout) << "deferred reply came early";
  s.release_deferred = true;
  ASSERT_EQ(deferred.wait_for(10s), std::future_status::ready);
  ASSERT_OK_AND_ASSIGN(Message rep, deferred.get());
  EXPECT_EQ(TextOf(rep), "late d1");
  EXPECT_EQ(rep.type(), kDefer);
}

TEST(RpcTest, TickHookRunsWhileIdle) {
  TestServer s;
  int before = s.ticks.load();
  ASSERT_TRUE(testing::Eventually([&] { return s.ticks.load() >= before + 5; }, 5s));
}

TEST(RpcTest, ConcurrentCallsFromManyThreadsGetTheirOwnReplies) {
  TestServer s;
  auto c = ConnectTo(s.server->endpoint());
  constexpr int kThreads = 8, kCalls = 200;
  std::atomic<int> mismatches{0}, failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kCalls; ++i) {
        std::string text = "t" + std::to_string(t) + "-" + std::to_string(i);
        Message req = Request(kEcho, text);
        req.payloads().push_back(Buffer::FromString(text + std::string(static_cast<size_t>(i % 7) * 100, '.')));
        auto r = c->CallSync(std::move(req), 20s);
        if (!r.ok()) {
          ++failures;
          continue;
        }
        if (TextOf(*r) != text || r->payloads().size() != 1 ||
            r->payloads()[0].ToString().rfind(text, 0) != 0) {
          ++mismatches;
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(mismatches.load(), 0);
  EXPECT_EQ(s.handled.load(), kThreads * kCalls);
}

TEST(RpcTest, ManyClientsInParallel) {
  TestServer s;
  std::vector<std::thread> threads;
  std::atomic<int> ok{0};
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      auto c = RpcClient::Connect(s.server->endpoint());
      if (!c.ok()) return;
      for (int i = 0; i < 50; ++i) {
        auto r = (*c)->CallSync(Request(kEcho, std::to_string(t * 1000 + i)), 20s);
        if (r.ok() && TextOf(*r) == std::to_string(t * 1000 + i)) ++ok;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(ok.load(), 8 * 50);
}

// A raw DEALER that speaks no protocol at all.
class RawPeer {
 public:
  explicit RawPeer(const std::string& ep) : sock_(Context(), zmq::socket_type::dealer) {
    sock_.set(zmq::sockopt::linger, 0);
    sock_.set(zmq::sockopt::rcvtimeo, 10000);
    sock_.connect(ep);
  }
  void Send(const std::vector<std::string>& frames) {
    for (size_t i = 0; i < frames.size(); ++i) {
      auto flags = i + 1 == frames.size() ? zmq::send_flags::none : zmq::send_flags::sndmore;
      sock_.send(zmq::message_t(frames[i].data(), frames[i].size()), flags);
    }
  }
  // Receives one reply and decodes its header.
  Result<Message> Recv() { return RecvMessage(sock_); }

 private:
  zmq::socket_t sock_;
};

TEST(RpcTest, RawGarbageFramesGetErrorRepliesAndServerKeepsServing) {
  TestServer s;
  RawPeer raw(s.server->endpoint());
  const std::vector<std::vector<std::string>> garbage = {
      {"garbage"},
      {""},
      {std::string("\xc1\x00\xff", 3)},
      {std::string("\x96\x01", 2)},  // truncated header
      {"not a header", "payload", "payload"},
      {std::string("\xdd\xff\xff\xff\xff", 5)},  // array32 of 4G elements
  };
  for (const auto& frames : garbage) {
    raw.Send(frames);
    auto reply = raw.Recv();
    ASSERT_TRUE(reply.ok()) << "no (decodable) reply to garbage: " << reply.status().ToString();
    EXPECT_TRUE(reply->status().IsInvalid()) << reply->status().ToString();
  }
  // A well-formed request on the same raw connection still works.
  Message ping = Request(kEcho, "raw ok");
  ping.set_request_id(99);
  raw.Send({ping.EncodeHeader()});
  ASSERT_OK_AND_ASSIGN(Message rep, raw.Recv());
  EXPECT_TRUE(rep.status().ok());
  EXPECT_EQ(rep.request_id(), 99u);
  EXPECT_EQ(TextOf(rep), "raw ok");
  // And so do ordinary clients.
  auto c = ConnectTo(s.server->endpoint());
  ASSERT_OK_AND_ASSIGN(Message rep2, c->CallSync(Request(kEcho, "fine"), 10s));
  EXPECT_EQ(TextOf(rep2), "fine");
}

TEST(RpcTest, UnknownTypeFromRawPeerIsAnError) {
  TestServer s;
  RawPeer raw(s.server->endpoint());
  Message m(static_cast<MsgType>(4242), 7);
  raw.Send({m.EncodeHeader()});
  ASSERT_OK_AND_ASSIGN(Message rep, raw.Recv());
  EXPECT_STATUS(rep.status(), kInvalid, "unknown type 4242");
  EXPECT_EQ(rep.request_id(), 7u);
}

TEST(RpcTest, ServerStopIsPromptAndIdempotent) {
  TestServer s;
  auto t0 = std::chrono::steady_clock::now();
  s.server->Stop();
  s.server->Stop();
  EXPECT_LT(testing::SecondsSince(t0), 2.0);
}

}  // namespace
}  // namespace tqds::wire
