// Socket-free tests of the etcd JSON-gateway codec and the member record.
#include "datasystem/cluster/etcd_codec.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "common/test_util.h"
#include "datasystem/cluster/membership.h"

namespace ds::cluster {
namespace {

using nlohmann::json;

TEST(EtcdCodecTest, Base64RoundTripsAndRejectsGarbage) {
  EXPECT_EQ(codec::Base64Encode(""), "");
  EXPECT_EQ(codec::Base64Encode("f"), "Zg==");
  EXPECT_EQ(codec::Base64Encode("fo"), "Zm8=");
  EXPECT_EQ(codec::Base64Encode("foo"), "Zm9v");
  EXPECT_EQ(codec::Base64Encode("foobar"), "Zm9vYmFy");
  std::string all;
  for (int i = 0; i < 256; ++i) all.push_back(static_cast<char>(i));
  for (size_t n = 0; n < all.size(); n += 37) {
    ASSERT_OK_AND_ASSIGN(auto back, codec::Base64Decode(codec::Base64Encode(all.substr(0, n))));
    EXPECT_EQ(back, all.substr(0, n));
  }
  EXPECT_STATUS(codec::Base64Decode("Zm9"), kInvalid, "multiple of 4");
  EXPECT_STATUS(codec::Base64Decode("Zm!v"), kInvalid, "bad character");
  EXPECT_STATUS(codec::Base64Decode("Z=9v"), kInvalid, "bad character");
}

TEST(EtcdCodecTest, PrefixRangeEnd) {
  EXPECT_EQ(codec::PrefixRangeEnd("/a/"), "/a0");
  EXPECT_EQ(codec::PrefixRangeEnd(std::string("a\xff", 2)), "b");
  EXPECT_EQ(codec::PrefixRangeEnd(""), std::string(1, '\0'));
  EXPECT_EQ(codec::PrefixRangeEnd("\xff"), std::string(1, '\0'));
}

TEST(EtcdCodecTest, TxnRequestShape) {
  Txn txn;
  txn.compares.push_back(Compare::Absent("k"));
  txn.success.push_back(TxnOp::Put("k", "v", 7));
  txn.failure.push_back(TxnOp::Get("k"));
  json j = codec::TxnRequest(txn);
  EXPECT_EQ(j["compare"][0]["target"], "CREATE");
  EXPECT_EQ(j["compare"][0]["result"], "EQUAL");
  EXPECT_EQ(j["compare"][0]["create_revision"], "0");
  EXPECT_EQ(j["success"][0]["request_put"]["lease"], "7");
  EXPECT_EQ(j["failure"][0]["request_range"]["key"], "aw==");
}

TEST(EtcdCodecTest, ErrorsMapToStatusCodes) {
  EXPECT_OK(codec::ErrorStatus(json{{"header", json::object()}}, "x"));
  EXPECT_STATUS(codec::ErrorStatus(json::parse(R"({"error":"etcdserver: requested lease not found",
      "message":"etcdserver: requested lease not found","code":5})"),
                                   "revoke"),
                kNotFound, "lease not found");
  EXPECT_STATUS(
      codec::ErrorStatus(json::parse(R"({"error":"x","message":"compacted","code":11})"), "range"),
      kInvalid, "compacted");
  EXPECT_STATUS(
      codec::ErrorStatus(json::parse(R"({"error":"x","message":"no leader","code":14})"), "put"),
      kUnavailable, "no leader");
  EXPECT_STATUS(codec::ErrorStatus(json::array(), "put"), kInvalid, "non-object");
}

TEST(EtcdCodecTest, ParsesRangeWithStringInts) {
  auto body = json::parse(R"({"header":{"revision":"12"},"kvs":[{"key":"Zm9v","value":"YmFy",
      "create_revision":"3","mod_revision":"9","version":"2","lease":"77"}],"count":"1"})");
  ASSERT_OK_AND_ASSIGN(auto r, codec::ParseRange(body));
  EXPECT_EQ(r.revision, 12);
  ASSERT_EQ(r.kvs.size(), 1u);
  EXPECT_EQ(r.kvs[0].key, "foo");
  EXPECT_EQ(r.kvs[0].value, "bar");
  EXPECT_EQ(r.kvs[0].mod_revision, 9);
  EXPECT_EQ(r.kvs[0].lease, 77);
  EXPECT_STATUS(codec::ParseRange(json::parse(R"({"header":{"revision":"x"}})")), kInvalid,
                "revision");
  EXPECT_STATUS(codec::ParseRange(json::parse(R"({"header":{},"kvs":[{"key":"!!!!"}]})")), kInvalid,
                "base64");
}

TEST(EtcdCodecTest, ParsesWatchLines) {
  ASSERT_OK_AND_ASSIGN(
      auto created,
      codec::ParseWatchLine(json::parse(
          R"({"result":{"header":{"cluster_id":"99","revision":"5"},"created":true}})")));
  EXPECT_TRUE(created.created);
  EXPECT_EQ(created.cluster_id, 99u);
  EXPECT_EQ(created.header_revision, 5);

  ASSERT_OK_AND_ASSIGN(
      auto events,
      codec::ParseWatchLine(json::parse(
          R"({"result":{"header":{"revision":"7"},"events":[{"kv":{"key":"YQ==","value":"MQ==",
      "mod_revision":"6"}},{"type":"DELETE","kv":{"key":"YQ==","mod_revision":"7"}}]}})")));
  ASSERT_EQ(events.events.size(), 2u);
  EXPECT_EQ(events.events[0].type, EventType::kPut);
  EXPECT_EQ(events.events[0].kv.value, "1");
  EXPECT_EQ(events.events[1].type, EventType::kDelete);
  EXPECT_EQ(events.events[1].kv.mod_revision, 7);

  ASSERT_OK_AND_ASSIGN(auto compacted,
                       codec::ParseWatchLine(json::parse(
                           R"({"result":{"header":{},"canceled":true,"compact_revision":"4"}})")));
  EXPECT_TRUE(compacted.canceled);
  EXPECT_EQ(compacted.compact_revision, 4);

  EXPECT_STATUS(codec::ParseWatchLine(json::parse(
                    R"({"error":{"grpc_code":14,"http_code":503,"message":"etcd stopping"}})")),
                kUnavailable, "etcd stopping");
  EXPECT_STATUS(
      codec::ParseWatchLine(json::parse(R"({"result":{"events":[{"type":"BOGUS","kv":{}}]}})")),
      kInvalid, "BOGUS");
  EXPECT_STATUS(codec::ParseWatchLine(json::parse(R"({"nothing":1})")), kInvalid, "result");
}

TEST(EtcdCodecTest, KeepAliveOfAGoneLeaseIsNotFound) {
  EXPECT_STATUS(codec::ParseKeepAliveTtl(json::parse(R"({"result":{"ID":"5"}})"), 5), kNotFound,
                "lease 5");
  ASSERT_OK_AND_ASSIGN(auto ttl,
                       codec::ParseKeepAliveTtl(json::parse(R"({"result":{"TTL":"3"}})"), 5));
  EXPECT_EQ(ttl, 3);
}

TEST(EtcdCodecTest, MemberRecordRoundTripsAndRejectsGarbage) {
  Member m{"10.0.0.1:31501", 1700000000123, 1700000000123456789ULL};
  ASSERT_OK_AND_ASSIGN(auto back, DecodeMember(EncodeMember(m)));
  EXPECT_EQ(back, m);
  EXPECT_STATUS(DecodeMember("not json"), kInvalid, "not a JSON object");
  EXPECT_STATUS(DecodeMember(R"({"address":"a:1"})"), kInvalid, "lacks");
  EXPECT_STATUS(DecodeMember(R"({"address":"a:1","started_at":1,"incarnation":-1})"), kInvalid,
                "lacks");
}

}  // namespace
}  // namespace ds::cluster
