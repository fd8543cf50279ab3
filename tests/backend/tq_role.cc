// tq_role: a producer or consumer process for the backend tests.
//   tq_role produce CONTROLLER CONFIG_JSON PARTITION START COUNT BATCH
//   tq_role consume CONTROLLER CONFIG_JSON PARTITION TASK TOTAL BATCH
// Payloads are functions of a uid field, so a consumer checks every byte.
// A consumer prints "ready" once connected to its storage, then "seen <uid>"
// per sample and "corrupt <uid>" on mismatch, then "done"; it stops when the
// task has consumed TOTAL samples.
#include <cstdio>
#include <cstdlib>
#include <string>

#include "tq/client.h"

namespace {

tq::Value Payload(int64_t uid) {
  int64_t len = 1 + (uid * 7919) % 257;
  std::vector<float> v(static_cast<size_t>(len));
  for (int64_t j = 0; j < len; ++j) v[j] = static_cast<float>(uid) + static_cast<float>(j) * 0.25f;
  return tq::Value::Tensor(tq::DType::kFloat32, {len}, tq::Buffer::Copy(v.data(), v.size() * 4)).MoveValue();
}

int Die(const std::string& what, const tq::Status& st) {
  std::fprintf(stderr, "tq_role: %s: %s\n", what.c_str(), st.ToString().c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 8) {
    std::fprintf(stderr, "usage: tq_role produce|consume CONTROLLER CONFIG_JSON PARTITION ...\n");
    return 2;
  }
  std::string role = argv[1];
  tq::Config cfg = tq::Config::parse(argv[3]);
  std::string manager = cfg.value("manager_type", "SimpleStorageManager");
  tq::TransferQueueClient client(role + "-" + std::to_string(getpid()), argv[2]);
  if (auto st = client.initialize_storage_manager(manager, cfg); !st.ok()) return Die("init", st);
  std::string partition = argv[4];

  if (role == "produce") {
    int64_t start = std::atoll(argv[5]), count = std::atoll(argv[6]), batch = std::atoll(argv[7]);
    for (int64_t s = start; s < start + count; s += batch) {
      int64_t n = std::min(batch, start + count - s);
      tq::Batch b(static_cast<size_t>(n));
      tq::Column uid, payload, text;
      for (int64_t u = s; u < s + n; ++u) {
        uid.push_back(tq::Value::Tensor(tq::DType::kInt64, {}, tq::Buffer::Copy(&u, 8)).MoveValue());
        payload.push_back(Payload(u));
        text.push_back(tq::Value::String("sample-" + std::to_string(u)));
      }
      (void)b.AddField("uid", uid);
      (void)b.AddField("payload", payload);
      (void)b.AddField("text", text);
      auto r = client.put(b, partition);
      if (!r.ok()) return Die("put", r.status());
    }
    std::printf("done\n");
    return 0;
  }

  std::printf("ready\n");
  std::fflush(stdout);  // a test starts its producers once every consumer is ready
  std::string task = argv[5];
  int64_t total = std::atoll(argv[6]), batch = std::atoll(argv[7]);
  while (true) {
    auto meta = client.get_meta({"uid", "payload", "text"}, batch, partition, task, {}, tq::FetchMode::kFetch,
                                std::chrono::milliseconds(300));
    if (!meta.ok()) {
      if (!meta.status().IsTimeout()) return Die("get_meta", meta.status());
      auto st = client.get_consumption_status(partition, task);
      if (st.ok() && static_cast<int64_t>(st->consumed) >= total) break;
      // Fewer than `batch` left: take what is there.
      meta = client.get_meta({"uid", "payload", "text"}, batch, partition, task, {}, tq::FetchMode::kPoll);
      if (!meta.ok()) return Die("get_meta(poll)", meta.status());
      if (meta->empty()) continue;
    }
    auto data = client.get_data(*meta);
    if (!data.ok()) return Die("get_data", data.status());
    const tq::Column& uids = **data->Get("uid");
    const tq::Column& payloads = **data->Get("payload");
    const tq::Column& texts = **data->Get("text");
    for (size_t i = 0; i < uids.size(); ++i) {
      int64_t u = *uids[i].as<int64_t>();
      bool ok = uids[i].shape().empty() && payloads[i].Equals(Payload(u)) &&
                texts[i].str() == "sample-" + std::to_string(u);
      std::printf("%s %lld\n", ok ? "seen" : "corrupt", static_cast<long long>(u));
    }
  }
  std::printf("done\n");
  return 0;
}
