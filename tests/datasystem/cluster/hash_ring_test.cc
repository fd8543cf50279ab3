// HashRing: fixed hash (golden values from an independent implementation),
// determinism, balance, and stability when nodes join and leave.
#include "datasystem/cluster/hash_ring.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <random>

#include "common/test_util.h"

namespace ds::cluster {
namespace {

std::vector<std::string> Nodes(int n) {
  std::vector<std::string> out;
  for (int i = 1; i <= n; ++i) out.push_back("10.0.0." + std::to_string(i) + ":31501");
  return out;
}

std::vector<std::string> Keys(int n) {
  std::vector<std::string> out;
  for (int i = 0; i < n; ++i)
    out.push_back("partition_" + std::to_string(i % 7) + "/" + std::to_string(i) + "@f");
  return out;
}

TEST(HashRingTest, HashIsTheFixedAlgorithm) {
  // Computed by a separate Python implementation of FNV-1a 64 + fmix64.
  EXPECT_EQ(HashRing::Hash64(""), 0xefd01f60ba992926ULL);
  EXPECT_EQ(HashRing::Hash64("a"), 0x82a2a958a9bece5bULL);
  EXPECT_EQ(HashRing::Hash64("127.0.0.1:31501#0"), 0x844db0b69e63bf43ULL);
  EXPECT_EQ(HashRing::Hash64("partition/7@field"), 0x5febbd89b369b4bbULL);
}

TEST(HashRingTest, OwnersAreDeterministicAndOrderFree) {
  HashRing ring({"10.0.0.1:31501", "10.0.0.2:31501", "10.0.0.3:31501"});
  // Golden owners (same Python model): a change here moves keys between builds.
  EXPECT_EQ(*ring.Owner("key-0"), "10.0.0.3:31501");
  EXPECT_EQ(*ring.Owner("key-1"), "10.0.0.1:31501");
  EXPECT_EQ(*ring.Owner("sample/42@input_ids"), "10.0.0.1:31501");

  HashRing shuffled({"10.0.0.3:31501", "10.0.0.1:31501", "10.0.0.2:31501", "10.0.0.1:31501"});
  EXPECT_EQ(shuffled.size(), 3u);
  for (const auto& k : Keys(5000)) EXPECT_EQ(*ring.Owner(k), *shuffled.Owner(k)) << k;
}

TEST(HashRingTest, EmptyRingIsUnavailable) {
  HashRing ring({});
  EXPECT_STATUS(ring.Owner("k"), kUnavailable, "no live datasystem workers");
  EXPECT_TRUE(ring.Owners("k", 3).empty());
}

TEST(HashRingTest, BalancedWithinBounds) {
  const int kNodes = 8;
  const auto keys = Keys(200000);
  HashRing ring(Nodes(kNodes));
  std::map<std::string, int> count;
  for (const auto& k : keys) ++count[*ring.Owner(k)];
  ASSERT_EQ(count.size(), static_cast<size_t>(kNodes));
  double fair = static_cast<double>(keys.size()) / kNodes;
  for (const auto& [node, c] : count) {
    EXPECT_GT(c, fair * 0.75) << node;
    EXPECT_LT(c, fair * 1.25) << node;
  }
}

TEST(HashRingTest, JoinMovesOnlyKeysToTheNewNode) {
  const auto keys = Keys(100000);
  auto nodes = Nodes(4);
  HashRing before(nodes);
  nodes.push_back("10.0.0.99:31501");
  HashRing after(nodes);
  size_t moved = 0;
  for (const auto& k : keys) {
    std::string a = *before.Owner(k), b = *after.Owner(k);
    if (a != b) {
      ++moved;
      EXPECT_EQ(b, "10.0.0.99:31501") << k << " moved between old nodes";
    }
  }
  double frac = static_cast<double>(moved) / keys.size();
  EXPECT_GT(frac, 0.2 * 0.7);  // ideal 1/5
  EXPECT_LT(frac, 0.2 * 1.3);
}

TEST(HashRingTest, LeaveMovesOnlyTheLeaversKeys) {
  const auto keys = Keys(100000);
  auto nodes = Nodes(5);
  HashRing before(nodes);
  const std::string gone = nodes[2];
  nodes.erase(nodes.begin() + 2);
  HashRing after(nodes);
  size_t moved = 0;
  for (const auto& k : keys) {
    std::string a = *before.Owner(k), b = *after.Owner(k);
    if (a != gone) {
      EXPECT_EQ(a, b) << k;
    } else {
      ++moved;
      EXPECT_NE(b, gone);
    }
  }
  double frac = static_cast<double>(moved) / keys.size();
  EXPECT_GT(frac, 0.2 * 0.7);
  EXPECT_LT(frac, 0.2 * 1.3);
}

TEST(HashRingTest, OwnersAreDistinctAndStartWithTheOwner) {
  HashRing ring(Nodes(5));
  for (const auto& k : Keys(1000)) {
    auto owners = ring.Owners(k, 3);
    ASSERT_EQ(owners.size(), 3u);
    EXPECT_EQ(owners[0], *ring.Owner(k));
    std::sort(owners.begin(), owners.end());
    EXPECT_EQ(std::unique(owners.begin(), owners.end()), owners.end());
  }
  EXPECT_EQ(ring.Owners("k", 99).size(), 5u);
}

TEST(HashRingTest, OwnerIndexesAreTheOwnersWithoutAllocating) {
  for (int nodes : {1, 2, 3, 8, 12}) {
    HashRing ring(Nodes(nodes));
    for (const auto& k : Keys(500)) {
      for (size_t n : {size_t{1}, size_t{2}, size_t{3}, HashRing::kMaxOwners, size_t{12}}) {
        uint32_t idx[HashRing::kMaxOwners];
        const size_t found = ring.OwnerIndexes(k, n, idx);
        const auto owners = ring.Owners(k, n);
        ASSERT_EQ(owners.size(), std::min<size_t>(n, nodes)) << k << " n=" << n;
        ASSERT_EQ(found, std::min({n, HashRing::kMaxOwners, size_t(nodes)})) << k << " n=" << n;
        // Beyond kMaxOwners, Owners goes on in ring order after the same first ones.
        for (size_t j = 0; j < found; ++j) {
          EXPECT_EQ(ring.nodes()[idx[j]], owners[j]) << k << " n=" << n;
        }
        auto sorted = owners;
        std::sort(sorted.begin(), sorted.end());
        EXPECT_EQ(std::unique(sorted.begin(), sorted.end()), sorted.end()) << k << " n=" << n;
      }
    }
  }
}

}  // namespace
}  // namespace ds::cluster
