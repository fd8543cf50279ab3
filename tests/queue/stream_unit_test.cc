// The simple backend over the stream channel: with the deployment's keys a
// storage unit announces a stream port, and a SimpleStorageManager that
// reaches it over tcp moves its puts and gets there (seen as a connection to
// that port), byte-identical, unless its config asks to keep payloads on
// CURVE. Its own test program: it changes the process's keys.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "common/test_util.h"
#include "common/wire/rpc.h"
#include "common/wire/security.h"
#include "queue/ctl_messages.h"
#include "tq/storage.h"
#include "tq/storage_unit.h"

namespace tq {
namespace {

using namespace std::chrono_literals;
using tqds::Buffer;
using tqds::Result;
using tqds::wire::Message;
using tqds::wire::MsgType;
using tqds::wire::RpcClient;
namespace fs = std::filesystem;

Result<internal::UnitStatsReply> StatsOf(const std::string& unit) {
  TQDS_ASSIGN_OR_RETURN(auto c, RpcClient::Connect(unit));
  TQDS_ASSIGN_OR_RETURN(Message rep, c->CallSync(Message(MsgType::kUnitStats, 0), 10s));
  return internal::UnitStatsReply::Decode(rep.body());
}

// Whether this network namespace has an established tcp connection to
// 127.0.0.1:port (from /proc/net/tcp).
bool ConnectedTo(uint32_t port) {
  std::ifstream f("/proc/net/tcp");
  std::string line;
  std::getline(f, line);  // header
  char want[32];
  std::snprintf(want, sizeof(want), "0100007F:%04X", port);
  while (std::getline(f, line)) {
    std::istringstream in(line);
    std::string slot, local, remote, state;
    in >> slot >> local >> remote >> state;
    if (remote == want && state == "01") return true;
  }
  return false;
}

class StreamUnitTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ::unsetenv("TQDS_CURVE_KEY_DIR");
    root_ = fs::temp_directory_path() / ("tq-stream-unit-" + std::to_string(::getpid()) + "-" +
                                         ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(root_);
    fs::create_directories(root_);
  }
  void TearDown() override {
    unit_.reset();
    ASSERT_OK(tqds::wire::UseCurveKeys(""));
    fs::remove_all(root_);
  }
  void UseKeys() {
    const std::string dir = (root_ / "keys").string();
    ASSERT_OK(tqds::wire::GenerateCurveKeys(dir));
    ASSERT_OK(tqds::wire::UseCurveKeys(dir));
  }
  // Puts 300 samples of two fields (3 bytes to 6 MiB a value) through a
  // manager with `config`, reads them back and checks every byte, and
  // whether the manager is connected to `stream_port` then.
  static void RoundTrip(const Config& config, uint32_t stream_port, bool via_stream) {
    StorageContext ctx;
    ctx.config = config;
    ASSERT_OK_AND_ASSIGN(auto m, CreateStorageManager("SimpleStorageManager", ctx));
    std::vector<SampleKey> keys;
    std::vector<std::vector<Buffer>> data(2);
    std::vector<std::vector<uint64_t>> nbytes(2);
    for (int64_t i = 0; i < 300; ++i) {
      keys.push_back(SampleKey{"p", i, 1, 7});
      for (size_t f = 0; f < 2; ++f) {
        const size_t n = i == 17 && f == 1 ? (6u << 20) : (f == 0 ? 3 : 1000 + 997 * static_cast<size_t>(i));
        std::string v(n, '\0');
        for (size_t b = 0; b < n; ++b) v[b] = static_cast<char>(b * 31 + i * 7 + f);
        data[f].push_back(Buffer::FromString(std::move(v)));
        nbytes[f].push_back(n);
      }
    }
    ASSERT_OK(m->Put(keys, {"a", "b"}, data));
    ASSERT_OK_AND_ASSIGN(auto got, m->Get(keys, {"a", "b"}, nbytes));
    ASSERT_EQ(got.size(), 2u);
    for (size_t f = 0; f < 2; ++f) {
      ASSERT_EQ(got[f].size(), keys.size());
      for (size_t i = 0; i < keys.size(); ++i) {
        ASSERT_TRUE(got[f][i].Equals(data[f][i])) << "field " << f << " sample " << i;
        if (got[f][i].size() >= 8) {
          EXPECT_EQ(reinterpret_cast<uintptr_t>(got[f][i].data()) % 8, 0u);
        }
      }
    }
    if (stream_port != 0) {
      EXPECT_EQ(ConnectedTo(stream_port), via_stream);
    }
    ASSERT_OK(m->Delete(keys, {"a", "b"}));
  }
  // A unit on 127.0.0.1 and the stream port it announces.
  void StartUnit() {
    StorageUnitOptions o;
    o.address = "tcp://127.0.0.1:0";
    ASSERT_OK_AND_ASSIGN(unit_, SimpleStorageUnit::Start(o));
    ASSERT_OK_AND_ASSIGN(auto st, StatsOf(unit_->address()));
    stream_port_ = st.stream_port;
  }
  fs::path root_;
  std::unique_ptr<SimpleStorageUnit> unit_;
  uint32_t stream_port_ = 0;
};

TEST_F(StreamUnitTest, KeyHoldersMovePayloadsOnTheStreamChannel) {
  UseKeys();
  StartUnit();
  ASSERT_NE(stream_port_, 0u);
  EXPECT_FALSE(ConnectedTo(stream_port_));
  RoundTrip(Config{{"storage_units", {unit_->address()}}, {"prefer_ipc", false}}, stream_port_, true);
  ASSERT_OK_AND_ASSIGN(auto after, StatsOf(unit_->address()));
  EXPECT_EQ(after.stats.keys, 0u);
  EXPECT_EQ(after.stats.ops["PUT_DATA"].requests, 1u);
}

TEST_F(StreamUnitTest, EncryptPayloadsKeepsEveryByteOnCurve) {
  UseKeys();
  StartUnit();
  ASSERT_NE(stream_port_, 0u);
  RoundTrip(Config{{"storage_units", {unit_->address()}}, {"prefer_ipc", false}, {"encrypt_payloads", true}},
            stream_port_, false);
  StorageContext bad;
  bad.config = Config{{"storage_units", {unit_->address()}}, {"encrypt_payloads", "yes"}};
  auto refused = CreateStorageManager("SimpleStorageManager", bad);
  EXPECT_STATUS(refused.status(), kInvalid, "'encrypt_payloads' must be a bool");
}

TEST_F(StreamUnitTest, AUnitWithoutKeysHasNoStreamChannel) {
  StartUnit();
  EXPECT_EQ(stream_port_, 0u);
  RoundTrip(Config{{"storage_units", {unit_->address()}}, {"prefer_ipc", false}}, 0, false);
}

}  // namespace
}  // namespace tq
