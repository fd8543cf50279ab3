// Python exception types for C++ statuses, and the one function that raises
// them. Every binding calls ThrowIfError/Unwrap with the GIL held.
#pragma once

#include <pybind11/pybind11.h>

#include <optional>
#include <type_traits>

#include "tqds/status.h"

namespace tqds::py_binding {

namespace py = pybind11;

// Creates TQDSError and its subclasses (InvalidArgumentError is also a
// ValueError, NotFoundError a KeyError, TimeoutError_ a TimeoutError,
// UnavailableError a ConnectionError, DTypeError a TypeError, ...).
void InitErrors(py::module_& m);

[[noreturn]] void Throw(const Status& status);
inline void ThrowIfError(const Status& status) {
  if (!status.ok()) Throw(status);
}
template <typename T>
T Unwrap(Result<T> r) {
  if (!r.ok()) Throw(r.status());
  return r.MoveValue();
}

// Runs fn() (returning Status or Result<T>) without the GIL, then raises or
// returns the value with the GIL held again.
template <typename Fn>
auto CallWithoutGil(Fn&& fn) {
  using R = decltype(fn());
  if constexpr (std::is_same_v<R, Status>) {
    Status st;
    {
      py::gil_scoped_release nogil;
      st = fn();
    }
    ThrowIfError(st);
  } else {
    std::optional<R> r;
    {
      py::gil_scoped_release nogil;
      r.emplace(fn());
    }
    return Unwrap(std::move(*r));
  }
}

}  // namespace tqds::py_binding
