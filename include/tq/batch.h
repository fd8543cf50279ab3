// Batch: a columnar set of samples (batch size + named fields). Each column
// holds one Value per sample, so a field may be ragged (samples of different
// shapes). A dense field (AddTensor) is kept as its one tensor until a
// caller asks for its samples one by one. Copies of a Batch share bytes;
// nothing here copies tensor data except Stack(). Thread-compatible.
#pragma once

#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
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
  // Adds a dense tensor of shape [batch_size, ...] as one field. It is kept
  // whole (Dense(), Stack()); its per-sample views of the same buffer are
  // made on the first column() or Get() of it, once (no copy either way).
  Status AddTensor(const std::string& name, DType dtype, const Shape& shape, Buffer data);
  // Adds one string per sample.
  Status AddStrings(const std::string& name, const std::vector<std::string>& values);

  Result<const Column*> Get(const std::string& name) const;
  // Column by position; precondition: i < num_fields().
  const Column& column(size_t i) const;
  // The field's whole tensor [batch_size, ...] when it was added as one
  // (AddTensor), else null; precondition: i < num_fields().
  const Value* Dense(size_t i) const { return fields_[i].dense ? &*fields_[i].dense : nullptr; }
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
  // A field: its samples' values, or its whole tensor and, once asked for,
  // its samples' views of it (made under `split`, so that concurrent const
  // calls stay safe). A copy of a dense field copies the tensor only.
  struct Field {
    Field() = default;
    explicit Field(Column c) : column(std::move(c)) {}
    explicit Field(Value whole) : dense(std::move(whole)), split(std::make_unique<std::once_flag>()) {}
    Field(const Field& o) : column(o.dense ? Column() : o.column), dense(o.dense) {
      if (dense) split = std::make_unique<std::once_flag>();
    }
    Field& operator=(const Field& o) {
      if (this != &o) *this = Field(o);
      return *this;
    }
    // A moved-from field holds nothing (no tensor without its flag).
    Field(Field&& o) noexcept
        : column(std::move(o.column)), dense(std::exchange(o.dense, std::nullopt)), split(std::move(o.split)) {}
    Field& operator=(Field&& o) noexcept {
      column = std::move(o.column);
      dense = std::exchange(o.dense, std::nullopt);
      split = std::move(o.split);
      return *this;
    }

    Column column;
    std::optional<Value> dense;
    std::unique_ptr<std::once_flag> split;
  };

  int IndexOf(const std::string& name) const;
  Status SetField(const std::string& name, Field field);
  size_t batch_size_ = 0;
  std::vector<std::string> names_;
  mutable std::vector<Field> fields_;  // a dense field's column is made in column()
};

}  // namespace tq
