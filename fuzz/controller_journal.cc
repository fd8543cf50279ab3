// Fuzz target: the records of a controller journal segment
// (ControllerJournal::ParseSegment): lengths, checksums, msgpack and headers.
#include <string_view>

#include "queue/controller_journal.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  tq::internal::ControllerJournal::Recovered out;
  (void)tq::internal::ControllerJournal::ParseSegment(std::string_view(reinterpret_cast<const char*>(data), size),
                                                      "fuzz", &out);
  return 0;
}
