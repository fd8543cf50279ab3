// Exception registration: one Python class per StatusCode.
#include "errors.h"

namespace tqds::py_binding {

namespace {
PyObject* g_types[static_cast<int>(kLastStatusCode) + 1] = {};

PyObject* Make(py::module_& m, const char* name, PyObject* base, PyObject* extra, const char* doc) {
  std::string full = std::string("_tqds.") + name;
  PyObject* bases = extra ? PyTuple_Pack(2, base, extra) : PyTuple_Pack(1, base);
  PyObject* type = PyErr_NewExceptionWithDoc(full.c_str(), doc, bases, nullptr);
  Py_DECREF(bases);
  if (type == nullptr) throw py::error_already_set();
  m.add_object(name, py::handle(type));
  return type;
}
}  // namespace

void InitErrors(py::module_& m) {
  PyObject* base = PyErr_NewExceptionWithDoc("_tqds.TQDSError",
                                             "Base class of every TransferQueue/datasystem error.",
                                             PyExc_RuntimeError, nullptr);
  m.add_object("TQDSError", py::handle(base));
  auto set = [&](StatusCode c, PyObject* t) { g_types[static_cast<int>(c)] = t; };
  set(StatusCode::kInvalid, Make(m, "InvalidArgumentError", base, PyExc_ValueError, "Bad argument or malformed input."));
  set(StatusCode::kNotFound, Make(m, "NotFoundError", base, PyExc_KeyError, "Unknown key, sample or partition."));
  set(StatusCode::kAlreadyExists, Make(m, "AlreadyExistsError", base, nullptr, "The key exists already."));
  set(StatusCode::kOutOfSpace, Make(m, "OutOfSpaceError", base, PyExc_MemoryError, "Storage is full."));
  set(StatusCode::kTimeout, Make(m, "TimeoutError_", base, PyExc_TimeoutError, "A wait ran past its deadline."));
  set(StatusCode::kIOError, Make(m, "IOError_", base, PyExc_OSError, "An OS, socket or disk failure."));
  set(StatusCode::kUnavailable, Make(m, "UnavailableError", base, PyExc_ConnectionError, "A peer is not reachable."));
  set(StatusCode::kInternal, Make(m, "InternalError", base, nullptr, "An internal invariant broke."));
  set(StatusCode::kTypeError, Make(m, "DTypeError", base, PyExc_TypeError, "Wrong dtype or kind."));
  set(StatusCode::kCancelled, Make(m, "CancelledError", base, nullptr, "Shut down while waiting."));
  set(StatusCode::kPermissionDenied, Make(m, "PermissionDeniedError", base, PyExc_PermissionError,
                                          "Credentials missing or refused (transport authentication)."));
  g_types[0] = base;
}

void Throw(const Status& status) {
  const int code = static_cast<int>(status.code());  // a code from the wire may be out of range
  PyObject* type = code <= static_cast<int>(kLastStatusCode) ? g_types[code] : nullptr;
  if (type == nullptr) type = g_types[0];
  PyErr_SetString(type, status.message().c_str());
  throw py::error_already_set();
}

}  // namespace tqds::py_binding
