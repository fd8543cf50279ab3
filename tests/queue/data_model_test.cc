// The data model: dtypes, Value, Batch and BatchMeta (select, chunk, concat).
#include <gtest/gtest.h>

#include <cstring>
#include <numeric>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "common/test_util.h"
#include "tq/batch.h"
#include "tq/batch_meta.h"
#include "tq/storage.h"

namespace tq {
namespace {

struct DTypeCase {
  DType dtype;
  const char* name;
  size_t size;
};
const DTypeCase kAllDTypes[] = {
    {DType::kBool, "bool", 1},       {DType::kUInt8, "uint8", 1},     {DType::kInt8, "int8", 1},
    {DType::kInt16, "int16", 2},     {DType::kInt32, "int32", 4},     {DType::kInt64, "int64", 8},
    {DType::kFloat16, "float16", 2}, {DType::kBFloat16, "bfloat16", 2}, {DType::kFloat32, "float32", 4},
    {DType::kFloat64, "float64", 8},
};

Buffer Bytes(size_t n, uint8_t seed = 1) {
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<uint8_t>(seed + i * 31);
  return Buffer::FromVector(std::move(v));
}

Value I64(std::vector<int64_t> v, Shape shape) {
  return Value::Tensor(DType::kInt64, std::move(shape), Buffer::Copy(v.data(), v.size() * 8)).MoveValue();
}

TEST(DTypeTest, AllTenDTypesHaveNameSizeAndParse) {
  ASSERT_EQ(std::size(kAllDTypes), static_cast<size_t>(kNumDTypes));
  for (const auto& c : kAllDTypes) {
    EXPECT_EQ(DTypeSize(c.dtype), c.size) << c.name;
    EXPECT_STREQ(DTypeName(c.dtype), c.name);
    ASSERT_OK_AND_ASSIGN(DType parsed, ParseDType(c.name));
    EXPECT_EQ(parsed, c.dtype);
    ASSERT_OK_AND_ASSIGN(DType torch, ParseDType(std::string("torch.") + c.name));
    EXPECT_EQ(torch, c.dtype);
  }
  ASSERT_OK_AND_ASSIGN(DType f, ParseDType("float"));
  EXPECT_EQ(f, DType::kFloat32);
  ASSERT_OK_AND_ASSIGN(DType l, ParseDType("torch.long"));
  EXPECT_EQ(l, DType::kInt64);
}

TEST(DTypeTest, UnknownDTypeIsTypeErrorListingSupported) {
  EXPECT_STATUS(ParseDType("complex64"), kTypeError, "complex64");
  EXPECT_STATUS(ParseDType("complex64"), kTypeError, "bfloat16");
  EXPECT_EQ(DTypeSize(static_cast<DType>(77)), 0u);
  EXPECT_STREQ(DTypeName(static_cast<DType>(77)), "invalid");
}

TEST(DTypeTest, NumElementsAndShapeToString) {
  EXPECT_EQ(*NumElements({}), 1);
  EXPECT_EQ(*NumElements({0}), 0);
  EXPECT_EQ(*NumElements({2, 3, 4}), 24);
  EXPECT_STATUS(NumElements({2, -1}), kInvalid, "negative");
  EXPECT_STATUS(NumElements({int64_t{1} << 40, int64_t{1} << 40}), kInvalid, "too large");
  EXPECT_EQ(ShapeToString({}), "()");
  EXPECT_EQ(ShapeToString({3}), "(3,)");
  EXPECT_EQ(ShapeToString({2, 5}), "(2, 5)");
}

TEST(ValueTest, TensorOfEveryDTypeChecksSize) {
  for (const auto& c : kAllDTypes) {
    ASSERT_OK_AND_ASSIGN(Value v, Value::Tensor(c.dtype, {2, 3}, Bytes(6 * c.size)));
    EXPECT_TRUE(v.is_tensor());
    EXPECT_EQ(v.dtype(), c.dtype);
    EXPECT_EQ(v.shape(), (Shape{2, 3}));
    EXPECT_EQ(v.nbytes(), 6 * c.size);
    EXPECT_STATUS(Value::Tensor(c.dtype, {2, 3}, Bytes(6 * c.size + 1)), kInvalid, "needs");
  }
  EXPECT_STATUS(Value::Tensor(static_cast<DType>(10), {1}, Bytes(1)), kTypeError, "invalid dtype");
}

TEST(ValueTest, ScalarKeepsEmptyShape) {
  double x = 2.5;
  ASSERT_OK_AND_ASSIGN(Value v, Value::Tensor(DType::kFloat64, {}, Buffer::Copy(&x, 8)));
  EXPECT_TRUE(v.shape().empty()) << ShapeToString(v.shape());
  EXPECT_EQ(*v.as<double>(), 2.5);
  EXPECT_STATUS(Value::Tensor(DType::kFloat64, {}, Bytes(16)), kInvalid, "()");
  // (1,) is a different value from ().
  ASSERT_OK_AND_ASSIGN(Value one, Value::Tensor(DType::kFloat64, {1}, Buffer::Copy(&x, 8)));
  EXPECT_FALSE(v.Equals(one));
}

TEST(ValueTest, ObjectsAndEquality) {
  Value s = Value::String("héllo");
  EXPECT_FALSE(s.is_tensor());
  EXPECT_EQ(s.kind(), FieldKind::kString);
  EXPECT_EQ(s.str(), "héllo");
  EXPECT_TRUE(s.Equals(Value::Object(Buffer::CopyString("héllo"), FieldKind::kString)));
  EXPECT_FALSE(s.Equals(Value::String("hello")));
  // Same bytes, different encodings are different values.
  Value raw = Value::Object(Buffer::CopyString("héllo"));
  EXPECT_EQ(raw.kind(), FieldKind::kObject);
  EXPECT_FALSE(s.Equals(raw));
  EXPECT_EQ(Value::Object(Buffer::CopyString("p"), FieldKind::kPickle).kind(), FieldKind::kPickle);
  // An object can never claim to be a tensor.
  EXPECT_FALSE(Value::Object(Buffer::CopyString("x"), FieldKind::kTensor).is_tensor());
  // Same bytes but tensor vs object differ.
  ASSERT_OK_AND_ASSIGN(Value t, Value::Tensor(DType::kUInt8, {6}, Buffer::CopyString("héllo")));
  EXPECT_FALSE(raw.Equals(t));
  ASSERT_OK_AND_ASSIGN(Value t2, Value::Tensor(DType::kInt8, {6}, Buffer::CopyString("héllo")));
  EXPECT_FALSE(t.Equals(t2)) << "dtype differs";
}

TEST(ValueTest, FromSpec) {
  ASSERT_OK_AND_ASSIGN(Value o, Value::FromSpec(FieldKind::kObject, DType::kUInt8, {}, Buffer::CopyString("x")));
  EXPECT_EQ(o.str(), "x");
  ASSERT_OK_AND_ASSIGN(Value str, Value::FromSpec(FieldKind::kString, DType::kUInt8, {}, Buffer::CopyString("y")));
  EXPECT_EQ(str.kind(), FieldKind::kString);
  ASSERT_OK_AND_ASSIGN(Value pk, Value::FromSpec(FieldKind::kPickle, DType::kUInt8, {}, Buffer::CopyString("z")));
  EXPECT_EQ(pk.kind(), FieldKind::kPickle);
  ASSERT_OK_AND_ASSIGN(Value t, Value::FromSpec(FieldKind::kTensor, DType::kInt16, {2}, Bytes(4)));
  EXPECT_EQ(t.shape(), (Shape{2}));
  EXPECT_STATUS(Value::FromSpec(FieldKind::kTensor, DType::kInt16, {2}, Bytes(3)), kInvalid, "needs 4");
  EXPECT_STATUS(Value::FromSpec(static_cast<FieldKind>(5), DType::kInt16, {2}, Bytes(4)), kTypeError, "kind");
}

TEST(ValueTest, WithDataKeepsTheSpecAndChecksTheSize) {
  ASSERT_OK_AND_ASSIGN(Value t, Value::Tensor(DType::kInt16, {2}, Bytes(4)));
  Buffer other = Bytes(4);
  ASSERT_OK_AND_ASSIGN(Value u, t.WithData(other));
  EXPECT_EQ(u.kind(), FieldKind::kTensor);
  EXPECT_EQ(u.dtype(), DType::kInt16);
  EXPECT_EQ(u.shape(), (Shape{2}));
  EXPECT_EQ(u.data().data(), other.data());
  EXPECT_STATUS(t.WithData(Bytes(6)), kInvalid, "4 bytes cannot take 6 bytes");
  Value s = Value::String("ab");
  ASSERT_OK_AND_ASSIGN(Value s2, s.WithData(Buffer::CopyString("cd")));
  EXPECT_EQ(s2.kind(), FieldKind::kString);
  EXPECT_EQ(s2.str(), "cd");
}

// ---------------------------------------------------------------- Batch

Batch MakeBatch(size_t n) {
  Batch b(n);
  std::vector<int64_t> ids(n * 2);
  std::iota(ids.begin(), ids.end(), 100);
  EXPECT_OK(b.AddTensor("ids", DType::kInt64, {static_cast<int64_t>(n), 2}, Buffer::Copy(ids.data(), ids.size() * 8)));
  std::vector<std::string> text;
  for (size_t i = 0; i < n; ++i) text.push_back("s" + std::to_string(i));
  EXPECT_OK(b.AddStrings("text", text));
  Column ragged;
  for (size_t i = 0; i < n; ++i) ragged.push_back(I64(std::vector<int64_t>(i + 1, static_cast<int64_t>(i)), {static_cast<int64_t>(i + 1)}));
  EXPECT_OK(b.AddField("ragged", ragged));
  return b;
}

TEST(BatchTest, AddTensorSplitsIntoViewsWithoutCopy) {
  std::vector<float> v = {1, 2, 3, 4, 5, 6};
  Buffer buf = Buffer::Copy(v.data(), 24);
  Batch b(3);
  ASSERT_OK(b.AddTensor("x", DType::kFloat32, {3, 2}, buf));
  ASSERT_OK_AND_ASSIGN(const Column* col, b.Get("x"));
  ASSERT_EQ(col->size(), 3u);
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ((*col)[i].shape(), (Shape{2}));
    EXPECT_EQ((*col)[i].data().data(), buf.data() + i * 8) << "sample " << i << " was copied";
    EXPECT_EQ((*col)[i].as<float>()[1], v[i * 2 + 1]);
  }
}

TEST(BatchTest, AddTensorKeepsTheFieldWholeUntilItsSamplesAreAskedFor) {
  std::vector<float> v = {1, 2, 3, 4, 5, 6};
  Buffer buf = Buffer::Copy(v.data(), 24);
  Batch b(3);
  ASSERT_OK(b.AddTensor("x", DType::kFloat32, {3, 2}, buf));
  ASSERT_OK(b.AddStrings("s", {"a", "b", "c"}));
  ASSERT_NE(b.Dense(0), nullptr);
  EXPECT_EQ(b.Dense(1), nullptr);  // per sample
  EXPECT_EQ(b.Dense(0)->shape(), (Shape{3, 2}));
  EXPECT_EQ(b.Dense(0)->data().data(), buf.data());
  EXPECT_TRUE(b.IsUniform("x"));
  ASSERT_OK_AND_ASSIGN(Value st, b.Stack("x"));
  EXPECT_EQ(st.data().data(), buf.data()) << "the whole field was copied";
  EXPECT_EQ(st.shape(), (Shape{3, 2}));

  // A copy and a selection of fields keep it whole too; a selection of
  // samples is per sample.
  Batch copy = b;
  ASSERT_OK_AND_ASSIGN(Batch only_x, b.SelectFields({"x"}));
  ASSERT_NE(copy.Dense(0), nullptr);
  ASSERT_NE(only_x.Dense(0), nullptr);
  EXPECT_EQ(only_x.Dense(0)->data().data(), buf.data());
  ASSERT_OK_AND_ASSIGN(Batch rows, b.SelectSamples({2, 0}));
  EXPECT_EQ(rows.Dense(0), nullptr);
  EXPECT_EQ((**rows.Get("x"))[0].as<float>()[0], 5.0f);
  EXPECT_TRUE(copy.Equals(b));

  // Its samples, made once, from threads at once: one column of views.
  std::vector<const Column*> seen(4, nullptr);
  std::vector<std::thread> threads;
  for (size_t t = 0; t < seen.size(); ++t) threads.emplace_back([&, t] { seen[t] = &b.column(0); });
  for (auto& t : threads) t.join();
  for (const Column* c : seen) EXPECT_EQ(c, seen[0]);
  ASSERT_EQ(seen[0]->size(), 3u);
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ((*seen[0])[i].shape(), (Shape{2}));
    EXPECT_EQ((*seen[0])[i].data().data(), buf.data() + i * 8);
  }
  ASSERT_NE(b.Dense(0), nullptr);  // still whole for Stack
}

TEST(BatchTest, AddTensorOfScalarsGivesZeroDSamples) {
  std::vector<int32_t> v = {7, 8, 9};
  Batch b(3);
  ASSERT_OK(b.AddTensor("r", DType::kInt32, {3}, Buffer::Copy(v.data(), 12)));
  const Column& c = **b.Get("r");
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_TRUE(c[i].shape().empty());
    EXPECT_EQ(*c[i].as<int32_t>(), v[i]);
  }
  ASSERT_OK_AND_ASSIGN(Value st, b.Stack("r"));
  EXPECT_EQ(st.shape(), (Shape{3}));
}

TEST(BatchTest, AddTensorValidates) {
  Batch b(2);
  EXPECT_STATUS(b.AddTensor("x", DType::kInt32, {3, 2}, Bytes(24)), kInvalid, "leading dimension");
  EXPECT_STATUS(b.AddTensor("x", DType::kInt32, {}, Bytes(4)), kInvalid, "leading dimension");
  EXPECT_STATUS(b.AddTensor("x", DType::kInt32, {2, 2}, Bytes(15)), kInvalid, "needs 16 bytes");
  EXPECT_STATUS(b.AddField("y", Column(3)), kInvalid, "3 samples but the batch size is 2");
  EXPECT_STATUS(b.AddField("", Column(2)), kInvalid, "empty");
  EXPECT_EQ(b.num_fields(), 0u);
}

TEST(BatchTest, AddFieldReplacesAndKeepsOrder) {
  Batch b = MakeBatch(2);
  EXPECT_EQ(b.keys(), (std::vector<std::string>{"ids", "text", "ragged"}));
  ASSERT_OK(b.AddStrings("ids", {"a", "b"}));
  EXPECT_EQ(b.keys(), (std::vector<std::string>{"ids", "text", "ragged"}));
  EXPECT_EQ((**b.Get("ids"))[1].str(), "b");
  EXPECT_STATUS(b.Get("nope"), kNotFound, "nope");
}

TEST(BatchTest, StackUniformIsDenseAndCopiesOnce) {
  Batch b = MakeBatch(4);
  EXPECT_TRUE(b.IsUniform("ids"));
  ASSERT_OK_AND_ASSIGN(Value st, b.Stack("ids"));
  EXPECT_EQ(st.dtype(), DType::kInt64);
  EXPECT_EQ(st.shape(), (Shape{4, 2}));
  for (int64_t i = 0; i < 8; ++i) EXPECT_EQ(st.as<int64_t>()[i], 100 + i);
}

TEST(BatchTest, StackRaggedAndObjectsFailClearly) {
  Batch b = MakeBatch(4);
  EXPECT_FALSE(b.IsUniform("ragged"));
  EXPECT_STATUS(b.Stack("ragged"), kInvalid, "ragged");
  EXPECT_FALSE(b.IsUniform("text"));
  EXPECT_STATUS(b.Stack("text"), kTypeError, "objects");
  EXPECT_STATUS(b.Stack("missing"), kNotFound, "missing");
  EXPECT_FALSE(b.IsUniform("missing"));
  Batch empty(0);
  ASSERT_OK(empty.AddField("e", {}));
  EXPECT_FALSE(empty.Stack("e").ok());
}

TEST(BatchTest, StackMixedDTypesIsRagged) {
  Batch b(2);
  Column c;
  c.push_back(Value::Tensor(DType::kInt32, {2}, Bytes(8)).MoveValue());
  c.push_back(Value::Tensor(DType::kFloat32, {2}, Bytes(8)).MoveValue());
  ASSERT_OK(b.AddField("m", c));
  EXPECT_FALSE(b.IsUniform("m"));
  EXPECT_FALSE(b.Stack("m").ok());
}

TEST(BatchTest, RaggedSamplesKeepTheirShapes) {
  Batch b = MakeBatch(5);
  const Column& c = **b.Get("ragged");
  for (size_t i = 0; i < 5; ++i) {
    EXPECT_EQ(c[i].shape(), (Shape{static_cast<int64_t>(i + 1)}));
    EXPECT_EQ(c[i].as<int64_t>()[i], static_cast<int64_t>(i));
  }
}

TEST(BatchTest, SelectSamples) {
  Batch b = MakeBatch(5);
  ASSERT_OK_AND_ASSIGN(Batch s, b.SelectSamples({4, 0, 4}));
  EXPECT_EQ(s.batch_size(), 3u);
  EXPECT_EQ(s.keys(), b.keys());
  EXPECT_EQ((**s.Get("text"))[0].str(), "s4");
  EXPECT_EQ((**s.Get("text"))[1].str(), "s0");
  EXPECT_TRUE((**s.Get("ragged"))[2].Equals((**b.Get("ragged"))[4]));
  EXPECT_STATUS(b.SelectSamples({5}), kInvalid, "out of range");
}

TEST(BatchTest, SelectFields) {
  Batch b = MakeBatch(3);
  ASSERT_OK_AND_ASSIGN(Batch s, b.SelectFields({"text", "ids"}));
  EXPECT_EQ(s.keys(), (std::vector<std::string>{"text", "ids"}));
  EXPECT_EQ(s.batch_size(), 3u);
  EXPECT_STATUS(b.SelectFields({"ids", "nope"}), kNotFound, "nope");
}

TEST(BatchTest, ChunkAndConcatRoundTrip) {
  Batch b = MakeBatch(7);
  auto chunks = b.Chunk(3);
  ASSERT_EQ(chunks.size(), 3u);
  EXPECT_EQ(chunks[0].batch_size(), 3u);
  EXPECT_EQ(chunks[1].batch_size(), 2u);
  EXPECT_EQ(chunks[2].batch_size(), 2u);
  EXPECT_EQ((**chunks[1].Get("text"))[0].str(), "s3");
  ASSERT_OK_AND_ASSIGN(Batch back, Batch::Concat(chunks));
  EXPECT_TRUE(back.Equals(b));
  EXPECT_TRUE(b.Chunk(0).empty());
  auto many = b.Chunk(10);  // more chunks than samples: trailing empty chunks
  ASSERT_EQ(many.size(), 10u);
  size_t total = 0;
  for (const auto& c : many) total += c.batch_size();
  EXPECT_EQ(total, 7u);
}

TEST(BatchTest, ConcatValidatesFields) {
  Batch a = MakeBatch(2);
  ASSERT_OK_AND_ASSIGN(Batch fewer, a.SelectFields({"ids"}));
  EXPECT_STATUS(Batch::Concat({a, fewer}), kInvalid, "different fields");
  ASSERT_OK_AND_ASSIGN(Batch other, a.SelectFields({"ids", "text"}));
  Batch renamed(2);
  ASSERT_OK(renamed.AddField("ids", **other.Get("ids")));
  ASSERT_OK(renamed.AddField("zzz", **other.Get("text")));
  EXPECT_STATUS(Batch::Concat({other, renamed}), kInvalid, "text");
  ASSERT_OK_AND_ASSIGN(Batch none, Batch::Concat({}));
  EXPECT_EQ(none.batch_size(), 0u);
}

TEST(BatchTest, EqualsDetectsDifferences) {
  Batch a = MakeBatch(3), b = MakeBatch(3);
  EXPECT_TRUE(a.Equals(b));
  ASSERT_OK(b.AddStrings("text", {"s0", "s1", "X"}));
  EXPECT_FALSE(a.Equals(b));
  EXPECT_FALSE(a.Equals(MakeBatch(2)));
}

// ---------------------------------------------------------------- BatchMeta

FieldInfo Info(DType d, Shape shape, bool produced = true) {
  FieldInfo f;
  f.produced = produced;
  f.kind = FieldKind::kTensor;
  f.dtype = d;
  f.shape = shape;
  f.nbytes = static_cast<uint64_t>(*NumElements(shape)) * DTypeSize(d);
  return f;
}

BatchMeta MakeMeta(size_t n, const std::string& partition = "p") {
  std::vector<SampleMeta> samples;
  for (size_t i = 0; i < n; ++i) {
    SampleMeta s;
    s.global_index = static_cast<int64_t>(i) * 10;
    s.generation = i + 1;
    s.partition_id = partition;
    s.fields = {Info(DType::kInt64, {4}), Info(DType::kFloat32, {static_cast<int64_t>(i + 1)})};
    s.custom["seq_len"] = static_cast<int64_t>(i);
    samples.push_back(s);
  }
  return BatchMeta({"a", "b"}, samples);
}

TEST(BatchMetaTest, AccessorsAndSchema) {
  BatchMeta m = MakeMeta(3);
  EXPECT_EQ(m.size(), 3u);
  EXPECT_EQ(m.global_indexes(), (std::vector<int64_t>{0, 10, 20}));
  EXPECT_EQ(m.partition_ids(), (std::vector<std::string>{"p", "p", "p"}));
  EXPECT_EQ(m.FieldIndex("b"), 1);
  EXPECT_EQ(m.FieldIndex("zz"), -1);
  auto schema = m.schema();
  ASSERT_EQ(schema.size(), 2u);
  EXPECT_EQ(schema[0].name, "a");
  EXPECT_FALSE(schema[0].ragged);
  EXPECT_TRUE(schema[0].produced);
  EXPECT_EQ(schema[0].shape, (Shape{4}));
  EXPECT_TRUE(schema[1].ragged);
  EXPECT_EQ(schema[1].dtype, DType::kFloat32);
}

TEST(BatchMetaTest, SchemaOfScalarAndUnproduced) {
  BatchMeta m = MakeMeta(2);
  m.mutable_samples()[0].fields[0] = Info(DType::kFloat32, {});
  m.mutable_samples()[1].fields[0] = Info(DType::kFloat32, {});
  m.mutable_samples()[1].fields[1].produced = false;
  auto schema = m.schema();
  EXPECT_TRUE(schema[0].shape.empty());
  EXPECT_FALSE(schema[0].ragged);
  EXPECT_FALSE(schema[1].produced);
  EXPECT_FALSE(BatchMeta({"x"}, {}).schema()[0].produced);
}

TEST(BatchMetaTest, SelectSamplesAndFields) {
  BatchMeta m = MakeMeta(4);
  ASSERT_OK_AND_ASSIGN(BatchMeta s, m.SelectSamples({3, 1}));
  EXPECT_EQ(s.global_indexes(), (std::vector<int64_t>{30, 10}));
  EXPECT_EQ(s.field_names(), m.field_names());
  EXPECT_EQ(std::get<int64_t>(s.samples()[0].custom.at("seq_len")), 3);
  EXPECT_STATUS(m.SelectSamples({4}), kInvalid, "out of range");

  ASSERT_OK_AND_ASSIGN(BatchMeta f, m.SelectFields({"b"}));
  EXPECT_EQ(f.field_names(), (std::vector<std::string>{"b"}));
  ASSERT_EQ(f.samples()[2].fields.size(), 1u);
  EXPECT_EQ(f.samples()[2].fields[0].shape, (Shape{3}));
  EXPECT_EQ(f.samples()[2].generation, 3u);
  EXPECT_STATUS(m.SelectFields({"nope"}), kNotFound, "nope");
}

TEST(BatchMetaTest, ChunkAndConcat) {
  BatchMeta m = MakeMeta(5);
  auto chunks = m.Chunk(2);
  ASSERT_EQ(chunks.size(), 2u);
  EXPECT_EQ(chunks[0].size(), 3u);
  EXPECT_EQ(chunks[1].size(), 2u);
  EXPECT_EQ(chunks[1].global_indexes(), (std::vector<int64_t>{30, 40}));
  EXPECT_EQ(BatchMeta::Concat(chunks), m);
  EXPECT_TRUE(m.Chunk(0).empty());
}

TEST(BatchMetaTest, ConcatMergesFieldListsMarkingMissingAsUnproduced) {
  BatchMeta m = MakeMeta(2);
  BatchMeta only_b = *m.SelectFields({"b"});
  std::vector<SampleMeta> cs = MakeMeta(1, "q").samples();
  cs[0].fields = {Info(DType::kUInt8, {2})};
  BatchMeta c({"c"}, cs);
  BatchMeta all = BatchMeta::Concat({only_b, c});
  EXPECT_EQ(all.field_names(), (std::vector<std::string>{"b", "c"}));
  ASSERT_EQ(all.size(), 3u);
  EXPECT_TRUE(all.samples()[0].fields[0].produced);
  EXPECT_FALSE(all.samples()[0].fields[1].produced);
  EXPECT_FALSE(all.samples()[2].fields[0].produced);
  EXPECT_TRUE(all.samples()[2].fields[1].produced);
  EXPECT_EQ(all.samples()[2].partition_id, "q");
  EXPECT_EQ(all.partition_ids(), (std::vector<std::string>{"p", "p", "q"}));
  EXPECT_TRUE(BatchMeta::Concat({}).empty());
}


TEST(BatchMetaTest, UnionJoinsFieldsOfTheSameSamples) {
  BatchMeta a = MakeMeta(3);  // fields a, b
  ASSERT_OK_AND_ASSIGN(BatchMeta only_b, a.SelectFields({"b"}));
  std::vector<SampleMeta> cs = a.samples();
  for (auto& s : cs) {
    FieldInfo fi;
    fi.produced = true;
    fi.kind = FieldKind::kTensor;
    fi.dtype = DType::kInt64;
    fi.shape = {7};
    fi.nbytes = 56;
    s.fields = {fi, fi};
  }
  BatchMeta c({"b", "c"}, cs);
  ASSERT_OK_AND_ASSIGN(BatchMeta u, BatchMeta::Union(only_b, c));
  EXPECT_EQ(u.field_names(), (std::vector<std::string>{"b", "c"}));
  EXPECT_EQ(u.samples()[1].fields[0].shape, (Shape{7}));  // b's record wins
  ASSERT_OK_AND_ASSIGN(BatchMeta u2, BatchMeta::Union(a, c));
  EXPECT_EQ(u2.field_names(), (std::vector<std::string>{"a", "b", "c"}));
  EXPECT_EQ(u2.samples()[0].fields[0], a.samples()[0].fields[0]);  // a kept where c has nothing
  ASSERT_OK_AND_ASSIGN(BatchMeta sel, a.SelectSamples({0, 1}));
  EXPECT_STATUS(BatchMeta::Union(a, sel), kInvalid, "3 and 2");
  ASSERT_OK_AND_ASSIGN(BatchMeta swapped, a.SelectSamples({1, 0, 2}));
  EXPECT_STATUS(BatchMeta::Union(a, swapped), kInvalid, "other samples");
}

// A backend that keeps what it is given (as a user's registered backend
// that does not pack): PutPackingColumns' default hands it each value.
class KeepingStorage : public StorageManager {
 public:
  std::string name() const override { return "keeping"; }
  Status Put(const std::vector<SampleKey>&, const std::vector<std::string>& fields,
             const std::vector<std::vector<Buffer>>& data) override {
    fields_ = fields;
    data_ = data;
    return Status::OK();
  }
  Result<std::vector<std::vector<Buffer>>> Get(const std::vector<SampleKey>&, const std::vector<std::string>&,
                                               const std::vector<std::vector<uint64_t>>&) override {
    return data_;
  }
  Status Delete(const std::vector<SampleKey>&, const std::vector<std::string>&) override { return Status::OK(); }
  std::vector<std::string> fields_;
  std::vector<std::vector<Buffer>> data_;
};

TEST(FieldValuesTest, ADefaultBackendGetsRowsAsOneValuePerSample) {
  KeepingStorage storage;
  const Buffer rows = Bytes(30, 5);
  std::vector<FieldValues> data(2);
  data[0] = FieldValues::Rows(rows, 10);
  data[1].values = {Bytes(1, 1), Bytes(2, 2), Bytes(3, 3)};
  EXPECT_EQ(data[0].size(), 3u);
  EXPECT_EQ(data[0].Value(2).view(), rows.Slice(20, 10).view());
  const std::vector<SampleKey> keys(3, SampleKey{"p", 0, 0, 1});
  std::vector<std::vector<Placement>> placed;
  ASSERT_OK(storage.PutPackingColumns(keys, {"rows", "each"}, data, &placed));
  ASSERT_EQ(storage.data_.size(), 2u);
  ASSERT_EQ(storage.data_[0].size(), 3u);
  for (size_t s = 0; s < 3; ++s) {
    EXPECT_EQ(storage.data_[0][s].view(), rows.Slice(s * 10, 10).view());
    EXPECT_EQ(storage.data_[1][s].view(), data[1].values[s].view());
    EXPECT_EQ(placed[0][s].pack, 0u) << "not packed: each under its own key";
  }
  // Rows that do not cover every sample: refused, naming the field, before the backend sees them.
  storage.data_.clear();
  data[0] = FieldValues::Rows(rows.Slice(0, 29), 10);
  EXPECT_STATUS(storage.PutPackingColumns(keys, {"rows", "each"}, data, &placed), kInvalid,
                "field 'rows' holds 29 bytes, not 3 rows of 10");
  EXPECT_TRUE(storage.data_.empty());
}

}  // namespace
}  // namespace tq
