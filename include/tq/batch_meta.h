// BatchMeta: what the controller knows about a set of samples (no payload
// bytes): global indexes, partition ids, the field schema with per-sample
// dtype/shape, production status and custom metadata. A consumer passes it
// to get_data() to fetch exactly those samples and fields.
#pragma once

#include <string>
#include <vector>

#include "tq/types.h"

namespace tq {

// What one field of one sample looks like in storage.
struct FieldInfo {
  bool produced = false;
  FieldKind kind = FieldKind::kObject;
  DType dtype = DType::kUInt8;
  Shape shape;
  uint64_t nbytes = 0;
  // Where the value lives when the storage backend packed it with others of
  // its put into one object (see StorageManager::PutPacking): that pack's id
  // and the value's first byte in it. pack 0: the value is its own object.
  uint64_t pack = 0;
  uint64_t offset = 0;
  bool operator==(const FieldInfo&) const = default;
  // The same value description, wherever it is stored.
  bool SameValue(const FieldInfo& o) const {
    if (produced != o.produced || kind != o.kind || dtype != o.dtype || nbytes != o.nbytes ||
        shape.size() != o.shape.size()) {
      return false;
    }
    // Dimension by dimension: a shape has a few, and this runs once per
    // record of a meta (InlinedVector's == calls memcmp).
    for (size_t d = 0; d < shape.size(); ++d) {
      if (shape[d] != o.shape[d]) return false;
    }
    return true;
  }
};

// A sample's field records; a few inline, so that a meta of many samples of
// few fields is not one allocation per sample.
using FieldInfos = absl::InlinedVector<FieldInfo, 2>;

struct SampleMeta {
  int64_t global_index = -1;
  // Unique per allocation, never reused: storage keys include it, so a stale
  // BatchMeta can never read a later sample that reused the index.
  uint64_t generation = 0;
  std::string partition_id;
  FieldInfos fields;  // aligned with BatchMeta::field_names()
  CustomMeta custom;
  bool operator==(const SampleMeta&) const = default;
};

// Summary of one field across the samples of a BatchMeta.
struct FieldSchema {
  std::string name;
  FieldKind kind = FieldKind::kObject;
  DType dtype = DType::kUInt8;
  Shape shape;          // of the first sample
  bool ragged = false;  // samples differ in shape
  bool produced = false;  // produced for every sample
};

class BatchMeta {
 public:
  BatchMeta() = default;
  BatchMeta(std::vector<std::string> field_names, std::vector<SampleMeta> samples)
      : field_names_(std::move(field_names)), samples_(std::move(samples)) {}

  size_t size() const { return samples_.size(); }
  bool empty() const { return samples_.empty(); }
  const std::vector<std::string>& field_names() const { return field_names_; }
  const std::vector<SampleMeta>& samples() const { return samples_; }
  std::vector<SampleMeta>& mutable_samples() { return samples_; }
  std::vector<int64_t> global_indexes() const;
  std::vector<std::string> partition_ids() const;
  std::vector<FieldSchema> schema() const;
  int FieldIndex(const std::string& name) const;

  Result<BatchMeta> SelectSamples(const std::vector<size_t>& positions) const;
  Result<BatchMeta> SelectFields(const std::vector<std::string>& names) const;
  std::vector<BatchMeta> Chunk(size_t chunks) const;
  // Concatenates metas; field lists are merged (a field missing in one
  // meta is recorded as not produced for its samples).
  static BatchMeta Concat(const std::vector<BatchMeta>& metas);
  // The fields of both metas of the same samples (same partition, index and
  // generation, in the same order): a's fields, then b's new ones; b's
  // records win for a field both hold. Other samples: InvalidArgument.
  static Result<BatchMeta> Union(const BatchMeta& a, const BatchMeta& b);

  bool operator==(const BatchMeta&) const = default;

 private:
  std::vector<std::string> field_names_;
  std::vector<SampleMeta> samples_;
};

}  // namespace tq
