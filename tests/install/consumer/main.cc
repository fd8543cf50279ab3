// tqds_consumer: a program built outside this source tree against the
// installed tqds package (tests/install). It does a put / get_meta / get_data
// round trip through a running `tq controller` and checks every byte; given a
// datasystem worker it also does a ds::KVClient set / get / zero-copy get /
// delete and the same queue round trip through YuanrongStorageManager.
//
//   tqds_consumer --controller tcp://127.0.0.1:PORT [--worker 127.0.0.1:PORT]
//
// Prints one "ok: ..." line per check; exits non-zero on the first failure.
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "ds/kv_client.h"
#include "tq/client.h"

namespace {

using tqds::Buffer;
using tqds::Status;

// The expected bytes of sample `row`, field "tokens": int32 [3].
std::vector<int32_t> Tokens(int64_t row) {
  return {static_cast<int32_t>(row * 10 + 1), static_cast<int32_t>(row * 10 + 2), -7};
}
// Field "prompt": a string with an embedded NUL, so lengths come from the data.
std::string Prompt(int64_t row) { return "prompt " + std::to_string(row) + std::string(1, '\0') + "end"; }

// put -> get_meta -> get_data through `manager_type`, into `partition`.
Status QueueRoundTrip(const std::string& controller, const std::string& manager_type,
                      const tq::Config& config, const std::string& partition) {
  constexpr int64_t kRows = 4;
  tq::TransferQueueClient client("install-consumer", controller);
  TQDS_RETURN_NOT_OK(client.initialize_storage_manager(manager_type, config));

  std::vector<int32_t> tokens;
  std::vector<std::string> prompts;
  for (int64_t r = 0; r < kRows; ++r) {
    for (int32_t v : Tokens(r)) tokens.push_back(v);
    prompts.push_back(Prompt(r));
  }
  tq::Batch batch(kRows);
  TQDS_RETURN_NOT_OK(batch.AddTensor("tokens", tq::DType::kInt32, {kRows, 3},
                                     Buffer::Copy(tokens.data(), tokens.size() * sizeof(int32_t))));
  TQDS_RETURN_NOT_OK(batch.AddStrings("prompt", prompts));
  TQDS_ASSIGN_OR_RETURN(tq::BatchMeta put_meta, client.put(batch, partition));
  if (put_meta.size() != kRows) return Status::Internal("put returned ", put_meta.size(), " samples");
  // Which row of the batch each global index holds.
  std::map<int64_t, int64_t> row_of;
  for (size_t i = 0; i < put_meta.size(); ++i) row_of[put_meta.samples()[i].global_index] = i;

  TQDS_ASSIGN_OR_RETURN(tq::BatchMeta meta, client.get_meta({"tokens", "prompt"}, kRows, partition,
                                                            "install_test", {}, tq::FetchMode::kFetch,
                                                            std::chrono::seconds(20)));
  if (meta.size() != kRows) return Status::Internal("get_meta returned ", meta.size(), " samples");
  TQDS_ASSIGN_OR_RETURN(tq::Batch out, client.get_data(meta));
  if (out.batch_size() != kRows) return Status::Internal("get_data returned ", out.batch_size(), " rows");
  TQDS_ASSIGN_OR_RETURN(const tq::Column* tok_col, out.Get("tokens"));
  TQDS_ASSIGN_OR_RETURN(const tq::Column* prompt_col, out.Get("prompt"));

  for (size_t i = 0; i < meta.size(); ++i) {
    const int64_t index = meta.samples()[i].global_index;
    auto it = row_of.find(index);
    if (it == row_of.end()) return Status::Internal("get_meta returned unknown sample ", index);
    const int64_t row = it->second;
    const tq::Value& t = (*tok_col)[i];
    const std::vector<int32_t> want = Tokens(row);
    if (!t.is_tensor() || t.dtype() != tq::DType::kInt32 || t.shape() != tq::Shape{3} ||
        t.nbytes() != want.size() * sizeof(int32_t) ||
        std::memcmp(t.data().data(), want.data(), t.nbytes()) != 0) {
      return Status::Internal("tokens of sample ", index, " differ: got ", t.ToString());
    }
    const tq::Value& p = (*prompt_col)[i];
    if (p.str() != Prompt(row)) return Status::Internal("prompt of sample ", index, " differs");
  }
  TQDS_RETURN_NOT_OK(client.clear_partition(partition));
  std::printf("ok: %s put/get_meta/get_data round trip, %lld samples, bytes match\n",
              manager_type.c_str(), static_cast<long long>(kRows));
  return Status::OK();
}

// Set / Get / GetBuffers / Delete on the worker at host:port.
Status KVRoundTrip(const std::string& host, int port) {
  ds::KVClient kv(host, port);
  TQDS_RETURN_NOT_OK(kv.Init());
  const std::string key = "tqds-install-test/key";
  std::string value(256 * 1024, '\0');  // above the inline limit: through shared memory
  for (size_t i = 0; i < value.size(); ++i) value[i] = static_cast<char>(i * 131 + 7);
  TQDS_RETURN_NOT_OK(kv.Set(key, value));
  TQDS_ASSIGN_OR_RETURN(std::string got, kv.Get(key));
  if (got != value) return Status::Internal("Get returned different bytes");
  TQDS_ASSIGN_OR_RETURN(auto views, kv.GetBuffers({key}));
  if (views.size() != 1 || !views[0] || views[0]->view() != value) {
    return Status::Internal("GetBuffers returned a different view");
  }
  views.clear();
  TQDS_ASSIGN_OR_RETURN(size_t deleted, kv.Delete({key}));
  if (deleted != 1) return Status::Internal("Delete removed ", deleted, " keys");
  auto missing = kv.Get(key);
  if (missing.ok() || !missing.status().IsNotFound()) {
    return Status::Internal("a deleted key is not NotFound: ", missing.status().ToString());
  }
  std::printf("ok: ds::KVClient set/get/get_buffers/delete, %zu bytes match\n", value.size());
  return Status::OK();
}

int Fail(const std::string& what, const Status& st) {
  std::fprintf(stderr, "FAIL: %s: %s\n", what.c_str(), st.ToString().c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  std::string controller, worker;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    if (flag == "--controller") {
      controller = argv[i + 1];
    } else if (flag == "--worker") {
      worker = argv[i + 1];
    } else {
      std::fprintf(stderr, "unknown flag %s\n", argv[i]);
      return 2;
    }
  }
  if (controller.empty()) {
    std::fprintf(stderr, "usage: %s --controller tcp://HOST:PORT [--worker HOST:PORT]\n", argv[0]);
    return 2;
  }

  Status st = QueueRoundTrip(controller, "SimpleStorageManager", tq::Config::object(), "install_simple");
  if (!st.ok()) return Fail("simple backend", st);

  if (!worker.empty()) {
    const size_t colon = worker.rfind(':');
    if (colon == std::string::npos) return Fail("--worker", Status::Invalid("want HOST:PORT"));
    const std::string host = worker.substr(0, colon);
    const int port = std::stoi(worker.substr(colon + 1));
    st = KVRoundTrip(host, port);
    if (!st.ok()) return Fail("datasystem KVClient", st);
    const tq::Config config = {
        {"client_name", "YuanrongStorageClient"}, {"host", host}, {"port", port}};
    st = QueueRoundTrip(controller, "YuanrongStorageManager", config, "install_yuanrong");
    if (!st.ok()) return Fail("datasystem backend", st);
  }
  std::printf("ok: all checks passed\n");
  return 0;
}
