// Bodies of the KV controller messages (KvRetrieve, KvPut, KvKeys, KvList,
// KvClear)
// and their replies: each request struct encodes and decodes itself; decoders
// treat input as hostile (names validated, key counts bounded). Layouts are
// in docs/wire_format.md. Socket-free.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "queue/protocol.h"
#include "tq/kv.h"

namespace tq::internal {

// {"partition_id": str, "keys": [str], "create": bool} -> BatchMeta.
struct KvRetrieveRequest {
  std::string partition_id;
  std::vector<std::string> keys;
  bool create = false;
  std::string Encode() const;
  static Result<KvRetrieveRequest> Decode(const msgpack::object& body);
};

// {"partition_id": str, "global_indexes": [int64]} -> {"keys": [str | nil]}.
struct KvKeysRequest {
  std::string partition_id;
  std::vector<int64_t> global_indexes;
  std::string Encode() const;
  static Result<KvKeysRequest> Decode(const msgpack::object& body);
};
std::string EncodeKvKeysReply(const std::vector<std::optional<std::string>>& keys);
Result<std::vector<std::optional<std::string>>> DecodeKvKeysReply(const msgpack::object& body);

// {"partition_id": str | nil} -> {"partitions": [[partition_id, [key,
// CustomMeta, key, CustomMeta, ...]], ...]}.
struct KvListRequest {
  std::optional<std::string> partition_id;
  std::string Encode() const;
  static Result<KvListRequest> Decode(const msgpack::object& body);
};
std::string EncodeKvListReply(const KvListing& listing);
Result<KvListing> DecodeKvListReply(const msgpack::object& body);

// {"partition_id": str, "keys": [str]} -> SampleList (phase 1 of a clear).
struct KvClearRequest {
  std::string partition_id;
  std::vector<std::string> keys;
  std::string Encode() const;
  static Result<KvClearRequest> Decode(const msgpack::object& body);
};

// {"partition_id": str, "keys": [str], "meta": BatchMeta} -> {"fields":
// [str], "tags": [CustomMeta] (only when some key has tags), "dead_packs":
// bytes (only when some)}. `meta` holds one sample per key, in key order:
// its field records with their places; its samples' indexes, generations
// and partition ids are not read.
struct KvPutRequest {
  std::string partition_id;
  std::vector<std::string> keys;
  MetaRecords records;  // one sample per key (read without making SampleMetas)
  static std::string Encode(const std::string& partition_id, const std::vector<std::string>& keys,
                            const BatchMeta& meta);
  // The same bytes for the meta that records `batch`'s values, all stored
  // where `placed[f][i]` says, without making its records.
  static std::string Encode(const std::string& partition_id, const KeyColumns& keys, const Batch& batch,
                            const std::vector<std::vector<Placement>>& placed);
  static Result<KvPutRequest> Decode(const msgpack::object& body);
};
std::string EncodeKvPutReply(const KvPutResult& result, const std::vector<uint64_t>& dead_packs);
Result<KvPutResult> DecodeKvPutReply(const msgpack::object& body);

// Checks a key list as every KV request must hold it: at most
// kMaxKvKeysPerRequest keys, each a valid name (and, for columns, ends in
// order within the bytes).
Status ValidateKeys(const std::vector<std::string>& keys, const char* what);
Status ValidateKeys(const KeyColumns& keys, const char* what);

// KvRetrieve and KvClear bodies of keys given as columns (the request
// structs' Encode, without a std::string per key).
std::string EncodeKvRetrieve(const std::string& partition_id, const KeyColumns& keys, bool create);
std::string EncodeKvClear(const std::string& partition_id, const KeyColumns& keys);

}  // namespace tq::internal
