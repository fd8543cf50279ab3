// Disk tier: one file per object, named by id.
#include "datasystem/spill_store.h"

#include <dirent.h>
#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <utility>

#include "datasystem/safe_dir.h"

namespace ds {
namespace {

constexpr char kMagic[8] = {'D', 'S', 'S', 'P', 'I', 'L', 'L', '1'};

struct SpillHeader {
  char magic[8];
  uint64_t size;
  uint64_t version;
  uint32_t key_len;
  uint32_t reserved;
};
static_assert(sizeof(SpillHeader) == 32);

bool IsSpillFile(const std::string& name) {
  return name.size() == 4 + 16 + 6 && name.rfind("obj_", 0) == 0 &&
         name.compare(20, 6, ".spill") == 0;
}

Status WriteAll(int fd, const void* p, size_t n, const std::string& path, int* err) {
  auto* c = static_cast<const char*>(p);
  while (n > 0) {
    ssize_t w = ::write(fd, c, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) {
      *err = w < 0 ? errno : ENOSPC;  // a zero-byte write: no room
      return Status::IOError("cannot write spill file ", path, ": ", std::strerror(*err));
    }
    c += w;
    n -= static_cast<size_t>(w);
  }
  return Status::OK();
}

Status ReadAll(int fd, void* p, size_t n, const std::string& path) {
  auto* c = static_cast<char*>(p);
  while (n > 0) {
    ssize_t r = ::read(fd, c, n);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return Status::IOError("cannot read spill file ", path, ": ", std::strerror(errno));
    if (r == 0) return Status::IOError("spill file ", path, " is truncated");
    c += r;
    n -= static_cast<size_t>(r);
  }
  return Status::OK();
}

}  // namespace

SpillStore::SpillStore(SpillStore&& other) noexcept { *this = std::move(other); }

SpillStore& SpillStore::operator=(SpillStore&& other) noexcept {
  if (this != &other) {
    if (dir_fd_ >= 0) ::close(dir_fd_);
    dir_ = std::move(other.dir_);
    dir_fd_ = std::exchange(other.dir_fd_, -1);
    limit_ = other.limit_;
    used_ = other.used_;
    full_since_ = other.full_since_;
    last_full_log_ = other.last_full_log_;
    full_failures_ = other.full_failures_;
    other.dir_.clear();
  }
  return *this;
}

SpillStore::~SpillStore() {
  if (dir_fd_ >= 0) ::close(dir_fd_);
}

Result<SpillStore> SpillStore::Open(const std::string& dir, uint64_t limit_bytes) {
  SpillStore s;
  if (dir.empty()) return s;
  const std::filesystem::path sub(dir);
  const std::string parent = sub.has_parent_path() ? sub.parent_path().string() : ".";
  std::error_code ec;
  std::filesystem::create_directories(parent, ec);
  if (ec) return Status::IOError("cannot create spill directory ", parent, ": ", ec.message());
  TQDS_RETURN_NOT_OK(CheckSharedDir(parent, "--spill_directory"));
  TQDS_ASSIGN_OR_RETURN(s.dir_fd_, OpenPrivateDir(dir, "spill subdirectory"));
  s.dir_ = dir;
  s.limit_ = limit_bytes;
  s.Clear();  // stale files of an earlier (crashed) worker
  if (::faccessat(s.dir_fd_, ".", W_OK, AT_EACCESS) != 0) {
    return Status::IOError("spill directory ", dir, " is not writable: ", std::strerror(errno));
  }
  return s;
}

bool SpillStore::disk_full() const {
  return full_since_ != std::chrono::steady_clock::time_point{} &&
         std::chrono::steady_clock::now() - full_since_ < std::chrono::seconds(5);
}

bool SpillStore::CanHold(uint64_t size) const {
  return enabled() && used_ + size <= limit_ && !disk_full();
}

std::string SpillStore::Describe() const {
  auto mib = [](uint64_t b) { return std::to_string(b >> 20) + " MiB"; };
  if (disk_full()) {
    return "spill disk full at " + dir_ + " (the file system has no space left; the spill tier "
           "holds " + mib(used_) + " of its " + mib(limit_) + " limit)";
  }
  return "spill directory " + dir_ + " holds " + mib(used_) + " of its " + mib(limit_) + " limit";
}

void SpillStore::NoteDiskFull(const std::string& path, uint64_t size, int err) {
  const auto now = std::chrono::steady_clock::now();
  full_since_ = now;
  ++full_failures_;
  if (now - last_full_log_ >= std::chrono::seconds(10)) {
    spdlog::warn("disk full at {}: cannot spill {} bytes to {} ({}); the spill tier holds {} of "
                 "its {}-byte limit; {} such failures since the last message",
                 dir_, size, path, std::strerror(err), used_, limit_, full_failures_);
    last_full_log_ = now;
    full_failures_ = 0;
  }
}

std::string SpillStore::PathOf(uint64_t id) const {
  char name[32];
  std::snprintf(name, sizeof(name), "obj_%016llx.spill", static_cast<unsigned long long>(id));
  return dir_ + "/" + name;
}

namespace {
std::string NameOf(uint64_t id) {
  char name[32];
  std::snprintf(name, sizeof(name), "obj_%016llx.spill", static_cast<unsigned long long>(id));
  return name;
}
}  // namespace

Status SpillStore::Write(uint64_t id, std::string_view key, uint64_t version, const uint8_t* data,
                         uint64_t size) {
  if (disk_full()) {
    return Status::OutOfSpace("disk full at ", dir_, ": the file system has no space left");
  }
  if (!CanHold(size)) return Status::OutOfSpace("spill directory ", dir_, " is full");
  const std::string name = NameOf(id);
  const std::string path = PathOf(id);
  int fd = ::openat(dir_fd_, name.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW,
                    0600);
  if (fd < 0) {
    const int e = errno;
    if (e == ENOSPC || e == EDQUOT) {
      NoteDiskFull(path, size, e);
      return Status::OutOfSpace("disk full at ", dir_, ": ", std::strerror(e));
    }
    return Status::IOError("cannot create spill file ", path, ": ", std::strerror(e));
  }
  SpillHeader h{};
  std::memcpy(h.magic, kMagic, 8);
  h.size = size;
  h.version = version;
  h.key_len = static_cast<uint32_t>(key.size());
  int err = 0;
  Status st = WriteAll(fd, &h, sizeof(h), path, &err);
  if (st.ok()) st = WriteAll(fd, key.data(), key.size(), path, &err);
  if (st.ok()) st = WriteAll(fd, data, size, path, &err);
  ::close(fd);
  if (!st.ok()) {
    ::unlinkat(dir_fd_, name.c_str(), 0);
    if (err == ENOSPC || err == EDQUOT) {
      NoteDiskFull(path, size, err);
      return Status::OutOfSpace("disk full at ", dir_, ": ", std::strerror(err));
    }
    return st;
  }
  used_ += size;
  return Status::OK();
}

Status SpillStore::Read(uint64_t id, std::string_view key, uint8_t* dst, uint64_t size) const {
  std::string path = PathOf(id);
  int fd = ::openat(dir_fd_, NameOf(id).c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) return Status::IOError("cannot open spill file ", path, ": ", std::strerror(errno));
  SpillHeader h{};
  Status st = ReadAll(fd, &h, sizeof(h), path);
  if (st.ok() && (std::memcmp(h.magic, kMagic, 8) != 0 || h.size != size || h.key_len != key.size())) {
    st = Status::IOError("spill file ", path, " has a bad header");
  }
  if (st.ok()) {
    std::string k(key.size(), '\0');
    st = ReadAll(fd, k.data(), k.size(), path);
    if (st.ok() && k != key) st = Status::IOError("spill file ", path, " belongs to another key");
  }
  if (st.ok()) st = ReadAll(fd, dst, size, path);
  ::close(fd);
  return st;
}

void SpillStore::Remove(uint64_t id, uint64_t size) {
  ::unlinkat(dir_fd_, NameOf(id).c_str(), 0);
  used_ = used_ >= size ? used_ - size : 0;
  full_since_ = {};  // room was made: the next spill may try again
}

void SpillStore::Clear() {
  if (dir_fd_ < 0) return;
  int fd = ::dup(dir_fd_);
  DIR* d = fd >= 0 ? ::fdopendir(fd) : nullptr;
  if (d == nullptr) {
    if (fd >= 0) ::close(fd);
    return;
  }
  ::rewinddir(d);
  while (dirent* e = ::readdir(d)) {
    if (IsSpillFile(e->d_name)) ::unlinkat(dir_fd_, e->d_name, 0);
  }
  ::closedir(d);
  used_ = 0;
  full_since_ = {};
}

}  // namespace ds
