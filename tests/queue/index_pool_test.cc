// IndexPool: released global indexes come back lowest first, as runs.
#include "queue/index_pool.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <set>
#include <vector>

namespace tq::internal {
namespace {

std::vector<int64_t> Take(IndexPool& pool, size_t n) {
  std::vector<int64_t> out;
  pool.Take(n, &out);
  return out;
}

TEST(IndexPoolTest, NewIndexesWhenNothingIsFree) {
  IndexPool pool;
  EXPECT_EQ(Take(pool, 3), (std::vector<int64_t>{0, 1, 2}));
  EXPECT_EQ(Take(pool, 1), (std::vector<int64_t>{3}));
  EXPECT_EQ(pool.next(), 4);
  EXPECT_EQ(pool.free_count(), 0u);
}

TEST(IndexPoolTest, ReleasedIndexesComeBackLowestFirstThenNewOnes) {
  IndexPool pool;
  Take(pool, 10);
  pool.Give({7, 2, 3, 9});
  EXPECT_EQ(pool.free_count(), 4u);
  EXPECT_EQ(pool.FreeAscending(), (std::vector<int64_t>{2, 3, 7, 9}));
  EXPECT_EQ(Take(pool, 3), (std::vector<int64_t>{2, 3, 7}));
  EXPECT_EQ(Take(pool, 3), (std::vector<int64_t>{9, 10, 11}));
  EXPECT_EQ(pool.free_count(), 0u);
}

TEST(IndexPoolTest, RunsMergeWhenTheyTouchOrOverlapAndAFreeIndexCountsOnce) {
  IndexPool pool;
  Take(pool, 20);
  pool.Give({5, 6});
  pool.Give({8, 9});
  pool.Give({7});  // joins both runs
  EXPECT_EQ(pool.free_count(), 5u);
  pool.Give({6, 7, 10});  // 6 and 7 are free already
  EXPECT_EQ(pool.free_count(), 6u);
  pool.Give({0, 1, 2, 3, 4, 5, 11, 12});
  EXPECT_EQ(pool.FreeAscending(), (std::vector<int64_t>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}));
  EXPECT_EQ(pool.free_count(), 13u);
  EXPECT_EQ(Take(pool, 2), (std::vector<int64_t>{0, 1}));
  EXPECT_EQ(pool.free_count(), 11u);
}

// Against a std::set as the model: any order of takes and gives.
TEST(IndexPoolTest, MatchesASetUnderRandomTakesAndGives) {
  std::mt19937 rng(7);
  IndexPool pool;
  std::set<int64_t> free, held;
  int64_t next = 0;
  for (int step = 0; step < 3000; ++step) {
    if (rng() % 2 == 0 || held.empty()) {
      const size_t n = rng() % 7;
      std::vector<int64_t> want;
      while (want.size() < n && !free.empty()) {
        want.push_back(*free.begin());
        free.erase(free.begin());
      }
      while (want.size() < n) want.push_back(next++);
      held.insert(want.begin(), want.end());
      ASSERT_EQ(Take(pool, n), want) << "step " << step;
    } else {
      std::vector<int64_t> give;
      for (int64_t i : held) {
        if (rng() % 3 == 0) give.push_back(i);
      }
      std::shuffle(give.begin(), give.end(), rng);
      for (int64_t i : give) {
        held.erase(i);
        free.insert(i);
      }
      pool.Give(give);
    }
    ASSERT_EQ(pool.free_count(), free.size()) << "step " << step;
    ASSERT_EQ(pool.next(), next);
  }
  EXPECT_EQ(pool.FreeAscending(), std::vector<int64_t>(free.begin(), free.end()));
  IndexPool restored;
  restored.Reset({9, 3, 4, 5}, 12);
  EXPECT_EQ(restored.free_count(), 4u);
  EXPECT_EQ(Take(restored, 6), (std::vector<int64_t>{3, 4, 5, 9, 12, 13}));
}

}  // namespace
}  // namespace tq::internal
