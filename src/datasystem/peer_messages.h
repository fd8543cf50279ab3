// The worker-to-worker control messages of a datasystem cluster (types
// 111-114, common/wire/msg_types.h), each with its encoder and decoder side
// by side: the sender and the receiver (ClusterNode) call the same pair, and
// the fuzz target fuzz/peer_messages.cc runs every decoder on any bytes.
// Bodies are msgpack maps with the field names of protocol.h; the exchange
// is described in docs/datasystem.md.
//
// Decoders treat every length as hostile: parallel arrays must have the
// lengths they announce, codes must be ones this message can carry, and a
// reply must answer for exactly the keys that were asked.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "common/wire/message.h"
#include "datasystem/client_messages.h"
#include "datasystem/owner_table.h"
#include "datasystem/protocol.h"

namespace ds::peer {

// MetaPublish request: locations for the owner of their keys to record.
struct Publish {
  proto::PublishMode mode = proto::PublishMode::kPrimary;
  std::vector<PublishEntry> entries;
};
std::string Encode(const Publish& m);
// The same body for a slice of entries (a chunk of a big publish), without
// copying them into a Publish.
std::string EncodePublish(proto::PublishMode mode, std::span<const PublishEntry> entries);
tqds::Result<Publish> DecodePublish(const msgpack::object& body);

// MetaPublish reply: the copies that became stale.
std::string EncodePublishReply(const std::vector<StaleCopy>& stale);
tqds::Result<std::vector<StaleCopy>> DecodePublishReply(const msgpack::object& body);

// MetaLookup and MetaRemove requests: the keys (msg::EncodeKeys / msg::DecodeKeys).

// MetaLookup reply: one result per key asked, in order (a replica's
// incarnation does not travel: it reads 0).
std::string EncodeLookupReply(const std::vector<LookupResult>& found);
tqds::Result<std::vector<LookupResult>> DecodeLookupReply(const msgpack::object& body, size_t asked);

// MetaRemove reply: per key asked, the holders its record listed.
std::string EncodeRemoveReply(const std::vector<std::vector<Replica>>& removed);
tqds::Result<std::vector<std::vector<std::string>>> DecodeRemoveReply(const msgpack::object& body,
                                                                      size_t asked);

// DropCopies request: drop these keys' copies at these versions (none: any
// version; 0 for one key: any version of it).
struct Drop {
  std::vector<std::string> keys;
  std::vector<uint64_t> versions;
};
std::string Encode(const Drop& m);
tqds::Result<Drop> DecodeDrop(const msgpack::object& body);

// DropCopies reply: how many copies went (msg::EncodeDeleted / msg::DecodeDeleted).

}  // namespace ds::peer
