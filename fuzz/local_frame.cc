// Fuzz target: the Unix-socket framing between a KVClient and its worker
// (ReadFrame, local_frame.h), reading frame after frame from a socket that
// holds the input, with small limits and a byte budget. Every frame that
// decodes is written again (WriteFrame) and must read back the same; the
// budget must be whole again once the messages are gone.
#include <cstdlib>
#include <cstring>
#include <vector>

#include "datasystem/local_frame.h"
#include "fuzz/socket_input.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  ds::ByteBudget budget(1 << 20);
  ds::FrameLimits limits;
  limits.max_header = 1 << 16;
  limits.max_payloads = 1 << 10;
  limits.max_payload_bytes = 1 << 18;
  limits.budget = &budget;
  {
    tqds::fuzz::SocketInput input(data, size);
    if (input.fd() < 0) return 0;
    std::vector<tqds::wire::Message> decoded;
    for (int i = 0; i < 64; ++i) {
      auto m = ds::ReadFrame(input.fd(), nullptr, limits);
      if (!m.ok()) break;
      decoded.push_back(std::move(m).value());
    }
    for (const auto& m : decoded) {
      if (m.type() == tqds::wire::MsgType::kInvalid) continue;  // a bad header, consumed
      int fds[2];
      if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) continue;
      int buf = 1 << 20;
      ::setsockopt(fds[0], SOL_SOCKET, SO_SNDBUF, &buf, sizeof(buf));
      size_t bytes = 0;
      for (const auto& p : m.payloads()) bytes += p.size();
      if (bytes < (256u << 10) && ds::WriteFrame(fds[0], m).ok()) {
        ::close(fds[0]);
        fds[0] = -1;
        auto back = ds::ReadFrame(fds[1]);
        if (!back.ok() || back->type() != m.type() || back->request_id() != m.request_id() ||
            back->payloads().size() != m.payloads().size()) {
          std::abort();  // a frame we wrote does not read back
        }
        for (size_t i = 0; i < m.payloads().size(); ++i) {
          const auto& a = m.payloads()[i];
          const auto& b = back->payloads()[i];
          if (a.size() != b.size() || (a.size() > 0 && std::memcmp(a.data(), b.data(), a.size()) != 0)) {
            std::abort();
          }
        }
      }
      if (fds[0] >= 0) ::close(fds[0]);
      ::close(fds[1]);
    }
  }
  if (budget.used() != 0) std::abort();  // bytes charged and never given back
  return 0;
}
