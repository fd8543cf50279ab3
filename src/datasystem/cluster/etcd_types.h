// Value types of the etcd v3 KV/lease/watch API as EtcdClient exposes them
// (keys and values are raw bytes here; base64 exists only on the wire).
// Plain, thread-compatible structs.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace ds::cluster {

// One key as stored in etcd (mvccpb.KeyValue).
struct KeyValue {
  std::string key;
  std::string value;
  int64_t create_revision = 0;  // revision that created the key (0: absent)
  int64_t mod_revision = 0;     // revision of the last change (for a delete event: the delete)
  int64_t version = 0;          // number of puts since creation
  int64_t lease = 0;            // lease the key is attached to (0: none)
};

// Result of a range read: the keys and the store revision the read saw.
struct RangeResult {
  std::vector<KeyValue> kvs;
  int64_t revision = 0;
};

// etcd's /v3/maintenance/status, the parts we use.
struct ServerStatus {
  std::string version;  // "3.4.23"
  uint64_t cluster_id = 0;
  uint64_t leader = 0;   // 0: no leader (etcd not serving writes)
  int64_t revision = 0;  // current store revision
};

struct LeaseGrant {
  int64_t id = 0;
  int64_t ttl_seconds = 0;  // granted TTL (etcd may raise a small TTL to its minimum)
};

enum class EventType : uint8_t { kPut = 0, kDelete = 1 };

struct WatchEvent {
  EventType type = EventType::kPut;
  KeyValue kv;  // for kDelete: key and mod_revision (the delete's revision) only
};

// One compare of a transaction (etcdserverpb.Compare).
struct Compare {
  enum class Target : uint8_t { kVersion, kCreateRevision, kModRevision, kValue, kLease };
  enum class Op : uint8_t { kEqual, kGreater, kLess, kNotEqual };
  std::string key;
  Target target = Target::kCreateRevision;
  Op op = Op::kEqual;
  int64_t number = 0;  // for every target but kValue
  std::string value;   // for kValue

  // "key does not exist": create_revision == 0.
  static Compare Absent(std::string key) {
    return Compare{std::move(key), Target::kCreateRevision, Op::kEqual, 0, {}};
  }
  // "key was last changed at mod_revision".
  static Compare ModRevisionIs(std::string key, int64_t mod_revision) {
    return Compare{std::move(key), Target::kModRevision, Op::kEqual, mod_revision, {}};
  }
  static Compare ValueIs(std::string key, std::string value) {
    return Compare{std::move(key), Target::kValue, Op::kEqual, 0, std::move(value)};
  }
};

// One operation in a transaction branch.
struct TxnOp {
  enum class Type : uint8_t { kPut, kDelete, kGet };
  Type type = Type::kGet;
  std::string key;
  std::string value;    // kPut
  int64_t lease = 0;    // kPut
  bool prefix = false;  // kDelete / kGet: every key starting with `key`

  static TxnOp Put(std::string key, std::string value, int64_t lease = 0) {
    return TxnOp{Type::kPut, std::move(key), std::move(value), lease, false};
  }
  static TxnOp Delete(std::string key, bool prefix = false) {
    return TxnOp{Type::kDelete, std::move(key), {}, 0, prefix};
  }
  static TxnOp Get(std::string key, bool prefix = false) {
    return TxnOp{Type::kGet, std::move(key), {}, 0, prefix};
  }
};

struct Txn {
  std::vector<Compare> compares;  // all must hold for `success` to run
  std::vector<TxnOp> success;
  std::vector<TxnOp> failure;
};

struct TxnResult {
  bool succeeded = false;         // the compares held; `success` ran
  int64_t revision = 0;           // store revision after the transaction
  std::vector<RangeResult> gets;  // one per kGet of the branch that ran, in order
};

}  // namespace ds::cluster
