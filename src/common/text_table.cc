// Plain-text tables. See text_table.h.
#include "common/text_table.h"

#include <algorithm>
#include <cstdio>
#include <iterator>

namespace tqds {

std::string TextTable::Render() const {
  std::vector<size_t> width(head.size(), 0);
  auto widen = [&](const std::vector<std::string>& r) {
    for (size_t c = 0; c < r.size() && c < width.size(); ++c) {
      if (c + 1 < r.size() || r.size() == head.size()) width[c] = std::max(width[c], r[c].size());
    }
  };
  widen(head);
  for (const auto& r : rows) widen(r);
  auto line = [&](const std::vector<std::string>& r) {
    std::string out;
    for (size_t c = 0; c < r.size(); ++c) {
      const bool last = c + 1 == r.size();
      const size_t w = c < width.size() ? width[c] : 0;
      const std::string pad(r[c].size() < w ? w - r[c].size() : 0, ' ');
      if (c > 0) out += "  ";
      const bool right_aligned = c < right.size() && right[c];
      out += right_aligned ? pad + r[c] : (last ? r[c] : r[c] + pad);
    }
    while (!out.empty() && out.back() == ' ') out.pop_back();
    return out + "\n";
  };
  std::string out = line(head);
  for (const auto& r : rows) out += line(r);
  return out;
}

std::string HumanBytes(uint64_t bytes) {
  static const char* const kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
  if (bytes < 1024) return std::to_string(bytes) + " B";
  double v = static_cast<double>(bytes);
  size_t u = 0;
  while (v >= 1024 && u + 1 < std::size(kUnits)) {
    v /= 1024;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.1f %s", v, kUnits[u]);
  return buf;
}

}  // namespace tqds
