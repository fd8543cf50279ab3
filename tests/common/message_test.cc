// The wire envelope codec, without sockets: round trips and hostile input.
// Every malformed header must yield a clean Invalid status, never a crash,
// an exception or a huge allocation.
#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "common/test_util.h"
#include "common/wire/message.h"

namespace tqds::wire {
namespace {

using Packer = msgpack::packer<msgpack::sbuffer>;

std::string Pack(const std::function<void(Packer&)>& fn) { return PackBody(fn); }

Message SampleMessage() {
  Message m(MsgType::kCtlGetMeta, 0x1234567890abcdefull);
  m.set_body(Pack([](Packer& pk) {
    pk.pack_map(3);
    pk.pack("partition_id");
    pk.pack("train");
    pk.pack("batch_size");
    pk.pack_int64(-5);
    pk.pack("fields");
    pk.pack(std::vector<std::string>{"a", "b"});
  }));
  return m;
}

Result<Message> Decode(const std::string& bytes, const WireLimits& limits = DefaultLimits()) {
  return Message::DecodeHeader(bytes.data(), bytes.size(), limits);
}

// A header whose six elements are written by `fn` after an array marker of `n`.
std::string RawHeader(uint32_t n, const std::function<void(Packer&)>& fn) {
  return Pack([&](Packer& pk) {
    pk.pack_array(n);
    fn(pk);
  });
}

TEST(MessageCodecTest, AMessageDecodedFromAFrameViewsItAndKeepsIt) {
  Message sent(MsgType::kCtlKvPut, 7);
  const std::string blob(100000, 'x');
  sent.set_body(Pack([&](Packer& pk) {
    pk.pack_map(2);
    pk.pack("key");
    pk.pack("a key of some length");
    pk.pack("bytes");
    pk.pack_bin(static_cast<uint32_t>(blob.size()));
    pk.pack_bin_body(blob.data(), static_cast<uint32_t>(blob.size()));
  }));
  std::optional<Message> copy;
  {
    ASSERT_OK_AND_ASSIGN(Message d, Message::DecodeHeader(Buffer::FromString(sent.EncodeHeader())));
    const Buffer& frame = d.raw_header();
    ASSERT_OK_AND_ASSIGN(auto rd, MapReader::Of(d.body(), "KvPut"));
    const msgpack::object* bytes = rd.Find("bytes");
    ASSERT_NE(bytes, nullptr);
    ASSERT_EQ(bytes->type, msgpack::type::BIN);
    // A view into the frame, not a copy.
    EXPECT_GE(bytes->via.bin.ptr, reinterpret_cast<const char*>(frame.data()));
    EXPECT_LE(bytes->via.bin.ptr + bytes->via.bin.size, reinterpret_cast<const char*>(frame.data()) + frame.size());
    copy = d;
  }
  // The copy alone holds the frame now: its body still reads whole.
  ASSERT_OK_AND_ASSIGN(auto rd, MapReader::Of(copy->body(), "KvPut"));
  ASSERT_OK_AND_ASSIGN(std::string key, rd.Get<std::string>("key"));
  EXPECT_EQ(key, "a key of some length");
  const msgpack::object* bytes = rd.Find("bytes");
  ASSERT_NE(bytes, nullptr);
  EXPECT_EQ(std::string(bytes->via.bin.ptr, bytes->via.bin.size), blob);
  // Hostile frames are refused by this overload as by the other.
  EXPECT_STATUS(Message::DecodeHeader(Buffer::FromString("")), kInvalid, "empty");
  EXPECT_STATUS(Message::DecodeHeader(Buffer::FromString(std::string("\x96\x01", 2))), kInvalid, "not valid msgpack");
}

TEST(MessageCodecTest, RoundTripKeepsEveryHeaderField) {
  Message m = SampleMessage();
  m.set_status(Status::NotFound("key 'k' not found"));
  std::string bytes = m.EncodeHeader();
  ASSERT_OK_AND_ASSIGN(Message d, Decode(bytes));
  EXPECT_EQ(d.type(), MsgType::kCtlGetMeta);
  EXPECT_EQ(d.request_id(), 0x1234567890abcdefull);
  EXPECT_TRUE(d.status().IsNotFound());
  EXPECT_EQ(d.status().message(), "key 'k' not found");
  ASSERT_OK_AND_ASSIGN(auto rd, MapReader::Of(d.body(), "GetMeta"));
  ASSERT_OK_AND_ASSIGN(std::string p, rd.Get<std::string>("partition_id"));
  EXPECT_EQ(p, "train");
  ASSERT_OK_AND_ASSIGN(int64_t bs, rd.Get<int64_t>("batch_size"));
  EXPECT_EQ(bs, -5);
  ASSERT_OK_AND_ASSIGN(auto fields, rd.Get<std::vector<std::string>>("fields"));
  EXPECT_EQ(fields, (std::vector<std::string>{"a", "b"}));
  EXPECT_TRUE(d.payloads().empty());
}

TEST(MessageCodecTest, OkStatusAndNilBody) {
  Message m(MsgType::kCtlPing, 1);
  ASSERT_OK_AND_ASSIGN(Message d, Decode(m.EncodeHeader()));
  EXPECT_TRUE(d.status().ok());
  EXPECT_EQ(d.body().type, msgpack::type::NIL);
  EXPECT_EQ(d.type(), MsgType::kCtlPing);
}

TEST(MessageCodecTest, DecodedBodyOutlivesInputBytes) {
  Message d;
  {
    std::string bytes = SampleMessage().EncodeHeader();
    ASSERT_OK_AND_ASSIGN(d, Decode(bytes));
    std::memset(bytes.data(), 0, bytes.size());  // body must not point into the input
  }
  ASSERT_OK_AND_ASSIGN(auto rd, MapReader::Of(d.body(), "x"));
  ASSERT_OK_AND_ASSIGN(std::string p, rd.Get<std::string>("partition_id"));
  EXPECT_EQ(p, "train");
}

TEST(MessageCodecTest, EveryStatusCodeRoundTrips) {
  for (int c = 1; c <= static_cast<int>(kLastStatusCode); ++c) {
    Message m(MsgType::kError, 9);
    m.set_status(Status(static_cast<StatusCode>(c), "msg"));
    ASSERT_OK_AND_ASSIGN(Message d, Decode(m.EncodeHeader()));
    EXPECT_EQ(static_cast<int>(d.status().code()), c);
  }
}

TEST(MessageCodecTest, ErrorReplyAndReplyToMatchRequest) {
  Message req(MsgType::kCtlAllocate, 77);
  Message err = Message::ErrorReply(req, Status::Invalid("bad"));
  EXPECT_EQ(err.type(), MsgType::kCtlAllocate);
  EXPECT_EQ(err.request_id(), 77u);
  EXPECT_TRUE(err.status().IsInvalid());
  Message rep = Message::ReplyTo(req);
  EXPECT_EQ(rep.request_id(), 77u);
  EXPECT_TRUE(rep.status().ok());
}

TEST(MessageCodecTest, EmptyFrame) {
  EXPECT_STATUS(Message::DecodeHeader("", 0), kInvalid, "empty");
}

TEST(MessageCodecTest, GarbageBytes) {
  // 0xc1 is the one byte msgpack never uses.
  EXPECT_STATUS(Decode(std::string("\xc1\xc1\xc1", 3)), kInvalid, "malformed");
  EXPECT_STATUS(Decode("hello, not msgpack at all"), kInvalid, "malformed");
  // A valid msgpack value that is not an array.
  EXPECT_STATUS(Decode(Pack([](Packer& pk) { pk.pack(42); })), kInvalid, "array of 6");
}

TEST(MessageCodecTest, TrailingBytesAfterHeader) {
  std::string bytes = SampleMessage().EncodeHeader() + "x";
  EXPECT_STATUS(Decode(bytes), kInvalid, "trailing");
}

TEST(MessageCodecTest, EveryTruncationOfAValidHeaderFailsCleanly) {
  Message m = SampleMessage();
  m.set_status(Status::Timeout("a long enough status message to cross a few length classes"));
  std::string bytes = m.EncodeHeader();
  ASSERT_GT(bytes.size(), 40u);
  for (size_t n = 0; n < bytes.size(); ++n) {
    // Copy into an exactly sized heap block so ASan catches any over-read.
    std::vector<char> prefix(bytes.begin(), bytes.begin() + n);
    auto r = Message::DecodeHeader(prefix.data(), n);
    ASSERT_FALSE(r.ok()) << "prefix of " << n << " bytes decoded";
    EXPECT_TRUE(r.status().IsInvalid()) << n << ": " << r.status().ToString();
  }
}

TEST(MessageCodecTest, WrongArrayLength) {
  for (uint32_t n : {0u, 1u, 5u, 7u}) {
    std::string bytes = RawHeader(n, [&](Packer& pk) {
      for (uint32_t i = 0; i < n; ++i) pk.pack_uint8(1);
    });
    EXPECT_STATUS(Decode(bytes), kInvalid, "array of 6") ;
  }
}

// Header with element `which` replaced by what `bad` packs.
std::string HeaderWith(int which, const std::function<void(Packer&)>& bad) {
  return RawHeader(6, [&](Packer& pk) {
    for (int i = 0; i < 6; ++i) {
      if (i == which) {
        bad(pk);
        continue;
      }
      switch (i) {
        case 0: pk.pack_uint8(kWireVersion); break;
        case 1: pk.pack_uint16(static_cast<uint16_t>(MsgType::kCtlPing)); break;
        case 2: pk.pack_uint64(5); break;
        case 3: pk.pack_uint8(0); break;
        case 4: pk.pack(std::string("")); break;
        case 5: pk.pack_nil(); break;
      }
    }
  });
}

TEST(MessageCodecTest, HandBuiltValidHeaderDecodes) {
  ASSERT_OK_AND_ASSIGN(Message d, Decode(HeaderWith(-1, nullptr)));
  EXPECT_EQ(d.type(), MsgType::kCtlPing);
  EXPECT_EQ(d.request_id(), 5u);
}

TEST(MessageCodecTest, WrongElementTypes) {
  auto str = [](Packer& pk) { pk.pack(std::string("x")); };
  auto neg = [](Packer& pk) { pk.pack_int64(-1); };
  auto flt = [](Packer& pk) { pk.pack_double(1.5); };
  auto nil = [](Packer& pk) { pk.pack_nil(); };
  auto arr = [](Packer& pk) { pk.pack_array(0); };
  for (int i = 0; i < 4; ++i) {
    for (auto* bad : {+str, +neg, +flt, +nil, +arr}) {
      EXPECT_STATUS(Decode(HeaderWith(i, bad)), kInvalid, "element " + std::to_string(i));
    }
  }
  auto num = [](Packer& pk) { pk.pack_uint8(3); };
  EXPECT_STATUS(Decode(HeaderWith(4, num)), kInvalid, "status message");
  EXPECT_STATUS(Decode(HeaderWith(4, nil)), kInvalid, "status message");
}

TEST(MessageCodecTest, OutOfRangeTypeAndStatusCode) {
  EXPECT_STATUS(Decode(HeaderWith(1, [](Packer& pk) { pk.pack_uint32(0x10000); })), kInvalid,
                "type id");
  EXPECT_STATUS(Decode(HeaderWith(3, [](Packer& pk) { pk.pack_uint32(256); })), kInvalid,
                "status code");
}

TEST(MessageCodecTest, UnknownStatusCodeMapsToInternal) {
  std::string bytes = RawHeader(6, [](Packer& pk) {
    pk.pack_uint8(kWireVersion);
    pk.pack_uint16(1);
    pk.pack_uint64(1);
    pk.pack_uint8(200);  // not a known code
    pk.pack(std::string("from the future"));
    pk.pack_nil();
  });
  ASSERT_OK_AND_ASSIGN(Message d, Decode(bytes));
  EXPECT_EQ(d.status().code(), StatusCode::kInternal);
  EXPECT_EQ(d.status().message(), "from the future");
}

TEST(MessageCodecTest, VersionMismatch) {
  for (uint64_t v : {0ull, 2ull, 255ull, 1ull << 40}) {
    auto bytes = HeaderWith(0, [&](Packer& pk) { pk.pack_uint64(v); });
    EXPECT_STATUS(Decode(bytes), kInvalid, "version " + std::to_string(v));
  }
}

TEST(MessageCodecTest, OversizedHeaderIsRejectedBeforeParsing) {
  WireLimits limits;
  limits.max_header_bytes = 32;
  Message m = SampleMessage();
  std::string bytes = m.EncodeHeader();
  ASSERT_GT(bytes.size(), 32u);
  EXPECT_STATUS(Decode(bytes, limits), kInvalid, "exceeds the limit of 32");
  limits.max_header_bytes = bytes.size();
  EXPECT_OK(Decode(bytes, limits));
}

TEST(MessageCodecTest, StringAndContainerLimits) {
  WireLimits limits;
  limits.max_str = 8;
  Message m(MsgType::kCtlPing, 1);
  m.set_status(Status::Invalid("a status message longer than eight bytes"));
  EXPECT_STATUS(Decode(m.EncodeHeader(), limits), kInvalid, "malformed");

  limits = WireLimits();
  limits.max_container = 4;
  Message big(MsgType::kCtlPing, 1);
  big.set_body(Pack([](Packer& pk) { pk.pack(std::vector<int>(5, 1)); }));
  EXPECT_STATUS(Decode(big.EncodeHeader(), limits), kInvalid, "malformed");
}

// A header that declares enormous containers but carries no elements.
std::string HugeDeclared(uint8_t marker, uint32_t count, int depth) {
  std::string out;
  out.push_back(static_cast<char>(0x96));  // fixarray of 6
  out.push_back(static_cast<char>(kWireVersion));
  out.push_back(0x17);  // type 23
  out.push_back(0x01);  // request id
  out.push_back(0x00);  // status ok
  out.push_back(static_cast<char>(0xa0));  // "" status message
  for (int i = 0; i < depth; ++i) {
    out.push_back(static_cast<char>(marker));
    for (int s = 3; s >= 0; --s) out.push_back(static_cast<char>((count >> (8 * s)) & 0xff));
  }
  return out;
}

TEST(MessageCodecTest, HugeDeclaredContainerSizesAreRejected) {
  // Declared sizes above the container limit.
  EXPECT_STATUS(Decode(HugeDeclared(0xdd, 0xffffffffu, 1)), kInvalid, "malformed");  // array32
  EXPECT_STATUS(Decode(HugeDeclared(0xdf, 0xffffffffu, 1)), kInvalid, "malformed");  // map32
  EXPECT_STATUS(Decode(HugeDeclared(0xdb, 0xffffffffu, 1)), kInvalid, "malformed");  // str32
  EXPECT_STATUS(Decode(HugeDeclared(0xc6, 0xffffffffu, 1)), kInvalid, "malformed");  // bin32
}

TEST(MessageCodecTest, HugeDeclaredSizesWithinLimitsDoNotAllocate) {
  // Sizes under max_container, nested deep, in a header of ~200 bytes: the
  // decoder must fail fast; a size no input this short could hold must not
  // be trusted (otherwise each level reserves hundreds of MB).
  uint32_t count = static_cast<uint32_t>(DefaultLimits().max_container - 1);
  for (uint8_t marker : {uint8_t{0xdd}, uint8_t{0xdf}}) {
    std::string bytes = HugeDeclared(marker, count, 40);
    auto t0 = std::chrono::steady_clock::now();
    auto r = Decode(bytes);
    double secs = testing::SecondsSince(t0);
    EXPECT_FALSE(r.ok());
    EXPECT_TRUE(r.status().IsInvalid()) << r.status().ToString();
    EXPECT_LT(secs, 1.0) << "decoding " << bytes.size() << " bytes took " << secs << " s";
  }
}

TEST(MessageCodecTest, DeepNestingIsRejected) {
  std::string bytes = HeaderWith(5, [](Packer& pk) {
    for (int i = 0; i < 200; ++i) pk.pack_array(1);
    pk.pack_nil();
  });
  EXPECT_STATUS(Decode(bytes), kInvalid, "malformed");
}

TEST(MessageCodecTest, RandomMutationsNeverCrash) {
  std::string valid = SampleMessage().EncodeHeader();
  std::mt19937 rng(12345);
  int decoded_ok = 0;
  for (int iter = 0; iter < 20000; ++iter) {
    std::string b = valid;
    int edits = 1 + static_cast<int>(rng() % 4);
    for (int e = 0; e < edits; ++e) {
      size_t pos = rng() % b.size();
      switch (rng() % 3) {
        case 0: b[pos] = static_cast<char>(rng()); break;
        case 1: b.erase(pos, 1 + rng() % 4); break;
        case 2: b.insert(pos, 1, static_cast<char>(rng())); break;
      }
      if (b.empty()) b = "x";
    }
    std::vector<char> exact(b.begin(), b.end());
    auto r = Message::DecodeHeader(exact.data(), exact.size());
    if (r.ok()) {
      ++decoded_ok;
    } else {
      ASSERT_TRUE(r.status().IsInvalid()) << r.status().ToString();
    }
  }
  EXPECT_LT(decoded_ok, 20000);
}

// --- MapReader -----------------------------------------------------------

struct Decoded {
  msgpack::object_handle handle;
  const msgpack::object& get() const { return handle.get(); }
};

Decoded Unpack(const std::string& bytes) { return {msgpack::unpack(bytes.data(), bytes.size())}; }

TEST(MapReaderTest, NonMapBodyNamesWhat) {
  auto d = Unpack(Pack([](Packer& pk) { pk.pack_array(0); }));
  EXPECT_STATUS(MapReader::Of(d.get(), "Allocate"), kInvalid, "Allocate: body must be a map, got array");
  auto n = Unpack(Pack([](Packer& pk) { pk.pack_nil(); }));
  EXPECT_STATUS(MapReader::Of(n.get(), "Ping"), kInvalid, "got nil");
}

TEST(MapReaderTest, MissingAndWrongTypedFieldsAreNamed) {
  auto d = Unpack(Pack([](Packer& pk) {
    pk.pack_map(3);
    pk.pack("count");
    pk.pack("ten");
    pk.pack("name");
    pk.pack("p");
    pk.pack("opt");
    pk.pack_nil();
  }));
  ASSERT_OK_AND_ASSIGN(auto rd, MapReader::Of(d.get(), "Allocate"));
  EXPECT_EQ(rd.what(), "Allocate");
  EXPECT_TRUE(rd.Has("count"));
  EXPECT_FALSE(rd.Has("missing"));
  EXPECT_STATUS(rd.Get<int64_t>("count"), kInvalid, "Allocate: field 'count' has the wrong type (string)");
  EXPECT_STATUS(rd.Get<int64_t>("missing"), kInvalid, "Allocate: missing field 'missing'");
  ASSERT_OK_AND_ASSIGN(std::string name, rd.Get<std::string>("name"));
  EXPECT_EQ(name, "p");
  ASSERT_OK_AND_ASSIGN(int64_t opt, rd.GetOr<int64_t>("opt", 4));  // nil -> fallback
  EXPECT_EQ(opt, 4);
  ASSERT_OK_AND_ASSIGN(int64_t absent, rd.GetOr<int64_t>("absent", 8));
  EXPECT_EQ(absent, 8);
  EXPECT_STATUS(rd.GetOr<int64_t>("name", 1), kInvalid, "field 'name'");
}

TEST(MapReaderTest, NonStringKeysAreIgnored) {
  auto d = Unpack(Pack([](Packer& pk) {
    pk.pack_map(2);
    pk.pack(1);
    pk.pack("int key");
    pk.pack("k");
    pk.pack(2);
  }));
  ASSERT_OK_AND_ASSIGN(auto rd, MapReader::Of(d.get(), "M"));
  ASSERT_OK_AND_ASSIGN(int v, rd.Get<int>("k"));
  EXPECT_EQ(v, 2);
}

TEST(MapReaderTest, NarrowingConversionsFail) {
  auto d = Unpack(Pack([](Packer& pk) {
    pk.pack_map(2);
    pk.pack("small");
    pk.pack_uint64(300);
    pk.pack("neg");
    pk.pack_int64(-1);
  }));
  ASSERT_OK_AND_ASSIGN(auto rd, MapReader::Of(d.get(), "M"));
  EXPECT_STATUS(rd.Get<uint8_t>("small"), kInvalid, "field 'small'");
  EXPECT_STATUS(rd.Get<uint64_t>("neg"), kInvalid, "field 'neg'");
}

}  // namespace
}  // namespace tqds::wire
