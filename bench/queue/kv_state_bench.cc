// kv_state_bench: the controller's own cost of the KV calls, per request and
// per key, without sockets or a client: what `tq controller` does between
// receiving a request's header frame and encoding its reply (decode, the
// state change, encode), for KvPut, KvRetrieve, KvClear and the release
// that completes a clear. A program, not a test:
//
//   kv_state_bench [--keys 16384] [--fields 2] [--iters 50] [--json FILE]
//                  [--pause-ms 0] [--trash-mb 0]
//
// --pause-ms / --trash-mb: before each request, sleep that long and copy
// that many MiB elsewhere, as the controller meets a request in peer_bench
// (idle for 0.3 s while the client copied its 64 MiB): its memory is no
// longer in the caches, and the core may have slowed down.
//
// Each iteration uses a new partition, as peer_bench's put / get / clear
// loop does (bench/peers/profile_ours.py). The reference row is the least a
// key index can cost: the keys inserted into an abseil flat_hash_map
// (string -> position) reserved for them, then looked up once.
#include <absl/container/flat_hash_map.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "common/process.h"
#include "queue/controller_state.h"
#include "queue/kv_protocol.h"
#include "queue/protocol.h"

namespace {

using tq::BatchMeta;
using tq::FieldInfo;
using tq::SampleMeta;
using tqds::wire::Message;
using tqds::wire::MsgType;
using Clock = std::chrono::steady_clock;

struct Options {
  size_t keys = 16384;
  size_t fields = 2;
  int iters = 50;
  std::string json;
  size_t pause_ms = 0;
  size_t trash_mb = 0;
};

[[noreturn]] void Usage(const char* why) {
  std::fprintf(stderr,
               "kv_state_bench: %s\n"
               "usage: kv_state_bench [--keys N] [--fields F] [--iters I] [--json FILE] [--pause-ms MS] "
               "[--trash-mb MB]\n",
               why);
  std::exit(2);
}

Options Parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (i + 1 >= argc) Usage(("missing value after " + a).c_str());
    const char* v = argv[++i];
    char* end = nullptr;
    const long n = std::strtol(v, &end, 10);
    const bool number = end != v && *end == '\0' && n >= 0;
    if (a == "--json") {
      o.json = v;
    } else if (!number) {
      Usage(("not a number >= 0: " + a + " " + v).c_str());
    } else if (a == "--keys") {
      o.keys = static_cast<size_t>(n);
    } else if (a == "--fields") {
      o.fields = static_cast<size_t>(n);
    } else if (a == "--iters") {
      o.iters = static_cast<int>(n);
    } else if (a == "--pause-ms") {
      o.pause_ms = static_cast<size_t>(n);
    } else if (a == "--trash-mb") {
      o.trash_mb = static_cast<size_t>(n);
    } else {
      Usage(("unknown option " + a).c_str());
    }
  }
  return o;
}

void Check(const tqds::Status& st, const char* what) {
  if (!st.ok()) {
    std::fprintf(stderr, "kv_state_bench: %s: %s\n", what, st.ToString().c_str());
    std::exit(1);
  }
}

// The message as the controller receives it: header decoded from its frame.
Message Received(const Message& sent) {
  auto m = Message::DecodeHeader(tqds::Buffer::FromString(sent.EncodeHeader()));
  Check(m.status(), "decoding a request's header");
  m->payloads() = sent.payloads();
  return std::move(*m);
}

double Ms(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  const Options o = Parse(argc, argv);
  tqds::KeepFreedMemory();  // as `tq` runs its controller
  std::vector<std::string> keys(o.keys);
  for (size_t i = 0; i < o.keys; ++i) keys[i] = "test_key_" + std::to_string(i);
  std::vector<std::string> names;
  for (size_t f = 0; f < o.fields; ++f) names.push_back("field_" + std::to_string(f));
  // Each key's fields packed as the client sends them: 2 KiB float32 values
  // side by side in one pack per put.
  std::vector<SampleMeta> samples(o.keys);
  for (size_t s = 0; s < o.keys; ++s) {
    for (size_t f = 0; f < o.fields; ++f) {
      FieldInfo fi;
      fi.produced = true;
      fi.kind = tq::FieldKind::kTensor;
      fi.dtype = tq::DType::kFloat32;
      fi.shape = {512};
      fi.nbytes = 2048;
      fi.pack = 1;
      fi.offset = (s * o.fields + f) * 2048;
      samples[s].fields.push_back(fi);
    }
  }
  const BatchMeta meta(names, samples);

  // Between requests: idle, and other memory through the caches.
  std::vector<char> trash_from(o.trash_mb << 20, 1), trash_to(o.trash_mb << 20);
  auto cool = [&] {
    if (o.pause_ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(o.pause_ms));
    if (o.trash_mb > 0) std::memcpy(trash_to.data(), trash_from.data(), trash_from.size());
  };

  tq::internal::ControllerState state;
  enum { kPut, kRetrieve, kClear, kRelease, kReference, kRows };
  const char* row_names[kRows] = {"KV_PUT", "KV_RETRIEVE_META", "KV_CLEAR", "RELEASE_INDEXES",
                                  "reference: flat_hash_map insert + find"};
  std::vector<double> times[kRows];
  for (int it = -2; it < o.iters; ++it) {  // two warm-up iterations
    const std::string part = "p" + std::to_string(it + 2);
    Message put(MsgType::kCtlKvPut, 1);
    put.set_body(tq::internal::KvPutRequest::Encode(part, keys, meta));
    tq::internal::KvRetrieveRequest rr{part, keys, false};
    Message get(MsgType::kCtlKvRetrieve, 2);
    get.set_body(rr.Encode());
    tq::internal::KvClearRequest cr{part, keys};
    Message clear(MsgType::kCtlKvClear, 3);
    clear.set_body(cr.Encode());

    cool();
    auto t0 = Clock::now();
    {
      Message m = Received(put);
      auto req = tq::internal::KvPutRequest::Decode(m.body());
      Check(req.status(), "KvPut decode");
      auto r = state.KvPut(req->partition_id, req->keys, std::move(req->records));
      Check(r.status(), "KvPut");
      Message rep = Message::ReplyTo(m, tq::internal::EncodeKvPutReply(*r, state.TakeDeadPacks()));
      rep.EncodeHeader();
    }
    auto t1 = Clock::now();
    cool();
    const auto t1c = Clock::now();
    {
      Message m = Received(get);
      auto req = tq::internal::KvRetrieveRequest::Decode(m.body());
      Check(req.status(), "KvRetrieve decode");
      auto rows = state.KvRetrieveRows(req->partition_id, req->keys, req->create);
      Check(rows.status(), "KvRetrieve");
      if (rows->size() != o.keys) {
        Check(tqds::Status::Internal("found ", rows->size(), " keys"), "KvRetrieve");
      }
      tq::internal::MetaMessage(m.type(), *rows).EncodeHeader();
    }
    auto t2 = Clock::now();
    Message cleared;
    cool();
    const auto t2c = Clock::now();
    {
      Message m = Received(clear);
      auto req = tq::internal::KvClearRequest::Decode(m.body());
      Check(req.status(), "KvClear decode");
      BatchMeta hidden = state.BeginKvClear(req->partition_id, req->keys);
      cleared = tq::internal::SampleListMessage(m.type(), hidden, state.TakeDeadPacks(),
                                                state.TakeClearKeyed());
      cleared.EncodeHeader();
    }
    auto t3 = Clock::now();
    cool();
    const auto t3c = Clock::now();
    {
      // The client sends the cleared samples back once storage has dropped them.
      Message release = cleared;
      Message m = Received(release);
      auto victims = tq::internal::SampleListFromMessage(m);
      Check(victims.status(), "release decode");
      if (victims->size() != o.keys) {
        Check(tqds::Status::Internal("cleared ", victims->size(), " keys"), "KvClear");
      }
      Check(state.ReleaseSamples(*victims), "ReleaseSamples");
    }
    auto t4 = Clock::now();
    const auto t4c = Clock::now();
    {
      absl::flat_hash_map<std::string, size_t> index;
      index.reserve(keys.size());
      for (size_t i = 0; i < keys.size(); ++i) index.emplace(keys[i], i);
      size_t found = 0;
      for (const auto& k : keys) found += index.count(k);
      if (found != keys.size()) Check(tqds::Status::Internal("reference lost keys"), "reference");
    }
    auto t5 = Clock::now();
    if (it < 0) continue;
    times[kPut].push_back(Ms(t0, t1));
    times[kRetrieve].push_back(Ms(t1c, t2));
    times[kClear].push_back(Ms(t2c, t3));
    times[kRelease].push_back(Ms(t3c, t4));
    times[kReference].push_back(Ms(t4c, t5));
  }

  std::printf("kv_state_bench: %zu keys x %zu fields, %d iterations (median); before each request %zu ms idle, "
              "%zu MiB copied\n", o.keys, o.fields, o.iters, o.pause_ms, o.trash_mb);
  std::printf("%-40s %10s %12s %14s\n", "request", "ms", "ns per key", "x reference");
  const double ref = Median(times[kReference]);
  std::string json = "{\"keys\": " + std::to_string(o.keys) +
                     ", \"fields\": " + std::to_string(o.fields) +
                     ", \"iters\": " + std::to_string(o.iters) + ", \"rows\": {";
  for (int r = 0; r < kRows; ++r) {
    const double ms = Median(times[r]);
    std::printf("%-40s %10.3f %12.1f %14.2f\n", row_names[r], ms,
                ms * 1e6 / static_cast<double>(o.keys),
                ref > 0 ? ms / ref : 0.0);
    char buf[160];
    std::snprintf(buf, sizeof buf, "%s\"%s\": {\"ms\": %.4f}", r ? ", " : "", row_names[r], ms);
    json += buf;
  }
  json += "}}\n";
  if (!o.json.empty()) {
    std::ofstream(o.json) << json;
  }
  return 0;
}
