// Status, Result<T> and the two error-passing macros.
#include <gtest/gtest.h>

#include <memory>
#include <set>
#include <string>

#include "common/test_util.h"
#include "tqds/status.h"

namespace tqds {
namespace {

TEST(StatusTest, DefaultIsOk) {
  Status s;
  EXPECT_TRUE(s.ok());
  EXPECT_EQ(s.code(), StatusCode::kOk);
  EXPECT_EQ(s.ToString(), "OK");
  EXPECT_TRUE(Status::OK().ok());
}

TEST(StatusTest, FactoriesSetCodeAndConcatenateMessage) {
  Status s = Status::NotFound("key '", std::string("x"), "' (", 42, ") not found");
  EXPECT_FALSE(s.ok());
  EXPECT_TRUE(s.IsNotFound());
  EXPECT_FALSE(s.IsInvalid());
  EXPECT_EQ(s.message(), "key 'x' (42) not found");
  EXPECT_EQ(s.ToString(), std::string(StatusCodeName(StatusCode::kNotFound)) + ": key 'x' (42) not found");

  EXPECT_TRUE(Status::Invalid("a").IsInvalid());
  EXPECT_TRUE(Status::AlreadyExists("a").IsAlreadyExists());
  EXPECT_TRUE(Status::OutOfSpace("a").IsOutOfSpace());
  EXPECT_TRUE(Status::Timeout("a").IsTimeout());
  EXPECT_TRUE(Status::IOError("a").IsIOError());
  EXPECT_TRUE(Status::Unavailable("a").IsUnavailable());
  EXPECT_TRUE(Status::TypeError("a").IsTypeError());
  EXPECT_EQ(Status::Internal("a").code(), StatusCode::kInternal);
  EXPECT_EQ(Status::Cancelled("a").code(), StatusCode::kCancelled);
}

TEST(StatusTest, CodesAreWireStable) {
  // Renumbering breaks the wire; these values are documented.
  EXPECT_EQ(static_cast<int>(StatusCode::kOk), 0);
  EXPECT_EQ(static_cast<int>(StatusCode::kInvalid), 1);
  EXPECT_EQ(static_cast<int>(StatusCode::kNotFound), 2);
  EXPECT_EQ(static_cast<int>(StatusCode::kOutOfSpace), 4);
  EXPECT_EQ(static_cast<int>(StatusCode::kTimeout), 5);
  EXPECT_EQ(static_cast<int>(StatusCode::kUnavailable), 7);
  EXPECT_EQ(static_cast<int>(StatusCode::kCancelled), 10);
  EXPECT_EQ(static_cast<int>(StatusCode::kPermissionDenied), 11);
}

TEST(StatusTest, CodeNamesAreDistinct) {
  std::set<std::string> names;
  for (int c = 0; c <= static_cast<int>(kLastStatusCode); ++c) {
    const char* n = StatusCodeName(static_cast<StatusCode>(c));
    ASSERT_NE(n, nullptr);
    EXPECT_TRUE(names.insert(n).second) << "duplicate name " << n;
  }
}

TEST(StatusTest, WithContextPrefixesAndKeepsCode) {
  Status s = Status::OutOfSpace("unit full").WithContext("put");
  EXPECT_TRUE(s.IsOutOfSpace());
  EXPECT_EQ(s.message(), "put: unit full");
  EXPECT_TRUE(Status::OK().WithContext("ctx").ok());
  EXPECT_EQ(Status::OK().WithContext("ctx").message(), "");
}

TEST(ResultTest, HoldsValueOrStatus) {
  Result<int> ok = 7;
  ASSERT_TRUE(ok.ok());
  EXPECT_EQ(*ok, 7);
  EXPECT_EQ(ok.ValueOr(3), 7);

  Result<int> bad = Status::NotFound("nope");
  ASSERT_FALSE(bad.ok());
  EXPECT_TRUE(bad.status().IsNotFound());
  EXPECT_EQ(bad.ValueOr(3), 3);
}

TEST(ResultTest, OkStatusWithoutValueBecomesInternalError) {
  Result<int> r = Status::OK();
  EXPECT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInternal);
}

TEST(ResultTest, MoveOnlyValues) {
  Result<std::unique_ptr<int>> r = std::make_unique<int>(5);
  ASSERT_TRUE(r.ok());
  std::unique_ptr<int> p = r.MoveValue();
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(*p, 5);
}

// --- macros -----------------------------------------------------------------

int g_after_calls = 0;

Status ReturnNotOk(Status inner) {
  TQDS_RETURN_NOT_OK(inner);
  ++g_after_calls;
  return Status::OK();
}

Result<int> Half(int x) {
  if (x % 2 != 0) return Status::Invalid("odd: ", x);
  return x / 2;
}

Result<int> Quarter(int x) {
  TQDS_ASSIGN_OR_RETURN(int h, Half(x));
  TQDS_ASSIGN_OR_RETURN(int q, Half(h));  // two uses in one scope must compile
  return q;
}

Status AssignExisting(int x, int* out) {
  int v = 0;
  TQDS_ASSIGN_OR_RETURN(v, Half(x));
  *out = v;
  return Status::OK();
}

TEST(MacroTest, ReturnNotOkStopsAtFirstError) {
  g_after_calls = 0;
  EXPECT_TRUE(ReturnNotOk(Status::OK()).ok());
  EXPECT_EQ(g_after_calls, 1);
  Status s = ReturnNotOk(Status::Timeout("late"));
  EXPECT_TRUE(s.IsTimeout());
  EXPECT_EQ(s.message(), "late");
  EXPECT_EQ(g_after_calls, 1);
}

TEST(MacroTest, AssignOrReturnBindsOrPropagates) {
  ASSERT_OK_AND_ASSIGN(int q, Quarter(12));
  EXPECT_EQ(q, 3);
  auto r = Quarter(6);  // 6 -> 3 -> odd
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().message(), "odd: 3");
  EXPECT_STATUS(Quarter(5), kInvalid, "odd: 5");

  int out = -1;
  EXPECT_OK(AssignExisting(8, &out));
  EXPECT_EQ(out, 4);
  out = -1;
  EXPECT_FALSE(AssignExisting(7, &out).ok());
  EXPECT_EQ(out, -1);
}

TEST(MacroTest, AssignOrReturnMovesMoveOnlyValues) {
  auto make = [](bool ok) -> Result<std::unique_ptr<int>> {
    if (!ok) return Status::NotFound("none");
    return std::make_unique<int>(9);
  };
  auto use = [&](bool ok) -> Result<int> {
    TQDS_ASSIGN_OR_RETURN(std::unique_ptr<int> p, make(ok));
    return *p;
  };
  ASSERT_OK_AND_ASSIGN(int v, use(true));
  EXPECT_EQ(v, 9);
  EXPECT_TRUE(use(false).status().IsNotFound());
}

}  // namespace
}  // namespace tqds
