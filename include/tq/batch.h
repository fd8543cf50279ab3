// Batch: a columnar set of samples (batch size + named fields). Each column
// holds one Value per sample, so a field may be ragged (samples of different
// shapes). Copies of a Batch share bytes; nothing here copies tensor data
// except Stack(). Thread-compatible.
#pragma once

#include <string>
#include <vector>

#include "tq/types.h"

namespace tq {

using Column = std::vector<Value>;

class Batch {
 public:
  Batch() = default;
  explicit Batch(size_t batch_size) : batch_size_(batch_size) {}

  size_t batch_size() const { return batch_size_; }
  size_t num_fields() const { return names_.size(); }
  // Field names in insertion order.
  const std::vector<std::string>& keys() const { return names_; }
  bool Has(const std::string& name) const { return IndexOf(name) >= 0; }

  // Adds (or replaces) a field; fails when column.size() != batch_size.
  Status AddField(const std::string& name, Column column);
  // Adds a dense tensor of shape [batch_size, ...] as one field, splitting it
  // into per-sample views of the same buffer (no copy).
  Status AddTensor(const std::string& name, DType dtype, const Shape& shape, Buffer data);
  // Adds one string per sample.
  Status AddStrings(const std::string& name, const std::vector<std::string>& values);

  Result<const Column*> Get(const std::string& name) const;
  // Column by position; precondition: i < num_fields().
  const Column& column(size_t i) const { return columns_[i]; }
  // True when every sample of the tensor field has the same dtype and shape.
  bool IsUniform(const std::string& name) const;
  // The field as one dense tensor [batch_size, ...]: a view (no copy) when
  // the samples already lie back to back in one buffer, else one copy.
  // Fails with TypeError for object fields and Invalid for ragged ones.
  Result<Value> Stack(const std::string& name) const;

  Result<Batch> SelectSamples(const std::vector<size_t>& indexes) const;
  Result<Batch> SelectFields(const std::vector<std::string>& names) const;
  // Splits into `chunks` nearly equal consecutive parts (first ones larger).
  std::vector<Batch> Chunk(size_t chunks) const;
  // Concatenates batches with the same field names.
  static Result<Batch> Concat(const std::vector<Batch>& batches);

  bool Equals(const Batch& other) const;

 private:
  int IndexOf(const std::string& name) const;
  size_t batch_size_ = 0;
  std::vector<std::string> names_;
  std::vector<Column> columns_;
};

}  // namespace tq
