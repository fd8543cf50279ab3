// _tqds: the extension module; one init_* per area.
#include <pybind11/pybind11.h>

#include <string>

#include "common/wire/security.h"
#include "errors.h"

namespace tqds::py_binding {
void InitQueue(py::module_& m);
void InitDatasystem(py::module_& m);
}  // namespace tqds::py_binding

PYBIND11_MODULE(_tqds, m) {
  m.doc() = "C++ core of the transfer_queue and datasystem packages";
  tqds::py_binding::InitErrors(m);
  using tqds::py_binding::ThrowIfError;
  m.def(
      "generate_curve_keys", [](const std::string& dir) { ThrowIfError(tqds::wire::GenerateCurveKeys(dir)); },
      pybind11::arg("dir"),
      "Writes a fresh set of CURVE keys (server and client pairs, authorized_clients) into dir, as `tq keys`.");
  m.def(
      "use_curve_keys", [](const std::string& dir) { ThrowIfError(tqds::wire::UseCurveKeys(dir)); },
      pybind11::arg("dir"),
      "Makes this process's tcp sockets authenticate with the keys in dir ('' : none); sockets made "
      "afterwards use them. Without a call, $TQDS_CURVE_KEY_DIR is read on first use.");
  tqds::py_binding::InitQueue(m);
#ifdef TQDS_WITH_DATASYSTEM
  tqds::py_binding::InitDatasystem(m);
#endif
}
