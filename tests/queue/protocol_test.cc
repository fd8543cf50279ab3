// The TransferQueue body codec (BatchMeta, GetMeta, keys) on bytes alone,
// including hostile BatchMeta bodies.
#include <gtest/gtest.h>

#include <algorithm>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "common/test_util.h"
#include "queue/protocol.h"
#include "tq/storage.h"

namespace tq::internal {
namespace {

using tqds::wire::Message;
using tqds::wire::MsgType;

// Encodes a body into a full header and decodes it back, as a receiver would.
Result<Message> OverTheWire(const Message& m) {
  std::string bytes = m.EncodeHeader();
  return Message::DecodeHeader(bytes.data(), bytes.size());
}

// The records of `meta`'s samples, with their custom meta, are `records`'.
void ExpectSameRecords(MetaRecords records, const BatchMeta& meta) {
  ASSERT_EQ(records.size(), meta.size());
  ASSERT_EQ(records.field_names(), meta.field_names());
  for (size_t i = 0; i < meta.size(); ++i) {
    ASSERT_EQ(meta.samples()[i].fields.size(), meta.field_names().size());
    for (size_t f = 0; f < meta.field_names().size(); ++f) {
      EXPECT_EQ(records.Record(i, f), meta.samples()[i].fields[f]) << "sample " << i << ", field " << f;
    }
    EXPECT_EQ(records.TakeCustom(i), meta.samples()[i].custom) << "sample " << i;
  }
}

// Every body decoded here is also read as a KV put reads it
// (UnpackMetaRecords): the same records, or the same error.
Result<BatchMeta> DecodeBody(const std::function<void(Packer&)>& fn) {
  Message m(MsgType::kCtlNotifyProduced, 1);
  m.set_body(tqds::wire::PackBody(fn));
  TQDS_ASSIGN_OR_RETURN(Message d, OverTheWire(m));
  Result<BatchMeta> meta = MetaFromMessage(d);
  Result<MetaRecords> records = UnpackMetaRecords(d.body(), "BatchMeta");
  if (meta.ok()) {
    EXPECT_TRUE(records.ok()) << records.status().ToString();
    if (records.ok()) ExpectSameRecords(std::move(*records), *meta);
  } else {
    EXPECT_FALSE(records.ok());
    EXPECT_EQ(records.status().ToString(), meta.status().ToString());
  }
  return meta;
}

FieldInfo Tensor(DType d, Shape shape) {
  FieldInfo f;
  f.produced = true;
  f.kind = FieldKind::kTensor;
  f.dtype = d;
  f.shape = std::move(shape);
  f.nbytes = static_cast<uint64_t>(*NumElements(f.shape)) * DTypeSize(d);
  return f;
}

BatchMeta RichMeta() {
  SampleMeta a;
  a.global_index = 0;
  a.generation = 11;
  a.partition_id = "train/step 0";
  a.fields = {Tensor(DType::kFloat32, {}), Tensor(DType::kBFloat16, {3, 5}), FieldInfo{}};
  a.fields[2].produced = true;
  a.fields[2].kind = FieldKind::kString;
  a.fields[2].nbytes = 17;
  a.custom = {{"seq_len", int64_t{-42}}, {"score", 0.25}, {"tag", std::string("x")}};
  SampleMeta b = a;
  b.global_index = int64_t{1} << 40;
  b.generation = ~uint64_t{0};
  b.fields[1] = Tensor(DType::kBFloat16, {7});  // ragged
  b.fields[2] = FieldInfo{};                     // not produced
  b.custom.clear();
  return BatchMeta({"reward", "logits", "text"}, {a, b});
}

TEST(ProtocolTest, BatchMetaRoundTrip) {
  BatchMeta meta = RichMeta();
  ASSERT_OK_AND_ASSIGN(Message d, OverTheWire(MetaMessage(MsgType::kCtlGetMeta, meta)));
  ASSERT_OK_AND_ASSIGN(BatchMeta back, MetaFromMessage(d));
  EXPECT_EQ(back, meta);
  ASSERT_OK_AND_ASSIGN(MetaRecords records, UnpackMetaRecords(d.body(), "BatchMeta"));
  ExpectSameRecords(std::move(records), meta);  // shared, ragged and unproduced records, custom meta
  EXPECT_TRUE(back.samples()[0].fields[0].shape.empty()) << "scalar shape must stay ()";
  EXPECT_EQ(std::get<int64_t>(back.samples()[0].custom.at("seq_len")), -42);
  EXPECT_EQ(std::get<double>(back.samples()[0].custom.at("score")), 0.25);
  EXPECT_EQ(std::get<std::string>(back.samples()[0].custom.at("tag")), "x");
}

TEST(ProtocolTest, EmptyMetaRoundTrip) {
  BatchMeta meta({"a"}, {});
  ASSERT_OK_AND_ASSIGN(Message d, OverTheWire(MetaMessage(MsgType::kCtlGetMeta, meta)));
  ASSERT_OK_AND_ASSIGN(BatchMeta back, MetaFromMessage(d));
  EXPECT_EQ(back, meta);
}

TEST(ProtocolTest, AllDTypesRoundTrip) {
  std::vector<std::string> names;
  SampleMeta s;
  s.partition_id = "p";
  for (int d = 0; d < kNumDTypes; ++d) {
    names.push_back("f" + std::to_string(d));
    s.fields.push_back(Tensor(static_cast<DType>(d), {2, 1}));
  }
  BatchMeta meta(names, {s});
  ASSERT_OK_AND_ASSIGN(Message d, OverTheWire(MetaMessage(MsgType::kCtlGetMeta, meta)));
  ASSERT_OK_AND_ASSIGN(BatchMeta back, MetaFromMessage(d));
  EXPECT_EQ(back, meta);
}

// Packs one sample [index, gen, partition, fields, custom] with `field` as its
// only field record, under field names `names`.
std::function<void(Packer&)> OneSample(std::vector<std::string> names,
                                       std::function<void(Packer&)> fields) {
  return [=](Packer& pk) {
    pk.pack_map(2);
    pk.pack("fields");
    pk.pack(names);
    pk.pack("samples");
    pk.pack_array(1);
    pk.pack_array(5);
    pk.pack_int64(3);
    pk.pack_uint64(1);
    pk.pack(std::string("p"));
    fields(pk);
    pk.pack_map(0);
  };
}

std::function<void(Packer&)> Field(bool produced, int kind, int dtype, std::vector<int64_t> shape,
                                   uint64_t nbytes) {
  return [=](Packer& pk) {
    pk.pack_array(5);
    pk.pack(produced);
    pk.pack_uint8(static_cast<uint8_t>(kind));
    pk.pack_uint8(static_cast<uint8_t>(dtype));
    pk.pack(shape);
    pk.pack_uint64(nbytes);
  };
}

std::function<void(Packer&)> Fields(std::vector<std::function<void(Packer&)>> fs) {
  return [=](Packer& pk) {
    pk.pack_array(static_cast<uint32_t>(fs.size()));
    for (const auto& f : fs) f(pk);
  };
}

TEST(ProtocolTest, HandBuiltMetaDecodes) {
  ASSERT_OK_AND_ASSIGN(BatchMeta m, DecodeBody(OneSample({"x"}, Fields({Field(true, 0, 8, {2, 3}, 24)}))));
  ASSERT_EQ(m.size(), 1u);
  EXPECT_EQ(m.samples()[0].fields[0].shape, (Shape{2, 3}));
}

TEST(ProtocolTest, NbytesShapeMismatchIsRejected) {
  EXPECT_STATUS(DecodeBody(OneSample({"x"}, Fields({Field(true, 0, 8, {2, 3}, 25)}))), kInvalid,
                "nbytes 25 does not match shape (2, 3) of float32");
  EXPECT_STATUS(DecodeBody(OneSample({"x"}, Fields({Field(true, 0, 8, {}, 8)}))), kInvalid,
                "does not match shape ()");
  // The message names the sample and field.
  EXPECT_STATUS(DecodeBody(OneSample({"logits"}, Fields({Field(true, 0, 8, {2}, 1)}))), kInvalid,
                "samples[0].logits");
}

TEST(ProtocolTest, ObjectsAndUnproducedFieldsSkipTheSizeCheck) {
  for (int kind = 1; kind < kNumFieldKinds; ++kind) {
    EXPECT_OK(DecodeBody(OneSample({"x"}, Fields({Field(true, kind, 0, {}, 12345)}))));
  }
  EXPECT_OK(DecodeBody(OneSample({"x"}, Fields({Field(false, 0, 8, {2}, 0)}))));
}

TEST(ProtocolTest, UnknownDTypeAndKindAreRejected) {
  EXPECT_STATUS(DecodeBody(OneSample({"x"}, Fields({Field(true, 0, 10, {1}, 1)}))), kInvalid,
                "unknown dtype id 10");
  EXPECT_STATUS(DecodeBody(OneSample({"x"}, Fields({Field(true, 0, 255, {1}, 1)}))), kInvalid,
                "unknown dtype id 255");
  EXPECT_STATUS(DecodeBody(OneSample({"x"}, Fields({Field(true, kNumFieldKinds, 0, {1}, 1)}))), kInvalid,
                "unknown field kind " + std::to_string(kNumFieldKinds));
  EXPECT_STATUS(DecodeBody(OneSample({"x"}, Fields({Field(true, 255, 0, {1}, 1)}))), kInvalid,
                "unknown field kind 255");
}

TEST(ProtocolTest, WrongFieldCountIsRejected) {
  EXPECT_STATUS(DecodeBody(OneSample({"x", "y"}, Fields({Field(true, 0, 1, {1}, 1)}))), kInvalid,
                "1 field records for 2 fields");
  EXPECT_STATUS(DecodeBody(OneSample({}, Fields({Field(true, 0, 1, {1}, 1)}))), kInvalid,
                "1 field records for 0 fields");
}

TEST(ProtocolTest, BadShapesAreRejected) {
  EXPECT_STATUS(DecodeBody(OneSample({"x"}, Fields({Field(true, 0, 1, {-1}, 1)}))), kInvalid, "negative");
  EXPECT_STATUS(DecodeBody(OneSample({"x"}, Fields({Field(true, 0, 1, std::vector<int64_t>(65, 1), 1)}))), kInvalid,
                "64 dimensions");
  EXPECT_STATUS(DecodeBody(OneSample({"x"}, Fields({Field(true, 0, 1, {int64_t{1} << 40, int64_t{1} << 40}, 0)}))),
                kInvalid, "too large");
}

TEST(ProtocolTest, StructurallyBrokenMetas) {
  EXPECT_STATUS(DecodeBody([](Packer& pk) { pk.pack_array(2); pk.pack(1); pk.pack(2); }), kInvalid,
                "BatchMeta: body must be a map");
  EXPECT_STATUS(DecodeBody([](Packer& pk) { pk.pack_map(1); pk.pack("fields"); pk.pack_array(0); }), kInvalid,
                "missing field 'samples'");
  EXPECT_STATUS(DecodeBody([](Packer& pk) { pk.pack_map(1); pk.pack("samples"); pk.pack_array(0); }), kInvalid,
                "missing field 'fields'");
  EXPECT_STATUS(DecodeBody([](Packer& pk) {
                  pk.pack_map(2);
                  pk.pack("fields");
                  pk.pack(42);
                  pk.pack("samples");
                  pk.pack_array(0);
                }),
                kInvalid, "field 'fields' has the wrong type");
  EXPECT_STATUS(DecodeBody([](Packer& pk) {
                  pk.pack_map(2);
                  pk.pack("fields");
                  pk.pack_array(0);
                  pk.pack("samples");
                  pk.pack("not an array");
                }),
                kInvalid, "samples must be an array");
  // A sample with 4 elements instead of 5.
  EXPECT_STATUS(DecodeBody([](Packer& pk) {
                  pk.pack_map(2);
                  pk.pack("fields");
                  pk.pack_array(0);
                  pk.pack("samples");
                  pk.pack_array(1);
                  pk.pack_array(4);
                  pk.pack(1);
                  pk.pack(1);
                  pk.pack("p");
                  pk.pack_array(0);
                }),
                kInvalid, "samples[0] must have 5 elements, got 4");
  // A field record with 4 elements.
  EXPECT_STATUS(DecodeBody(OneSample({"x"}, Fields({[](Packer& pk) {
                  pk.pack_array(4);
                  pk.pack(true);
                  pk.pack(0);
                  pk.pack(0);
                  pk.pack_array(0);
                }}))),
                kInvalid, "must be an array of 5 (or 7, with pack and offset), got 4");
}

TEST(ProtocolTest, WrongElementTypesInASample) {
  auto sample = [](std::function<void(Packer&)> idx, std::function<void(Packer&)> gen,
                   std::function<void(Packer&)> part) {
    return [=](Packer& pk) {
      pk.pack_map(2);
      pk.pack("fields");
      pk.pack_array(0);
      pk.pack("samples");
      pk.pack_array(1);
      pk.pack_array(5);
      idx(pk);
      gen(pk);
      part(pk);
      pk.pack_array(0);
      pk.pack_nil();
    };
  };
  auto i = [](Packer& pk) { pk.pack(1); };
  auto s = [](Packer& pk) { pk.pack("p"); };
  auto neg = [](Packer& pk) { pk.pack(-1); };
  EXPECT_OK(DecodeBody(sample(i, i, s)));
  EXPECT_STATUS(DecodeBody(sample(s, i, s)), kInvalid, "global_index");
  EXPECT_STATUS(DecodeBody(sample(i, neg, s)), kInvalid, "generation");
  EXPECT_STATUS(DecodeBody(sample(i, i, i)), kInvalid, "partition_id");
}

TEST(ProtocolTest, BadCustomMetaValues) {
  auto with_custom = [](std::function<void(Packer&)> custom) {
    return [=](Packer& pk) {
      pk.pack_map(2);
      pk.pack("fields");
      pk.pack_array(0);
      pk.pack("samples");
      pk.pack_array(1);
      pk.pack_array(5);
      pk.pack(1);
      pk.pack(1);
      pk.pack("p");
      pk.pack_array(0);
      custom(pk);
    };
  };
  EXPECT_STATUS(DecodeBody(with_custom([](Packer& pk) { pk.pack(3); })), kInvalid, "custom must be a map");
  EXPECT_STATUS(DecodeBody(with_custom([](Packer& pk) {
                  pk.pack_map(1);
                  pk.pack(1);
                  pk.pack(1);
                })),
                kInvalid, "keys must be strings");
  EXPECT_STATUS(DecodeBody(with_custom([](Packer& pk) {
                  pk.pack_map(1);
                  pk.pack("lens");
                  pk.pack_ext(1, 7);  // not the pickled-object extension
                  pk.pack_ext_body("x", 1);
                })),
                kInvalid, "custom['lens']: unknown extension type 7");
  EXPECT_OK(DecodeBody(with_custom([](Packer& pk) {
    pk.pack_map(1);
    pk.pack("lens");
    pk.pack_array(0);  // a list is a valid value
  })));
}

// A column-form body: `n` samples of partition "p" (gidx 0.., gen 1..),
// with the given finfo columns and extra map entries (key, writer).
using Entry = std::pair<std::string, std::function<void(Packer&)>>;
std::function<void(Packer&)> Columns(std::vector<std::string> names, size_t n,
                                     std::vector<std::function<void(Packer&)>> finfo,
                                     std::vector<Entry> replace = {}) {
  return [=](Packer& pk) {
    std::vector<int64_t> gidx(n);
    std::vector<uint64_t> gen(n);
    std::vector<uint32_t> pidx(n, 0);
    for (size_t i = 0; i < n; ++i) gidx[i] = static_cast<int64_t>(i), gen[i] = i + 1;
    auto bin = [](const auto& v) {
      return [v](Packer& p) {
        const auto bytes = static_cast<uint32_t>(v.size() * sizeof(v[0]));
        p.pack_bin(bytes);
        p.pack_bin_body(reinterpret_cast<const char*>(v.data()), bytes);
      };
    };
    std::vector<Entry> entries = {
        {"fields", [=](Packer& p) { p.pack(names); }},
        {"partitions", [](Packer& p) { p.pack(std::vector<std::string>{"p"}); }},
        {"pidx", bin(pidx)},
        {"gidx", bin(gidx)},
        {"gen", bin(gen)},
        {"finfo", [=](Packer& p) {
           p.pack_array(static_cast<uint32_t>(finfo.size()));
           for (const auto& c : finfo) c(p);
         }}};
    for (const Entry& change : replace) {
      const std::string& key = change.first;
      const auto& fn = change.second;
      auto it = std::find_if(entries.begin(), entries.end(), [&](const Entry& e) { return e.first == key; });
      if (it == entries.end()) {
        entries.push_back({key, fn});
      } else if (fn) {
        it->second = fn;
      } else {
        entries.erase(it);
      }
    }
    pk.pack_map(static_cast<uint32_t>(entries.size()));
    for (const auto& [key, fn] : entries) {
      pk.pack(key);
      fn(pk);
    }
  };
}

// The records of one finfo column.
std::function<void(Packer&)> Column(std::vector<std::function<void(Packer&)>> records) {
  return Fields(std::move(records));
}

TEST(ProtocolTest, ColumnFormHoldsOneRecordForAFieldEverySampleShares) {
  std::vector<SampleMeta> samples(1000);
  for (size_t i = 0; i < samples.size(); ++i) {
    samples[i].global_index = static_cast<int64_t>(i) * 3 - 7;
    samples[i].generation = ~uint64_t{0} - i;
    samples[i].partition_id = i % 3 == 0 ? "a" : "b/long partition name over sixteen bytes";
    samples[i].fields = {Tensor(DType::kFloat32, {512}), Tensor(DType::kInt64, {static_cast<int64_t>(i % 7)})};
  }
  samples[5].custom = {{"score", 0.5}};
  BatchMeta meta({"dense", "ragged"}, samples);
  Message m = MetaMessage(MsgType::kCtlGetMeta, meta);
  ASSERT_OK_AND_ASSIGN(Message d, OverTheWire(m));
  const msgpack::object& body = d.body();
  ASSERT_EQ(body.type, msgpack::type::MAP);
  std::map<std::string, const msgpack::object*> entries;
  for (uint32_t i = 0; i < body.via.map.size; ++i) {
    entries[body.via.map.ptr[i].key.as<std::string>()] = &body.via.map.ptr[i].val;
  }
  ASSERT_TRUE(entries.count("finfo")) << "column form expected";
  EXPECT_FALSE(entries.count("samples"));
  const auto& finfo = entries["finfo"]->via.array;
  ASSERT_EQ(finfo.size, 2u);
  EXPECT_EQ(finfo.ptr[0].via.array.size, 1u) << "the dense field: one record for all samples";
  EXPECT_EQ(finfo.ptr[1].via.array.size, 1000u) << "the ragged field: one record per sample";
  EXPECT_EQ(entries["partitions"]->via.array.size, 2u);
  ASSERT_OK_AND_ASSIGN(BatchMeta back, MetaFromMessage(d));
  EXPECT_EQ(back, meta);
  // Without any custom meta there is no custom column.
  samples[5].custom.clear();
  ASSERT_OK_AND_ASSIGN(Message d2, OverTheWire(MetaMessage(MsgType::kCtlGetMeta, BatchMeta({"dense", "ragged"},
                                                                                            samples))));
  bool has_custom = false;
  for (uint32_t i = 0; i < d2.body().via.map.size; ++i) {
    has_custom = has_custom || d2.body().via.map.ptr[i].key.as<std::string>() == "custom";
  }
  EXPECT_FALSE(has_custom);
}

TEST(ProtocolTest, ColumnFormDecodesHandBuiltBodies) {
  auto f = Field(true, 0, 8, {2}, 8);
  ASSERT_OK_AND_ASSIGN(BatchMeta m, DecodeBody(Columns({"x"}, 3, {Column({f})})));
  ASSERT_EQ(m.size(), 3u);
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(m.samples()[i].global_index, static_cast<int64_t>(i));
    EXPECT_EQ(m.samples()[i].generation, i + 1);
    EXPECT_EQ(m.samples()[i].partition_id, "p");
    EXPECT_EQ(m.samples()[i].fields[0].shape, (Shape{2}));
  }
  // One record per sample, and a custom column with a nil entry.
  ASSERT_OK_AND_ASSIGN(BatchMeta m2, DecodeBody(Columns({"x"}, 2, {Column({f, Field(true, 0, 8, {3}, 12)})},
                                                        {{"custom", [](Packer& pk) {
                                                            pk.pack_array(2);
                                                            pk.pack_nil();
                                                            pk.pack_map(1);
                                                            pk.pack("k");
                                                            pk.pack(7);
                                                          }}})));
  EXPECT_EQ(m2.samples()[1].fields[0].shape, (Shape{3}));
  EXPECT_TRUE(m2.samples()[0].custom.empty());
  EXPECT_EQ(std::get<int64_t>(m2.samples()[1].custom.at("k")), 7);
  // No samples: an empty column (or one record) is fine.
  EXPECT_OK(DecodeBody(Columns({"x"}, 0, {Column({})})));
  EXPECT_OK(DecodeBody(Columns({"x"}, 0, {Column({f})})));
}

TEST(ProtocolTest, HostileColumnFormBodiesAreRejected) {
  auto f = Field(true, 0, 8, {2}, 8);
  auto one = Column({f});
  auto bytes = [](size_t n) {
    return [n](Packer& pk) {
      std::string b(n, '\0');
      pk.pack_bin(static_cast<uint32_t>(n));
      pk.pack_bin_body(b.data(), static_cast<uint32_t>(n));
    };
  };
  EXPECT_STATUS(DecodeBody(Columns({"x"}, 2, {one}, {{"gidx", [](Packer& pk) { pk.pack(5); }}})), kInvalid,
                "BatchMeta.gidx must be bytes holding int64 values");
  EXPECT_STATUS(DecodeBody(Columns({"x"}, 2, {one}, {{"gidx", bytes(15)}})), kInvalid,
                "gidx must be bytes holding int64");
  EXPECT_STATUS(DecodeBody(Columns({"x"}, 2, {one}, {{"gen", bytes(8)}})), kInvalid,
                "BatchMeta.gen must be bytes holding 2 uint64 values");
  EXPECT_STATUS(DecodeBody(Columns({"x"}, 2, {one}, {{"gen", nullptr}})), kInvalid, "BatchMeta.gen");
  EXPECT_STATUS(DecodeBody(Columns({"x"}, 2, {one}, {{"pidx", bytes(12)}})), kInvalid,
                "BatchMeta.pidx must be bytes holding 2 uint32 values");
  EXPECT_STATUS(DecodeBody(Columns({"x"}, 2, {one}, {{"pidx", [](Packer& pk) {
                                                        const uint32_t v[2] = {0, 1};
                                                        pk.pack_bin(8);
                                                        pk.pack_bin_body(reinterpret_cast<const char*>(v), 8);
                                                      }}})),
                kInvalid, "BatchMeta.pidx[1] is 1 but there are 1 partitions");
  EXPECT_STATUS(DecodeBody(Columns({"x"}, 2, {one}, {{"partitions", nullptr}})), kInvalid, "partitions");
  EXPECT_STATUS(DecodeBody(Columns({"x"}, 2, {one}, {{"finfo", nullptr}})), kInvalid, "missing field 'finfo'");
  EXPECT_STATUS(DecodeBody(Columns({"x", "y"}, 2, {one})), kInvalid, "BatchMeta.finfo has 1 columns for 2 fields");
  EXPECT_STATUS(DecodeBody(Columns({"x"}, 3, {Column({f, f})})), kInvalid,
                "BatchMeta.finfo.x has 2 records for 3 samples (give 1 or 3)");
  EXPECT_STATUS(DecodeBody(Columns({"x"}, 2, {[](Packer& pk) { pk.pack(1); }})), kInvalid,
                "BatchMeta.finfo.x must be an array");
  EXPECT_STATUS(DecodeBody(Columns({"x"}, 2, {Column({f, Field(true, 0, 8, {2}, 9)})})), kInvalid,
                "BatchMeta.finfo.x[1]: nbytes 9 does not match shape (2,) of float32");
  EXPECT_STATUS(DecodeBody(Columns({"x"}, 1, {Column({Field(true, 0, 99, {1}, 1)})})), kInvalid,
                "unknown dtype id 99");
  EXPECT_STATUS(DecodeBody(Columns({"x"}, 2, {one}, {{"custom", [](Packer& pk) { pk.pack_array(1); pk.pack_nil(); }}})),
                kInvalid, "BatchMeta.custom has 1 entries for 2 samples");
  EXPECT_STATUS(DecodeBody(Columns({"x"}, 1, {one}, {{"custom", [](Packer& pk) { pk.pack_array(1); pk.pack(3); }}})),
                kInvalid, "BatchMeta.custom[0] must be a map");
  EXPECT_STATUS(DecodeBody(Columns({"x"}, 1, {one}, {{"gidx", nullptr}})), kInvalid,
                "missing field 'samples' (or the columns 'gidx', ...)");
  // A small body may not stand for more than kMaxMetaFieldRecords records:
  // 2^20 samples (20 MiB of columns) x 16 fields of one shared record each.
  const size_t n = size_t{1} << 20;
  std::vector<std::string> names;
  std::vector<std::function<void(Packer&)>> cols;
  for (int i = 0; i < 16; ++i) names.push_back("f" + std::to_string(i)), cols.push_back(one);
  EXPECT_STATUS(DecodeBody(Columns(names, n, cols)), kInvalid,
                "1048576 samples x 16 fields is more than 8388608 field records");
}

// A field record with a place: [..., nbytes, pack, offset].
std::function<void(Packer&)> PlacedField(uint64_t nbytes, uint64_t pack, uint64_t offset) {
  return [=](Packer& pk) {
    pk.pack_array(7);
    pk.pack(true);
    pk.pack_uint8(0);  // tensor
    pk.pack_uint8(8);  // float32
    pk.pack(std::vector<int64_t>{static_cast<int64_t>(nbytes / 4)});
    pk.pack_uint64(nbytes);
    pk.pack_uint64(pack);
    pk.pack_uint64(offset);
  };
}

TEST(ProtocolTest, PackedValuesKeepTheirPlacesInBothForms) {
  // 1000 samples of a dense field: one pack for the first 600, another for
  // the rest; a second field all in one pack; a third not packed.
  std::vector<SampleMeta> samples(1000);
  for (size_t i = 0; i < samples.size(); ++i) {
    samples[i].global_index = static_cast<int64_t>(i);
    samples[i].generation = i + 1;
    samples[i].partition_id = "p";
    samples[i].fields = {Tensor(DType::kFloat32, {512}), Tensor(DType::kInt64, {4}), Tensor(DType::kUInt8, {3})};
    samples[i].fields[0].pack = i < 600 ? 0xfeedbeef00000001ull : 7;
    samples[i].fields[0].offset = (i % 600) * 2048;
    samples[i].fields[1].pack = ~uint64_t{0};
    samples[i].fields[1].offset = i * 32;
  }
  BatchMeta meta({"dense", "ids", "plain"}, samples);
  ASSERT_OK_AND_ASSIGN(Message d, OverTheWire(MetaMessage(MsgType::kCtlGetMeta, meta)));
  const msgpack::object& body = d.body();
  std::map<std::string, const msgpack::object*> entries;
  for (uint32_t i = 0; i < body.via.map.size; ++i) {
    entries[body.via.map.ptr[i].key.as<std::string>()] = &body.via.map.ptr[i].val;
  }
  ASSERT_TRUE(entries.count("finfo") && entries.count("place")) << "column form with places expected";
  const auto& finfo = entries["finfo"]->via.array;
  for (uint32_t f = 0; f < 3; ++f) {
    EXPECT_EQ(finfo.ptr[f].via.array.size, 1u) << "field " << f << ": places must not break the shared record";
  }
  const auto& place = entries["place"]->via.array;
  ASSERT_EQ(place.size, 3u);
  EXPECT_EQ(place.ptr[0].via.array.ptr[0].type, msgpack::type::BIN) << "two packs: a column of ids";
  EXPECT_EQ(place.ptr[1].via.array.ptr[0].type, msgpack::type::POSITIVE_INTEGER) << "one pack: one id";
  EXPECT_EQ(place.ptr[2].type, msgpack::type::NIL) << "not packed: no entry";
  ASSERT_OK_AND_ASSIGN(BatchMeta back, MetaFromMessage(d));
  EXPECT_EQ(back, meta);
  ASSERT_OK_AND_ASSIGN(MetaRecords records, UnpackMetaRecords(d.body(), "BatchMeta"));
  ExpectSameRecords(std::move(records), meta);  // a column of pack ids, one id, none
  // The row form carries them in 7-element records.
  ASSERT_OK_AND_ASSIGN(BatchMeta row, DecodeBody(OneSample({"x"}, Fields({PlacedField(16, 9, 4096)}))));
  EXPECT_EQ(row.samples()[0].fields[0].pack, 9u);
  EXPECT_EQ(row.samples()[0].fields[0].offset, 4096u);
  // Records without places (older builds' bodies) are not packed.
  ASSERT_OK_AND_ASSIGN(BatchMeta old, DecodeBody(OneSample({"x"}, Fields({Field(true, 0, 8, {4}, 16)}))));
  EXPECT_EQ(old.samples()[0].fields[0].pack, 0u);
}

TEST(ProtocolTest, HostilePlacesAreRejected) {
  EXPECT_STATUS(DecodeBody(OneSample({"x"}, Fields({PlacedField(16, 0, 8)}))), kInvalid,
                "BatchMeta.samples[0].x: pack 0 is not a pack");
  EXPECT_STATUS(DecodeBody(OneSample({"x"}, Fields({PlacedField(16, 3, ~uint64_t{0} - 8)}))), kInvalid,
                "BatchMeta.samples[0].x: offset 18446744073709551607 + nbytes 16 overflows");
  auto f = Field(true, 0, 8, {2}, 8);
  auto one = Column({f});
  auto u64 = [](std::vector<uint64_t> v) {
    return [v](Packer& pk) {
      pk.pack_bin(static_cast<uint32_t>(v.size() * 8));
      pk.pack_bin_body(reinterpret_cast<const char*>(v.data()), static_cast<uint32_t>(v.size() * 8));
    };
  };
  auto place = [](std::vector<std::function<void(Packer&)>> entries) {
    return Entry{"place", [entries](Packer& pk) {
                   pk.pack_array(static_cast<uint32_t>(entries.size()));
                   for (const auto& e : entries) e(pk);
                 }};
  };
  auto pair = [](std::function<void(Packer&)> a, std::function<void(Packer&)> b) {
    return [a, b](Packer& pk) {
      pk.pack_array(2);
      a(pk);
      b(pk);
    };
  };
  auto id = [](uint64_t v) { return [v](Packer& pk) { pk.pack_uint64(v); }; };
  EXPECT_STATUS(DecodeBody(Columns({"x"}, 2, {one}, {place({})})), kInvalid,
                "BatchMeta.place has 0 entries for 1 fields");
  EXPECT_STATUS(DecodeBody(Columns({"x"}, 2, {one}, {place({pair(id(5), u64({0}))})})), kInvalid,
                "BatchMeta.place.x[1] must be bytes holding 2 uint64 offsets, or [first, step] of them");
  EXPECT_STATUS(DecodeBody(Columns({"x"}, 2, {one}, {place({pair(u64({1, 2, 3}), u64({0, 8}))})})), kInvalid,
                "BatchMeta.place.x[0] must be a pack id, bytes holding 2 uint64 pack ids, or [first, step] of them");
  EXPECT_STATUS(DecodeBody(Columns({"x"}, 2, {one}, {place({pair(id(5), u64({0, ~uint64_t{0} - 3}))})})),
                kInvalid, "BatchMeta.place.x: sample 1's offset 18446744073709551612 + nbytes 8 overflows");
  EXPECT_STATUS(DecodeBody(Columns({"x"}, 2, {one}, {place({id(5)})})), kInvalid, "BatchMeta.place.x must be an array");
  // A place of pack 0 is "not packed": its offset is ignored.
  ASSERT_OK_AND_ASSIGN(BatchMeta m, DecodeBody(Columns({"x"}, 2, {one}, {place({pair(u64({0, 4}), u64({99, 64}))})})));
  EXPECT_EQ(m.samples()[0].fields[0].pack, 0u);
  EXPECT_EQ(m.samples()[0].fields[0].offset, 0u);
  EXPECT_EQ(m.samples()[1].fields[0].pack, 4u);
  EXPECT_EQ(m.samples()[1].fields[0].offset, 64u);
}

TEST(ProtocolTest, ColumnsThatAreSequencesTravelAsFirstAndStep) {
  // 16384 samples of one dense field in one pack, indexes and generations
  // counting up, rows back to back: a put's or a get's meta of a batch.
  const size_t n = 16384;
  std::vector<SampleMeta> samples(n);
  for (size_t i = 0; i < n; ++i) {
    samples[i].global_index = 40000 + static_cast<int64_t>(i);
    samples[i].generation = 7 + 2 * i;
    samples[i].partition_id = "p";
    FieldInfo f = Tensor(DType::kFloat32, {512});
    f.pack = 99;
    f.offset = 2048 * i;
    samples[i].fields = {f};
  }
  BatchMeta meta({"x"}, samples);
  Message m = MetaMessage(MsgType::kCtlGetMeta, meta);
  const std::string wire = m.EncodeHeader();
  EXPECT_LT(wire.size(), 1024u) << "columns of " << n << " samples as sequences";
  ASSERT_OK_AND_ASSIGN(Message d, OverTheWire(m));
  ASSERT_OK_AND_ASSIGN(BatchMeta back, MetaFromMessage(d));
  EXPECT_EQ(back, meta);
  // One value off the sequence: that column goes as bytes, the rest stay short.
  samples[n - 1].generation += 1;
  samples[1].fields[0].offset = 5;
  BatchMeta broken({"x"}, samples);
  ASSERT_OK_AND_ASSIGN(Message d2, OverTheWire(MetaMessage(MsgType::kCtlGetMeta, broken)));
  ASSERT_OK_AND_ASSIGN(BatchMeta back2, MetaFromMessage(d2));
  EXPECT_EQ(back2, broken);
  EXPECT_GT(MetaMessage(MsgType::kCtlGetMeta, broken).EncodeHeader().size(), 2 * n * sizeof(uint64_t));
  // Descending, equal, negative, the extremes of int64 and uint64.
  for (auto [g0, g1] : {std::pair<int64_t, int64_t>{5, 4}, {-1, -1}, {INT64_MIN, INT64_MAX}, {INT64_MAX - 1, INT64_MAX}}) {
    std::vector<SampleMeta> two(2);
    two[0].global_index = g0;
    two[1].global_index = g1;
    two[0].generation = ~uint64_t{0} - 1;
    two[1].generation = ~uint64_t{0};
    two[0].partition_id = two[1].partition_id = "p";
    BatchMeta pair_meta({}, two);
    ASSERT_OK_AND_ASSIGN(Message d3, OverTheWire(MetaMessage(MsgType::kCtlGetMeta, pair_meta)));
    ASSERT_OK_AND_ASSIGN(BatchMeta back3, MetaFromMessage(d3));
    EXPECT_EQ(back3, pair_meta) << g0 << ", " << g1;
  }
}

TEST(ProtocolTest, HostileSequencesAreRejected) {
  auto one = Column({Field(true, 0, 8, {2}, 8)});
  auto seq = [](auto first, auto step) {
    return [first, step](Packer& pk) {
      pk.pack_array(2);
      pk.pack(first);
      pk.pack(step);
    };
  };
  auto count = [](uint64_t n) { return Entry{"n", [n](Packer& pk) { pk.pack(n); }}; };
  // A sequence of indexes says how many samples there are in "n".
  ASSERT_OK_AND_ASSIGN(BatchMeta ok, DecodeBody(Columns({"x"}, 3, {one}, {{"gidx", seq(10, 5)}, count(3)})));
  ASSERT_EQ(ok.size(), 3u);
  EXPECT_EQ(ok.samples()[2].global_index, 20);
  EXPECT_EQ(ok.samples()[2].generation, 3u);
  EXPECT_STATUS(DecodeBody(Columns({"x"}, 3, {one}, {{"gidx", seq(10, 5)}})), kInvalid,
                "BatchMeta.n must be the number of samples");
  EXPECT_STATUS(DecodeBody(Columns({"x"}, 3, {one}, {{"gidx", seq(10, 5)}, count(uint64_t{1} << 40)})), kInvalid,
                "BatchMeta.n must be the number of samples (at most 131072 for 1 fields)");
  // 2^18 records: 65536 samples of 3 fields stand as a sequence, 65537 do not.
  auto three = std::vector<std::function<void(Packer&)>>{one, one, one};
  EXPECT_STATUS(DecodeBody(Columns({"x", "y", "z"}, 3, three, {{"gidx", seq(10, 5)}, count(65537)})), kInvalid,
                "BatchMeta.n must be the number of samples (at most 65536 for 3 fields)");
  EXPECT_STATUS(DecodeBody(Columns({"x"}, 3, {one}, {{"gidx", seq(10, 5)}, count(4)})), kInvalid,
                "BatchMeta.gen must be bytes holding 4 uint64 values");
  EXPECT_STATUS(DecodeBody(Columns({"x"}, 3, {one}, {{"gidx", seq(10, -1)}, count(3)})), kInvalid,
                "BatchMeta.gidx must be bytes holding int64 values, or [first, step] of them");
  EXPECT_STATUS(DecodeBody(Columns({"x"}, 3, {one}, {{"gidx", seq(INT64_MAX - 1, int64_t{1})}, count(3)})), kInvalid,
                "BatchMeta.gidx must be bytes holding int64 values, or [first, step] of them");
  EXPECT_STATUS(DecodeBody(Columns({"x"}, 3, {one}, {{"gidx", [](Packer& pk) { pk.pack_array(3); pk.pack(1); pk.pack(1); pk.pack(1); }},
                                                    count(3)})),
                kInvalid, "BatchMeta.gidx must be bytes holding int64 values");
  EXPECT_STATUS(DecodeBody(Columns({"x"}, 3, {one}, {{"gidx", seq("a", 1)}, count(3)})), kInvalid,
                "BatchMeta.gidx must be bytes holding int64 values");
  EXPECT_STATUS(DecodeBody(Columns({"x"}, 3, {one}, {{"gen", seq(-1, 0)}})), kInvalid,
                "BatchMeta.gen must be bytes holding 3 uint64 values (one per gidx), or [first, step] of them");
  EXPECT_STATUS(DecodeBody(Columns({"x"}, 3, {one}, {{"gen", seq(~uint64_t{0}, uint64_t{1})}})), kInvalid,
                "BatchMeta.gen must be bytes holding 3 uint64 values");
  EXPECT_STATUS(DecodeBody(Columns({"x"}, 3, {one}, {{"pidx", seq(uint64_t{1} << 32, 0)}})), kInvalid,
                "BatchMeta.pidx must be bytes holding 3 uint32 values");
  EXPECT_STATUS(DecodeBody(Columns({"x"}, 3, {one}, {{"pidx", seq(0, 1)}})), kInvalid,
                "BatchMeta.pidx[1] is 1 but there are 1 partitions");
  auto two_parts = Entry{"partitions", [](Packer& pk) { pk.pack(std::vector<std::string>{"a", "b"}); }};
  EXPECT_STATUS(DecodeBody(Columns({"x"}, 3, {one}, {{"pidx", seq(0, 1)}, two_parts})), kInvalid,
                "BatchMeta.pidx[2] is 2 but there are 2 partitions");
  ASSERT_OK_AND_ASSIGN(BatchMeta parts, DecodeBody(Columns({"x"}, 4, {one}, {{"pidx", seq(0, 0)}, two_parts})));
  EXPECT_EQ(parts.samples()[3].partition_id, "a");
  auto place = [](std::function<void(Packer&)> packs, std::function<void(Packer&)> offsets) {
    return Entry{"place", [packs, offsets](Packer& pk) {
                   pk.pack_array(1);
                   pk.pack_array(2);
                   packs(pk);
                   offsets(pk);
                 }};
  };
  auto id = [](uint64_t v) { return [v](Packer& pk) { pk.pack_uint64(v); }; };
  ASSERT_OK_AND_ASSIGN(BatchMeta placed, DecodeBody(Columns({"x"}, 3, {one}, {place(id(4), seq(100, 8))})));
  EXPECT_EQ(placed.samples()[2].fields[0].pack, 4u);
  EXPECT_EQ(placed.samples()[2].fields[0].offset, 116u);
  ASSERT_OK_AND_ASSIGN(placed, DecodeBody(Columns({"x"}, 3, {one}, {place(seq(4, 1), seq(0, 0))})));
  EXPECT_EQ(placed.samples()[2].fields[0].pack, 6u);
  EXPECT_STATUS(DecodeBody(Columns({"x"}, 3, {one}, {place(id(4), seq(~uint64_t{0} - 10, uint64_t{8}))})), kInvalid,
                "BatchMeta.place.x[1] must be bytes holding 3 uint64 offsets, or [first, step] of them");
  EXPECT_STATUS(DecodeBody(Columns({"x"}, 3, {one}, {place(id(4), seq(~uint64_t{0} - 20, uint64_t{8}))})), kInvalid,
                "BatchMeta.place.x: sample 2's offset 18446744073709551611 + nbytes 8 overflows");
  // Pack 0: not packed, the offsets are not read.
  ASSERT_OK_AND_ASSIGN(placed, DecodeBody(Columns({"x"}, 3, {one}, {place(id(0), seq(~uint64_t{0} - 20, uint64_t{8}))})));
  EXPECT_EQ(placed.samples()[2].fields[0].pack, 0u);
  EXPECT_EQ(placed.samples()[2].fields[0].offset, 0u);
}

TEST(ProtocolTest, DeadPacksTravelWithAClearAndAPutsReply) {
  BatchMeta victims({"x"}, {SampleMeta{}});
  victims.mutable_samples()[0].partition_id = "p";
  ASSERT_OK_AND_ASSIGN(Message d, OverTheWire(SampleListMessage(MsgType::kCtlClearSamples, victims, {3, ~uint64_t{0}})));
  ASSERT_OK_AND_ASSIGN(auto dead, DeadPacksFromMessage(d));
  EXPECT_EQ(dead, (std::vector<uint64_t>{3, ~uint64_t{0}}));
  ASSERT_OK_AND_ASSIGN(BatchMeta back, SampleListFromMessage(d));
  EXPECT_EQ(back.size(), 1u);
  ASSERT_OK_AND_ASSIGN(Message none, OverTheWire(SampleListMessage(MsgType::kCtlClearSamples, victims)));
  ASSERT_OK_AND_ASSIGN(dead, DeadPacksFromMessage(none));
  EXPECT_TRUE(dead.empty());
  // Keyed flags: sent only when some sample has nothing under its own keys.
  ASSERT_OK_AND_ASSIGN(auto keyed, KeyedFromMessage(none, 1));
  EXPECT_EQ(keyed, (std::vector<uint8_t>{1})) << "no flags: every sample";
  ASSERT_OK_AND_ASSIGN(Message flagged, OverTheWire(SampleListMessage(MsgType::kCtlClearSamples, victims, {}, {0})));
  ASSERT_OK_AND_ASSIGN(keyed, KeyedFromMessage(flagged, 1));
  EXPECT_EQ(keyed, (std::vector<uint8_t>{0}));
  EXPECT_STATUS(KeyedFromMessage(flagged, 2), kInvalid, "SampleList.keyed must be bytes holding 2 flags");
  Message reply = Message::ReplyTo(d, EncodeDeadPacks({42}));
  ASSERT_OK_AND_ASSIGN(Message r, OverTheWire(reply));
  ASSERT_OK_AND_ASSIGN(dead, DeadPacksFromMessage(r));
  EXPECT_EQ(dead, (std::vector<uint64_t>{42}));
  ASSERT_OK_AND_ASSIGN(Message empty, OverTheWire(Message::ReplyTo(d, EncodeDeadPacks({}))));
  ASSERT_OK_AND_ASSIGN(dead, DeadPacksFromMessage(empty));
  EXPECT_TRUE(dead.empty());
  Message bad(MsgType::kCtlNotifyProduced, 1);
  bad.set_body(tqds::wire::PackBody([](Packer& pk) {
    pk.pack_map(1);
    pk.pack("dead_packs");
    pk.pack_bin(7);
    pk.pack_bin_body("1234567", 7);
  }));
  ASSERT_OK_AND_ASSIGN(Message b, OverTheWire(bad));
  EXPECT_STATUS(DeadPacksFromMessage(b), kInvalid, "dead_packs must be bytes holding uint64 pack ids");
}

TEST(StorageKeyTest, PackKeysNeverCollideWithSampleKeys) {
  EXPECT_EQ(PackKey(0x0123456789abcdefull, 0xfedcba9876543210ull), "tq/0123456789abcdef/pack/fedcba9876543210");
  SampleKey s;
  s.controller_id = 0x0123456789abcdefull;
  s.partition_id = "pack";
  s.global_index = 1;
  EXPECT_NE(StorageKey(s, "fedcba9876543210").rfind("tq/0123456789abcdef/pack/", 0), 0u);
}

TEST(ProtocolTest, ColumnFormBoundsWhatASmallBodyExpandsTo) {
  auto f = Field(true, 0, 8, {2}, 8);
  // A partition name is copied into each sample: no longer than a name.
  EXPECT_STATUS(DecodeBody(Columns({"x"}, 2, {Column({f})}, {{"partitions", [](Packer& pk) {
                                                                pk.pack(std::vector<std::string>{std::string(300, 'p')});
                                                              }}})),
                kInvalid, "BatchMeta.partitions[0] is 300 bytes, more than 256");
  // A shared record's shape is copied into each sample: its dimensions
  // count. 2^17 samples x 1 record of 64 dimensions (all 1).
  const size_t n = size_t{1} << 17;
  EXPECT_STATUS(DecodeBody(Columns({"x"}, n, {Column({Field(false, 0, 8, std::vector<int64_t>(64, 1), 0)})})), kInvalid,
                "BatchMeta.finfo.x: shared records of 131072 samples with their shapes' dimensions are more than "
                "8388608 field records");
  // The same with 8 dimensions is fine.
  ASSERT_OK_AND_ASSIGN(BatchMeta ok, DecodeBody(Columns({"x"}, n, {Column({Field(false, 0, 8, std::vector<int64_t>(8, 1), 0)})})));
  EXPECT_EQ(ok.samples().back().fields[0].shape.size(), 8u);
  // SampleList: the same limit on its partition names.
  Message m(MsgType::kCtlClearSamples, 1);
  m.set_body(tqds::wire::PackBody([](Packer& pk) {
    pk.pack_map(3);
    pk.pack("fields");
    pk.pack_array(0);
    pk.pack("partitions");
    pk.pack(std::vector<std::string>{std::string(257, 'q')});
    pk.pack("samples");
    pk.pack_array(3);
    pk.pack(0);
    pk.pack(1);
    pk.pack(1);
  }));
  ASSERT_OK_AND_ASSIGN(Message d, OverTheWire(m));
  EXPECT_STATUS(SampleListFromMessage(d), kInvalid, "SampleList.partitions[0] is 257 bytes");
}

TEST(ProtocolTest, MetasTheColumnFormCannotCarryGoAsRows) {
  auto is_rows = [](const Message& d) {
    for (uint32_t i = 0; i < d.body().via.map.size; ++i) {
      if (d.body().via.map.ptr[i].key.as<std::string>() == "samples") return true;
    }
    return false;
  };
  // A sample without its field records: sent as it is, refused by the
  // receiver with the row form's message (the encoder never reads past a
  // sample's records).
  SampleMeta bare;
  bare.global_index = 4;
  bare.partition_id = "p";
  ASSERT_OK_AND_ASSIGN(Message d1, OverTheWire(MetaMessage(MsgType::kCtlSetCustomMeta, BatchMeta({"x"}, {bare}))));
  EXPECT_TRUE(is_rows(d1));
  EXPECT_STATUS(MetaFromMessage(d1), kInvalid, "samples[0] has 0 field records for 1 fields");
  // A partition name longer than a valid one: rows, and it round-trips.
  SampleMeta longp = bare;
  longp.partition_id = std::string(400, 'z');
  BatchMeta m2({}, {longp});
  ASSERT_OK_AND_ASSIGN(Message d2, OverTheWire(MetaMessage(MsgType::kCtlGetMeta, m2)));
  EXPECT_TRUE(is_rows(d2));
  ASSERT_OK_AND_ASSIGN(BatchMeta back, MetaFromMessage(d2));
  EXPECT_EQ(back, m2);
}

TEST(ProtocolTest, GetMetaRoundTrip) {
  GetMetaRequest req;
  req.partition_id = "p";
  req.task_name = "train";
  req.fields = {"a", "b"};
  req.batch_size = 64;
  req.mode = FetchMode::kPoll;
  req.timeout_ms = 1234;
  req.sampling = {{"sampler", std::string("rank_aware")}, {"dp_rank", int64_t{3}}, {"ratio", 0.5}};
  Message m(MsgType::kCtlGetMeta, 1);
  m.set_body(EncodeGetMeta(req));
  ASSERT_OK_AND_ASSIGN(Message d, OverTheWire(m));
  ASSERT_OK_AND_ASSIGN(GetMetaRequest back, DecodeGetMeta(d.body()));
  EXPECT_EQ(back.partition_id, "p");
  EXPECT_EQ(back.task_name, "train");
  EXPECT_EQ(back.fields, req.fields);
  EXPECT_EQ(back.batch_size, 64);
  EXPECT_EQ(back.mode, FetchMode::kPoll);
  EXPECT_EQ(back.timeout_ms, 1234);
  EXPECT_EQ(back.sampling, req.sampling);
}

Result<GetMetaRequest> DecodeGetMetaBody(const std::function<void(Packer&)>& fn) {
  Message m(MsgType::kCtlGetMeta, 1);
  m.set_body(tqds::wire::PackBody(fn));
  TQDS_ASSIGN_OR_RETURN(Message d, OverTheWire(m));
  return DecodeGetMeta(d.body());
}

TEST(ProtocolTest, MalformedGetMetaNamesTheField) {
  EXPECT_STATUS(DecodeGetMetaBody([](Packer& pk) { pk.pack_nil(); }), kInvalid, "GetMeta: body must be a map");
  EXPECT_STATUS(DecodeGetMetaBody([](Packer& pk) {
                  pk.pack_map(2);
                  pk.pack("partition_id");
                  pk.pack("p");
                  pk.pack("fields");
                  pk.pack(std::vector<std::string>{"a"});
                }),
                kInvalid, "missing field 'batch_size'");
  EXPECT_STATUS(DecodeGetMetaBody([](Packer& pk) {
                  pk.pack_map(3);
                  pk.pack("partition_id");
                  pk.pack("p");
                  pk.pack("fields");
                  pk.pack(std::vector<std::string>{"a"});
                  pk.pack("batch_size");
                  pk.pack("many");
                }),
                kInvalid, "field 'batch_size' has the wrong type");
  EXPECT_STATUS(DecodeGetMetaBody([](Packer& pk) {
                  pk.pack_map(4);
                  pk.pack("partition_id");
                  pk.pack("p");
                  pk.pack("fields");
                  pk.pack(std::vector<std::string>{"a"});
                  pk.pack("batch_size");
                  pk.pack(1);
                  pk.pack("mode");
                  pk.pack(7);
                }),
                kInvalid, "unknown mode 7");
  EXPECT_STATUS(DecodeGetMetaBody([](Packer& pk) {
                  pk.pack_map(3);
                  pk.pack("partition_id");
                  pk.pack(5);
                  pk.pack("fields");
                  pk.pack(std::vector<std::string>{"a"});
                  pk.pack("batch_size");
                  pk.pack(1);
                }),
                kInvalid, "field 'partition_id'");
}

TEST(ProtocolTest, KeysRoundTripAndErrors) {
  std::vector<std::string> keys = {"tq/1:p/0.1/a", "", std::string("bin\0ary", 7)};
  Message m(MsgType::kUnitGet, 1);
  m.set_body(EncodeKeys(keys));
  ASSERT_OK_AND_ASSIGN(Message d, OverTheWire(m));
  ASSERT_OK_AND_ASSIGN(auto back, DecodeKeys(d.body(), "UnitGet"));
  EXPECT_EQ(back, keys);
  Message bad(MsgType::kUnitGet, 1);
  bad.set_body(tqds::wire::PackBody([](Packer& pk) {
    pk.pack_map(1);
    pk.pack("keys");
    pk.pack_array(2);
    pk.pack("a");
    pk.pack(3);
  }));
  ASSERT_OK_AND_ASSIGN(Message bd, OverTheWire(bad));
  EXPECT_STATUS(DecodeKeys(bd.body(), "UnitGet"), kInvalid, "UnitGet: field 'keys'");
}

TEST(ProtocolTest, ValidateName) {
  EXPECT_OK(ValidateName("train/step-0 é", "partition_id"));
  EXPECT_STATUS(ValidateName("", "partition_id"), kInvalid, "partition_id must not be empty");
  EXPECT_STATUS(ValidateName(std::string(257, 'x'), "task_name"), kInvalid, "task_name is longer than 256");
  EXPECT_OK(ValidateName(std::string(256, 'x'), "task_name"));
  EXPECT_STATUS(ValidateName(std::string("a\0b", 3), "field name"), kInvalid, "NUL");
}

TEST(StorageKeyTest, KeysNeverCollideAcrossPartitionsIndexesOrGenerations) {
  std::set<std::string> keys;
  for (const std::string part : {"a", "a/0.1", "a/0", "b", "a:1", "1:a"}) {
    for (int64_t idx : {0, 1, 10}) {
      for (uint64_t gen : {1u, 2u, 11u}) {
        for (const std::string field : {"f", "0.1/f", "x"}) {
          EXPECT_TRUE(keys.insert(StorageKey({part, idx, gen}, field)).second)
              << StorageKey({part, idx, gen}, field);
        }
      }
    }
  }
  // Components that concatenate to the same text stay distinct.
  EXPECT_NE(StorageKey({"a/0.1/b", 0, 1}, "f"), StorageKey({"a", 0, 1}, "b/0.1/f"));
  EXPECT_EQ(StorageKey({"p", 3, 7}, "f"), StorageKey({"p", 3, 7}, "f"));
  // The documented layout (docs/architecture.md), byte for byte.
  EXPECT_EQ(StorageKey({"train_0", 12, 3, 0xabcULL}, "input_ids"),
            "tq/0000000000000abc/7:train_0/12.3/input_ids");
  EXPECT_EQ(StorageKey({"", 0, 18446744073709551615ULL, ~0ULL}, "f"),
            "tq/ffffffffffffffff/0:/0.18446744073709551615/f");
}

}  // namespace
}  // namespace tq::internal
