// Every message type id on the wire, in one place. Values are wire-stable:
// never renumber, only append. Documented in docs/wire_format.md.
#pragma once

#include <cstdint>

namespace tqds::wire {

enum class MsgType : uint16_t {
  kInvalid = 0,
  kError = 1,  // reply carrying only a non-OK status

  // TransferQueue controller (10-49)
  kCtlRegisterStorage = 10,   // a storage manager announces its units
  kCtlAllocate = 11,          // reserve global indexes in a partition
  kCtlNotifyProduced = 12,    // fields of samples are now in storage
  kCtlGetMeta = 13,           // select samples for a task
  kCtlClearPartition = 14,
  kCtlClearSamples = 15,
  kCtlProductionStatus = 16,
  kCtlConsumptionStatus = 17,
  kCtlResetConsumption = 18,
  kCtlListPartitions = 19,
  kCtlSetCustomMeta = 20,
  kCtlGetCustomMeta = 21,
  kCtlGetStorageInfo = 22,    // which storage manager/units a client should use
  kCtlPing = 23,
  kCtlReleaseIndexes = 24,    // phase 2 of a clear: storage is freed, drop the metadata
  kCtlKvRetrieve = 25,        // samples of string keys (created on request)
  kCtlKvKeys = 26,            // the keys of global indexes
  kCtlKvList = 27,            // keys and tags per partition
  kCtlKvClear = 28,           // phase 1 of a clear, by keys
  kCtlSnapshot = 29,          // the whole metadata state (checkpoint save), as payload frame 0
  kCtlRestore = 30,           // replace the whole metadata state by a snapshot (checkpoint load)
  kCtlKvPut = 31,             // record a put's fields under keys (created when missing), in one step

  // TransferQueue simple storage unit (50-79)
  kUnitPut = 50,
  kUnitGet = 51,
  kUnitClear = 52,
  kUnitStats = 53,
  kUnitPutGroups = 54,    // keys as groups (names once, index/generation arrays), values packed in few frames
  kUnitGetGroups = 55,    // the same keys; the reply packs the values in few frames
  kUnitClearGroups = 56,  // the same keys; missing ones ignored

  // Datasystem worker-to-worker and TCP client (100-199)
  kDsFirst = 100,
  kDsHello = 100,      // handshake: TCP -> socket path + token; Unix -> arena fd
  kDsCreate = 101,     // allocate objects in shared memory (not yet visible)
  kDsSeal = 102,       // make created objects visible (immutable after)
  kDsPut = 103,        // copy payload frames into new objects and seal them
  kDsGet = 104,        // look up objects: shared-memory refs or copied payloads
  kDsRelease = 105,    // drop read refs (one-way on the Unix socket)
  kDsDelete = 106,
  kDsExist = 107,
  kDsStats = 108,
  kDsShutdown = 109,   // graceful stop (dscli stop)
  kDsAbort = 110,      // drop created, unsealed objects (one-way on the Unix socket)
  kDsMetaPublish = 111,  // worker -> key owner: where objects live (primary, cache or handoff)
  kDsMetaLookup = 112,   // worker -> key owner: locations of keys (live replicas or the lost holder)
  kDsMetaRemove = 113,   // worker -> key owner: forget keys; reply lists every holder
  kDsDropCopies = 114,   // worker -> holder: delete local copies (no further fan-out)
  kDsExpire = 115,       // set the time to live of existing keys (this worker's copies)
  kDsLast = 199,
};

}  // namespace tqds::wire
