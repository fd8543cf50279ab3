// Unix-socket framing with optional descriptor passing.
#include "datasystem/local_frame.h"

#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstring>
#include <vector>

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
    if (r < 0) return Status::IOError("local socket receive failed: ", std::strerror(errno));
    if (r == 0) return Status::Unavailable("peer closed the connection");
    *got += static_cast<size_t>(r);
  }
  return Status::OK();
}

}  // namespace

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
  std::vector<uint64_t> lens(prefix.payload_count);
  std::string header(prefix.header_len, '\0');
  auto truncated = [](const Status& s) {
    return s.IsUnavailable() ? Status::IOError("truncated frame") : s;
  };
  if (!lens.empty()) {
    st = RecvAll(fd, lens.data(), lens.size() * sizeof(uint64_t), &got, nullptr);
    if (!st.ok()) return truncated(st);
  }
  uint64_t total = 0;
  for (uint64_t l : lens) {
    if (l > limits.max_payload_bytes || total + l > limits.max_payload_bytes) {
      return Status::Invalid("malformed frame: payloads exceed ", limits.max_payload_bytes,
                             " bytes");
    }
    total += l;
  }
  st = RecvAll(fd, header.data(), header.size(), &got, nullptr);
  if (!st.ok()) return truncated(st);
  tqds::Buffer body;
  if (total > 0) {
    TQDS_ASSIGN_OR_RETURN(auto mb, tqds::MutableBuffer::Allocate(total));
    st = RecvAll(fd, mb.mutable_data(), total, &got, nullptr);
    if (!st.ok()) return truncated(st);
    body = std::move(mb).Freeze();
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
  uint64_t off = 0;
  for (uint64_t l : lens) {
    message.payloads().push_back(body.Slice(off, l));
    off += l;
  }
  return message;
}

}  // namespace ds
