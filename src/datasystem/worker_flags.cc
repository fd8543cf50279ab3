// Worker flag parsing: value checks per kind, the effect of each flag on
// WorkerOptions, the configuration file, and the worker's command line.
#include "datasystem/worker_flags.h"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>

namespace ds {
namespace {

using tqds::Result;
using tqds::Status;

std::string Lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

// gflags' spellings of a bool.
Result<bool> ParseBool(std::string_view name, std::string_view v) {
  const std::string s = Lower(v);
  if (s == "true" || s == "1" || s == "t" || s == "yes" || s == "y") return true;
  if (s == "false" || s == "0" || s == "f" || s == "no" || s == "n") return false;
  return Status::Invalid("--", name, " takes true or false, got '", v, "'");
}

bool IsBoolLiteral(std::string_view v) { return ParseBool("", v).ok(); }

Status UnknownFlag(std::string_view name) {
  return Status::Invalid("unknown worker flag --", name,
                         ": it is no flag of openYuanrong datasystem's worker nor of this one "
                         "(the list: dscli start -h, or docs/dscli_flags.md)");
}

Result<int64_t> ParseInt(std::string_view name, std::string_view v, int64_t lo, int64_t hi) {
  const std::string s(v);
  errno = 0;
  char* end = nullptr;
  long long x = std::strtoll(s.c_str(), &end, 10);
  if (s.empty() || end != s.c_str() + s.size() || errno == ERANGE || x < lo || x > hi) {
    return Status::Invalid("--", name, " takes an integer in [", lo, ", ", hi, "], got '", v, "'");
  }
  return static_cast<int64_t>(x);
}

Result<uint64_t> ParseUint(std::string_view name, std::string_view v, uint64_t hi) {
  const std::string s(v);
  errno = 0;
  char* end = nullptr;
  unsigned long long x = std::strtoull(s.c_str(), &end, 10);
  if (s.empty() || s.find_first_not_of("0123456789") != std::string::npos ||
      end != s.c_str() + s.size() || errno == ERANGE || x > hi) {
    return Status::Invalid("--", name, " takes a non-negative integer up to ", hi, ", got '", v,
                           "'");
  }
  return static_cast<uint64_t>(x);
}

Result<double> ParseDouble(std::string_view name, std::string_view v) {
  const std::string s(v);
  char* end = nullptr;
  double x = std::strtod(s.c_str(), &end);
  if (s.empty() || end != s.c_str() + s.size() || !std::isfinite(x)) {
    return Status::Invalid("--", name, " takes a number, got '", v, "'");
  }
  return x;
}

// Checks `v` against `kind`; returns a normal form used to compare a value
// with the default ("1" and "true" are the same bool).
Result<std::string> Normalize(const FlagSpec& f, std::string_view v) {
  switch (f.kind) {
    case FlagKind::kBool: {
      TQDS_ASSIGN_OR_RETURN(bool b, ParseBool(f.name, v));
      return std::string(b ? "true" : "false");
    }
    case FlagKind::kInt32: {
      TQDS_ASSIGN_OR_RETURN(int64_t x, ParseInt(f.name, v, std::numeric_limits<int32_t>::min(),
                                                std::numeric_limits<int32_t>::max()));
      return std::to_string(x);
    }
    case FlagKind::kInt64: {
      TQDS_ASSIGN_OR_RETURN(int64_t x, ParseInt(f.name, v, std::numeric_limits<int64_t>::min(),
                                                std::numeric_limits<int64_t>::max()));
      return std::to_string(x);
    }
    case FlagKind::kUint32: {
      TQDS_ASSIGN_OR_RETURN(uint64_t x, ParseUint(f.name, v, std::numeric_limits<uint32_t>::max()));
      return std::to_string(x);
    }
    case FlagKind::kUint64: {
      TQDS_ASSIGN_OR_RETURN(uint64_t x, ParseUint(f.name, v, std::numeric_limits<uint64_t>::max()));
      return std::to_string(x);
    }
    case FlagKind::kDouble: {
      TQDS_ASSIGN_OR_RETURN(double x, ParseDouble(f.name, v));
      char buf[64];
      std::snprintf(buf, sizeof(buf), "%.10g", x);
      return std::string(buf);
    }
    case FlagKind::kString: return std::string(v);
  }
  return std::string(v);
}

std::string Num(double x) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.10g", x);
  return buf;
}

// Applies a checked value of an effective flag (or a stored no-effect one).
// `norm` is Normalize's output. Returns false for a flag with no field.
bool Apply(WorkerOptions& o, std::string_view name, const std::string& norm) {
  auto u64 = [&] { return std::strtoull(norm.c_str(), nullptr, 10); };
  auto i64 = [&] { return std::strtoll(norm.c_str(), nullptr, 10); };
  auto on = [&] { return norm == "true"; };
  if (name == "worker_address") {
    o.worker_address = norm;
  } else if (name == "bind_address") {
    o.bind_address = norm;
  } else if (name == "etcd_address") {
    o.etcd_address = norm;
  } else if (name == "metastore_address") {
    o.metastore_address = norm;
  } else if (name == "start_metastore_service") {
    o.start_metastore_service = on();
  } else if (name == "shared_memory_size_mb") {
    o.shared_memory_size_mb = u64();
  } else if (name == "shared_memory_populate" || name == "populate_memory") {
    o.shared_memory_populate = on();
  } else if (name == "no_populate_memory") {
    o.shared_memory_populate = !on();
  } else if (name == "unix_domain_socket_dir" || name == "unix_socket_dir") {
    o.unix_domain_socket_dir = norm;
  } else if (name == "spill_directory") {
    o.spill_directory = norm;
  } else if (name == "spill_size_limit") {
    o.spill_size_limit = u64();
  } else if (name == "spill_size_limit_mb") {
    o.spill_size_limit = std::min<uint64_t>(u64(), uint64_t{1} << 43) << 20;
  } else if (name == "eviction_high_watermark_ratio" || name == "high_watermark") {
    o.eviction_high_watermark_ratio = std::strtod(norm.c_str(), nullptr);
  } else if (name == "eviction_low_watermark_ratio") {
    o.eviction_low_watermark_ratio = std::strtod(norm.c_str(), nullptr);
  } else if (name == "node_timeout_s") {
    o.node_timeout_s = static_cast<uint32_t>(u64());
  } else if (name == "oc_worker_worker_direct_port" || name == "data_port") {
    o.data_port = static_cast<int>(i64());
  } else if (name == "oc_worker_worker_pool_size" || name == "pull_connections") {
    o.pull_connections = static_cast<uint32_t>(u64());
  } else if (name == "metrics_port") {
    o.metrics_port = static_cast<int>(i64());
  } else if (name == "enable_curve_zmq") {
    o.enable_curve_zmq = on();
  } else if (name == "curve_key_dir") {
    o.curve_key_dir = norm;
  } else if (name == "allow_insecure") {
    o.allow_insecure = on();
  } else if (name == "cache_max_keys") {
    o.cache_max_keys = static_cast<uint32_t>(u64());
  } else if (name == "enable_data_replication") {
    if (!on()) o.cache_max_keys = 0;
  } else if (name == "log_dir") {
    o.log_dir = norm;
  } else if (name == "log_filename") {
    o.log_filename = norm;
  } else if (name == "minloglevel") {
    o.min_log_level = static_cast<int>(i64());
  } else if (name == "v") {
    o.verbose = static_cast<int>(i64());
  } else if (name == "ready_check_path") {
    o.ready_check_path = norm;
  } else if (name == "health_check_path") {
    o.health_check_path = norm;
  } else if (name == "help" || name == "version") {
    // datasystem_worker handles these itself before parsing.
  } else {
    return false;
  }
  return true;
}

}  // namespace

const char* KindName(FlagKind k) {
  switch (k) {
    case FlagKind::kBool: return "bool";
    case FlagKind::kInt32: return "int32";
    case FlagKind::kUint32: return "uint32";
    case FlagKind::kInt64: return "int64";
    case FlagKind::kUint64: return "uint64";
    case FlagKind::kDouble: return "double";
    case FlagKind::kString: return "string";
  }
  return "?";
}

const FlagSpec* FindWorkerFlag(std::string_view name) {
  const auto& t = WorkerFlagTable();
  auto it = std::lower_bound(t.begin(), t.end(), name,
                             [](const FlagSpec& f, std::string_view n) { return f.name < n; });
  return it != t.end() && it->name == name ? &*it : nullptr;
}

Status SetWorkerFlag(WorkerFlags& flags, std::string_view name, std::string_view value) {
  const FlagSpec* f = FindWorkerFlag(name);
  if (f == nullptr) {
    return UnknownFlag(name);
  }
  TQDS_ASSIGN_OR_RETURN(std::string norm, Normalize(*f, value));
  const bool applied = Apply(flags.options, f->name, norm);
  if (f->use == FlagUse::kNoEffect) {
    const std::string prefix = std::string(f->name) + "=";
    auto& ne = flags.no_effect;
    ne.erase(std::remove_if(ne.begin(), ne.end(),
                            [&](const std::string& s) { return s.rfind(prefix, 0) == 0; }),
             ne.end());
    auto def = Normalize(*f, f->default_value);
    if (!def.ok() || *def != norm) ne.push_back(prefix + norm);
    return Status::OK();
  }
  if (!applied) return Status::Internal("worker flag --", name, " has no handler");
  return Status::OK();
}

Result<WorkerFlags> ParseWorkerFlags(const std::vector<std::string>& args,
                                     const std::vector<std::string>& extra_names,
                                     std::vector<std::pair<std::string, std::string>>* extra) {
  WorkerFlags flags;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& arg = args[i];
    size_t dashes = arg.rfind("--", 0) == 0 ? 2 : (arg.rfind('-', 0) == 0 ? 1 : 0);
    if (dashes == 0 || arg.size() == dashes) {
      return Status::Invalid("unexpected argument '", arg,
                             "': worker flags look like --name value or --name=value");
    }
    std::string name = arg.substr(dashes);
    std::optional<std::string> value;
    if (auto eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name.resize(eq);
    }
    const FlagSpec* f = FindWorkerFlag(name);
    const bool is_extra = f == nullptr && std::find(extra_names.begin(), extra_names.end(), name) !=
                                              extra_names.end();
    if (f == nullptr && !is_extra && name.rfind("no", 0) == 0 && !value) {
      // gflags' --noflag for a bool flag.
      const FlagSpec* neg = FindWorkerFlag(std::string_view(name).substr(2));
      if (neg != nullptr && neg->kind == FlagKind::kBool) {
        TQDS_RETURN_NOT_OK(SetWorkerFlag(flags, neg->name, "false"));
        continue;
      }
    }
    if (f == nullptr && !is_extra) {
      return UnknownFlag(name);
    }
    if (!value) {
      if (f != nullptr && f->kind == FlagKind::kBool) {
        value = i + 1 < args.size() && IsBoolLiteral(args[i + 1]) ? args[++i] : "true";
      } else if (i + 1 < args.size()) {
        value = args[++i];
      } else {
        return Status::Invalid("--", name, " is missing a value");
      }
    }
    if (is_extra) {
      if (extra != nullptr) extra->emplace_back(name, *value);
      continue;
    }
    TQDS_RETURN_NOT_OK(SetWorkerFlag(flags, f->name, *value));
  }
  return flags;
}

Result<std::vector<std::pair<std::string, std::string>>> ReadWorkerConfigFile(
    const std::string& path, const std::string& home_dir) {
  std::ifstream in(path);
  if (!in) return Status::IOError("cannot read the worker configuration file ", path);
  nlohmann::json doc = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded() || !doc.is_object()) {
    return Status::Invalid("the worker configuration file ", path,
                           " is not a JSON object of flags (generate one with: dscli "
                           "generate_config -o DIR)");
  }
  std::vector<std::pair<std::string, std::string>> out;
  for (auto& [key, item] : doc.items()) {
    if (key.empty()) continue;
    const nlohmann::json& v = item.is_object() ? item.value("value", nlohmann::json()) : item;
    std::string text;
    if (v.is_null()) continue;
    if (v.is_string()) {
      text = v.get<std::string>();
    } else if (v.is_boolean()) {
      text = v.get<bool>() ? "true" : "false";
    } else if (v.is_number()) {
      text = v.dump();
    } else {
      return Status::Invalid("the worker configuration file ", path, ": the value of '", key,
                             "' must be a string, number or bool");
    }
    while (!text.empty() && std::isspace(static_cast<unsigned char>(text.back()))) text.pop_back();
    while (!text.empty() && std::isspace(static_cast<unsigned char>(text.front()))) {
      text.erase(0, 1);
    }
    if (text.empty()) continue;  // keeps the default, as the real dscli does
    if (text.rfind("./", 0) == 0) {
      if (text.find("../") != std::string::npos) {
        return Status::Invalid("the worker configuration file ", path, ": '", key,
                               "' must not contain '../' (got '", text, "')");
      }
      std::error_code ec;
      const std::filesystem::path base =
          home_dir.empty() ? std::filesystem::current_path(ec) : std::filesystem::path(home_dir);
      text = (base / text.substr(2)).lexically_normal().string();
    }
    out.emplace_back(key, text);
  }
  return out;
}

std::vector<std::string> WorkerArgv(const WorkerFlags& flags) {
  const WorkerOptions& o = flags.options;
  std::vector<std::string> a = {"--worker_address=" + o.worker_address};
  auto add = [&](const char* name, const std::string& v) {
    a.push_back(std::string("--") + name + "=" + v);
  };
  auto b = [](bool x) { return std::string(x ? "true" : "false"); };
  if (!o.bind_address.empty()) add("bind_address", o.bind_address);
  if (!o.etcd_address.empty()) add("etcd_address", o.etcd_address);
  if (!o.metastore_address.empty()) add("metastore_address", o.metastore_address);
  add("start_metastore_service", b(o.start_metastore_service));
  add("shared_memory_size_mb", std::to_string(o.shared_memory_size_mb));
  add("shared_memory_populate", b(o.shared_memory_populate));
  add("unix_domain_socket_dir", o.unix_domain_socket_dir);
  if (!o.spill_directory.empty()) add("spill_directory", o.spill_directory);
  add("spill_size_limit", std::to_string(o.spill_size_limit));
  add("eviction_high_watermark_ratio", Num(o.eviction_high_watermark_ratio));
  add("eviction_low_watermark_ratio", Num(o.eviction_low_watermark_ratio));
  add("node_timeout_s", std::to_string(o.node_timeout_s));
  add("oc_worker_worker_direct_port", std::to_string(o.data_port));
  add("oc_worker_worker_pool_size", std::to_string(o.pull_connections));
  add("cache_max_keys", std::to_string(o.cache_max_keys));
  add("metrics_port", std::to_string(o.metrics_port));
  if (o.enable_curve_zmq) add("enable_curve_zmq", "true");
  if (!o.curve_key_dir.empty()) add("curve_key_dir", o.curve_key_dir);
  if (o.allow_insecure) add("allow_insecure", "true");
  if (!o.log_dir.empty()) add("log_dir", o.log_dir);
  if (!o.log_filename.empty()) add("log_filename", o.log_filename);
  add("minloglevel", std::to_string(o.min_log_level));
  add("v", std::to_string(o.verbose));
  if (!o.ready_check_path.empty()) add("ready_check_path", o.ready_check_path);
  if (!o.health_check_path.empty()) add("health_check_path", o.health_check_path);
  for (const auto& ne : flags.no_effect) a.push_back("--" + ne);
  return a;
}

std::string WorkerConfigTemplate() {
  // Effective defaults here, read back from a default command line.
  std::map<std::string, std::string> here;
  for (const auto& arg : WorkerArgv(WorkerFlags{})) {
    auto eq = arg.find('=');
    here[arg.substr(2, eq - 2)] = arg.substr(eq + 1);
  }
  nlohmann::ordered_json doc = nlohmann::ordered_json::object();
  for (const auto& f : WorkerFlagTable()) {
    if (f.use == FlagUse::kAlias || f.name == "help" || f.name == "version") continue;
    auto it = here.find(std::string(f.name));
    std::string value = it != here.end() ? it->second : std::string(f.default_value);
    if (f.use == FlagUse::kEffect && it == here.end()) value.clear();  // unset by default here
    std::string desc = std::string(f.use == FlagUse::kNoEffect ? "[no effect here] " : "") +
                       std::string(f.note);
    doc[std::string(f.name)] = {{"value", value}, {"description", desc}};
  }
  return doc.dump(4) + "\n";
}

std::string WorkerFlagsHelp() {
  std::ostringstream out;
  out << "Worker flags (--name value, --name=value; a bool flag alone means true).\n"
         "Flags of openYuanrong datasystem's worker that take effect here:\n";
  auto line = [&](const FlagSpec& f) {
    out << "  --" << f.name << " (" << KindName(f.kind);
    if (!f.unit.empty() && f.unit != "bool") out << ", " << f.unit;
    out << "; default " << (f.default_value.empty() ? "\"\"" : f.default_value) << ")\n      "
        << f.note << "\n";
  };
  for (const auto& f : WorkerFlagTable()) {
    if (f.use == FlagUse::kEffect) line(f);
  }
  out << "This project's own spellings and flags:\n";
  for (const auto& f : WorkerFlagTable()) {
    if (f.use == FlagUse::kAlias || f.use == FlagUse::kOwn) line(f);
  }
  out << "Accepted with no effect in this build (reported when given a non-default value):\n";
  std::string row = " ";
  for (const auto& f : WorkerFlagTable()) {
    if (f.use != FlagUse::kNoEffect) continue;
    if (row.size() + f.name.size() + 3 > 100) {
      out << row << "\n";
      row = " ";
    }
    row += " --";
    row += f.name;
  }
  out << row << "\n";
  return out.str();
}

}  // namespace ds
