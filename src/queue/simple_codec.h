// The simple backend's compact storage-unit protocol (UnitPutGroups,
// UnitGetGroups, UnitClearGroups; docs/wire_format.md): keys travel as key
// groups (controller id, partition and field names once, then arrays of
// index / generation) and values travel as a few large payload frames that
// each hold many values back to back. Socket-free: encodes and decodes
// bodies and frames only.
//
// Frame layout shared by the put request and the get reply: the values of
// the message's keys, in key order, lie back to back in the payload frames;
// a value never spans two frames; empty values take no bytes. A reader walks
// the frames with the list of value sizes (SplitFrames), so no offsets are
// sent. A writer (FrameBuilder) coalesces values that are already adjacent in
// memory and share an owner into one frame without copying, and copies small
// scattered values into shared pack frames, so that a batch of thousands of
// values costs a handful of frames.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/wire/message.h"
#include "tqds/buffer.h"
#include "tqds/status.h"

namespace tq::internal::simple {

// The keys of samples that share a controller and a partition, for a list of
// fields. Key i of the group, in key order, is field fields[i / n] of sample
// (indexes[i % n], generations[i % n]) where n = indexes.size(): field-major.
struct KeyGroup {
  uint64_t controller_id = 0;
  std::string partition_id;
  std::vector<std::string> fields;
  std::vector<int64_t> indexes;
  std::vector<uint64_t> generations;

  size_t num_keys() const { return fields.size() * indexes.size(); }
  // The storage key (tq::StorageKey format) of key `i`; for messages.
  std::string KeyString(size_t i) const;
};

// Request bodies. Put: {"groups": [[cid, partition, [field...], [index...],
// [generation...]] ...], "sizes": [uint64 per key]}; get and clear carry no
// "sizes". Decoding checks every type and length (hostile input).
std::string EncodeGroups(const std::vector<KeyGroup>& groups, const std::vector<uint64_t>* sizes);
// The most keys one request may name (checked before anything is allocated
// per key).
inline constexpr size_t kMaxKeys = size_t{1} << 24;
struct DecodedGroups {
  std::vector<KeyGroup> groups;
  std::vector<uint64_t> sizes;  // empty unless the request carries them
  size_t num_keys = 0;
};
tqds::Result<DecodedGroups> DecodeGroups(const msgpack::object& body, bool with_sizes, const char* what);

// Get reply body: {"sizes": [uint64 per key]} (the values follow as frames).
std::string EncodeSizes(const std::vector<uint64_t>& sizes);
tqds::Result<std::vector<uint64_t>> DecodeSizes(const msgpack::object& body, const char* what);

// Cuts `frames` into one Buffer per size (views of the frames, no copy).
// Invalid when the sizes and the frames' bytes do not match exactly.
tqds::Result<std::vector<tqds::Buffer>> SplitFrames(const std::vector<tqds::Buffer>& frames,
                                                    const std::vector<uint64_t>& sizes, const char* what);

// Builds payload frames from values added in key order.
class FrameBuilder {
 public:
  // Values below this size that are not adjacent to their neighbours are
  // copied into a pack frame (a frame costs more than copying a few KiB).
  static constexpr size_t kCopyBelow = 16 << 10;
  // A pack frame is closed once it holds this many bytes.
  static constexpr size_t kPackBytes = 1 << 20;

  void Add(const tqds::Buffer& value);
  // The frames; the builder is empty afterwards.
  std::vector<tqds::Buffer> Finish();

 private:
  void CloseRun();
  void FlushPack();

  std::vector<tqds::Buffer> frames_;
  // The zero-copy run being extended: run_first_ is its first value.
  tqds::Buffer run_first_;
  size_t run_size_ = 0;
  std::string pack_;
};

}  // namespace tq::internal::simple
