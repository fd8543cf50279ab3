// PositionMap: a partition's global index -> position map, a window of
// slots while the indexes lie close together, a hash table otherwise; it
// must answer as a plain map would whatever the order of the indexes.
#include <gtest/gtest.h>

#include <cstdint>
#include <map>
#include <random>
#include <vector>

#include "queue/controller_state.h"

namespace tq::internal {
namespace {

// Every index of `oracle`, and a few around each, is found as the oracle says.
void ExpectSame(const PositionMap& m, const std::map<int64_t, size_t>& oracle) {
  ASSERT_EQ(m.size(), oracle.size());
  EXPECT_EQ(m.empty(), oracle.empty());
  for (const auto& [gi, pos] : oracle) {
    ASSERT_EQ(m.Find(gi), pos) << "index " << gi;
    for (int64_t d : {-1, 1}) {
      int64_t near = 0;
      if (__builtin_add_overflow(gi, d, &near)) continue;  // past INT64_MIN or INT64_MAX
      auto it = oracle.find(near);
      ASSERT_EQ(m.Find(near), it == oracle.end() ? PositionMap::kNone : it->second) << "index " << near;
    }
  }
}

// Enters [first, end) at positions equal to the indexes, in both.
void SetRun(PositionMap& m, std::map<int64_t, size_t>& oracle, int64_t first, int64_t end) {
  for (int64_t gi = first; gi < end; ++gi) {
    m.Set(gi, static_cast<size_t>(gi));
    oracle[gi] = static_cast<size_t>(gi);
  }
}

TEST(PositionMapTest, AscendingRunsAreFoundAndErased) {
  PositionMap m;
  std::map<int64_t, size_t> oracle;
  for (int64_t gi = 100; gi < 100 + 16384; ++gi) {
    m.Set(gi, oracle.size());
    oracle[gi] = oracle.size();
  }
  ExpectSame(m, oracle);
  EXPECT_EQ(m.Find(99), PositionMap::kNone);
  EXPECT_EQ(m.Find(-5), PositionMap::kNone);
  EXPECT_EQ(m.Find(INT64_MAX), PositionMap::kNone);
  EXPECT_EQ(m.Find(INT64_MIN), PositionMap::kNone);
  for (int64_t gi = 100; gi < 100 + 16384; gi += 3) {
    ASSERT_TRUE(m.Erase(gi));
    ASSERT_FALSE(m.Erase(gi)) << "erased twice";
    oracle.erase(gi);
  }
  ExpectSame(m, oracle);
  m.Set(105, 7);  // moved
  oracle[105] = 7;
  ExpectSame(m, oracle);
}

TEST(PositionMapTest, DescendingAndInterleavedIndexesStayExact) {
  PositionMap m;
  std::map<int64_t, size_t> oracle;
  for (int64_t gi = 5000; gi >= 0; --gi) {  // below the window each time
    m.Set(gi, static_cast<size_t>(5000 - gi));
    oracle[gi] = static_cast<size_t>(5000 - gi);
  }
  ExpectSame(m, oracle);
  // Two partitions' runs interleaved: every other index is this one's.
  PositionMap half;
  std::map<int64_t, size_t> half_oracle;
  for (int64_t gi = 0; gi < 20000; gi += 2) {
    half.Set(gi, half_oracle.size());
    half_oracle[gi] = half_oracle.size();
  }
  ExpectSame(half, half_oracle);
}

TEST(PositionMapTest, FarIndexesNegativeIndexesAndHugePositionsMoveToATable) {
  PositionMap m;
  std::map<int64_t, size_t> oracle;
  SetRun(m, oracle, 0, 10);
  m.Set(INT64_MAX, 10);  // far above: the window would span 2^63 slots
  oracle[INT64_MAX] = 10;
  m.Set(-7, 11);
  oracle[-7] = 11;
  m.Set(3, size_t{1} << 40);  // a position that 32 bits do not hold
  oracle[3] = size_t{1} << 40;
  ExpectSame(m, oracle);
  for (const auto& [gi, pos] : std::map<int64_t, size_t>(oracle)) {
    ASSERT_TRUE(m.Erase(gi));
    oracle.erase(gi);
    ExpectSame(m, oracle);
  }
  // Emptied: a window again, starting anywhere.
  m.Set(1000000, 0);
  oracle[1000000] = 0;
  ExpectSame(m, oracle);
  PositionMap neg;
  neg.Set(INT64_MIN, 1);  // negative first: a table from the start
  EXPECT_EQ(neg.Find(INT64_MIN), 1u);
  EXPECT_EQ(neg.Find(INT64_MIN + 1), PositionMap::kNone);
}

TEST(PositionMapTest, RemapAndShrinkKeepEveryEntry) {
  PositionMap m;
  std::map<int64_t, size_t> oracle;
  SetRun(m, oracle, 0, 9000);
  for (int64_t gi = 0; gi < 9000; ++gi) {
    if (gi < 2000 || gi % 5 == 0 || gi > 8000) {
      m.Erase(gi);
      oracle.erase(gi);
    }
  }
  // Compaction: positions renumbered densely, in order.
  std::map<size_t, size_t> moved;
  for (auto& [gi, pos] : oracle) moved[pos] = 0;
  size_t next = 0;
  for (auto& [old_pos, new_pos] : moved) new_pos = next++;
  m.Remap([&](size_t pos) { return moved.at(pos); });
  for (auto& [gi, pos] : oracle) pos = moved.at(pos);
  m.Shrink();
  ExpectSame(m, oracle);
  EXPECT_EQ(m.Find(1999), PositionMap::kNone);
  EXPECT_EQ(m.Find(8001), PositionMap::kNone);
}

TEST(PositionMapTest, RandomOperationsAgreeWithAMap) {
  std::mt19937_64 rng(12345);
  for (int round = 0; round < 20; ++round) {
    PositionMap m;
    std::map<int64_t, size_t> oracle;
    // Mostly indexes near a moving base, sometimes far ones.
    int64_t base = static_cast<int64_t>(rng() % 100000);
    for (int op = 0; op < 4000; ++op) {
      const uint64_t r = rng() % 100;
      int64_t gi = base + static_cast<int64_t>(rng() % 3000);
      if (r < 2) gi = static_cast<int64_t>(rng() >> 1);  // anywhere >= 0
      if (r == 2) gi = -static_cast<int64_t>(rng() % 1000) - 1;
      if (r < 60) {
        const size_t pos = rng() % 50000;
        m.Set(gi, pos);
        oracle[gi] = pos;
      } else if (r < 95) {
        ASSERT_EQ(m.Erase(gi), oracle.erase(gi) == 1);
      } else {
        base += static_cast<int64_t>(rng() % 2000);
      }
      if (op % 500 == 0) m.Shrink();
    }
    ExpectSame(m, oracle);
    for (auto it = oracle.begin(); it != oracle.end();) {
      ASSERT_TRUE(m.Erase(it->first));
      it = oracle.erase(it);
    }
    ExpectSame(m, oracle);
  }
}

}  // namespace
}  // namespace tq::internal
