// Global indexes of the controller's samples: handed out lowest released
// first, then new ones, and given back when a sample is released.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <vector>

namespace tq::internal {

// The released indexes are kept as runs of consecutive indexes: a cleared
// partition gives back a few long runs, so that taking or giving back n
// indexes costs about n plus a map operation per run (a heap of single
// indexes cost a log(n) sift each: 42 % of a 16384-key put's record
// allocation in the controller's profile).
class IndexPool {
 public:
  // Appends `n` indexes to `out`: released ones, lowest first, then new ones.
  void Take(size_t n, std::vector<int64_t>* out);
  // Gives back indexes, in any order; each must have been taken and not
  // given back since (one that is free already is ignored).
  void Give(const std::vector<int64_t>& indexes);
  size_t free_count() const { return free_; }
  // Indexes handed out so far: every one below is taken or free.
  int64_t next() const { return next_; }
  std::vector<int64_t> FreeAscending() const;
  // The pool of a snapshot: `free` distinct, each in [0, next).
  void Reset(std::vector<int64_t> free, int64_t next);

 private:
  void AddRun(int64_t first, int64_t end);
  void GiveSorted(const std::vector<int64_t>& indexes);

  std::map<int64_t, int64_t> runs_;  // first -> end (exclusive), disjoint and not touching
  size_t free_ = 0;
  int64_t next_ = 0;
};

}  // namespace tq::internal
