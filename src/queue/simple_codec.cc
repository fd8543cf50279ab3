// The simple backend's key-group bodies and payload frame packing.
#include "queue/simple_codec.h"

#include <cstring>

#include "tq/storage.h"

namespace tq::internal::simple {

using tqds::Buffer;
using tqds::Result;
using tqds::Status;
using tqds::wire::BodyPacker;
using tqds::wire::MapReader;

std::string KeyGroup::KeyString(size_t i) const {
  const size_t n = indexes.size();
  if (n == 0 || i >= num_keys()) return "?";
  SampleKey s{partition_id, indexes[i % n], generations[i % n], controller_id};
  return StorageKey(s, fields[i / n]);
}

namespace {

template <typename T>
void PackArray(BodyPacker& pk, const std::vector<T>& v) {
  pk.pack_array(static_cast<uint32_t>(v.size()));
  for (const auto& x : v) {
    if constexpr (std::is_signed_v<T>) {
      pk.pack_int64(x);
    } else {
      pk.pack_uint64(x);
    }
  }
}

bool IsArray(const msgpack::object& o) { return o.type == msgpack::type::ARRAY; }

Result<std::string> StrOf(const msgpack::object& o, const char* what, const char* name) {
  if (o.type != msgpack::type::STR) return Status::Invalid(what, ": ", name, " must be a string");
  return std::string(o.via.str.ptr, o.via.str.size);
}

Result<uint64_t> U64Of(const msgpack::object& o, const char* what, const char* name) {
  if (o.type != msgpack::type::POSITIVE_INTEGER) {
    return Status::Invalid(what, ": ", name, " must be an unsigned integer");
  }
  return o.via.u64;
}

Result<int64_t> I64Of(const msgpack::object& o, const char* what, const char* name) {
  if (o.type == msgpack::type::NEGATIVE_INTEGER) return o.via.i64;
  if (o.type == msgpack::type::POSITIVE_INTEGER && o.via.u64 <= static_cast<uint64_t>(INT64_MAX)) {
    return static_cast<int64_t>(o.via.u64);
  }
  return Status::Invalid(what, ": ", name, " must be an int64");
}

Result<std::vector<uint64_t>> U64Array(const msgpack::object& o, const char* what, const char* name) {
  if (!IsArray(o)) return Status::Invalid(what, ": ", name, " must be an array");
  std::vector<uint64_t> out(o.via.array.size);
  for (uint32_t i = 0; i < o.via.array.size; ++i) {
    const msgpack::object& e = o.via.array.ptr[i];
    if (e.type != msgpack::type::POSITIVE_INTEGER) {
      return Status::Invalid(what, ": ", name, "[", i, "] must be an unsigned integer");
    }
    out[i] = e.via.u64;
  }
  return out;
}

Result<KeyGroup> DecodeGroup(const msgpack::object& o, const char* what) {
  if (!IsArray(o) || o.via.array.size != 5) {
    return Status::Invalid(what, ": a key group must be [controller_id, partition, fields, indexes, generations]");
  }
  const msgpack::object* e = o.via.array.ptr;
  KeyGroup g;
  TQDS_ASSIGN_OR_RETURN(g.controller_id, U64Of(e[0], what, "controller_id"));
  TQDS_ASSIGN_OR_RETURN(g.partition_id, StrOf(e[1], what, "partition"));
  if (!IsArray(e[2])) return Status::Invalid(what, ": fields must be an array of strings");
  g.fields.reserve(e[2].via.array.size);
  for (uint32_t i = 0; i < e[2].via.array.size; ++i) {
    TQDS_ASSIGN_OR_RETURN(auto f, StrOf(e[2].via.array.ptr[i], what, "field"));
    g.fields.push_back(std::move(f));
  }
  if (!IsArray(e[3])) return Status::Invalid(what, ": indexes must be an array");
  g.indexes.resize(e[3].via.array.size);
  for (uint32_t i = 0; i < e[3].via.array.size; ++i) {
    TQDS_ASSIGN_OR_RETURN(g.indexes[i], I64Of(e[3].via.array.ptr[i], what, "index"));
  }
  TQDS_ASSIGN_OR_RETURN(g.generations, U64Array(e[4], what, "generations"));
  if (g.generations.size() != g.indexes.size()) {
    return Status::Invalid(what, ": ", g.indexes.size(), " indexes but ", g.generations.size(), " generations");
  }
  return g;
}

}  // namespace

std::string EncodeGroups(const std::vector<KeyGroup>& groups, const std::vector<uint64_t>* sizes,
                         const std::vector<uint64_t>* aligns) {
  return tqds::wire::PackBody([&](BodyPacker& pk) {
    pk.pack_map(sizes ? 3 : 1);
    pk.pack("groups");
    pk.pack_array(static_cast<uint32_t>(groups.size()));
    for (const auto& g : groups) {
      pk.pack_array(5);
      pk.pack_uint64(g.controller_id);
      pk.pack(g.partition_id);
      pk.pack(g.fields);
      PackArray(pk, g.indexes);
      PackArray(pk, g.generations);
    }
    if (sizes) {
      pk.pack("sizes");
      PackArray(pk, *sizes);
      pk.pack("aligns");
      PackArray(pk, aligns ? *aligns : std::vector<uint64_t>());
    }
  });
}

Result<DecodedGroups> DecodeGroups(const msgpack::object& body, bool with_sizes, const char* what) {
  TQDS_ASSIGN_OR_RETURN(auto rd, MapReader::Of(body, what));
  const msgpack::object* groups = rd.Find("groups");
  if (groups == nullptr || !IsArray(*groups)) return Status::Invalid(what, ": missing array 'groups'");
  DecodedGroups out;
  out.groups.reserve(groups->via.array.size);
  for (uint32_t i = 0; i < groups->via.array.size; ++i) {
    TQDS_ASSIGN_OR_RETURN(KeyGroup g, DecodeGroup(groups->via.array.ptr[i], what));
    out.num_keys += g.num_keys();
    if (out.num_keys > kMaxKeys) {
      return Status::Invalid(what, ": more than ", kMaxKeys, " keys in one request");
    }
    out.groups.push_back(std::move(g));
  }
  if (with_sizes) {
    const msgpack::object* sizes = rd.Find("sizes");
    if (sizes == nullptr) return Status::Invalid(what, ": missing array 'sizes'");
    TQDS_ASSIGN_OR_RETURN(out.sizes, U64Array(*sizes, what, "sizes"));
    if (out.sizes.size() != out.num_keys) {
      return Status::Invalid(what, ": ", out.num_keys, " keys but ", out.sizes.size(), " sizes");
    }
    if (const msgpack::object* aligns = rd.Find("aligns")) {
      TQDS_ASSIGN_OR_RETURN(out.aligns, U64Array(*aligns, what, "aligns"));
    }
  }
  return out;
}

std::string EncodeSizes(const std::vector<uint64_t>& sizes, const std::vector<uint64_t>& aligns) {
  return tqds::wire::PackBody([&](BodyPacker& pk) {
    pk.pack_map(2);
    pk.pack("sizes");
    PackArray(pk, sizes);
    pk.pack("aligns");
    PackArray(pk, aligns);
  });
}

Result<ValueLayout> DecodeSizes(const msgpack::object& body, const char* what) {
  TQDS_ASSIGN_OR_RETURN(auto rd, MapReader::Of(body, what));
  const msgpack::object* sizes = rd.Find("sizes");
  if (sizes == nullptr) return Status::Invalid(what, ": missing array 'sizes'");
  ValueLayout out;
  TQDS_ASSIGN_OR_RETURN(out.sizes, U64Array(*sizes, what, "sizes"));
  if (const msgpack::object* aligns = rd.Find("aligns")) {
    TQDS_ASSIGN_OR_RETURN(out.aligns, U64Array(*aligns, what, "aligns"));
  }
  return out;
}

namespace {
// ZMQ hands small received frames over at any byte offset of its receive
// buffer; values are read in place (int64, float64), so such a frame is
// copied to aligned memory (rare and small: large frames arrive aligned).
Buffer Aligned(const Buffer& frame) {
  if (reinterpret_cast<uintptr_t>(frame.data()) % FrameBuilder::kPackAlign == 0) return frame;
  return Buffer::Copy(frame.data(), frame.size());
}
}  // namespace

Result<std::vector<Buffer>> SplitFrames(const std::vector<Buffer>& frames, const std::vector<uint64_t>& aligns,
                                        const std::vector<uint64_t>& sizes, const char* what) {
  if (!aligns.empty() && aligns.size() != frames.size()) {
    return Status::Invalid(what, ": ", aligns.size(), " aligns for ", frames.size(), " payload frames");
  }
  for (uint64_t a : aligns) {
    if (a == 0 || a > kMaxAlign || (a & (a - 1)) != 0) {
      return Status::Invalid(what, ": align ", a, " is not a power of two <= ", kMaxAlign);
    }
  }
  std::vector<Buffer> out(sizes.size());
  size_t frame = 0, offset = 0;
  Buffer base;  // frames[frame], moved to aligned memory when the transport left it misaligned
  for (size_t i = 0; i < sizes.size(); ++i) {
    const uint64_t n = sizes[i];
    if (n == 0) continue;
    while (frame < frames.size() && offset == frames[frame].size()) {
      ++frame;
      offset = 0;
      base = Buffer();
    }
    if (frame == frames.size()) {
      return Status::Invalid(what, ": payload frames end before value ", i, " (", n, " bytes)");
    }
    if (base.data() == nullptr) base = Aligned(frames[frame]);
    const uint64_t align = aligns.empty() ? 1 : aligns[frame];
    const size_t start = (offset + align - 1) / align * align;
    if (start > frames[frame].size() || n > frames[frame].size() - start) {
      return Status::Invalid(what, ": value ", i, " (", n, " bytes) does not fit in payload frame ", frame, " (",
                             frames[frame].size() - offset, " bytes left)");
    }
    out[i] = base.Slice(start, n);
    offset = start + n;
  }
  while (frame < frames.size() && offset == frames[frame].size()) {
    ++frame;
    offset = 0;
  }
  if (frame != frames.size()) {
    return Status::Invalid(what, ": payload frame ", frame, " has ", frames[frame].size() - offset,
                           " bytes that belong to no value");
  }
  return out;
}

namespace {
bool SameOwner(const Buffer& a, const Buffer& b) {
  return !a.holder().owner_before(b.holder()) && !b.holder().owner_before(a.holder());
}
}  // namespace

void FrameBuilder::Add(const Buffer& value) {
  if (value.empty()) return;
  if (run_size_ > 0 && run_size_ + value.size() <= max_frame_ && run_first_.data() + run_size_ == value.data() &&
      SameOwner(run_first_, value)) {
    run_size_ += value.size();
    run_sizes_.push_back(value.size());
    return;
  }
  CloseRun();
  run_first_ = value;
  run_size_ = value.size();
  run_sizes_.assign(1, value.size());
}

void FrameBuilder::CloseRun() {
  if (run_size_ == 0) return;
  if (run_size_ < kCopyBelow) {
    // Copied: each value starts at a kPackAlign multiple of the pack frame.
    const size_t padded = run_size_ + run_sizes_.size() * (kPackAlign - 1);
    if (!pack_.empty() && pack_.size() + padded > kPackBytes) FlushPack();
    const char* src = reinterpret_cast<const char*>(run_first_.data());
    for (size_t n : run_sizes_) {
      pack_.resize((pack_.size() + kPackAlign - 1) / kPackAlign * kPackAlign, '\0');
      pack_.append(src, n);
      src += n;
    }
  } else {
    FlushPack();
    // Adjacent values with one owner: their union is memory of that owner.
    frames_.push_back(Buffer::Wrap(run_first_.data(), run_size_, run_first_.holder()));
    aligns_.push_back(1);
  }
  run_first_ = Buffer();
  run_size_ = 0;
  run_sizes_.clear();
}

void FrameBuilder::FlushPack() {
  if (pack_.empty()) return;
  if (pack_.capacity() > pack_.size() + pack_.size() / 4) pack_.shrink_to_fit();
  frames_.push_back(Buffer::FromString(std::move(pack_)));
  aligns_.push_back(kPackAlign);
  pack_ = std::string();
}

std::vector<Buffer> FrameBuilder::Finish(std::vector<uint64_t>* aligns) {
  CloseRun();
  FlushPack();
  *aligns = std::move(aligns_);
  aligns_.clear();
  std::vector<Buffer> out = std::move(frames_);
  frames_.clear();
  return out;
}

}  // namespace tq::internal::simple
