// Element types and sample values of the TransferQueue data model.
// Value is a cheap-to-copy immutable handle (its bytes live in a Buffer).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

// GCC 12 warns "may be used uninitialized" inside abseil's move of an inline
// vector's storage when it inlines it (a false positive: the bytes it copies
// are the ones in use); the warning's location is this header's code.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <absl/container/inlined_vector.h>
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

#include "tqds/buffer.h"
#include "tqds/status.h"

namespace tq {

using tqds::Buffer;
using tqds::Result;
using tqds::Status;

// Wire-stable: never renumber.
enum class DType : uint8_t {
  kBool = 0,
  kUInt8 = 1,
  kInt8 = 2,
  kInt16 = 3,
  kInt32 = 4,
  kInt64 = 5,
  kFloat16 = 6,
  kBFloat16 = 7,
  kFloat32 = 8,
  kFloat64 = 9,
};
inline constexpr int kNumDTypes = 10;

size_t DTypeSize(DType dtype);
const char* DTypeName(DType dtype);  // "float32", ...
Result<DType> ParseDType(std::string_view name);

// Wire-stable: never renumber.
enum class FieldKind : uint8_t {
  kTensor = 0,  // dtype + shape + contiguous bytes
  kObject = 1,  // opaque bytes
  kString = 2,  // UTF-8 text
  kPickle = 3,  // a pickled Python value (the Python binding unpickles it)
};
inline constexpr int kNumFieldKinds = 4;

// Up to four dimensions inline: a meta of many samples holds one per field
// record, and most tensors have few dimensions.
using Shape = absl::InlinedVector<int64_t, 4>;
std::string ShapeToString(const Shape& shape);
// Product of dims; 1 for a 0-d (scalar) shape. Invalid for negative dims.
Result<int64_t> NumElements(const Shape& shape);

// One field of one sample.
class Value {
 public:
  Value() = default;
  // A tensor; fails when data.size() != numel(shape) * DTypeSize(dtype).
  static Result<Value> Tensor(DType dtype, Shape shape, Buffer data);
  // An object: opaque bytes, UTF-8 text or a pickled value (`kind`).
  static Value Object(Buffer data, FieldKind kind = FieldKind::kObject);
  static Value String(std::string_view s) { return Object(Buffer::CopyString(s), FieldKind::kString); }
  // Reconstructs a value from stored bytes and its recorded spec.
  static Result<Value> FromSpec(FieldKind kind, DType dtype, Shape shape, Buffer data);
  // This value's kind, dtype and shape over other bytes, as many as its
  // own: a column's next sample without checking its spec again.
  Result<Value> WithData(Buffer data) const;

  FieldKind kind() const { return kind_; }
  bool is_tensor() const { return kind_ == FieldKind::kTensor; }
  DType dtype() const { return dtype_; }
  const Shape& shape() const { return shape_; }
  const Buffer& data() const { return data_; }
  size_t nbytes() const { return data_.size(); }
  // Typed access to tensor elements; precondition: is_tensor() and T matches.
  template <typename T>
  const T* as() const { return reinterpret_cast<const T*>(data_.data()); }
  std::string_view str() const { return data_.view(); }

  // Same kind, dtype, shape and bytes.
  bool Equals(const Value& other) const;
  std::string ToString() const;  // short description for messages

 private:
  FieldKind kind_ = FieldKind::kObject;
  DType dtype_ = DType::kUInt8;
  Shape shape_;
  Buffer data_;
};

// Per-sample user metadata (e.g. a sequence length for balancing) and
// sampling parameters: a msgpack-shaped value. nil, bool, int64, float64,
// text, bytes, lists and string-keyed maps cross the wire as themselves;
// MetaPickled carries any other (Python) object as bytes that only a
// binding interprets (C++ never unpickles). The Python binding maps None,
// bool, int, float, str, bytes, list and dict natively and pickles the rest.
struct MetaBytes {
  std::string data;
  bool operator==(const MetaBytes&) const = default;
};
struct MetaPickled {
  std::string data;  // pickle bytes, opaque here
  bool operator==(const MetaPickled&) const = default;
};
struct MetaValue;
using MetaList = std::vector<MetaValue>;
using MetaMap = std::vector<std::pair<std::string, MetaValue>>;  // insertion order kept

// Deepest nesting of lists/maps a decoder accepts (the top-level map of a
// CustomMeta is not counted); encoders must stay within it.
inline constexpr int kMaxMetaDepth = 32;

// A std::variant, so std::get_if<int64_t>(&v) and std::visit work as on the
// plain variant. Default: nil (std::monostate).
struct MetaValue
    : std::variant<std::monostate, bool, int64_t, double, std::string, MetaBytes, MetaPickled, MetaList, MetaMap> {
  using variant::variant;
  using variant::operator=;
  bool is_nil() const { return std::holds_alternative<std::monostate>(*this); }
  bool operator==(const MetaValue& other) const {
    return static_cast<const variant&>(*this) == static_cast<const variant&>(other);
  }
};

using CustomMeta = std::map<std::string, MetaValue>;

}  // namespace tq
