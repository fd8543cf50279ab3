// Producer / consumer processes for the multi-process integration test.
//   integration_worker producer CONTROLLER PARTITION FIRST_UID COUNT BATCH
//     puts uid+prompt as new samples, then adds "response" to the same samples.
//   integration_worker consumer CONTROLLER PARTITION TASK BATCH TOTAL OUTFILE
//     reads (uid, prompt, response) for TASK until the task consumed TOTAL
//     samples, writing one line per sample it got (see integration_payload.h).
// Exit code 0 on success; errors go to stderr.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include <unistd.h>

#include "queue/integration_payload.h"
#include "tq/client.h"

namespace {

using namespace std::chrono_literals;
using namespace tq;

int Fail(const std::string& who, const Status& st) {
  std::cerr << who << ": " << st.ToString() << std::endl;
  return 1;
}

int Produce(TransferQueueClient& c, const std::string& partition, int64_t first, int64_t count, int64_t batch) {
  for (int64_t start = first; start < first + count; start += batch) {
    int64_t n = std::min(batch, first + count - start);
    Batch b(static_cast<size_t>(n));
    Column uid, prompt;
    for (int64_t u = start; u < start + n; ++u) {
      uid.push_back(itest::UidValue(u));
      prompt.push_back(itest::PromptValue(u));
    }
    if (auto st = b.AddField("uid", uid); !st.ok()) return Fail("producer", st);
    if (auto st = b.AddField("prompt", prompt); !st.ok()) return Fail("producer", st);
    auto meta = c.put(b, partition);
    if (!meta.ok()) return Fail("producer put", meta.status());
    // A later stage adds the response to the same samples.
    Batch r(static_cast<size_t>(n));
    Column resp;
    for (int64_t u = start; u < start + n; ++u) resp.push_back(itest::ResponseValue(u));
    if (auto st = r.AddField("response", resp); !st.ok()) return Fail("producer", st);
    auto more = c.put(r, *meta);
    if (!more.ok()) return Fail("producer put response", more.status());
  }
  return 0;
}

int Consume(TransferQueueClient& c, const std::string& partition, const std::string& task, int64_t batch,
            int64_t total, const std::string& out_path) {
  const std::vector<std::string> fields = {"uid", "prompt", "response"};
  std::string out;
  auto deadline = std::chrono::steady_clock::now() + 120s;
  auto take = [&](const BatchMeta& meta) -> Status {
    if (meta.empty()) return Status::OK();
    TQDS_ASSIGN_OR_RETURN(Batch data, c.get_data(meta));
    TQDS_ASSIGN_OR_RETURN(const Column* uid, data.Get("uid"));
    TQDS_ASSIGN_OR_RETURN(const Column* prompt, data.Get("prompt"));
    TQDS_ASSIGN_OR_RETURN(const Column* response, data.Get("response"));
    for (size_t i = 0; i < data.batch_size(); ++i) {
      if ((*uid)[i].nbytes() != 8) return Status::Invalid("uid of ", (*uid)[i].nbytes(), " bytes");
      out += itest::Line(*(*uid)[i].as<int64_t>(), (*prompt)[i], (*response)[i]);
      out += '\n';
    }
    return Status::OK();
  };
  while (true) {
    if (std::chrono::steady_clock::now() > deadline) return Fail("consumer " + task, Status::Timeout("gave up"));
    auto meta = c.get_meta(fields, batch, partition, task, {}, FetchMode::kFetch, 500ms);
    if (meta.ok()) {
      if (auto st = take(*meta); !st.ok()) return Fail("consumer " + task, st);
      continue;
    }
    if (!meta.status().IsTimeout()) return Fail("consumer get_meta " + task, meta.status());
    // Fewer than a batch ready: take the rest, or stop when the task is done.
    auto rest = c.get_meta(fields, batch, partition, task, {}, FetchMode::kPoll);
    if (!rest.ok()) return Fail("consumer poll " + task, rest.status());
    if (!rest->empty()) {
      if (auto st = take(*rest); !st.ok()) return Fail("consumer " + task, st);
      continue;
    }
    auto cs = c.get_consumption_status(partition, task);
    if (cs.ok() && static_cast<int64_t>(cs->consumed) >= total) break;
  }
  std::ofstream f(out_path, std::ios::binary);
  f << out;
  f.close();
  if (!f) return Fail("consumer " + task, Status::IOError("cannot write ", out_path));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> a(argv + 1, argv + argc);
  if (a.size() == 6 && a[0] == "producer") {
    TransferQueueClient c("producer-" + a[3], a[1]);
    if (auto st = c.initialize_storage_manager("SimpleStorageManager"); !st.ok()) return Fail("producer init", st);
    return Produce(c, a[2], std::atoll(a[3].c_str()), std::atoll(a[4].c_str()), std::atoll(a[5].c_str()));
  }
  if (a.size() == 7 && a[0] == "consumer") {
    TransferQueueClient c("consumer-" + a[3] + "-" + std::to_string(::getpid()), a[1]);
    if (auto st = c.initialize_storage_manager("SimpleStorageManager"); !st.ok()) return Fail("consumer init", st);
    return Consume(c, a[2], a[3], std::atoll(a[4].c_str()), std::atoll(a[5].c_str()), a[6]);
  }
  std::cerr << "usage: integration_worker producer CONTROLLER PARTITION FIRST_UID COUNT BATCH\n"
               "       integration_worker consumer CONTROLLER PARTITION TASK BATCH TOTAL OUTFILE\n";
  return 2;
}
