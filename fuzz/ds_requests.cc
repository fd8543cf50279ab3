// Fuzz target: the datasystem worker's request handling. The input is what
// a local client sends on the worker's Unix socket: frames (local_frame.h)
// read with the worker's own reader; each request that decodes is handled
// (RequestHandler, the code both the Unix socket and the TCP port call)
// against a small real ObjectStore that already holds two objects, once as
// a local request and once as a TCP one. Every reply must encode.
#include <cstdlib>
#include <memory>
#include <vector>

#include "datasystem/allocator.h"
#include "datasystem/eviction_policy.h"
#include "datasystem/local_frame.h"
#include "datasystem/object_store.h"
#include "datasystem/protocol.h"
#include "datasystem/request_handler.h"
#include "datasystem/spill_store.h"
#include "fuzz/socket_input.h"

namespace {

constexpr uint64_t kArena = 256 << 10;

// A local Get that would wait for a missing key blocks for its wait_ms (the
// worker's thread per connection allows it): such requests go over TCP only.
bool WouldWait(const tqds::wire::Message& m) {
  if (m.type() != tqds::wire::MsgType::kDsGet) return false;
  auto r = tqds::wire::MapReader::Of(m.body(), "Get");
  if (!r.ok()) return false;
  auto w = r->GetOr<uint64_t>(ds::proto::kWaitMs, 0);
  return !w.ok() || *w > 0;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::vector<uint8_t> memory(kArena);
  ds::StoreOptions o;
  o.name = "fuzz-worker";
  ds::ObjectStore store(o, memory.data(), std::make_unique<ds::BestFitAllocator>(kArena),
                        std::make_unique<ds::LruPolicy>(), ds::SpillStore());
  {
    ds::Session s;
    auto slots = store.Create(s, {"a", "b"}, {16, 0}, ds::WriteOptions{});
    if (slots.ok()) store.Seal(s, {(*slots)[0].offset, (*slots)[1].offset});
    store.CloseSession(s);
  }
  ds::HandlerContext ctx;
  ctx.worker = "127.0.0.1:1";
  ctx.socket_path = "/nonexistent/fuzz.sock";
  ctx.arena_size = kArena;
  ds::RequestHandler handler(store, ctx);

  ds::FrameLimits limits;
  limits.max_header = 1 << 16;
  limits.max_payloads = 1 << 10;
  limits.max_payload_bytes = 1 << 18;
  tqds::fuzz::SocketInput input(data, size);
  if (input.fd() < 0) return 0;
  ds::Session session;  // one connection: what it creates and pins lives across its requests
  for (int i = 0; i < 16; ++i) {
    auto m = ds::ReadFrame(input.fd(), nullptr, limits);
    if (!m.ok()) break;
    bool retry = false;
    tqds::wire::Message tcp = handler.HandleTcp(*m, &retry);
    (void)tcp.EncodeHeader();
    if (WouldWait(*m)) continue;
    auto local = handler.HandleLocal(std::move(m).value(), session);
    if (local) (void)local->EncodeHeader();
  }
  store.CloseSession(session);
  return 0;
}
