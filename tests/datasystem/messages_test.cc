// The typed message layers of the datasystem (client_messages.h,
// peer_messages.h, data_plane.h): what one end encodes the other decodes to
// the same, and a reply that does not answer what was asked, or carries a
// code this build does not know, is refused by name instead of being read.
#include <gtest/gtest.h>

#include <cstring>

#include "common/wire/message.h"
#include "datasystem/client_messages.h"
#include "datasystem/data_plane.h"
#include "datasystem/peer_messages.h"

namespace ds {
namespace {

using tqds::StatusCode;
using tqds::wire::Message;
using tqds::wire::MsgType;
using tqds::wire::PackBody;

// `body` as the receiving end sees it.
Message Received(std::string body) {
  Message m(MsgType::kDsGet, 7);
  m.set_body(std::move(body));
  std::string frame = m.EncodeHeader();
  auto back = Message::DecodeHeader(frame.data(), frame.size());
  EXPECT_TRUE(back.ok()) << back.status().ToString();
  return back.MoveValue();
}

TEST(ClientMessages, RequestsRoundTrip) {
  msg::WriteFlags w{true, 5000, true, true};
  auto create = msg::DecodeCreate(Received(msg::EncodeCreate({"a", "b"}, {1, 2}, w)).body());
  ASSERT_TRUE(create.ok()) << create.status().ToString();
  EXPECT_EQ(create->keys, (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(create->sizes, (std::vector<uint64_t>{1, 2}));
  EXPECT_TRUE(create->write.evictable && create->write.if_absent && create->write.all_or_nothing);
  EXPECT_EQ(create->write.ttl_ms, 5000u);
  auto get = msg::DecodeGet(Received(msg::EncodeGet({"k"}, 30, 4096)).body());
  ASSERT_TRUE(get.ok());
  EXPECT_EQ(get->wait_ms, 30u);
  EXPECT_EQ(get->inline_max, 4096u);
  EXPECT_TRUE(get->ranges.empty());
  auto ranged = msg::DecodeGet(Received(msg::EncodeGet({"k", "l"}, 0, 0, {{8, 16}, {0, 0}})).body());
  ASSERT_TRUE(ranged.ok()) << ranged.status().ToString();
  ASSERT_EQ(ranged->ranges.size(), 2u);
  EXPECT_EQ(ranged->ranges[0].offset, 8u);
  EXPECT_EQ(ranged->ranges[0].length, 16u);
  EXPECT_EQ(ranged->ranges[1].offset, 0u);
  auto expire = msg::DecodeExpire(Received(msg::EncodeExpire({"k"}, 9)).body());
  ASSERT_TRUE(expire.ok());
  EXPECT_EQ(expire->ttl_ms, 9u);
}

TEST(ClientMessages, HostileRequestsAreRefusedByName) {
  // tx without nx, an empty key, a key over the limit, sizes that do not match.
  auto tx = msg::DecodePut(Received(msg::EncodePut({"a"}, msg::WriteFlags{false, 0, false, true})).body());
  EXPECT_TRUE(tx.status().IsInvalid());
  EXPECT_NE(tx.status().message().find("if-absent"), std::string::npos) << tx.status().ToString();
  EXPECT_NE(msg::DecodeKeys(Received(msg::EncodeKeys({""})).body(), "Delete").status().message().find("empty key"),
            std::string::npos);
  auto big = msg::DecodeKeys(Received(msg::EncodeKeys({std::string(proto::kMaxKeyBytes + 1, 'k')})).body(), "Exist");
  EXPECT_NE(big.status().message().find("exceeds the limit"), std::string::npos) << big.status().ToString();
  auto sizes = msg::DecodeCreate(Received(msg::EncodeCreate({"a", "b"}, {1}, {})).body());
  EXPECT_NE(sizes.status().message().find("2 keys but 1 sizes"), std::string::npos) << sizes.status().ToString();
}

TEST(ClientMessages, RepliesMustAnswerExactlyWhatWasAsked) {
  msg::GetReply r{{StatusCode::kOk, StatusCode::kNotFound}, {3, 0}, {64, 0}, {true, false}, {}};
  auto ok = msg::DecodeGetReply(Received(msg::Encode(r)).body(), 2);
  ASSERT_TRUE(ok.ok()) << ok.status().ToString();
  EXPECT_EQ(ok->codes, r.codes);
  EXPECT_EQ(ok->inline_, r.inline_);
  EXPECT_TRUE(ok->from.empty());
  // A ranged Get's reply says where each partial block starts, for every key.
  msg::GetReply parts = r;
  parts.from = {4096, 0};
  auto with_from = msg::DecodeGetReply(Received(msg::Encode(parts)).body(), 2);
  ASSERT_TRUE(with_from.ok()) << with_from.status().ToString();
  EXPECT_EQ(with_from->from, parts.from);
  // A "from" column shorter than the keys, and ranges without their lengths.
  std::string short_from = PackBody([](auto& pk) {
    pk.pack_map(5);
    for (const char* name : {"codes", "sizes", "offsets"}) {
      pk.pack(name);
      pk.pack_array(2);
      pk.pack_uint8(0);
      pk.pack_uint8(0);
    }
    pk.pack("inline");
    pk.pack_array(2);
    pk.pack_false();
    pk.pack_false();
    pk.pack("from");
    pk.pack_array(1);
    pk.pack_uint64(4096);
  });
  auto bad_from = msg::DecodeGetReply(Received(short_from).body(), 2);
  EXPECT_NE(bad_from.status().message().find("1 from for 2 keys"), std::string::npos)
      << bad_from.status().ToString();
  std::string no_lengths = PackBody([](auto& pk) {
    pk.pack_map(2);
    pk.pack("keys");
    pk.pack_array(1);
    pk.pack("k");
    pk.pack("read_offsets");
    pk.pack_array(1);
    pk.pack_uint64(8);
  });
  auto bad_ranges = msg::DecodeGet(Received(no_lengths).body());
  EXPECT_NE(bad_ranges.status().message().find("read_lengths"), std::string::npos)
      << bad_ranges.status().ToString();
  // Asked for three keys, answered two.
  auto short_reply = msg::DecodeGetReply(Received(msg::Encode(r)).body(), 3);
  EXPECT_TRUE(short_reply.status().IsInvalid());
  EXPECT_NE(short_reply.status().message().find("2 codes for 3 keys"), std::string::npos)
      << short_reply.status().ToString();
  // A code this build does not know (it used to be cast into the enum).
  std::string unknown = PackBody([](auto& pk) {
    pk.pack_map(1);
    pk.pack("codes");
    pk.pack_array(1);
    pk.pack_uint8(200);
  });
  auto codes = msg::DecodeCodes(Received(unknown).body(), 1, "Put reply");
  EXPECT_NE(codes.status().message().find("unknown status code 200"), std::string::npos) << codes.status().ToString();
  auto exist = msg::DecodeExist(Received(msg::EncodeExist({true})).body(), 2, "Exist reply");
  EXPECT_TRUE(exist.status().IsInvalid()) << "one flag for two keys";
}

TEST(PeerMessages, PublishRoundTripsAndHostileArraysAreRefused) {
  peer::Publish p{proto::PublishMode::kCache, {{"k", 10, Replica{"h:1", 3, "d:2", 4}}}};
  auto back = peer::DecodePublish(Received(peer::Encode(p)).body());
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(back->mode, proto::PublishMode::kCache);
  ASSERT_EQ(back->entries.size(), 1u);
  EXPECT_EQ(back->entries[0].replica, p.entries[0].replica);
  std::string bad_mode = PackBody([](auto& pk) {
    pk.pack_map(7);
    for (const char* f : {"keys", "sizes", "versions", "holders", "incarnations", "data"}) {
      pk.pack(f);
      pk.pack_array(0);
    }
    pk.pack("mode");
    pk.pack_uint8(9);
  });
  EXPECT_NE(peer::DecodePublish(Received(bad_mode).body()).status().message().find("unknown mode 9"),
            std::string::npos);
}

TEST(PeerMessages, LookupReplyCountsMustAddUpAndCodesBeKnown) {
  std::vector<LookupResult> found(2);
  found[0].code = StatusCode::kOk;
  found[0].size = 5;
  found[0].live = {Replica{"a:1", 0, "a:2", 1}, Replica{"b:1", 0, "b:2", 1}};
  found[1].code = StatusCode::kNotFound;
  auto back = peer::DecodeLookupReply(Received(peer::EncodeLookupReply(found)).body(), 2);
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ((*back)[0].live, found[0].live);
  // Answers for two keys where one was asked.
  EXPECT_TRUE(peer::DecodeLookupReply(Received(peer::EncodeLookupReply(found)).body(), 1).status().IsInvalid());
  // Counts that claim more replicas than the holders sent.
  std::string lying = PackBody([](auto& pk) {
    pk.pack_map(7);
    pk.pack("codes");
    pk.pack(std::vector<uint32_t>{0});
    pk.pack("sizes");
    pk.pack(std::vector<uint64_t>{1});
    pk.pack("counts");
    pk.pack(std::vector<uint32_t>{4000000000u});
    pk.pack("holders");
    pk.pack(std::vector<std::string>{"a:1"});
    pk.pack("data");
    pk.pack(std::vector<std::string>{"a:2"});
    pk.pack("versions");
    pk.pack(std::vector<uint64_t>{1});
    pk.pack("lost");
    pk.pack(std::vector<std::string>{""});
  });
  auto r = peer::DecodeLookupReply(Received(lying).body(), 1);
  EXPECT_NE(r.status().message().find("4000000000 replicas counted"), std::string::npos) << r.status().ToString();
  // A code a lookup cannot carry.
  found[1].code = StatusCode::kPermissionDenied;
  auto odd = peer::DecodeLookupReply(Received(peer::EncodeLookupReply(found)).body(), 2);
  EXPECT_NE(odd.status().message().find("status code 11"), std::string::npos) << odd.status().ToString();
}

TEST(DataPlaneMessages, RequestsDecodeInBatchesAndForeignBytesAreRefused) {
  std::string wire;
  EncodePullRequest("alpha", PullRange{1, 2, 3}, &wire);
  EncodePullRequest("b", PullRange{4, 5, 6}, &wire);
  std::vector<PullRange> ranges;
  std::vector<std::string> keys;
  const auto* bytes = reinterpret_cast<const uint8_t*>(wire.data());
  // The second request cut short: only the first decodes.
  auto used = DecodePullRequests(bytes, wire.size() - 1, 16, &ranges, &keys);
  ASSERT_TRUE(used.ok());
  EXPECT_EQ(*used, kPullRequestBytes + 5);
  EXPECT_EQ(keys, (std::vector<std::string>{"alpha"}));
  EXPECT_EQ(ranges[0].length, 3u);
  // A bad magic after a good request: nothing of the batch is kept.
  std::string foreign = wire.substr(0, kPullRequestBytes + 5) + std::string(kPullRequestBytes, 'x');
  ranges.clear();
  keys.clear();
  auto bad = DecodePullRequests(reinterpret_cast<const uint8_t*>(foreign.data()), foreign.size(), 16, &ranges, &keys);
  EXPECT_TRUE(bad.status().IsInvalid());
  EXPECT_TRUE(ranges.empty() && keys.empty());
  // Replies: the length asked for, a message within 1 MiB, a known code.
  uint8_t reply[kPullReplyBytes];
  EncodePullReply(PullReply{StatusCode::kOk, 0, 8, 0}, reply);
  EXPECT_TRUE(DecodePullReply(reply, 8).ok());
  EXPECT_NE(DecodePullReply(reply, 9).status().message().find("wrong length"), std::string::npos);
  EncodePullReply(PullReply{StatusCode::kNotFound, 2u << 20, 0, 0}, reply);
  EXPECT_TRUE(DecodePullReply(reply, 0).status().IsInvalid());
  reply[0] = 99;
  EXPECT_NE(DecodePullReply(reply, 0).status().message().find("unknown status 99"), std::string::npos);
}

}  // namespace
}  // namespace ds
