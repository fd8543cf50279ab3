// Helpers shared by the fuzz targets (fuzz/*.cc). Each target defines
// LLVMFuzzerTestOneInput: with -DTQDS_FUZZ=ON (clang) it links libFuzzer;
// otherwise replay_main.cc runs it over the seed corpus as a test.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>

#include "common/wire/message.h"

namespace tqds::fuzz {

// The input as a received header frame, or nullopt when it is not one.
// Decoded as a transport decodes a frame: the body views the frame's bytes.
inline std::optional<wire::Message> AsHeader(const uint8_t* data, size_t size) {
  auto m = wire::Message::DecodeHeader(Buffer::Copy(data, size));
  if (!m.ok()) return std::nullopt;
  return m.MoveValue();
}

}  // namespace tqds::fuzz
