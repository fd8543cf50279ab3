// The messages between a datasystem client (KVClient, dscli) and its worker
// (types 100-110 and 115, common/wire/msg_types.h), each with its encoder and
// decoder side by side: the client and the worker's RequestHandler call the
// same pair, and the fuzz target fuzz/ds_requests.cc drives the decoders
// through the handler. Bodies are msgpack maps with the field names of
// protocol.h; the table is in docs/datasystem.md.
//
// Decoders treat every length as hostile: keys must be 1 to
// proto::kMaxKeyBytes bytes, parallel arrays must have equal lengths, a
// reply must answer for exactly the keys asked, and a status code must be
// one this build knows.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/wire/message.h"
#include "datasystem/protocol.h"
#include "tqds/status.h"

namespace ds::msg {

using tqds::Result;
using tqds::StatusCode;

// How a Create or Put writes (the worker's WriteOptions without `cached`).
struct WriteFlags {
  bool evictable = false;
  uint64_t ttl_ms = 0;
  bool if_absent = false;
  bool all_or_nothing = false;  // needs if_absent
};

// Every key a client or a peer names: 1 to proto::kMaxKeyBytes bytes.
tqds::Status CheckKeys(const std::vector<std::string>& keys, const char* what);

// ---- requests

// Delete (106), Exist (107), and the peers' MetaLookup/MetaRemove: the keys.
std::string EncodeKeys(const std::vector<std::string>& keys);
Result<std::vector<std::string>> DecodeKeys(const msgpack::object& body, const char* what);

// Create (101): objects of these sizes in shared memory, not yet visible.
struct Create {
  std::vector<std::string> keys;
  std::vector<uint64_t> sizes;
  WriteFlags write;
};
std::string EncodeCreate(const std::vector<std::string>& keys, const std::vector<uint64_t>& sizes,
                         const WriteFlags& write);
Result<Create> DecodeCreate(const msgpack::object& body);

// Put (103): one payload frame per key travels with it.
struct Put {
  std::vector<std::string> keys;
  WriteFlags write;
};
std::string EncodePut(const std::vector<std::string>& keys, const WriteFlags& write);
Result<Put> DecodePut(const msgpack::object& body);

// Seal (102), Release (105), Abort (110): blocks named by their offsets.
std::string EncodeOffsets(const std::vector<uint64_t>& offsets);
Result<std::vector<uint64_t>> DecodeOffsets(const msgpack::object& body, const char* what);

// Get (104). With ranges (one per key; empty: whole values), a key that
// this worker must pull from another may come back as only its range.
struct Get {
  std::vector<std::string> keys;
  uint64_t wait_ms = 0;
  uint64_t inline_max = 0;  // the Unix socket: values up to this size come as payloads
  std::vector<ValueRange> ranges;
};
std::string EncodeGet(const std::vector<std::string>& keys, uint64_t wait_ms, uint64_t inline_max,
                      const std::vector<ValueRange>& ranges = {});
Result<Get> DecodeGet(const msgpack::object& body);

// Expire (115).
struct Expire {
  std::vector<std::string> keys;
  uint64_t ttl_ms = 0;
};
std::string EncodeExpire(const std::vector<std::string>& keys, uint64_t ttl_ms);
Result<Expire> DecodeExpire(const msgpack::object& body);

// ---- replies

// Hello (100).
struct Hello {
  std::string worker;       // "host:port"
  uint64_t instance = 0;    // random id of the worker process
  int64_t pid = 0;
  std::string socket;       // its Unix socket
  uint64_t arena_size = 0;  // 0 over TCP
  uint64_t inline_max = 0;
};
std::string Encode(const Hello& m);
Result<Hello> DecodeHello(const msgpack::object& body);

// Seal and Put: one code per key (or offset) asked.
std::string EncodeCodes(const std::vector<StatusCode>& codes);
Result<std::vector<StatusCode>> DecodeCodes(const msgpack::object& body, size_t asked, const char* what);

// Create: a code and an offset per key asked.
struct CreateReply {
  std::vector<StatusCode> codes;
  std::vector<uint64_t> offsets;
};
std::string Encode(const CreateReply& m);
Result<CreateReply> DecodeCreateReply(const msgpack::object& body, size_t asked);

// Get: per key asked, its code, size, offset in the arena, and whether its
// bytes came as the next payload frame; for a ranged Get, where in the value
// each block starts (empty when every block is a whole value).
struct GetReply {
  std::vector<StatusCode> codes;
  std::vector<uint64_t> sizes;
  std::vector<uint64_t> offsets;
  std::vector<bool> inline_;
  std::vector<uint64_t> from;
};
std::string Encode(const GetReply& m);
Result<GetReply> DecodeGetReply(const msgpack::object& body, size_t asked);
// The same reply packed straight from `n` items (`at(i)` gives item i): the
// worker's Get answers without building the four arrays first.
struct GetItem {
  StatusCode code;
  uint64_t size;
  uint64_t offset;
  bool in_line;
  uint64_t from = 0;
};
// `partial`: some item's block is part of its value (adds "from").
template <typename At>
std::string EncodeGetReply(size_t n, At&& at, bool partial = false) {
  return tqds::wire::PackBody([&](tqds::wire::BodyPacker& pk) {
    const auto count = static_cast<uint32_t>(n);
    pk.pack_map(partial ? 5 : 4);
    if (partial) {
      pk.pack(proto::kFrom);
      pk.pack_array(count);
      for (size_t i = 0; i < n; ++i) pk.pack_uint64(at(i).from);
    }
    pk.pack(proto::kCodes);
    pk.pack_array(count);
    for (size_t i = 0; i < n; ++i) pk.pack_uint8(static_cast<uint8_t>(at(i).code));
    pk.pack(proto::kSizes);
    pk.pack_array(count);
    for (size_t i = 0; i < n; ++i) pk.pack_uint64(at(i).size);
    pk.pack(proto::kOffsets);
    pk.pack_array(count);
    for (size_t i = 0; i < n; ++i) pk.pack_uint64(at(i).offset);
    pk.pack(proto::kInline);
    pk.pack_array(count);
    for (size_t i = 0; i < n; ++i) {
      if (at(i).in_line) pk.pack_true(); else pk.pack_false();
    }
  });
}

// Exist and Expire: one flag per key asked.
std::string EncodeExist(const std::vector<bool>& exist);
Result<std::vector<bool>> DecodeExist(const msgpack::object& body, size_t asked, const char* what);

// Delete (and the peers' DropCopies): how many went.
std::string EncodeDeleted(uint64_t n);
Result<uint64_t> DecodeDeleted(const msgpack::object& body, const char* what);

// Shutdown: the worker's pid.
std::string EncodePid(int64_t pid);
Result<int64_t> DecodePid(const msgpack::object& body);

}  // namespace ds::msg
