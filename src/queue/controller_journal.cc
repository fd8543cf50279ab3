// ControllerJournal: base file, segments and records (layout in the header).
#include "queue/controller_journal.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "queue/protocol.h"

namespace tq::internal {

using tqds::Buffer;
using tqds::Result;
using tqds::Status;
using tqds::wire::Message;

namespace {

constexpr char kBaseMagic[8] = {'T', 'Q', 'D', 'S', 'B', 'A', 'S', 'E'};
constexpr uint32_t kBaseVersion = 1;
constexpr size_t kBaseHeader = 8 + 4 + 4 + 8 + 8;
constexpr uint64_t kMaxRecord = uint64_t{1} << 32;  // a Restore record carries a whole snapshot

uint32_t Crc(std::string_view bytes) {
  return static_cast<uint32_t>(crc32_z(0L, reinterpret_cast<const Bytef*>(bytes.data()), bytes.size()));
}

void PutU32(std::string& s, uint32_t v) {
  for (int i = 0; i < 4; ++i) s.push_back(static_cast<char>(v >> (8 * i)));
}
void PutU64(std::string& s, uint64_t v) {
  for (int i = 0; i < 8; ++i) s.push_back(static_cast<char>(v >> (8 * i)));
}
uint64_t GetLE(const char* p, int n) {
  uint64_t v = 0;
  for (int i = 0; i < n; ++i) v |= uint64_t{static_cast<uint8_t>(p[i])} << (8 * i);
  return v;
}

Status Errno(const std::string& what, const std::string& path) {
  return Status::IOError("controller state: ", what, " ", path, ": ", std::strerror(errno));
}

Status WriteAll(int fd, std::string_view bytes, const std::string& path) {
  while (!bytes.empty()) {
    ssize_t n = ::write(fd, bytes.data(), bytes.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return Errno("writing", path);
    }
    bytes.remove_prefix(static_cast<size_t>(n));
  }
  return Status::OK();
}

// The whole file, or nullopt when it does not exist.
Result<std::optional<std::string>> ReadFile(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) {
    if (errno == ENOENT) return std::optional<std::string>();
    return Errno("opening", path);
  }
  std::string out;
  char buf[1 << 16];
  while (true) {
    ssize_t n = ::read(fd, buf, sizeof(buf));
    if (n < 0) {
      if (errno == EINTR) continue;
      Status st = Errno("reading", path);
      ::close(fd);
      return st;
    }
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  return std::optional<std::string>(std::move(out));
}

Status SyncDir(const std::string& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return Errno("opening", dir);
  int rc = ::fsync(fd);
  Status st = rc == 0 ? Status::OK() : Errno("syncing", dir);
  ::close(fd);
  return st;
}

// The directory, created when missing; it must be a real directory (not a
// link) owned by this user, since whoever can write it can rewrite history.
Status PrepareDir(const std::string& dir) {
  struct stat st {};
  if (::lstat(dir.c_str(), &st) != 0 && errno == ENOENT) {
    std::error_code ec;
    std::filesystem::path parent = std::filesystem::path(dir).parent_path();
    if (!parent.empty()) std::filesystem::create_directories(parent, ec);
    if (ec) return Status::IOError("controller state: cannot create ", parent.string(), ": ", ec.message());
    if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) return Errno("creating", dir);
  }
  if (::lstat(dir.c_str(), &st) != 0) return Errno("inspecting", dir);
  if (S_ISLNK(st.st_mode) || !S_ISDIR(st.st_mode)) {
    return Status::Invalid("controller state: ", dir, " is not a directory (a symbolic link is refused)");
  }
  if (st.st_uid != ::geteuid()) {
    return Status::Invalid("controller state: ", dir, " belongs to uid ", st.st_uid, ", not to this user (uid ",
                           ::geteuid(), ")");
  }
  return Status::OK();
}

// The segment numbers of the wal.N files in `dir`.
std::vector<uint64_t> Segments(const std::string& dir) {
  std::vector<uint64_t> out;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(dir, ec)) {
    std::string name = e.path().filename().string();
    if (name.rfind("wal.", 0) != 0 || name.size() == 4 || name.size() > 24) continue;
    if (name.find_first_not_of("0123456789", 4) != std::string::npos) continue;
    out.push_back(std::stoull(name.substr(4)));
  }
  return out;
}

Result<Message> DecodeRecord(std::string_view bytes, const std::string& where) {
  msgpack::unpack_limit limit(bytes.size(), bytes.size() / 2, bytes.size(), bytes.size(), bytes.size(), 4);
  msgpack::zone zone;
  msgpack::object root;
  try {
    size_t off = 0;
    root = msgpack::unpack(zone, bytes.data(), bytes.size(), off, nullptr, nullptr, limit);
    if (off != bytes.size()) return Status::Invalid(where, ": trailing bytes in a record");
  } catch (const std::exception& e) {
    return Status::Invalid(where, ": a record is not valid msgpack (", e.what(), ")");
  }
  TQDS_ASSIGN_OR_RETURN(auto a, AsArray(root, where + ": record", 2));
  if (a->ptr[0].type != msgpack::type::BIN) return Status::Invalid(where, ": record header must be bin");
  TQDS_ASSIGN_OR_RETURN(auto frames, AsArray(a->ptr[1], where + ": record payloads"));
  const auto& h = a->ptr[0].via.bin;
  TQDS_ASSIGN_OR_RETURN(Message m, Message::DecodeHeader(h.ptr, h.size));
  m.set_raw_header(Buffer::Copy(h.ptr, h.size));
  for (uint32_t i = 0; i < frames->size; ++i) {
    if (frames->ptr[i].type != msgpack::type::BIN) return Status::Invalid(where, ": record payload must be bin");
    m.payloads().push_back(Buffer::Copy(frames->ptr[i].via.bin.ptr, frames->ptr[i].via.bin.size));
  }
  return m;
}

}  // namespace

std::string ControllerJournal::SegmentPath(uint64_t n) const { return dir_ + "/wal." + std::to_string(n); }

Result<std::unique_ptr<ControllerJournal>> ControllerJournal::Open(const std::string& dir, bool sync,
                                                                   Recovered* recovered) {
  if (dir.empty()) return Status::Invalid("controller state: the directory must not be empty");
  TQDS_RETURN_NOT_OK(PrepareDir(dir));
  std::unique_ptr<ControllerJournal> j(new ControllerJournal(dir, sync));
  const std::string lock_path = dir + "/LOCK";
  j->lock_fd_ = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (j->lock_fd_ < 0) return Errno("opening", lock_path);
  if (::flock(j->lock_fd_, LOCK_EX | LOCK_NB) != 0) {
    char buf[32] = {};
    ssize_t n = ::pread(j->lock_fd_, buf, sizeof(buf) - 1, 0);
    std::string holder = n > 0 ? std::string(buf, static_cast<size_t>(n)) : "another process";
    while (!holder.empty() && (holder.back() == '\n' || holder.back() == ' ')) holder.pop_back();
    return Status::Invalid("controller state: ", dir, " is in use by another controller (pid ", holder,
                           "); one directory serves one controller");
  }
  std::string pid = std::to_string(::getpid()) + "\n";
  if (::ftruncate(j->lock_fd_, 0) != 0 || ::pwrite(j->lock_fd_, pid.data(), pid.size(), 0) < 0) {
    return Errno("writing", lock_path);
  }
  TQDS_RETURN_NOT_OK(j->Recover(recovered));
  return j;
}

ControllerJournal::~ControllerJournal() {
  if (segment_fd_ >= 0) ::close(segment_fd_);
  if (lock_fd_ >= 0) ::close(lock_fd_);  // releases the flock
}

Status ControllerJournal::Recover(Recovered* out) {
  const std::string base_path = dir_ + "/base";
  TQDS_ASSIGN_OR_RETURN(auto base, ReadFile(base_path));
  std::vector<uint64_t> segments = Segments(dir_);
  if (!base) {
    if (!segments.empty()) {
      return Status::Invalid("controller state: ", dir_, " holds wal.", segments.front(),
                             " but no base file; it was not written by a controller or was damaged");
    }
    segment_ = 0;
    return Status::OK();
  }
  const std::string& b = *base;
  if (b.size() < kBaseHeader || std::memcmp(b.data(), kBaseMagic, 8) != 0) {
    return Status::Invalid("controller state: ", base_path, " is not a controller base file");
  }
  uint32_t version = static_cast<uint32_t>(GetLE(b.data() + 8, 4));
  if (version != kBaseVersion) {
    return Status::Invalid("controller state: ", base_path, " has format version ", version,
                           " (this build reads ", kBaseVersion, ")");
  }
  uint32_t crc = static_cast<uint32_t>(GetLE(b.data() + 12, 4));
  segment_ = GetLE(b.data() + 16, 8);
  uint64_t length = GetLE(b.data() + 24, 8);
  if (length != b.size() - kBaseHeader) {
    return Status::Invalid("controller state: ", base_path, " declares ", length, " bytes but holds ",
                           b.size() - kBaseHeader);
  }
  std::string_view doc(b.data() + kBaseHeader, length);
  if (Crc(doc) != crc) return Status::Invalid("controller state: ", base_path, " fails its checksum (damaged)");
  out->base = std::string(doc);
  return ReadSegment(segment_, out);
}

Status ControllerJournal::ReadSegment(uint64_t n, Recovered* out) {
  const std::string path = SegmentPath(n);
  TQDS_ASSIGN_OR_RETURN(auto content, ReadFile(path));
  if (!content) return Status::OK();  // a rotation stopped before creating it: empty
  return ParseSegment(*content, path, out);
}

Status ControllerJournal::ParseSegment(std::string_view s, const std::string& path, Recovered* out) {
  size_t off = 0;
  while (off < s.size()) {
    const std::string where = path + " at offset " + std::to_string(off);
    if (s.size() - off < 8) {
      out->dropped_tail_bytes = s.size() - off;
      break;
    }
    uint64_t len = GetLE(s.data() + off, 4);
    uint32_t crc = static_cast<uint32_t>(GetLE(s.data() + off + 4, 4));
    if (len > s.size() - off - 8) {  // cut short by a kill during the write
      out->dropped_tail_bytes = s.size() - off;
      break;
    }
    std::string_view bytes(s.data() + off + 8, len);
    if (Crc(bytes) != crc) return Status::Invalid("controller state: ", where, ": record fails its checksum (damaged)");
    TQDS_ASSIGN_OR_RETURN(Message m, DecodeRecord(bytes, where));
    out->records.push_back(std::move(m));
    off += 8 + len;
  }
  return Status::OK();
}

Status ControllerJournal::Append(const Message& request) {
  if (segment_fd_ < 0) {
    return Status::IOError("controller state: ", dir_, " cannot take more records until its state is written again",
                           last_error_.ok() ? "" : " (" + last_error_.message() + ")");
  }
  std::string_view header = request.raw_header().view();
  std::string header_copy;
  if (header.empty()) {  // a request built in this process
    header_copy = request.EncodeHeader();
    header = header_copy;
  }
  msgpack::sbuffer sb;
  msgpack::packer<msgpack::sbuffer> pk(sb);
  pk.pack_array(2);
  pk.pack_bin(static_cast<uint32_t>(header.size()));
  pk.pack_bin_body(header.data(), static_cast<uint32_t>(header.size()));
  pk.pack_array(static_cast<uint32_t>(request.payloads().size()));
  for (const auto& p : request.payloads()) {
    pk.pack_bin(static_cast<uint32_t>(p.size()));
    pk.pack_bin_body(reinterpret_cast<const char*>(p.data()), static_cast<uint32_t>(p.size()));
  }
  std::string_view bytes(sb.data(), sb.size());
  if (bytes.size() >= kMaxRecord) {
    return Status::Invalid("controller state: a request of ", bytes.size(), " bytes is too large to record");
  }
  std::string rec;
  rec.reserve(8 + bytes.size());
  PutU32(rec, static_cast<uint32_t>(bytes.size()));
  PutU32(rec, Crc(bytes));
  rec.append(bytes);
  const std::string path = SegmentPath(segment_);
  Status st = WriteAll(segment_fd_, rec, path);
  if (st.ok() && sync_ && ::fdatasync(segment_fd_) != 0) st = Errno("syncing", path);
  if (!st.ok()) {
    // The segment may now end in part of this record: nothing more goes
    // after it; the next Rotate starts a clean one.
    ::close(segment_fd_);
    segment_fd_ = -1;
    last_error_ = st;
    return st;
  }
  segment_bytes_ += rec.size();
  return Status::OK();
}

Status ControllerJournal::Rotate(std::string_view base) {
  const uint64_t next = segment_ + 1;
  std::string file(kBaseMagic, 8);
  PutU32(file, kBaseVersion);
  PutU32(file, Crc(base));
  PutU64(file, next);
  PutU64(file, base.size());
  file.append(base);
  const std::string tmp = dir_ + "/base.tmp", final_path = dir_ + "/base";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) return Errno("creating", tmp);
  Status st = WriteAll(fd, file, tmp);
  if (st.ok() && ::fsync(fd) != 0) st = Errno("syncing", tmp);
  ::close(fd);
  if (!st.ok()) {
    ::unlink(tmp.c_str());
    return st;
  }
  // From this rename on, the new base is the state and wal.<next> follows it.
  if (::rename(tmp.c_str(), final_path.c_str()) != 0) {
    st = Errno("renaming", tmp);
    ::unlink(tmp.c_str());
    return st;
  }
  if (segment_fd_ >= 0) {  // it no longer follows the base: never append to it again
    ::close(segment_fd_);
    segment_fd_ = -1;
  }
  const std::string seg_path = SegmentPath(next);
  int seg = ::open(seg_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (seg < 0) return Errno("creating", seg_path);
  if (Status s = SyncDir(dir_); !s.ok()) {
    ::close(seg);
    return s;
  }
  segment_fd_ = seg;
  segment_ = next;
  last_error_ = Status::OK();
  segment_bytes_ = 0;
  for (uint64_t n : Segments(dir_)) {
    if (n != segment_) ::unlink(SegmentPath(n).c_str());
  }
  return Status::OK();
}

}  // namespace tq::internal
