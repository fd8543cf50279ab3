// ZMQ send/receive of Messages.
#include "common/wire/transport.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <mutex>
#include <string>

namespace tqds::wire {

zmq::context_t& Context() {
  // One context per process. A child forked after its parent used ZMQ
  // inherits the context without its I/O threads (every call would time
  // out), so a process whose pid differs from the context's owner makes its
  // own; the inherited one is leaked, never touched. No lock: a lock held by
  // another thread at fork() would stay locked in the child.
  struct Owned {
    zmq::context_t* ctx;
    pid_t pid;
  };
  static std::atomic<Owned*> current{nullptr};
  const pid_t me = getpid();
  Owned* cur = current.load(std::memory_order_acquire);
  if (cur != nullptr && cur->pid == me) return *cur->ctx;
  auto* mine = new Owned{new zmq::context_t(2), me};
  mine->ctx->set(zmq::ctxopt::max_sockets, 65535);
  if (current.compare_exchange_strong(cur, mine, std::memory_order_acq_rel)) return *mine->ctx;
  // Another thread of this process made one first: use it.
  delete mine->ctx;
  delete mine;
  return *cur->ctx;
}  // contexts are leaked on purpose: sockets in static objects may outlive main

namespace {
void ReleaseHolder(void* /*data*/, void* hint) {
  delete static_cast<std::shared_ptr<const void>*>(hint);
}

zmq::message_t ZmqFromBuffer(const Buffer& b) {
  if (b.size() < 256 || !b.holder()) return zmq::message_t(b.data(), b.size());
  auto* hint = new std::shared_ptr<const void>(b.holder());
  return zmq::message_t(const_cast<uint8_t*>(b.data()), b.size(), ReleaseHolder, hint);
}
}  // namespace

Buffer BufferFromZmq(zmq::message_t&& msg) {
  auto holder = std::make_shared<zmq::message_t>(std::move(msg));
  const void* data = holder->data();
  size_t size = holder->size();
  return Buffer::Wrap(data, size, std::move(holder));
}

Status SendMessage(zmq::socket_t& socket, const Message& message,
                   std::vector<zmq::message_t>* routing) {
  try {
    if (routing != nullptr) {
      for (auto& r : *routing) socket.send(zmq::message_t(r.data(), r.size()), zmq::send_flags::sndmore);
    }
    // The encoded header goes to ZMQ as it is: no copy of a big body.
    msgpack::sbuffer header = message.EncodeHeaderBuffer();
    const size_t header_size = header.size();
    zmq::message_t frame(header.release(), header_size, [](void* data, void*) { std::free(data); }, nullptr);
    const auto& payloads = message.payloads();
    socket.send(frame, payloads.empty() ? zmq::send_flags::none : zmq::send_flags::sndmore);
    for (size_t i = 0; i < payloads.size(); ++i) {
      auto flags = i + 1 == payloads.size() ? zmq::send_flags::none : zmq::send_flags::sndmore;
      socket.send(ZmqFromBuffer(payloads[i]), flags);
    }
  } catch (const zmq::error_t& e) {
    return Status::Unavailable("send failed: ", e.what());
  }
  return Status::OK();
}

namespace {
const char* CaptureDir() {
  static const char* dir = std::getenv("TQDS_WIRE_CAPTURE_DIR");
  return dir != nullptr && *dir != '\0' ? dir : nullptr;
}
}  // namespace

bool CaptureOn() { return CaptureDir() != nullptr; }

void CaptureInput(const char* family, int kind, const void* data, size_t size) {
  const char* dir = CaptureDir();
  if (dir == nullptr) return;
  static std::mutex mu;
  static std::map<std::pair<std::string, int>, int> taken;
  std::lock_guard<std::mutex> lock(mu);
  int& n = taken[{family, kind}];
  if (n >= 8) return;
  std::string path = std::string(dir) + "/" + family + std::to_string(kind) + "-" +
                     std::to_string(::getpid()) + "-" + std::to_string(n++) + ".bin";
  if (FILE* f = std::fopen(path.c_str(), "wb")) {
    std::fwrite(data, 1, std::min<size_t>(size, 16 << 10), f);
    std::fclose(f);
  }
}

Result<Message> RecvMessage(zmq::socket_t& socket, std::vector<zmq::message_t>* routing,
                            const WireLimits& limits) {
  std::vector<zmq::message_t> parts;
  try {
    while (true) {
      zmq::message_t part;
      auto r = socket.recv(part, zmq::recv_flags::none);
      if (!r) return Status::Unavailable("receive interrupted");
      bool more = part.more();
      if (parts.size() <= limits.max_frames + 2) parts.push_back(std::move(part));
      if (!more) break;
    }
  } catch (const zmq::error_t& e) {
    return Status::Unavailable("receive failed: ", e.what());
  }
  size_t first = 0;
  if (routing != nullptr) {
    routing->clear();
    if (parts.size() < 2) return Status::Invalid("malformed message: no routing frame");
    routing->push_back(std::move(parts[0]));
    first = 1;
  }
  if (parts.size() > limits.max_frames + first + 1) {
    return Status::Invalid("malformed message: more than ", limits.max_frames, " payload frames");
  }
  if (first >= parts.size()) return Status::Invalid("malformed message: no header frame");
  TQDS_ASSIGN_OR_RETURN(Message m, Message::DecodeHeader(BufferFromZmq(std::move(parts[first])), limits));
  CaptureInput("", static_cast<int>(m.type()), m.raw_header().data(), m.raw_header().size());
  m.payloads().reserve(parts.size() - first - 1);
  for (size_t i = first + 1; i < parts.size(); ++i) {
    m.payloads().push_back(BufferFromZmq(std::move(parts[i])));
  }
  return m;
}

}  // namespace tqds::wire
