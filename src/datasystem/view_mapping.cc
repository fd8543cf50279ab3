// ViewMapping: read-only arena mapping with copy-on-write views (see the header).
#include "datasystem/view_mapping.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <iterator>
#include <cstring>

#include "common/logging.h"

namespace ds::internal {

namespace {

using tqds::Status;

// Per-chunk state. kBusy: a thread is remapping the chunk right now.
enum : uint8_t { kShared = 0, kBusy = 1, kPrivate = 2 };

// What the fault handler knows about one copy-on-write mapping. A slot is
// free while base is 0; Register publishes base last, so a handler that sees
// a base also sees the other fields.
struct Region {
  std::atomic<uintptr_t> base{0};
  uint64_t size = 0;
  int fd = -1;
  std::atomic<uint8_t>* state = nullptr;
};
constexpr int kSlots = 256;
Region g_regions[kSlots];
std::mutex g_registry_mu;  // Register/Unregister and (re)installing the handler

// The handler that was installed before ours, which gets every fault that
// is not ours. Two slots, so that a reinstallation never rewrites the one a
// running handler may be reading: written under g_registry_mu, published by
// g_previous_slot.
struct sigaction g_previous[2]{};
std::atomic<int> g_previous_slot{0};
// Set once a fault has been passed on: the process is dying. A handler that
// re-raises the signal (Python's faulthandler restores the handler it
// replaced, ours, and raises again) then meets the default action instead
// of going round the chain forever.
std::atomic<bool> g_passed_on{false};
std::atomic<uintptr_t> g_passed_addr{0};  // the address of the last fault passed on

uint64_t ChunkLength(uint64_t size, uint64_t c) {
  return std::min(ViewMapping::kChunk, size - c * ViewMapping::kChunk);
}

// Whether the fault was a data write (not a read or an instruction fetch).
bool IsWrite(const siginfo_t* info, const void* uctx) {
  if (info->si_code != SEGV_ACCERR) return false;
#if defined(__x86_64__)
  const auto* uc = static_cast<const ucontext_t*>(uctx);
  const greg_t err = uc->uc_mcontext.gregs[REG_ERR];
  return (err & 0x2) != 0 && (err & 0x10) == 0;  // W, and not an instruction fetch
#else
  (void)uctx;
  return true;
#endif
}

// Makes the chunk around addr private, if addr lies in a registered
// mapping. Async-signal-safe: atomics and mmap only.
bool Privatize(uintptr_t addr) {
  for (Region& r : g_regions) {
    const uintptr_t b = r.base.load(std::memory_order_acquire);
    if (b == 0 || addr < b || addr - b >= r.size) continue;
    const uint64_t c = (addr - b) / ViewMapping::kChunk;
    std::atomic<uint8_t>& st = r.state[c];
    uint8_t expected = kShared;
    if (st.compare_exchange_strong(expected, kBusy, std::memory_order_acq_rel)) {
      void* p = ::mmap(reinterpret_cast<void*>(b + c * ViewMapping::kChunk), ChunkLength(r.size, c),
                       PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_FIXED, r.fd,
                       static_cast<off_t>(c * ViewMapping::kChunk));
      // Copy every page of the chunk now, in one call: an in-place op
      // writes them all, and one fault per 4 KiB costs more (115 vs 140 ms
      // for 288 MiB here). Fails harmlessly before Linux 5.14.
      if (p != MAP_FAILED) ::madvise(p, ChunkLength(r.size, c), MADV_POPULATE_WRITE);
      st.store(p == MAP_FAILED ? kShared : kPrivate, std::memory_order_release);
      return p != MAP_FAILED;
    }
    // Another thread is remapping (or has remapped) this chunk: wait, then
    // let the write run again against the new mapping.
    while (st.load(std::memory_order_acquire) == kBusy) {
    }
    return true;
  }
  return false;
}

void DefaultAction(int sig, const siginfo_t* info) {
  // A hardware fault recurs when the instruction runs again; a signal that
  // was sent is sent again.
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  sigemptyset(&dfl.sa_mask);
  ::sigaction(sig, &dfl, nullptr);
  if (info->si_code <= 0) ::raise(sig);
}

void ChainToPrevious(int sig, siginfo_t* info, void* uctx) {
  const struct sigaction& previous = g_previous[g_previous_slot.load(std::memory_order_acquire)];
  if ((previous.sa_flags & SA_SIGINFO) != 0 && previous.sa_sigaction != nullptr) {
    previous.sa_sigaction(sig, info, uctx);
  } else if (previous.sa_handler != SIG_DFL && previous.sa_handler != SIG_IGN) {
    previous.sa_handler(sig);
  } else {
    DefaultAction(sig, info);
  }
}

// Whether the interrupted code ran on this thread's alternate signal stack:
// the signal was raised from inside another signal handler (one installed
// with SA_ONSTACK, as Python's faulthandler is).
bool RaisedInsideAHandler(const void* uctx) {
  stack_t ss{};
  if (::sigaltstack(nullptr, &ss) != 0 || (ss.ss_flags & SS_DISABLE) != 0) return false;
  const auto* uc = static_cast<const ucontext_t*>(uctx);
#if defined(__x86_64__)
  const auto sp = static_cast<uintptr_t>(uc->uc_mcontext.gregs[REG_RSP]);
#elif defined(__aarch64__)
  const auto sp = static_cast<uintptr_t>(uc->uc_mcontext.sp);
#else
  (void)uc;
  return false;
#endif
  const auto lo = reinterpret_cast<uintptr_t>(ss.ss_sp);
  return sp >= lo && sp - lo < ss.ss_size;
}

// The signal-return trampoline (glibc's __restore_rt) that the kernel puts
// at the bottom of every signal frame of a handler installed through libc;
// 0 where unknown. Read back from the kernel when ours is installed.
std::atomic<uintptr_t> g_restorer{0};

void RecordRestorer() {
#if defined(__x86_64__)
  struct KernelSigaction {  // the kernel's struct sigaction on x86_64
    void* handler;
    unsigned long flags;
    void* restorer;
    unsigned long mask;
  } k{};
  constexpr unsigned long kSaRestorer = 0x04000000;
  if (::syscall(SYS_rt_sigaction, SIGSEGV, nullptr, &k, sizeof(k.mask)) == 0 && (k.flags & kSaRestorer) != 0) {
    g_restorer.store(reinterpret_cast<uintptr_t>(k.restorer), std::memory_order_release);
  }
#endif
}

// Whether the page at addr is mapped (mincore fails with ENOMEM on an
// unmapped page). Async-signal-safe.
bool PageMapped(uintptr_t page_start, uintptr_t page) {
  unsigned char resident = 0;
  return ::mincore(reinterpret_cast<void*>(page_start), page, &resident) == 0;
}

bool InRegisteredMapping(uintptr_t addr) {
  for (const Region& r : g_regions) {
    const uintptr_t b = r.base.load(std::memory_order_acquire);
    if (b != 0 && addr >= b && addr - b < r.size) return true;
  }
  return false;
}

// Whether the SIGSEGV this thread raised was raised from inside another
// handler that got a write fault into one of our mappings first: Python's
// faulthandler, enabled after a view was handed out, gets the fault, prints
// its report, puts ours back and raises. On its alternate stack (the thread
// that enabled it) that shows in the stack pointer; on any other thread (a
// torch intra-op thread writing into a view) the kernel's signal frame of
// that fault lies just above, on the same stack: its return address is the
// restorer, followed by the fault's ucontext, which must show a write fault
// into a registered mapping. The scan reads only mapped memory.
bool RaisedInsideAHandlerAfterOurFault(const void* uctx) {
  if (RaisedInsideAHandler(uctx)) return true;
#if defined(__x86_64__)
  const uintptr_t restorer = g_restorer.load(std::memory_order_acquire);
  if (restorer == 0) return false;
  const auto* uc = static_cast<const ucontext_t*>(uctx);
  const auto sp = static_cast<uintptr_t>(uc->uc_mcontext.gregs[REG_RSP]) & ~uintptr_t{7};
  // The kernel's rt_sigframe: the return address, then its ucontext
  // (glibc's up to uc_sigmask, then an 8-byte kernel sigset).
  constexpr size_t kFrame = sizeof(uintptr_t) + offsetof(ucontext_t, uc_sigmask) + 8;
  constexpr size_t kScan = 32 << 10;  // faulthandler's frames between the two are far smaller
  const auto page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
  uintptr_t mapped_to = sp & ~(page - 1);  // [sp, mapped_to) is known to be mapped
  for (uintptr_t p = sp; p < sp + kScan; p += sizeof(uintptr_t)) {
    while (p + kFrame > mapped_to) {
      if (!PageMapped(mapped_to, page)) return false;
      mapped_to += page;
    }
    if (*reinterpret_cast<const uintptr_t*>(p) != restorer) continue;
    // The siginfo is filled in only for SA_SIGINFO handlers (faulthandler's
    // is not), so the fault is read from the ucontext: a page fault (trap
    // 14), a data write, at an address in one of our mappings.
    const auto& g = reinterpret_cast<const ucontext_t*>(p + sizeof(uintptr_t))->uc_mcontext.gregs;
    constexpr greg_t kPageFault = 14;
    if (g[REG_TRAPNO] == kPageFault && (g[REG_ERR] & 0x2) != 0 && (g[REG_ERR] & 0x10) == 0 &&
        InRegisteredMapping(static_cast<uintptr_t>(g[REG_CR2]))) {
      return true;
    }
  }
#endif
  return false;
}

void OnSegv(int sig, siginfo_t* info, void* uctx) {
  const int saved_errno = errno;
  if (IsWrite(info, uctx) && Privatize(reinterpret_cast<uintptr_t>(info->si_addr))) {
    errno = saved_errno;
    return;  // the write runs again, on the private copy
  }
  if (info->si_code <= 0) {
    // Sent, not a fault of this thread's. After a fault we passed on, it
    // is the previous handler's re-raise: die.
    if (g_passed_on.load()) {
      DefaultAction(sig, info);
      return;
    }
    // Raised by this thread from inside another handler: one installed
    // over ours got a fault first (Python's faulthandler, enabled after a
    // view was handed out, prints its report, puts ours back and
    // re-raises). Return: a write into a view faults again, into this
    // handler, and any other fault comes back to be passed on. A SIGSEGV
    // raised from ordinary code is passed on as sent.
    if (info->si_code == SI_TKILL && info->si_pid == ::getpid() && RaisedInsideAHandlerAfterOurFault(uctx)) {
      errno = saved_errno;
      return;
    }
  } else {
    // A fault that came back after the previous handler returned from it
    // (one that ignores it, or was disabled meanwhile): take the default
    // action rather than loop.
    const auto addr = reinterpret_cast<uintptr_t>(info->si_addr);
    if (g_passed_on.load() && g_passed_addr.load() == addr) {
      DefaultAction(sig, info);
      return;
    }
    g_passed_addr.store(addr);
  }
  g_passed_on.store(true);
  ChainToPrevious(sig, info, uctx);
}

// Makes sure our handler is the one installed, putting it back in front of
// any installed over it (which then gets the faults that are not ours).
// False when it cannot be installed.
bool EnsureInstalled() {
  struct sigaction current {};
  if (::sigaction(SIGSEGV, nullptr, &current) != 0) return false;
  if ((current.sa_flags & SA_SIGINFO) != 0 && current.sa_sigaction == OnSegv) return true;
  std::lock_guard<std::mutex> lock(g_registry_mu);
  if (::sigaction(SIGSEGV, nullptr, &current) != 0) return false;
  if ((current.sa_flags & SA_SIGINFO) != 0 && current.sa_sigaction == OnSegv) return true;
  const int next = 1 - g_previous_slot.load(std::memory_order_relaxed);
  g_previous[next] = current;
  g_previous_slot.store(next, std::memory_order_release);
  struct sigaction sa {};
  sa.sa_sigaction = OnSegv;
  sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
  sigemptyset(&sa.sa_mask);
  if (::sigaction(SIGSEGV, &sa, nullptr) != 0) return false;
  RecordRestorer();
  return true;
}

// Registers a mapping with the fault handler (installing it on first use).
// Returns the slot, or -1 when every slot is taken.
int Register(uint8_t* base, uint64_t size, int fd, std::atomic<uint8_t>* state) {
  if (!EnsureInstalled()) return -1;
  std::lock_guard<std::mutex> lock(g_registry_mu);
  for (int i = 0; i < kSlots; ++i) {
    Region& r = g_regions[i];
    if (r.base.load(std::memory_order_relaxed) != 0) continue;
    r.size = size;
    r.fd = fd;
    r.state = state;
    r.base.store(reinterpret_cast<uintptr_t>(base), std::memory_order_release);
    return i;
  }
  return -1;
}

void Unregister(int slot) {
  std::lock_guard<std::mutex> lock(g_registry_mu);
  g_regions[slot].base.store(0, std::memory_order_release);
}

}  // namespace

tqds::Result<std::unique_ptr<ViewMapping>> ViewMapping::Map(int fd, uint64_t size,
                                                            bool copy_on_write) {
  void* p = ::mmap(nullptr, size, PROT_READ, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) {
    return Status::IOError("cannot map the worker's shared memory: ", std::strerror(errno));
  }
  auto* base = static_cast<uint8_t*>(p);
  if (!copy_on_write) return std::unique_ptr<ViewMapping>(new ViewMapping(base, size, -1, -1));
  const int dup = ::fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (dup < 0) {
    const int e = errno;
    ::munmap(p, size);
    return Status::IOError("cannot keep the shared memory descriptor: ", std::strerror(e));
  }
  const uint64_t chunks = (size + kChunk - 1) / kChunk;
  auto state = std::make_unique<std::atomic<uint8_t>[]>(chunks);
  for (uint64_t c = 0; c < chunks; ++c) state[c].store(kShared, std::memory_order_relaxed);
  const int slot = Register(base, size, dup, state.get());
  if (slot < 0) {
    spdlog::warn(
        "copy-on-write views unavailable (no free slot or no SIGSEGV handler); "
        "views of this mapping stay read-only");
    ::close(dup);
    return std::unique_ptr<ViewMapping>(new ViewMapping(base, size, -1, -1));
  }
  auto m = std::unique_ptr<ViewMapping>(new ViewMapping(base, size, dup, slot));
  m->state_ = std::move(state);
  m->views_.assign(chunks, 0);
  return m;
}

ViewMapping::ViewMapping(uint8_t* base, uint64_t size, int fd, int slot)
    : base_(base), size_(size), fd_(fd), slot_(slot) {}

ViewMapping::~ViewMapping() {
  if (slot_ >= 0) Unregister(slot_);
  ::munmap(base_, size_);
  if (fd_ >= 0) ::close(fd_);
}

std::vector<bool> ViewMapping::View(const std::vector<uint64_t>& offsets,
                                    const std::vector<uint64_t>& sizes) {
  std::vector<bool> viewable(offsets.size(), true);
  if (!copy_on_write()) return viewable;
  // A handler installed over ours since (Python's faulthandler.enable(),
  // say) would get the writes into these views first.
  if (!EnsureInstalled()) spdlog::warn("cannot reinstall the copy-on-write fault handler");
  std::lock_guard<std::mutex> lock(mu_);
  for (size_t i = 0; i < offsets.size(); ++i) {
    if (sizes[i] == 0) continue;  // nothing to see, nothing counted
    // Bytes that a live view already shows are copied: two results must not
    // share pages, or a write into one would show in the other.
    if (OverlapsLiveLocked(offsets[i], sizes[i])) {
      viewable[i] = false;
      continue;
    }
    const uint64_t c0 = FirstChunk(offsets[i]), c1 = LastChunk(offsets[i], sizes[i]);
    bool shared = true;
    for (uint64_t c = c0; c <= c1; ++c) {
      if (state_[c].load(std::memory_order_acquire) == kPrivate && views_[c] == 0) RestoreLocked(c);
      if (state_[c].load(std::memory_order_acquire) != kShared) shared = false;
    }
    if (!shared) {
      viewable[i] = false;
      continue;
    }
    for (uint64_t c = c0; c <= c1; ++c) ++views_[c];
    live_.emplace(offsets[i], offsets[i] + sizes[i]);
  }
  return viewable;
}

bool ViewMapping::OverlapsLiveLocked(uint64_t off, uint64_t n) const {
  // live_ holds disjoint ranges: the one starting last at or before off, and
  // those starting inside [off, off + n), are the only candidates.
  auto it = live_.upper_bound(off);
  if (it != live_.begin() && std::prev(it)->second > off) return true;
  return it != live_.end() && it->first < off + n;
}

void ViewMapping::Unview(const std::vector<uint64_t>& offsets, const std::vector<uint64_t>& sizes) {
  if (!copy_on_write()) return;
  std::lock_guard<std::mutex> lock(mu_);
  for (size_t i = 0; i < offsets.size(); ++i) {
    if (sizes[i] == 0) continue;
    live_.erase(offsets[i]);
    const uint64_t c1 = LastChunk(offsets[i], sizes[i]);
    for (uint64_t c = FirstChunk(offsets[i]); c <= c1; ++c) {
      if (--views_[c] == 0 && state_[c].load(std::memory_order_acquire) == kPrivate)
        RestoreLocked(c);
    }
  }
}

void ViewMapping::RestoreLocked(uint64_t c) {
  uint8_t expected = kPrivate;
  if (!state_[c].compare_exchange_strong(expected, kBusy, std::memory_order_acq_rel)) return;
  void* p = ::mmap(base_ + c * kChunk, ChunkLength(size_, c), PROT_READ, MAP_SHARED | MAP_FIXED,
                   fd_, static_cast<off_t>(c * kChunk));
  state_[c].store(p == MAP_FAILED ? kPrivate : kShared, std::memory_order_release);
}

size_t ViewMapping::PrivateChunks() const {
  if (!copy_on_write()) return 0;
  size_t n = 0;
  for (uint64_t c = 0; c < views_.size(); ++c)
    n += state_[c].load(std::memory_order_relaxed) == kPrivate;
  return n;
}

}  // namespace ds::internal
