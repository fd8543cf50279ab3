// ViewMapping: the arena mapping behind GetBuffers' views; private mode uses
// the kernel's copy-on-write of MAP_PRIVATE (see the header).
#include "datasystem/view_mapping.h"

#include <fcntl.h>
#include <sys/ioctl.h>
#include <linux/userfaultfd.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "common/logging.h"

namespace ds::internal {

namespace {

using tqds::Status;

// PAGEMAP_SCAN (Linux 6.7, <linux/fs.h>), declared here for older headers.
struct PageRegion {
  uint64_t start, end, categories;
};
struct PmScanArg {
  uint64_t size, flags, start, end, walk_end, vec, vec_len, max_pages;
  uint64_t category_inverted, category_mask, category_anyof_mask, return_mask;
};
constexpr unsigned long kPagemapScan = _IOWR('f', 16, PmScanArg);
constexpr uint64_t kPageIsWritten = 1u << 1;
constexpr uint64_t kPageIsFile = 1u << 2;
constexpr uint64_t kPageIsPresent = 1u << 3;
constexpr uint64_t kPageIsSwapped = 1u << 4;
// userfaultfd features (Linux 6.7), for older headers.
constexpr uint64_t kUffdFeatureWpUnpopulated = 1ull << 14;
constexpr uint64_t kUffdFeatureWpAsync = 1ull << 15;

// Calls `found(first_page, end_page)` (relative to base) for each run of
// private pages in pages [first, last]: with `written`, pages written since
// they were write-protected (uffd-wp), else pages that are present or
// swapped and not a file page. False when the scan failed (no
// PAGEMAP_SCAN: Linux < 6.7).
template <typename F>
bool ScanPrivate(int pagemap, bool written, const uint8_t* base, uint64_t first, uint64_t last,
                 F&& found) {
  if (pagemap < 0) return false;
  PageRegion vec[64];
  PmScanArg a{};
  a.size = sizeof(a);
  a.start = reinterpret_cast<uint64_t>(base) + first * ViewMapping::kPage;
  a.end = reinterpret_cast<uint64_t>(base) + (last + 1) * ViewMapping::kPage;
  a.vec = reinterpret_cast<uint64_t>(vec);
  a.vec_len = std::size(vec);
  if (written) {  // the uffd-wp bit only: no page lookups, ~1 ns a page
    a.category_mask = kPageIsWritten;
    a.return_mask = kPageIsWritten;
  } else {  // a lookup of each present page (~50 ns)
    a.category_inverted = kPageIsFile;
    a.category_mask = kPageIsFile;
    a.category_anyof_mask = kPageIsPresent | kPageIsSwapped;
    a.return_mask = kPageIsPresent | kPageIsSwapped;
  }
  while (a.start < a.end) {
    const int n = ::ioctl(pagemap, kPagemapScan, &a);
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    for (int i = 0; i < n; ++i) {
      found((vec[i].start - reinterpret_cast<uint64_t>(base)) / ViewMapping::kPage,
            (vec[i].end - reinterpret_cast<uint64_t>(base)) / ViewMapping::kPage);
    }
    if (a.walk_end <= a.start) break;  // no progress: nothing more to walk
    a.start = a.walk_end;
  }
  return true;
}

}  // namespace

// ------------------------------------------------------------ AloneMapping

AloneMapping& AloneMapping::operator=(AloneMapping&& o) noexcept {
  if (this != &o) {
    if (addr_ != nullptr) ::munmap(addr_, length_);
    addr_ = o.addr_;
    length_ = o.length_;
    data_ = o.data_;
    o.addr_ = nullptr;
    o.length_ = 0;
    o.data_ = nullptr;
  }
  return *this;
}

AloneMapping::~AloneMapping() {
  if (addr_ != nullptr) ::munmap(addr_, length_);
}

// ------------------------------------------------------------- ViewMapping

tqds::Result<std::unique_ptr<ViewMapping>> ViewMapping::Map(int fd, uint64_t size, bool writable,
                                                            Tracking best) {
  const int own = ::fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (own < 0) return Status::IOError("dup of the arena descriptor: ", std::strerror(errno));
  if (!writable) {
    void* p = ::mmap(nullptr, size, PROT_READ, MAP_SHARED, own, 0);
    if (p == MAP_FAILED) {
      const int e = errno;
      ::close(own);
      return Status::IOError("cannot map the worker's shared memory for views: ", std::strerror(e));
    }
    return std::unique_ptr<ViewMapping>(
        new ViewMapping(static_cast<uint8_t*>(p), size, own, false, nullptr, -1));
  }
  const uint64_t pages = (size + kPage - 1) / kPage;
  void* counts = ::mmap(nullptr, pages * sizeof(uint32_t), PROT_READ | PROT_WRITE,
                        MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (counts == MAP_FAILED) {
    const int e = errno;
    ::close(own);
    return Status::IOError("view bookkeeping for ", pages, " pages: ", std::strerror(e));
  }
  void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_NORESERVE, own, 0);
  if (p == MAP_FAILED) {
    spdlog::warn("cannot map the worker's shared memory privately ({}); GetBuffers results "
                 "will be copies",
                 std::strerror(errno));
    p = nullptr;
  }
  const int pagemap = ::open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
  auto m = std::unique_ptr<ViewMapping>(new ViewMapping(static_cast<uint8_t*>(p), size, own, true,
                                                        static_cast<uint32_t*>(counts), pagemap));
  if (p != nullptr && pagemap >= 0 && best == Tracking::kWriteProtect) {
    m->uffd_ = OpenWriteProtect(p, size);
  }
  if (best == Tracking::kNone) m->scan_works_ = false;
  m->armed_.assign(m->uffd_ >= 0 ? (m->Pages() + kArmPages - 1) / kArmPages : 0, 0);
  return m;
}

int ViewMapping::OpenWriteProtect(void* base, uint64_t size) {
  // Asynchronous write protection: a write into a protected page is resolved
  // by the kernel at once (no message, no signal) and clears the page's
  // protection, which PAGEMAP_SCAN reports as PAGE_IS_WRITTEN.
  const int uffd = static_cast<int>(
      ::syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY));
  if (uffd < 0) return -1;
  uffdio_api api{};
  api.api = UFFD_API;
  api.features = kUffdFeatureWpAsync | kUffdFeatureWpUnpopulated | UFFD_FEATURE_WP_HUGETLBFS_SHMEM;
  uffdio_register reg{};
  reg.range.start = reinterpret_cast<uint64_t>(base);
  reg.range.len = size;
  reg.mode = UFFDIO_REGISTER_MODE_WP;
  if (::ioctl(uffd, UFFDIO_API, &api) != 0 || (api.features & kUffdFeatureWpAsync) == 0 ||
      ::ioctl(uffd, UFFDIO_REGISTER, &reg) != 0) {
    ::close(uffd);
    return -1;
  }
  return uffd;
}

ViewMapping::ViewMapping(uint8_t* base, uint64_t size, int fd, bool writable, uint32_t* counts,
                         int pagemap)
    : base_(base), size_(size), fd_(fd), writable_(writable), counts_(counts), pagemap_(pagemap) {}

ViewMapping::~ViewMapping() {
  if (base_ != nullptr) ::munmap(base_, size_);
  if (counts_ != nullptr) ::munmap(counts_, Pages() * sizeof(uint32_t));
  if (uffd_ >= 0) ::close(uffd_);
  if (pagemap_ >= 0) ::close(pagemap_);
  ::close(fd_);
}

bool ViewMapping::PrivateLocked(uint64_t p) const {
  if (!scan_works_) return true;
  bool found = false;
  const bool ok =
      ScanPrivate(pagemap_, uffd_ >= 0, base_, p, p, [&](uint64_t, uint64_t) { found = true; });
  return !ok || found;
}

void ViewMapping::DropLocked(uint64_t first, uint64_t last) {
  auto drop = [&](uint64_t begin, uint64_t end) {  // pages [begin, end)
    uint64_t p = begin;
    while (p < end) {
      while (p < end && counts_[p] != 0) ++p;
      const uint64_t run = p;
      while (p < end && counts_[p] == 0) ++p;
      if (p > run) {
        ::madvise(base_ + run * kPage, (p - run) * kPage, MADV_DONTNEED);
        dropped_pages_ += p - run;
        if (uffd_ >= 0) ArmLocked(run, p);  // the dropped pages' protection
      }
    }
  };
  if (scan_works_ && ScanPrivate(pagemap_, uffd_ >= 0, base_, first, last, drop)) return;
  // No PAGEMAP_SCAN: drop every page that lost its last view.
  scan_works_ = false;
  drop(first, last + 1);
}

void ViewMapping::ArmLocked(uint64_t begin, uint64_t end) {
  uffdio_writeprotect wp{};
  wp.range.start = reinterpret_cast<uint64_t>(base_) + begin * kPage;
  wp.range.len = std::min(end * kPage, size_) - begin * kPage;
  wp.mode = UFFDIO_WRITEPROTECT_MODE_WP;
  if (::ioctl(uffd_, UFFDIO_WRITEPROTECT, &wp) != 0) {
    // Written pages are still found, by the slower scan for non-file pages.
    spdlog::warn("write-protecting views failed ({}); finding written pages the slow way",
                 std::strerror(errno));
    ::close(uffd_);
    uffd_ = -1;
  }
}

std::vector<bool> ViewMapping::View(const std::vector<uint64_t>& offsets,
                                    const std::vector<uint64_t>& sizes) {
  std::vector<bool> out(offsets.size(), writable_ ? base_ != nullptr : true);
  if (!writable_ || base_ == nullptr) return out;
  std::lock_guard<std::mutex> lock(mu_);
  // The last page of the previous view of this call, known then not to be
  // private. The objects of a call are pinned and never change, and a page
  // that goes private after that check copies their stored bytes, so the
  // next object starting on that page (objects of a batch lie next to each
  // other) needs no second scan of it.
  uint64_t clean = UINT64_MAX;
  for (size_t i = 0; i < offsets.size(); ++i) {
    const uint64_t off = offsets[i], n = sizes[i];
    if (n == 0) continue;  // no bytes: nothing to share
    auto [it, fresh] = live_.try_emplace(off, 0);
    if (!fresh && it->second > 0) {
      out[i] = false;  // a live view shows this object already
      continue;
    }
    const uint64_t first = off / kPage, last = (off + n - 1) / kPage;
    // Interior pages have no live view (objects are disjoint), hence are
    // not private; the end pages may be shared with a neighbour's view.
    if ((counts_[first] > 0 && first != clean && PrivateLocked(first)) ||
        (last != first && counts_[last] > 0 && PrivateLocked(last))) {
      live_.erase(it);
      out[i] = false;
      continue;
    }
    clean = last;  // a count of 0 (no live view: not private), or scanned just now
    it->second = 1;
    for (uint64_t c = first / kArmPages; uffd_ >= 0 && c <= last / kArmPages; ++c) {
      if (armed_[c]) continue;
      ArmLocked(c * kArmPages, (c + 1) * kArmPages);  // before any view of it exists
      armed_[c] = 1;
    }
    // Only the end pages can be shared with another live view; interior
    // pages keep a count of 0 (no other view can touch them).
    ++counts_[first];
    if (last != first) ++counts_[last];
  }
  return out;
}

void ViewMapping::Unview(const std::vector<uint64_t>& offsets, const std::vector<uint64_t>& sizes) {
  if (!writable_ || base_ == nullptr || offsets.empty()) return;
  // The ended ranges in address order, merged into runs of touching pages:
  // one scan per run (a batch of adjacent objects is one scan).
  std::vector<std::pair<uint64_t, uint64_t>> pages;  // [first, last] per view
  pages.reserve(offsets.size());
  for (size_t i = 0; i < offsets.size(); ++i) {
    if (sizes[i] == 0) continue;
    pages.emplace_back(offsets[i] / kPage, (offsets[i] + sizes[i] - 1) / kPage);
  }
  std::sort(pages.begin(), pages.end());
  std::lock_guard<std::mutex> lock(mu_);
  for (size_t i = 0; i < offsets.size(); ++i) {
    if (sizes[i] == 0) continue;
    auto it = live_.find(offsets[i]);
    if (it != live_.end() && --it->second == 0) live_.erase(it);
  }
  for (const auto& [first, last] : pages) {
    --counts_[first];
    if (last != first) --counts_[last];
  }
  // Runs of ended views whose pages touch: every page of a run belongs to an
  // ended view, so a page with a count of 0 has no live view (an interior
  // page never has one). A gap between views is never scanned: it may hold
  // interior pages of live views, which carry no count.
  for (size_t i = 0; i < pages.size();) {
    const uint64_t first = pages[i].first;
    uint64_t last = pages[i].second;
    for (++i; i < pages.size() && pages[i].first <= last + 1; ++i) {
      last = std::max(last, pages[i].second);
    }
    DropLocked(first, last);
  }
}

tqds::Result<AloneMapping> ViewMapping::MapAlone(uint64_t offset, uint64_t size) const {
  const uint64_t start = offset / kPage * kPage;
  const uint64_t length = (offset + size - start + kPage - 1) / kPage * kPage;
  void* p = ::mmap(nullptr, length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_NORESERVE, fd_,
                   static_cast<off_t>(start));
  if (p == MAP_FAILED) return Status::IOError("mapping an object alone: ", std::strerror(errno));
  return AloneMapping(p, length, static_cast<const uint8_t*>(p) + (offset - start));
}

uint64_t ViewMapping::DroppedPages() const {
  std::lock_guard<std::mutex> lock(mu_);
  return dropped_pages_;
}

ViewMapping::Tracking ViewMapping::tracking() const {
  std::lock_guard<std::mutex> lock(mu_);
  if (uffd_ >= 0) return Tracking::kWriteProtect;
  return scan_works_ && pagemap_ >= 0 ? Tracking::kFileScan : Tracking::kNone;
}

}  // namespace ds::internal
