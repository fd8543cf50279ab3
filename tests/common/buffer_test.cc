// Buffer / MutableBuffer ownership: copies own, wraps and slices keep their
// holder alive, borrows hold nothing.
#include "tqds/buffer.h"

#include <gtest/gtest.h>
#include <sys/mman.h>

#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "common/mapping_cache_internal.h"
#include "common/stream_copy.h"
#include "common/test_util.h"

namespace tqds {
namespace {

TEST(BufferTest, DefaultIsEmpty) {
  Buffer b;
  EXPECT_TRUE(b.empty());
  EXPECT_EQ(b.size(), 0u);
  EXPECT_EQ(b.view(), "");
}

TEST(BufferTest, CopyOwnsIndependentBytes) {
  std::string src = "hello world";
  Buffer b = Buffer::Copy(src.data(), src.size());
  src[0] = 'J';  // mutating the source must not change the copy
  EXPECT_EQ(b.ToString(), "hello world");
  EXPECT_NE(static_cast<const void*>(b.data()), static_cast<const void*>(src.data()));
  EXPECT_NE(b.holder(), nullptr);
  EXPECT_EQ(Buffer::CopyString("abc").ToString(), "abc");
}

TEST(BufferTest, CopyOfZeroBytes) {
  Buffer b = Buffer::Copy(nullptr, 0);
  EXPECT_TRUE(b.empty());
  EXPECT_TRUE(b.Equals(Buffer()));
}

TEST(BufferTest, FromStringAndVectorTakeOwnershipWithoutCopy) {
  std::string s(1000, 'x');
  const char* p = s.data();
  Buffer b = Buffer::FromString(std::move(s));
  EXPECT_EQ(b.size(), 1000u);
  EXPECT_EQ(static_cast<const void*>(b.data()), static_cast<const void*>(p));

  std::vector<uint8_t> v(64, 7);
  const uint8_t* vp = v.data();
  Buffer bv = Buffer::FromVector(std::move(v));
  EXPECT_EQ(bv.data(), vp);
  EXPECT_EQ(bv.size(), 64u);
  EXPECT_EQ(bv.data()[63], 7);
}

TEST(BufferTest, WrapKeepsHolderAlive) {
  auto owner = std::make_shared<std::string>("payload bytes");
  std::weak_ptr<std::string> weak = owner;
  Buffer b = Buffer::Wrap(owner->data(), owner->size(), owner);
  owner.reset();
  EXPECT_FALSE(weak.expired()) << "the wrapped buffer must keep its holder alive";
  EXPECT_EQ(b.ToString(), "payload bytes");
  b = Buffer();
  EXPECT_TRUE(weak.expired()) << "dropping the last buffer must release the holder";
}

TEST(BufferTest, SliceKeepsParentAlive) {
  auto owner = std::make_shared<std::string>("0123456789");
  std::weak_ptr<std::string> weak = owner;
  Buffer slice;
  {
    Buffer parent = Buffer::Wrap(owner->data(), owner->size(), owner);
    owner.reset();
    slice = parent.Slice(3, 4);
  }
  EXPECT_FALSE(weak.expired());
  EXPECT_EQ(slice.ToString(), "3456");
  EXPECT_EQ(slice.size(), 4u);
  Buffer sub = slice.Slice(1, 2);  // slice of a slice
  slice = Buffer();
  EXPECT_FALSE(weak.expired());
  EXPECT_EQ(sub.ToString(), "45");
  sub = Buffer();
  EXPECT_TRUE(weak.expired());
}

TEST(BufferTest, SliceOfCopySurvivesParent) {
  Buffer slice;
  {
    Buffer parent = Buffer::CopyString("abcdefgh");
    slice = parent.Slice(2, 3);
    EXPECT_EQ(slice.data(), parent.data() + 2);  // no copy
  }
  EXPECT_EQ(slice.ToString(), "cde");  // ASan would flag a dangling view
  EXPECT_TRUE(Buffer::CopyString("ab").Slice(2, 0).empty());
}

TEST(BufferTest, BorrowHoldsNothing) {
  char bytes[] = "borrowed";
  Buffer b = Buffer::Borrow(bytes, 8);
  EXPECT_EQ(b.holder(), nullptr);
  EXPECT_EQ(static_cast<const void*>(b.data()), static_cast<const void*>(bytes));
  EXPECT_EQ(b.ToString(), "borrowed");
}

TEST(BufferTest, EqualsComparesBytes) {
  Buffer a = Buffer::CopyString("same");
  Buffer b = Buffer::FromString("same");
  Buffer c = Buffer::CopyString("diff");
  Buffer d = Buffer::CopyString("sam");
  EXPECT_TRUE(a.Equals(b));
  EXPECT_FALSE(a.Equals(c));
  EXPECT_FALSE(a.Equals(d));
}

TEST(MutableBufferTest, AllocateIsAlignedAndFreezeDoesNotCopy) {
  ASSERT_OK_AND_ASSIGN(MutableBuffer mb, MutableBuffer::Allocate(100));
  EXPECT_EQ(mb.size(), 100u);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(mb.mutable_data()) % 64, 0u);
  std::memset(mb.mutable_data(), 0xab, 100);
  uint8_t* p = mb.mutable_data();
  Buffer b = std::move(mb).Freeze();
  EXPECT_EQ(b.data(), p);
  EXPECT_EQ(b.size(), 100u);
  EXPECT_EQ(b.data()[99], 0xab);
  Buffer s = b.Slice(10, 10);
  b = Buffer();
  EXPECT_EQ(s.data()[0], 0xab);  // the slice keeps the allocation alive
}

TEST(MutableBufferTest, ZeroSize) {
  ASSERT_OK_AND_ASSIGN(MutableBuffer mb, MutableBuffer::Allocate(0));
  Buffer b = std::move(mb).Freeze();
  EXPECT_EQ(b.size(), 0u);
}

TEST(MutableBufferTest, AFreedLargeBufferIsReusedForTheSameSize) {
  if (GetBufferCacheStats().limit_bytes < (64u << 20))
    GTEST_SKIP() << "TQDS_BUFFER_CACHE_MB is set low";
  constexpr size_t kSize = (32u << 20) + 100;  // not a whole number of pages
  uint8_t* where = nullptr;
  {
    ASSERT_OK_AND_ASSIGN(MutableBuffer mb, MutableBuffer::Allocate(kSize));
    std::memset(mb.mutable_data(), 0x5a, kSize);
    where = mb.mutable_data();
    Buffer frozen = std::move(mb).Freeze();
    EXPECT_EQ(frozen.data(), where);
  }  // freed: the mapping goes to the cache
  const BufferCacheStats before = GetBufferCacheStats();
  EXPECT_GE(before.cached_bytes, kSize);
  ASSERT_OK_AND_ASSIGN(MutableBuffer again, MutableBuffer::Allocate(kSize));
  EXPECT_EQ(again.mutable_data(), where);
  EXPECT_EQ(GetBufferCacheStats().hits, before.hits + 1);
  std::memset(again.mutable_data(), 0x11, kSize);  // all of it is writable
  // A much larger request does not take a smaller mapping.
  ASSERT_OK_AND_ASSIGN(MutableBuffer bigger, MutableBuffer::Allocate(2 * kSize));
  EXPECT_NE(bigger.mutable_data(), where);
  std::memset(bigger.mutable_data(), 0x22, 2 * kSize);
}

uint8_t* MapForTest(size_t n) {
  void* p = ::mmap(nullptr, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  EXPECT_NE(p, MAP_FAILED);
  return static_cast<uint8_t*>(p);
}

TEST(MappingCacheTest, TakesTheSmallestFitWithinAnEighth) {
  constexpr size_t kMiB = 1u << 20;
  internal::MappingCache cache(64 * kMiB);
  uint8_t* a = MapForTest(8 * kMiB);
  uint8_t* b = MapForTest(9 * kMiB);
  cache.Give(b, 9 * kMiB);
  cache.Give(a, 8 * kMiB);
  size_t mapped = 0;
  EXPECT_EQ(cache.Take(10 * kMiB, &mapped), nullptr);  // nothing is large enough
  EXPECT_EQ(cache.Take(8 * kMiB, &mapped), a);         // exact, though b fits too
  EXPECT_EQ(mapped, 8 * kMiB);
  EXPECT_EQ(cache.Take(6 * kMiB, &mapped), nullptr);  // b is more than 1/8 too large
  EXPECT_EQ(cache.Take(8 * kMiB + 4096, &mapped), b);
  EXPECT_EQ(mapped, 9 * kMiB);
  const BufferCacheStats st = cache.Stats();
  EXPECT_EQ(st.hits, 2u);
  EXPECT_EQ(st.misses, 2u);
  EXPECT_EQ(st.cached_bytes, 0u);
  ::munmap(a, 8 * kMiB);
  ::munmap(b, 9 * kMiB);
}

TEST(MappingCacheTest, HoldsAtMostItsLimitAndDropsTheOldestFirst) {
  constexpr size_t kMiB = 1u << 20;
  internal::MappingCache cache(20 * kMiB);
  uint8_t* old = MapForTest(8 * kMiB);
  uint8_t* mid = MapForTest(8 * kMiB);
  uint8_t* young = MapForTest(8 * kMiB);
  cache.Give(old, 8 * kMiB);
  cache.Give(mid, 8 * kMiB);
  cache.Give(young, 8 * kMiB);  // 24 MiB > 20: `old` is unmapped
  EXPECT_EQ(cache.Stats().cached_bytes, 16 * kMiB);
  size_t mapped = 0;
  uint8_t* first = cache.Take(8 * kMiB, &mapped);
  uint8_t* second = cache.Take(8 * kMiB, &mapped);
  EXPECT_TRUE((first == mid && second == young) || (first == young && second == mid));
  EXPECT_EQ(cache.Take(8 * kMiB, &mapped), nullptr);
  // One mapping over the limit is never kept.
  cache.Give(MapForTest(32 * kMiB), 32 * kMiB);
  EXPECT_EQ(cache.Stats().cached_bytes, 0u);
  cache.Give(first, 8 * kMiB);
  cache.Give(second, 8 * kMiB);
  cache.Trim();
  EXPECT_EQ(cache.Stats().cached_bytes, 0u);
  EXPECT_EQ(cache.Take(8 * kMiB, &mapped), nullptr);
}

// StreamCopy, and StreamCopyUnfenced (+ StreamFence) at sizes below a
// cache line too, where the unaligned head is the whole copy.
class StreamCopyTest : public ::testing::TestWithParam<bool> {};

TEST_P(StreamCopyTest, MatchesMemcpyAtEverySizeAndAlignment) {
  std::vector<uint8_t> src(kStreamCopyMin * 3 + 256);
  for (size_t i = 0; i < src.size(); ++i) src[i] = static_cast<uint8_t>(i * 131 + 7);
  for (size_t n : {size_t{0}, size_t{1}, size_t{2}, size_t{62}, size_t{63}, size_t{64}, size_t{65}, size_t{130},
                   size_t{2048}, kStreamCopyMin - 1, kStreamCopyMin, kStreamCopyMin + 1, kStreamCopyMin * 2 + 77,
                   kStreamCopyMin * 3}) {
    for (size_t dst_off : {0, 1, 16, 62, 63}) {
      for (size_t src_off : {0, 5, 64}) {
        std::vector<uint8_t> dst(n + 128, 0xee);
        if (GetParam()) {
          StreamCopyUnfenced(dst.data() + dst_off, src.data() + src_off, n);
          StreamFence();
        } else {
          StreamCopy(dst.data() + dst_off, src.data() + src_off, n);
        }
        ASSERT_EQ(std::memcmp(dst.data() + dst_off, src.data() + src_off, n), 0)
            << "n=" << n << " dst_off=" << dst_off << " src_off=" << src_off;
        // Nothing outside [dst_off, dst_off + n) is touched.
        for (size_t i = 0; i < dst_off; ++i) ASSERT_EQ(dst[i], 0xee);
        for (size_t i = dst_off + n; i < dst.size(); ++i) ASSERT_EQ(dst[i], 0xee);
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Fenced, StreamCopyTest, ::testing::Values(false, true),
                         [](const auto& info) { return info.param ? "Unfenced" : "StreamCopy"; });

}  // namespace
}  // namespace tqds
