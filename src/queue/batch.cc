// Batch: columnar samples.
#include "tq/batch.h"

#include <cstring>

namespace tq {

int Batch::IndexOf(const std::string& name) const {
  for (size_t i = 0; i < names_.size(); ++i) {
    if (names_[i] == name) return static_cast<int>(i);
  }
  return -1;
}

Status Batch::SetField(const std::string& name, Field field) {
  if (name.empty()) return Status::Invalid("field name must not be empty");
  int i = IndexOf(name);
  if (i >= 0) {
    fields_[i] = std::move(field);
  } else {
    names_.push_back(name);
    fields_.push_back(std::move(field));
  }
  return Status::OK();
}

Status Batch::AddField(const std::string& name, Column column) {
  if (column.size() != batch_size_) {
    return Status::Invalid("field '", name, "' has ", column.size(), " samples but the batch size is ",
                           batch_size_);
  }
  return SetField(name, Field(std::move(column)));
}

Status Batch::AddTensor(const std::string& name, DType dtype, const Shape& shape, Buffer data) {
  if (shape.empty() || shape[0] != static_cast<int64_t>(batch_size_)) {
    return Status::Invalid("field '", name, "': leading dimension of shape ", ShapeToString(shape),
                           " must equal the batch size ", batch_size_);
  }
  TQDS_ASSIGN_OR_RETURN(int64_t numel, NumElements(shape));
  if (static_cast<uint64_t>(numel) * DTypeSize(dtype) != data.size()) {
    return Status::Invalid("field '", name, "': shape ", ShapeToString(shape), " of ", DTypeName(dtype),
                           " needs ", numel * DTypeSize(dtype), " bytes, got ", data.size());
  }
  TQDS_ASSIGN_OR_RETURN(Value whole, Value::Tensor(dtype, shape, std::move(data)));
  return SetField(name, Field(std::move(whole)));
}

const Column& Batch::column(size_t i) const {
  Field& f = fields_[i];
  if (!f.dense) return f.column;
  std::call_once(*f.split, [&] {
    // Checked by AddTensor: every slice is one sample's tensor.
    const Value& whole = *f.dense;
    const size_t per = batch_size_ == 0 ? 0 : whole.nbytes() / batch_size_;
    Column col;
    col.reserve(batch_size_);
    if (batch_size_ > 0) {
      Shape inner(whole.shape().begin() + 1, whole.shape().end());
      col.push_back(Value::Tensor(whole.dtype(), std::move(inner), whole.data().Slice(0, per)).MoveValue());
      for (size_t s = 1; s < batch_size_; ++s) col.push_back(col[0].WithData(whole.data().Slice(s * per, per)).MoveValue());
    }
    f.column = std::move(col);
  });
  return f.column;
}

Status Batch::AddStrings(const std::string& name, const std::vector<std::string>& values) {
  Column col;
  col.reserve(values.size());
  for (const auto& s : values) col.push_back(Value::String(s));
  return AddField(name, std::move(col));
}

Result<const Column*> Batch::Get(const std::string& name) const {
  int i = IndexOf(name);
  if (i < 0) return Status::NotFound("batch has no field '", name, "'");
  return &column(static_cast<size_t>(i));
}

bool Batch::IsUniform(const std::string& name) const {
  int i = IndexOf(name);
  if (i < 0) return false;
  if (fields_[i].dense) return true;
  const Column& c = fields_[i].column;
  for (const Value& v : c) {
    if (!v.is_tensor() || v.dtype() != c[0].dtype() || v.shape() != c[0].shape()) return false;
  }
  return true;
}

Result<Value> Batch::Stack(const std::string& name) const {
  const int i = IndexOf(name);
  if (i >= 0 && fields_[i].dense) {
    if (batch_size_ == 0) return Status::Invalid("field '", name, "' is empty");
    return *fields_[i].dense;
  }
  TQDS_ASSIGN_OR_RETURN(const Column* col, Get(name));
  if (col->empty()) return Status::Invalid("field '", name, "' is empty");
  const Value& first = (*col)[0];
  if (!first.is_tensor()) return Status::TypeError("field '", name, "' holds objects, not tensors");
  if (!IsUniform(name)) {
    return Status::Invalid("field '", name, "' is ragged (samples differ in shape); read it per sample");
  }
  Shape shape{static_cast<int64_t>(col->size())};
  shape.insert(shape.end(), first.shape().begin(), first.shape().end());
  // Zero copy when the samples already lie back to back in one buffer (e.g.
  // a storage reply that packed them in order): the dense view shares it.
  bool contiguous = first.data().holder() != nullptr;
  for (size_t i = 1; contiguous && i < col->size(); ++i) {
    const Value& prev = (*col)[i - 1];
    const Value& v = (*col)[i];
    contiguous = v.data().holder() == first.data().holder() && v.data().data() == prev.data().data() + prev.nbytes();
  }
  if (contiguous) {
    return Value::Tensor(first.dtype(), std::move(shape),
                         Buffer::Wrap(first.data().data(), first.nbytes() * col->size(), first.data().holder()));
  }
  auto mb = tqds::MutableBuffer::Allocate(first.nbytes() * col->size());
  if (!mb.ok()) return mb.status();
  uint8_t* out = mb->mutable_data();
  for (const Value& v : *col) {
    if (v.nbytes() > 0) std::memcpy(out, v.data().data(), v.nbytes());
    out += v.nbytes();
  }
  return Value::Tensor(first.dtype(), std::move(shape), std::move(*mb).Freeze());
}

Result<Batch> Batch::SelectSamples(const std::vector<size_t>& indexes) const {
  Batch out(indexes.size());
  for (size_t f = 0; f < names_.size(); ++f) {
    const Column& from = column(f);
    Column col;
    col.reserve(indexes.size());
    for (size_t i : indexes) {
      if (i >= batch_size_) {
        return Status::Invalid("sample position ", i, " out of range for batch size ", batch_size_);
      }
      col.push_back(from[i]);
    }
    TQDS_RETURN_NOT_OK(out.AddField(names_[f], std::move(col)));
  }
  return out;
}

Result<Batch> Batch::SelectFields(const std::vector<std::string>& names) const {
  Batch out(batch_size_);
  for (const auto& n : names) {
    const int i = IndexOf(n);
    if (i < 0) return Status::NotFound("batch has no field '", n, "'");
    // A dense field stays one tensor; a per-sample one is copied as is.
    TQDS_RETURN_NOT_OK(out.SetField(n, fields_[i].dense ? Field(*fields_[i].dense) : Field(fields_[i].column)));
  }
  return out;
}

std::vector<Batch> Batch::Chunk(size_t chunks) const {
  std::vector<Batch> out;
  if (chunks == 0) return out;
  size_t base = batch_size_ / chunks, extra = batch_size_ % chunks, start = 0;
  for (size_t c = 0; c < chunks; ++c) {
    size_t n = base + (c < extra ? 1 : 0);
    std::vector<size_t> idx(n);
    for (size_t i = 0; i < n; ++i) idx[i] = start + i;
    out.push_back(SelectSamples(idx).MoveValue());
    start += n;
  }
  return out;
}

Result<Batch> Batch::Concat(const std::vector<Batch>& batches) {
  if (batches.empty()) return Batch();
  size_t total = 0;
  for (const auto& b : batches) {
    if (b.names_.size() != batches[0].names_.size()) {
      return Status::Invalid("cannot concat batches with different fields");
    }
    total += b.batch_size_;
  }
  Batch out(total);
  for (const auto& name : batches[0].names_) {
    Column col;
    col.reserve(total);
    for (const auto& b : batches) {
      auto c = b.Get(name);
      if (!c.ok()) return Status::Invalid("cannot concat: a batch lacks field '", name, "'");
      col.insert(col.end(), (*c)->begin(), (*c)->end());
    }
    TQDS_RETURN_NOT_OK(out.AddField(name, std::move(col)));
  }
  return out;
}

bool Batch::Equals(const Batch& other) const {
  if (batch_size_ != other.batch_size_ || names_.size() != other.names_.size()) return false;
  for (size_t f = 0; f < names_.size(); ++f) {
    auto oc = other.Get(names_[f]);
    if (!oc.ok()) return false;
    for (size_t i = 0; i < batch_size_; ++i) {
      if (!column(f)[i].Equals((**oc)[i])) return false;
    }
  }
  return true;
}

}  // namespace tq
