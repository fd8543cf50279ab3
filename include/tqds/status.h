// Status and Result<T>: the one error model shared by the queue (tq::) and
// the datasystem (ds::). Thread-compatible value types.
#pragma once

#include <cstdint>
#include <optional>
#include <sstream>
#include <string>
#include <utility>
#include <variant>

namespace tqds {

// Wire-stable codes: never renumber (they cross the wire, docs/wire_format.md).
enum class StatusCode : uint8_t {
  kOk = 0,
  kInvalid = 1,         // bad argument or malformed input
  kNotFound = 2,        // unknown key / partition / sample
  kAlreadyExists = 3,   // set-if-absent on an existing key
  kOutOfSpace = 4,      // capacity exhausted (memory and disk)
  kTimeout = 5,         // a wait ran past its deadline
  kIOError = 6,         // OS / socket / disk failure
  kUnavailable = 7,     // peer not reachable or dead
  kInternal = 8,        // a bug: an invariant broke
  kTypeError = 9,       // wrong dtype / kind
  kCancelled = 10,      // shut down while waiting
  kPermissionDenied = 11,  // credentials missing or refused (transport authentication)
};
// The highest code; decoders refuse anything above it.
inline constexpr StatusCode kLastStatusCode = StatusCode::kPermissionDenied;

const char* StatusCodeName(StatusCode code);

namespace detail {
template <typename... Args>
std::string StrCat(Args&&... args) {
  std::ostringstream out;
  (out << ... << std::forward<Args>(args));
  return out.str();
}
}  // namespace detail

class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(StatusCode code, std::string message) : code_(code), message_(std::move(message)) {}

  static Status OK() { return Status(); }
  template <typename... A> static Status Invalid(A&&... a) { return Make(StatusCode::kInvalid, a...); }
  template <typename... A> static Status NotFound(A&&... a) { return Make(StatusCode::kNotFound, a...); }
  template <typename... A> static Status AlreadyExists(A&&... a) { return Make(StatusCode::kAlreadyExists, a...); }
  template <typename... A> static Status OutOfSpace(A&&... a) { return Make(StatusCode::kOutOfSpace, a...); }
  template <typename... A> static Status Timeout(A&&... a) { return Make(StatusCode::kTimeout, a...); }
  template <typename... A> static Status IOError(A&&... a) { return Make(StatusCode::kIOError, a...); }
  template <typename... A> static Status Unavailable(A&&... a) { return Make(StatusCode::kUnavailable, a...); }
  template <typename... A> static Status Internal(A&&... a) { return Make(StatusCode::kInternal, a...); }
  template <typename... A> static Status TypeError(A&&... a) { return Make(StatusCode::kTypeError, a...); }
  template <typename... A> static Status Cancelled(A&&... a) { return Make(StatusCode::kCancelled, a...); }
  template <typename... A> static Status PermissionDenied(A&&... a) {
    return Make(StatusCode::kPermissionDenied, a...);
  }

  bool ok() const { return code_ == StatusCode::kOk; }
  bool IsInvalid() const { return code_ == StatusCode::kInvalid; }
  bool IsNotFound() const { return code_ == StatusCode::kNotFound; }
  bool IsAlreadyExists() const { return code_ == StatusCode::kAlreadyExists; }
  bool IsOutOfSpace() const { return code_ == StatusCode::kOutOfSpace; }
  bool IsTimeout() const { return code_ == StatusCode::kTimeout; }
  bool IsIOError() const { return code_ == StatusCode::kIOError; }
  bool IsUnavailable() const { return code_ == StatusCode::kUnavailable; }
  bool IsTypeError() const { return code_ == StatusCode::kTypeError; }
  bool IsPermissionDenied() const { return code_ == StatusCode::kPermissionDenied; }

  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }
  // "NotFound: key 'x' not found"
  std::string ToString() const;

  // Returns a copy whose message is prefixed with context: "ctx: message".
  Status WithContext(const std::string& context) const;

 private:
  template <typename... A>
  static Status Make(StatusCode code, A&&... a) {
    return Status(code, detail::StrCat(std::forward<A>(a)...));
  }
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
};

// Holds either a value or a non-OK Status.
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : value_(std::move(value)) {}  // NOLINT: implicit by design
  Result(Status status) : status_(std::move(status)) {  // NOLINT
    if (status_.ok()) status_ = Status::Internal("Result constructed from OK status without a value");
  }

  bool ok() const { return status_.ok(); }
  const Status& status() const { return status_; }
  T& value() & { return *value_; }
  const T& value() const& { return *value_; }
  T&& value() && { return std::move(*value_); }
  T& operator*() & { return *value_; }
  const T& operator*() const& { return *value_; }
  T* operator->() { return &*value_; }
  const T* operator->() const { return &*value_; }
  T ValueOr(T fallback) const& { return ok() ? *value_ : std::move(fallback); }
  // Moves the value out; precondition: ok().
  T MoveValue() { return std::move(*value_); }

 private:
  Status status_;
  std::optional<T> value_;
};

}  // namespace tqds

#define TQDS_CONCAT_INNER(a, b) a##b
#define TQDS_CONCAT(a, b) TQDS_CONCAT_INNER(a, b)

// Returns the Status from the enclosing function when expr is not OK.
#define TQDS_RETURN_NOT_OK(expr)                 \
  do {                                           \
    ::tqds::Status _tqds_st = (expr);            \
    if (!_tqds_st.ok()) return _tqds_st;         \
  } while (0)

#define TQDS_ASSIGN_OR_RETURN_IMPL(tmp, lhs, rexpr) \
  auto tmp = (rexpr);                               \
  if (!tmp.ok()) return tmp.status();               \
  lhs = std::move(tmp).value()

// `TQDS_ASSIGN_OR_RETURN(auto x, Foo());` binds x or returns Foo()'s error.
#define TQDS_ASSIGN_OR_RETURN(lhs, rexpr) \
  TQDS_ASSIGN_OR_RETURN_IMPL(TQDS_CONCAT(_tqds_res_, __LINE__), lhs, rexpr)
