// _tqds: the extension module; one init_* per area.
#include <pybind11/pybind11.h>

#include <cstdlib>
#include <string>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include "common/wire/security.h"
#include "errors.h"

namespace tqds::py_binding {
namespace {

// glibc's malloc hands the free memory at its heap's top back to the kernel
// once it exceeds a threshold that follows the largest block freed so far
// (a few MiB here), and blocks from 128 KiB up to that size come from mmap.
// A put or get of 16384 samples allocates and frees several blocks of a few
// MiB (its metas, key lists, message buffers): every call then faulted
// those pages in again (zeroed and charged to the cgroup), about a quarter
// of the many_small cycle's time (docs/architecture.md). Fixed thresholds keep
// blocks below 32 MiB (glibc's own upper bound for the moving one) in the
// heap and up to 64 MiB of free heap top mapped. The client applies this
// once per process; TQDS_MALLOC_TUNING=0 leaves malloc as it is, and so does
// any MALLOC_*_ variable of glibc's that the user set.
constexpr int kMmapThreshold = 32 << 20;
constexpr int kTrimThreshold = 64 << 20;

std::string TuneMalloc() {
  static const std::string outcome = []() -> std::string {
#if defined(__GLIBC__)
    if (const char* v = std::getenv("TQDS_MALLOC_TUNING"); v != nullptr && std::string(v) == "0") {
      return "off: TQDS_MALLOC_TUNING=0";
    }
    for (const char* var : {"MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_",
                            "MALLOC_MMAP_MAX_"}) {
      if (std::getenv(var) != nullptr) return std::string("off: ") + var + " is set";
    }
    if (mallopt(M_MMAP_THRESHOLD, kMmapThreshold) != 1 ||
        mallopt(M_TRIM_THRESHOLD, kTrimThreshold) != 1) {
      return "off: mallopt refused";
    }
    return "on: M_MMAP_THRESHOLD=" + std::to_string(kMmapThreshold) + " M_TRIM_THRESHOLD=" +
           std::to_string(kTrimThreshold);
#else
    return "off: not glibc";
#endif
  }();
  return outcome;
}

}  // namespace

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
  m.def("tune_malloc", &tqds::py_binding::TuneMalloc,
        "Once per process: glibc malloc thresholds that keep a big put's or get's blocks mapped "
        "between calls (TQDS_MALLOC_TUNING=0 or a MALLOC_*_ variable: left as is). Returns what "
        "was done ('on: ...' / 'off: why').");
  tqds::py_binding::InitQueue(m);
#ifdef TQDS_WITH_DATASYSTEM
  tqds::py_binding::InitDatasystem(m);
#endif
}
