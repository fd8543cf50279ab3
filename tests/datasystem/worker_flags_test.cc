// Worker flags without processes: every flag of the real worker is in the
// table with its real type and default, the parser's spellings, aliases,
// values checked per type, the configuration file, the worker command line,
// identity by full address, and docs/dscli_flags.md in step with the table.
#include <gtest/gtest.h>

#include <fstream>
#include <set>
#include <sstream>

#include "datasystem/worker_flags.h"
#include "test_util.h"

namespace ds {
namespace {

using tqds::Result;
using tqds::Status;

struct RealFlag {
  std::string name, type, default_value;
};

// tests/datasystem/data/real_worker_flags.txt: the real worker's flags.
std::vector<RealFlag> RealFlags() {
  std::ifstream in(std::string(TQDS_SOURCE_DIR) + "/tests/datasystem/data/real_worker_flags.txt");
  std::vector<RealFlag> out;
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    std::istringstream fields(line);
    RealFlag f;
    fields >> f.name >> f.type >> f.default_value;
    if (f.default_value == "-") f.default_value.clear();
    out.push_back(f);
  }
  return out;
}

Result<WorkerFlags> Parse(std::vector<std::string> args) { return ParseWorkerFlags(args); }

TEST(WorkerFlags, EveryRealFlagIsInTheTableWithItsTypeAndDefault) {
  auto real = RealFlags();
  ASSERT_GT(real.size(), 200u);
  for (const auto& r : real) {
    const FlagSpec* f = FindWorkerFlag(r.name);
    ASSERT_NE(f, nullptr) << r.name << " is refused";
    EXPECT_TRUE(f->use == FlagUse::kEffect || f->use == FlagUse::kNoEffect) << r.name;
    EXPECT_EQ(KindName(f->kind), r.type) << r.name;
    EXPECT_EQ(f->default_value, r.default_value) << r.name;
    EXPECT_FALSE(f->note.empty()) << r.name;
  }
}

TEST(WorkerFlags, TableIsSortedAndAliasesPointAtRealFlags) {
  const auto& t = WorkerFlagTable();
  for (size_t i = 1; i < t.size(); ++i) EXPECT_LT(t[i - 1].name, t[i].name);
  for (const auto& f : t) {
    if (f.use != FlagUse::kAlias) continue;
    const FlagSpec* real = FindWorkerFlag(f.alias_of);
    ASSERT_NE(real, nullptr) << f.name;
    EXPECT_EQ(real->use, FlagUse::kEffect) << f.name;
  }
}

// Every flag that takes effect changes the worker's command line when set to
// a value other than its default (so it reaches WorkerOptions and the worker).
TEST(WorkerFlags, EveryEffectiveFlagChangesTheWorker) {
  const auto base = WorkerArgv(WorkerFlags{});
  for (const auto& f : WorkerFlagTable()) {
    if (f.use == FlagUse::kNoEffect || f.name == "help" || f.name == "version") continue;
    std::string value;
    switch (f.kind) {
      case FlagKind::kBool: {
        // The opposite of the effective default.
        WorkerFlags probe;
        ASSERT_TRUE(SetWorkerFlag(probe, f.name, "true").ok()) << f.name;
        value = WorkerArgv(probe) == base ? "false" : "true";
        break;
      }
      case FlagKind::kDouble: value = "0.5"; break;
      case FlagKind::kString:
        value = f.name.find("address") != std::string_view::npos ? "127.0.0.9:4242" : "/tmp/x";
        break;
      default: value = "7"; break;
    }
    WorkerFlags flags;
    ASSERT_TRUE(SetWorkerFlag(flags, f.name, value).ok()) << f.name << "=" << value;
    EXPECT_NE(WorkerArgv(flags), base) << f.name << "=" << value << " changed nothing";
    EXPECT_TRUE(flags.no_effect.empty()) << f.name;
  }
}

TEST(WorkerFlags, Spellings) {
  auto r = Parse({"--worker_address=127.0.0.2:1", "-shared_memory_size_mb", "64",
                  "--shared_memory_populate", "--io_thread_nice", "-10", "--noenable_fallocate",
                  "-etcd_address=127.0.0.1:2379", "--start_metastore_service", "false",
                  "--enable_rdma", "true"});
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(r->options.worker_address, "127.0.0.2:1");
  EXPECT_EQ(r->options.shared_memory_size_mb, 64u);
  EXPECT_TRUE(r->options.shared_memory_populate);
  EXPECT_EQ(r->options.etcd_address, "127.0.0.1:2379");
  EXPECT_FALSE(r->options.start_metastore_service);
  EXPECT_EQ(r->no_effect, (std::vector<std::string>{"io_thread_nice=-10", "enable_fallocate=false",
                                                    "enable_rdma=true"}));
}

TEST(WorkerFlags, OurOlderNamesAreAliases) {
  auto r = Parse({"--unix_socket_dir", "/tmp/a", "--spill_size_limit_mb", "2", "--high_watermark",
                  "0.7", "--populate_memory", "--data_port", "5000", "--pull_connections", "6",
                  "--cache_max_keys", "9"});
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(r->options.unix_domain_socket_dir, "/tmp/a");
  EXPECT_EQ(r->options.spill_size_limit, 2u << 20);
  EXPECT_DOUBLE_EQ(r->options.eviction_high_watermark_ratio, 0.7);
  EXPECT_TRUE(r->options.shared_memory_populate);
  EXPECT_EQ(r->options.data_port, 5000);
  EXPECT_EQ(r->options.pull_connections, 6u);
  EXPECT_EQ(r->options.cache_max_keys, 9u);
  auto off = Parse({"--populate_memory", "--no_populate_memory"});
  ASSERT_TRUE(off.ok());
  EXPECT_FALSE(off->options.shared_memory_populate);
  EXPECT_TRUE(off->no_effect.empty());
}

TEST(WorkerFlags, RealDefaults) {
  WorkerOptions o;
  EXPECT_EQ(o.worker_address, "127.0.0.1:31501");
  EXPECT_EQ(o.shared_memory_size_mb, 1024u);
  EXPECT_FALSE(o.shared_memory_populate);
  EXPECT_EQ(o.spill_size_limit, 0u);
  EXPECT_EQ(o.node_timeout_s, 60u);
  EXPECT_DOUBLE_EQ(o.eviction_high_watermark_ratio, 0.9);
  EXPECT_DOUBLE_EQ(o.eviction_low_watermark_ratio, 0.8);
  EXPECT_TRUE(o.Validate().ok());
}

TEST(WorkerFlags, NoEffectOnlyWhenTheValueDiffersFromTheDefault) {
  auto r = Parse({"--arena_per_tenant", "16", "--enable_rdma", "0", "--arena_per_tenant", "1",
                  "--enable_worker_worker_batch_get", "true"});
  ASSERT_TRUE(r.ok());
  const std::vector<std::string> expected = {"arena_per_tenant=1",
                                             "enable_worker_worker_batch_get=true"};
  EXPECT_EQ(r->no_effect, expected);
}

TEST(WorkerFlags, RefusesWhatNeitherWorkerKnowsAndBadValues) {
  struct Case {
    std::vector<std::string> args;
    std::string expect;
  };
  std::vector<Case> cases = {
      {{"--bogus", "1"}, "unknown worker flag --bogus"},
      {{"--nobogus"}, "unknown worker flag --nobogus"},
      {{"worker_address"}, "unexpected argument"},
      {{"--shared_memory_size_mb"}, "missing a value"},
      {{"--shared_memory_size_mb", "-5"}, "non-negative"},
      {{"--shared_memory_size_mb", "1k"}, "shared_memory_size_mb"},
      {{"--enable_rdma=maybe"}, "true or false"},
      {{"--io_thread_nice", "x"}, "integer"},
      {{"--eviction_high_watermark_ratio", "high"}, "number"},
      {{"--arena_per_tenant", "99999999999"}, "arena_per_tenant"},
  };
  for (const auto& c : cases) {
    auto r = Parse(c.args);
    ASSERT_FALSE(r.ok()) << c.args[0];
    EXPECT_NE(r.status().message().find(c.expect), std::string::npos) << r.status().message();
  }
}

TEST(WorkerFlags, ValidateChecksRanges) {
  auto bad = [](std::vector<std::string> args, const std::string& expect) {
    auto r = Parse(args);
    ASSERT_TRUE(r.ok()) << r.status().message();
    Status st = r->options.Validate();
    EXPECT_FALSE(st.ok()) << args[0];
    EXPECT_NE(st.message().find(expect), std::string::npos) << st.message();
  };
  bad({"--eviction_low_watermark_ratio", "0.95"}, "eviction_low_watermark_ratio");
  bad({"--eviction_high_watermark_ratio", "1.5"}, "eviction_high_watermark_ratio");
  bad({"--start_metastore_service", "true"}, "--metastore_address");
  bad({"--metastore_address", "nohost"}, "--metastore_address");
  bad({"--etcd_address", "127.0.0.1:2379,bad"}, "--etcd_address");
  bad({"--minloglevel", "4"}, "--minloglevel");
  bad({"--oc_worker_worker_pool_size", "0"}, "oc_worker_worker_pool_size");
}

TEST(WorkerFlags, CoordinationAddress) {
  WorkerOptions o;
  EXPECT_EQ(o.coordination_address(), "");
  o.metastore_address = "127.0.0.1:2399";
  EXPECT_EQ(o.coordination_address(), "127.0.0.1:2399");
  o.etcd_address = "127.0.0.1:2379,127.0.0.2:2379";
  EXPECT_EQ(o.coordination_address(), "127.0.0.1:2379");
}

TEST(WorkerFlags, IdentityIsTheFullAddress) {
  WorkerOptions a, b;
  a.worker_address = "127.0.0.1:31501";
  b.worker_address = "127.0.0.2:31501";
  a.spill_directory = b.spill_directory = "/tmp/spill";
  EXPECT_NE(a.pid_path(), b.pid_path());
  EXPECT_NE(a.socket_path(), b.socket_path());
  EXPECT_NE(a.spill_path(), b.spill_path());
  EXPECT_EQ(a.pid_path(), "/tmp/ds_worker/datasystem_worker_127.0.0.1_31501.pid");
}

TEST(WorkerFlags, SpillLimitZeroMeansMostOfTheDisk) {
  WorkerOptions o;
  EXPECT_EQ(o.EffectiveSpillLimit(), 0u);  // no spill directory
  o.spill_directory = "/tmp/does/not/exist/yet";
  EXPECT_GT(o.EffectiveSpillLimit(), 0u);
  o.spill_size_limit = 12345;
  EXPECT_EQ(o.EffectiveSpillLimit(), 12345u);
}

TEST(WorkerFlags, ArgvRoundTrip) {
  auto r = Parse({"--worker_address", "127.0.0.3:7", "--etcd_address", "127.0.0.1:2379",
                  "--spill_directory", "/tmp/s", "--spill_size_limit", "1048576",
                  "--eviction_high_watermark_ratio", "0.75", "--enable_data_replication", "false",
                  "--ready_check_path", "/tmp/r", "--arena_per_tenant", "2", "--v", "1"});
  ASSERT_TRUE(r.ok());
  auto again = ParseWorkerFlags(WorkerArgv(*r));
  ASSERT_TRUE(again.ok()) << again.status().message();
  EXPECT_EQ(WorkerArgv(*again), WorkerArgv(*r));
  EXPECT_EQ(again->options.cache_max_keys, 0u);
  EXPECT_EQ(again->no_effect, std::vector<std::string>{"arena_per_tenant=2"});
}

TEST(WorkerFlags, ExtraFlagsForTheWorkerBinary) {
  std::vector<std::pair<std::string, std::string>> extra;
  auto r = ParseWorkerFlags({"--ready_fd=5", "--worker_address", "127.0.0.1:9"}, {"ready_fd"},
                            &extra);
  ASSERT_TRUE(r.ok());
  ASSERT_EQ(extra.size(), 1u);
  EXPECT_EQ(extra[0].second, "5");
  EXPECT_FALSE(ParseWorkerFlags({"--ready_fd=5"}).ok());  // dscli does not take it
}

TEST(WorkerFlags, ConfigFile) {
  testing::TempDir dir;
  const std::string path = dir.path() + "/worker_config.json";
  std::ofstream(path) << R"({
    "worker_address": {"value": "127.0.0.1:4000", "description": "x"},
    "log_dir": {"value": "./datasystem/logs"},
    "shared_memory_size_mb": {"value": 64},
    "shared_memory_populate": {"value": true},
    "v": {"value": ""},
    "arena_per_tenant": "2"
  })";
  auto entries = ReadWorkerConfigFile(path, "/home/ds");
  ASSERT_TRUE(entries.ok()) << entries.status().message();
  WorkerFlags flags;
  for (const auto& [k, v] : *entries) ASSERT_TRUE(SetWorkerFlag(flags, k, v).ok()) << k;
  EXPECT_EQ(flags.options.worker_address, "127.0.0.1:4000");
  EXPECT_EQ(flags.options.log_dir, "/home/ds/datasystem/logs");
  EXPECT_EQ(flags.options.shared_memory_size_mb, 64u);
  EXPECT_TRUE(flags.options.shared_memory_populate);
  EXPECT_EQ(flags.no_effect, std::vector<std::string>{"arena_per_tenant=2"});

  std::ofstream(path) << "[1, 2]";
  EXPECT_FALSE(ReadWorkerConfigFile(path, "").ok());
  std::ofstream(path) << R"({"log_dir": {"value": "./../x"}})";
  EXPECT_FALSE(ReadWorkerConfigFile(path, "").ok());
  EXPECT_FALSE(ReadWorkerConfigFile(dir.path() + "/missing.json", "").ok());
}

// The template dscli generate_config writes reads back as the defaults, with
// nothing reported as having no effect.
TEST(WorkerFlags, ConfigTemplateReadsBackAsTheDefaults) {
  testing::TempDir dir;
  const std::string path = dir.path() + "/worker_config.json";
  std::ofstream(path) << WorkerConfigTemplate();
  auto entries = ReadWorkerConfigFile(path, "");
  ASSERT_TRUE(entries.ok()) << entries.status().message();
  EXPECT_GT(entries->size(), 150u);  // empty values keep the default
  WorkerFlags flags;
  for (const auto& [k, v] : *entries) ASSERT_TRUE(SetWorkerFlag(flags, k, v).ok()) << k << "=" << v;
  EXPECT_TRUE(flags.no_effect.empty()) << flags.no_effect.front();
  EXPECT_EQ(WorkerArgv(flags), WorkerArgv(WorkerFlags{}));
}

// docs/dscli_flags.md has one table row per flag of the table, no more.
TEST(WorkerFlags, DocsListEveryFlag) {
  std::ifstream in(std::string(TQDS_SOURCE_DIR) + "/docs/dscli_flags.md");
  ASSERT_TRUE(in.good());
  std::set<std::string> documented;
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("| `", 0) != 0) continue;
    auto end = line.find('`', 3);
    documented.insert(line.substr(3, end - 3));
  }
  std::set<std::string> table;
  for (const auto& f : WorkerFlagTable()) table.insert(std::string(f.name));
  EXPECT_EQ(documented, table);
}

}  // namespace
}  // namespace ds
