// A fuzz input as the bytes a Unix stream socket delivers: written into one
// end of a socketpair whose writer is then closed, so a reader sees exactly
// those bytes and then end of file (fuzz/local_frame.cc, ds_requests.cc).
#pragma once

#include <sys/socket.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>

namespace tqds::fuzz {

class SocketInput {
 public:
  // Holds at most the socket's buffer (over 64 KiB, libFuzzer's -max_len in
  // scripts/fuzz.sh); a longer input is cut there.
  SocketInput(const uint8_t* data, size_t size) {
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fd_) != 0) return;
    int buf = 1 << 20;
    ::setsockopt(fd_[0], SOL_SOCKET, SO_SNDBUF, &buf, sizeof(buf));
    while (size > 0) {
      ssize_t w = ::send(fd_[0], data, size, MSG_DONTWAIT | MSG_NOSIGNAL);
      if (w <= 0) break;
      data += w;
      size -= static_cast<size_t>(w);
    }
    ::close(fd_[0]);
    fd_[0] = -1;
  }
  ~SocketInput() {
    if (fd_[1] >= 0) ::close(fd_[1]);
  }
  SocketInput(const SocketInput&) = delete;
  SocketInput& operator=(const SocketInput&) = delete;
  // The reading end; -1 when no socketpair could be made.
  int fd() const { return fd_[1]; }

 private:
  int fd_[2] = {-1, -1};
};

}  // namespace tqds::fuzz
