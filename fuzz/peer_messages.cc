// Fuzz target: the worker-to-worker control messages of a datasystem
// cluster (datasystem/peer_messages.h). The input is a received header
// frame; its body goes through the request and the reply decoder of its
// message type (the same type id carries both), and a hostile-length check:
// what a decoder accepts must encode and decode again to the same thing.
#include <cstdlib>

#include "datasystem/peer_messages.h"
#include "fuzz/fuzz_util.h"

namespace {

using tqds::wire::MsgType;

bool Same(const ds::PublishEntry& a, const ds::PublishEntry& b) {
  return a.key == b.key && a.size == b.size && a.replica == b.replica;
}

template <typename T, typename Decode>
T Again(const std::string& bytes, Decode decode) {
  auto m = tqds::wire::Message::DecodeHeader(bytes.data(), bytes.size());
  if (!m.ok()) std::abort();
  auto r = decode(m->body());
  if (!r.ok()) std::abort();  // what we encoded does not decode
  return std::move(r).value();
}

// The header frame of a message with `body`.
std::string Frame(MsgType type, std::string body) {
  tqds::wire::Message m(type, 1);
  m.set_body(std::move(body));
  return m.EncodeHeader();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto m = tqds::fuzz::AsHeader(data, size);
  if (!m) return 0;
  const msgpack::object& body = m->body();
  const size_t asked = size % 7;  // a reply answers for the keys asked: any count
  if (auto p = ds::peer::DecodePublish(body); p.ok()) {
    auto q = Again<ds::peer::Publish>(Frame(MsgType::kDsMetaPublish, ds::peer::Encode(*p)), ds::peer::DecodePublish);
    if (q.mode != p->mode || q.entries.size() != p->entries.size()) std::abort();
    for (size_t i = 0; i < q.entries.size(); ++i) {
      if (!Same(q.entries[i], p->entries[i])) std::abort();
    }
  }
  if (auto s = ds::peer::DecodePublishReply(body); s.ok()) {
    auto t = Again<std::vector<ds::StaleCopy>>(Frame(MsgType::kDsMetaPublish, ds::peer::EncodePublishReply(*s)),
                                               ds::peer::DecodePublishReply);
    if (t.size() != s->size()) std::abort();
  }
  if (auto k = ds::msg::DecodeKeys(body, "MetaLookup"); k.ok()) {
    auto l = Again<std::vector<std::string>>(Frame(MsgType::kDsMetaLookup, ds::msg::EncodeKeys(*k)),
                                             [](const msgpack::object& b) { return ds::msg::DecodeKeys(b, "x"); });
    if (l != *k) std::abort();
  }
  for (size_t n : {asked, size_t{1}}) {
    if (auto f = ds::peer::DecodeLookupReply(body, n); f.ok()) {
      if (f->size() != n) std::abort();
      auto g = Again<std::vector<ds::LookupResult>>(
          Frame(MsgType::kDsMetaLookup, ds::peer::EncodeLookupReply(*f)),
          [n](const msgpack::object& b) { return ds::peer::DecodeLookupReply(b, n); });
      for (size_t i = 0; i < n; ++i) {
        if (g[i].code != (*f)[i].code || g[i].live != (*f)[i].live || g[i].lost != (*f)[i].lost) std::abort();
      }
    }
    if (auto r = ds::peer::DecodeRemoveReply(body, n); r.ok()) {
      if (r->size() != n) std::abort();
    }
  }
  if (auto d = ds::peer::DecodeDrop(body); d.ok()) {
    auto e = Again<ds::peer::Drop>(Frame(MsgType::kDsDropCopies, ds::peer::Encode(*d)), ds::peer::DecodeDrop);
    if (e.keys != d->keys || e.versions != d->versions) std::abort();
  }
  (void)ds::msg::DecodeDeleted(body, "DropCopies reply");
  return 0;
}
