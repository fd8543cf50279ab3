// Envelope codec with hostile-input checks.
#include "common/wire/message.h"

#include <algorithm>
#include <cstring>

namespace tqds::wire {

const WireLimits& DefaultLimits() {
  static const WireLimits limits;
  return limits;
}

std::string Message::EncodeHeader() const {
  msgpack::sbuffer sb = EncodeHeaderBuffer();
  return std::string(sb.data(), sb.size());
}

msgpack::sbuffer Message::EncodeHeaderBuffer() const {
  // Room for the six elements' heads and the status message, and the body.
  msgpack::sbuffer sb(64 + status_.message().size() + body_bytes_.size());
  msgpack::packer<msgpack::sbuffer> pk(sb);
  pk.pack_array(6);
  pk.pack_uint8(kWireVersion);
  pk.pack_uint16(static_cast<uint16_t>(type_));
  pk.pack_uint64(request_id_);
  pk.pack_uint8(static_cast<uint8_t>(status_.code()));
  pk.pack(status_.message());
  if (body_bytes_.empty()) {
    pk.pack_nil();
  } else {
    sb.write(body_bytes_.data(), body_bytes_.size());
  }
  return sb;
}

Result<Message> Message::DecodeHeader(const void* data, size_t size, const WireLimits& limits) {
  return Decode(data, size, limits, /*reference=*/false);
}

Result<Message> Message::DecodeHeader(Buffer frame, const WireLimits& limits) {
  TQDS_ASSIGN_OR_RETURN(Message m, Decode(frame.data(), frame.size(), limits, /*reference=*/true));
  m.raw_header_ = std::move(frame);
  return m;
}

Result<Message> Message::Decode(const void* data, size_t size, const WireLimits& limits, bool reference) {
  if (size == 0) return Status::Invalid("malformed message: empty header frame");
  if (size > limits.max_header_bytes) {
    return Status::Invalid("malformed message: header of ", size, " bytes exceeds the limit of ",
                           limits.max_header_bytes);
  }
  // A container cannot hold more elements than there are bytes left, so cap
  // the limits by the input size: a tiny header declaring a huge array must
  // not make msgpack reserve gigabytes before it notices.
  size_t max_array = std::min(limits.max_container, size);
  size_t max_map = std::min(limits.max_container, size / 2);
  msgpack::unpack_limit ul(max_array, max_map, limits.max_str, limits.max_str, limits.max_str, 64);
  auto zone = std::make_shared<msgpack::zone>();
  msgpack::object root;
  try {
    size_t off = 0;
    // Referenced strings and bytes point into `data`, which the caller keeps
    // as long as the Message (DecodeHeader(Buffer)).
    auto refer = [](msgpack::type::object_type, size_t, void*) { return true; };
    root = msgpack::unpack(*zone, static_cast<const char*>(data), size, off,
                           reference ? +refer : nullptr, nullptr, ul);
    if (off != size) {
      return Status::Invalid("malformed message: ", size - off, " trailing bytes after the header");
    }
  } catch (const std::exception& e) {
    return Status::Invalid("malformed message: header is not valid msgpack (", e.what(), ")");
  }
  if (root.type != msgpack::type::ARRAY || root.via.array.size != 6) {
    return Status::Invalid("malformed message: header must be an array of 6 elements");
  }
  const msgpack::object* f = root.via.array.ptr;
  for (int i = 0; i < 4; ++i) {
    if (f[i].type != msgpack::type::POSITIVE_INTEGER) {
      return Status::Invalid("malformed message: header element ", i, " must be an unsigned integer");
    }
  }
  if (f[0].via.u64 != kWireVersion) {
    return Status::Invalid("unsupported wire version ", f[0].via.u64, " (this build speaks ",
                           int(kWireVersion), ")");
  }
  if (f[1].via.u64 > 0xffff) return Status::Invalid("malformed message: type id out of range");
  if (f[3].via.u64 > 0xff) return Status::Invalid("malformed message: status code out of range");
  if (f[4].type != msgpack::type::STR) {
    return Status::Invalid("malformed message: status message must be a string");
  }
  Message m(static_cast<MsgType>(f[1].via.u64), f[2].via.u64);
  auto code = static_cast<StatusCode>(f[3].via.u64);
  if (code != StatusCode::kOk) {
    if (f[3].via.u64 > static_cast<uint64_t>(kLastStatusCode)) code = StatusCode::kInternal;
    m.status_ = Status(code, std::string(f[4].via.str.ptr, f[4].via.str.size));
  }
  m.body_ = f[5];
  m.zone_ = std::move(zone);
  return m;
}

Message Message::ErrorReply(const Message& request, Status status) {
  Message m(request.type(), request.request_id());
  m.status_ = std::move(status);
  return m;
}

void BodyPacker::PackFloat64(double d) {
  uint64_t bits;
  std::memcpy(&bits, &d, 8);
  char buf[9];
  buf[0] = static_cast<char>(0xcb);
  for (int i = 0; i < 8; ++i) buf[1 + i] = static_cast<char>(bits >> (56 - 8 * i));
  sb_.write(buf, 9);
}

Result<MapReader> MapReader::Of(const msgpack::object& obj, std::string what) {
  if (obj.type != msgpack::type::MAP) {
    return Status::Invalid(what, ": body must be a map, got ", TypeName(obj));
  }
  MapReader r;
  r.obj_ = &obj;
  r.what_ = std::move(what);
  return r;
}

const msgpack::object* MapReader::Find(const char* key) const {
  const auto& map = obj_->via.map;
  size_t klen = std::strlen(key);
  for (uint32_t i = 0; i < map.size; ++i) {
    const auto& k = map.ptr[i].key;
    if (k.type == msgpack::type::STR && k.via.str.size == klen &&
        std::memcmp(k.via.str.ptr, key, klen) == 0) {
      return &map.ptr[i].val;
    }
  }
  return nullptr;
}

const char* MapReader::TypeName(const msgpack::object& o) {
  switch (o.type) {
    case msgpack::type::NIL: return "nil";
    case msgpack::type::BOOLEAN: return "bool";
    case msgpack::type::POSITIVE_INTEGER: return "unsigned integer";
    case msgpack::type::NEGATIVE_INTEGER: return "negative integer";
    case msgpack::type::FLOAT32:
    case msgpack::type::FLOAT64: return "float";
    case msgpack::type::STR: return "string";
    case msgpack::type::BIN: return "binary";
    case msgpack::type::ARRAY: return "array";
    case msgpack::type::MAP: return "map";
    case msgpack::type::EXT: return "ext";
  }
  return "unknown";
}

}  // namespace tqds::wire
