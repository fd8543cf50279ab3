// TextTable and HumanBytes (the command-line tools' tables).
#include "common/text_table.h"

#include <gtest/gtest.h>

namespace tqds {
namespace {

TEST(TextTableTest, PadsColumnsAlignsNumbersAndLeavesNoTrailingSpaces) {
  TextTable t;
  t.head = {"name", "n", "note"};
  t.right = {false, true, false};
  t.rows = {{"a", "1234", "x"}, {"longer", "5", ""}};
  EXPECT_EQ(t.Render(),
            "name       n  note\n"
            "a       1234  x\n"
            "longer     5\n");
}

TEST(TextTableTest, AShortRowsLastCellNeitherPadsNorWidens) {
  TextTable t;
  t.head = {"worker", "state", "pid"};
  t.right = {false, false, true};
  t.rows = {{"w1", "running", "7"}, {"w2", "no answer in 2000 ms (connection refused)"}};
  EXPECT_EQ(t.Render(),
            "worker  state    pid\n"
            "w1      running    7\n"
            "w2      no answer in 2000 ms (connection refused)\n");
}

TEST(TextTableTest, HumanBytes) {
  EXPECT_EQ(HumanBytes(0), "0 B");
  EXPECT_EQ(HumanBytes(1023), "1023 B");
  EXPECT_EQ(HumanBytes(1536), "1.5 KiB");
  EXPECT_EQ(HumanBytes(4ull << 20), "4.0 MiB");
  EXPECT_EQ(HumanBytes(2ull << 30), "2.0 GiB");
  EXPECT_EQ(HumanBytes(~0ull), "16384.0 PiB");  // the largest unit is PiB
}

}  // namespace
}  // namespace tqds
