// _tqds: the extension module; one init_* per area.
#include <pybind11/pybind11.h>

#include "errors.h"

namespace tqds::py_binding {
void InitQueue(py::module_& m);
void InitDatasystem(py::module_& m);
}  // namespace tqds::py_binding

PYBIND11_MODULE(_tqds, m) {
  m.doc() = "C++ core of the transfer_queue and datasystem packages";
  tqds::py_binding::InitErrors(m);
  tqds::py_binding::InitQueue(m);
#ifdef TQDS_WITH_DATASYSTEM
  tqds::py_binding::InitDatasystem(m);
#endif
}
