// Payloads of the multi-process integration test: every field is a pure
// function of the sample's uid, so consumers and the test can check bytes.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "tq/batch.h"

namespace tq::itest {

inline Value UidValue(int64_t uid) {
  return Value::Tensor(DType::kInt64, {}, Buffer::Copy(&uid, sizeof(uid))).MoveValue();
}

// Ragged int32 tokens.
inline Value PromptValue(int64_t uid) {
  int64_t len = 1 + uid % 13;
  std::vector<int32_t> t(static_cast<size_t>(len));
  for (int64_t j = 0; j < len; ++j) t[j] = static_cast<int32_t>(uid * 31 + j * 7);
  return Value::Tensor(DType::kInt32, {len}, Buffer::Copy(t.data(), t.size() * 4)).MoveValue();
}

inline Value ResponseValue(int64_t uid) {
  return Value::String("resp-" + std::to_string(uid) + std::string(static_cast<size_t>(uid % 7), '#'));
}

// FNV-1a over kind, dtype, shape and bytes.
inline uint64_t Digest(const Value& v) {
  uint64_t h = 1469598103934665603ull;
  auto mix = [&](const void* p, size_t n) {
    const auto* b = static_cast<const uint8_t*>(p);
    for (size_t i = 0; i < n; ++i) h = (h ^ b[i]) * 1099511628211ull;
  };
  auto kind = static_cast<uint8_t>(v.kind());
  mix(&kind, 1);
  if (v.is_tensor()) {
    auto dtype = static_cast<uint8_t>(v.dtype());
    mix(&dtype, 1);
    for (int64_t d : v.shape()) mix(&d, sizeof(d));
  }
  mix(v.data().data(), v.data().size());
  return h;
}

// One line per consumed sample: "uid prompt_digest response_digest".
inline std::string Line(int64_t uid, const Value& prompt, const Value& response) {
  return std::to_string(uid) + " " + std::to_string(Digest(prompt)) + " " + std::to_string(Digest(response));
}

inline std::string ExpectedLine(int64_t uid) { return Line(uid, PromptValue(uid), ResponseValue(uid)); }

}  // namespace tq::itest
