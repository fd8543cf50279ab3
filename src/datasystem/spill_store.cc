// Disk tier: one file per object, named by id.
#include "datasystem/spill_store.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>

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

Status WriteAll(int fd, const void* p, size_t n, const std::string& path) {
  auto* c = static_cast<const char*>(p);
  while (n > 0) {
    ssize_t w = ::write(fd, c, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return Status::IOError("cannot write spill file ", path, ": ", std::strerror(errno));
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

Result<SpillStore> SpillStore::Open(const std::string& dir, uint64_t limit_bytes) {
  SpillStore s;
  if (dir.empty()) return s;
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return Status::IOError("cannot create spill directory ", dir, ": ", ec.message());
  for (const auto& e : std::filesystem::directory_iterator(dir, ec)) {
    if (IsSpillFile(e.path().filename().string())) std::filesystem::remove(e.path(), ec);
  }
  if (::access(dir.c_str(), W_OK) != 0) {
    return Status::IOError("spill directory ", dir, " is not writable: ", std::strerror(errno));
  }
  s.dir_ = dir;
  s.limit_ = limit_bytes;
  return s;
}

std::string SpillStore::PathOf(uint64_t id) const {
  char name[32];
  std::snprintf(name, sizeof(name), "obj_%016llx.spill", static_cast<unsigned long long>(id));
  return dir_ + "/" + name;
}

Status SpillStore::Write(uint64_t id, std::string_view key, uint64_t version, const uint8_t* data,
                         uint64_t size) {
  if (!CanHold(size)) return Status::OutOfSpace("spill directory ", dir_, " is full");
  std::string path = PathOf(id);
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) return Status::IOError("cannot create spill file ", path, ": ", std::strerror(errno));
  SpillHeader h{};
  std::memcpy(h.magic, kMagic, 8);
  h.size = size;
  h.version = version;
  h.key_len = static_cast<uint32_t>(key.size());
  Status st = WriteAll(fd, &h, sizeof(h), path);
  if (st.ok()) st = WriteAll(fd, key.data(), key.size(), path);
  if (st.ok()) st = WriteAll(fd, data, size, path);
  ::close(fd);
  if (!st.ok()) {
    ::unlink(path.c_str());
    return st;
  }
  used_ += size;
  return Status::OK();
}

Status SpillStore::Read(uint64_t id, std::string_view key, uint8_t* dst, uint64_t size) const {
  std::string path = PathOf(id);
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
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
  ::unlink(PathOf(id).c_str());
  used_ = used_ >= size ? used_ - size : 0;
}

void SpillStore::Clear() {
  if (dir_.empty()) return;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(dir_, ec)) {
    if (IsSpillFile(e.path().filename().string())) std::filesystem::remove(e.path(), ec);
  }
  used_ = 0;
}

}  // namespace ds
