// The simple backend's compact storage-unit protocol (UnitPutGroups,
// UnitGetGroups, UnitClearGroups; docs/wire_format.md): keys travel as key
// groups (controller id, partition and field names once, then arrays of
// index / generation) and values travel as a few large payload frames that
// each hold many values back to back. Socket-free: encodes and decodes
// bodies and frames only.
//
// Frame layout shared by the put request and the get reply: the values of
// the message's keys, in key order, lie back to back in the payload frames
// (in a frame with alignment A each value starts at a multiple of A); a
// value never spans two frames; empty values take no bytes. A reader walks
// the frames with the list of value sizes (SplitFrames), so no offsets are
// sent. A writer (FrameBuilder) coalesces values that are already adjacent in
// memory and share an owner into one frame without copying, and copies small
// scattered values into shared pack frames, so that a batch of thousands of
// values costs a handful of frames.
#pragma once

#include <cstdint>
#include <cstddef>
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
// [generation...]] ...], "sizes": [uint64 per key], "aligns": [uint64 per
// frame]}; get and clear carry only "groups". Decoding checks every type
// and length (hostile input).
std::string EncodeGroups(const std::vector<KeyGroup>& groups, const std::vector<uint64_t>* sizes,
                         const std::vector<uint64_t>* aligns);
// The most keys one request may name (checked before anything is allocated
// per key).
inline constexpr size_t kMaxKeys = size_t{1} << 24;
// The largest frame alignment a reader accepts.
inline constexpr uint64_t kMaxAlign = 4096;
struct DecodedGroups {
  std::vector<KeyGroup> groups;
  std::vector<uint64_t> sizes;   // empty unless the request carries them
  std::vector<uint64_t> aligns;  // empty: every frame has alignment 1
  size_t num_keys = 0;
};
tqds::Result<DecodedGroups> DecodeGroups(const msgpack::object& body, bool with_sizes, const char* what);

// Get reply body: {"sizes": [uint64 per key], "aligns": [uint64 per frame]}
// (the values follow as frames).
struct ValueLayout {
  std::vector<uint64_t> sizes;
  std::vector<uint64_t> aligns;
};
std::string EncodeSizes(const std::vector<uint64_t>& sizes, const std::vector<uint64_t>& aligns);
tqds::Result<ValueLayout> DecodeSizes(const msgpack::object& body, const char* what);

// Cuts `frames` into one Buffer per size (views of the frames, no copy).
// In frame f each value starts at the next multiple of aligns[f] (empty
// `aligns`: 1 everywhere). Invalid when sizes, aligns and the frames' bytes
// do not match exactly (no bytes may be left over).
tqds::Result<std::vector<tqds::Buffer>> SplitFrames(const std::vector<tqds::Buffer>& frames,
                                                    const std::vector<uint64_t>& aligns,
                                                    const std::vector<uint64_t>& sizes, const char* what);

// Builds payload frames from values added in key order.
class FrameBuilder {
 public:
  // Values below this size that are not adjacent to their neighbours are
  // copied into a pack frame (a frame costs more than copying a few KiB).
  static constexpr size_t kCopyBelow = 16 << 10;
  // A pack frame is closed once it holds this many bytes.
  static constexpr size_t kPackBytes = 1 << 20;
  // Values copied into a pack start at multiples of this (readers may view
  // an int64 or float64 in place).
  static constexpr size_t kPackAlign = 8;

  // A zero-copy frame over a socket: larger frames measured slower across
  // processes (the receiver allocates each frame at once); inproc passes
  // frames by reference and needs no limit.
  static constexpr size_t kSocketFrameBytes = 256 << 10;

  // Zero-copy runs are cut at `max_frame` bytes (a single larger value
  // still travels whole).
  explicit FrameBuilder(size_t max_frame = SIZE_MAX) : max_frame_(max_frame) {}
  // Frame limit for a connection to `endpoint`.
  static size_t MaxFrameFor(const std::string& endpoint) {
    return endpoint.rfind("inproc://", 0) == 0 ? SIZE_MAX : kSocketFrameBytes;
  }

  void Add(const tqds::Buffer& value);
  // The frames and their alignments (for SplitFrames); the builder is empty
  // afterwards.
  std::vector<tqds::Buffer> Finish(std::vector<uint64_t>* aligns);

 private:
  void CloseRun();
  void FlushPack();

  const size_t max_frame_;
  std::vector<tqds::Buffer> frames_;
  // The zero-copy run being extended: run_first_ is its first value.
  tqds::Buffer run_first_;
  size_t run_size_ = 0;
  std::vector<size_t> run_sizes_;  // the run's values, in order
  std::string pack_;
  std::vector<uint64_t> aligns_;  // one per frame in frames_
};

}  // namespace tq::internal::simple
