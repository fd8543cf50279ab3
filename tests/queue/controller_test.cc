// The controller, embedded storage units and the client over real sockets:
// round trips, waiting fetches, clears, capacity and malformed requests.
#include <gtest/gtest.h>

#include <chrono>
#include <future>
#include <numeric>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "common/test_util.h"
#include "common/wire/rpc.h"
#include "queue/protocol.h"
#include "tq/client.h"
#include "tq/controller.h"
#include "tq/storage_unit.h"

namespace tq {
namespace {

using namespace std::chrono_literals;
using tqds::wire::Message;
using tqds::wire::MsgType;
using tqds::wire::RpcClient;
using Packer = msgpack::packer<msgpack::sbuffer>;

Value I64s(const std::vector<int64_t>& v, Shape shape) {
  return Value::Tensor(DType::kInt64, std::move(shape), Buffer::Copy(v.data(), v.size() * 8)).MoveValue();
}

// A batch of n samples whose bytes derive from `seed + i`.
Batch Numbered(size_t n, int64_t seed) {
  Batch b(n);
  Column uid, ragged;
  std::vector<std::string> text;
  for (size_t i = 0; i < n; ++i) {
    int64_t u = seed + static_cast<int64_t>(i);
    uid.push_back(I64s({u}, {}));
    ragged.push_back(I64s(std::vector<int64_t>(static_cast<size_t>(1 + u % 5), u), {1 + u % 5}));
    text.push_back("sample-" + std::to_string(u));
  }
  EXPECT_OK(b.AddField("uid", uid));
  EXPECT_OK(b.AddField("ragged", ragged));
  EXPECT_OK(b.AddStrings("text", text));
  return b;
}

struct UnitStats {
  uint64_t keys = 0, bytes = 0, capacity = 0;
};

Result<UnitStats> StatsOf(const std::string& unit) {
  TQDS_ASSIGN_OR_RETURN(auto c, RpcClient::Connect(unit));
  TQDS_ASSIGN_OR_RETURN(Message rep, c->CallSync(Message(MsgType::kUnitStats, 0), 10s));
  TQDS_ASSIGN_OR_RETURN(auto rd, tqds::wire::MapReader::Of(rep.body(), "UnitStats"));
  UnitStats st;
  TQDS_ASSIGN_OR_RETURN(st.keys, rd.Get<uint64_t>("keys"));
  TQDS_ASSIGN_OR_RETURN(st.bytes, rd.Get<uint64_t>("bytes"));
  TQDS_ASSIGN_OR_RETURN(st.capacity, rd.Get<uint64_t>("capacity"));
  return st;
}

class ControllerTest : public ::testing::Test {
 protected:
  void SetUp() override { Start(uint64_t{1} << 30); }

  void Start(uint64_t unit_capacity) {
    ControllerOptions o;
    o.embedded_storage_units = 2;
    o.storage_unit_capacity_bytes = unit_capacity;
    auto c = TransferQueueController::Start(o);
    ASSERT_TRUE(c.ok()) << c.status().ToString();
    controller_ = c.MoveValue();
    client_ = NewClient("test-client");
    ASSERT_NE(client_, nullptr);
  }

  std::unique_ptr<TransferQueueClient> NewClient(const std::string& id) {
    auto c = std::make_unique<TransferQueueClient>(id, controller_->address());
    Status st = c->initialize_storage_manager("SimpleStorageManager");
    EXPECT_TRUE(st.ok()) << st.ToString();
    return st.ok() ? std::move(c) : nullptr;
  }

  UnitStats TotalStats() {
    UnitStats total;
    for (const auto& u : controller_->storage_units()) {
      auto st = StatsOf(u);
      EXPECT_TRUE(st.ok()) << st.status().ToString();
      if (!st.ok()) continue;
      total.keys += st->keys;
      total.bytes += st->bytes;
      total.capacity += st->capacity;
    }
    return total;
  }

  Result<Message> Raw(Message m) {
    if (!raw_) {
      auto c = RpcClient::Connect(controller_->address());
      if (!c.ok()) return c.status();
      raw_ = c.MoveValue();
    }
    return raw_->CallSync(std::move(m), 10s);
  }

  std::unique_ptr<TransferQueueController> controller_;
  std::unique_ptr<TransferQueueClient> client_;
  std::unique_ptr<RpcClient> raw_;
};

TEST_F(ControllerTest, PutGetMetaGetDataRoundTrip) {
  Batch in = Numbered(6, 100);
  ASSERT_OK_AND_ASSIGN(BatchMeta put, client_->put(in, "p"));
  EXPECT_EQ(put.size(), 6u);
  EXPECT_EQ(put.field_names(), in.keys());
  ASSERT_OK_AND_ASSIGN(BatchMeta meta, client_->get_meta({"uid", "ragged", "text"}, 6, "p", "train"));
  EXPECT_EQ(meta.global_indexes(), put.global_indexes());
  auto schema = meta.schema();
  EXPECT_TRUE(schema[0].shape.empty());
  EXPECT_FALSE(schema[0].ragged);
  EXPECT_TRUE(schema[1].ragged);
  EXPECT_EQ(schema[2].kind, FieldKind::kString);
  ASSERT_OK_AND_ASSIGN(Batch out, client_->get_data(meta));
  EXPECT_TRUE(out.Equals(in));
  // A subset of fields and samples.
  ASSERT_OK_AND_ASSIGN(BatchMeta sub, meta.SelectSamples({4, 1}));
  ASSERT_OK_AND_ASSIGN(sub, sub.SelectFields({"text"}));
  ASSERT_OK_AND_ASSIGN(Batch part, client_->get_data(sub));
  EXPECT_EQ(part.keys(), (std::vector<std::string>{"text"}));
  EXPECT_EQ((**part.Get("text"))[0].str(), "sample-104");
  EXPECT_EQ((**part.Get("text"))[1].str(), "sample-101");
}

TEST_F(ControllerTest, EveryDTypeAndScalarShapeRoundTrip) {
  Batch in(3);
  for (int d = 0; d < kNumDTypes; ++d) {
    auto dtype = static_cast<DType>(d);
    size_t es = DTypeSize(dtype);
    std::vector<uint8_t> bytes(3 * 2 * 3 * es);
    for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<uint8_t>(i * 7 + d);
    if (dtype == DType::kBool) for (auto& b : bytes) b &= 1;
    ASSERT_OK(in.AddTensor(std::string("t_") + DTypeName(dtype), dtype, {3, 2, 3}, Buffer::FromVector(bytes)));
    std::vector<uint8_t> scalars(3 * es, static_cast<uint8_t>(d + 1));
    ASSERT_OK(in.AddTensor(std::string("s_") + DTypeName(dtype), dtype, {3}, Buffer::FromVector(scalars)));
  }
  ASSERT_OK(in.AddField("pickled", {Value::Object(Buffer::CopyString("\x80\x04."), FieldKind::kPickle),
                                    Value::Object(Buffer::CopyString("")), Value::String("")}));
  ASSERT_OK(client_->put(in, "dtypes"));
  ASSERT_OK_AND_ASSIGN(BatchMeta meta, client_->get_meta(in.keys(), 3, "dtypes", "t"));
  for (const auto& f : meta.schema()) {
    if (f.name.rfind("s_", 0) == 0) {
      EXPECT_TRUE(f.shape.empty()) << f.name << " came back as " << ShapeToString(f.shape);
    }
    if (f.name.rfind("t_", 0) == 0) {
      EXPECT_EQ(f.shape, (Shape{2, 3})) << f.name;
    }
  }
  ASSERT_OK_AND_ASSIGN(Batch out, client_->get_data(meta));
  EXPECT_TRUE(out.Equals(in));
  for (int d = 0; d < kNumDTypes; ++d) {
    std::string name = std::string("s_") + DTypeName(static_cast<DType>(d));
    const Value& v = (**out.Get(name))[0];
    EXPECT_TRUE(v.shape().empty()) << name;
    ASSERT_OK_AND_ASSIGN(Value stacked, out.Stack(name));
    EXPECT_EQ(stacked.shape(), (Shape{3})) << name << ": uniform scalars stack to (batch,)";
  }
  EXPECT_EQ((**out.Get("pickled"))[0].kind(), FieldKind::kPickle);
  EXPECT_EQ((**out.Get("pickled"))[1].kind(), FieldKind::kObject);
  EXPECT_EQ((**out.Get("pickled"))[2].kind(), FieldKind::kString);
}

TEST_F(ControllerTest, LaterFieldsOfTheSameSamples) {
  ASSERT_OK_AND_ASSIGN(BatchMeta prompts, client_->put(Numbered(4, 0), "p"));
  // Nothing has "response" yet.
  EXPECT_STATUS(client_->get_meta({"uid", "response"}, 4, "p", "train", {}, FetchMode::kFetch, 100ms), kTimeout,
                "within 100 ms");
  ASSERT_OK_AND_ASSIGN(BatchMeta roll, client_->get_meta({"uid"}, 4, "p", "rollout"));
  Batch resp(4);
  ASSERT_OK(resp.AddStrings("response", {"r0", "r1", "r2", "r3"}));
  ASSERT_OK(client_->put(resp, roll));
  ASSERT_OK_AND_ASSIGN(BatchMeta meta, client_->get_meta({"uid", "response"}, 4, "p", "train"));
  ASSERT_OK_AND_ASSIGN(Batch out, client_->get_data(meta));
  EXPECT_EQ((**out.Get("response"))[2].str(), "r2");
  EXPECT_EQ(*(**out.Get("uid"))[2].as<int64_t>(), 2);
  Batch wrong(3);
  ASSERT_OK(wrong.AddStrings("x", {"a", "b", "c"}));
  EXPECT_STATUS(client_->put(wrong, roll), kInvalid, "3 samples but the meta has 4");
}

TEST_F(ControllerTest, GetDataOfUnproducedFieldIsNotFound) {
  ASSERT_OK_AND_ASSIGN(BatchMeta put, client_->put(Numbered(2, 0), "p"));
  ASSERT_OK_AND_ASSIGN(BatchMeta meta, client_->get_custom_meta("p", put.global_indexes()));
  BatchMeta asks({"uid", "missing"}, meta.samples());
  for (auto& s : asks.mutable_samples()) s.fields = {s.fields[0], FieldInfo{}};
  EXPECT_STATUS(client_->get_data(asks), kNotFound, "field 'missing'");
}

TEST_F(ControllerTest, WaitingFetchDoesNotDelayOtherRequests) {
  auto other = NewClient("other");
  ASSERT_NE(other, nullptr);
  auto t_wait = std::chrono::steady_clock::now();
  auto waiting = client_->async_get_meta({"uid"}, 4, "slow", "train", {}, FetchMode::kFetch, 20s);
  // While it waits, another client's put, get_meta and get_data are served
  // (the same client too: requests share one connection).
  for (int i = 0; i < 5; ++i) {
    auto t0 = std::chrono::steady_clock::now();
    ASSERT_OK(other->put(Numbered(2, i * 2), "fast"));
    ASSERT_OK_AND_ASSIGN(BatchMeta m, other->get_meta({"uid"}, 2, "fast", "train", {}, FetchMode::kFetch, 5s));
    ASSERT_OK(other->get_data(m));
    ASSERT_OK(client_->list_partitions());
    EXPECT_LT(tqds::testing::SecondsSince(t0), 2.0) << "a waiting get_meta delayed other requests";
  }
  EXPECT_EQ(waiting.wait_for(0ms), std::future_status::timeout) << "the fetch returned without data";
  // The waiting fetch is answered as soon as enough data arrives.
  ASSERT_OK(other->put(Numbered(3, 1000), "slow"));
  EXPECT_EQ(waiting.wait_for(300ms), std::future_status::timeout) << "3 of 4 samples must not satisfy it";
  auto t_put = std::chrono::steady_clock::now();
  ASSERT_OK(other->put(Numbered(1, 2000), "slow"));
  ASSERT_EQ(waiting.wait_for(10s), std::future_status::ready);
  EXPECT_LT(tqds::testing::SecondsSince(t_put), 2.0);
  EXPECT_LT(tqds::testing::SecondsSince(t_wait), 15.0) << "answered by its timeout, not by the data";
  ASSERT_OK_AND_ASSIGN(BatchMeta got, waiting.get());
  EXPECT_EQ(got.size(), 4u);
}

TEST_F(ControllerTest, ManyWaitersAreAnsweredInOrderOfArrival) {
  std::vector<std::future<Result<BatchMeta>>> waiters;
  for (int i = 0; i < 4; ++i) {
    waiters.push_back(client_->async_get_meta({"uid"}, 2, "w", "train", {}, FetchMode::kFetch, 20s));
  }
  ASSERT_OK(client_->put(Numbered(8, 0), "w"));
  std::set<int64_t> all;
  for (auto& w : waiters) {
    ASSERT_EQ(w.wait_for(10s), std::future_status::ready);
    ASSERT_OK_AND_ASSIGN(BatchMeta m, w.get());
    ASSERT_EQ(m.size(), 2u);
    for (int64_t gi : m.global_indexes()) EXPECT_TRUE(all.insert(gi).second) << gi << " handed out twice";
  }
  EXPECT_EQ(all.size(), 8u);
}

TEST_F(ControllerTest, FetchTimeoutIsAClearError) {
  auto t0 = std::chrono::steady_clock::now();
  auto r = client_->get_meta({"uid"}, 8, "empty_partition", "train", {}, FetchMode::kFetch, 300ms);
  double secs = tqds::testing::SecondsSince(t0);
  EXPECT_STATUS(r, kTimeout, "fewer than 8 samples");
  EXPECT_STATUS(r, kTimeout, "'empty_partition'");
  EXPECT_STATUS(r, kTimeout, "'train'");
  EXPECT_STATUS(r, kTimeout, "within 300 ms");
  EXPECT_GE(secs, 0.25);
  EXPECT_LT(secs, 3.0);
}

TEST_F(ControllerTest, PollAndForceFetchDoNotWait) {
  ASSERT_OK_AND_ASSIGN(BatchMeta none, client_->get_meta({"uid"}, 8, "p", "t", {}, FetchMode::kPoll));
  EXPECT_TRUE(none.empty());
  ASSERT_OK(client_->put(Numbered(3, 0), "p"));
  ASSERT_OK_AND_ASSIGN(BatchMeta forced, client_->get_meta({"uid"}, 0, "p", "", {}, FetchMode::kForceFetch));
  EXPECT_EQ(forced.size(), 3u);
  ASSERT_OK_AND_ASSIGN(BatchMeta polled, client_->get_meta({"uid"}, 8, "p", "t", {}, FetchMode::kPoll));
  EXPECT_EQ(polled.size(), 3u);
  ASSERT_OK_AND_ASSIGN(auto cs, client_->get_consumption_status("p", "t"));
  EXPECT_EQ(cs.consumed, 3u);
}

TEST_F(ControllerTest, MalformedRequestsGetErrorsAndControllerKeepsServing) {
  ASSERT_OK(client_->put(Numbered(2, 0), "p"));
  // Body is not a map.
  Message bad(MsgType::kCtlGetMeta, 0);
  bad.set_body(tqds::wire::PackBody([](Packer& pk) { pk.pack_array(0); }));
  EXPECT_STATUS(Raw(std::move(bad)), kInvalid, "GetMeta: body must be a map");
  // Missing and wrong-typed fields.
  Message alloc(MsgType::kCtlAllocate, 0);
  alloc.set_body(tqds::wire::PackBody([](Packer& pk) {
    pk.pack_map(2);
    pk.pack("partition_id");
    pk.pack("p");
    pk.pack("count");
    pk.pack("lots");
  }));
  EXPECT_STATUS(Raw(std::move(alloc)), kInvalid, "field 'count'");
  Message huge(MsgType::kCtlAllocate, 0);
  huge.set_body(tqds::wire::PackBody([](Packer& pk) {
    pk.pack_map(2);
    pk.pack("partition_id");
    pk.pack("p");
    pk.pack("count");
    pk.pack_int64(int64_t{1} << 40);
  }));
  EXPECT_STATUS(Raw(std::move(huge)), kInvalid, "max_allocate_per_request");
  // A produced notification with a corrupt meta.
  Message notify(MsgType::kCtlNotifyProduced, 0);
  notify.set_body(tqds::wire::PackBody([](Packer& pk) {
    pk.pack_map(2);
    pk.pack("fields");
    pk.pack(std::vector<std::string>{"x"});
    pk.pack("samples");
    pk.pack_array(1);
    pk.pack_array(5);
    pk.pack(0);
    pk.pack(1);
    pk.pack("p");
    pk.pack_array(1);
    pk.pack_array(5);
    pk.pack(true);
    pk.pack(0);
    pk.pack(42);  // unknown dtype
    pk.pack_array(0);
    pk.pack(8);
    pk.pack_map(0);
  }));
  EXPECT_STATUS(Raw(std::move(notify)), kInvalid, "unknown dtype id 42");
  // Unknown message type.
  EXPECT_STATUS(Raw(Message(static_cast<MsgType>(4000), 0)), kInvalid, "unknown message type 4000");
  // Nil bodies everywhere.
  for (auto t : {MsgType::kCtlGetMeta, MsgType::kCtlClearPartition, MsgType::kCtlClearSamples,
                 MsgType::kCtlReleaseIndexes, MsgType::kCtlProductionStatus, MsgType::kCtlConsumptionStatus,
                 MsgType::kCtlResetConsumption, MsgType::kCtlSetCustomMeta, MsgType::kCtlGetCustomMeta,
                 MsgType::kCtlRegisterStorage, MsgType::kCtlNotifyProduced, MsgType::kCtlAllocate}) {
    auto r = Raw(Message(t, 0));
    EXPECT_FALSE(r.ok()) << "type " << int(t) << " accepted a nil body";
    EXPECT_TRUE(r.status().IsInvalid()) << int(t) << ": " << r.status().ToString();
  }
  // Garbage frames from a raw peer.
  {
    zmq::socket_t sock(tqds::wire::Context(), zmq::socket_type::dealer);
    sock.set(zmq::sockopt::linger, 0);
    sock.set(zmq::sockopt::rcvtimeo, 10000);
    sock.connect(controller_->address());
    sock.send(zmq::str_buffer("\xc1garbage"), zmq::send_flags::none);
    auto rep = tqds::wire::RecvMessage(sock);
    ASSERT_TRUE(rep.ok()) << rep.status().ToString();
    EXPECT_TRUE(rep->status().IsInvalid());
  }
  // Still serving: the earlier data is intact.
  ASSERT_OK(Raw(Message(MsgType::kCtlPing, 0)));
  ASSERT_OK_AND_ASSIGN(BatchMeta meta, client_->get_meta({"uid"}, 2, "p", "t"));
  ASSERT_OK_AND_ASSIGN(Batch out, client_->get_data(meta));
  EXPECT_TRUE(out.Equals(*Numbered(2, 0).SelectFields({"uid"})));
}

TEST_F(ControllerTest, BadClientArguments) {
  ASSERT_OK(client_->put(Numbered(2, 0), "p"));
  EXPECT_STATUS(client_->put(Numbered(1, 0), ""), kInvalid, "partition_id");
  EXPECT_STATUS(client_->put(Batch(0), "p"), kInvalid, "no fields");
  Batch empty(0);
  ASSERT_OK(empty.AddField("x", {}));
  EXPECT_STATUS(client_->put(empty, "p"), kInvalid, "empty");
  EXPECT_STATUS(client_->get_meta({"uid"}, 1, "p", ""), kInvalid, "task_name");
  EXPECT_STATUS(client_->get_meta({}, 1, "p", "t", {}, FetchMode::kPoll), kInvalid, "data field");
  EXPECT_STATUS(client_->get_meta({"uid"}, -1, "p", "t", {}, FetchMode::kPoll), kInvalid, "batch_size");
  EXPECT_STATUS(client_->get_meta({"uid"}, 2, "p", "t", {{"sampler", std::string("nope")}}, FetchMode::kPoll),
                kInvalid, "unknown sampler");
}

TEST_F(ControllerTest, UnknownManagerTypeNamesTheKnownOnes) {
  TransferQueueClient c("x", controller_->address());
  Status st = c.initialize_storage_manager("MooncakeStorageManager");
  EXPECT_STATUS(st, kInvalid, "MooncakeStorageManager");
  EXPECT_STATUS(st, kInvalid, "SimpleStorageManager");
}

TEST_F(ControllerTest, PutBeforeInitializeFailsClearly) {
  TransferQueueClient c("fresh", controller_->address());
  EXPECT_STATUS(c.put(Numbered(1, 0), "p"), kInvalid, "initialize_storage_manager");
  EXPECT_STATUS(c.get_data(BatchMeta()), kInvalid, "initialize_storage_manager");
  // Nothing was allocated by the refused put.
  ASSERT_OK_AND_ASSIGN(auto parts, c.list_partitions());
  EXPECT_TRUE(parts.empty());
}

TEST_F(ControllerTest, ExplicitStorageUnitList) {
  TransferQueueClient c("explicit", controller_->address());
  Config cfg;
  cfg["storage_units"] = controller_->storage_units();
  ASSERT_OK(c.initialize_storage_manager("SimpleStorageManager", cfg));
  ASSERT_OK(c.put(Numbered(4, 0), "p"));
  ASSERT_OK_AND_ASSIGN(BatchMeta m, client_->get_meta({"uid"}, 4, "p", "t"));
  ASSERT_OK_AND_ASSIGN(Batch b, client_->get_data(m));  // the other client reads what this one wrote
  EXPECT_TRUE(b.Equals(*Numbered(4, 0).SelectFields({"uid"})));
  Config bad;
  bad["storage_units"] = "tcp://x";
  EXPECT_STATUS(c.initialize_storage_manager("SimpleStorageManager", bad), kInvalid, "list");
}

TEST_F(ControllerTest, DeadControllerFailsWithUnavailable) {
  std::string ep = controller_->address();
  controller_->Stop();
  TransferQueueClient c("late", ep);
  auto t0 = std::chrono::steady_clock::now();
  EXPECT_STATUS(c.initialize_storage_manager("SimpleStorageManager"), kUnavailable, ep);
  EXPECT_LT(tqds::testing::SecondsSince(t0), 20.0);
  TransferQueueClient bad("bad", "nonsense://");
  EXPECT_STATUS(bad.list_partitions(), kInvalid, "nonsense://");
}

TEST_F(ControllerTest, AsyncTwins) {
  auto put = client_->async_put(Numbered(4, 7), "async");
  ASSERT_EQ(put.wait_for(10s), std::future_status::ready);
  ASSERT_OK_AND_ASSIGN(BatchMeta written, put.get());
  auto meta_f = client_->async_get_meta({"uid", "text"}, 4, "async", "t");
  ASSERT_EQ(meta_f.wait_for(10s), std::future_status::ready);
  ASSERT_OK_AND_ASSIGN(BatchMeta meta, meta_f.get());
  EXPECT_EQ(meta.global_indexes(), written.global_indexes());
  auto data_f = client_->async_get_data(meta);
  ASSERT_EQ(data_f.wait_for(10s), std::future_status::ready);
  ASSERT_OK_AND_ASSIGN(Batch data, data_f.get());
  EXPECT_EQ((**data.Get("text"))[3].str(), "sample-10");
  auto clear_s = client_->async_clear_samples(*meta.SelectSamples({0, 1}));
  ASSERT_EQ(clear_s.wait_for(10s), std::future_status::ready);
  ASSERT_OK(clear_s.get());
  ASSERT_OK_AND_ASSIGN(auto ps, client_->get_production_status("async"));
  EXPECT_EQ(ps.num_samples, 2u);
  auto clear_p = client_->async_clear_partition("async");
  ASSERT_EQ(clear_p.wait_for(10s), std::future_status::ready);
  ASSERT_OK(clear_p.get());
  EXPECT_STATUS(client_->get_production_status("async"), kNotFound, "async");
  // Errors come through the futures too.
  auto bad = client_->async_get_meta({"uid"}, 1, "", "t");
  EXPECT_STATUS(bad.get(), kInvalid, "partition_id");
}

TEST_F(ControllerTest, AsyncFutureOutlivesTheClient) {
  std::future<Status> f;
  {
    auto c = NewClient("short-lived");
    ASSERT_NE(c, nullptr);
    ASSERT_OK(c->put(Numbered(1, 0), "p"));
    f = c->async_clear_samples(*client_->get_custom_meta("p", {0}));
  }
  ASSERT_EQ(f.wait_for(10s), std::future_status::ready);
  EXPECT_OK(f.get());
}

TEST_F(ControllerTest, StaleMetaAfterClearAndIndexReuseNeverReadsAnotherPartition) {
  Batch a = Numbered(4, 0);
  ASSERT_OK_AND_ASSIGN(BatchMeta meta_a, client_->put(a, "A"));
  ASSERT_OK_AND_ASSIGN(BatchMeta read_a, client_->get_meta({"uid", "text"}, 4, "A", "t"));
  ASSERT_OK(client_->clear_partition("A"));
  Batch b = Numbered(4, 500);
  ASSERT_OK_AND_ASSIGN(BatchMeta meta_b, client_->put(b, "B"));
  auto ia = meta_a.global_indexes(), ib = meta_b.global_indexes();
  std::sort(ia.begin(), ia.end());
  std::sort(ib.begin(), ib.end());
  ASSERT_EQ(ia, ib) << "the test needs B to reuse A's indexes";
  auto stale = client_->get_data(read_a);
  ASSERT_FALSE(stale.ok()) << "a stale meta of partition A read data after A was cleared";
  EXPECT_TRUE(stale.status().IsNotFound()) << stale.status().ToString();
  // Even a forged meta naming partition B with A's generation cannot read B.
  BatchMeta forged = read_a;
  for (auto& s : forged.mutable_samples()) s.partition_id = "B";
  auto f = client_->get_data(forged);
  EXPECT_FALSE(f.ok()) << "a meta with an old generation read B's bytes";
  // Writing more fields through the stale meta is refused and leaves B intact.
  Batch extra(4);
  ASSERT_OK(extra.AddStrings("text", {"x", "x", "x", "x"}));
  EXPECT_FALSE(client_->put(extra, read_a).ok());
  ASSERT_OK_AND_ASSIGN(BatchMeta read_b, client_->get_meta({"uid", "text"}, 4, "B", "t"));
  ASSERT_OK_AND_ASSIGN(Batch got_b, client_->get_data(read_b));
  EXPECT_TRUE(got_b.Equals(*b.SelectFields({"uid", "text"})));
}

TEST_F(ControllerTest, ClearFreesStorageBeforeReleasingIndexes) {
  ASSERT_OK(client_->put(Numbered(10, 0), "p"));
  ASSERT_OK(client_->put(Numbered(5, 0), "q"));
  UnitStats before = TotalStats();
  EXPECT_EQ(before.keys, 15u * 3);
  ASSERT_OK(client_->clear_partition("p"));
  UnitStats after = TotalStats();
  EXPECT_EQ(after.keys, 5u * 3) << "clear_partition returned but storage still holds p's keys";
  ASSERT_OK(client_->clear_partition("q"));
  after = TotalStats();
  EXPECT_EQ(after.keys, 0u);
  EXPECT_EQ(after.bytes, 0u);
  ASSERT_OK_AND_ASSIGN(auto parts, client_->list_partitions());
  EXPECT_TRUE(parts.empty());
}

TEST_F(ControllerTest, ClearSamplesFreesOnlyThoseSamples) {
  ASSERT_OK_AND_ASSIGN(BatchMeta m, client_->put(Numbered(6, 0), "p"));
  ASSERT_OK(client_->clear_samples(*m.SelectSamples({0, 2, 4})));
  EXPECT_EQ(TotalStats().keys, 3u * 3);
  ASSERT_OK_AND_ASSIGN(BatchMeta rest, client_->get_meta({"uid"}, 3, "p", "t"));
  ASSERT_OK_AND_ASSIGN(Batch b, client_->get_data(rest));
  std::vector<int64_t> uids;
  for (const auto& v : **b.Get("uid")) uids.push_back(*v.as<int64_t>());
  EXPECT_EQ(uids, (std::vector<int64_t>{1, 3, 5}));
  EXPECT_STATUS(client_->get_data(*m.SelectSamples({0})), kNotFound, "not found");
  ASSERT_OK(client_->clear_samples("p", {1, 3, 5, 1000}));
  EXPECT_EQ(TotalStats().keys, 0u);
}

TEST_F(ControllerTest, ClearIsIdempotent) {
  ASSERT_OK_AND_ASSIGN(BatchMeta m, client_->put(Numbered(3, 0), "p"));
  ASSERT_OK(client_->clear_partition("p"));
  ASSERT_OK(client_->clear_partition("p"));
  ASSERT_OK(client_->clear_partition("never-existed"));
  ASSERT_OK(client_->clear_samples(m));
  ASSERT_OK(client_->clear_samples("never-existed", {1, 2}));
  EXPECT_EQ(TotalStats().keys, 0u);
  // Concurrent clears of the same partition all succeed and free it once.
  ASSERT_OK(client_->put(Numbered(20, 0), "p"));
  std::vector<std::future<Status>> fs;
  for (int i = 0; i < 4; ++i) fs.push_back(client_->async_clear_partition("p"));
  for (auto& f : fs) EXPECT_OK(f.get());
  EXPECT_EQ(TotalStats().keys, 0u);
  ASSERT_OK_AND_ASSIGN(BatchMeta again, client_->put(Numbered(20, 0), "p"));
  const std::vector<int64_t> again_idx = again.global_indexes();
  std::set<int64_t> idx(again_idx.begin(), again_idx.end());
  EXPECT_EQ(idx.size(), 20u) << "an index was released twice and handed out twice";
}

TEST_F(ControllerTest, StatusCallsAndCustomMeta) {
  ASSERT_OK_AND_ASSIGN(BatchMeta m, client_->put(Numbered(4, 0), "p"));
  ASSERT_OK(client_->put(Numbered(1, 0), "q"));
  ASSERT_OK_AND_ASSIGN(auto parts, client_->list_partitions());
  std::sort(parts.begin(), parts.end());
  EXPECT_EQ(parts, (std::vector<std::string>{"p", "q"}));
  ASSERT_OK_AND_ASSIGN(auto ps, client_->get_production_status("p"));
  EXPECT_EQ(ps.num_samples, 4u);
  EXPECT_EQ(ps.produced.at("uid"), 4u);
  EXPECT_EQ(ps.produced.at("text"), 4u);
  EXPECT_STATUS(client_->get_production_status("zzz"), kNotFound, "zzz");

  ASSERT_OK(client_->get_meta({"uid"}, 3, "p", "train"));
  ASSERT_OK_AND_ASSIGN(auto cs, client_->get_consumption_status("p", "train"));
  EXPECT_EQ(cs.num_samples, 4u);
  EXPECT_EQ(cs.consumed, 3u);
  ASSERT_OK_AND_ASSIGN(auto cs2, client_->get_consumption_status("p", "other"));
  EXPECT_EQ(cs2.consumed, 0u);
  ASSERT_OK(client_->reset_consumption("p", "train"));
  ASSERT_OK_AND_ASSIGN(auto cs3, client_->get_consumption_status("p", "train"));
  EXPECT_EQ(cs3.consumed, 0u);
  ASSERT_OK_AND_ASSIGN(BatchMeta again, client_->get_meta({"uid"}, 4, "p", "train"));
  EXPECT_EQ(again.size(), 4u);
  EXPECT_STATUS(client_->reset_consumption("zzz", "train"), kNotFound, "zzz");

  BatchMeta custom = m;
  for (size_t i = 0; i < custom.size(); ++i) {
    custom.mutable_samples()[i].custom = {{"seq_len", static_cast<int64_t>(10 * i)}, {"src", std::string("web")}};
  }
  ASSERT_OK(client_->set_custom_meta(custom));
  ASSERT_OK_AND_ASSIGN(BatchMeta got, client_->get_custom_meta("p", {3, 1}));
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(std::get<int64_t>(got.samples()[0].custom.at("seq_len")), 30);
  EXPECT_EQ(std::get<std::string>(got.samples()[1].custom.at("src")), "web");
  EXPECT_STATUS(client_->get_custom_meta("p", {99}), kNotFound, "99");
}

TEST_F(ControllerTest, SamplersOverTheWire) {
  // GRPO: 2 prompts x 3 responses; rank-aware: both ranks of a group agree.
  ASSERT_OK(client_->put(Numbered(6, 0), "g"));
  SamplingConfig grpo = {{"sampler", std::string("grpo_group_n")}, {"n_samples_per_prompt", int64_t{3}}};
  ASSERT_OK_AND_ASSIGN(BatchMeta g, client_->get_meta({"uid"}, 6, "g", "t", grpo));
  EXPECT_EQ(g.size(), 6u);
  ASSERT_OK(client_->put(Numbered(8, 0), "r"));
  SamplingConfig r0 = {{"sampler", std::string("rank_aware")}, {"dp_rank", int64_t{0}}, {"rank", int64_t{0}},
                       {"ranks_per_group", int64_t{2}}};
  SamplingConfig r1 = r0;
  r1["rank"] = int64_t{1};
  auto other = NewClient("rank1");
  ASSERT_NE(other, nullptr);
  ASSERT_OK_AND_ASSIGN(BatchMeta a, client_->get_meta({"uid"}, 4, "r", "t", r0));
  ASSERT_OK_AND_ASSIGN(BatchMeta b, other->get_meta({"uid"}, 4, "r", "t", r1));
  EXPECT_EQ(a.global_indexes(), b.global_indexes());
}

class SmallUnitsTest : public ControllerTest {
 protected:
  void SetUp() override { Start(4096); }
};

TEST_F(SmallUnitsTest, PutBeyondCapacityFailsWithOutOfSpaceAndLeavesNothingBehind) {
  // 8 samples x 2000 bytes cannot fit in 2 x 4096 bytes.
  Batch big(8);
  std::vector<uint8_t> bytes(8 * 2000, 0x5a);
  ASSERT_OK(big.AddTensor("blob", DType::kUInt8, {8, 2000}, Buffer::FromVector(bytes)));
  auto r = client_->put(big, "p");
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(r.status().IsOutOfSpace()) << r.status().ToString();
  EXPECT_NE(r.status().message().find("storage unit tcp://"), std::string::npos) << r.status().ToString();
  EXPECT_NE(r.status().message().find("full"), std::string::npos) << r.status().ToString();
  // Nothing half-written stays visible or occupies space.
  ASSERT_OK_AND_ASSIGN(BatchMeta visible, client_->get_meta({"blob"}, 0, "p", "", {}, FetchMode::kForceFetch));
  EXPECT_TRUE(visible.empty());
  ASSERT_OK_AND_ASSIGN(BatchMeta polled, client_->get_meta({"blob"}, 8, "p", "t", {}, FetchMode::kPoll));
  EXPECT_TRUE(polled.empty());
  UnitStats st = TotalStats();
  EXPECT_EQ(st.keys, 0u);
  EXPECT_EQ(st.bytes, 0u);
  EXPECT_EQ(st.capacity, 2u * 4096);
  // The space is usable afterwards.
  Batch small(2);
  ASSERT_OK(small.AddTensor("blob", DType::kUInt8, {2, 1000}, Buffer::FromVector(std::vector<uint8_t>(2000, 1))));
  ASSERT_OK(client_->put(small, "p"));
  ASSERT_OK_AND_ASSIGN(BatchMeta m, client_->get_meta({"blob"}, 2, "p", "t"));
  ASSERT_OK_AND_ASSIGN(Batch out, client_->get_data(m));
  EXPECT_TRUE(out.Equals(small));
}

TEST(StorageUnitTest, StandaloneUnitRegistersWithController) {
  auto ctl = TransferQueueController::Start(ControllerOptions{});
  ASSERT_OK(ctl);
  StorageUnitOptions uo;
  uo.controller_address = (*ctl)->address();
  uo.capacity_bytes = 1 << 20;
  ASSERT_OK_AND_ASSIGN(auto unit, SimpleStorageUnit::Start(uo));
  auto units = (*ctl)->storage_units();
  ASSERT_EQ(units.size(), 1u);
  EXPECT_EQ(units[0], unit->address());
  TransferQueueClient c("c", (*ctl)->address());
  ASSERT_OK(c.initialize_storage_manager("AsyncSimpleStorageManager"));
  ASSERT_OK(c.put(Numbered(2, 0), "p"));
  ASSERT_OK_AND_ASSIGN(auto st, StatsOf(unit->address()));
  EXPECT_EQ(st.keys, 6u);
}

// A sample limit counts samples (all fields of one index), as upstream's
// storage_unit_size, and the unit counts its requests by upstream's op_type.
TEST(StorageUnitTest, SampleCapacityCountsSamplesAndRequestsAreCounted) {
  auto ctl = TransferQueueController::Start(ControllerOptions{});
  ASSERT_OK(ctl);
  StorageUnitOptions uo;
  uo.controller_address = (*ctl)->address();
  uo.capacity_samples = 5;
  ASSERT_OK_AND_ASSIGN(auto unit, SimpleStorageUnit::Start(uo));
  TransferQueueClient c("c", (*ctl)->address());
  ASSERT_OK(c.initialize_storage_manager("SimpleStorageManager"));
  ASSERT_OK(c.put(Numbered(3, 0), "p"));
  StorageUnitStats st = unit->stats();
  EXPECT_EQ(st.samples, 3u);
  EXPECT_EQ(st.keys, 9u);
  EXPECT_EQ(st.capacity_samples, 5u);
  // Another field of the same samples adds no sample.
  ASSERT_OK_AND_ASSIGN(BatchMeta roll, c.get_meta({"uid"}, 3, "p", "rollout"));
  Batch resp(3);
  ASSERT_OK(resp.AddStrings("response", {"r0", "r1", "r2"}));
  ASSERT_OK(c.put(resp, roll));
  EXPECT_EQ(unit->stats().samples, 3u);
  EXPECT_EQ(unit->stats().keys, 12u);
  // 3 more samples do not fit in 5: refused whole, naming the unit and its limit.
  auto r = c.put(Numbered(3, 10), "p");
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(r.status().IsOutOfSpace()) << r.status().ToString();
  EXPECT_NE(r.status().message().find("holds 3 of its 5 samples and the put adds 3"), std::string::npos)
      << r.status().ToString();
  EXPECT_NE(r.status().message().find(unit->address()), std::string::npos) << r.status().ToString();
  EXPECT_EQ(unit->stats().samples, 3u);
  EXPECT_EQ(unit->stats().keys, 12u);
  // Two fit.
  ASSERT_OK(c.put(Numbered(2, 20), "q"));
  EXPECT_EQ(unit->stats().samples, 5u);
  // Clearing one field of a sample keeps the sample; clearing it whole frees it.
  ASSERT_OK_AND_ASSIGN(BatchMeta all, c.get_meta({"uid", "ragged", "text", "response"}, 3, "p", "train"));
  ASSERT_OK_AND_ASSIGN(Batch got, c.get_data(all));
  EXPECT_EQ((**got.Get("response"))[1].str(), "r1");
  ASSERT_OK(c.clear_partition("p"));
  st = unit->stats();
  EXPECT_EQ(st.samples, 2u);
  EXPECT_EQ(st.keys, 6u);
  ASSERT_OK(c.put(Numbered(3, 30), "p"));
  EXPECT_EQ(unit->stats().samples, 5u);

  st = unit->stats();
  ASSERT_EQ(st.ops.count("PUT_DATA"), 1u);
  ASSERT_EQ(st.ops.count("GET_DATA"), 1u);
  ASSERT_EQ(st.ops.count("CLEAR_DATA"), 1u);
  const RequestOpStats& put = st.ops["PUT_DATA"];
  EXPECT_EQ(put.requests, 5u);
  EXPECT_EQ(put.errors, 1u);
  EXPECT_EQ(put.samples, 3u + 3 + 2 + 3);  // the refused put's samples are not counted
  EXPECT_EQ(put.latency.size(), RequestOpStats::LatencyBounds().size() + 1);
  EXPECT_GT(put.Quantile(0.99), 0.0);
  EXPECT_LE(put.Quantile(0.5), put.Quantile(0.99));
  EXPECT_EQ(st.ops["GET_DATA"].requests, 1u);
  EXPECT_EQ(st.ops["GET_DATA"].samples, 3u);
  // The refused put's undo and clear_partition both clear at the unit.
  EXPECT_GE(st.ops["CLEAR_DATA"].requests, 2u);
  EXPECT_GE(st.ops["CLEAR_DATA"].samples, 6u);
}

TEST(RequestOpStatsTest, QuantileInterpolatesInsideItsBucketAsPrometheus) {
  RequestCounters counters;
  EXPECT_TRUE(counters.Snapshot().empty());
  for (int i = 0; i < 3; ++i) counters.Record("GET_DATA", 0.0005, true, 1);  // bucket le=0.001
  counters.Record("GET_DATA", 0.003, false, 7);                              // bucket le=0.005
  const RequestOpStats o = counters.Snapshot().at("GET_DATA");
  EXPECT_EQ(o.requests, 4u);
  EXPECT_EQ(o.errors, 1u);
  EXPECT_EQ(o.samples, 3u);  // an error's samples are not counted
  EXPECT_DOUBLE_EQ(o.Average(), (3 * 0.0005 + 0.003) / 4);
  EXPECT_DOUBLE_EQ(o.Quantile(0.5), 0.001 * (2.0 / 3.0));  // 2 of the first bucket's 3, from 0
  EXPECT_DOUBLE_EQ(o.Quantile(1.0), 0.005);
  RequestOpStats slow;
  slow.latency.assign(RequestOpStats::LatencyBounds().size() + 1, 0);
  slow.latency.back() = 2;  // above the last bound: that bound
  EXPECT_DOUBLE_EQ(slow.Quantile(0.99), 5.0);
  EXPECT_DOUBLE_EQ(RequestOpStats{}.Quantile(0.5), 0.0);
}

TEST(StorageUnitTest, OptionsValidate) {
  StorageUnitOptions o;
  o.capacity_bytes = 0;
  EXPECT_STATUS(SimpleStorageUnit::Start(o), kInvalid, "capacity");
  ControllerOptions c;
  c.embedded_storage_units = -1;
  EXPECT_STATUS(TransferQueueController::Start(c), kInvalid, "embedded_storage_units");
}

TEST(StorageUnitTest, NoUnitsIsAClearError) {
  auto ctl = TransferQueueController::Start(ControllerOptions{});
  ASSERT_OK(ctl);
  TransferQueueClient c("c", (*ctl)->address());
  EXPECT_STATUS(c.initialize_storage_manager("SimpleStorageManager"), kInvalid, "no storage units");
}

TEST(StorageUnitTest, MalformedUnitRequests) {
  StorageUnitOptions o;
  ASSERT_OK_AND_ASSIGN(auto unit, SimpleStorageUnit::Start(o));
  ASSERT_OK_AND_ASSIGN(auto c, RpcClient::Connect(unit->address()));
  Message put(MsgType::kUnitPut, 0);
  put.set_body(internal::EncodeKeys({"a", "b"}));
  put.payloads().push_back(Buffer::CopyString("only one"));
  EXPECT_STATUS(c->CallSync(std::move(put), 10s), kInvalid, "2 keys but 1 payload frames");
  EXPECT_STATUS(c->CallSync(Message(MsgType::kUnitGet, 0), 10s), kInvalid, "UnitGet");
  EXPECT_STATUS(c->CallSync(Message(MsgType::kCtlAllocate, 0), 10s), kInvalid, "unknown message type");
  ASSERT_OK_AND_ASSIGN(auto st, StatsOf(unit->address()));
  EXPECT_EQ(st.keys, 0u);
}

}  // namespace
}  // namespace tq
