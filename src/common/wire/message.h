// The wire envelope: one msgpack header frame followed by raw payload frames.
// The codec here only turns bytes into Messages and back; it never touches a
// socket (transports live in transport.h) and treats all input as hostile.
//
// Header frame: msgpack array of 6:
//   [version:uint(=1), type:uint16, request_id:uint64, status_code:uint8,
//    status_message:str, body:any]
// Frames 1..n: payload bytes, referenced from the body by position.
#pragma once

#include <msgpack.hpp>

#include <cstdint>
#include <string>
#include <vector>

#include "common/wire/msg_types.h"
#include "tqds/buffer.h"
#include "tqds/status.h"

namespace tqds::wire {

inline constexpr uint8_t kWireVersion = 1;

// Limits every decoder enforces before allocating.
struct WireLimits {
  size_t max_header_bytes = 64u << 20;  // 64 MiB of msgpack
  size_t max_frames = 1u << 22;         // payload frames in one message
  size_t max_container = 1u << 24;      // elements in one msgpack array/map
  size_t max_str = 16u << 20;           // bytes in one msgpack str/bin
};
const WireLimits& DefaultLimits();

// A decoded or to-be-encoded message. `body` is a msgpack object whose memory
// is owned by `zone` (decoded) or built from `body_bytes` (encoded).
class Message {
 public:
  Message() = default;
  Message(MsgType type, uint64_t request_id) : type_(type), request_id_(request_id) {}

  MsgType type() const { return type_; }
  uint64_t request_id() const { return request_id_; }
  void set_request_id(uint64_t id) { request_id_ = id; }
  const Status& status() const { return status_; }
  void set_status(Status s) { status_ = std::move(s); }

  // Encoded body bytes (msgpack). Set by the sender.
  void set_body(std::string packed) { body_bytes_ = std::move(packed); }
  const std::string& body_bytes() const { return body_bytes_; }
  // Decoded body object (receiver side); nil when absent.
  const msgpack::object& body() const { return body_; }

  // The header frame as received (set by RecvMessage; empty for a message
  // built here), e.g. to record a request byte for byte.
  const Buffer& raw_header() const { return raw_header_; }
  // For a Message decoded from bytes it copied; one decoded from a frame
  // (DecodeHeader(Buffer)) views that frame and must keep it.
  void set_raw_header(Buffer b) { raw_header_ = std::move(b); }

  std::vector<Buffer>& payloads() { return payloads_; }
  const std::vector<Buffer>& payloads() const { return payloads_; }

  // Encodes the header frame (not the payloads).
  std::string EncodeHeader() const;
  // The same in a buffer sized for it once, which a sender can hand over
  // without a copy (sbuffer::release; free() it).
  msgpack::sbuffer EncodeHeaderBuffer() const;
  // Decodes a header frame; payloads are attached by the transport.
  static Result<Message> DecodeHeader(const void* data, size_t size,
                                      const WireLimits& limits = DefaultLimits());
  // The same for a received frame that the Message keeps (raw_header()):
  // the body's strings and bytes are views into it, not copies.
  static Result<Message> DecodeHeader(Buffer frame, const WireLimits& limits = DefaultLimits());

  // An error reply to `request`.
  static Message ErrorReply(const Message& request, Status status);
  // A reply of the same type and id as `request`.
  static Message ReplyTo(const Message& request) { return Message(request.type(), request.request_id()); }
  // ... carrying `body` (encoded msgpack).
  static Message ReplyTo(const Message& request, std::string body) {
    Message reply = ReplyTo(request);
    reply.set_body(std::move(body));
    return reply;
  }

 private:
  MsgType type_ = MsgType::kInvalid;
  uint64_t request_id_ = 0;
  Status status_;
  std::string body_bytes_;
  msgpack::object body_;
  std::shared_ptr<msgpack::zone> zone_;
  std::vector<Buffer> payloads_;
  Buffer raw_header_;

  static Result<Message> Decode(const void* data, size_t size, const WireLimits& limits, bool reference);
};

// Reads named fields of a msgpack map with clear errors ("GetMeta: field
// 'batch_size' must be int64"). The object must outlive the reader.
class MapReader {
 public:
  static Result<MapReader> Of(const msgpack::object& obj, std::string what);

  bool Has(const char* key) const { return Find(key) != nullptr; }
  const msgpack::object* Find(const char* key) const;

  template <typename T>
  Result<T> Get(const char* key) const {
    const msgpack::object* o = Find(key);
    if (o == nullptr) return Status::Invalid(what_, ": missing field '", key, "'");
    return Convert<T>(*o, key);
  }
  template <typename T>
  Result<T> GetOr(const char* key, T fallback) const {
    const msgpack::object* o = Find(key);
    if (o == nullptr || o->type == msgpack::type::NIL) return fallback;
    return Convert<T>(*o, key);
  }
  const std::string& what() const { return what_; }

  template <typename T>
  Result<T> Convert(const msgpack::object& o, const char* key) const {
    try {
      return o.as<T>();
    } catch (const std::exception&) {
      return Status::Invalid(what_, ": field '", key, "' has the wrong type (", TypeName(o), ")");
    }
  }

 private:
  static const char* TypeName(const msgpack::object& o);
  const msgpack::object* obj_ = nullptr;
  std::string what_;
};

// A msgpack packer that can also write an exact float64 (msgpack-c's
// pack_double turns 1.0 into the integer 1).
class BodyPacker : public msgpack::packer<msgpack::sbuffer> {
 public:
  explicit BodyPacker(msgpack::sbuffer& sb) : msgpack::packer<msgpack::sbuffer>(sb), sb_(sb) {}
  void PackFloat64(double d);

 private:
  msgpack::sbuffer& sb_;
};

// Packs a body: `PackBody([](auto& pk){ pk.pack_map(2); ... })`.
template <typename Fn>
std::string PackBody(Fn&& fn) {
  msgpack::sbuffer sb;
  BodyPacker pk(sb);
  fn(pk);
  return std::string(sb.data(), sb.size());
}

}  // namespace tqds::wire
