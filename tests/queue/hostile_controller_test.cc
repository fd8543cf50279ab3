// Hostile input against the controller and storage units (issue 15,
// findings 5, 6 and 8), over real sockets: bogus and dead storage units,
// oversized allocations, absurd get_meta timeouts, ipc socket files left
// behind.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <deque>
#include <future>
#include <limits>
#include <string>
#include <thread>
#include <vector>

#include "common/test_util.h"
#include "common/wire/rpc.h"
#include "queue/protocol.h"
#include "queue/simple_manager.h"
#include "tq/client.h"
#include "tq/controller.h"
#include "tq/storage_unit.h"

namespace tq {
namespace {

using namespace std::chrono_literals;
using tqds::wire::Clock;
using tqds::wire::Message;
using tqds::wire::MsgType;
using tqds::wire::Responder;
using tqds::wire::RpcClient;
using tqds::wire::RpcServer;

Batch Rows(int64_t first, size_t n) {
  Batch b(n);
  Column col;
  for (size_t i = 0; i < n; ++i) {
    int64_t v = first + static_cast<int64_t>(i);
    col.push_back(Value::Tensor(DType::kInt64, {}, Buffer::Copy(&v, 8)).MoveValue());
  }
  EXPECT_OK(b.AddField("x", col));
  return b;
}

Message Register(const std::string& endpoint) {
  Message m(MsgType::kCtlRegisterStorage, 0);
  m.set_body(tqds::wire::PackBody([&](auto& pk) {
    pk.pack_map(1);
    pk.pack("endpoint");
    pk.pack(endpoint);
  }));
  return m;
}

// Polls `cond` (a state we can observe) until it holds or `limit` passes.
template <typename F>
bool WaitUntil(F cond, std::chrono::milliseconds limit = 20s) {
  auto deadline = Clock::now() + limit;
  while (!cond()) {
    if (Clock::now() > deadline) return false;
    std::this_thread::sleep_for(5ms);
  }
  return true;
}

bool Contains(const std::vector<std::string>& v, const std::string& s) {
  return std::find(v.begin(), v.end(), s) != v.end();
}

// A tcp port where nothing listens (bound once, then closed).
std::string DeadEndpoint() {
  auto s = RpcServer::Bind("tcp://127.0.0.1:0", [](Message&&, Responder) {});
  EXPECT_TRUE(s.ok());
  return (*s)->endpoint();  // the server is destroyed on return
}

// A storage unit that answers UnitStats at once and Ping only after
// `ping_delay`: slow, but alive.
class SlowUnit {
 public:
  explicit SlowUnit(std::chrono::milliseconds ping_delay) : delay_(ping_delay) {
    auto s = RpcServer::Bind(
        "tcp://127.0.0.1:0", [this](Message&& m, Responder r) { Handle(std::move(m), std::move(r)); },
        [this](Clock::time_point now) { return Tick(now); });
    EXPECT_TRUE(s.ok()) << s.status().ToString();
    server_ = s.MoveValue();
    server_->Start();
  }
  ~SlowUnit() { server_->Stop(); }
  const std::string& address() const { return server_->endpoint(); }
  int pings_answered() const { return answered_.load(); }

 private:
  void Handle(Message&& m, Responder r) {
    if (m.type() == MsgType::kCtlPing) {
      parked_.push_back({std::move(r), Message::ReplyTo(m), Clock::now() + delay_});
      return;
    }
    Message rep = Message::ReplyTo(m);
    rep.set_body(tqds::wire::PackBody([](auto& pk) {
      pk.pack_map(1);
      pk.pack("keys");
      pk.pack_uint64(0);
    }));
    r.Reply(std::move(rep));
  }
  std::chrono::milliseconds Tick(Clock::time_point now) {
    while (!parked_.empty() && parked_.front().due <= now) {
      parked_.front().r.Reply(std::move(parked_.front().reply));
      parked_.pop_front();
      ++answered_;
    }
    return 5ms;
  }
  struct Parked {
    Responder r;
    Message reply;
    Clock::time_point due;
  };
  const std::chrono::milliseconds delay_;
  std::deque<Parked> parked_;  // server thread only
  std::atomic<int> answered_{0};
  std::unique_ptr<RpcServer> server_;
};

ControllerOptions FastLiveness(int embedded) {
  ControllerOptions o;
  o.embedded_storage_units = embedded;
  o.storage_unit_capacity_bytes = 64 << 20;
  o.storage_unit_ping_interval_ms = 20;
  o.storage_unit_liveness_timeout_ms = 400;
  return o;
}

// Finding 5: a registration nobody answers used to be listed for good, and
// every client's initialize_storage_manager then failed.
TEST(HostileUnits, RegisteringAnEndpointWhereNoUnitAnswersIsRefused) {
  ControllerOptions o = FastLiveness(1);
  o.storage_unit_verify_timeout_ms = 300;
  ASSERT_OK_AND_ASSIGN(auto ctl, TransferQueueController::Start(o));
  ASSERT_OK_AND_ASSIGN(auto raw, RpcClient::Connect(ctl->address()));
  const std::string bogus = DeadEndpoint();
  EXPECT_STATUS(raw->CallSync(Register(bogus), 10s), kUnavailable, bogus);
  EXPECT_STATUS(raw->CallSync(Register("not-an-endpoint"), 10s), kInvalid, "not tcp://");
  EXPECT_STATUS(raw->CallSync(Register(std::string(600, 'x')), 10s), kInvalid, "at most 512");
  // The controller itself answers no UnitStats: not a storage unit.
  EXPECT_STATUS(raw->CallSync(Register(ctl->address()), 10s), kUnavailable, ctl->address());
  EXPECT_EQ(ctl->storage_units().size(), 1u);

  TransferQueueClient c("c", ctl->address());
  ASSERT_OK(c.initialize_storage_manager("SimpleStorageManager"));
  ASSERT_OK_AND_ASSIGN(BatchMeta meta, c.put(Rows(0, 4), "p"));
  ASSERT_OK_AND_ASSIGN(Batch back, c.get_data(meta));
  EXPECT_TRUE(back.Equals(Rows(0, 4)));
}

TEST(HostileUnits, RegistrationsAreCappedAndTheirWaitDelaysNoOtherRequest) {
  ControllerOptions o = FastLiveness(1);
  o.max_storage_units = 2;
  o.storage_unit_verify_timeout_ms = 2000;
  ASSERT_OK_AND_ASSIGN(auto ctl, TransferQueueController::Start(o));
  ASSERT_OK_AND_ASSIGN(auto raw, RpcClient::Connect(ctl->address()));
  // A silent endpoint that accepts connections but never answers.
  ASSERT_OK_AND_ASSIGN(auto silent, RpcServer::Bind("tcp://127.0.0.1:0", [](Message&&, Responder) {}));
  silent->Start();
  auto waiting = raw->Call(Register(silent->endpoint()), 10s);
  // While it is being verified, the controller answers others at once.
  auto t0 = Clock::now();
  ASSERT_OK(raw->CallSync(Message(MsgType::kCtlPing, 0), 10s));
  EXPECT_LT(Clock::now() - t0, 500ms);
  EXPECT_STATUS(raw->CallSync(Register(DeadEndpoint()), 10s), kOutOfSpace, "2 storage units");
  EXPECT_STATUS(waiting.get(), kUnavailable, silent->endpoint());
  silent->Stop();
}

// A unit that answers pings slowly (slower than the ping interval, within
// the liveness timeout) holds data: it must stay listed.
TEST(HostileUnits, ASlowUnitThatAnswersIsNeverDropped) {
  ASSERT_OK_AND_ASSIGN(auto ctl, TransferQueueController::Start(FastLiveness(0)));
  SlowUnit slow(150ms);
  ASSERT_OK_AND_ASSIGN(auto raw, RpcClient::Connect(ctl->address()));
  ASSERT_OK(raw->CallSync(Register(slow.address()), 10s));
  ASSERT_TRUE(WaitUntil([&] { return slow.pings_answered() >= 5; }));
  EXPECT_TRUE(Contains(ctl->storage_units(), slow.address()));
}

// A registered unit that dies: clients that start before the controller
// drops it skip it (naming it in a warning) instead of failing, and routing moves
// only the dead unit's blocks, so every sample on a live unit stays
// readable by new clients.
TEST(HostileUnits, ADeadUnitIsSkippedByNewClientsAndNoLiveSampleMoves) {
  ControllerOptions o = FastLiveness(2);
  o.storage_unit_liveness_timeout_ms = 60000;  // dropped later in this test
  ASSERT_OK_AND_ASSIGN(auto ctl, TransferQueueController::Start(o));
  StorageUnitOptions uo;
  uo.controller_address = ctl->address();
  uo.capacity_bytes = 64 << 20;
  ASSERT_OK_AND_ASSIGN(auto unit, SimpleStorageUnit::Start(uo));
  const std::string dead = unit->address();
  const auto all_units = ctl->storage_units();
  ASSERT_EQ(all_units.size(), 3u);

  TransferQueueClient writer("writer", ctl->address());
  ASSERT_OK(writer.initialize_storage_manager("SimpleStorageManager"));
  constexpr size_t kBlocks = 24;
  ASSERT_OK_AND_ASSIGN(BatchMeta meta, writer.put(Rows(0, kBlocks * 64), "p"));

  unit->Stop();
  unit.reset();
  // Not dropped yet (liveness 60 s): a new client skips it and still works.
  TransferQueueClient reader("reader", ctl->address());
  ASSERT_OK(reader.initialize_storage_manager("SimpleStorageManager"));

  std::vector<uint64_t> hashes;
  for (const auto& u : all_units) hashes.push_back(internal::HashName(u));
  size_t on_live = 0, on_dead = 0;
  for (size_t b = 0; b < kBlocks; ++b) {
    std::vector<SampleMeta> block(meta.samples().begin() + b * 64, meta.samples().begin() + (b + 1) * 64);
    const uint64_t route_block = static_cast<uint64_t>(block[0].global_index) / internal::kSimpleRouteBlock;
    size_t owner = 0;
    for (size_t u = 1; u < all_units.size(); ++u) {
      if (internal::RouteScore(hashes[u], route_block) > internal::RouteScore(hashes[owner], route_block)) owner = u;
    }
    auto got = reader.get_data(BatchMeta(meta.field_names(), block));
    if (all_units[owner] == dead) {
      ++on_dead;
      EXPECT_FALSE(got.ok());  // lost with its unit, and said so
    } else {
      ++on_live;
      ASSERT_OK(got);
      EXPECT_TRUE(got->Equals(Rows(block[0].global_index, 64))) << "block " << b;
    }
  }
  EXPECT_GT(on_live, 0u);
  EXPECT_GT(on_dead, 0u);
}

TEST(HostileUnits, ADeadUnitIsDroppedFromTheController) {
  ASSERT_OK_AND_ASSIGN(auto ctl, TransferQueueController::Start(FastLiveness(1)));
  StorageUnitOptions uo;
  uo.controller_address = ctl->address();
  uo.capacity_bytes = 64 << 20;
  ASSERT_OK_AND_ASSIGN(auto unit, SimpleStorageUnit::Start(uo));
  const std::string dead = unit->address();
  ASSERT_TRUE(Contains(ctl->storage_units(), dead));
  unit->Stop();
  unit.reset();
  ASSERT_TRUE(WaitUntil([&] { return !Contains(ctl->storage_units(), dead); }));
  EXPECT_EQ(ctl->storage_units().size(), 1u);  // the embedded one stays
  TransferQueueClient c("c", ctl->address());
  ASSERT_OK(c.initialize_storage_manager("SimpleStorageManager"));
  ASSERT_OK(c.put(Rows(0, 3), "p"));
}

// Finding 6: one Allocate(count=2^24) took 13 s and 2.2 GiB.
TEST(HostileAllocate, OversizedAllocationsAreRefusedBeforeAnyWork) {
  // A partition limit of four slices keeps the slicing below short (the
  // default 2^22 takes 64 slices: seconds, and minutes under ThreadSanitizer).
  ControllerOptions opts;
  opts.max_samples_per_partition = int64_t{1} << 18;
  ASSERT_OK_AND_ASSIGN(auto ctl, TransferQueueController::Start(opts));
  TransferQueueClient c("c", ctl->address());
  ASSERT_OK_AND_ASSIGN(auto raw, RpcClient::Connect(ctl->address()));
  auto allocate = [&](int64_t count) {
    Message m(MsgType::kCtlAllocate, 0);
    m.set_body(tqds::wire::PackBody([&](auto& pk) {
      pk.pack_map(2);
      pk.pack("partition_id");
      pk.pack("p");
      pk.pack("count");
      pk.pack_int64(count);
    }));
    return raw->CallSync(std::move(m), 10s);
  };
  auto t0 = Clock::now();
  // The 30-byte request of the issue.
  EXPECT_STATUS(allocate(int64_t{1} << 24), kInvalid, "max_allocate_per_request");
  EXPECT_STATUS(allocate(std::numeric_limits<int64_t>::max()), kInvalid, "at most 65536");
  EXPECT_STATUS(allocate(-1), kInvalid, ">= 1");
  EXPECT_STATUS(c.allocate("p", -1), kInvalid, ">= 1");
  EXPECT_LT(Clock::now() - t0, 1s);
  ASSERT_OK_AND_ASSIGN(auto parts, c.list_partitions());
  EXPECT_TRUE(parts.empty());  // a refused allocation creates nothing
  // The client slices what the partition limit allows, and undoes the
  // slices it got when a later one is refused.
  EXPECT_STATUS(c.allocate("p", std::numeric_limits<int64_t>::max()), kOutOfSpace, "max_samples_per_partition");
  ASSERT_OK_AND_ASSIGN(auto st, c.get_production_status("p"));
  EXPECT_EQ(st.num_samples, 0u);
}

TEST(HostileAllocate, PartitionAndTotalLimitsNameThemselvesAndClearsMakeRoom) {
  ControllerOptions o;
  o.embedded_storage_units = 1;
  o.storage_unit_capacity_bytes = 64 << 20;
  o.max_allocate_per_request = 1000;
  o.max_samples_per_partition = 2500;
  o.max_samples_total = 4000;
  ASSERT_OK_AND_ASSIGN(auto ctl, TransferQueueController::Start(o));
  TransferQueueClient c("c", ctl->address());
  ASSERT_OK(c.initialize_storage_manager("SimpleStorageManager"));
  EXPECT_STATUS(c.allocate("p", 1001), kInvalid, "partition 'p'");
  ASSERT_OK(c.allocate("p", 1000));
  ASSERT_OK(c.allocate("p", 1000));
  EXPECT_STATUS(c.allocate("p", 1000), kOutOfSpace, "max_samples_per_partition");
  EXPECT_STATUS(c.allocate("p", 501), kOutOfSpace, "partition 'p' holds 2000 samples");
  ASSERT_OK(c.allocate("p", 500));
  ASSERT_OK(c.allocate("q", 1000));
  EXPECT_STATUS(c.allocate("r", 501), kOutOfSpace, "max_samples_total");
  // kv_retrieve creates samples too: the same limits.
  std::vector<std::string> keys;
  for (int i = 0; i < 501; ++i) keys.push_back("k" + std::to_string(i));
  EXPECT_STATUS(c.kv_retrieve("r", keys, true), kOutOfSpace, "max_samples_total");
  ASSERT_OK(c.clear_partition("p"));
  ASSERT_OK(c.allocate("r", 1000));  // the cleared samples made room
}

TEST(HostileAllocate, BigAllocationsAreSlicedSoOtherRequestsGetThrough) {
  ASSERT_OK_AND_ASSIGN(auto ctl, TransferQueueController::Start(ControllerOptions{}));
  TransferQueueClient c("c", ctl->address());
  ASSERT_OK_AND_ASSIGN(auto raw, RpcClient::Connect(ctl->address()));
  auto t0 = Clock::now();
  ASSERT_OK(c.allocate("one", kDefaultMaxAllocatePerRequest));
  auto one = Clock::now() - t0;
  std::printf("one allocate of %lld samples: %lld ms\n", static_cast<long long>(kDefaultMaxAllocatePerRequest),
              static_cast<long long>(std::chrono::duration_cast<std::chrono::milliseconds>(one).count()));

  auto big = std::async(std::launch::async, [&] { return c.allocate("big", int64_t{1} << 20); });
  // Pings while the big allocation runs: each waits for one slice at most.
  std::chrono::nanoseconds worst{0};
  int pings = 0;
  while (big.wait_for(0ms) != std::future_status::ready) {
    auto p0 = Clock::now();
    ASSERT_OK(raw->CallSync(Message(MsgType::kCtlPing, 0), 30s));
    worst = std::max<std::chrono::nanoseconds>(worst, Clock::now() - p0);
    ++pings;
  }
  ASSERT_OK_AND_ASSIGN(BatchMeta meta, big.get());
  EXPECT_EQ(meta.size(), size_t{1} << 20);
  std::printf("%d pings during allocate(2^20), slowest %lld ms\n", pings,
              static_cast<long long>(std::chrono::duration_cast<std::chrono::milliseconds>(worst).count()));
  EXPECT_GT(pings, 1);
  EXPECT_LT(worst, 5 * one + 200ms);  // a slice or so, not the whole 2^20
}

// Finding 8: get_meta(timeout=inf) timed out at once with "-9223372036854775808 ms".
TEST(HostileTimeouts, SecondsConvertWithoutOverflow) {
  EXPECT_STATUS(TimeoutFromSeconds(std::nan("")), kInvalid, "nan");
  EXPECT_STATUS(TimeoutFromSeconds(-1.0, "get_meta timeout"), kInvalid, "get_meta timeout must be >= 0");
  ASSERT_OK_AND_ASSIGN(auto inf, TimeoutFromSeconds(std::numeric_limits<double>::infinity()));
  EXPECT_EQ(inf, kMaxGetMetaTimeout);
  ASSERT_OK_AND_ASSIGN(auto huge, TimeoutFromSeconds(1e300));
  EXPECT_EQ(huge, kMaxGetMetaTimeout);
  ASSERT_OK_AND_ASSIGN(auto small, TimeoutFromSeconds(0.0015));
  EXPECT_EQ(small, 2ms);
  ASSERT_OK_AND_ASSIGN(auto zero, TimeoutFromSeconds(0.0));
  EXPECT_EQ(zero, 0ms);
}

TEST(HostileTimeouts, HugeTimeoutsWaitInsteadOfFailingAtOnce) {
  ControllerOptions o;
  o.embedded_storage_units = 1;
  o.storage_unit_capacity_bytes = 64 << 20;
  ASSERT_OK_AND_ASSIGN(auto ctl, TransferQueueController::Start(o));
  TransferQueueClient c("c", ctl->address());
  ASSERT_OK(c.initialize_storage_manager("SimpleStorageManager"));
  EXPECT_STATUS(c.get_meta({"x"}, 1, "p", "t", {}, FetchMode::kFetch, -5ms), kInvalid, "timeout must be >= 0");

  // Over the wire: timeout_ms = INT64_MAX parks the request (no reply yet).
  ASSERT_OK_AND_ASSIGN(auto raw, RpcClient::Connect(ctl->address()));
  internal::GetMetaRequest req;
  req.partition_id = "p";
  req.task_name = "raw";
  req.fields = {"x"};
  req.batch_size = 1;
  req.timeout_ms = std::numeric_limits<int64_t>::max();
  Message m(MsgType::kCtlGetMeta, 0);
  m.set_body(internal::EncodeGetMeta(req));
  auto parked = raw->Call(std::move(m), 30s);

  auto waiting = c.async_get_meta({"x"}, 2, "p", "t", {}, FetchMode::kFetch, std::chrono::milliseconds::max());
  EXPECT_EQ(waiting.wait_for(100ms), std::future_status::timeout);  // waits, not an instant Timeout
  EXPECT_EQ(parked.wait_for(0ms), std::future_status::timeout);
  ASSERT_OK(c.put(Rows(0, 2), "p"));
  ASSERT_OK_AND_ASSIGN(BatchMeta got, waiting.get());
  EXPECT_EQ(got.size(), 2u);
  ASSERT_OK_AND_ASSIGN(Message rep, parked.get());
  ASSERT_OK_AND_ASSIGN(BatchMeta raw_got, internal::MetaFromMessage(rep));
  EXPECT_EQ(raw_got.size(), 1u);
}

bool FileExists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

Result<std::string> IpcPathOf(const std::string& unit) {
  TQDS_ASSIGN_OR_RETURN(auto c, RpcClient::Connect(unit));
  TQDS_ASSIGN_OR_RETURN(Message rep, c->CallSync(Message(MsgType::kUnitStats, 0), 10s));
  TQDS_ASSIGN_OR_RETURN(auto rd, tqds::wire::MapReader::Of(rep.body(), "UnitStats"));
  TQDS_ASSIGN_OR_RETURN(std::string ipc, rd.Get<std::string>("ipc"));
  if (ipc.rfind("ipc://", 0) != 0) return tqds::Status::Invalid("not an ipc endpoint: ", ipc);
  return ipc.substr(6);
}

// Finding 8: units left /tmp/tq-unit-*.sock behind on a clean exit.
TEST(HostileSockets, StoppedUnitsRemoveTheirIpcSocketFiles) {
  ASSERT_OK_AND_ASSIGN(auto unit, SimpleStorageUnit::Start(StorageUnitOptions{}));
  ASSERT_OK_AND_ASSIGN(std::string path, IpcPathOf(unit->address()));
  EXPECT_TRUE(FileExists(path)) << path;
  unit->Stop();
  EXPECT_FALSE(FileExists(path)) << path;

  ControllerOptions o;
  o.embedded_storage_units = 2;
  o.storage_unit_capacity_bytes = 64 << 20;
  ASSERT_OK_AND_ASSIGN(auto ctl, TransferQueueController::Start(o));
  std::vector<std::string> paths;
  for (const auto& u : ctl->storage_units()) {
    ASSERT_OK_AND_ASSIGN(std::string p, IpcPathOf(u));
    EXPECT_TRUE(FileExists(p)) << p;
    paths.push_back(p);
  }
  ctl->Stop();
  for (const auto& p : paths) EXPECT_FALSE(FileExists(p)) << p;
}

}  // namespace
}  // namespace tq
