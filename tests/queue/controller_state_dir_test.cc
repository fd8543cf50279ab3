// The controller's state directory: ControllerJournal's files (records read
// back in order, a record cut short at the end dropped, damage and unknown
// versions refused, one controller per directory), and a controller started
// again on its directory answering a resent request with its first answer.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>

#include "common/subprocess.h"
#include "common/test_util.h"
#include "common/wire/rpc.h"
#include "queue/controller_journal.h"
#include "queue/kv_protocol.h"
#include "queue/controller_state.h"
#include "queue/protocol.h"
#include "tq/client.h"
#include "tq/controller.h"

namespace tq {
namespace {

using namespace std::chrono_literals;
using internal::ControllerJournal;
using tqds::testing::TempDir;
using tqds::wire::Message;
using tqds::wire::MsgType;
using tqds::wire::RpcClient;

Message Request(MsgType type, uint64_t id, const std::string& body, const std::string& payload = "") {
  Message m(type, id);
  m.set_body(tqds::wire::PackBody([&](internal::Packer& pk) {
    pk.pack_map(1);
    pk.pack("partition_id");
    pk.pack(body);
  }));
  if (!payload.empty()) m.payloads().push_back(tqds::Buffer::FromString(payload));
  return m;
}

std::string PartitionOf(const Message& m) {
  auto rd = tqds::wire::MapReader::Of(m.body(), "test");
  return rd.ok() ? rd->Get<std::string>("partition_id").ValueOr("?") : "?";
}

uint64_t FileSize(const std::string& path) { return std::filesystem::file_size(path); }

std::string OnlySegment(const std::string& dir) {
  std::string found;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    std::string name = e.path().filename().string();
    if (name.rfind("wal.", 0) == 0) {
      EXPECT_TRUE(found.empty()) << "more than one segment: " << found << ", " << name;
      found = e.path().string();
    }
  }
  return found;
}

// A fresh directory with base "B1" and the records a, b (b with a payload).
void WriteTwoRecords(const std::string& dir) {
  ControllerJournal::Recovered rec;
  ASSERT_OK_AND_ASSIGN(auto j, ControllerJournal::Open(dir, false, &rec));
  EXPECT_FALSE(rec.base.has_value());
  ASSERT_OK(j->Rotate("B1"));
  ASSERT_OK(j->Append(Request(MsgType::kCtlAllocate, 7, "a")));
  ASSERT_OK(j->Append(Request(MsgType::kCtlGetMeta, RpcClient::kCallerIdBit | 9, "b", "payload bytes")));
}

TEST(ControllerJournal, RecordsComeBackInOrderAfterTheBase) {
  TempDir tmp("tq-jrnl");
  const std::string dir = tmp.path() + "/state";
  WriteTwoRecords(dir);
  ControllerJournal::Recovered rec;
  ASSERT_OK_AND_ASSIGN(auto j, ControllerJournal::Open(dir, false, &rec));
  ASSERT_TRUE(rec.base.has_value());
  EXPECT_EQ(*rec.base, "B1");
  ASSERT_EQ(rec.records.size(), 2u);
  EXPECT_EQ(rec.records[0].type(), MsgType::kCtlAllocate);
  EXPECT_EQ(rec.records[0].request_id(), 7u);
  EXPECT_EQ(PartitionOf(rec.records[0]), "a");
  EXPECT_EQ(rec.records[1].request_id(), RpcClient::kCallerIdBit | 9);
  EXPECT_EQ(PartitionOf(rec.records[1]), "b");
  ASSERT_EQ(rec.records[1].payloads().size(), 1u);
  EXPECT_EQ(rec.records[1].payloads()[0].view(), "payload bytes");
  EXPECT_EQ(rec.dropped_tail_bytes, 0u);
  // A rotation folds them into a new base and leaves one empty segment.
  ASSERT_OK(j->Rotate("B2"));
  EXPECT_EQ(FileSize(OnlySegment(dir)), 0u);
  j.reset();
  ControllerJournal::Recovered again;
  ASSERT_OK_AND_ASSIGN(j, ControllerJournal::Open(dir, false, &again));
  EXPECT_EQ(*again.base, "B2");
  EXPECT_TRUE(again.records.empty());
  struct stat st {};
  ASSERT_EQ(::stat(dir.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);
}

TEST(ControllerJournal, ARecordCutShortAtTheEndIsDropped) {
  TempDir tmp("tq-jrnl");
  const std::string dir = tmp.path() + "/state";
  WriteTwoRecords(dir);
  const std::string seg = OnlySegment(dir);
  std::filesystem::resize_file(seg, FileSize(seg) - 5);  // a kill in the middle of the second write
  ControllerJournal::Recovered rec;
  ASSERT_OK_AND_ASSIGN(auto j, ControllerJournal::Open(dir, false, &rec));
  ASSERT_EQ(rec.records.size(), 1u);
  EXPECT_EQ(PartitionOf(rec.records[0]), "a");
  EXPECT_GT(rec.dropped_tail_bytes, 0u);
}

TEST(ControllerJournal, DamageIsRefusedNamingTheFile) {
  TempDir tmp("tq-jrnl");
  const std::string dir = tmp.path() + "/state";
  WriteTwoRecords(dir);
  const std::string seg = OnlySegment(dir);
  {
    std::fstream f(seg, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(12);  // inside the first record, which a complete one follows
    f.put('\x5a');
  }
  ControllerJournal::Recovered rec;
  auto j = ControllerJournal::Open(dir, false, &rec);
  ASSERT_FALSE(j.ok());
  EXPECT_NE(j.status().message().find(seg + " at offset 0"), std::string::npos) << j.status().ToString();
  EXPECT_NE(j.status().message().find("checksum"), std::string::npos) << j.status().ToString();

  // A damaged base, and one of an unknown version.
  TempDir tmp2("tq-jrnl");
  const std::string dir2 = tmp2.path() + "/state";
  WriteTwoRecords(dir2);
  {
    std::fstream f(dir2 + "/base", std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(-1, std::ios::end);
    f.put('X');
  }
  auto bad = ControllerJournal::Open(dir2, false, &rec);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("fails its checksum"), std::string::npos) << bad.status().ToString();
  {
    std::fstream f(dir2 + "/base", std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(8);
    f.put('\x07');
  }
  auto newer = ControllerJournal::Open(dir2, false, &rec);
  ASSERT_FALSE(newer.ok());
  EXPECT_NE(newer.status().message().find("format version 7"), std::string::npos) << newer.status().ToString();
}

TEST(ControllerJournal, OneControllerPerDirectory) {
  TempDir tmp("tq-jrnl");
  const std::string dir = tmp.path() + "/state";
  ControllerJournal::Recovered rec;
  ASSERT_OK_AND_ASSIGN(auto first, ControllerJournal::Open(dir, false, &rec));
  auto second = ControllerJournal::Open(dir, false, &rec);
  ASSERT_FALSE(second.ok());
  EXPECT_NE(second.status().message().find("in use by another controller (pid " + std::to_string(::getpid())),
            std::string::npos)
      << second.status().ToString();
  first.reset();  // released with the process (or the journal)
  auto third = ControllerJournal::Open(dir, false, &rec);
  EXPECT_OK(third.status());
  // Not a directory, or a link to one: refused.
  std::filesystem::create_directory_symlink(dir, tmp.path() + "/link");
  auto link = ControllerJournal::Open(tmp.path() + "/link", false, &rec);
  ASSERT_FALSE(link.ok());
  EXPECT_NE(link.status().message().find("symbolic link"), std::string::npos) << link.status().ToString();
}

TEST(ControllerState, ExactRestoreKeepsSamplesBeingCleared) {
  internal::ControllerState s;
  ASSERT_OK_AND_ASSIGN(BatchMeta meta, s.Allocate("p", 4));
  BatchMeta clearing = s.BeginClearSamples("p", {meta.samples()[1].global_index});
  ASSERT_EQ(clearing.size(), 1u);
  std::string snap = s.Snapshot();

  internal::ControllerState exact;
  ASSERT_OK(exact.Restore(snap, false, internal::ControllerState::RestoreMode::kExact));
  EXPECT_EQ(exact.Snapshot(), snap);
  EXPECT_EQ(exact.free_index_count(), s.free_index_count());
  ASSERT_OK(exact.ReleaseSamples(clearing));  // the clear that began finishes
  EXPECT_EQ(exact.free_index_count(), s.free_index_count() + 1);

  internal::ControllerState checkpoint;  // a checkpoint load releases it at once
  ASSERT_OK(checkpoint.Restore(snap));
  EXPECT_EQ(checkpoint.free_index_count(), s.free_index_count() + 1);
}

// A get_meta resent with the same caller id gets its first answer, also
// from a controller started again on the state directory; a new id gets the
// next samples.
// The controller of `o` started again after a Stop. ZMQ closes the old
// listener on its I/O thread: the port may stay taken for a moment.
Result<std::unique_ptr<TransferQueueController>> StartAgain(const ControllerOptions& o) {
  auto restarted = TransferQueueController::Start(o);
  for (int i = 0; i < 500 && !restarted.ok() &&
                  restarted.status().message().find("already in use") != std::string::npos;
       ++i) {
    std::this_thread::sleep_for(10ms);
    restarted = TransferQueueController::Start(o);
  }
  return restarted;
}

TEST(ControllerStateDir, AResentRequestGetsItsFirstAnswerAcrossARestart) {
  TempDir tmp("tq-sdir");
  ControllerOptions o;
  o.address = "tcp://127.0.0.1:" + std::to_string(tqds::testing::FreePort());
  o.embedded_storage_units = 0;
  o.state_dir = tmp.path() + "/state";
  ASSERT_OK_AND_ASSIGN(auto ctl, TransferQueueController::Start(o));
  ASSERT_OK_AND_ASSIGN(auto rpc, RpcClient::Connect(o.address));
  auto allocate = [&](uint64_t id) {
    Message m(MsgType::kCtlAllocate, id);
    m.set_body(tqds::wire::PackBody([](internal::Packer& pk) {
      pk.pack_map(2);
      pk.pack("partition_id");
      pk.pack("p");
      pk.pack("count");
      pk.pack(6);
    }));
    return m;
  };
  const uint64_t alloc_id = RpcClient::kCallerIdBit | 41;
  ASSERT_OK_AND_ASSIGN(Message a1, rpc->CallWithId(allocate(alloc_id), 10s).get());
  ASSERT_OK_AND_ASSIGN(BatchMeta allocated, internal::MetaFromMessage(a1));
  ASSERT_EQ(allocated.size(), 6u);
  // Produce field x of all six.
  std::vector<SampleMeta> samples = allocated.samples();
  for (auto& s : samples) {
    FieldInfo fi;
    fi.produced = true;
    fi.nbytes = 1;
    s.fields = {fi};
  }
  auto produced = rpc->CallSync(internal::MetaMessage(MsgType::kCtlNotifyProduced, BatchMeta({"x"}, samples)), 10s);
  ASSERT_OK(produced.status());
  auto get_meta = [&](uint64_t id) {
    internal::GetMetaRequest req;
    req.partition_id = "p";
    req.task_name = "t";
    req.fields = {"x"};
    req.batch_size = 2;
    Message m(MsgType::kCtlGetMeta, id);
    m.set_body(internal::EncodeGetMeta(req));
    return m;
  };
  auto indexes = [](const Result<Message>& rep) {
    std::vector<int64_t> out;
    EXPECT_OK(rep.status());
    if (!rep.ok()) return out;
    auto meta = internal::MetaFromMessage(*rep);
    EXPECT_OK(meta.status());
    if (meta.ok()) out = meta->global_indexes();
    return out;
  };
  const uint64_t first_id = RpcClient::kCallerIdBit | 1001;
  auto first = indexes(rpc->CallWithId(get_meta(first_id), 10s).get());
  ASSERT_EQ(first.size(), 2u);
  EXPECT_EQ(indexes(rpc->CallWithId(get_meta(first_id), 10s).get()), first) << "a resend, same controller";

  ctl->Stop();
  ctl.reset();
  ASSERT_OK_AND_ASSIGN(ctl, StartAgain(o));
  EXPECT_EQ(indexes(rpc->CallWithId(get_meta(first_id), 10s).get()), first) << "a resend after the restart";
  ASSERT_OK_AND_ASSIGN(Message a2, rpc->CallWithId(allocate(alloc_id), 10s).get());
  ASSERT_OK_AND_ASSIGN(BatchMeta again, internal::MetaFromMessage(a2));
  EXPECT_EQ(again.global_indexes(), allocated.global_indexes()) << "a resent allocate allocates nothing new";
  auto next = indexes(rpc->CallWithId(get_meta(RpcClient::kCallerIdBit | 1002), 10s).get());
  ASSERT_EQ(next.size(), 2u);
  for (int64_t i : next) EXPECT_EQ(std::count(first.begin(), first.end(), i), 0) << i;

  // Four of the six are consumed: each get_meta counted once.
  Message status(MsgType::kCtlConsumptionStatus, 0);
  status.set_body(tqds::wire::PackBody([](internal::Packer& pk) {
    pk.pack_map(2);
    pk.pack("partition_id");
    pk.pack("p");
    pk.pack("task_name");
    pk.pack("t");
  }));
  ASSERT_OK_AND_ASSIGN(Message cs, rpc->CallSync(std::move(status), 10s));
  ASSERT_OK_AND_ASSIGN(auto rd, tqds::wire::MapReader::Of(cs.body(), "ConsumptionStatus"));
  EXPECT_EQ(rd.Get<uint64_t>("consumed").ValueOr(0), 4u);
  EXPECT_EQ(rd.Get<uint64_t>("num_samples").ValueOr(0), 6u);
  ctl->Stop();
}

// A KvPut (keys created and fields recorded in one request) is journaled:
// after a restart the keys name the same samples with the same records.
TEST(ControllerStateDir, AKvPutComesBackAfterARestart) {
  TempDir tmp("tq-sdir");
  ControllerOptions o;
  o.address = "tcp://127.0.0.1:" + std::to_string(tqds::testing::FreePort());
  o.embedded_storage_units = 0;
  o.state_dir = tmp.path() + "/state";
  ASSERT_OK_AND_ASSIGN(auto ctl, TransferQueueController::Start(o));
  TransferQueueClient client("c", o.address);
  std::vector<SampleMeta> samples(3);
  for (size_t i = 0; i < samples.size(); ++i) {
    FieldInfo fi;
    fi.produced = true;
    fi.nbytes = 8;
    fi.pack = 77;
    fi.offset = 8 * i;
    samples[i].fields = {fi};
  }
  Message put(MsgType::kCtlKvPut, 0);
  put.set_body(internal::KvPutRequest::Encode("p", {"a", "b", "c"}, BatchMeta({"x"}, samples)));
  ASSERT_OK_AND_ASSIGN(auto rpc, RpcClient::Connect(o.address));
  ASSERT_OK_AND_ASSIGN(Message rep, rpc->CallSync(std::move(put), 10s));
  ASSERT_OK_AND_ASSIGN(KvPutResult result, internal::DecodeKvPutReply(rep.body()));
  EXPECT_EQ(result.fields, (std::vector<std::string>{"x"}));
  ASSERT_OK_AND_ASSIGN(BatchMeta before, client.kv_retrieve("p", {"c", "a", "b"}));
  ASSERT_EQ(before.size(), 3u);

  ctl->Stop();
  ctl.reset();
  ASSERT_OK_AND_ASSIGN(ctl, StartAgain(o));
  // A new client: the first one's next request can race the old
  // connection's close and fail as sent to it (Unavailable, by design).
  TransferQueueClient again("c2", o.address);
  ASSERT_OK_AND_ASSIGN(BatchMeta after, again.kv_retrieve("p", {"c", "a", "b"}));
  EXPECT_EQ(after.global_indexes(), before.global_indexes());
  EXPECT_EQ(after.field_names(), (std::vector<std::string>{"x"}));
  EXPECT_EQ(after.samples()[0].fields[0].offset, 16u);
  EXPECT_EQ(after.samples()[0].fields[0].pack, 77u);
  ctl->Stop();
}

}  // namespace
}  // namespace tq
