// Fuzz target: ControllerState::Restore (a checkpoint's controller.snapshot
// and the state directory's base), in both modes; a snapshot it accepts must
// snapshot again to a document it accepts too.
#include <cstdlib>
#include <string_view>

#include "queue/controller_state.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using tq::internal::ControllerState;
  std::string_view bytes(reinterpret_cast<const char*>(data), size);
  for (auto mode : {ControllerState::RestoreMode::kCheckpoint, ControllerState::RestoreMode::kExact}) {
    ControllerState s;
    if (!s.Restore(bytes, false, mode).ok()) continue;
    ControllerState again;
    if (!again.Restore(s.Snapshot(), false, mode).ok()) std::abort();  // what it wrote, it must read
    (void)s.Summaries();
    (void)s.Allocate("fuzz", 2);
  }
  return 0;
}
