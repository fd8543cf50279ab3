// Transport authentication (security.h): key directories, the loopback rule,
// and CURVE between a real RpcServer and RpcClients over tcp. Its own test
// program: it changes the process's keys.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>

#include "common/test_util.h"
#include "common/wire/rpc.h"
#include "common/wire/security.h"

namespace tqds::wire {
namespace {

using namespace std::chrono_literals;
namespace fs = std::filesystem;

class SecurityTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ::unsetenv("TQDS_CURVE_KEY_DIR");
    ::unsetenv("TQDS_ALLOW_INSECURE");
    root_ = fs::temp_directory_path() / ("tqds-security-" + std::to_string(::getpid()) + "-" +
                                         ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(root_);
    fs::create_directories(root_);
  }
  void TearDown() override {
    ASSERT_OK(UseCurveKeys(""));
    AllowInsecure(false);
    fs::remove_all(root_);
  }
  std::string Keys(const std::string& name) {
    std::string dir = (root_ / name).string();
    EXPECT_OK(GenerateCurveKeys(dir));
    return dir;
  }
  static std::unique_ptr<RpcServer> EchoServer(const std::string& endpoint, Status* bound = nullptr) {
    auto s = RpcServer::Bind(endpoint, [](Message&& m, Responder r) {
      Message rep = Message::ReplyTo(m);
      rep.payloads() = m.payloads();
      r.Reply(std::move(rep));
    });
    if (bound != nullptr) *bound = s.status();
    if (!s.ok()) return nullptr;
    (*s)->Start();
    return s.MoveValue();
  }
  static Result<Message> Ping(const std::string& endpoint, std::chrono::milliseconds timeout = 10s) {
    TQDS_ASSIGN_OR_RETURN(auto c, RpcClient::Connect(endpoint));
    Message m(MsgType::kCtlPing, 0);
    m.payloads().push_back(Buffer::Copy("secret bytes", 12));
    return c->CallSync(std::move(m), timeout);
  }
  fs::path root_;
};

TEST_F(SecurityTest, GeneratedKeysLoadAndAuthorizeTheirClient) {
  const std::string dir = Keys("k");
  ASSERT_OK_AND_ASSIGN(CurveKeys k, LoadCurveKeys(dir));
  EXPECT_EQ(k.server_public.size(), 40u);
  EXPECT_EQ(k.client_secret.size(), 40u);
  EXPECT_EQ(k.authorized, std::set<std::string>{k.client_public});
  struct stat st {};
  ASSERT_EQ(::stat((dir + "/server.key_secret").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  ASSERT_EQ(::stat(dir.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);
  EXPECT_STATUS(GenerateCurveKeys(dir), kIOError, "server.key_secret");  // never overwrites keys
}

TEST_F(SecurityTest, UnusableKeyDirectoriesAreRefusedSayingWhy) {
  EXPECT_STATUS(LoadCurveKeys((root_ / "absent").string()), kInvalid, "does not exist");
  const std::string dir = Keys("k");
  fs::permissions(dir + "/client.key_secret", fs::perms::owner_read | fs::perms::group_read | fs::perms::others_read);
  EXPECT_STATUS(LoadCurveKeys(dir), kPermissionDenied, "chmod 600");
  fs::permissions(dir + "/client.key_secret", fs::perms::owner_read | fs::perms::owner_write);
  const std::string other = Keys("other");
  fs::copy_file(other + "/client.key", dir + "/client.key", fs::copy_options::overwrite_existing);
  EXPECT_STATUS(LoadCurveKeys(dir), kInvalid, "client.key is not the public key of client.key_secret");
  fs::copy_file(other + "/client.key", dir + "/client.key", fs::copy_options::overwrite_existing);
  std::ofstream(dir + "/server.key") << "short\n";
  EXPECT_STATUS(LoadCurveKeys(dir), kInvalid, "does not hold a Z85 CURVE key");
  const std::string third = Keys("third");
  std::ofstream(third + "/authorized_clients") << "# ok\n\nnot a key\n";
  EXPECT_STATUS(LoadCurveKeys(third), kInvalid, "authorized_clients line 3");
  ::setenv("TQDS_CURVE_KEY_DIR", (root_ / "absent").c_str(), 1);
  ASSERT_OK(UseCurveKeys(""));  // installed keys win over the variable
  EXPECT_OK(ProcessCurveKeys());
}

TEST_F(SecurityTest, LoopbackEndpoints) {
  EXPECT_TRUE(IsLoopbackEndpoint("tcp://127.0.0.1:5555"));
  EXPECT_TRUE(IsLoopbackEndpoint("tcp://127.3.2.1:0"));
  EXPECT_TRUE(IsLoopbackEndpoint("tcp://localhost:1"));
  EXPECT_TRUE(IsLoopbackEndpoint("tcp://[::1]:1"));
  EXPECT_FALSE(IsLoopbackEndpoint("tcp://0.0.0.0:5555"));
  EXPECT_FALSE(IsLoopbackEndpoint("tcp://*:5555"));
  EXPECT_FALSE(IsLoopbackEndpoint("tcp://10.0.0.1:5555"));
  EXPECT_FALSE(IsLoopbackEndpoint("tcp://128.0.0.1:5555"));
  EXPECT_FALSE(IsLoopbackEndpoint("ipc:///tmp/x"));
}

TEST_F(SecurityTest, PlainTcpBeyondLoopbackNeedsConsent) {
  Status bound;
  EXPECT_EQ(EchoServer("tcp://0.0.0.0:0", &bound), nullptr);
  EXPECT_TRUE(bound.IsPermissionDenied()) << bound.ToString();
  EXPECT_NE(bound.message().find("without authentication"), std::string::npos) << bound.ToString();
  EXPECT_NE(bound.message().find("TQDS_ALLOW_INSECURE=1"), std::string::npos) << bound.ToString();
  EXPECT_NE(EchoServer("tcp://127.0.0.1:0"), nullptr);  // loopback: plain is fine
  ::setenv("TQDS_ALLOW_INSECURE", "1", 1);
  EXPECT_NE(EchoServer("tcp://0.0.0.0:0"), nullptr);
  ::unsetenv("TQDS_ALLOW_INSECURE");
  AllowInsecure(true);
  EXPECT_NE(EchoServer("tcp://0.0.0.0:0"), nullptr);
  AllowInsecure(false);
  ASSERT_OK(UseCurveKeys(Keys("k")));
  EXPECT_NE(EchoServer("tcp://0.0.0.0:0"), nullptr);  // with keys: CURVE on any address
}

TEST_F(SecurityTest, CurveServerAnswersKeyHoldersAndRefusesPlainClientsAtOnce) {
  ASSERT_OK(UseCurveKeys(Keys("k")));
  auto server = EchoServer("tcp://127.0.0.1:0");
  ASSERT_NE(server, nullptr);
  ASSERT_OK_AND_ASSIGN(Message rep, Ping(server->endpoint()));
  ASSERT_EQ(rep.payloads().size(), 1u);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(rep.payloads()[0].data()), 12), "secret bytes");

  // A process without keys gets a clear error, long before its deadline.
  ASSERT_OK(UseCurveKeys(""));
  const auto start = std::chrono::steady_clock::now();
  auto plain = Ping(server->endpoint(), 30s);
  EXPECT_LT(std::chrono::steady_clock::now() - start, 10s);
  ASSERT_FALSE(plain.ok());
  EXPECT_TRUE(plain.status().IsPermissionDenied()) << plain.status().ToString();
  // (libzmq reports either the mechanism mismatch or the server's close)
  EXPECT_NE(plain.status().message().find("TQDS_CURVE_KEY_DIR"), std::string::npos) << plain.status().ToString();
}

TEST_F(SecurityTest, ClientWithTheWrongServerKeyIsRefused) {
  const std::string good = Keys("good");
  ASSERT_OK(UseCurveKeys(good));
  auto server = EchoServer("tcp://127.0.0.1:0");
  ASSERT_NE(server, nullptr);
  // Another deployment's keys, but this deployment's authorized client: the
  // server key it expects is not the server's.
  const std::string bad = Keys("bad");
  fs::copy_file(good + "/client.key", bad + "/client.key", fs::copy_options::overwrite_existing);
  fs::copy_file(good + "/client.key_secret", bad + "/client.key_secret", fs::copy_options::overwrite_existing);
  ASSERT_OK(UseCurveKeys(bad));
  auto r = Ping(server->endpoint(), 5s);
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(r.status().IsPermissionDenied()) << r.status().ToString();
  EXPECT_NE(r.status().message().find("server.key is not the server's"), std::string::npos) << r.status().ToString();
}

TEST_F(SecurityTest, UnauthorizedClientKeyIsRefusedByNameAndAtOnce) {
  const std::string good = Keys("good");
  ASSERT_OK(UseCurveKeys(good));
  auto server = EchoServer("tcp://127.0.0.1:0");
  ASSERT_NE(server, nullptr);
  // This deployment's server keys, a client key of its own that the
  // (process-wide) authorized list does not hold.
  const std::string stranger = Keys("stranger");
  for (const char* f : {"server.key", "server.key_secret"}) {
    fs::copy_file(good + "/" + f, stranger + "/" + f, fs::copy_options::overwrite_existing);
  }
  fs::copy_file(good + "/client.key", stranger + "/authorized_clients", fs::copy_options::overwrite_existing);
  ASSERT_OK(UseCurveKeys(stranger));
  const auto start = std::chrono::steady_clock::now();
  auto r = Ping(server->endpoint(), 30s);
  EXPECT_LT(std::chrono::steady_clock::now() - start, 10s);
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(r.status().IsPermissionDenied()) << r.status().ToString();
  EXPECT_NE(r.status().message().find("refused this process's client key"), std::string::npos)
      << r.status().ToString();
  // A client refused before its first call (libzmq then stops reconnecting)
  // fails its later calls at once too, instead of blocking on the send.
  ASSERT_OK_AND_ASSIGN(auto c, RpcClient::Connect(server->endpoint()));
  std::this_thread::sleep_for(200ms);  // let the handshake fail with nothing pending (no event to wait on here)
  const auto later = std::chrono::steady_clock::now();
  auto again = c->CallSync(Message(MsgType::kCtlPing, 0), 30s);
  EXPECT_LT(std::chrono::steady_clock::now() - later, 10s);
  EXPECT_TRUE(again.status().IsPermissionDenied()) << again.status().ToString();
}

}  // namespace
}  // namespace tqds::wire
