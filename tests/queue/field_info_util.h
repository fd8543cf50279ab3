// FieldInfo records for the controller-state and sampler tests.
#pragma once

#include <cstdint>

#include "tq/batch_meta.h"

namespace tq::internal {

// A produced int64 tensor of `len` elements.
inline FieldInfo I64Field(int64_t len) {
  FieldInfo f;
  f.produced = true;
  f.kind = FieldKind::kTensor;
  f.dtype = DType::kInt64;
  f.shape = {len};
  f.nbytes = static_cast<uint64_t>(len) * 8;
  return f;
}

// A produced one-byte object (what a sampler test needs: "this field exists").
inline FieldInfo Produced() {
  FieldInfo f;
  f.produced = true;
  f.kind = FieldKind::kObject;
  f.nbytes = 1;
  return f;
}

}  // namespace tq::internal
