// msgpack codec for the KV controller messages.
#include "queue/kv_protocol.h"

#include <algorithm>
#include <cstring>

namespace tq::internal {

using tqds::wire::MapReader;
using tqds::wire::PackBody;

namespace {

Result<std::vector<std::string>> KeysOfArray(const MapReader& r) {
  const msgpack::object* o = r.Find("keys");
  if (o == nullptr) return Status::Invalid(r.what(), ": missing field 'keys'");
  if (o->type != msgpack::type::ARRAY) return Status::Invalid(r.what(), ": 'keys' must be an array of strings");
  if (o->via.array.size > kMaxKvKeysPerRequest) {
    return Status::Invalid(r.what(), ": ", o->via.array.size, " keys (at most ", kMaxKvKeysPerRequest, ")");
  }
  std::vector<std::string> keys;
  keys.reserve(o->via.array.size);
  for (uint32_t i = 0; i < o->via.array.size; ++i) {
    const msgpack::object& k = o->via.array.ptr[i];
    if (k.type != msgpack::type::STR) return Status::Invalid(r.what(), ": keys[", i, "] must be a string");
    keys.emplace_back(k.via.str.ptr, k.via.str.size);
  }
  TQDS_RETURN_NOT_OK(ValidateKeys(keys, r.what().c_str()));
  return keys;
}

// The keys of a request: "key_ends" (bin: one uint32 little-endian per
// key, where it ends in "key_bytes") and "key_bytes" (bin: every key's
// bytes back to back), or, as older clients send them, "keys" (an array of
// str). Every end is checked against the bytes before a key is read.
Result<std::vector<std::string>> KeysOf(const MapReader& r) {
  const msgpack::object* ends = r.Find("key_ends");
  if (ends == nullptr) return KeysOfArray(r);
  const msgpack::object* bytes = r.Find("key_bytes");
  if (ends->type != msgpack::type::BIN || ends->via.bin.size % sizeof(uint32_t) != 0) {
    return Status::Invalid(r.what(), ": 'key_ends' must be bytes holding uint32 values");
  }
  if (bytes == nullptr || bytes->type != msgpack::type::BIN) {
    return Status::Invalid(r.what(), ": 'key_bytes' must be bytes (the keys after one another)");
  }
  const size_t n = ends->via.bin.size / sizeof(uint32_t);
  if (n > kMaxKvKeysPerRequest) return Status::Invalid(r.what(), ": ", n, " keys (at most ", kMaxKvKeysPerRequest, ")");
  std::vector<std::string> keys;
  keys.reserve(n);
  uint32_t at = 0;
  for (size_t i = 0; i < n; ++i) {
    uint32_t end = 0;
    std::memcpy(&end, ends->via.bin.ptr + i * sizeof(uint32_t), sizeof(end));
    if (end < at || end > bytes->via.bin.size) {
      return Status::Invalid(r.what(), ": key_ends[", i, "] is ", end, ", outside ", at, "..",
                             bytes->via.bin.size, " (the key bytes)");
    }
    keys.emplace_back(bytes->via.bin.ptr + at, end - at);
    at = end;
  }
  if (at != bytes->via.bin.size) {
    return Status::Invalid(r.what(), ": 'key_bytes' holds ", bytes->via.bin.size, " bytes, the keys end at ", at);
  }
  TQDS_RETURN_NOT_OK(ValidateKeys(keys, r.what().c_str()));
  return keys;
}

// The keys as a bin of ends and a bin of bytes (see KeysOf).
// Ends past 4 GiB cannot be written (KeyColumns clamps them: the receiver
// refuses them); such a request is far over the 64 MiB a header may have.
void PackHeadAndKeys(Packer& pk, size_t entries, const std::string& partition_id, const KeyColumns& keys) {
  pk.pack_map(static_cast<uint32_t>(entries + 1));
  pk.pack("partition_id");
  pk.pack(partition_id);
  pk.pack("key_ends");
  const auto end_bytes = static_cast<uint32_t>(keys.ends.size() * sizeof(uint32_t));
  pk.pack_bin(end_bytes);
  pk.pack_bin_body(reinterpret_cast<const char*>(keys.ends.data()), end_bytes);
  pk.pack("key_bytes");
  const auto n = static_cast<uint32_t>(std::min<uint64_t>(keys.bytes.size(), UINT32_MAX));
  pk.pack_bin(n);
  pk.pack_bin_body(keys.bytes.data(), n);
}

}  // namespace

namespace {

// The checks every key list passes, whatever its form: how many keys, and
// each key a name (naming the key, cut at 64 bytes).
Status CheckKeyCount(size_t n, const char* what) {
  if (n > kMaxKvKeysPerRequest) return Status::Invalid(what, ": ", n, " keys (at most ", kMaxKvKeysPerRequest, ")");
  return Status::OK();
}
Status CheckKey(std::string_view k, const char* what) {
  Status st = ValidateName(k, "key");
  if (!st.ok()) return st.WithContext(std::string(what) + " key '" + std::string(k.substr(0, 64)) + "'");
  return st;
}

}  // namespace

Status ValidateKeys(const std::vector<std::string>& keys, const char* what) {
  TQDS_RETURN_NOT_OK(CheckKeyCount(keys.size(), what));
  for (const auto& k : keys) TQDS_RETURN_NOT_OK(CheckKey(k, what));
  return Status::OK();
}

Status ValidateKeys(const KeyColumns& keys, const char* what) {
  TQDS_RETURN_NOT_OK(CheckKeyCount(keys.size(), what));
  uint32_t begin = 0;
  for (size_t i = 0; i < keys.size(); ++i) {
    const uint32_t end = keys.ends[i];
    if (end < begin || end > keys.bytes.size() || (end == UINT32_MAX && keys.bytes.size() > UINT32_MAX)) {
      return Status::Invalid(what, ": the keys of one request hold more than 4 GiB, or their ends are out of order");
    }
    TQDS_RETURN_NOT_OK(CheckKey(std::string_view(keys.bytes).substr(begin, end - begin), what));
    begin = end;
  }
  if (begin != keys.bytes.size()) return Status::Invalid(what, ": key bytes past the last key's end");
  return Status::OK();
}

std::string EncodeKvRetrieve(const std::string& partition_id, const KeyColumns& keys, bool create) {
  return PackBody([&](Packer& pk) {
    PackHeadAndKeys(pk, 3, partition_id, keys);
    pk.pack("create");
    pk.pack(create);
  });
}

std::string EncodeKvClear(const std::string& partition_id, const KeyColumns& keys) {
  return PackBody([&](Packer& pk) { PackHeadAndKeys(pk, 2, partition_id, keys); });
}

std::string KvRetrieveRequest::Encode() const {
  return EncodeKvRetrieve(partition_id, KeyColumns::Of(keys), create);
}

Result<KvRetrieveRequest> KvRetrieveRequest::Decode(const msgpack::object& body) {
  TQDS_ASSIGN_OR_RETURN(auto r, MapReader::Of(body, "KvRetrieve"));
  KvRetrieveRequest req;
  TQDS_ASSIGN_OR_RETURN(req.partition_id, ValidPartitionOf(r));
  TQDS_ASSIGN_OR_RETURN(req.keys, KeysOf(r));
  TQDS_ASSIGN_OR_RETURN(req.create, r.GetOr<bool>("create", false));
  return req;
}

std::string KvKeysRequest::Encode() const {
  return PackBody([&](Packer& pk) {
    pk.pack_map(2);
    pk.pack("partition_id");
    pk.pack(partition_id);
    pk.pack("global_indexes");
    pk.pack(global_indexes);
  });
}

Result<KvKeysRequest> KvKeysRequest::Decode(const msgpack::object& body) {
  TQDS_ASSIGN_OR_RETURN(auto r, MapReader::Of(body, "KvKeys"));
  KvKeysRequest req;
  TQDS_ASSIGN_OR_RETURN(req.partition_id, ValidPartitionOf(r));
  TQDS_ASSIGN_OR_RETURN(req.global_indexes, r.Get<std::vector<int64_t>>("global_indexes"));
  return req;
}

std::string EncodeKvKeysReply(const std::vector<std::optional<std::string>>& keys) {
  return PackBody([&](Packer& pk) {
    pk.pack_map(1);
    pk.pack("keys");
    pk.pack_array(static_cast<uint32_t>(keys.size()));
    for (const auto& k : keys) {
      if (k) {
        pk.pack(*k);
      } else {
        pk.pack_nil();
      }
    }
  });
}

Result<std::vector<std::optional<std::string>>> DecodeKvKeysReply(const msgpack::object& body) {
  TQDS_ASSIGN_OR_RETURN(auto r, MapReader::Of(body, "KvKeys reply"));
  const msgpack::object* o = r.Find("keys");
  if (o == nullptr || o->type != msgpack::type::ARRAY) {
    return Status::Invalid("KvKeys reply: 'keys' must be an array");
  }
  std::vector<std::optional<std::string>> out(o->via.array.size);
  for (uint32_t i = 0; i < o->via.array.size; ++i) {
    const msgpack::object& k = o->via.array.ptr[i];
    if (k.type == msgpack::type::STR) {
      out[i].emplace(k.via.str.ptr, k.via.str.size);
    } else if (k.type != msgpack::type::NIL) {
      return Status::Invalid("KvKeys reply: keys[", i, "] must be a string or nil");
    }
  }
  return out;
}

std::string KvListRequest::Encode() const {
  return PackBody([&](Packer& pk) {
    pk.pack_map(1);
    pk.pack("partition_id");
    if (partition_id) {
      pk.pack(*partition_id);
    } else {
      pk.pack_nil();
    }
  });
}

Result<KvListRequest> KvListRequest::Decode(const msgpack::object& body) {
  KvListRequest req;
  if (body.type == msgpack::type::NIL) return req;
  TQDS_ASSIGN_OR_RETURN(auto r, MapReader::Of(body, "KvList"));
  const msgpack::object* o = r.Find("partition_id");
  if (o != nullptr && o->type != msgpack::type::NIL) {
    TQDS_ASSIGN_OR_RETURN(req.partition_id, ValidPartitionOf(r));
  }
  return req;
}

std::string EncodeKvListReply(const KvListing& listing) {
  return PackBody([&](Packer& pk) {
    pk.pack_map(1);
    pk.pack("partitions");
    pk.pack_array(static_cast<uint32_t>(listing.size()));
    for (const auto& part : listing) {
      pk.pack_array(2);
      pk.pack(part.partition_id);
      pk.pack_array(static_cast<uint32_t>(2 * part.entries.size()));
      for (const auto& e : part.entries) {
        pk.pack(e.key);
        PackCustomMeta(pk, e.tags);
      }
    }
  });
}

Result<KvListing> DecodeKvListReply(const msgpack::object& body) {
  TQDS_ASSIGN_OR_RETURN(auto r, MapReader::Of(body, "KvList reply"));
  const msgpack::object* o = r.Find("partitions");
  if (o == nullptr || o->type != msgpack::type::ARRAY) {
    return Status::Invalid("KvList reply: 'partitions' must be an array");
  }
  KvListing listing(o->via.array.size);
  for (uint32_t i = 0; i < o->via.array.size; ++i) {
    const msgpack::object& part = o->via.array.ptr[i];
    if (part.type != msgpack::type::ARRAY || part.via.array.size != 2 ||
        part.via.array.ptr[0].type != msgpack::type::STR || part.via.array.ptr[1].type != msgpack::type::ARRAY ||
        part.via.array.ptr[1].via.array.size % 2 != 0) {
      return Status::Invalid("KvList reply: partitions[", i, "] must be [partition_id, [key, tags, ...]]");
    }
    const auto& pid = part.via.array.ptr[0].via.str;
    listing[i].partition_id.assign(pid.ptr, pid.size);
    const auto& flat = part.via.array.ptr[1].via.array;
    listing[i].entries.resize(flat.size / 2);
    for (uint32_t e = 0; e < flat.size / 2; ++e) {
      const msgpack::object& key = flat.ptr[2 * e];
      if (key.type != msgpack::type::STR) return Status::Invalid("KvList reply: keys must be strings");
      listing[i].entries[e].key.assign(key.via.str.ptr, key.via.str.size);
      TQDS_ASSIGN_OR_RETURN(listing[i].entries[e].tags, UnpackCustomMeta(flat.ptr[2 * e + 1], "KvList reply tags"));
    }
  }
  return listing;
}

std::string KvPutRequest::Encode(const std::string& partition_id, const std::vector<std::string>& keys,
                                 const BatchMeta& meta) {
  return PackBody([&](Packer& pk) {
    PackHeadAndKeys(pk, 3, partition_id, KeyColumns::Of(keys));
    pk.pack("meta");
    PackBatchMeta(pk, meta);
  });
}

std::string KvPutRequest::Encode(const std::string& partition_id, const KeyColumns& keys, const Batch& batch,
                                 const std::vector<std::vector<Placement>>& placed) {
  return PackBody([&](Packer& pk) {
    PackHeadAndKeys(pk, 3, partition_id, keys);
    pk.pack("meta");
    PackBatchMeta(pk, batch, partition_id, placed);
  });
}

Result<KvPutRequest> KvPutRequest::Decode(const msgpack::object& body) {
  TQDS_ASSIGN_OR_RETURN(auto r, MapReader::Of(body, "KvPut"));
  KvPutRequest req;
  TQDS_ASSIGN_OR_RETURN(req.partition_id, ValidPartitionOf(r));
  TQDS_ASSIGN_OR_RETURN(req.keys, KeysOf(r));
  const msgpack::object* m = r.Find("meta");
  if (m == nullptr) return Status::Invalid("KvPut: missing field 'meta'");
  TQDS_ASSIGN_OR_RETURN(req.records, UnpackMetaRecords(*m, "KvPut.meta"));
  if (req.records.size() != req.keys.size()) {
    return Status::Invalid("KvPut: ", req.keys.size(), " keys but the meta has ", req.records.size(), " samples");
  }
  return req;
}

std::string EncodeKvPutReply(const KvPutResult& result, const std::vector<uint64_t>& dead_packs) {
  return PackBody([&](Packer& pk) {
    pk.pack_map(1 + (result.tags.empty() ? 0 : 1) + (dead_packs.empty() ? 0 : 1));
    pk.pack("fields");
    pk.pack(result.fields);
    if (!result.tags.empty()) {
      pk.pack("tags");
      pk.pack_array(static_cast<uint32_t>(result.tags.size()));
      for (const auto& t : result.tags) PackCustomMeta(pk, t);
    }
    if (!dead_packs.empty()) PackDeadPacksEntry(pk, dead_packs);
  });
}

Result<KvPutResult> DecodeKvPutReply(const msgpack::object& body) {
  TQDS_ASSIGN_OR_RETURN(auto r, MapReader::Of(body, "KvPut reply"));
  KvPutResult out;
  TQDS_ASSIGN_OR_RETURN(out.fields, r.Get<std::vector<std::string>>("fields"));
  if (const msgpack::object* t = r.Find("tags"); t != nullptr) {
    TQDS_ASSIGN_OR_RETURN(auto tags, AsArray(*t, "KvPut reply tags"));
    out.tags.reserve(tags->size);
    for (uint32_t i = 0; i < tags->size; ++i) {
      TQDS_ASSIGN_OR_RETURN(auto one, UnpackCustomMeta(tags->ptr[i], "KvPut reply tags[" + std::to_string(i) + "]"));
      out.tags.push_back(std::move(one));
    }
  }
  return out;
}

std::string KvClearRequest::Encode() const {
  return EncodeKvClear(partition_id, KeyColumns::Of(keys));
}

Result<KvClearRequest> KvClearRequest::Decode(const msgpack::object& body) {
  TQDS_ASSIGN_OR_RETURN(auto r, MapReader::Of(body, "KvClear"));
  KvClearRequest req;
  TQDS_ASSIGN_OR_RETURN(req.partition_id, ValidPartitionOf(r));
  TQDS_ASSIGN_OR_RETURN(req.keys, KeysOf(r));
  return req;
}

}  // namespace tq::internal
