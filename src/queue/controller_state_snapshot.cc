// ControllerState::Snapshot / Restore: the controller's whole metadata state
// as one msgpack document, for checkpoints (layout: docs/wire_format.md,
// "Controller snapshot"). Restore treats the bytes as hostile.
#include <algorithm>
#include <limits>
#include <unordered_set>

#include "queue/controller_state.h"
#include "queue/protocol.h"

namespace tq::internal {

using tqds::wire::MapReader;
using tqds::wire::PackBody;

namespace {

constexpr const char* kFormat = "tqds-controller-snapshot";
constexpr uint64_t kVersion = 1;

void PackTask(Packer& pk, const std::string& name, const TaskState& t) {
  pk.pack_map(7);
  pk.pack("name");
  pk.pack(name);
  pk.pack("consumed");
  pk.pack_bin(static_cast<uint32_t>(t.consumed.size()));
  pk.pack_bin_body(reinterpret_cast<const char*>(t.consumed.data()), static_cast<uint32_t>(t.consumed.size()));
  pk.pack("cursor");
  pk.pack_uint64(t.cursor);
  pk.pack("consumed_count");
  pk.pack_uint64(t.consumed_count);
  pk.pack("call_counters");
  pk.pack(t.call_counters);
  pk.pack("sticky");
  pk.pack(t.sticky);
  pk.pack("cache");
  pk.pack_map(static_cast<uint32_t>(t.cache.size()));
  for (const auto& [key, c] : t.cache) {
    pk.pack(key);
    pk.pack_array(3);
    pk.pack(c.per_rank);
    pk.pack_uint64(c.served);
    pk.pack_uint64(c.expected);
  }
}

void PackPartition(Packer& pk, const Partition& p) {
  pk.pack_map(8);
  pk.pack("name");
  pk.pack(p.name);
  pk.pack("keep_when_empty");
  pk.pack(p.keep_when_empty);
  pk.pack("field_names");
  pk.pack(p.field_names);
  pk.pack("field_types");
  pk.pack_array(static_cast<uint32_t>(p.field_types.size()));
  for (const auto& f : p.field_types) PackFieldInfoRecord(pk, f);
  pk.pack("samples");
  pk.pack_array(static_cast<uint32_t>(p.samples.size()));
  for (const auto& r : p.samples) {
    pk.pack_array(6);
    pk.pack_int64(r.global_index);
    pk.pack_uint64(r.generation);
    pk.pack(r.live);
    pk.pack(r.clearing);
    pk.pack_array(static_cast<uint32_t>(r.fields.size()));
    for (const auto& f : r.fields) PackFieldInfoRecord(pk, f);
    PackCustomMeta(pk, r.custom.get());
  }
  pk.pack("keys");
  pk.pack_array(static_cast<uint32_t>(p.position_of_key.size()));
  for (size_t pos = 0; pos < p.samples.size(); ++pos) {
    if (p.samples[pos].key.empty()) continue;
    pk.pack_array(2);
    pk.pack_uint64(pos);
    pk.pack(p.samples[pos].key);
  }
  pk.pack("reserved");
  pk.pack(std::vector<int64_t>(p.reserved.begin(), p.reserved.end()));
  pk.pack("tasks");
  // Sorted by name, so equal states give equal bytes.
  std::map<std::string, const TaskState*> tasks;
  for (const auto& [name, t] : p.tasks) tasks[name] = &t;
  pk.pack_array(static_cast<uint32_t>(tasks.size()));
  for (const auto& [name, t] : tasks) PackTask(pk, name, *t);
}

Status CheckPosition(size_t pos, size_t n, const std::string& what) {
  if (pos >= n) return Status::Invalid(what, ": position ", pos, " is past the ", n, " samples");
  return Status::OK();
}

Result<TaskState> ReadTask(const msgpack::object& o, size_t n, const std::string& what) {
  TQDS_ASSIGN_OR_RETURN(auto rd, MapReader::Of(o, what));
  TaskState t;
  const msgpack::object* consumed = rd.Find("consumed");
  if (consumed == nullptr || consumed->type != msgpack::type::BIN) {
    return Status::Invalid(what, ": 'consumed' must be bin");
  }
  if (consumed->via.bin.size > n) {
    return Status::Invalid(what, ": 'consumed' has ", consumed->via.bin.size, " entries for ", n, " samples");
  }
  t.consumed.assign(consumed->via.bin.ptr, consumed->via.bin.ptr + consumed->via.bin.size);
  size_t count = 0;
  for (uint8_t c : t.consumed) {
    if (c > 1) return Status::Invalid(what, ": 'consumed' entries must be 0 or 1");
    count += c;
  }
  TQDS_ASSIGN_OR_RETURN(uint64_t cursor, rd.Get<uint64_t>("cursor"));
  TQDS_ASSIGN_OR_RETURN(uint64_t consumed_count, rd.Get<uint64_t>("consumed_count"));
  if (cursor > n) return Status::Invalid(what, ": cursor ", cursor, " is past the ", n, " samples");
  if (consumed_count > count) {
    return Status::Invalid(what, ": consumed_count ", consumed_count, " exceeds the ", count, " consumed entries");
  }
  t.cursor = cursor;
  t.consumed_count = consumed_count;
  TQDS_ASSIGN_OR_RETURN(t.call_counters, (rd.Get<std::map<std::string, int64_t>>("call_counters")));
  TQDS_ASSIGN_OR_RETURN(t.sticky, (rd.Get<std::map<std::string, std::vector<size_t>>>("sticky")));
  for (const auto& [key, positions] : t.sticky) {
    for (size_t pos : positions) TQDS_RETURN_NOT_OK(CheckPosition(pos, n, what + ".sticky"));
  }
  const msgpack::object* cache = rd.Find("cache");
  if (cache == nullptr || cache->type != msgpack::type::MAP) return Status::Invalid(what, ": 'cache' must be a map");
  for (uint32_t i = 0; i < cache->via.map.size; ++i) {
    const auto& kv = cache->via.map.ptr[i];
    TQDS_ASSIGN_OR_RETURN(std::string key, As<std::string>(kv.key, what + ".cache key"));
    TQDS_ASSIGN_OR_RETURN(auto a, AsArray(kv.val, what + ".cache", 3));
    CachedSelection c;
    TQDS_ASSIGN_OR_RETURN(c.per_rank, (As<std::vector<std::vector<size_t>>>(a->ptr[0], what + ".cache")));
    TQDS_ASSIGN_OR_RETURN(c.served, As<uint64_t>(a->ptr[1], what + ".cache.served"));
    TQDS_ASSIGN_OR_RETURN(c.expected, As<uint64_t>(a->ptr[2], what + ".cache.expected"));
    for (const auto& rank : c.per_rank) {
      for (size_t pos : rank) TQDS_RETURN_NOT_OK(CheckPosition(pos, n, what + ".cache"));
    }
    t.cache[key] = std::move(c);
  }
  return t;
}

// Indexes and generations already taken, across partitions.
struct Taken {
  std::unordered_set<int64_t> indexes;  // live and clearing samples, and the free pool
  std::unordered_set<uint64_t> generations;
  std::vector<int64_t> released;  // indexes of samples that were clearing: free after the restore
};

// Bounds every sample must respect (the document's counters).
struct Bounds {
  int64_t next_index = 0;
  uint64_t next_generation = 1;
  bool keep_clearing = false;  // RestoreMode::kExact
};

Result<const msgpack::object*> Required(const MapReader& rd, const char* key) {
  const msgpack::object* o = rd.Find(key);
  if (o == nullptr) return Status::Invalid(rd.what(), ": missing field '", key, "'");
  return o;
}

Status ReadFields(const MapReader& rd, Partition& p) {
  TQDS_ASSIGN_OR_RETURN(p.field_names, rd.Get<std::vector<std::string>>("field_names"));
  for (size_t f = 0; f < p.field_names.size(); ++f) {
    TQDS_RETURN_NOT_OK(ValidateName(p.field_names[f], "snapshot field name"));
    if (!p.field_id.emplace(p.field_names[f], static_cast<int>(f)).second) {
      return Status::Invalid(rd.what(), ": field '", p.field_names[f], "' is listed twice");
    }
  }
  TQDS_ASSIGN_OR_RETURN(auto types, Required(rd, "field_types"));
  TQDS_ASSIGN_OR_RETURN(auto ta, AsArray(*types, rd.what() + ".field_types", static_cast<int>(p.field_names.size())));
  for (uint32_t f = 0; f < ta->size; ++f) {
    TQDS_ASSIGN_OR_RETURN(auto fi, UnpackFieldInfoRecord(ta->ptr[f], rd.what() + ".field_types"));
    p.field_types.push_back(std::move(fi));
  }
  return Status::OK();
}

Result<SampleRecord> ReadSample(const msgpack::object& o, const Partition& p, const Bounds& b,
                                const std::string& sw) {
  TQDS_ASSIGN_OR_RETURN(auto a, AsArray(o, sw, 6));
  SampleRecord r;
  TQDS_ASSIGN_OR_RETURN(r.global_index, As<int64_t>(a->ptr[0], sw + " global_index"));
  TQDS_ASSIGN_OR_RETURN(r.generation, As<uint64_t>(a->ptr[1], sw + " generation"));
  TQDS_ASSIGN_OR_RETURN(r.live, As<bool>(a->ptr[2], sw + " live"));
  TQDS_ASSIGN_OR_RETURN(r.clearing, As<bool>(a->ptr[3], sw + " clearing"));
  if (r.global_index < 0 || r.global_index >= b.next_index) {
    return Status::Invalid(sw, ": global_index ", r.global_index, " is outside [0, ", b.next_index, ")");
  }
  if (r.generation == 0 || r.generation >= b.next_generation) {
    return Status::Invalid(sw, ": generation ", r.generation, " is outside [1, ", b.next_generation, ")");
  }
  if (r.clearing && !r.live) return Status::Invalid(sw, ": a released sample cannot be clearing");
  TQDS_ASSIGN_OR_RETURN(auto fa, AsArray(a->ptr[4], sw + " fields"));
  if (fa->size > p.field_names.size()) {
    return Status::Invalid(sw, ": ", fa->size, " field records for ", p.field_names.size(), " fields");
  }
  for (uint32_t f = 0; f < fa->size; ++f) {
    TQDS_ASSIGN_OR_RETURN(auto fi, UnpackFieldInfoRecord(fa->ptr[f], sw + " field '" + p.field_names[f] + "'"));
    r.fields.push_back(std::move(fi));
  }
  TQDS_ASSIGN_OR_RETURN(r.custom, UnpackCustomMeta(a->ptr[5], sw + " custom"));
  return r;
}

Status ReadSamples(const MapReader& rd, Partition& p, const Bounds& b, Taken& taken) {
  TQDS_ASSIGN_OR_RETURN(auto samples, Required(rd, "samples"));
  TQDS_ASSIGN_OR_RETURN(auto sa, AsArray(*samples, rd.what() + ".samples"));
  p.samples.reserve(sa->size);
  for (uint32_t i = 0; i < sa->size; ++i) {
    const std::string sw = rd.what() + " sample #" + std::to_string(i);
    TQDS_ASSIGN_OR_RETURN(SampleRecord r, ReadSample(sa->ptr[i], p, b, sw));
    if (!taken.generations.insert(r.generation).second) {
      return Status::Invalid(sw, ": generation ", r.generation, " is used twice");
    }
    if (r.live) {
      if (!taken.indexes.insert(r.global_index).second) {
        return Status::Invalid(sw, ": global_index ", r.global_index, " is in use twice (or also free)");
      }
    }
    if (r.clearing && b.keep_clearing) {
      // Exact: still hidden and held, until its clear is finished.
      p.position_of.Set(r.global_index, p.samples.size());
    } else if (r.clearing) {
      // A clear was under way: its data is going, and whoever began it may
      // never finish it against the restored state. Restore it released.
      r.live = r.clearing = false;
      r.fields.clear();
      r.custom.clear();
      taken.released.push_back(r.global_index);
    } else if (r.live) {
      p.position_of.Set(r.global_index, p.samples.size());
      ++p.live_count;
    }
    p.samples.push_back(std::move(r));
  }
  return Status::OK();
}

Status ReadKeys(const MapReader& rd, Partition& p) {
  TQDS_ASSIGN_OR_RETURN(auto keys, Required(rd, "keys"));
  TQDS_ASSIGN_OR_RETURN(auto ka, AsArray(*keys, rd.what() + ".keys"));
  for (uint32_t i = 0; i < ka->size; ++i) {
    TQDS_ASSIGN_OR_RETURN(auto a, AsArray(ka->ptr[i], rd.what() + ".keys entry", 2));
    TQDS_ASSIGN_OR_RETURN(uint64_t pos, As<uint64_t>(a->ptr[0], rd.what() + ".keys position"));
    TQDS_ASSIGN_OR_RETURN(std::string key, As<std::string>(a->ptr[1], rd.what() + ".keys key"));
    TQDS_RETURN_NOT_OK(ValidateName(key, "snapshot key"));
    TQDS_RETURN_NOT_OK(CheckPosition(pos, p.samples.size(), rd.what() + ".keys"));
    if (!p.IsVisible(pos)) return Status::Invalid(rd.what(), ": key '", key, "' names a sample that is not live");
    if (!p.samples[pos].key.empty()) {
      return Status::Invalid(rd.what(), ": key '", key, "' or its sample is listed twice");
    }
    p.samples[pos].key = key;
    if (!p.position_of_key.Insert(pos)) {
      p.samples[pos].key.clear();
      return Status::Invalid(rd.what(), ": key '", key, "' or its sample is listed twice");
    }
  }
  return Status::OK();
}

Status ReadTasks(const MapReader& rd, Partition& p) {
  TQDS_ASSIGN_OR_RETURN(auto tasks, Required(rd, "tasks"));
  TQDS_ASSIGN_OR_RETURN(auto ta, AsArray(*tasks, rd.what() + ".tasks"));
  for (uint32_t i = 0; i < ta->size; ++i) {
    TQDS_ASSIGN_OR_RETURN(auto trd, MapReader::Of(ta->ptr[i], rd.what() + " task"));
    TQDS_ASSIGN_OR_RETURN(std::string name, trd.Get<std::string>("name"));
    TQDS_ASSIGN_OR_RETURN(TaskState t, ReadTask(ta->ptr[i], p.samples.size(), rd.what() + " task '" + name + "'"));
    if (!p.tasks.emplace(name, std::move(t)).second) {
      return Status::Invalid(rd.what(), ": task '", name, "' is listed twice");
    }
  }
  return Status::OK();
}

// Reserved indexes (absent in snapshots written before they existed).
Status ReadReserved(const MapReader& rd, Partition& p, const Bounds& b, Taken& taken) {
  if (rd.Find("reserved") == nullptr) return Status::OK();
  TQDS_ASSIGN_OR_RETURN(auto reserved, rd.Get<std::vector<int64_t>>("reserved"));
  for (int64_t gi : reserved) {
    if (gi < 0 || gi >= b.next_index) {
      return Status::Invalid(rd.what(), ": reserved index ", gi, " is outside [0, ", b.next_index, ")");
    }
    if (!taken.indexes.insert(gi).second) {
      return Status::Invalid(rd.what(), ": reserved index ", gi, " is held twice");
    }
    p.reserved.insert(gi);
  }
  return Status::OK();
}

Result<std::unique_ptr<Partition>> ReadPartition(const msgpack::object& o, const Bounds& b, Taken& taken) {
  auto p = std::make_unique<Partition>();
  {
    TQDS_ASSIGN_OR_RETURN(auto named, MapReader::Of(o, "snapshot partition"));
    TQDS_ASSIGN_OR_RETURN(p->name, named.Get<std::string>("name"));
    TQDS_RETURN_NOT_OK(ValidateName(p->name, "snapshot partition name"));
  }
  TQDS_ASSIGN_OR_RETURN(auto rd, MapReader::Of(o, "snapshot partition '" + p->name + "'"));
  TQDS_ASSIGN_OR_RETURN(p->keep_when_empty, rd.Get<bool>("keep_when_empty"));
  TQDS_RETURN_NOT_OK(ReadFields(rd, *p));
  TQDS_RETURN_NOT_OK(ReadSamples(rd, *p, b, taken));
  TQDS_RETURN_NOT_OK(ReadKeys(rd, *p));
  TQDS_RETURN_NOT_OK(ReadTasks(rd, *p));
  TQDS_RETURN_NOT_OK(ReadReserved(rd, *p, b, taken));
  return p;
}

}  // namespace

std::string ControllerState::Snapshot() const {
  const std::vector<int64_t> free = indexes_.FreeAscending();
  return PackBody([&](Packer& pk) {
    pk.pack_map(6);
    pk.pack("format");
    pk.pack(kFormat);
    pk.pack("version");
    pk.pack_uint64(kVersion);
    pk.pack("next_index");
    pk.pack_int64(indexes_.next());
    pk.pack("next_generation");
    pk.pack_uint64(next_generation_);
    pk.pack("free_indexes");
    pk.pack(free);
    pk.pack("partitions");
    pk.pack_array(static_cast<uint32_t>(partitions_.size()));
    for (const Partition* p : InCreationOrder()) PackPartition(pk, *p);  // the list keeps the order
  });
}

Status ControllerState::Restore(std::string_view bytes, bool dry_run, RestoreMode mode) {
  if (bytes.empty()) return Status::Invalid("controller snapshot is empty");
  // Limits scale with the input: a tiny document cannot declare a huge array.
  const size_t size = bytes.size();
  const size_t max_container = std::min<size_t>(size_t{1} << 28, size);
  msgpack::unpack_limit limit(max_container, std::min<size_t>(size_t{1} << 28, size / 2), size, size, size,
                              kMaxMetaDepth + 16);  // the document nests custom meta 6 deep
  msgpack::zone zone;
  msgpack::object root;
  try {
    size_t off = 0;
    root = msgpack::unpack(zone, bytes.data(), size, off, nullptr, nullptr, limit);
    if (off != size) return Status::Invalid("controller snapshot has ", size - off, " trailing bytes");
  } catch (const std::exception& e) {
    return Status::Invalid("controller snapshot is not valid msgpack (", e.what(), ")");
  }
  TQDS_ASSIGN_OR_RETURN(auto rd, MapReader::Of(root, "controller snapshot"));
  TQDS_ASSIGN_OR_RETURN(std::string format, rd.Get<std::string>("format"));
  if (format != kFormat) return Status::Invalid("not a controller snapshot (format '", format, "')");
  TQDS_ASSIGN_OR_RETURN(uint64_t version, rd.Get<uint64_t>("version"));
  if (version != kVersion) {
    return Status::Invalid("controller snapshot version ", version, " is not supported (this build reads ",
                           kVersion, ")");
  }
  TQDS_ASSIGN_OR_RETURN(int64_t next_index, rd.Get<int64_t>("next_index"));
  TQDS_ASSIGN_OR_RETURN(uint64_t next_generation, rd.Get<uint64_t>("next_generation"));
  if (next_index < 0) return Status::Invalid("controller snapshot: next_index ", next_index, " is negative");
  if (next_generation == 0 || next_generation == std::numeric_limits<uint64_t>::max()) {
    return Status::Invalid("controller snapshot: next_generation ", next_generation, " is out of range");
  }
  TQDS_ASSIGN_OR_RETURN(auto free, rd.Get<std::vector<int64_t>>("free_indexes"));
  Taken taken;
  for (int64_t i : free) {
    if (i < 0 || i >= next_index) {
      return Status::Invalid("controller snapshot: free index ", i, " is outside [0, ", next_index, ")");
    }
    if (!taken.indexes.insert(i).second) {
      return Status::Invalid("controller snapshot: free index ", i, " is listed twice");
    }
  }
  const msgpack::object* parts = rd.Find("partitions");
  if (parts == nullptr) return Status::Invalid("controller snapshot: missing field 'partitions'");
  TQDS_ASSIGN_OR_RETURN(auto pa, AsArray(*parts, "controller snapshot partitions"));
  std::map<std::string, std::unique_ptr<Partition>> partitions;
  for (uint32_t i = 0; i < pa->size; ++i) {
    TQDS_ASSIGN_OR_RETURN(auto p, ReadPartition(pa->ptr[i], Bounds{next_index, next_generation, mode == RestoreMode::kExact}, taken));
    std::string name = p->name;
    p->created = i;  // listed oldest first
    bool drop = p->position_of.empty() && p->reserved.empty() && !p->keep_when_empty;  // emptied by released clears, as ReleaseSamples
    if (!partitions.emplace(name, std::move(p)).second) {
      return Status::Invalid("controller snapshot: partition '", name, "' is listed twice");
    }
    if (drop) partitions.erase(name);
  }
  if (dry_run) return Status::OK();
  free.insert(free.end(), taken.released.begin(), taken.released.end());

  partitions_ = std::move(partitions);
  next_partition_ = pa->size;
  indexes_.Reset(std::move(free), next_index);
  next_generation_ = std::max(next_generation_, next_generation);
  RecountPackUsers();
  return Status::OK();
}

}  // namespace tq::internal
