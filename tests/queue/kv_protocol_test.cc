// The KV message bodies on bytes alone: round trips of every request and
// reply, and malformed (hostile) bodies rejected with Invalid.
#include <gtest/gtest.h>

#include <functional>
#include <string>
#include <vector>

#include "common/test_util.h"
#include "queue/kv_protocol.h"
#include "tq/storage.h"

namespace tq::internal {
namespace {

using tqds::wire::Message;
using tqds::wire::MsgType;

// Sends `body` through a full header encode/decode and hands the decoded
// body to `decode`.
template <typename T>
Result<T> Over(const std::string& body, const std::function<Result<T>(const msgpack::object&)>& decode) {
  Message m(MsgType::kCtlKvRetrieve, 1);
  m.set_body(body);
  std::string bytes = m.EncodeHeader();
  TQDS_ASSIGN_OR_RETURN(Message d, Message::DecodeHeader(bytes.data(), bytes.size()));
  return decode(d.body());
}

Result<KvRetrieveRequest> Retrieve(const std::string& body) {
  return Over<KvRetrieveRequest>(body, KvRetrieveRequest::Decode);
}
Result<KvClearRequest> Clear(const std::string& body) { return Over<KvClearRequest>(body, KvClearRequest::Decode); }
std::string Body(const std::function<void(Packer&)>& fn) { return tqds::wire::PackBody(fn); }

TEST(KvProtocolTest, RequestsRoundTrip) {
  KvRetrieveRequest r{"part", {"k1", "k 2", std::string("\xff\x01", 2)}, true};
  ASSERT_OK_AND_ASSIGN(auto r2, Retrieve(r.Encode()));
  EXPECT_EQ(r2.partition_id, r.partition_id);
  EXPECT_EQ(r2.keys, r.keys);
  EXPECT_TRUE(r2.create);

  KvKeysRequest k{"part", {0, -1, int64_t{1} << 40}};
  ASSERT_OK_AND_ASSIGN(auto k2, Over<KvKeysRequest>(k.Encode(), KvKeysRequest::Decode));
  EXPECT_EQ(k2.partition_id, "part");
  EXPECT_EQ(k2.global_indexes, k.global_indexes);

  for (const auto& pid : {std::optional<std::string>(), std::optional<std::string>("p")}) {
    ASSERT_OK_AND_ASSIGN(auto l2, Over<KvListRequest>(KvListRequest{pid}.Encode(), KvListRequest::Decode));
    EXPECT_EQ(l2.partition_id, pid);
  }
  // A nil body lists everything.
  ASSERT_OK_AND_ASSIGN(auto all, KvListRequest::Decode(msgpack::object()));
  EXPECT_FALSE(all.partition_id.has_value());

  KvClearRequest c{"part", {"a", "b"}};
  ASSERT_OK_AND_ASSIGN(auto c2, Clear(c.Encode()));
  EXPECT_EQ(c2.partition_id, "part");
  EXPECT_EQ(c2.keys, c.keys);
}

// `records` are the field records of `meta`'s samples, field by field.
void ExpectRecordsOf(const MetaRecords& records, const BatchMeta& meta) {
  ASSERT_EQ(records.size(), meta.size());
  ASSERT_EQ(records.field_names(), meta.field_names());
  for (size_t i = 0; i < meta.size(); ++i) {
    for (size_t f = 0; f < meta.field_names().size(); ++f) {
      EXPECT_EQ(records.Record(i, f), meta.samples()[i].fields[f]) << "sample " << i << ", field " << f;
    }
  }
}

TEST(KvProtocolTest, KvPutRoundTrip) {
  SampleMeta s;
  s.partition_id = "part";
  FieldInfo fi;
  fi.produced = true;
  fi.kind = FieldKind::kTensor;
  fi.dtype = DType::kFloat32;
  fi.shape = {4};
  fi.nbytes = 16;
  fi.pack = 0xabc;
  s.fields = {fi};
  std::vector<SampleMeta> samples(2, s);
  samples[1].fields[0].offset = 64;
  BatchMeta meta({"x"}, samples);
  ASSERT_OK_AND_ASSIGN(auto r, Over<KvPutRequest>(KvPutRequest::Encode("part", {"k1", "k2"}, meta),
                                                  KvPutRequest::Decode));
  EXPECT_EQ(r.partition_id, "part");
  EXPECT_EQ(r.keys, (std::vector<std::string>{"k1", "k2"}));
  ASSERT_EQ(r.records.size(), 2u);
  EXPECT_EQ(r.records.field_names(), (std::vector<std::string>{"x"}));
  EXPECT_EQ(r.records.Record(1, 0).pack, 0xabcu);
  EXPECT_EQ(r.records.Record(1, 0).offset, 64u);
  EXPECT_EQ(r.records.Record(0, 0).shape, (Shape{4}));
  ExpectRecordsOf(r.records, meta);

  KvPutResult res{{"x", "y"}, {{{"n", int64_t{1}}}, {}}};
  Message m(MsgType::kCtlKvPut, 1);
  m.set_body(EncodeKvPutReply(res, {7, 9}));
  std::string bytes = m.EncodeHeader();
  ASSERT_OK_AND_ASSIGN(Message d, Message::DecodeHeader(bytes.data(), bytes.size()));
  ASSERT_OK_AND_ASSIGN(auto res2, DecodeKvPutReply(d.body()));
  EXPECT_EQ(res2, res);
  ASSERT_OK_AND_ASSIGN(auto dead, DeadPacksFromMessage(d));
  EXPECT_EQ(dead, (std::vector<uint64_t>{7, 9})) << "the dead packs ride along as in NotifyProduced's reply";
  ASSERT_OK_AND_ASSIGN(auto plain, Over<KvPutResult>(EncodeKvPutReply({{"x"}, {}}, {}), DecodeKvPutReply));
  EXPECT_EQ(plain, (KvPutResult{{"x"}, {}}));

  // Hostile bodies: a meta of another length than the keys, no meta, a
  // meta that is not one, tags that are not maps.
  EXPECT_STATUS(Over<KvPutRequest>(KvPutRequest::Encode("part", {"k1"}, meta), KvPutRequest::Decode), kInvalid,
                "1 keys but the meta has 2 samples");
  EXPECT_STATUS(Over<KvPutRequest>(KvRetrieveRequest{"p", {"a"}, true}.Encode(), KvPutRequest::Decode), kInvalid,
                "missing field 'meta'");
  EXPECT_STATUS(Over<KvPutRequest>(Body([](Packer& pk) {
                                     pk.pack_map(3);
                                     pk.pack("partition_id");
                                     pk.pack("p");
                                     pk.pack("keys");
                                     pk.pack_array(0);
                                     pk.pack("meta");
                                     pk.pack(5);
                                   }),
                                   KvPutRequest::Decode),
                kInvalid, "KvPut.meta");
  EXPECT_STATUS(Over<KvPutResult>(Body([](Packer& pk) {
                                    pk.pack_map(2);
                                    pk.pack("fields");
                                    pk.pack_array(0);
                                    pk.pack("tags");
                                    pk.pack_array(1);
                                    pk.pack(5);
                                  }),
                                  DecodeKvPutReply),
                kInvalid, "tags[0]");
}

// The meta a put of `batch` records, made as the client made it before it
// encoded straight from the batch: one record per sample and field.
BatchMeta RecordsOf(const Batch& batch, const std::string& partition_id,
                    const std::vector<std::vector<Placement>>& placed) {
  SampleMeta unplaced;
  unplaced.partition_id = partition_id;
  std::vector<SampleMeta> samples(batch.batch_size(), unplaced);
  for (size_t i = 0; i < samples.size(); ++i) {
    for (size_t f = 0; f < batch.num_fields(); ++f) {
      const Value& v = batch.column(f)[i];
      FieldInfo fi;
      fi.produced = true;
      fi.kind = v.kind();
      fi.dtype = v.dtype();
      fi.shape = v.shape();
      fi.nbytes = v.nbytes();
      fi.pack = placed[f][i].pack;
      fi.offset = placed[f][i].offset;
      samples[i].fields.push_back(fi);
    }
  }
  return BatchMeta(batch.keys(), std::move(samples));
}

// KvPut's request encoded from the batch and its places is byte for byte
// the one encoded from the records: dense fields in one pack or several,
// a ragged field, strings, values not packed, and an empty batch.
TEST(KvProtocolTest, PutFromBatchIsPutFromRecords) {
  const size_t n = 5;
  Batch batch(n);
  std::vector<float> dense(n * 4, 1.5f);
  ASSERT_OK(batch.AddTensor("dense", DType::kFloat32, {static_cast<int64_t>(n), 4},
                            Buffer::Copy(dense.data(), dense.size() * sizeof(float))));
  ASSERT_OK(batch.AddTensor("two_packs", DType::kInt64, {static_cast<int64_t>(n)},
                            Buffer::Copy(dense.data(), n * sizeof(int64_t))));
  tq::Column ragged;  // qualified: in the unity build protocol_test.cc's Column() is in scope
  for (size_t i = 0; i < n; ++i) {
    ASSERT_OK_AND_ASSIGN(auto v, Value::Tensor(DType::kUInt8, {static_cast<int64_t>(i + 1)},
                                               Buffer::Copy(dense.data(), i + 1)));
    ragged.push_back(v);
  }
  ASSERT_OK(batch.AddField("ragged", ragged));
  ASSERT_OK(batch.AddStrings("text", {"a", "bb", "a", "ccc", ""}));
  ASSERT_OK(batch.AddTensor("unpacked", DType::kFloat32, {static_cast<int64_t>(n), 4},
                            Buffer::Copy(dense.data(), dense.size() * sizeof(float))));
  std::vector<std::vector<Placement>> placed(batch.num_fields(), std::vector<Placement>(n));
  for (size_t i = 0; i < n; ++i) {
    placed[0][i] = {0x11, 16 * i};
    placed[1][i] = {i < 2 ? 0x11u : 0x22u, 8 * i};
    placed[2][i] = {0x22, 100 + i};
    placed[3][i] = i == 3 ? Placement{} : Placement{0x33, 7 * i};
    placed[4][i] = {0, 0};
  }
  const std::vector<std::string> keys = {"a", "b", "c", "d", "e"};
  const std::string from_batch = KvPutRequest::Encode("part", KeyColumns::Of(keys), batch, placed);
  EXPECT_EQ(from_batch, KvPutRequest::Encode("part", keys, RecordsOf(batch, "part", placed)));
  ASSERT_OK_AND_ASSIGN(auto r, Over<KvPutRequest>(from_batch, KvPutRequest::Decode));
  ExpectRecordsOf(r.records, RecordsOf(batch, "part", placed));
  // A partition name too long for the column form: the row form (as for
  // more than 2^21 samples), whose records carry each sample's own place,
  // also where all samples share one record.
  const std::string long_name(300, 'p');
  const std::string rows = KvPutRequest::Encode(long_name, KeyColumns::Of(keys), batch, placed);
  EXPECT_EQ(rows, KvPutRequest::Encode(long_name, keys, RecordsOf(batch, long_name, placed)));
  EXPECT_NE(rows.find("samples"), std::string::npos) << "the row form";

  Batch empty(0);
  ASSERT_OK(empty.AddTensor("x", DType::kFloat32, {0, 4}, Buffer::Copy(dense.data(), 0)));
  const std::vector<std::vector<Placement>> none(1);
  EXPECT_EQ(KvPutRequest::Encode("part", {}, empty, none),
            KvPutRequest::Encode("part", {}, RecordsOf(empty, "part", none)));
}

TEST(KvProtocolTest, RepliesRoundTrip) {
  std::vector<std::optional<std::string>> keys = {"a", std::nullopt, "", "c"};
  ASSERT_OK_AND_ASSIGN(auto k2, Over<std::vector<std::optional<std::string>>>(EncodeKvKeysReply(keys),
                                                                               DecodeKvKeysReply));
  EXPECT_EQ(k2, keys);

  KvListing listing = {{"p", {{"z", {{"n", int64_t{1}}, {"l", MetaList{true, MetaValue()}}}}, {"a", {}}}},
                       {"empty", {}}};
  ASSERT_OK_AND_ASSIGN(auto l2, Over<KvListing>(EncodeKvListReply(listing), DecodeKvListReply));
  EXPECT_EQ(l2, listing);
  ASSERT_OK_AND_ASSIGN(auto none, Over<KvListing>(EncodeKvListReply({}), DecodeKvListReply));
  EXPECT_TRUE(none.empty());
}

TEST(KvProtocolTest, MalformedRequestsAreInvalid) {
  EXPECT_STATUS(KvRetrieveRequest::Decode(msgpack::object()), kInvalid, "body must be a map");
  EXPECT_STATUS(Retrieve(Body([](Packer& pk) {
                  pk.pack_map(1);
                  pk.pack("keys");
                  pk.pack_array(0);
                })),
                kInvalid, "partition_id");
  EXPECT_STATUS(Retrieve(KvRetrieveRequest{"", {"a"}, false}.Encode()), kInvalid, "partition_id");
  EXPECT_STATUS(Retrieve(KvRetrieveRequest{std::string(300, 'p'), {"a"}, false}.Encode()), kInvalid,
                "longer than 256");
  EXPECT_STATUS(Retrieve(KvRetrieveRequest{"p", {"ok", ""}, false}.Encode()), kInvalid, "must not be empty");
  EXPECT_STATUS(Retrieve(KvRetrieveRequest{"p", {std::string(257, 'k')}, false}.Encode()), kInvalid,
                "longer than 256");
  EXPECT_STATUS(Retrieve(KvRetrieveRequest{"p", {std::string("a\0b", 3)}, false}.Encode()), kInvalid, "NUL");
  EXPECT_STATUS(Retrieve(Body([](Packer& pk) {
                  pk.pack_map(2);
                  pk.pack("partition_id");
                  pk.pack("p");
                  pk.pack("keys");
                  pk.pack_array(2);
                  pk.pack("a");
                  pk.pack(7);
                })),
                kInvalid, "keys[1] must be a string");
  EXPECT_STATUS(Retrieve(Body([](Packer& pk) {
                  pk.pack_map(2);
                  pk.pack("partition_id");
                  pk.pack("p");
                  pk.pack("keys");
                  pk.pack("a");
                })),
                kInvalid, "'keys' must be an array");
  EXPECT_STATUS(Retrieve(Body([](Packer& pk) {
                  pk.pack_map(3);
                  pk.pack("partition_id");
                  pk.pack("p");
                  pk.pack("keys");
                  pk.pack_array(0);
                  pk.pack("create");
                  pk.pack("yes");
                })),
                kInvalid, "create");
  // An array header claiming 2^30 keys in a tiny body never decodes.
  EXPECT_FALSE(Retrieve(Body([](Packer& pk) {
                 pk.pack_map(2);
                 pk.pack("partition_id");
                 pk.pack("p");
                 pk.pack("keys");
                 pk.pack_array(1u << 30);
               })).ok());
  EXPECT_STATUS(Clear(Body([](Packer& pk) {
                  pk.pack_map(1);
                  pk.pack("partition_id");
                  pk.pack("p");
                })),
                kInvalid, "missing field 'keys'");
  EXPECT_STATUS(Over<KvKeysRequest>(Body([](Packer& pk) {
                                      pk.pack_map(2);
                                      pk.pack("partition_id");
                                      pk.pack("p");
                                      pk.pack("global_indexes");
                                      pk.pack_array(1);
                                      pk.pack("x");
                                    }),
                                    KvKeysRequest::Decode),
                kInvalid, "global_indexes");
  EXPECT_STATUS(Over<KvListRequest>(Body([](Packer& pk) {
                                      pk.pack_map(1);
                                      pk.pack("partition_id");
                                      pk.pack(3);
                                    }),
                                    KvListRequest::Decode),
                kInvalid, "partition_id");
}

// A request body with the keys as columns: `ends` (uint32 each) and `bytes`.
std::string KeyColumnsBody(const std::vector<uint32_t>& ends, const std::string& bytes, bool bytes_as_bin = true) {
  return Body([&](Packer& pk) {
    pk.pack_map(3);
    pk.pack("partition_id");
    pk.pack("p");
    pk.pack("key_ends");
    pk.pack_bin(static_cast<uint32_t>(ends.size() * 4));
    pk.pack_bin_body(reinterpret_cast<const char*>(ends.data()), static_cast<uint32_t>(ends.size() * 4));
    pk.pack("key_bytes");
    if (bytes_as_bin) {
      pk.pack_bin(static_cast<uint32_t>(bytes.size()));
      pk.pack_bin_body(bytes.data(), static_cast<uint32_t>(bytes.size()));
    } else {
      pk.pack(bytes);
    }
  });
}

TEST(KvProtocolTest, KeysTravelAsColumnsAndOlderArraysStillRead) {
  // What a request carries: the keys' ends and bytes, no str per key.
  const std::vector<std::string> keys = {"k1", "", "key three", std::string("\xff\x01", 2)};
  KvClearRequest c{"p", {"a", "bc", "def"}};
  Message m(MsgType::kCtlKvClear, 1);
  m.set_body(c.Encode());
  const std::string bytes = m.EncodeHeader();
  ASSERT_OK_AND_ASSIGN(Message d, Message::DecodeHeader(bytes.data(), bytes.size()));
  ASSERT_OK_AND_ASSIGN(auto r, tqds::wire::MapReader::Of(d.body(), "KvClear"));
  EXPECT_FALSE(r.Has("keys"));
  ASSERT_NE(r.Find("key_bytes"), nullptr);
  EXPECT_EQ(std::string(r.Find("key_bytes")->via.bin.ptr, r.Find("key_bytes")->via.bin.size), "abcdef");
  ASSERT_OK_AND_ASSIGN(auto back, Clear(c.Encode()));
  EXPECT_EQ(back.keys, c.keys);
  // 0 keys; many.
  ASSERT_OK_AND_ASSIGN(auto none, Clear(KvClearRequest{"p", {}}.Encode()));
  EXPECT_TRUE(none.keys.empty());
  std::vector<std::string> many(100000);
  for (size_t i = 0; i < many.size(); ++i) many[i] = std::to_string(i * 7919);
  ASSERT_OK_AND_ASSIGN(auto all, Clear(KvClearRequest{"p", many}.Encode()));
  EXPECT_EQ(all.keys, many);
  // An older client's array of str.
  ASSERT_OK_AND_ASSIGN(auto old, Clear(Body([](Packer& pk) {
                         pk.pack_map(2);
                         pk.pack("partition_id");
                         pk.pack("p");
                         pk.pack("keys");
                         pk.pack(std::vector<std::string>{"x", "yz"});
                       })));
  EXPECT_EQ(old.keys, (std::vector<std::string>{"x", "yz"}));
  ASSERT_OK_AND_ASSIGN(auto cols, Clear(KeyColumnsBody({1, 3}, "xyz")));
  EXPECT_EQ(cols.keys, (std::vector<std::string>{"x", "yz"}));
}

TEST(KvProtocolTest, HostileKeyColumnsAreInvalidNamingWhatIsWrong) {
  EXPECT_STATUS(Clear(KeyColumnsBody({2, 1}, "abc")), kInvalid, "key_ends[1] is 1, outside 2..3");
  EXPECT_STATUS(Clear(KeyColumnsBody({1, 4}, "abc")), kInvalid, "key_ends[1] is 4, outside 1..3");
  EXPECT_STATUS(Clear(KeyColumnsBody({0xffffffffu}, "abc")), kInvalid, "key_ends[0] is 4294967295");
  EXPECT_STATUS(Clear(KeyColumnsBody({1, 2}, "abc")), kInvalid, "'key_bytes' holds 3 bytes, the keys end at 2");
  EXPECT_STATUS(Clear(KeyColumnsBody({1, 1}, "a")), kInvalid, "must not be empty");
  EXPECT_STATUS(Clear(KeyColumnsBody({3}, std::string("a\0b", 3))), kInvalid, "NUL");
  EXPECT_STATUS(Clear(KeyColumnsBody({300}, std::string(300, 'k'))), kInvalid, "longer than 256");
  EXPECT_STATUS(Clear(KeyColumnsBody({1}, "a", /*bytes_as_bin=*/false)), kInvalid, "'key_bytes' must be bytes");
  EXPECT_STATUS(Clear(Body([](Packer& pk) {
                  pk.pack_map(2);
                  pk.pack("partition_id");
                  pk.pack("p");
                  pk.pack("key_ends");
                  pk.pack_bin(3);
                  pk.pack_bin_body("abc", 3);
                })),
                kInvalid, "'key_ends' must be bytes holding uint32");
  EXPECT_STATUS(Clear(Body([](Packer& pk) {
                  pk.pack_map(2);
                  pk.pack("partition_id");
                  pk.pack("p");
                  pk.pack("key_ends");
                  pk.pack_bin(0);
                })),
                kInvalid, "'key_bytes' must be bytes");
}

TEST(KvProtocolTest, KeyColumnsEncodeAsKeyListsDoAndAreCheckedAlike) {
  const std::vector<std::string> keys = {"k1", "key two", std::string("\xc3\xa9t\xc3\xa9", 5), "z"};
  const KeyColumns cols = KeyColumns::Of(keys);
  ASSERT_EQ(cols.size(), keys.size());
  for (size_t i = 0; i < keys.size(); ++i) EXPECT_EQ(cols[i], keys[i]);
  // The same bytes as the request structs write from a key list.
  EXPECT_EQ(EncodeKvRetrieve("p", cols, true), (KvRetrieveRequest{"p", keys, true}.Encode()));
  EXPECT_EQ(EncodeKvClear("p", cols), (KvClearRequest{"p", keys}.Encode()));
  ASSERT_OK_AND_ASSIGN(auto back, Clear(EncodeKvClear("p", cols)));
  EXPECT_EQ(back.keys, keys);
  EXPECT_OK(ValidateKeys(cols, "kv_get"));
  EXPECT_OK(ValidateKeys(KeyColumns{}, "kv_get"));
  // What ValidateKeys refuses in a key list it refuses in columns, with the same words.
  for (const std::vector<std::string>& bad : {std::vector<std::string>{"a", ""}, {std::string("a\0b", 3)},
                                              {std::string(300, 'k')}}) {
    const Status from_list = ValidateKeys(bad, "kv_get");
    ASSERT_FALSE(from_list.ok());
    EXPECT_EQ(ValidateKeys(KeyColumns::Of(bad), "kv_get").ToString(), from_list.ToString());
  }
  // Columns built by hand: ends out of order or past the bytes, bytes past the last end.
  EXPECT_STATUS(ValidateKeys(KeyColumns{{2, 1}, "abc"}, "kv_get"), kInvalid, "their ends are out of order");
  EXPECT_STATUS(ValidateKeys(KeyColumns{{1, 4}, "abc"}, "kv_get"), kInvalid, "their ends are out of order");
  EXPECT_STATUS(ValidateKeys(KeyColumns{{1, 2}, "abc"}, "kv_get"), kInvalid, "key bytes past the last key's end");
  EXPECT_STATUS(ValidateKeys(KeyColumns{{}, "abc"}, "kv_get"), kInvalid, "key bytes past the last key's end");
}

TEST(KvProtocolTest, MalformedRepliesAreInvalid) {
  EXPECT_STATUS(Over<std::vector<std::optional<std::string>>>(Body([](Packer& pk) {
                                                                pk.pack_map(1);
                                                                pk.pack("keys");
                                                                pk.pack_array(1);
                                                                pk.pack(1);
                                                              }),
                                                              DecodeKvKeysReply),
                kInvalid, "string or nil");
  EXPECT_STATUS(Over<KvListing>(Body([](Packer& pk) {
                                  pk.pack_map(1);
                                  pk.pack("partitions");
                                  pk.pack_array(1);
                                  pk.pack_array(2);
                                  pk.pack("p");
                                  pk.pack_array(1);  // odd: a key without tags
                                  pk.pack("k");
                                }),
                                DecodeKvListReply),
                kInvalid, "partitions[0]");
  EXPECT_STATUS(Over<KvListing>(Body([](Packer& pk) {
                                  pk.pack_map(1);
                                  pk.pack("partitions");
                                  pk.pack_array(1);
                                  pk.pack_array(2);
                                  pk.pack("p");
                                  pk.pack_array(2);
                                  pk.pack("k");
                                  pk.pack(5);  // tags must be a map
                                }),
                                DecodeKvListReply),
                kInvalid, "must be a map");
}

}  // namespace
}  // namespace tq::internal
