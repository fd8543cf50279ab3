// Plain-text tables for the command-line tools (`tq status`, `dscli status`):
// columns padded to their widest cell, two spaces apart.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace tqds {

struct TextTable {
  std::vector<std::string> head;
  std::vector<std::vector<std::string>> rows;  // a row may be shorter than head
  std::vector<bool> right;                     // per column: right-aligned (numbers)
  // The table, one line per row (the head first), each ending in '\n'; no
  // trailing spaces. A cell that is the last of a short row is not padded
  // and does not widen its column.
  std::string Render() const;
};

// 1536 -> "1.5 KiB"; below 1 KiB in bytes ("512 B").
std::string HumanBytes(uint64_t bytes);

}  // namespace tqds
