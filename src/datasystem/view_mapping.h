// ViewMapping: the client's read-only mapping of a worker's arena, through
// which GetBuffers hands out zero-copy views, optionally made copy-on-write.
//
// Without copy-on-write, a write through a view faults (SIGSEGV): the views
// are PROT_READ. With it, a process-wide SIGSEGV handler turns a write fault
// inside the mapping into a private copy of the surrounding chunk (kChunk
// bytes, remapped MAP_PRIVATE and copied at once), and the write goes
// ahead. The worker's memory and every other
// process keep the stored bytes.
//
// Bookkeeping that keeps later views correct:
//   - every chunk counts the live views that touch it (View/Unview);
//   - a view is handed out only over chunks that are still shared; over a
//     chunk made private while other views touch it, View answers false and
//     the caller copies from the shared mapping instead (the private pages
//     may hold writes or bytes older than the object now stored there);
//   - when the last view of a private chunk goes, the chunk is mapped shared
//     again, so views are zero-copy again.
//   - live views never overlap: a range that a live view of this process
//     already shows (the same object read again while the first result
//     lives) is copied, so a write through one result never shows in
//     another; a view handed out after the last one ended sees the stored
//     bytes.
//
// Faults outside every copy-on-write mapping, and reads, go to the handler
// that was installed before ours (by default the process dies as it would
// have). A handler installed over ours later (Python's faulthandler.enable())
// is put behind ours again at the next View, and gets every fault that is
// not ours. Until then it sees writes into views first; Python's
// faulthandler then prints a traceback, puts ours back and re-raises from
// inside its handler, and ours lets the write fault again and makes its
// copy (a SIGSEGV raised from ordinary code is passed on as sent). After a
// fault has been passed on, a re-raised SIGSEGV, or the same fault coming
// back, takes the default action (no loop between handlers that call each
// other or return from a fault).
//
// Where the fault context does not tell writes from other accesses
// (anything but x86-64), every access fault inside the mapping counts as a
// write.
//
// Thread safety: View/Unview may be called from any thread; the fault
// handler runs on the writing thread and takes no locks. Lock order: mu_ is
// a leaf.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <vector>

#include "tqds/status.h"

namespace ds::internal {

class ViewMapping {
 public:
  // The unit that a write makes private.
  static constexpr uint64_t kChunk = 2ull << 20;

  // Maps `size` bytes of the arena `fd` read-only. With copy_on_write the
  // mapping keeps its own duplicate of fd and is registered with the fault
  // handler (installed on first use).
  static tqds::Result<std::unique_ptr<ViewMapping>> Map(int fd, uint64_t size, bool copy_on_write);
  ~ViewMapping();
  ViewMapping(const ViewMapping&) = delete;
  ViewMapping& operator=(const ViewMapping&) = delete;

  const uint8_t* base() const { return base_; }
  uint64_t size() const { return size_; }
  bool copy_on_write() const { return slot_ >= 0; }

  // For each range i: true when [offsets[i], +sizes[i]) may be viewed at
  // base()+offset (counted until Unview with the same ranges), false when
  // the caller must copy the bytes from a shared mapping instead. Without
  // copy-on-write every range is viewable and nothing is counted.
  std::vector<bool> View(const std::vector<uint64_t>& offsets, const std::vector<uint64_t>& sizes);
  // Ends the views that View answered true for.
  void Unview(const std::vector<uint64_t>& offsets, const std::vector<uint64_t>& sizes);

  // How many chunks are private now (tests and stats).
  size_t PrivateChunks() const;

 private:
  ViewMapping(uint8_t* base, uint64_t size, int fd, int slot);
  uint64_t FirstChunk(uint64_t off) const { return off / kChunk; }
  uint64_t LastChunk(uint64_t off, uint64_t n) const {
    return (n == 0 ? off : off + n - 1) / kChunk;
  }
  // Maps chunk c shared and read-only again. Requires mu_ and no live view.
  void RestoreLocked(uint64_t c);
  // Whether [off, off + n) overlaps a live view. Requires mu_.
  bool OverlapsLiveLocked(uint64_t off, uint64_t n) const;

  // Constant after construction.
  uint8_t* const base_;
  const uint64_t size_;
  const int fd_;    // our duplicate of the arena descriptor (-1 without copy-on-write)
  const int slot_;  // fault-handler registration (-1 without copy-on-write)
  // Per chunk, written by the fault handler too: see kShared etc. in the .cc.
  std::unique_ptr<std::atomic<uint8_t>[]> state_;

  mutable std::mutex mu_;
  std::vector<uint32_t> views_;  // guarded by mu_: live views touching each chunk
  std::map<uint64_t, uint64_t> live_;  // guarded by mu_: live views, offset -> end (disjoint)
};

}  // namespace ds::internal
