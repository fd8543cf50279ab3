// Socket-free unit tests: allocator, eviction policy, spill store, object
// store (in process, over heap memory), and the local frame codec.
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <filesystem>
#include <random>

using namespace std::string_literals;

#include "common/wire/message.h"
#include "datasystem/allocator.h"
#include "datasystem/eviction_policy.h"
#include "datasystem/local_frame.h"
#include "datasystem/object_store.h"
#include "datasystem/owner_table.h"
#include "datasystem/spill_store.h"
#include "test_util.h"

namespace ds {
namespace {

using tqds::wire::Message;
using tqds::wire::MsgType;

TEST(BestFitAllocator, AllocatesAlignedAndCoalesces) {
  BestFitAllocator a(1024, 64);
  auto x = a.Allocate(10), y = a.Allocate(64), z = a.Allocate(65);
  ASSERT_TRUE(x.ok() && y.ok() && z.ok());
  EXPECT_EQ(*x % 64, 0u);
  EXPECT_EQ(a.used(), 64u + 64 + 128);
  EXPECT_TRUE(a.Free(*y));
  EXPECT_FALSE(a.Free(*y));  // double free is refused
  EXPECT_TRUE(a.Free(*x));
  EXPECT_TRUE(a.Free(*z));
  EXPECT_EQ(a.used(), 0u);
  EXPECT_EQ(a.largest_free_block(), 1024u);  // everything merged back
  auto big = a.Allocate(1024);
  ASSERT_TRUE(big.ok());
  EXPECT_TRUE(a.Allocate(1).status().IsOutOfSpace());
}

TEST(BestFitAllocator, PicksTheSmallestFittingBlock) {
  BestFitAllocator a(64 * 10, 64);
  std::vector<uint64_t> blocks;
  for (int i = 0; i < 10; ++i) blocks.push_back(*a.Allocate(64));
  a.Free(blocks[1]);                 // hole of 64
  a.Free(blocks[4]);
  a.Free(blocks[5]);                 // hole of 128
  EXPECT_EQ(*a.Allocate(64), blocks[1]);
  EXPECT_EQ(*a.Allocate(128), blocks[4]);
}

TEST(BestFitAllocator, RandomisedNeverOverlaps) {
  BestFitAllocator a(1 << 20, 64);
  std::mt19937 rng(7);
  std::map<uint64_t, uint64_t> live;
  for (int i = 0; i < 20000; ++i) {
    if (live.empty() || rng() % 2) {
      uint64_t n = 1 + rng() % 5000;
      auto r = a.Allocate(n);
      if (!r.ok()) continue;
      auto next = live.lower_bound(*r);
      if (next != live.end()) {
        ASSERT_LE(*r + n, next->first);
      }
      if (next != live.begin()) {
        ASSERT_LE(std::prev(next)->first + std::prev(next)->second, *r);
      }
      live[*r] = n;
    } else {
      auto it = live.begin();
      std::advance(it, rng() % live.size());
      ASSERT_TRUE(a.Free(it->first));
      live.erase(it);
    }
  }
  for (auto& [off, n] : live) a.Free(off);
  EXPECT_EQ(a.used(), 0u);
  EXPECT_EQ(a.largest_free_block(), 1u << 20);
}

TEST(LruPolicy, ColdestEligibleFirst) {
  LruPolicy p;
  p.Add(1);
  p.Add(2);
  p.Add(3);
  p.Touch(1);  // order: 2 3 1
  EXPECT_EQ(*p.PickVictim([](ObjectId) { return true; }), 2u);
  EXPECT_EQ(*p.PickVictim([](ObjectId id) { return id != 2; }), 3u);
  p.Remove(3);
  p.Remove(42);  // unknown: ignored
  EXPECT_EQ(p.size(), 2u);
  EXPECT_FALSE(p.PickVictim([](ObjectId) { return false; }).has_value());
}

TEST(SpillStore, RoundTripAndNamesNeverComeFromKeys) {
  testing::TempDir dir;
  auto s = SpillStore::Open(dir.path() + "/spill", 1 << 20);
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  std::string key = "../../etc/passwd/\0weird"s;
  std::string value(5000, 'x');
  ASSERT_TRUE(s->Write(7, key, 1, reinterpret_cast<const uint8_t*>(value.data()), value.size()).ok());
  EXPECT_EQ(s->used(), 5000u);
  std::string back(5000, '\0');
  ASSERT_TRUE(s->Read(7, key, reinterpret_cast<uint8_t*>(back.data()), back.size()).ok());
  EXPECT_EQ(back, value);
  EXPECT_FALSE(s->Read(7, "other", reinterpret_cast<uint8_t*>(back.data()), back.size()).ok());
  for (const auto& e : std::filesystem::directory_iterator(dir.path() + "/spill")) {
    EXPECT_EQ(e.path().filename().string(), "obj_0000000000000007.spill");
  }
  EXPECT_FALSE(s->CanHold(1 << 20));
  s->Remove(7, 5000);
  EXPECT_EQ(s->used(), 0u);
}

// An ObjectStore over plain heap memory.
struct StoreFixture {
  explicit StoreFixture(uint64_t capacity, const std::string& spill_dir = "",
                        uint64_t spill_limit = 0)
      : memory(capacity) {
    auto spill = SpillStore::Open(spill_dir, spill_limit);
    StoreOptions o;
    o.name = "test";
    o.high_watermark = 0.9;
    store = std::make_unique<ObjectStore>(o, memory.data(),
                                          std::make_unique<BestFitAllocator>(capacity),
                                          std::make_unique<LruPolicy>(), std::move(*spill));
  }
  Status Put(Session& s, const std::string& key, const std::string& value, WriteOptions o = {}) {
    auto slots = store->Create(s, {key}, {value.size()}, o);
    if (!slots.ok()) return slots.status();
    if ((*slots)[0].code != StatusCode::kOk) return Status((*slots)[0].code, key);
    std::memcpy(memory.data() + (*slots)[0].offset, value.data(), value.size());
    auto codes = store->Seal(s, {(*slots)[0].offset});
    return codes[0] == StatusCode::kOk ? Status::OK() : Status(codes[0], key);
  }
  std::optional<std::string> Read(Session& s, const std::string& key) {
    auto r = store->Get(s, {key}, std::chrono::milliseconds(0));
    if (!r.ok() || (*r)[0].code != StatusCode::kOk) return std::nullopt;
    std::string v(reinterpret_cast<char*>(memory.data() + (*r)[0].offset), (*r)[0].size);
    store->Release(s, {(*r)[0].offset});
    return v;
  }
  std::vector<uint8_t> memory;
  std::unique_ptr<ObjectStore> store;
};

TEST(ObjectStore, CreateIsInvisibleUntilSealAndAbortFrees) {
  StoreFixture f(1 << 20);
  Session w, r;
  auto slots = f.store->Create(w, {"k"}, {100}, {});
  ASSERT_TRUE(slots.ok());
  EXPECT_FALSE(f.Read(r, "k"));
  EXPECT_EQ(f.store->Stats().pending_creates, 1u);
  f.store->Abort(w, {(*slots)[0].offset});
  EXPECT_EQ(f.store->Stats().used, 0u);
  ASSERT_TRUE(f.Put(w, "k", "hello").ok());
  EXPECT_EQ(*f.Read(r, "k"), "hello");
}

TEST(ObjectStore, SealAndAbortOnlyTouchThisSessionsPendingWrites) {
  StoreFixture f(1 << 20);
  Session a, b;
  auto slots = f.store->Create(a, {"k"}, {8}, {});
  ASSERT_TRUE(slots.ok());
  const uint64_t off = (*slots)[0].offset;
  // Another session, or an offset that was never created, cannot seal or abort it.
  EXPECT_EQ(f.store->Seal(b, {off})[0], StatusCode::kNotFound);
  EXPECT_EQ(f.store->Seal(a, {off + 4096})[0], StatusCode::kNotFound);
  f.store->Abort(b, {off});
  EXPECT_EQ(f.store->Stats().pending_creates, 1u);
  std::vector<std::string> sealed;
  EXPECT_EQ(f.store->Seal(a, {off}, &sealed)[0], StatusCode::kOk);
  EXPECT_EQ(sealed, std::vector<std::string>{"k"});
  EXPECT_EQ(f.store->Seal(a, {off})[0], StatusCode::kNotFound);  // sealed once only
  EXPECT_EQ(f.store->Stats().pending_creates, 0u);
}

TEST(ObjectStore, KeyCreatedTwiceBeforeSealLaterSealWins) {
  StoreFixture f(1 << 20);
  Session w, r;
  auto first = f.store->Create(w, {"k"}, {2}, {});
  auto second = f.store->Create(w, {"k"}, {2}, {});
  ASSERT_TRUE(first.ok() && second.ok());
  std::memcpy(f.memory.data() + (*first)[0].offset, "v1", 2);
  std::memcpy(f.memory.data() + (*second)[0].offset, "v2", 2);
  EXPECT_EQ(f.store->Seal(w, {(*first)[0].offset})[0], StatusCode::kOk);
  EXPECT_EQ(f.store->Seal(w, {(*second)[0].offset})[0], StatusCode::kOk);
  EXPECT_EQ(*f.Read(r, "k"), "v2");
  EXPECT_EQ(f.store->Stats().objects, 1u);
  EXPECT_EQ(f.store->Delete({"k", "never"}), (std::vector<bool>{true, false}));
  EXPECT_EQ(f.store->Stats().used, 0u);  // the replaced block was freed
}

TEST(ObjectStore, PinnedBlockSurvivesOverwriteAndDelete) {
  StoreFixture f(1 << 20);
  Session w, r;
  ASSERT_TRUE(f.Put(w, "k", "v1").ok());
  auto got = f.store->Get(r, {"k"}, std::chrono::milliseconds(0));
  ASSERT_TRUE(got.ok());
  uint64_t off = (*got)[0].offset;
  ASSERT_TRUE(f.Put(w, "k", "v2").ok());
  EXPECT_EQ(std::string(reinterpret_cast<char*>(f.memory.data() + off), 2), "v1");
  EXPECT_EQ(f.store->Delete({"k"}), std::vector<bool>{true});
  EXPECT_GT(f.store->Stats().used, 0u);  // orphan still pinned
  f.store->CloseSession(r);              // reader dies
  EXPECT_EQ(f.store->Stats().used, 0u);
  EXPECT_EQ(f.store->Stats().pinned_blocks, 0u);
}

TEST(ObjectStore, IfAbsentAndTtl) {
  StoreFixture f(1 << 20);
  Session s;
  ASSERT_TRUE(f.Put(s, "k", "a").ok());
  WriteOptions nx;
  nx.if_absent = true;
  EXPECT_TRUE(f.Put(s, "k", "b", nx).IsAlreadyExists());
  EXPECT_EQ(*f.Read(s, "k"), "a");
  WriteOptions ttl;
  ttl.ttl_ms = 1;
  ASSERT_TRUE(f.Put(s, "t", "x", ttl).ok());
  EXPECT_TRUE(testing::Eventually([&] { return !f.store->Exist({"t"})[0]; }));
  f.store->ExpireDue();
  EXPECT_EQ(f.store->Stats().objects, 1u);
}

TEST(ObjectStore, ExpireSetsReplacesOrKeepsTheTimeToLive) {
  StoreFixture f(1 << 20);
  Session s;
  ASSERT_TRUE(f.Put(s, "a", "1").ok());
  ASSERT_TRUE(f.Put(s, "b", "2").ok());
  WriteOptions ttl;
  ttl.ttl_ms = 1000;
  const auto put_at = std::chrono::steady_clock::now();
  ASSERT_TRUE(f.Put(s, "short", "3", ttl).ok());
  // 0 keeps each expiry as it is; a missing key is reported.
  EXPECT_EQ(f.store->Expire({"a", "missing"}, 0), (std::vector<bool>{true, false}));
  // A later expiry replaces an earlier one, in both directions.
  EXPECT_EQ(f.store->Expire({"short"}, 3600 * 1000), (std::vector<bool>{true}));
  EXPECT_EQ(f.store->Expire({"a"}, 1), (std::vector<bool>{true}));
  EXPECT_TRUE(testing::Eventually([&] { return !f.store->Exist({"a"})[0]; }));
  // Past short's first expiry (a time to let pass, nothing to poll for): its
  // queued entry is stale, and ExpireDue skips it.
  std::this_thread::sleep_until(put_at + std::chrono::milliseconds(1100));
  f.store->ExpireDue();
  EXPECT_EQ(f.store->Exist({"a", "b", "short"}), (std::vector<bool>{false, true, true}));
  EXPECT_EQ(f.store->Stats().objects, 2u);
  // A huge TTL does not overflow the clock.
  EXPECT_EQ(f.store->Expire({"b"}, UINT64_MAX), (std::vector<bool>{true}));
  f.store->ExpireDue();
  EXPECT_TRUE(f.store->Exist({"b"})[0]);
}

TEST(ObjectStore, SpillsColdObjectsAndReloadsThemIdentically) {
  testing::TempDir dir;
  StoreFixture f(1 << 20, dir.path(), 8 << 20);
  Session s;
  std::mt19937 rng(1);
  std::vector<std::string> values;
  for (int i = 0; i < 20; ++i) {  // 20 x 200 KiB into 1 MiB
    std::string v(200 << 10, '\0');
    for (auto& c : v) c = static_cast<char>(rng());
    values.push_back(v);
    ASSERT_TRUE(f.Put(s, "k" + std::to_string(i), v).ok()) << i;
  }
  auto st = f.store->Stats();
  EXPECT_GT(st.spilled_objects, 0u);
  EXPECT_LE(st.used, 1u << 20);
  for (int i = 0; i < 20; ++i) EXPECT_EQ(*f.Read(s, "k" + std::to_string(i)), values[i]) << i;
  EXPECT_GT(f.store->Stats().reloads, 0u);
}

TEST(ObjectStore, EvictableObjectsAreDroppedNotSpilled) {
  StoreFixture f(1 << 20);
  Session s;
  WriteOptions ev;
  ev.evictable = true;
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(f.Put(s, "e" + std::to_string(i), std::string(200 << 10, 'e'), ev).ok());
  EXPECT_GT(f.store->Stats().evictions, 0u);
  EXPECT_TRUE(f.Read(s, "e9").has_value());  // the newest stays
}

TEST(ObjectStore, OutOfSpaceSaysWhatToDo) {
  testing::TempDir dir;
  StoreFixture f(1 << 20, dir.path(), 1);  // 1 MiB memory, 1 MiB disk
  Session s;
  Status last;
  for (int i = 0; i < 20 && last.ok(); ++i) last = f.Put(s, "k" + std::to_string(i), std::string(200 << 10, 'x'));
  ASSERT_TRUE(last.IsOutOfSpace()) << last.ToString();
  EXPECT_NE(last.message().find("--shared_memory_size_mb"), std::string::npos);
  EXPECT_NE(last.message().find("spill directory"), std::string::npos);
  EXPECT_TRUE(f.store->Create(s, {"huge"}, {2 << 20}, {}).status().IsOutOfSpace());
  // Nothing was dropped: every written key still reads back.
  auto stats = f.store->Stats();
  EXPECT_EQ(stats.evictions, 0u);
  for (uint64_t i = 0; i < stats.objects; ++i) EXPECT_TRUE(f.Read(s, "k" + std::to_string(i)).has_value());
}

TEST(ObjectStore, GetWaitsForASeal) {
  StoreFixture f(1 << 20);
  Session w, r;
  std::thread writer([&] {
    // Waits until the reader is blocked is not observable; the reader's wait
    // is long, so the writer simply writes.
    ASSERT_TRUE(f.Put(w, "late", "here").ok());
  });
  auto got = f.store->Get(r, {"late"}, std::chrono::milliseconds(5000));
  writer.join();
  ASSERT_TRUE(got.ok());
  EXPECT_EQ((*got)[0].code, StatusCode::kOk);
  auto miss = f.store->Get(r, {"never"}, std::chrono::milliseconds(20));
  ASSERT_TRUE(miss.ok());
  EXPECT_EQ((*miss)[0].code, StatusCode::kNotFound);
}

TEST(LocalFrame, RoundTripWithPayloadsAndFd) {
  int sv[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
  Message m(MsgType::kDsPut, 9);
  m.set_body(tqds::wire::PackBody([](auto& pk) {
    pk.pack_map(1);
    pk.pack("keys");
    pk.pack(std::vector<std::string>{"a", "b"});
  }));
  m.payloads().push_back(tqds::Buffer::CopyString("xyz"));
  m.payloads().push_back(tqds::Buffer::CopyString(""));
  int passed = ::dup(0);
  ASSERT_TRUE(WriteFrame(sv[0], m, passed).ok());
  int got_fd = -1;
  auto back = ReadFrame(sv[1], &got_fd);
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(back->type(), MsgType::kDsPut);
  EXPECT_EQ(back->request_id(), 9u);
  ASSERT_EQ(back->payloads().size(), 2u);
  EXPECT_EQ(back->payloads()[0].ToString(), "xyz");
  EXPECT_GE(got_fd, 0);
  ::close(got_fd);
  ::close(passed);
  ::close(sv[0]);
  ::close(sv[1]);
}

TEST(LocalFrame, RejectsHostileInput) {
  int sv[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
  uint32_t bad[4] = {0xdeadbeef, 1, 0, 0};
  ASSERT_EQ(::write(sv[0], bad, sizeof(bad)), 16);
  EXPECT_TRUE(ReadFrame(sv[1]).status().IsInvalid());
  uint32_t huge[4] = {kFrameMagic, 0xffffffff, 0, 0};
  ASSERT_EQ(::write(sv[0], huge, sizeof(huge)), 16);
  EXPECT_TRUE(ReadFrame(sv[1]).status().IsInvalid());
  // A well-framed but undecodable header keeps the stream in sync.
  uint32_t ok_prefix[4] = {kFrameMagic, 3, 0, 0};
  ASSERT_EQ(::write(sv[0], ok_prefix, sizeof(ok_prefix)), 16);
  ASSERT_EQ(::write(sv[0], "\xc1\xc1\xc1", 3), 3);
  auto m = ReadFrame(sv[1]);
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(m->type(), MsgType::kInvalid);
  EXPECT_TRUE(m->status().IsInvalid());
  // Truncated, then closed.
  ASSERT_EQ(::write(sv[0], ok_prefix, 8), 8);
  ::close(sv[0]);
  EXPECT_TRUE(ReadFrame(sv[1]).status().IsIOError());
  ::close(sv[1]);
}

// ---------------------------------------------------------------- OwnerTable

Replica Rep(const std::string& holder, uint64_t version, uint64_t inc = 1) {
  return Replica{holder, inc, holder + "-data", version};
}

TEST(OwnerTable, PrimaryReplacesOlderCopiesAndReportsThemStale) {
  OwnerTable t;
  using proto::PublishMode;
  EXPECT_TRUE(t.Publish(PublishMode::kPrimary, {{"k", 10, Rep("a", 1)}}).empty());
  EXPECT_TRUE(t.Publish(PublishMode::kCache, {{"k", 10, Rep("b", 7)}}).empty());
  // Re-announcing the same primary changes nothing (the cache stays).
  EXPECT_TRUE(t.Publish(PublishMode::kPrimary, {{"k", 10, Rep("a", 1)}}).empty());
  LiveSet live{{"a", 1}, {"b", 1}, {"c", 1}};
  auto l = t.Lookup({"k"}, live);
  ASSERT_EQ(l[0].code, StatusCode::kOk);
  EXPECT_EQ(l[0].live.size(), 2u);
  // An overwrite on c makes a's and b's copies stale.
  auto stale = t.Publish(PublishMode::kPrimary, {{"k", 20, Rep("c", 3)}});
  ASSERT_EQ(stale.size(), 2u);
  EXPECT_EQ(stale[0].holder, "a");
  EXPECT_EQ(stale[1].holder, "b");
  l = t.Lookup({"k"}, live);
  EXPECT_EQ(l[0].size, 20u);
  ASSERT_EQ(l[0].live.size(), 1u);
  EXPECT_EQ(l[0].live[0].holder, "c");
}

TEST(OwnerTable, CachedCopyIsDroppedOnlyWhenEveryAnsweringOwnerHasNoRecord) {
  using proto::PublishMode;
  // A key's owners are an established owner (it has the record) and a worker
  // that has just joined the ring (the handoff has not reached it yet). A
  // reader registers its freshly pulled copy with both.
  OwnerTable established, joined;
  established.Publish(PublishMode::kPrimary, {{"k", 10, Rep("w", 5)}});
  const PublishEntry cache{"k", 10, Rep("r", 5)};
  auto from_established = established.Publish(PublishMode::kCache, {cache});
  auto from_joined = joined.Publish(PublishMode::kCache, {cache});
  EXPECT_TRUE(from_established.empty());
  ASSERT_EQ(from_joined.size(), 1u);  // "no record": on its own, a delete it cannot tell apart
  auto drop = CopiesToDrop(PublishMode::kCache,
                           {{{"k"}, from_established}, {{"k"}, from_joined}});
  EXPECT_TRUE(drop.empty()) << "a good copy would be dropped and the read would miss";

  // Deleted while it was pulled: neither owner has a record, the copy goes.
  OwnerTable first, second;
  drop = CopiesToDrop(PublishMode::kCache, {{{"k"}, first.Publish(PublishMode::kCache, {cache})},
                                            {{"k"}, second.Publish(PublishMode::kCache, {cache})}});
  ASSERT_EQ(drop.size(), 1u);
  EXPECT_EQ(drop[0].holder, "r");
  EXPECT_EQ(drop[0].version, 5u);
  // One owner did not answer: the one that did decides.
  drop = CopiesToDrop(PublishMode::kCache, {{{"k"}, first.Publish(PublishMode::kCache, {cache})}});
  EXPECT_EQ(drop.size(), 1u);

  // A primary: any owner's report of an older copy counts.
  drop = CopiesToDrop(PublishMode::kPrimary,
                      {{{"k"}, established.Publish(PublishMode::kPrimary, {{"k", 20, Rep("x", 9)}})},
                       {{"k"}, {}}});
  ASSERT_EQ(drop.size(), 2u);  // w's primary and r's cache
}

TEST(OwnerTable, WritesOnTwoWorkersAreOrderedByVersionNotArrival) {
  using proto::PublishMode;
  // Two owners get the announcements of a's write (version 10) and b's later
  // write (version 20) in opposite orders; both end with b's.
  OwnerTable first, second;
  EXPECT_TRUE(first.Publish(PublishMode::kPrimary, {{"k", 1, Rep("a", 10)}}).empty());
  auto s1 = first.Publish(PublishMode::kPrimary, {{"k", 2, Rep("b", 20)}});
  EXPECT_TRUE(second.Publish(PublishMode::kPrimary, {{"k", 2, Rep("b", 20)}}).empty());
  auto s2 = second.Publish(PublishMode::kPrimary, {{"k", 1, Rep("a", 10)}});
  LiveSet live{{"a", 1}, {"b", 1}};
  for (OwnerTable* t : {&first, &second}) {
    auto l = t->Lookup({"k"}, live);
    ASSERT_EQ(l[0].live.size(), 1u);
    EXPECT_EQ(l[0].live[0].holder, "b");
    EXPECT_EQ(l[0].size, 2u);
  }
  // Either way a's copy, at exactly version 10, is the one to drop.
  ASSERT_EQ(s1.size(), 1u);
  ASSERT_EQ(s2.size(), 1u);
  for (const auto& s : {s1[0], s2[0]}) {
    EXPECT_EQ(s.holder, "a");
    EXPECT_EQ(s.version, 10u);
  }
  // Equal versions: the holder name breaks the tie, the same everywhere.
  OwnerTable tie;
  (void)tie.Publish(PublishMode::kPrimary, {{"t", 1, Rep("b", 5)}});
  EXPECT_EQ(tie.Publish(PublishMode::kPrimary, {{"t", 1, Rep("a", 5)}}).size(), 1u);
  EXPECT_EQ(tie.Lookup({"t"}, live)[0].live[0].holder, "b");
}

TEST(ObjectStore, VersionedDropNeverRemovesANewerWrite) {
  StoreFixture f(1 << 20);
  Session w, r;
  ASSERT_TRUE(f.Put(w, "k", "old").ok());
  auto info = f.store->Describe({"k"});
  const uint64_t old_version = info[0].version;
  ASSERT_TRUE(f.Put(w, "k", "new").ok());
  EXPECT_GT(f.store->Describe({"k"})[0].version, old_version);
  EXPECT_EQ(f.store->DeleteVersions({"k"}, {old_version}), 0u);  // a stale drop arrives late
  EXPECT_EQ(*f.Read(r, "k"), "new");
  EXPECT_EQ(f.store->DeleteVersions({"k"}, {0}), 1u);  // 0: any version
  EXPECT_FALSE(f.Read(r, "k"));
}

TEST(OwnerTable, LostWhenEveryHolderLeftOrRestarted) {
  OwnerTable t;
  using proto::PublishMode;
  (void)t.Publish(PublishMode::kPrimary, {{"k", 1, Rep("a", 1, /*inc=*/5)}});
  EXPECT_EQ(t.Lookup({"k"}, {{"a", 5}})[0].code, StatusCode::kOk);
  auto gone = t.Lookup({"k"}, {{"b", 1}});
  EXPECT_EQ(gone[0].code, StatusCode::kUnavailable);
  EXPECT_EQ(gone[0].lost, "a");
  EXPECT_EQ(t.Lookup({"k"}, {{"a", 6}})[0].code, StatusCode::kUnavailable);  // restarted
  EXPECT_EQ(t.Lookup({"x"}, {{"a", 5}})[0].code, StatusCode::kNotFound);
}

TEST(OwnerTable, CacheOfADeletedKeyIsStaleAndHandoffFillsOnlyGaps) {
  OwnerTable t;
  using proto::PublishMode;
  auto stale = t.Publish(PublishMode::kCache, {{"gone", 1, Rep("b", 1)}});
  ASSERT_EQ(stale.size(), 1u);
  EXPECT_EQ(stale[0].holder, "b");
  (void)t.Publish(PublishMode::kPrimary, {{"k", 1, Rep("a", 2)}});
  (void)t.Publish(PublishMode::kHandoff, {{"k", 1, Rep("z", 1)}, {"h", 3, Rep("z", 9)}});
  LiveSet live{{"a", 1}, {"z", 1}};
  auto l = t.Lookup({"k", "h"}, live);
  ASSERT_EQ(l[0].live.size(), 1u);
  EXPECT_EQ(l[0].live[0].holder, "a");  // a primary record is never overridden by a handoff
  EXPECT_EQ(l[1].code, StatusCode::kOk);
  EXPECT_EQ(l[1].live[0].version, 9u);
  auto removed = t.Remove({"k", "h", "none"});
  EXPECT_EQ(removed[0].size(), 1u);
  EXPECT_EQ(removed[1].size(), 1u);
  EXPECT_TRUE(removed[2].empty());
  EXPECT_EQ(t.size(), 0u);
}

}  // namespace
}  // namespace ds
