// ViewMapping: the client's mapping of a worker's arena through which
// GetBuffers hands out zero-copy views, optionally writable and private.
//
// Read-only mode (the default of ClientOptions): one MAP_SHARED, PROT_READ
// mapping; a write through a view faults (SIGSEGV); nothing is counted.
//
// Private mode (copy-on-write views): one persistent MAP_PRIVATE,
// PROT_READ|PROT_WRITE mapping of the arena. Reads map the worker's pages
// (once; they stay mapped for later calls, as in read-only mode). A write
// through a view is the kernel's copy-on-write: the written 4 KiB page
// becomes an anonymous page of this mapping, and the worker's memory, other
// processes and other mappings keep the stored bytes. No signal handler is
// involved.
//
// Bookkeeping that keeps later views correct (all under mu_):
//   - the first and last page of each live view count the live views that
//     touch them (an interior page belongs to one object, hence to at most
//     one live view here, and keeps a count of 0);
//   - live views never overlap: an object that already has a live view here
//     (the same key read again while an earlier result lives, or twice in
//     one call) is not viewable; the caller copies it or maps it alone
//     (MapAlone), so a write through one result never shows in another;
//   - a page that no live view touches is never private: when the last view
//     of a page ends (Unview), the pages of the ended views are scanned
//     (PAGEMAP_SCAN: present, not a file page) and the private ones dropped
//     (MADV_DONTNEED), so the next read maps the stored bytes again;
//   - a new view's first or last page may be shared with a live view of a
//     neighbouring object, which may have written it; such a page is
//     scanned, and if private the object is not viewable (the private page
//     may hold bytes of an object since freed and replaced).
// Finding written pages (Tracking): pages are write-protected with a
// userfaultfd in asynchronous mode (2 MiB at a time, before the first view
// over them) so that a write clears a page's protection without any
// message or signal, and PAGEMAP_SCAN reports just the written pages. Where
// userfaultfd is refused (a seccomp sandbox, vm.unprivileged_userfaultfd
// without UFFD_USER_MODE_ONLY support), PAGEMAP_SCAN looks for non-file
// pages instead (a page lookup each); without PAGEMAP_SCAN (Linux < 6.7)
// every page that loses its last view is dropped, and a shared boundary
// page counts as private.
//
// Thread safety: every method may be called from any thread. Lock order:
// mu_ is a leaf; it is held across the scan and the madvise of Unview (a
// concurrent View must not count a page that is being dropped).
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "tqds/status.h"

namespace ds::internal {

// A private mapping of one object's pages at an address of its own (MapAlone).
// Move-only; unmaps on destruction.
class AloneMapping {
 public:
  AloneMapping() = default;
  AloneMapping(void* addr, uint64_t length, const uint8_t* data)
      : addr_(addr), length_(length), data_(data) {}
  AloneMapping(AloneMapping&& o) noexcept { *this = std::move(o); }
  AloneMapping& operator=(AloneMapping&& o) noexcept;
  AloneMapping(const AloneMapping&) = delete;
  AloneMapping& operator=(const AloneMapping&) = delete;
  ~AloneMapping();
  // The object's first byte.
  const uint8_t* data() const { return data_; }

 private:
  void* addr_ = nullptr;
  uint64_t length_ = 0;
  const uint8_t* data_ = nullptr;
};

class ViewMapping {
 public:
  static constexpr uint64_t kPage = 4096;

  // How Unview finds the pages that views wrote, best first.
  enum class Tracking {
    kWriteProtect,  // userfaultfd async write-protect + PAGEMAP_SCAN (Linux 6.7): ~1 ns a page
    kFileScan,      // PAGEMAP_SCAN for non-file pages (Linux 6.7): ~50 ns a present page
    kNone,          // drop every page that loses its last view (re-read costs a fault)
  };

  // Maps `size` bytes of the arena `fd` (which the caller keeps): read-only
  // and shared, or private and writable. The mapping keeps its own
  // duplicate of fd. When the private mapping cannot be made (strict
  // overcommit refusing MAP_PRIVATE of the whole arena), Map succeeds and
  // no range is ever viewable: results are copies or alone mappings.
  // `best` caps the tracking (tests use it); the mapping falls back to the
  // next one where the kernel or a sandbox refuses it.
  static tqds::Result<std::unique_ptr<ViewMapping>> Map(int fd, uint64_t size, bool writable,
                                                        Tracking best = Tracking::kWriteProtect);
  ~ViewMapping();
  ViewMapping(const ViewMapping&) = delete;
  ViewMapping& operator=(const ViewMapping&) = delete;

  const uint8_t* base() const { return base_; }
  uint64_t size() const { return size_; }
  bool writable() const { return writable_; }

  // For each object i ([offsets[i], +sizes[i])): true when it may be viewed
  // at base()+offset (counted until Unview with the same ranges), false when
  // the caller must copy it or map it alone. In read-only mode every range
  // is viewable and nothing is counted.
  std::vector<bool> View(const std::vector<uint64_t>& offsets, const std::vector<uint64_t>& sizes);
  // Ends the views that View answered true for, and drops the pages they
  // made private that no live view touches any more.
  void Unview(const std::vector<uint64_t>& offsets, const std::vector<uint64_t>& sizes);

  // Maps the pages holding [offset, +size) privately and writably at a
  // fresh address (for an object View refused).
  tqds::Result<AloneMapping> MapAlone(uint64_t offset, uint64_t size) const;

  // Pages dropped by Unview so far, and the tracking in use (tests, stats).
  uint64_t DroppedPages() const;
  Tracking tracking() const;

 private:
  ViewMapping(uint8_t* base, uint64_t size, int fd, bool writable, uint32_t* counts, int pagemap);
  uint64_t Pages() const { return (size_ + kPage - 1) / kPage; }
  // Whether page p of the mapping is private (written). Requires mu_.
  bool PrivateLocked(uint64_t p) const;
  // Drops the private pages among [first, last] that no live view touches.
  // Requires mu_.
  void DropLocked(uint64_t first, uint64_t last);
  // Write-protects pages [begin, end) (uffd-wp); on failure falls back to
  // the scan for non-file pages. Requires mu_.
  void ArmLocked(uint64_t begin, uint64_t end);
  // A userfaultfd in asynchronous write-protect mode registered over
  // [base, +size), or -1 where the kernel or a sandbox refuses one.
  static int OpenWriteProtect(void* base, uint64_t size);
  static constexpr uint64_t kArmPages = 512;  // write-protected 2 MiB at a time

  // Constant after construction.
  uint8_t* const base_;   // nullptr: private mode without a mapping (copies only)
  const uint64_t size_;
  const int fd_;          // our duplicate of the arena descriptor
  const bool writable_;
  uint32_t* const counts_;  // private mode: live views per end page (anonymous mapping)
  const int pagemap_;       // /proc/self/pagemap for PAGEMAP_SCAN, -1 without

  mutable std::mutex mu_;
  std::unordered_map<uint64_t, uint32_t> live_;  // guarded by mu_: offset -> live views
  int uffd_ = -1;                                // guarded by mu_ (set once by Map)
  std::vector<uint8_t> armed_;                   // guarded by mu_: write-protected 2 MiB units
  bool scan_works_ = true;                       // guarded by mu_
  uint64_t dropped_pages_ = 0;                   // guarded by mu_
};

}  // namespace ds::internal
