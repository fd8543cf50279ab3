// ControllerJournal: the files that make a controller's state durable under
// a directory (ControllerOptions::state_dir), so that a controller killed at
// any point (kill -9 included) and started again on the same directory
// resumes where it was. It knows files, records and checksums; what a base
// or a record means is the controller's (controller.cc).
//
// The directory holds:
//   LOCK     flock'ed while a controller uses the directory (one at a time)
//   base     the whole state when segment N began: written to base.tmp,
//            fsynced and renamed, so a crash leaves the old or the new one
//   wal.N    the requests applied since that base, one record each, in order
// base:   "TQDSBASE" | u32 version | u32 crc32(document) | u64 segment N |
//         u64 length | document (bytes)
// record: u32 length | u32 crc32(bytes) | bytes: msgpack [bin request
//         header frame, [bin payload frame, ...]]
// (integers little-endian). A record cut short at the end of the newest
// segment (a write that a kill interrupted, whose reply was never sent) is
// dropped; a bad record anywhere else, a bad base or an unknown version
// refuses the start with an error naming the file and the offset.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/wire/message.h"
#include "tqds/status.h"

namespace tq::internal {

class ControllerJournal {
 public:
  struct Recovered {
    std::optional<std::string> base;           // the base document; nullopt: none yet
    std::vector<tqds::wire::Message> records;  // the requests after it, in order
    size_t dropped_tail_bytes = 0;             // of a record cut short at the end
  };

  // Opens (creating, mode 0700) `dir`, locks it and reads what it holds.
  // `sync`: fdatasync each record (survives a host crash, not only a killed
  // process).
  static tqds::Result<std::unique_ptr<ControllerJournal>> Open(const std::string& dir, bool sync,
                                                               Recovered* recovered);
  ~ControllerJournal();
  ControllerJournal(const ControllerJournal&) = delete;
  ControllerJournal& operator=(const ControllerJournal&) = delete;

  // Appends one request (its raw header frame and payloads). After an error
  // the segment may end in part of a record, so every Append fails until a
  // Rotate succeeds.
  tqds::Status Append(const tqds::wire::Message& request);
  // Makes `base` the state, durably, and starts a new, empty segment; the
  // old segment is removed. On error the previous base and segment stay.
  tqds::Status Rotate(std::string_view base);
  // The records of one segment's bytes (`path` names it in errors): the
  // decoder Open uses, also run by the fuzz target.
  static tqds::Status ParseSegment(std::string_view bytes, const std::string& path, Recovered* out);
  // Bytes in the current segment.
  uint64_t segment_bytes() const { return segment_bytes_; }
  const std::string& dir() const { return dir_; }

 private:
  ControllerJournal(std::string dir, bool sync) : dir_(std::move(dir)), sync_(sync) {}
  std::string SegmentPath(uint64_t n) const;
  tqds::Status Recover(Recovered* out);
  tqds::Status ReadSegment(uint64_t n, Recovered* out);

  const std::string dir_;
  const bool sync_;
  int lock_fd_ = -1;
  int segment_fd_ = -1;
  uint64_t segment_ = 0;
  uint64_t segment_bytes_ = 0;
  tqds::Status last_error_;  // why the segment was closed, if it was
};

}  // namespace tq::internal
