// DType helpers and Value.
#include "tq/types.h"

#include <sstream>

namespace tq {

namespace {
struct DTypeInfo {
  const char* name;
  size_t size;
};
constexpr DTypeInfo kDTypes[kNumDTypes] = {
    {"bool", 1},    {"uint8", 1},    {"int8", 1},     {"int16", 2},   {"int32", 4},
    {"int64", 8},   {"float16", 2},  {"bfloat16", 2}, {"float32", 4}, {"float64", 8},
};
}  // namespace

size_t DTypeSize(DType dtype) {
  auto i = static_cast<size_t>(dtype);
  return i < kNumDTypes ? kDTypes[i].size : 0;
}

const char* DTypeName(DType dtype) {
  auto i = static_cast<size_t>(dtype);
  return i < kNumDTypes ? kDTypes[i].name : "invalid";
}

Result<DType> ParseDType(std::string_view name) {
  if (name.rfind("torch.", 0) == 0) name.remove_prefix(6);
  for (int i = 0; i < kNumDTypes; ++i) {
    if (name == kDTypes[i].name) return static_cast<DType>(i);
  }
  if (name == "float" || name == "half" || name == "double" || name == "long" || name == "int") {
    static const std::map<std::string_view, DType> aliases = {
        {"float", DType::kFloat32}, {"half", DType::kFloat16}, {"double", DType::kFloat64},
        {"long", DType::kInt64},    {"int", DType::kInt32}};
    return aliases.at(name);
  }
  return Status::TypeError("unsupported dtype '", std::string(name),
                           "' (supported: bool, uint8, int8, int16, int32, int64, float16, "
                           "bfloat16, float32, float64)");
}

std::string ShapeToString(const Shape& shape) {
  std::ostringstream out;
  out << "(";
  for (size_t i = 0; i < shape.size(); ++i) out << (i ? ", " : "") << shape[i];
  if (shape.size() == 1) out << ",";
  out << ")";
  return out.str();
}

Result<int64_t> NumElements(const Shape& shape) {
  int64_t n = 1;
  for (int64_t d : shape) {
    if (d < 0) return Status::Invalid("negative dimension in shape ", ShapeToString(shape));
    if (d != 0 && n > (int64_t{1} << 50) / d) {
      return Status::Invalid("shape ", ShapeToString(shape), " is too large");
    }
    n *= d;
  }
  return n;
}

Result<Value> Value::Tensor(DType dtype, Shape shape, Buffer data) {
  if (static_cast<int>(dtype) >= kNumDTypes) {
    return Status::TypeError("invalid dtype id ", static_cast<int>(dtype));
  }
  TQDS_ASSIGN_OR_RETURN(int64_t numel, NumElements(shape));
  uint64_t expect = static_cast<uint64_t>(numel) * DTypeSize(dtype);
  if (expect != data.size()) {
    return Status::Invalid("tensor of dtype ", DTypeName(dtype), " and shape ", ShapeToString(shape),
                           " needs ", expect, " bytes, got ", data.size());
  }
  Value v;
  v.kind_ = FieldKind::kTensor;
  v.dtype_ = dtype;
  v.shape_ = std::move(shape);
  v.data_ = std::move(data);
  return v;
}

Value Value::Object(Buffer data, FieldKind kind) {
  Value v;
  v.kind_ = kind == FieldKind::kTensor ? FieldKind::kObject : kind;
  v.data_ = std::move(data);
  return v;
}

Result<Value> Value::FromSpec(FieldKind kind, DType dtype, Shape shape, Buffer data) {
  if (static_cast<int>(kind) >= kNumFieldKinds) return Status::TypeError("invalid field kind ", int(kind));
  if (kind != FieldKind::kTensor) return Object(std::move(data), kind);
  return Tensor(dtype, std::move(shape), std::move(data));
}

Result<Value> Value::WithData(Buffer data) const {
  if (data.size() != data_.size()) {
    return Status::Invalid(ToString(), " of ", data_.size(), " bytes cannot take ", data.size(), " bytes");
  }
  Value v;
  v.kind_ = kind_;
  v.dtype_ = dtype_;
  v.shape_ = shape_;
  v.data_ = std::move(data);
  return v;
}

bool Value::Equals(const Value& other) const {
  if (kind_ != other.kind_) return false;
  if (kind_ == FieldKind::kTensor && (dtype_ != other.dtype_ || shape_ != other.shape_)) return false;
  return data_.Equals(other.data_);
}

std::string Value::ToString() const {
  if (kind_ != FieldKind::kTensor) return "object(" + std::to_string(data_.size()) + " bytes)";
  return std::string("tensor(") + DTypeName(dtype_) + ", " + ShapeToString(shape_) + ")";
}

}  // namespace tq
