// Copy-on-write views (ClientOptions::copy_on_write_views: a private,
// writable mapping of the arena, the kernel's copy-on-write) against a real
// datasystem_worker: a write through a view never changes the stored value
// or another result, later views never show written or stale pages,
// concurrent writers all keep their writes, no signal handler is installed,
// and faults still kill the process.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <set>
#include <thread>

#include "datasystem/view_mapping.h"
#include "ds/kv_client.h"
#include "test_util.h"

namespace ds {
namespace {

using testing::RandomBytes;
using testing::WorkerProcess;

constexpr uint64_t kPage = 4096;

// Writes through a view as a caller that ignores its constness would (a
// torch tensor over it, say).
uint8_t* Writable(const Buffer& b) { return const_cast<uint8_t*>(b.data()); }

class CowViewsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    worker_ = std::make_unique<WorkerProcess>(WorkerProcess::Config{});
    ASSERT_EQ(worker_->Start(), "");
    cow_ = NewClient(true);
    plain_ = NewClient(false);
  }
  std::unique_ptr<KVClient> NewClient(bool copy_on_write) {
    ClientOptions options;
    options.copy_on_write_views = copy_on_write;
    auto c = std::make_unique<KVClient>("127.0.0.1", worker_->port(), options);
    Status st = c->Init();
    EXPECT_TRUE(st.ok()) << st.ToString();
    return c;
  }
  Buffer View(KVClient& c, const std::string& key) {
    auto got = c.GetBuffers({key});
    EXPECT_TRUE(got.ok()) << got.status().ToString();
    EXPECT_TRUE(got.ok() && (*got)[0].has_value()) << key;
    return got.ok() && (*got)[0] ? *(*got)[0] : Buffer();
  }

  std::unique_ptr<WorkerProcess> worker_;
  std::unique_ptr<KVClient> cow_, plain_;
};

TEST_F(CowViewsTest, AWriteThroughAViewNeverChangesTheStoredValue) {
  const std::string value = RandomBytes(3 << 20, 1);  // 768 pages
  ASSERT_TRUE(cow_->Set("k", value).ok());
  Buffer first = View(*cow_, "k");
  ASSERT_EQ(first.view(), value);
  std::memset(Writable(first), 0xAB, first.size());  // faults without copy-on-write
  EXPECT_EQ(first.view(), std::string(value.size(), '\xAB'));

  // The worker, other clients and copying reads keep the stored bytes.
  EXPECT_EQ(*plain_->Get("k"), value);
  EXPECT_EQ(View(*plain_, "k").view(), value);
  EXPECT_EQ(*cow_->Get("k"), value);
  // A view handed out while the written one lives has the stored bytes
  // elsewhere (mapped alone).
  Buffer second = View(*cow_, "k");
  EXPECT_EQ(second.view(), value);
  EXPECT_NE(second.data(), first.data());
  // Once both are gone, views are zero-copy over the stored bytes again.
  const uint8_t* where = first.data();
  first = Buffer();
  second = Buffer();
  Buffer third = View(*cow_, "k");
  EXPECT_EQ(third.data(), where);
  EXPECT_EQ(third.view(), value);
}

TEST_F(CowViewsTest, LiveViewsOfOneKeyNeverShareBytes) {
  const std::string value = RandomBytes(64 << 10, 7);
  ASSERT_TRUE(cow_->Set("k", value).ok());
  Buffer first = View(*cow_, "k");
  // Read again while the first lives, alone and twice in one call: copies.
  Buffer second = View(*cow_, "k");
  auto both = cow_->GetBuffers({"k", "k"});
  ASSERT_TRUE(both.ok()) << both.status().ToString();
  ASSERT_TRUE((*both)[0] && (*both)[1]);
  const std::set<const uint8_t*> where = {first.data(), second.data(), (*both)[0]->data(),
                                          (*both)[1]->data()};
  EXPECT_EQ(where.size(), 4u);
  std::memset(Writable(first), 0x11, first.size());
  EXPECT_EQ(second.view(), value);
  EXPECT_EQ((*both)[0]->view(), value);
  EXPECT_EQ((*both)[1]->view(), value);
  EXPECT_EQ(*plain_->Get("k"), value);
}

// The page a write makes private may also hold the head of a neighbour. If
// the neighbour is deleted and a new value takes its place while the written
// view lives, a view of the new value must show the new bytes.
TEST_F(CowViewsTest, AReusedNeighbourNeverShowsAPrivatePage) {
  const std::string a = RandomBytes(64 * 1024 + 100, 2);  // ends mid-page
  const std::string b = RandomBytes(32 * 1024, 3);
  const std::string c = RandomBytes(32 * 1024, 4);
  ASSERT_TRUE(cow_->Set("a", a).ok());
  ASSERT_TRUE(cow_->Set("b", b).ok());
  Buffer va = View(*cow_, "a");
  const uint8_t* b_before = View(*plain_, "b").data();
  // The view's one-way release is handled before this request of the same
  // connection, hence before the Delete below: b's block is free for c.
  ASSERT_TRUE(plain_->Exist({"b"}).ok());
  Writable(va)[va.size() - 1] ^= 0xFF;  // makes the page holding b's head private
  ASSERT_EQ(*cow_->Delete({"b"}), 1u);
  ASSERT_TRUE(cow_->Set("c", c).ok());
  // The scenario needs c where b was, sharing a's last page.
  ASSERT_EQ(View(*plain_, "c").data(), b_before);
  EXPECT_EQ(View(*cow_, "c").view(), c);
  EXPECT_EQ(*cow_->Get("c"), c);
  va = Buffer();
  EXPECT_EQ(View(*cow_, "c").view(), c);  // and zero-copy again
  EXPECT_EQ(View(*cow_, "a").view(), a);
}

// Threads that write into one chunk at the same moment (an intra-op
// parallel in-place op) must all keep their writes: a second remap of the
// chunk would drop the first thread's private pages.
TEST_F(CowViewsTest, ConcurrentWritersIntoOneChunkKeepEveryWrite) {
  constexpr int kThreads = 8;
  const std::string value(2 << 20, '\0');
  ASSERT_TRUE(cow_->Set("k", value).ok());
  for (int round = 0; round < 200; ++round) {
    Buffer v = View(*cow_, "k");
    ASSERT_EQ(v.view(), value);
    const size_t pages = v.size() / kPage;
    std::vector<std::thread> threads;
    std::atomic<int> ready{0};
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&, t] {
        ready.fetch_add(1);
        while (ready.load() < kThreads) {
        }
        for (size_t p = t; p < pages; p += kThreads)
          Writable(v)[p * kPage + 7] = static_cast<uint8_t>(1 + t);
      });
    }
    for (auto& th : threads) th.join();
    for (size_t p = 0; p < pages; ++p) {
      ASSERT_EQ(v.data()[p * kPage + 7], 1 + p % kThreads) << "round " << round << " page " << p;
    }
    EXPECT_EQ(*plain_->Get("k"), value);
  }
}

TEST_F(CowViewsTest, ViewsOfADatasetOfManyKeysStayZeroCopyWithoutWrites) {
  std::vector<std::string> keys;
  std::vector<std::string_view> values;
  const std::string blob = RandomBytes(32 * 1024, 5);
  for (int i = 0; i < 200; ++i) {
    keys.push_back("many/" + std::to_string(i));
    values.push_back(blob);
  }
  ASSERT_TRUE(cow_->MSet(keys, values).ok());
  std::vector<const uint8_t*> where;
  {
    auto first = cow_->GetBuffers(keys);
    ASSERT_TRUE(first.ok());
    for (const auto& b : *first) where.push_back(b->data());
  }
  // Read again after the first result ended: the same shared pages (views,
  // not copies), with the stored bytes.
  auto second = cow_->GetBuffers(keys);
  ASSERT_TRUE(second.ok());
  for (size_t i = 0; i < keys.size(); ++i) {
    EXPECT_EQ((*second)[i]->data(), where[i]) << keys[i];
    EXPECT_EQ((*second)[i]->view(), blob);
  }
}

// Runs `write` in a forked child; true when the child died of it (a
// signal, or a sanitizer's non-zero exit) rather than exiting 0 after it.
template <typename F>
bool ChildDiesOf(F&& write) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    write();
    ::_exit(0);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  return !(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

TEST_F(CowViewsTest, FaultsOutsideCopyOnWriteViewsStillKillTheProcess) {
  ASSERT_TRUE(plain_->Set("k", std::string(8192, 'x')).ok());
  Buffer plain_view = View(*plain_, "k");
  Buffer cow_view = View(*cow_, "k");
  // A write into a copy-on-write view goes ahead (in the child's copy).
  EXPECT_FALSE(ChildDiesOf([&] { Writable(cow_view)[0] = 'y'; }));
  // A null write, and a write into views of a client without copy-on-write,
  // still take the default action.
  EXPECT_TRUE(ChildDiesOf([] {
    volatile int* p = nullptr;
    *p = 1;
  }));
  EXPECT_TRUE(ChildDiesOf([&] { Writable(plain_view)[0] = 'y'; }));
  EXPECT_EQ(plain_view.view(), std::string(8192, 'x'));
  EXPECT_EQ(cow_view.view(), std::string(8192, 'x'));
}

// The kernel does the copy-on-write: the library installs no SIGSEGV
// handler, and a handler the program installs never sees a write into a view.
TEST_F(CowViewsTest, NoSignalHandlerIsInvolved) {
  struct sigaction before {};
  ASSERT_EQ(::sigaction(SIGSEGV, nullptr, &before), 0);
  ASSERT_TRUE(cow_->Set("k", std::string(8192, 'x')).ok());
  Buffer v = View(*cow_, "k");
  struct sigaction after {};
  ASSERT_EQ(::sigaction(SIGSEGV, nullptr, &after), 0);
  EXPECT_EQ(after.sa_handler, before.sa_handler);
  EXPECT_EQ(after.sa_flags, before.sa_flags);
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::alarm(20);
    struct sigaction counting {};
    counting.sa_handler = [](int) { ::_exit(4); };  // a fault would end here
    sigemptyset(&counting.sa_mask);
    ::sigaction(SIGSEGV, &counting, nullptr);
    Writable(v)[0] = 'y';
    ::_exit(v.data()[0] == 'y' ? 0 : 3);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  EXPECT_EQ(v.view(), std::string(8192, 'x'));
}

// Nothing limits how many results may be live and written at once (the
// signal handler this replaces knew 256 mappings).
TEST_F(CowViewsTest, MoreThan256LiveWrittenResultsStayIndependent) {
  constexpr int kKeys = 300;
  std::vector<std::string> keys;
  std::vector<std::string> values;
  for (int i = 0; i < kKeys; ++i) {
    keys.push_back("live/" + std::to_string(i));
    values.push_back(RandomBytes(6000 + i, 100 + i));  // neighbours share pages
    ASSERT_TRUE(cow_->Set(keys.back(), values.back()).ok());
  }
  std::vector<Buffer> first, second;
  for (int i = 0; i < kKeys; ++i) first.push_back(View(*cow_, keys[i]));
  for (int i = 0; i < kKeys; ++i) {
    std::memset(Writable(first[i]), i % 250 + 1, first[i].size());
    second.push_back(View(*cow_, keys[i]));
  }
  for (int i = 0; i < kKeys; ++i) {
    ASSERT_EQ(first[i].view(), std::string(values[i].size(), static_cast<char>(i % 250 + 1)));
    ASSERT_EQ(second[i].view(), values[i]) << i;
    ASSERT_EQ(*plain_->Get(keys[i]), values[i]) << i;
  }
  first.clear();
  second.clear();
  for (int i = 0; i < kKeys; ++i) ASSERT_EQ(View(*cow_, keys[i]).view(), values[i]) << i;
}

// Two live views of neighbouring objects that share a page: each writes
// its own bytes of that page, and each keeps its write and the other's
// stored bytes.
TEST_F(CowViewsTest, NeighboursSharingAPageKeepTheirOwnWrites) {
  const std::string a = RandomBytes(kPage + 100, 8);
  const std::string b = RandomBytes(kPage, 9);
  ASSERT_TRUE(cow_->Set("a", a).ok());
  ASSERT_TRUE(cow_->Set("b", b).ok());
  auto both = cow_->GetBuffers({"a", "b"});
  ASSERT_TRUE(both.ok());
  Buffer va = *(*both)[0], vb = *(*both)[1];
  Writable(va)[va.size() - 1] = 'A';
  Writable(vb)[0] = 'B';
  std::string a2 = a, b2 = b;
  a2.back() = 'A';
  b2.front() = 'B';
  EXPECT_EQ(va.view(), a2);
  EXPECT_EQ(vb.view(), b2);
  EXPECT_EQ(*plain_->Get("a"), a);
  EXPECT_EQ(*plain_->Get("b"), b);
}

// A write into a large object read twice: the second live result is mapped
// alone (a private mapping of its own), the first keeps its write.
TEST_F(CowViewsTest, ALargeObjectReadTwiceIsMappedTwice) {
  const std::string value = RandomBytes(4 << 20, 10);
  ASSERT_TRUE(cow_->Set("big", value).ok());
  auto two = cow_->GetBuffers({"big", "big"});
  ASSERT_TRUE(two.ok());
  Buffer x = *(*two)[0], y = *(*two)[1];
  EXPECT_NE(x.data(), y.data());
  std::memset(Writable(y), 0x5A, y.size());
  EXPECT_EQ(x.view(), value);
  EXPECT_EQ(y.view(), std::string(value.size(), '\x5A'));
  EXPECT_EQ(*plain_->Get("big"), value);
}

// ViewMapping alone, over a memfd (no worker), with each way of finding
// written pages.
using internal::ViewMapping;

class ViewMappingTest : public ::testing::TestWithParam<ViewMapping::Tracking> {
 protected:
  static constexpr uint64_t kSize = 64 << 20;
  void SetUp() override {
    fd_ = static_cast<int>(::syscall(SYS_memfd_create, "view_mapping_test", 0));
    ASSERT_GE(fd_, 0);
    ASSERT_EQ(::ftruncate(fd_, kSize), 0);
    shared_ = static_cast<uint8_t*>(
        ::mmap(nullptr, kSize, PROT_READ | PROT_WRITE, MAP_SHARED, fd_, 0));
    ASSERT_NE(shared_, MAP_FAILED);
    for (uint64_t i = 0; i < kSize; i += 8) shared_[i] = static_cast<uint8_t>(i >> 12);
    auto m = ViewMapping::Map(fd_, kSize, true, GetParam());
    ASSERT_TRUE(m.ok()) << m.status().ToString();
    views_ = std::move(*m);
    if (views_->tracking() != GetParam()) GTEST_SKIP() << "this kernel refuses that tracking";
  }
  void TearDown() override {
    views_.reset();
    if (shared_ != nullptr && shared_ != MAP_FAILED) ::munmap(shared_, kSize);
    if (fd_ >= 0) ::close(fd_);
  }
  uint8_t* At(uint64_t off) { return const_cast<uint8_t*>(views_->base()) + off; }

  int fd_ = -1;
  uint8_t* shared_ = nullptr;
  std::unique_ptr<ViewMapping> views_;
};

TEST_P(ViewMappingTest, AWrittenPageIsDroppedWithItsLastView) {
  const std::vector<uint64_t> off = {3 * kPage}, size = {5 * kPage};
  ASSERT_EQ(views_->View(off, size), std::vector<bool>{true});
  EXPECT_EQ(*At(3 * kPage), shared_[3 * kPage]);
  *At(4 * kPage + 8) = 0xEE;  // the kernel's copy-on-write
  EXPECT_EQ(*At(4 * kPage + 8), 0xEE);
  EXPECT_NE(shared_[4 * kPage + 8], 0xEE);
  views_->Unview(off, size);
  EXPECT_GE(views_->DroppedPages(), 1u);
  ASSERT_EQ(views_->View(off, size), std::vector<bool>{true});
  EXPECT_EQ(*At(4 * kPage + 8), shared_[4 * kPage + 8]);
  views_->Unview(off, size);
}

TEST_P(ViewMappingTest, UnwrittenViewsDropNothingWhereWritesAreTracked) {
  const std::vector<uint64_t> off = {0, 40 << 20}, size = {1 << 20, 3 << 20};
  for (int round = 0; round < 3; ++round) {
    ASSERT_EQ(views_->View(off, size), (std::vector<bool>{true, true}));
    volatile uint8_t sum = 0;
    for (uint64_t i = 0; i < size[1]; i += kPage) sum = sum + *At(off[1] + i);
    views_->Unview(off, size);
  }
  if (GetParam() == ViewMapping::Tracking::kNone) {
    EXPECT_GT(views_->DroppedPages(), 0u);
  } else {
    EXPECT_EQ(views_->DroppedPages(), 0u);
  }
}

TEST_P(ViewMappingTest, AnObjectWithALiveViewIsNotViewableAgain) {
  const std::vector<uint64_t> off = {kPage, kPage}, size = {100, 100};
  EXPECT_EQ(views_->View(off, size), (std::vector<bool>{true, false}));
  EXPECT_EQ(views_->View({kPage}, {100}), std::vector<bool>{false});
  views_->Unview({kPage}, {100});
  EXPECT_EQ(views_->View({kPage}, {100}), std::vector<bool>{true});
  views_->Unview({kPage}, {100});
}

TEST_P(ViewMappingTest, APageANeighbourWroteIsNotViewable) {
  // a = [0, kPage + 100) and b = [kPage + 100, 2 kPage) share page 1.
  ASSERT_EQ(views_->View({0}, {kPage + 100}), std::vector<bool>{true});
  // Not written yet: viewable, except without tracking (a shared end page
  // then counts as written).
  const bool tracked = GetParam() != ViewMapping::Tracking::kNone;
  EXPECT_EQ(views_->View({kPage + 100}, {kPage - 100}), std::vector<bool>{tracked});
  if (tracked) views_->Unview({kPage + 100}, {kPage - 100});
  *At(kPage + 50) = 1;  // a writes its own bytes of page 1
  EXPECT_EQ(views_->View({kPage + 100}, {kPage - 100}), std::vector<bool>{false});
  views_->Unview({0}, {kPage + 100});  // page 1 has no view left: dropped
  EXPECT_EQ(views_->View({kPage + 100}, {kPage - 100}), std::vector<bool>{true});
  EXPECT_EQ(*At(kPage + 50), shared_[kPage + 50]);
  views_->Unview({kPage + 100}, {kPage - 100});
}

TEST_P(ViewMappingTest, NeighboursOfOneCallShareTheirPageWithoutASecondCheck) {
  // Three objects of 2 KiB back to back, as a batch of small values lies:
  // pages 0 and 1 each hold the end of one and the start of the next. In
  // one call each shared page is checked once (by the object that ends on
  // it), so all three are views, also without write tracking.
  const std::vector<uint64_t> off = {kPage / 2, kPage + kPage / 2, 2 * kPage + kPage / 2};
  const std::vector<uint64_t> size = {kPage, kPage, kPage};
  ASSERT_EQ(views_->View(off, size), (std::vector<bool>{true, true, true}));
  for (uint64_t o : off) EXPECT_EQ(*At(o + 8), shared_[o + 8]);
  *At(off[0] + 8) = 0xEE;  // the first writes its own bytes of page 0
  // ... which a later call's neighbour on page 0 must not see.
  EXPECT_EQ(views_->View({0}, {kPage / 2}), std::vector<bool>{false});
  views_->Unview(off, size);
  EXPECT_EQ(views_->View({0}, {kPage / 2}), std::vector<bool>{true});
  EXPECT_EQ(*At(8), shared_[8]);
  views_->Unview({0}, {kPage / 2});
}

INSTANTIATE_TEST_SUITE_P(Tracking, ViewMappingTest,
                         ::testing::Values(ViewMapping::Tracking::kWriteProtect,
                                           ViewMapping::Tracking::kFileScan,
                                           ViewMapping::Tracking::kNone),
                         [](const auto& info) {
                           switch (info.param) {
                             case ViewMapping::Tracking::kWriteProtect:
                               return std::string("WriteProtect");
                             case ViewMapping::Tracking::kFileScan:
                               return std::string("FileScan");
                             default:
                               return std::string("None");
                           }
                         });

}  // namespace
}  // namespace ds
