#include "queue/index_pool.h"

#include <algorithm>
#include <iterator>

namespace tq::internal {

void IndexPool::Take(size_t n, std::vector<int64_t>* out) {
  out->reserve(out->size() + n);
  while (n > 0 && !runs_.empty()) {
    auto it = runs_.begin();
    const int64_t first = it->first, end = it->second;
    const int64_t k = static_cast<int64_t>(std::min<size_t>(n, static_cast<size_t>(end - first)));
    for (int64_t i = first; i < first + k; ++i) out->push_back(i);
    n -= static_cast<size_t>(k);
    free_ -= static_cast<size_t>(k);
    runs_.erase(it);
    if (first + k < end) runs_.emplace_hint(runs_.begin(), first + k, end);
  }
  for (; n > 0; --n) out->push_back(next_++);
}

void IndexPool::AddRun(int64_t first, int64_t end) {
  auto after = runs_.upper_bound(first);  // the first run starting after `first`
  std::map<int64_t, int64_t>::iterator it;
  // A run before it that touches or overlaps it is extended.
  if (after != runs_.begin() && std::prev(after)->second >= first) {
    it = std::prev(after);
    if (it->second >= end) return;  // free already
    free_ += static_cast<size_t>(end - it->second);
    it->second = end;
  } else {
    it = runs_.emplace_hint(after, first, end);
    free_ += static_cast<size_t>(end - first);
  }
  // Runs it now reaches are merged into it.
  for (auto next = std::next(it); next != runs_.end() && next->first <= it->second;) {
    if (next->second > it->second) {
      free_ += static_cast<size_t>(next->second - it->second);
      it->second = next->second;
    }
    free_ -= static_cast<size_t>(next->second - next->first);
    next = runs_.erase(next);
  }
}

void IndexPool::Give(const std::vector<int64_t>& indexes) {
  if (indexes.empty()) return;
  if (!std::is_sorted(indexes.begin(), indexes.end())) {
    // A clear releases its samples in the order of its keys: a dense range
    // in some order, put in order through a bitmap over the range (a sort
    // of 16384 indexes took as long as the rest of the release).
    const auto [lo, hi] = std::minmax_element(indexes.begin(), indexes.end());
    const int64_t first = *lo;
    const uint64_t range = static_cast<uint64_t>(*hi - first) + 1;
    if (range <= 8 * static_cast<uint64_t>(indexes.size())) {
      std::vector<bool> in(range);
      for (int64_t i : indexes) in[static_cast<size_t>(i - first)] = true;
      for (uint64_t r = 0; r < range;) {
        if (!in[r]) {
          ++r;
          continue;
        }
        uint64_t end = r + 1;
        while (end < range && in[end]) ++end;
        AddRun(first + static_cast<int64_t>(r), first + static_cast<int64_t>(end));
        r = end;
      }
      return;
    }
    std::vector<int64_t> sorted = indexes;
    std::sort(sorted.begin(), sorted.end());
    GiveSorted(sorted);
    return;
  }
  GiveSorted(indexes);
}

void IndexPool::GiveSorted(const std::vector<int64_t>& indexes) {
  for (size_t i = 0; i < indexes.size();) {
    size_t j = i + 1;
    while (j < indexes.size() && indexes[j] <= indexes[j - 1] + 1) ++j;
    AddRun(indexes[i], indexes[j - 1] + 1);
    i = j;
  }
}

std::vector<int64_t> IndexPool::FreeAscending() const {
  std::vector<int64_t> out;
  out.reserve(free_);
  for (const auto& [first, end] : runs_) {
    for (int64_t i = first; i < end; ++i) out.push_back(i);
  }
  return out;
}

void IndexPool::Reset(std::vector<int64_t> free, int64_t next) {
  runs_.clear();
  free_ = 0;
  next_ = next;
  Give(free);
}

}  // namespace tq::internal
