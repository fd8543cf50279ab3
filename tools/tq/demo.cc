// tq demo: a controller and two storage units as real processes on
// localhost; a prompt producer, a rollout stage adding responses, and two
// consumer tasks (reward, train) streaming concurrently. Every payload is a
// function of the sample's uid, so each consumer checks the bytes it got and
// that it saw every sample exactly once.
#include "tools/tq/demo.h"

#include <atomic>
#include <chrono>
#include <filesystem>
#include <cstdio>
#include <mutex>
#include <set>
#include <thread>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/process.h"
#include "tq/client.h"

namespace tq::tools {

namespace {

using Clock = std::chrono::steady_clock;
const char* kPartition = "rollout_step_0";

Value PromptOf(int64_t uid) {
  int64_t len = 16 + (uid * 7919) % 113;
  std::vector<int64_t> t(static_cast<size_t>(len));
  for (int64_t j = 0; j < len; ++j) t[j] = uid * 1000 + j;
  return Value::Tensor(DType::kInt64, {len}, Buffer::Copy(t.data(), t.size() * 8)).MoveValue();
}

Value ResponseOf(int64_t uid) {
  int64_t len = 8 + (uid * 104729) % 200;
  std::vector<int32_t> t(static_cast<size_t>(len));
  for (int64_t j = 0; j < len; ++j) t[j] = static_cast<int32_t>((uid ^ (j * 2654435761LL)) & 0x7fffffff);
  return Value::Tensor(DType::kInt32, {len}, Buffer::Copy(t.data(), t.size() * 4)).MoveValue();
}

Value RewardOf(int64_t uid) {
  float r = static_cast<float>(uid) * 0.5f;
  return Value::Tensor(DType::kFloat32, {}, Buffer::Copy(&r, 4)).MoveValue();
}

Value UidOf(int64_t uid) {
  return Value::Tensor(DType::kInt64, {}, Buffer::Copy(&uid, 8)).MoveValue();
}

struct Stage {
  std::string name;
  std::set<int64_t> seen;
  int64_t duplicates = 0;
  int64_t corrupt = 0;
  uint64_t bytes = 0;
};

// Checks each sample's fields against what its uid implies.
void Check(const Batch& b, Stage& st) {
  const Column& uids = **b.Get("uid");
  for (size_t i = 0; i < b.batch_size(); ++i) {
    int64_t uid = *uids[i].as<int64_t>();
    if (!st.seen.insert(uid).second) ++st.duplicates;
    for (const auto& name : b.keys()) {
      const Value& v = (**b.Get(name))[i];
      st.bytes += v.nbytes();
      bool ok = true;
      if (name == "prompt") ok = v.Equals(PromptOf(uid));
      if (name == "response") ok = v.Equals(ResponseOf(uid));
      if (name == "reward") ok = v.Equals(RewardOf(uid));
      if (name == "prompt_text") ok = v.str() == "prompt-" + std::to_string(uid);
      if (!ok) ++st.corrupt;
    }
  }
}

Result<TransferQueueClient*> Connect(std::unique_ptr<TransferQueueClient>& holder, const std::string& id,
                                     const std::string& controller, const std::string& manager,
                                     const Config& cfg) {
  holder = std::make_unique<TransferQueueClient>(id, controller);
  TQDS_RETURN_NOT_OK(holder->initialize_storage_manager(manager, cfg));
  return holder.get();
}

// Finds a sibling program: next to this executable, else on PATH.
std::string Sibling(const std::string& name) {
  std::string self = tqds::SelfExecutable();
  std::string dir = self.substr(0, self.rfind('/') + 1);
  if (::access((dir + name).c_str(), X_OK) == 0) return dir + name;
  return name;
}

int FreePort() { return tqds::FreeLoopbackPort(); }

// A worker started with `dscli start`, stopped with `dscli stop`.
struct DemoWorker {
  std::string address, socket_dir;
  ~DemoWorker() {
    if (address.empty()) return;
    auto stop = tqds::ChildProcess::Spawn({Sibling("dscli"), "stop", "--worker_address", address});
    if (stop.ok()) (void)stop->Wait(std::chrono::seconds(40));
    std::error_code ec;
    std::filesystem::remove_all(socket_dir, ec);
  }
};

Result<std::string> StartWorker(DemoWorker& w) {
  std::string address = "127.0.0.1:" + std::to_string(FreePort());
  std::string dir = "/tmp/tq-demo-" + std::to_string(::getpid());
  TQDS_ASSIGN_OR_RETURN(auto start, tqds::ChildProcess::Spawn({Sibling("dscli"), "start", "-w", "--worker_address",
                                                               address, "--unix_socket_dir", dir,
                                                               "--shared_memory_size_mb", "1024"}));
  TQDS_ASSIGN_OR_RETURN(int code, start.Wait(std::chrono::seconds(30)));
  if (code != 0) return Status::Unavailable("dscli start exited with ", code);
  w.address = address;
  w.socket_dir = dir;
  return address;
}

}  // namespace

int RunDemo(const DemoOptions& o) {
  if (o.batch <= 0 || o.samples <= 0) {
    std::fprintf(stderr, "tq demo: --samples and --batch must be positive\n");
    return 2;
  }
  const int64_t n = (o.samples + o.batch - 1) / o.batch * o.batch;
  const std::string self = tqds::SelfExecutable();
  std::vector<tqds::ChildProcess> services;
  auto spawn = [&](std::vector<std::string> argv, const std::string& needle) -> Result<std::string> {
    TQDS_ASSIGN_OR_RETURN(auto child, tqds::ChildProcess::Spawn(argv));
    TQDS_ASSIGN_OR_RETURN(std::string line, child.WaitForLine(needle, std::chrono::seconds(20)));
    services.push_back(std::move(child));
    return line.substr(line.find("tcp://"));
  };

  DemoWorker worker;  // a datasystem worker this demo started; stopped on every exit path
  std::string manager = "SimpleStorageManager";
  Config cfg = Config::object();
  auto ctl = spawn({self, "controller", "--port", "0"}, "listening on");
  if (!ctl.ok()) {
    std::fprintf(stderr, "tq demo: controller: %s\n", ctl.status().ToString().c_str());
    return 1;
  }
  std::printf("started controller    pid %d at %s\n", services.back().pid(), ctl->c_str());
  if (o.backend == "simple") {
    for (int i = 0; i < 2; ++i) {
      auto unit = spawn({self, "storage-unit", "--port", "0", "--controller", *ctl}, "listening on");
      if (!unit.ok()) {
        std::fprintf(stderr, "tq demo: storage unit: %s\n", unit.status().ToString().c_str());
        return 1;
      }
      std::printf("started storage unit  pid %d at %s\n", services.back().pid(), unit->c_str());
    }
  } else if (o.backend == "yuanrong") {
    std::string address = o.worker_address;
    if (address.empty()) {
      auto started = StartWorker(worker);
      if (!started.ok()) {
        std::fprintf(stderr, "tq demo: datasystem worker: %s\n", started.status().ToString().c_str());
        return 1;
      }
      address = *started;
      std::printf("started datasystem worker at %s (dscli start -w --worker_address %s)\n", address.c_str(),
                  address.c_str());
    }
    auto colon = address.rfind(':');
    manager = "YuanrongStorageManager";
    cfg = Config{{"manager_type", manager},
                 {"client_name", "YuanrongStorageClient"},
                 {"host", address.substr(0, colon)},
                 {"port", std::atoi(address.c_str() + colon + 1)}};
  } else {
    std::fprintf(stderr, "tq demo: unknown --backend '%s' (known: simple, yuanrong)\n", o.backend.c_str());
    return 2;
  }

  std::unique_ptr<TransferQueueClient> cp, cr, cw, ct;
  auto producer = Connect(cp, "producer", *ctl, manager, cfg);
  auto rollout = Connect(cr, "rollout", *ctl, manager, cfg);
  auto reward = Connect(cw, "reward", *ctl, manager, cfg);
  auto train = Connect(ct, "train", *ctl, manager, cfg);
  for (auto* r : {&producer, &rollout, &reward, &train}) {
    if (!r->ok()) {
      std::fprintf(stderr, "tq demo: client: %s\n", r->status().ToString().c_str());
      return 1;
    }
  }

  std::printf("streaming %lld samples in batches of %lld through partition '%s'\n",
              static_cast<long long>(n), static_cast<long long>(o.batch), kPartition);
  auto t0 = Clock::now();
  std::atomic<uint64_t> bytes_written{0};
  std::mutex err_mu;
  std::string first_error;
  auto fail = [&](const std::string& who, const Status& st) {
    std::lock_guard<std::mutex> lock(err_mu);
    if (first_error.empty()) first_error = who + ": " + st.ToString();
  };

  std::thread prod([&] {
    for (int64_t start = 0; start < n && first_error.empty(); start += o.batch) {
      Batch b(static_cast<size_t>(o.batch));
      Column uid, prompt, text;
      for (int64_t u = start; u < start + o.batch; ++u) {
        uid.push_back(UidOf(u));
        prompt.push_back(PromptOf(u));
        text.push_back(Value::String("prompt-" + std::to_string(u)));
        bytes_written += 8 + prompt.back().nbytes() + text.back().nbytes();
      }
      (void)b.AddField("uid", uid);
      (void)b.AddField("prompt", prompt);
      (void)b.AddField("prompt_text", text);
      auto r = (*producer)->put(b, kPartition);
      if (!r.ok()) return fail("producer", r.status());
    }
  });

  Stage roll, rew, trn;
  roll.name = "rollout";
  rew.name = "reward";
  trn.name = "train";
  auto consume = [&](TransferQueueClient* c, Stage& st, std::vector<std::string> fields, auto&& then) {
    while (static_cast<int64_t>(st.seen.size()) + st.duplicates < n && first_error.empty()) {
      auto meta = c->get_meta(fields, o.batch, kPartition, st.name);
      if (!meta.ok()) return fail(st.name, meta.status());
      auto data = c->get_data(*meta);
      if (!data.ok()) return fail(st.name, data.status());
      Check(*data, st);
      Status s = then(*meta, *data);
      if (!s.ok()) return fail(st.name, s);
    }
  };
  auto none = [](const BatchMeta&, const Batch&) { return Status::OK(); };
  std::thread roll_t([&] {
    consume(*rollout, roll, {"uid", "prompt"}, [&](const BatchMeta& meta, const Batch& b) {
      Batch out(b.batch_size());
      Column resp;
      const Column& uids = **b.Get("uid");
      for (const auto& u : uids) {
        resp.push_back(ResponseOf(*u.as<int64_t>()));
        bytes_written += resp.back().nbytes();
      }
      (void)out.AddField("response", resp);
      return (*rollout)->put(out, meta).status();
    });
  });
  std::thread rew_t([&] {
    consume(*reward, rew, {"uid", "response"}, [&](const BatchMeta& meta, const Batch& b) {
      Batch out(b.batch_size());
      Column r;
      for (const auto& u : **b.Get("uid")) r.push_back(RewardOf(*u.as<int64_t>()));
      bytes_written += 4 * b.batch_size();
      (void)out.AddField("reward", r);
      return (*reward)->put(out, meta).status();
    });
  });
  std::thread trn_t([&] { consume(*train, trn, {"uid", "prompt", "prompt_text", "response", "reward"}, none); });
  prod.join();
  roll_t.join();
  rew_t.join();
  trn_t.join();
  double secs = std::chrono::duration<double>(Clock::now() - t0).count();

  bool ok = first_error.empty();
  if (!ok) std::printf("ERROR %s\n", first_error.c_str());
  std::printf("\n%-10s %10s %10s %10s %12s\n", "task", "samples", "dups", "corrupt", "MB read");
  uint64_t read_bytes = 0;
  for (Stage* s : {&roll, &rew, &trn}) {
    bool complete = static_cast<int64_t>(s->seen.size()) == n && s->duplicates == 0 && s->corrupt == 0;
    ok = ok && complete;
    read_bytes += s->bytes;
    std::printf("%-10s %10zu %10lld %10lld %12.1f %s\n", s->name.c_str(), s->seen.size(),
                static_cast<long long>(s->duplicates), static_cast<long long>(s->corrupt), s->bytes / 1e6,
                complete ? "ok" : "MISMATCH");
  }
  auto prod_status = (*train)->get_production_status(kPartition);
  if (prod_status.ok()) {
    std::printf("controller: %zu samples, fields:", prod_status->num_samples);
    for (const auto& [f, c] : prod_status->produced) std::printf(" %s=%zu", f.c_str(), c);
    std::printf("\n");
  }
  Status cleared = (*train)->clear_partition(kPartition);
  if (!cleared.ok()) {
    ok = false;
    std::printf("clear_partition failed: %s\n", cleared.ToString().c_str());
  }
  std::printf("\n%lld samples, %.1f MB written, %.1f MB read in %.2f s: %.0f samples/s, %.1f MB/s\n",
              static_cast<long long>(n), bytes_written.load() / 1e6, read_bytes / 1e6, secs, n / secs,
              (bytes_written.load() + read_bytes) / 1e6 / secs);
  std::printf("%s\n", ok ? "DEMO OK: every task saw every sample exactly once, byte-identical"
                         : "DEMO FAILED");
  return ok ? 0 : 1;
}

}  // namespace tq::tools
