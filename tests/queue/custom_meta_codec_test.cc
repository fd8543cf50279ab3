// Custom metadata values (MetaValue) on the wire: every kind round-trips as
// itself (bool stays bool, 1.0 stays float), and hostile bodies (deep
// nesting, unknown extensions, out-of-range integers, non-string keys) fail
// with Invalid instead of crashing or allocating without bound.
#include <gtest/gtest.h>

#include <functional>
#include <string>

#include "common/test_util.h"
#include "queue/protocol.h"

namespace tq::internal {
namespace {

using tqds::wire::Message;
using tqds::wire::MsgType;

// Packs `fn`'s value as the body of a full message and decodes it back.
Result<MetaValue> ValueOverTheWire(const std::function<void(Packer&)>& fn) {
  Message m(MsgType::kCtlSetCustomMeta, 1);
  m.set_body(tqds::wire::PackBody(fn));
  std::string bytes = m.EncodeHeader();
  TQDS_ASSIGN_OR_RETURN(Message d, Message::DecodeHeader(bytes.data(), bytes.size()));
  return UnpackMetaValue(d.body(), "value");
}

Result<MetaValue> RoundTrip(const MetaValue& v) {
  return ValueOverTheWire([&](Packer& pk) { PackMetaValue(pk, v); });
}

MetaValue Nested(int depth) {
  MetaValue v = int64_t{7};
  for (int i = 0; i < depth; ++i) v = MetaList{std::move(v)};
  return v;
}

TEST(CustomMetaCodecTest, ScalarsKeepTheirTypes) {
  for (const MetaValue& v :
       {MetaValue(), MetaValue(true), MetaValue(false), MetaValue(int64_t{0}), MetaValue(int64_t{1}),
        MetaValue(INT64_MIN), MetaValue(INT64_MAX), MetaValue(1.0), MetaValue(-0.5), MetaValue(std::string()),
        MetaValue(std::string("h\0i", 3)), MetaValue(MetaBytes{std::string("\x00\xff", 2)}),
        MetaValue(MetaPickled{"\x80\x05N."})}) {
    ASSERT_OK_AND_ASSIGN(MetaValue back, RoundTrip(v));
    EXPECT_EQ(back.index(), v.index());
    EXPECT_EQ(back, v);
  }
  ASSERT_OK_AND_ASSIGN(MetaValue b, RoundTrip(MetaValue(true)));
  EXPECT_TRUE(std::holds_alternative<bool>(b)) << "a bool must not come back as 1";
  ASSERT_OK_AND_ASSIGN(MetaValue f, RoundTrip(MetaValue(2.0)));
  EXPECT_TRUE(std::holds_alternative<double>(f)) << "2.0 must not come back as an integer";
}

TEST(CustomMetaCodecTest, ConvertingConstructorsPickTheNaturalType) {
  EXPECT_TRUE(std::holds_alternative<int64_t>(MetaValue(5)));
  EXPECT_TRUE(std::holds_alternative<std::string>(MetaValue("text")));
  EXPECT_TRUE(std::holds_alternative<bool>(MetaValue(true)));
  EXPECT_TRUE(MetaValue().is_nil());
}

TEST(CustomMetaCodecTest, ContainersRoundTripInOrder) {
  MetaMap inner = {{"z", int64_t{1}}, {"a", MetaList{MetaValue(), true, 0.25}}, {"m", MetaMap{}}};
  MetaValue v = MetaList{std::string("x"), MetaValue(std::move(inner)), MetaList{}, MetaPickled{"p"}};
  ASSERT_OK_AND_ASSIGN(MetaValue back, RoundTrip(v));
  EXPECT_EQ(back, v);
  const auto& map = std::get<MetaMap>(std::get<MetaList>(back)[1]);
  ASSERT_EQ(map.size(), 3u);
  EXPECT_EQ(map[0].first, "z") << "map keys keep insertion order";
  EXPECT_EQ(map[1].first, "a");
}

TEST(CustomMetaCodecTest, DepthIsBounded) {
  ASSERT_OK_AND_ASSIGN(MetaValue ok, RoundTrip(Nested(kMaxMetaDepth)));
  EXPECT_EQ(ok, Nested(kMaxMetaDepth));
  EXPECT_STATUS(RoundTrip(Nested(kMaxMetaDepth + 1)), kInvalid, "nested deeper");
  // A map chain as deep fails the same way.
  auto deep_maps = [](Packer& pk) {
    for (int i = 0; i <= kMaxMetaDepth; ++i) {
      pk.pack_map(1);
      pk.pack("k");
    }
    pk.pack_nil();
  };
  EXPECT_STATUS(ValueOverTheWire(deep_maps), kInvalid, "nested deeper");
}

TEST(CustomMetaCodecTest, HostileValuesAreRejected) {
  EXPECT_STATUS(ValueOverTheWire([](Packer& pk) { pk.pack_uint64(uint64_t{1} << 63); }), kInvalid,
                "int64 range");
  EXPECT_STATUS(ValueOverTheWire([](Packer& pk) {
                  pk.pack_ext(2, 9);
                  pk.pack_ext_body("ab", 2);
                }),
                kInvalid, "unknown extension type 9");
  EXPECT_STATUS(ValueOverTheWire([](Packer& pk) {
                  pk.pack_array(1);
                  pk.pack_map(1);
                  pk.pack_int64(3);
                  pk.pack_nil();
                }),
                kInvalid, "keys must be strings");
  // An array that claims more elements than the body holds never decodes.
  EXPECT_FALSE(ValueOverTheWire([](Packer& pk) { pk.pack_array(1u << 30); }).ok());
}

TEST(CustomMetaCodecTest, CustomMetaMapRoundTripsEveryKind) {
  CustomMeta c = {{"none", MetaValue()},
                  {"flag", true},
                  {"n", int64_t{-3}},
                  {"x", 1.5},
                  {"s", std::string("txt")},
                  {"raw", MetaBytes{"\x01\x02"}},
                  {"obj", MetaPickled{"pickle"}},
                  {"list", MetaList{int64_t{1}, MetaList{false}}},
                  {"dict", MetaMap{{"k", std::string("v")}}}};
  Message m(MsgType::kCtlSetCustomMeta, 1);
  m.set_body(tqds::wire::PackBody([&](Packer& pk) { PackCustomMeta(pk, c); }));
  std::string bytes = m.EncodeHeader();
  ASSERT_OK_AND_ASSIGN(Message d, Message::DecodeHeader(bytes.data(), bytes.size()));
  ASSERT_OK_AND_ASSIGN(CustomMeta got, UnpackCustomMeta(d.body(), "custom"));
  EXPECT_EQ(got, c);
  // Samplers still read numbers the way they did.
  EXPECT_EQ(std::get<int64_t>(got.at("n")), -3);
  EXPECT_EQ(*std::get_if<double>(&got.at("x")), 1.5);
}

}  // namespace
}  // namespace tq::internal
