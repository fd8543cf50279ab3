// Storage managers: where sample payloads live. One interface, several
// backends registered by name ("SimpleStorageManager", and later
// "YuanrongStorageManager"), chosen by the client's
// initialize_storage_manager(manager_type, config).
//
// Implementations must be safe to call from several threads at once.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "tq/batch_meta.h"

namespace tq {

using Config = nlohmann::json;

// Identity of one sample in storage. Keys built from it include the
// partition and the generation, so they never collide across partitions or
// with an earlier sample that had the same global index.
struct SampleKey {
  std::string partition_id;
  int64_t global_index = -1;
  uint64_t generation = 0;
  // The controller's random id: jobs with different controllers that share
  // one storage (e.g. a datasystem worker) never collide.
  uint64_t controller_id = 0;
};

// "tq/<controller id hex>/<len>:<partition>/<index>.<generation>/<field>"
// (unambiguous for any partition name).
std::string StorageKey(const SampleKey& sample, const std::string& field);

// Where a packing backend put one value (see StorageManager::PutPacking).
struct Placement {
  uint64_t pack = 0;  // 0: the value is its own object, under StorageKey
  uint64_t offset = 0;
};

// "tq/<controller id hex>/pack/<pack id hex>": one pack's object.
std::string PackKey(uint64_t controller_id, uint64_t pack);

// One field's values of a put: one Buffer per sample, or (`rows` set) the
// samples' values of `row_bytes` each, back to back in one Buffer (a dense
// column kept whole), which a backend can copy in runs, not value by value.
struct FieldValues {
  std::vector<Buffer> values;  // one per sample, when `rows` is not used
  Buffer rows;
  uint64_t row_bytes = 0;
  bool by_rows = false;

  static FieldValues Rows(Buffer rows, uint64_t row_bytes) {
    FieldValues v;
    v.rows = std::move(rows);
    v.row_bytes = row_bytes;
    v.by_rows = true;
    return v;
  }
  // Sample s's value (a view of `rows` when by rows).
  Buffer Value(size_t s) const { return by_rows ? rows.Slice(s * row_bytes, row_bytes) : values[s]; }
  // The number of samples it holds values of.
  size_t size() const { return by_rows ? (row_bytes == 0 ? SIZE_MAX : rows.size() / row_bytes) : values.size(); }
  // Rows that do not cover `n` samples are refused, naming `field`.
  Status CheckRows(size_t n, const std::string& field) const {
    if (!by_rows || size() >= n) return Status::OK();
    return Status::Invalid("field '", field, "' holds ", rows.size(), " bytes, not ", n, " rows of ", row_bytes);
  }
};

class StorageManager {
 public:
  virtual ~StorageManager() = default;
  virtual std::string name() const = 0;

  // Writes data[f][s] as field `fields[f]` of sample `samples[s]`.
  // On error nothing is reported produced; partial writes are deleted by the
  // caller through Delete().
  virtual Status Put(const std::vector<SampleKey>& samples, const std::vector<std::string>& fields,
                     const std::vector<std::vector<Buffer>>& data) = 0;
  // Reads the same layout back. `nbytes[f][s]` is the size recorded at put
  // time (a hint and a check). A missing key is NotFound naming it.
  virtual Result<std::vector<std::vector<Buffer>>> Get(
      const std::vector<SampleKey>& samples, const std::vector<std::string>& fields,
      const std::vector<std::vector<uint64_t>>& nbytes) = 0;
  // Frees the fields of the samples; missing keys are not an error.
  virtual Status Delete(const std::vector<SampleKey>& samples,
                        const std::vector<std::string>& fields) = 0;

  // Packing, for backends where each stored object costs more than its
  // bytes (the datasystem): a put's small values go into a few objects, a
  // "pack" each. The client records each value's place (FieldInfo::pack and
  // offset) at the controller, which counts a pack's users and names the
  // packs no sample uses any more, for the client to free. The defaults are
  // for a backend that does not pack.
  //
  // Like Put; sets placed[f][s] to where data[f][s] went (pack 0: under its
  // own key). On error nothing is left behind in packs.
  virtual Status PutPacking(const std::vector<SampleKey>& samples, const std::vector<std::string>& fields,
                            const std::vector<std::vector<Buffer>>& data,
                            std::vector<std::vector<Placement>>* placed) {
    placed->assign(fields.size(), std::vector<Placement>(samples.size()));
    return Put(samples, fields, data);
  }
  // PutPacking of fields given as FieldValues; the default hands each
  // value to PutPacking one by one.
  virtual Status PutPackingColumns(const std::vector<SampleKey>& samples, const std::vector<std::string>& fields,
                                   const std::vector<FieldValues>& data, std::vector<std::vector<Placement>>* placed) {
    std::vector<std::vector<Buffer>> each(data.size());
    for (size_t f = 0; f < data.size(); ++f) {
      if (!data[f].by_rows) {
        each[f] = data[f].values;
        continue;
      }
      TQDS_RETURN_NOT_OK(
          data[f].CheckRows(samples.size(), f < fields.size() ? fields[f] : "?").WithContext("PutPackingColumns"));
      each[f].reserve(samples.size());
      for (size_t s = 0; s < samples.size(); ++s) each[f].push_back(data[f].Value(s));
    }
    return PutPacking(samples, fields, each, placed);
  }
  // Like Get, with each value's recorded place. A value in a pack this
  // backend cannot read is an error.
  virtual Result<std::vector<std::vector<Buffer>>> GetPacked(
      const std::vector<SampleKey>& samples, const std::vector<std::string>& fields,
      const std::vector<std::vector<uint64_t>>& nbytes, const std::vector<std::vector<Placement>>& placed) {
    for (const auto& field : placed) {
      for (const Placement& p : field) {
        if (p.pack != 0) return Status::Invalid(name(), " does not pack, but a value is recorded in pack ", p.pack);
      }
    }
    return Get(samples, fields, nbytes);
  }
  // Frees packs that no sample uses (missing ones are not an error).
  virtual Status DeletePacks(uint64_t /*controller_id*/, const std::vector<uint64_t>& /*packs*/) {
    return Status::OK();
  }
  // PutPacking packs every value smaller than this many bytes (0: none).
  // A put of only such values names no sample in storage, so it can be
  // written before the controller has given its samples indexes.
  virtual uint64_t packs_values_below() const { return 0; }
};

// What a factory gets: the user's config and the controller's address.
struct StorageContext {
  Config config;
  std::string controller_address;
  std::string client_id;
};

using StorageManagerFactory =
    std::function<Result<std::unique_ptr<StorageManager>>(const StorageContext&)>;

// Registers a backend under `name` (replacing an earlier one). Thread-safe.
void RegisterStorageManager(const std::string& name, StorageManagerFactory factory);
// Creates the backend registered as `name`; Invalid naming the known ones
// when there is none.
Result<std::unique_ptr<StorageManager>> CreateStorageManager(const std::string& name,
                                                             const StorageContext& context);
std::vector<std::string> RegisteredStorageManagers();

}  // namespace tq
