// The stream channel (stream_codec.h, stream_rpc.h): the framing and the
// handshake key without sockets, then a real StreamServer and StreamClients
// over tcp loopback with generated keys: round trips, refusals of strangers,
// hostile bytes after a valid handshake, a dead or silent server, the
// connection cap. Its own test program: it changes the process's keys.
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sodium.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <future>
#include <string>
#include <vector>

#include "common/socket_io.h"
#include "common/test_util.h"
#include "common/wire/security.h"
#include "common/wire/stream_codec.h"
#include "common/wire/stream_rpc.h"

namespace tqds::wire {
namespace {

using namespace std::chrono_literals;
namespace fs = std::filesystem;

// The bytes a sender puts on the wire for `m`.
std::string Wire(const Message& m) {
  const std::string header = m.EncodeHeader();
  std::string out = EncodeStreamTable(header.size(), m.payloads()) + header;
  for (const Buffer& p : m.payloads()) out.append(p.view());
  return out;
}

Message Sample() {
  Message m(MsgType::kCtlPing, 42);
  m.set_body(PackBody([](auto& pk) { pk.pack(std::string("body")); }));
  m.payloads().push_back(Buffer::CopyString("first"));
  m.payloads().push_back(Buffer());
  m.payloads().push_back(Buffer::CopyString("third frame"));
  return m;
}

void PutU64(std::string& s, size_t at, uint64_t v) { std::memcpy(s.data() + at, &v, 8); }

// A call's status, by value (the macros take a reference).
Status CallStatus(StreamClient& c, Message m = Message(MsgType::kCtlPing, 0),
                  std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
  return c.CallSync(std::move(m), timeout).status();
}

TEST(StreamCodec, AMessageRoundTripsWithItsFrames) {
  const std::string bytes = Wire(Sample());
  ASSERT_OK_AND_ASSIGN(Message m, DecodeStreamMessage(Buffer::CopyString(bytes)));
  EXPECT_EQ(m.type(), MsgType::kCtlPing);
  EXPECT_EQ(m.request_id(), 42u);
  ASSERT_EQ(m.payloads().size(), 3u);
  EXPECT_EQ(m.payloads()[0].view(), "first");
  EXPECT_EQ(m.payloads()[1].size(), 0u);
  EXPECT_EQ(m.payloads()[2].view(), "third frame");
}

TEST(StreamCodec, HostileLengthsAreRefusedNamingWhatIsWrong) {
  const std::string good = Wire(Sample());
  auto decode = [](const std::string& s, StreamLimits limits = {}) {
    return DecodeStreamMessage(Buffer::CopyString(s), limits).status();
  };
  std::string s = good;
  s[0] ^= 1;
  EXPECT_STATUS(decode(s), kInvalid, "not a stream-channel message");
  s = good;
  std::memset(s.data() + 4, 0, 4);
  EXPECT_STATUS(decode(s), kInvalid, "without a header frame");
  StreamLimits few;
  few.max_frames = 2;
  EXPECT_STATUS(decode(good, few), kInvalid, "4 frames (at most 2");
  s = good;
  PutU64(s, 8, 0);
  EXPECT_STATUS(decode(s), kInvalid, "header frame of 0 bytes");
  StreamLimits small_header;
  small_header.max_header_bytes = 4;
  EXPECT_STATUS(decode(good, small_header), kInvalid, "header frame of");
  // Payload lengths that would wrap a 64-bit sum.
  s = good;
  PutU64(s, 16, UINT64_MAX - 2);
  PutU64(s, 32, 8);
  EXPECT_STATUS(decode(s), kInvalid, "payloads exceed");
  StreamLimits tight;
  tight.max_payload_bytes = 10;
  EXPECT_STATUS(decode(good, tight), kInvalid, "payloads exceed 10 bytes");
  EXPECT_STATUS(decode(good.substr(0, 5)), kInvalid, "truncated prefix");
  EXPECT_STATUS(decode(good.substr(0, 20)), kInvalid, "truncated in its length table");
  EXPECT_STATUS(decode(good.substr(0, good.size() - 1)), kInvalid, "truncated in its frames");
  EXPECT_STATUS(decode(good + "x"), kInvalid, "bytes after");
}

TEST(StreamCodec, BothEndsDeriveTheSameKeyAndOnlyThey) {
  ASSERT_EQ(sodium_init() >= 0, true);
  uint8_t spub[32], ssec[32], cpub[32], csec[32], opub[32], osec[32];
  crypto_box_keypair(spub, ssec);
  crypto_box_keypair(cpub, csec);
  crypto_box_keypair(opub, osec);
  ASSERT_OK_AND_ASSIGN(StreamKey server, DeriveStreamKey(ssec, cpub, cpub, spub));
  ASSERT_OK_AND_ASSIGN(StreamKey client, DeriveStreamKey(csec, spub, cpub, spub));
  EXPECT_EQ(0, std::memcmp(server.k, client.k, 32));
  // Another client secret claiming the same public key gets another key.
  ASSERT_OK_AND_ASSIGN(StreamKey impostor, DeriveStreamKey(osec, spub, cpub, spub));
  EXPECT_NE(0, std::memcmp(server.k, impostor.k, 32));
  uint8_t a[32] = {1}, b[32] = {2}, t1[32], t2[32];
  StreamTag(server.k, 'C', a, b, t1);
  StreamTag(server.k, 'S', a, b, t2);
  EXPECT_NE(0, std::memcmp(t1, t2, 32));  // the roles cannot be swapped
  const uint8_t zero[32] = {};
  auto low = DeriveStreamKey(ssec, zero, zero, spub);
  EXPECT_STATUS(low.status(), kInvalid, "low-order point");
}

class StreamChannelTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ::unsetenv("TQDS_CURVE_KEY_DIR");
    root_ = fs::temp_directory_path() / ("tqds-stream-" + std::to_string(::getpid()) + "-" +
                                         ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(root_);
    fs::create_directories(root_);
  }
  void TearDown() override {
    server_.reset();
    ASSERT_OK(UseCurveKeys(""));
    fs::remove_all(root_);
  }
  std::string Keys(const std::string& name) {
    std::string dir = (root_ / name).string();
    EXPECT_OK(GenerateCurveKeys(dir));
    return dir;
  }
  // An echo server: the reply carries the request's payloads.
  void StartEcho(StreamServerOptions options = {}) {
    auto s = StreamServer::Start("127.0.0.1", 0, "echo", [](Message&& m, Responder r) {
      Message rep = Message::ReplyTo(m);
      rep.payloads() = m.payloads();
      r.Reply(std::move(rep));
    }, options);
    ASSERT_OK(s.status());
    server_ = s.MoveValue();
  }
  // A raw connection that has passed the handshake with the process's keys.
  int HandshakenSocket() {
    std::string host;
    int port = 0;
    EXPECT_OK(tqds::net::SplitHostPort(server_->endpoint(), "test", &host, &port));
    auto fd = tqds::net::ConnectTcp(host, port, 2000, server_->endpoint());
    EXPECT_OK(fd.status());
    tqds::net::SetIoTimeouts(*fd, 5000);
    auto id = ProcessStreamIdentity();
    EXPECT_OK(id.status());
    uint8_t hello[kStreamHelloBytes], answer[kStreamAnswerBytes], proof[32];
    EXPECT_TRUE(tqds::net::ReadAll(*fd, hello, sizeof(hello)));
    std::memcpy(answer, (*id)->client_public, 32);
    randombytes_buf(answer + 32, 32);
    auto key = DeriveStreamKey((*id)->client_secret, (*id)->server_public, (*id)->client_public,
                               (*id)->server_public);
    EXPECT_OK(key.status());
    StreamTag(key->k, 'C', hello + 8, answer + 32, answer + 64);
    EXPECT_TRUE(tqds::net::WriteAll(*fd, answer, sizeof(answer)));
    EXPECT_TRUE(tqds::net::ReadAll(*fd, proof, sizeof(proof)));
    return *fd;
  }
  fs::path root_;
  std::unique_ptr<StreamServer> server_;
};

TEST_F(StreamChannelTest, KeyHoldersMoveBytesUnchangedAndInParallel) {
  ASSERT_OK(UseCurveKeys(Keys("k")));
  StartEcho();
  ASSERT_OK_AND_ASSIGN(auto client, StreamClient::Create(server_->endpoint()));
  std::vector<uint8_t> big(8u << 20);
  for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<uint8_t>(i * 131 + (i >> 13));
  std::vector<std::future<Result<Message>>> calls;
  for (int c = 0; c < 4; ++c) {
    Message m = Sample();
    m.set_request_id(0);
    m.payloads().push_back(Buffer::Copy(big.data(), big.size()));
    calls.push_back(client->Call(std::move(m), 10s));
  }
  for (auto& f : calls) {
    ASSERT_OK_AND_ASSIGN(Message rep, f.get());
    ASSERT_EQ(rep.payloads().size(), 4u);
    EXPECT_EQ(rep.payloads()[2].view(), "third frame");
    EXPECT_EQ(rep.payloads()[1].size(), 0u);
    ASSERT_EQ(rep.payloads()[3].size(), big.size());
    EXPECT_EQ(0, std::memcmp(rep.payloads()[3].data(), big.data(), big.size()));
  }
  // Connections are reused: a later call still works on a pooled one.
  ASSERT_OK(CallStatus(*client));
}

TEST_F(StreamChannelTest, NeitherEndRunsWithoutKeys) {
  auto server = StreamServer::Start("127.0.0.1", 0, "unit", [](Message&&, Responder) {});
  EXPECT_STATUS(server.status(), kPermissionDenied, "server keys");
  auto client = StreamClient::Create("127.0.0.1:1");
  EXPECT_STATUS(client.status(), kPermissionDenied, "client keys");
  ASSERT_OK(UseCurveKeys(Keys("k")));
  auto bad = StreamClient::Create("127.0.0.1");
  EXPECT_STATUS(bad.status(), kInvalid, "must look like HOST:PORT");
}

TEST_F(StreamChannelTest, StrangersAreRefusedByName) {
  const std::string good = Keys("good");
  ASSERT_OK(UseCurveKeys(good));
  StartEcho();
  // A client key the server does not authorize (the same server keys).
  const std::string stranger = Keys("stranger");
  for (const char* f : {"server.key", "server.key_secret"}) {
    fs::copy_file(good + "/" + f, stranger + "/" + f, fs::copy_options::overwrite_existing);
  }
  ASSERT_OK(UseCurveKeys(stranger));
  ASSERT_OK_AND_ASSIGN(auto c1, StreamClient::Create(server_->endpoint()));
  EXPECT_STATUS(CallStatus(*c1), kPermissionDenied,
                "does not authorize this client's key");
  // A client of another deployment: it trusts another server key.
  ASSERT_OK(UseCurveKeys(Keys("other")));
  ASSERT_OK_AND_ASSIGN(auto c2, StreamClient::Create(server_->endpoint()));
  auto r = c2->CallSync(Message(MsgType::kCtlPing, 0), 10s);
  EXPECT_TRUE(r.status().IsPermissionDenied()) << r.status().ToString();
  // The deployment's own clients are still served.
  ASSERT_OK(UseCurveKeys(good));
  ASSERT_OK_AND_ASSIGN(auto c3, StreamClient::Create(server_->endpoint()));
  EXPECT_OK(CallStatus(*c3));
}

TEST_F(StreamChannelTest, HostileBytesAfterTheHandshakeGetAnErrorAndTheServerGoesOn) {
  ASSERT_OK(UseCurveKeys(Keys("k")));
  StreamServerOptions o;
  o.limits.max_payload_bytes = 1 << 20;
  StartEcho(o);
  auto refusal = [](int fd) {
    auto m = ReadStreamMessage(fd, StreamLimits{});
    ::close(fd);
    return m.ok() ? m->status() : m.status();
  };
  int fd = HandshakenSocket();
  ASSERT_TRUE(tqds::net::WriteAll(fd, "GET / HTTP/1.1\r\n\r\n", 18));
  EXPECT_STATUS(refusal(fd), kInvalid, "not a stream-channel message");
  // Declares 1 TiB of payload: refused before anything is allocated for it.
  fd = HandshakenSocket();
  std::string lie = Wire(Sample());
  PutU64(lie, 16, 1ull << 40);
  ASSERT_TRUE(tqds::net::WriteAll(fd, lie.data(), 8 + 8 * 4));
  EXPECT_STATUS(refusal(fd), kInvalid, "exceed 1048576 bytes");
  // A header that is not msgpack.
  fd = HandshakenSocket();
  std::string junk = EncodeStreamTable(4, {}) + "junk";
  ASSERT_TRUE(tqds::net::WriteAll(fd, junk.data(), junk.size()));
  auto st = refusal(fd);
  EXPECT_TRUE(st.IsInvalid()) << st.ToString();
  // No handshake at all: closed without a word.
  std::string host;
  int port = 0;
  ASSERT_OK(tqds::net::SplitHostPort(server_->endpoint(), "test", &host, &port));
  ASSERT_OK_AND_ASSIGN(int raw, tqds::net::ConnectTcp(host, port, 2000, server_->endpoint()));
  tqds::net::SetIoTimeouts(raw, 10000);
  uint8_t hello[kStreamHelloBytes];
  ASSERT_TRUE(tqds::net::ReadAll(raw, hello, sizeof(hello)));
  std::string wrong(kStreamAnswerBytes, 'x');
  ASSERT_TRUE(tqds::net::WriteAll(raw, wrong.data(), wrong.size()));
  char byte;
  EXPECT_EQ(::recv(raw, &byte, 1, 0), 0);  // closed
  ::close(raw);
  ASSERT_OK_AND_ASSIGN(auto client, StreamClient::Create(server_->endpoint()));
  EXPECT_OK(CallStatus(*client, Sample()));
}

TEST_F(StreamChannelTest, ADeadOrSilentServerFailsTheCallNamingIt) {
  ASSERT_OK(UseCurveKeys(Keys("k")));
  StartEcho();
  const std::string ep = server_->endpoint();
  ASSERT_OK_AND_ASSIGN(auto client, StreamClient::Create(ep));
  ASSERT_OK(CallStatus(*client));  // a pooled connection
  server_.reset();
  auto r = client->CallSync(Message(MsgType::kCtlPing, 0), 10s);
  EXPECT_TRUE(r.status().IsUnavailable()) << r.status().ToString();
  EXPECT_NE(r.status().message().find(ep), std::string::npos) << r.status().ToString();
  // A listener that never speaks: the call ends at its timeout.
  int port = 0;
  ASSERT_OK_AND_ASSIGN(int silent, tqds::net::ListenTcp("127.0.0.1", 0, "silent", &port));
  ASSERT_OK_AND_ASSIGN(auto c2, StreamClient::Create("127.0.0.1:" + std::to_string(port)));
  const auto start = std::chrono::steady_clock::now();
  auto s = c2->CallSync(Message(MsgType::kCtlPing, 0), 500ms);
  EXPECT_LT(std::chrono::steady_clock::now() - start, 5s);
  EXPECT_STATUS(s.status(), kUnavailable, "no handshake");
  ::close(silent);
}

TEST_F(StreamChannelTest, AConnectionOverTheCapIsToldWhy) {
  ASSERT_OK(UseCurveKeys(Keys("k")));
  StreamServerOptions o;
  o.connections.max_connections = 1;
  StartEcho(o);
  int held = HandshakenSocket();  // takes the only slot
  ASSERT_OK_AND_ASSIGN(auto client, StreamClient::Create(server_->endpoint()));
  auto r = client->CallSync(Message(MsgType::kCtlPing, 0), 10s);
  EXPECT_STATUS(r.status(), kUnavailable, "1 are open (its limit)");
  ::close(held);
  EXPECT_TRUE(tqds::testing::Eventually([&] { return client->CallSync(Message(MsgType::kCtlPing, 0), 10s).ok(); }));
}

}  // namespace
}  // namespace tqds::wire
