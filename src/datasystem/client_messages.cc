// Client-worker messages: encoders and decoders.
#include "datasystem/client_messages.h"

namespace ds::msg {
namespace {

using tqds::Status;
using tqds::wire::MapReader;
using tqds::wire::PackBody;
using Packer = tqds::wire::BodyPacker;

void PackKeys(Packer& pk, const std::vector<std::string>& keys) {
  pk.pack(proto::kKeys);
  pk.pack_array(static_cast<uint32_t>(keys.size()));
  for (const auto& k : keys) pk.pack(k);
}

// 4 map entries.
void PackWrite(Packer& pk, const WriteFlags& w) {
  pk.pack(proto::kEvictable);
  pk.pack(w.evictable);
  pk.pack(proto::kTtlMs);
  pk.pack(w.ttl_ms);
  pk.pack(proto::kIfAbsent);
  pk.pack(w.if_absent);
  pk.pack(proto::kAllOrNothing);
  pk.pack(w.all_or_nothing);
}

void PackBools(Packer& pk, const char* name, const std::vector<bool>& v) {
  pk.pack(name);
  pk.pack_array(static_cast<uint32_t>(v.size()));
  for (bool b : v) {
    if (b) pk.pack_true(); else pk.pack_false();
  }
}

void PackCodes(Packer& pk, const std::vector<StatusCode>& codes) {
  pk.pack(proto::kCodes);
  pk.pack_array(static_cast<uint32_t>(codes.size()));
  for (auto c : codes) pk.pack_uint8(static_cast<uint8_t>(c));
}

Result<std::vector<std::string>> ReadKeys(const MapReader& r) {
  TQDS_ASSIGN_OR_RETURN(auto keys, r.Get<std::vector<std::string>>(proto::kKeys));
  TQDS_RETURN_NOT_OK(CheckKeys(keys, r.what().c_str()));
  return keys;
}

Result<WriteFlags> ReadWrite(const MapReader& r) {
  WriteFlags w;
  TQDS_ASSIGN_OR_RETURN(w.evictable, r.GetOr<bool>(proto::kEvictable, false));
  TQDS_ASSIGN_OR_RETURN(w.ttl_ms, r.GetOr<uint64_t>(proto::kTtlMs, 0));
  TQDS_ASSIGN_OR_RETURN(w.if_absent, r.GetOr<bool>(proto::kIfAbsent, false));
  TQDS_ASSIGN_OR_RETURN(w.all_or_nothing, r.GetOr<bool>(proto::kAllOrNothing, false));
  if (w.all_or_nothing && !w.if_absent) {
    return Status::Invalid(r.what(), ": an all-or-nothing write needs if-absent (nx): only new keys are written "
                           "together");
  }
  return w;
}

// Read straight from the msgpack array: no intermediate vector, no exception.
Result<std::vector<StatusCode>> ReadCodes(const MapReader& r, size_t asked) {
  const msgpack::object* o = r.Find(proto::kCodes);
  if (o == nullptr) return Status::Invalid(r.what(), ": missing field 'codes'");
  if (o->type != msgpack::type::ARRAY) return Status::Invalid(r.what(), ": field 'codes' must be an array");
  if (o->via.array.size != asked) {
    return Status::Invalid(r.what(), ": ", o->via.array.size, " codes for ", asked, " keys");
  }
  std::vector<StatusCode> codes(asked);
  for (size_t i = 0; i < asked; ++i) {
    const msgpack::object& c = o->via.array.ptr[i];
    if (c.type != msgpack::type::POSITIVE_INTEGER || c.via.u64 > static_cast<uint64_t>(tqds::kLastStatusCode)) {
      return Status::Invalid(r.what(), ": unknown status code ",
                             c.type == msgpack::type::POSITIVE_INTEGER ? std::to_string(c.via.u64) : "(not a uint)");
    }
    codes[i] = static_cast<StatusCode>(c.via.u64);
  }
  return codes;
}

template <typename T>
Result<std::vector<T>> ReadArray(const MapReader& r, const char* name, size_t asked) {
  TQDS_ASSIGN_OR_RETURN(auto v, r.Get<std::vector<T>>(name));
  if (v.size() != asked) return Status::Invalid(r.what(), ": ", v.size(), " ", name, " for ", asked, " keys");
  return v;
}

}  // namespace

Status CheckKeys(const std::vector<std::string>& keys, const char* what) {
  for (const auto& k : keys) {
    if (k.empty()) return Status::Invalid(what, ": empty key");
    if (k.size() > proto::kMaxKeyBytes) {
      return Status::Invalid(what, ": key of ", k.size(), " bytes exceeds the limit of ", proto::kMaxKeyBytes);
    }
  }
  return Status::OK();
}

// ------------------------------------------------------------------ requests

std::string EncodeKeys(const std::vector<std::string>& keys) {
  return PackBody([&](Packer& pk) {
    pk.pack_map(1);
    PackKeys(pk, keys);
  });
}

Result<std::vector<std::string>> DecodeKeys(const msgpack::object& body, const char* what) {
  TQDS_ASSIGN_OR_RETURN(auto r, MapReader::Of(body, what));
  return ReadKeys(r);
}

std::string EncodeCreate(const std::vector<std::string>& keys, const std::vector<uint64_t>& sizes,
                         const WriteFlags& write) {
  return PackBody([&](Packer& pk) {
    pk.pack_map(6);
    PackKeys(pk, keys);
    pk.pack(proto::kSizes);
    pk.pack(sizes);
    PackWrite(pk, write);
  });
}

Result<Create> DecodeCreate(const msgpack::object& body) {
  TQDS_ASSIGN_OR_RETURN(auto r, MapReader::Of(body, "Create"));
  Create m;
  TQDS_ASSIGN_OR_RETURN(m.keys, ReadKeys(r));
  TQDS_ASSIGN_OR_RETURN(m.sizes, r.Get<std::vector<uint64_t>>(proto::kSizes));
  TQDS_ASSIGN_OR_RETURN(m.write, ReadWrite(r));
  if (m.sizes.size() != m.keys.size()) {
    return Status::Invalid("Create: ", m.keys.size(), " keys but ", m.sizes.size(), " sizes");
  }
  return m;
}

std::string EncodePut(const std::vector<std::string>& keys, const WriteFlags& write) {
  return PackBody([&](Packer& pk) {
    pk.pack_map(5);
    PackKeys(pk, keys);
    PackWrite(pk, write);
  });
}

Result<Put> DecodePut(const msgpack::object& body) {
  TQDS_ASSIGN_OR_RETURN(auto r, MapReader::Of(body, "Put"));
  Put m;
  TQDS_ASSIGN_OR_RETURN(m.keys, ReadKeys(r));
  TQDS_ASSIGN_OR_RETURN(m.write, ReadWrite(r));
  return m;
}

std::string EncodeOffsets(const std::vector<uint64_t>& offsets) {
  return PackBody([&](Packer& pk) {
    pk.pack_map(1);
    pk.pack(proto::kOffsets);
    pk.pack(offsets);
  });
}

Result<std::vector<uint64_t>> DecodeOffsets(const msgpack::object& body, const char* what) {
  TQDS_ASSIGN_OR_RETURN(auto r, MapReader::Of(body, what));
  return r.Get<std::vector<uint64_t>>(proto::kOffsets);
}

std::string EncodeGet(const std::vector<std::string>& keys, uint64_t wait_ms, uint64_t inline_max,
                      const std::vector<ValueRange>& ranges) {
  return PackBody([&](Packer& pk) {
    pk.pack_map(ranges.empty() ? 3 : 5);
    PackKeys(pk, keys);
    pk.pack(proto::kWaitMs);
    pk.pack(wait_ms);
    pk.pack(proto::kInlineMax);
    pk.pack(inline_max);
    if (ranges.empty()) return;
    pk.pack(proto::kReadOffsets);
    pk.pack_array(static_cast<uint32_t>(ranges.size()));
    for (const auto& r : ranges) pk.pack_uint64(r.offset);
    pk.pack(proto::kReadLengths);
    pk.pack_array(static_cast<uint32_t>(ranges.size()));
    for (const auto& r : ranges) pk.pack_uint64(r.length);
  });
}

Result<Get> DecodeGet(const msgpack::object& body) {
  TQDS_ASSIGN_OR_RETURN(auto r, MapReader::Of(body, "Get"));
  Get m;
  TQDS_ASSIGN_OR_RETURN(m.keys, ReadKeys(r));
  TQDS_ASSIGN_OR_RETURN(m.wait_ms, r.GetOr<uint64_t>(proto::kWaitMs, 0));
  TQDS_ASSIGN_OR_RETURN(m.inline_max, r.GetOr<uint64_t>(proto::kInlineMax, 0));
  if (r.Has(proto::kReadOffsets) || r.Has(proto::kReadLengths)) {
    TQDS_ASSIGN_OR_RETURN(auto offsets, ReadArray<uint64_t>(r, proto::kReadOffsets, m.keys.size()));
    TQDS_ASSIGN_OR_RETURN(auto lengths, ReadArray<uint64_t>(r, proto::kReadLengths, m.keys.size()));
    m.ranges.resize(m.keys.size());
    for (size_t i = 0; i < m.keys.size(); ++i) m.ranges[i] = ValueRange{offsets[i], lengths[i]};
  }
  return m;
}

std::string EncodeExpire(const std::vector<std::string>& keys, uint64_t ttl_ms) {
  return PackBody([&](Packer& pk) {
    pk.pack_map(2);
    PackKeys(pk, keys);
    pk.pack(proto::kTtlMs);
    pk.pack(ttl_ms);
  });
}

Result<Expire> DecodeExpire(const msgpack::object& body) {
  TQDS_ASSIGN_OR_RETURN(auto r, MapReader::Of(body, "Expire"));
  Expire m;
  TQDS_ASSIGN_OR_RETURN(m.keys, ReadKeys(r));
  TQDS_ASSIGN_OR_RETURN(m.ttl_ms, r.Get<uint64_t>(proto::kTtlMs));
  return m;
}

// ------------------------------------------------------------------ replies

std::string Encode(const Hello& m) {
  return PackBody([&](Packer& pk) {
    pk.pack_map(6);
    pk.pack(proto::kWorker);
    pk.pack(m.worker);
    pk.pack(proto::kInstance);
    pk.pack(m.instance);
    pk.pack(proto::kPid);
    pk.pack(m.pid);
    pk.pack(proto::kSocket);
    pk.pack(m.socket);
    pk.pack(proto::kArenaSize);
    pk.pack(m.arena_size);
    pk.pack(proto::kInlineMax);
    pk.pack(m.inline_max);
  });
}

Result<Hello> DecodeHello(const msgpack::object& body) {
  TQDS_ASSIGN_OR_RETURN(auto r, MapReader::Of(body, "Hello reply"));
  Hello m;
  TQDS_ASSIGN_OR_RETURN(m.worker, r.GetOr<std::string>(proto::kWorker, ""));
  TQDS_ASSIGN_OR_RETURN(m.instance, r.Get<uint64_t>(proto::kInstance));
  TQDS_ASSIGN_OR_RETURN(m.pid, r.GetOr<int64_t>(proto::kPid, 0));
  TQDS_ASSIGN_OR_RETURN(m.socket, r.Get<std::string>(proto::kSocket));
  TQDS_ASSIGN_OR_RETURN(m.arena_size, r.Get<uint64_t>(proto::kArenaSize));
  TQDS_ASSIGN_OR_RETURN(m.inline_max, r.GetOr<uint64_t>(proto::kInlineMax, proto::kDefaultInlineMax));
  return m;
}

std::string EncodeCodes(const std::vector<StatusCode>& codes) {
  return PackBody([&](Packer& pk) {
    pk.pack_map(1);
    PackCodes(pk, codes);
  });
}

Result<std::vector<StatusCode>> DecodeCodes(const msgpack::object& body, size_t asked, const char* what) {
  TQDS_ASSIGN_OR_RETURN(auto r, MapReader::Of(body, what));
  return ReadCodes(r, asked);
}

std::string Encode(const CreateReply& m) {
  return PackBody([&](Packer& pk) {
    pk.pack_map(2);
    PackCodes(pk, m.codes);
    pk.pack(proto::kOffsets);
    pk.pack(m.offsets);
  });
}

Result<CreateReply> DecodeCreateReply(const msgpack::object& body, size_t asked) {
  TQDS_ASSIGN_OR_RETURN(auto r, MapReader::Of(body, "Create reply"));
  CreateReply m;
  TQDS_ASSIGN_OR_RETURN(m.codes, ReadCodes(r, asked));
  TQDS_ASSIGN_OR_RETURN(m.offsets, ReadArray<uint64_t>(r, proto::kOffsets, asked));
  return m;
}

std::string Encode(const GetReply& m) {
  return EncodeGetReply(
      m.codes.size(),
      [&](size_t i) {
        return GetItem{m.codes[i], m.sizes[i], m.offsets[i], static_cast<bool>(m.inline_[i]),
                       m.from.empty() ? 0 : m.from[i]};
      },
      !m.from.empty());
}

Result<GetReply> DecodeGetReply(const msgpack::object& body, size_t asked) {
  TQDS_ASSIGN_OR_RETURN(auto r, MapReader::Of(body, "Get reply"));
  GetReply m;
  TQDS_ASSIGN_OR_RETURN(m.codes, ReadCodes(r, asked));
  TQDS_ASSIGN_OR_RETURN(m.sizes, ReadArray<uint64_t>(r, proto::kSizes, asked));
  TQDS_ASSIGN_OR_RETURN(m.offsets, ReadArray<uint64_t>(r, proto::kOffsets, asked));
  TQDS_ASSIGN_OR_RETURN(m.inline_, ReadArray<bool>(r, proto::kInline, asked));
  if (r.Has(proto::kFrom)) {
    TQDS_ASSIGN_OR_RETURN(m.from, ReadArray<uint64_t>(r, proto::kFrom, asked));
  }
  return m;
}

std::string EncodeExist(const std::vector<bool>& exist) {
  return PackBody([&](Packer& pk) {
    pk.pack_map(1);
    PackBools(pk, proto::kExist, exist);
  });
}

Result<std::vector<bool>> DecodeExist(const msgpack::object& body, size_t asked, const char* what) {
  TQDS_ASSIGN_OR_RETURN(auto r, MapReader::Of(body, what));
  return ReadArray<bool>(r, proto::kExist, asked);
}

std::string EncodeDeleted(uint64_t n) {
  return PackBody([&](Packer& pk) {
    pk.pack_map(1);
    pk.pack(proto::kDeleted);
    pk.pack_uint64(n);
  });
}

Result<uint64_t> DecodeDeleted(const msgpack::object& body, const char* what) {
  TQDS_ASSIGN_OR_RETURN(auto r, MapReader::Of(body, what));
  return r.Get<uint64_t>(proto::kDeleted);
}

std::string EncodePid(int64_t pid) {
  return PackBody([&](Packer& pk) {
    pk.pack_map(1);
    pk.pack(proto::kPid);
    pk.pack(pid);
  });
}

Result<int64_t> DecodePid(const msgpack::object& body) {
  TQDS_ASSIGN_OR_RETURN(auto r, MapReader::Of(body, "Shutdown reply"));
  return r.GetOr<int64_t>(proto::kPid, 0);
}

}  // namespace ds::msg
