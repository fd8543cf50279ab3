// Unix-socket framing with optional descriptor passing.
#include "datasystem/local_frame.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "common/wire/transport.h"

namespace ds {
namespace {

using tqds::Status;

struct Prefix {
  uint32_t magic;
  uint32_t header_len;
  uint32_t payload_count;
  uint32_t flags;
};
static_assert(sizeof(Prefix) == 16);

Status SendAll(int fd, std::vector<iovec>& iov, int pass_fd) {
  size_t idx = 0;
  bool first = true;
  while (idx < iov.size()) {
    msghdr msg{};
    msg.msg_iov = &iov[idx];
    msg.msg_iovlen = std::min<size_t>(iov.size() - idx, IOV_MAX);
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))];
    if (first && pass_fd >= 0) {
      std::memset(control, 0, sizeof(control));
      msg.msg_control = control;
      msg.msg_controllen = sizeof(control);
      cmsghdr* c = CMSG_FIRSTHDR(&msg);
      c->cmsg_level = SOL_SOCKET;
      c->cmsg_type = SCM_RIGHTS;
      c->cmsg_len = CMSG_LEN(sizeof(int));
      std::memcpy(CMSG_DATA(c), &pass_fd, sizeof(int));
    }
    ssize_t n = ::sendmsg(fd, &msg, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Status::IOError("local socket send failed: ", std::strerror(errno));
    first = false;
    size_t left = static_cast<size_t>(n);
    while (idx < iov.size() && left >= iov[idx].iov_len) {
      left -= iov[idx].iov_len;
      ++idx;
    }
    if (idx < iov.size() && left > 0) {
      iov[idx].iov_base = static_cast<char*>(iov[idx].iov_base) + left;
      iov[idx].iov_len -= left;
    }
  }
  return Status::OK();
}

// A failed read: a socket receive timeout (SO_RCVTIMEO) that ran out is a
// Timeout, anything else an IOError.
Status ReceiveError() {
  if (errno == EAGAIN || errno == EWOULDBLOCK) {
    return Status::Timeout("no byte arrived within the socket's receive timeout");
  }
  return Status::IOError("local socket receive failed: ", std::strerror(errno));
}

// Reads exactly n bytes. Returns bytes read before EOF in *got.
Status RecvAll(int fd, void* p, size_t n, size_t* got, int* received_fd) {
  auto* c = static_cast<char*>(p);
  *got = 0;
  while (*got < n) {
    ssize_t r;
    if (received_fd != nullptr) {
      msghdr msg{};
      iovec iov{c + *got, n - *got};
      msg.msg_iov = &iov;
      msg.msg_iovlen = 1;
      alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))];
      msg.msg_control = control;
      msg.msg_controllen = sizeof(control);
      r = ::recvmsg(fd, &msg, MSG_CMSG_CLOEXEC);
      if (r > 0) {
        for (cmsghdr* h = CMSG_FIRSTHDR(&msg); h != nullptr; h = CMSG_NXTHDR(&msg, h)) {
          if (h->cmsg_level == SOL_SOCKET && h->cmsg_type == SCM_RIGHTS) {
            std::memcpy(received_fd, CMSG_DATA(h), sizeof(int));
          }
        }
        received_fd = nullptr;  // only the first chunk carries a descriptor
      }
    } else {
      r = ::read(fd, c + *got, n - *got);
    }
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return ReceiveError();
    if (r == 0) return Status::Unavailable("peer closed the connection");
    *got += static_cast<size_t>(r);
  }
  return Status::OK();
}

// Bytes taken from a ByteBudget, given back on destruction.
class Charge {
 public:
  explicit Charge(ByteBudget* budget) : budget_(budget) {}
  Charge(const Charge&) = delete;
  Charge& operator=(const Charge&) = delete;
  ~Charge() {
    if (budget_ != nullptr && bytes_ > 0) budget_->Release(bytes_);
  }
  Status Add(uint64_t n) {
    if (budget_ == nullptr) return Status::OK();
    if (!budget_->TryCharge(n)) {
      return Status::Invalid("frame refused: the worker already buffers ", budget_->used(),
                             " bytes of incoming frames (limit ", budget_->limit(), ")");
    }
    bytes_ += n;
    return Status::OK();
  }

 private:
  ByteBudget* const budget_;
  uint64_t bytes_ = 0;
};

// A heap buffer that grows with the bytes received into it (never to a
// declared size before those bytes are here), charging what it holds.
class Growing {
 public:
  explicit Growing(ByteBudget* budget) : charge_(budget) {}
  Growing(const Growing&) = delete;
  Growing& operator=(const Growing&) = delete;
  ~Growing() { std::free(data_); }
  uint8_t* data() { return data_; }
  size_t size() const { return size_; }

  // Appends exactly n bytes read from fd.
  Status Recv(int fd, size_t n, int stall_timeout_ms) {
    constexpr size_t kFirst = 64 << 10;
    const size_t target = size_ + n;
    while (size_ < target) {
      if (size_ == cap_) {
        const size_t cap = std::min(target, std::max(kFirst, cap_ * 2));
        TQDS_RETURN_NOT_OK(charge_.Add(cap - cap_));
        auto* p = static_cast<uint8_t*>(std::realloc(data_, cap));  // large: mremap, no copy
        if (p == nullptr) return Status::OutOfSpace("cannot buffer ", cap, " bytes of a frame");
        data_ = p;
        cap_ = cap;
      }
      if (stall_timeout_ms >= 0) {
        pollfd pfd{fd, POLLIN, 0};
        int rc = ::poll(&pfd, 1, stall_timeout_ms);
        if (rc < 0 && errno == EINTR) continue;
        if (rc == 0) {
          return Status::IOError("frame stalled: no byte for ", stall_timeout_ms, " ms");
        }
      }
      ssize_t r = ::read(fd, data_ + size_, std::min(cap_, target) - size_);
      if (r < 0 && errno == EINTR) continue;
      if (r < 0) return ReceiveError();
      if (r == 0) return Status::IOError("truncated frame");
      size_ += static_cast<size_t>(r);
    }
    return Status::OK();
  }

 private:
  Charge charge_;
  uint8_t* data_ = nullptr;
  size_t size_ = 0;
  size_t cap_ = 0;
};

}  // namespace

bool ByteBudget::TryCharge(uint64_t n) {
  uint64_t cur = used_.load(std::memory_order_relaxed);
  do {
    if (n > limit_ || cur > limit_ - n) return false;
  } while (!used_.compare_exchange_weak(cur, cur + n, std::memory_order_relaxed));
  return true;
}

Status WriteFrame(int fd, const tqds::wire::Message& message, int pass_fd) {
  std::string header = message.EncodeHeader();
  const auto& payloads = message.payloads();
  Prefix prefix{kFrameMagic, static_cast<uint32_t>(header.size()),
                static_cast<uint32_t>(payloads.size()), 0};
  std::vector<uint64_t> lens(payloads.size());
  std::vector<iovec> iov;
  iov.reserve(3 + payloads.size());
  iov.push_back({&prefix, sizeof(prefix)});
  for (size_t i = 0; i < payloads.size(); ++i) lens[i] = payloads[i].size();
  if (!lens.empty()) iov.push_back({lens.data(), lens.size() * sizeof(uint64_t)});
  iov.push_back({header.data(), header.size()});
  for (const auto& p : payloads) {
    if (p.size() > 0) iov.push_back({const_cast<uint8_t*>(p.data()), p.size()});
  }
  return SendAll(fd, iov, pass_fd);
}

tqds::Result<tqds::wire::Message> ReadFrame(int fd, int* received_fd, const FrameLimits& limits) {
  if (received_fd != nullptr) *received_fd = -1;
  Prefix prefix{};
  size_t got = 0;
  Status st = RecvAll(fd, &prefix, sizeof(prefix), &got, received_fd);
  if (!st.ok()) {
    if (st.IsUnavailable() && got > 0) return Status::IOError("truncated frame prefix");
    return st;
  }
  if (prefix.magic != kFrameMagic) {
    return Status::Invalid("malformed frame: bad magic 0x", std::hex, prefix.magic);
  }
  if (prefix.header_len == 0 || prefix.header_len > limits.max_header) {
    return Status::Invalid("malformed frame: header length ", prefix.header_len, " out of range");
  }
  if (prefix.payload_count > limits.max_payloads) {
    return Status::Invalid("malformed frame: ", prefix.payload_count, " payloads exceed the limit");
  }
  const uint64_t lens_bytes = uint64_t{prefix.payload_count} * sizeof(uint64_t);
  Growing lens_in(limits.budget);
  if (lens_bytes > 0) {
    TQDS_RETURN_NOT_OK(lens_in.Recv(fd, lens_bytes, limits.stall_timeout_ms));
  }
  std::vector<uint64_t> lens(prefix.payload_count);
  if (lens_bytes > 0) std::memcpy(lens.data(), lens_in.data(), lens_bytes);
  uint64_t total = 0;
  for (uint64_t l : lens) {
    if (l > limits.max_payload_bytes || total + l > limits.max_payload_bytes) {
      return Status::Invalid("malformed frame: payloads exceed the limit of ",
                             limits.max_payload_bytes, " bytes per frame");
    }
    total += l;
  }
  Growing header(limits.budget);
  TQDS_RETURN_NOT_OK(header.Recv(fd, prefix.header_len, limits.stall_timeout_ms));
  tqds::Buffer body;
  if (total > 0) {
    auto in = std::make_shared<Growing>(limits.budget);
    TQDS_RETURN_NOT_OK(in->Recv(fd, total, limits.stall_timeout_ms));
    const uint8_t* p = in->data();
    body = tqds::Buffer::Wrap(p, total, std::move(in));
  }
  // A bad header is returned as a Message of type kInvalid carrying the error:
  // the frame was consumed, so the stream stays in sync and the peer can reply.
  auto decoded = tqds::wire::Message::DecodeHeader(header.data(), header.size());
  if (!decoded.ok()) {
    tqds::wire::Message bad(tqds::wire::MsgType::kInvalid, 0);
    bad.set_status(decoded.status());
    return bad;
  }
  tqds::wire::Message message = std::move(decoded).value();
  if (tqds::wire::CaptureOn()) {  // the whole frame, for the fuzz corpus
    std::string frame(reinterpret_cast<const char*>(&prefix), sizeof(prefix));
    frame.append(reinterpret_cast<const char*>(lens.data()), lens_bytes);
    frame.append(reinterpret_cast<const char*>(header.data()), header.size());
    if (total > 0) frame.append(reinterpret_cast<const char*>(body.data()), std::min<uint64_t>(total, 16 << 10));
    tqds::wire::CaptureInput("local-", static_cast<int>(message.type()), frame.data(), frame.size());
  }
  uint64_t off = 0;
  for (uint64_t l : lens) {
    message.payloads().push_back(body.Slice(off, l));
    off += l;
  }
  return message;
}

}  // namespace ds
