// Snapshot / Restore through the controller and the client, over sockets:
// a restore brings partitions back, is refused for malformed bytes and while
// a fetch is parked.
#include <gtest/gtest.h>

#include <chrono>
#include <future>
#include <string>
#include <vector>

#include "common/test_util.h"
#include "tq/client.h"
#include "tq/controller.h"

namespace tq {
namespace {

using namespace std::chrono_literals;

Batch Ints(const std::vector<int64_t>& v) {
  Batch b(v.size());
  Column c;
  for (int64_t x : v) c.push_back(Value::Tensor(DType::kInt64, {}, Buffer::Copy(&x, 8)).MoveValue());
  EXPECT_OK(b.AddField("x", c));
  return b;
}

class ControllerSnapshotTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ControllerOptions o;
    o.embedded_storage_units = 1;
    o.storage_unit_capacity_bytes = uint64_t{1} << 26;
    ASSERT_OK_AND_ASSIGN(controller_, TransferQueueController::Start(o));
    client_ = std::make_unique<TransferQueueClient>("snap", controller_->address());
    ASSERT_OK(client_->initialize_storage_manager("SimpleStorageManager"));
  }
  std::unique_ptr<TransferQueueController> controller_;
  std::unique_ptr<TransferQueueClient> client_;
};

TEST_F(ControllerSnapshotTest, RestoreBringsBackTheSamples) {
  ASSERT_OK_AND_ASSIGN(BatchMeta put, client_->put(Ints({1, 2, 3}), "p"));
  ASSERT_OK_AND_ASSIGN(std::string snap, client_->snapshot_controller());
  ASSERT_OK(client_->clear_partition("p"));
  ASSERT_OK(client_->put(Ints({9}), "q"));
  ASSERT_OK(client_->restore_controller(snap));
  ASSERT_OK_AND_ASSIGN(auto parts, client_->list_partitions());
  EXPECT_EQ(parts, std::vector<std::string>{"p"});
  ASSERT_OK_AND_ASSIGN(BatchMeta got, client_->get_meta({"x"}, 3, "p", "t", {}, FetchMode::kFetch, 1s));
  EXPECT_EQ(got.global_indexes(), put.global_indexes());
  EXPECT_EQ(got.samples()[0].generation, put.samples()[0].generation);
  // Storage is not part of it: the caller writes the data back.
  ASSERT_OK(client_->put(Ints({1, 2, 3}), got));
  ASSERT_OK(client_->get_data(got));
}

TEST_F(ControllerSnapshotTest, MalformedSnapshotIsRefusedAndChangesNothing) {
  ASSERT_OK(client_->put(Ints({1}), "p"));
  EXPECT_STATUS(client_->restore_controller(""), kInvalid, "empty");
  EXPECT_STATUS(client_->restore_controller("\x81\xa1x\x01"), kInvalid, "format");
  ASSERT_OK_AND_ASSIGN(auto parts, client_->list_partitions());
  EXPECT_EQ(parts, std::vector<std::string>{"p"});
}

TEST_F(ControllerSnapshotTest, RestoreIsRefusedWhileAFetchWaits) {
  ASSERT_OK_AND_ASSIGN(std::string snap, client_->snapshot_controller());
  auto waiting = client_->async_get_meta({"x"}, 1, "w", "t", {}, FetchMode::kFetch, 30s);
  // The fetch is parked once the controller has seen it: retry until refused.
  Status st;
  auto deadline = std::chrono::steady_clock::now() + 20s;
  do {
    st = client_->restore_controller(snap, /*dry_run=*/true);
  } while (st.ok() && std::chrono::steady_clock::now() < deadline);
  EXPECT_STATUS(st, kInvalid, "waiting for data");
  ASSERT_OK(client_->put(Ints({5}), "w"));
  ASSERT_OK(waiting.get());
  ASSERT_OK(client_->restore_controller(snap));
}

}  // namespace
}  // namespace tq
