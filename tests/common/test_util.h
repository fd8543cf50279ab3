// Test helpers shared by the tq/ds suites: ASSERT_OK-style macros for
// Status and Result<T>, and a deadline-bounded wait for observable conditions.
#pragma once

#include <gtest/gtest.h>

#include <chrono>
#include <functional>
#include <string>
#include <thread>

#include "tqds/status.h"

namespace tqds::testing {

inline const Status& StatusOf(const Status& s) { return s; }
template <typename T>
const Status& StatusOf(const Result<T>& r) {
  return r.status();
}

// Polls `cond` until it holds or `timeout` passes; for conditions that have
// no notification to wait on (e.g. a remote counter). Returns cond().
inline bool Eventually(const std::function<bool()>& cond,
                       std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (cond()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return cond();
}

inline double SecondsSince(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace tqds::testing

#define TQDS_TEST_CONCAT_INNER(a, b) a##b
#define TQDS_TEST_CONCAT(a, b) TQDS_TEST_CONCAT_INNER(a, b)

#define ASSERT_OK(expr)                                                  \
  do {                                                                   \
    const auto& _tqds_t = (expr);                                        \
    const ::tqds::Status& _tqds_s = ::tqds::testing::StatusOf(_tqds_t);  \
    ASSERT_TRUE(_tqds_s.ok()) << #expr << ": " << _tqds_s.ToString();    \
  } while (0)

#define EXPECT_OK(expr)                                                  \
  do {                                                                   \
    const auto& _tqds_t = (expr);                                        \
    const ::tqds::Status& _tqds_s = ::tqds::testing::StatusOf(_tqds_t);  \
    EXPECT_TRUE(_tqds_s.ok()) << #expr << ": " << _tqds_s.ToString();    \
  } while (0)

#define ASSERT_OK_AND_ASSIGN_IMPL(tmp, lhs, rexpr)                      \
  auto tmp = (rexpr);                                                   \
  ASSERT_TRUE(tmp.ok()) << #rexpr << ": " << tmp.status().ToString();   \
  lhs = std::move(tmp).value()

// `ASSERT_OK_AND_ASSIGN(auto x, Foo());`
#define ASSERT_OK_AND_ASSIGN(lhs, rexpr) \
  ASSERT_OK_AND_ASSIGN_IMPL(TQDS_TEST_CONCAT(_tqds_test_res_, __LINE__), lhs, rexpr)

// Asserts a non-OK status of the given code whose message contains `needle`.
#define ASSERT_STATUS(expr, scode, needle)                                              \
  do {                                                                                 \
    const auto& _tqds_t = (expr);                                                      \
    const ::tqds::Status& _tqds_s = ::tqds::testing::StatusOf(_tqds_t);                \
    ASSERT_EQ(_tqds_s.code(), ::tqds::StatusCode::scode) << _tqds_s.ToString();         \
    ASSERT_NE(_tqds_s.message().find(needle), std::string::npos)                       \
        << "message '" << _tqds_s.message() << "' lacks '" << (needle) << "'";         \
  } while (0)

#define EXPECT_STATUS(expr, scode, needle)                                              \
  do {                                                                                 \
    const auto& _tqds_t = (expr);                                                      \
    const ::tqds::Status& _tqds_s = ::tqds::testing::StatusOf(_tqds_t);                \
    EXPECT_EQ(_tqds_s.code(), ::tqds::StatusCode::scode) << _tqds_s.ToString();         \
    EXPECT_NE(_tqds_s.message().find(needle), std::string::npos)                       \
        << "message '" << _tqds_s.message() << "' lacks '" << (needle) << "'";         \
  } while (0)
