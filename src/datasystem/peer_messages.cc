// Worker-to-worker control messages: encoders and decoders.
#include "datasystem/peer_messages.h"

namespace ds::peer {
namespace {

using tqds::Result;
using tqds::Status;
using tqds::StatusCode;
using tqds::wire::MapReader;
using tqds::wire::PackBody;
using Packer = tqds::wire::BodyPacker;

template <typename T>
void PackArray(Packer& pk, const char* name, const std::vector<T>& v) {
  pk.pack(name);
  pk.pack_array(static_cast<uint32_t>(v.size()));
  for (const auto& x : v) pk.pack(x);
}

}  // namespace

std::string Encode(const Publish& m) { return EncodePublish(m.mode, m.entries); }

std::string EncodePublish(proto::PublishMode mode, std::span<const PublishEntry> entries) {
  return PackBody([&](Packer& pk) {
    pk.pack_map(7);
    pk.pack(proto::kMode);
    pk.pack_uint8(static_cast<uint8_t>(mode));
    auto column = [&](const char* name, auto get) {
      pk.pack(name);
      pk.pack_array(static_cast<uint32_t>(entries.size()));
      for (const auto& e : entries) pk.pack(get(e));
    };
    column(proto::kKeys, [](const PublishEntry& e) -> const std::string& { return e.key; });
    column(proto::kSizes, [](const PublishEntry& e) { return e.size; });
    column(proto::kVersions, [](const PublishEntry& e) { return e.replica.version; });
    column(proto::kHolders, [](const PublishEntry& e) -> const std::string& { return e.replica.holder; });
    column(proto::kIncarnations, [](const PublishEntry& e) { return e.replica.incarnation; });
    column(proto::kDataAddrs, [](const PublishEntry& e) -> const std::string& { return e.replica.data; });
  });
}

Result<Publish> DecodePublish(const msgpack::object& body) {
  TQDS_ASSIGN_OR_RETURN(auto r, MapReader::Of(body, "MetaPublish"));
  TQDS_ASSIGN_OR_RETURN(uint32_t mode, r.Get<uint32_t>(proto::kMode));
  TQDS_ASSIGN_OR_RETURN(auto keys, r.Get<std::vector<std::string>>(proto::kKeys));
  TQDS_ASSIGN_OR_RETURN(auto sizes, r.Get<std::vector<uint64_t>>(proto::kSizes));
  TQDS_ASSIGN_OR_RETURN(auto versions, r.Get<std::vector<uint64_t>>(proto::kVersions));
  TQDS_ASSIGN_OR_RETURN(auto holders, r.Get<std::vector<std::string>>(proto::kHolders));
  TQDS_ASSIGN_OR_RETURN(auto incs, r.Get<std::vector<uint64_t>>(proto::kIncarnations));
  TQDS_ASSIGN_OR_RETURN(auto data, r.Get<std::vector<std::string>>(proto::kDataAddrs));
  if (mode > static_cast<uint32_t>(proto::PublishMode::kHandoff)) {
    return Status::Invalid("MetaPublish: unknown mode ", mode);
  }
  const size_t n = keys.size();
  if (sizes.size() != n || versions.size() != n || holders.size() != n || incs.size() != n || data.size() != n) {
    return Status::Invalid("MetaPublish: arrays of different lengths (", n, " keys)");
  }
  TQDS_RETURN_NOT_OK(msg::CheckKeys(keys, "MetaPublish"));
  Publish m;
  m.mode = static_cast<proto::PublishMode>(mode);
  m.entries.resize(n);
  for (size_t i = 0; i < n; ++i) {
    m.entries[i] = PublishEntry{std::move(keys[i]), sizes[i],
                                Replica{std::move(holders[i]), incs[i], std::move(data[i]), versions[i]}};
  }
  return m;
}

std::string EncodePublishReply(const std::vector<StaleCopy>& stale) {
  return PackBody([&](Packer& pk) {
    pk.pack_map(3);
    auto column = [&](const char* name, auto get) {
      pk.pack(name);
      pk.pack_array(static_cast<uint32_t>(stale.size()));
      for (const auto& s : stale) pk.pack(get(s));
    };
    column(proto::kKeys, [](const StaleCopy& s) -> const std::string& { return s.key; });
    column(proto::kHolders, [](const StaleCopy& s) -> const std::string& { return s.holder; });
    column(proto::kVersions, [](const StaleCopy& s) { return s.version; });
  });
}

Result<std::vector<StaleCopy>> DecodePublishReply(const msgpack::object& body) {
  TQDS_ASSIGN_OR_RETURN(auto r, MapReader::Of(body, "MetaPublish reply"));
  TQDS_ASSIGN_OR_RETURN(auto keys, r.Get<std::vector<std::string>>(proto::kKeys));
  TQDS_ASSIGN_OR_RETURN(auto holders, r.Get<std::vector<std::string>>(proto::kHolders));
  TQDS_ASSIGN_OR_RETURN(auto versions, r.GetOr<std::vector<uint64_t>>(proto::kVersions, {}));
  if (keys.size() != holders.size() || (!versions.empty() && versions.size() != keys.size())) {
    return Status::Invalid("MetaPublish reply: ", keys.size(), " keys, ", holders.size(), " holders and ",
                           versions.size(), " versions");
  }
  std::vector<StaleCopy> out(keys.size());
  for (size_t i = 0; i < keys.size(); ++i) {
    out[i] = StaleCopy{std::move(keys[i]), std::move(holders[i]), versions.empty() ? 0 : versions[i]};
  }
  return out;
}

std::string EncodeLookupReply(const std::vector<LookupResult>& found) {
  std::vector<uint32_t> codes, counts;
  std::vector<uint64_t> sizes, versions;
  std::vector<std::string> holders, data, lost;
  for (const auto& f : found) {
    codes.push_back(static_cast<uint32_t>(f.code));
    sizes.push_back(f.size);
    counts.push_back(static_cast<uint32_t>(f.live.size()));
    lost.push_back(f.lost);
    for (const auto& rep : f.live) {
      holders.push_back(rep.holder);
      data.push_back(rep.data);
      versions.push_back(rep.version);
    }
  }
  return PackBody([&](Packer& pk) {
    pk.pack_map(7);
    PackArray(pk, proto::kCodes, codes);
    PackArray(pk, proto::kSizes, sizes);
    PackArray(pk, proto::kCounts, counts);
    PackArray(pk, proto::kHolders, holders);
    PackArray(pk, proto::kDataAddrs, data);
    PackArray(pk, proto::kVersions, versions);
    PackArray(pk, proto::kLost, lost);
  });
}

Result<std::vector<LookupResult>> DecodeLookupReply(const msgpack::object& body, size_t asked) {
  TQDS_ASSIGN_OR_RETURN(auto r, MapReader::Of(body, "MetaLookup reply"));
  TQDS_ASSIGN_OR_RETURN(auto codes, r.Get<std::vector<uint32_t>>(proto::kCodes));
  TQDS_ASSIGN_OR_RETURN(auto sizes, r.Get<std::vector<uint64_t>>(proto::kSizes));
  TQDS_ASSIGN_OR_RETURN(auto counts, r.Get<std::vector<uint32_t>>(proto::kCounts));
  TQDS_ASSIGN_OR_RETURN(auto holders, r.Get<std::vector<std::string>>(proto::kHolders));
  TQDS_ASSIGN_OR_RETURN(auto data, r.Get<std::vector<std::string>>(proto::kDataAddrs));
  TQDS_ASSIGN_OR_RETURN(auto versions, r.Get<std::vector<uint64_t>>(proto::kVersions));
  TQDS_ASSIGN_OR_RETURN(auto lost, r.Get<std::vector<std::string>>(proto::kLost));
  if (codes.size() != asked || sizes.size() != asked || counts.size() != asked || lost.size() != asked) {
    return Status::Invalid("MetaLookup reply: answers for ", codes.size(), " keys where ", asked,
                           " were asked");
  }
  uint64_t replicas = 0;
  for (uint32_t c : counts) replicas += c;
  if (replicas != holders.size() || holders.size() != data.size() || holders.size() != versions.size()) {
    return Status::Invalid("MetaLookup reply: ", replicas, " replicas counted, ", holders.size(), " holders, ",
                           data.size(), " data endpoints and ", versions.size(), " versions");
  }
  std::vector<LookupResult> out(asked);
  size_t pos = 0;
  for (size_t j = 0; j < asked; ++j) {
    const auto code = static_cast<StatusCode>(codes[j]);
    if (code != StatusCode::kOk && code != StatusCode::kNotFound && code != StatusCode::kUnavailable) {
      return Status::Invalid("MetaLookup reply: status code ", codes[j], " for a key");
    }
    LookupResult& lr = out[j];
    lr.code = code;
    lr.size = sizes[j];
    lr.lost = std::move(lost[j]);
    for (uint32_t c = 0; c < counts[j]; ++c, ++pos) {
      lr.live.push_back(Replica{std::move(holders[pos]), 0, std::move(data[pos]), versions[pos]});
    }
  }
  return out;
}

std::string EncodeRemoveReply(const std::vector<std::vector<Replica>>& removed) {
  std::vector<uint32_t> counts;
  std::vector<std::string> holders;
  for (const auto& reps : removed) {
    counts.push_back(static_cast<uint32_t>(reps.size()));
    for (const auto& rep : reps) holders.push_back(rep.holder);
  }
  return PackBody([&](Packer& pk) {
    pk.pack_map(2);
    PackArray(pk, proto::kCounts, counts);
    PackArray(pk, proto::kHolders, holders);
  });
}

Result<std::vector<std::vector<std::string>>> DecodeRemoveReply(const msgpack::object& body, size_t asked) {
  TQDS_ASSIGN_OR_RETURN(auto r, MapReader::Of(body, "MetaRemove reply"));
  TQDS_ASSIGN_OR_RETURN(auto counts, r.Get<std::vector<uint32_t>>(proto::kCounts));
  TQDS_ASSIGN_OR_RETURN(auto holders, r.Get<std::vector<std::string>>(proto::kHolders));
  if (counts.size() != asked) {
    return Status::Invalid("MetaRemove reply: answers for ", counts.size(), " keys where ", asked, " were asked");
  }
  uint64_t total = 0;
  for (uint32_t c : counts) total += c;
  if (total != holders.size()) {
    return Status::Invalid("MetaRemove reply: ", total, " holders counted but ", holders.size(), " sent");
  }
  std::vector<std::vector<std::string>> out(asked);
  size_t pos = 0;
  for (size_t j = 0; j < asked; ++j) {
    for (uint32_t c = 0; c < counts[j]; ++c) out[j].push_back(std::move(holders[pos++]));
  }
  return out;
}

std::string Encode(const Drop& m) {
  return PackBody([&](Packer& pk) {
    pk.pack_map(2);
    PackArray(pk, proto::kKeys, m.keys);
    PackArray(pk, proto::kVersions, m.versions);
  });
}

Result<Drop> DecodeDrop(const msgpack::object& body) {
  TQDS_ASSIGN_OR_RETURN(auto r, MapReader::Of(body, "DropCopies"));
  Drop m;
  TQDS_ASSIGN_OR_RETURN(m.keys, r.Get<std::vector<std::string>>(proto::kKeys));
  TQDS_ASSIGN_OR_RETURN(m.versions, r.GetOr<std::vector<uint64_t>>(proto::kVersions, {}));
  if (!m.versions.empty() && m.versions.size() != m.keys.size()) {
    return Status::Invalid("DropCopies: ", m.keys.size(), " keys but ", m.versions.size(), " versions");
  }
  TQDS_RETURN_NOT_OK(msg::CheckKeys(m.keys, "DropCopies"));
  return m;
}

}  // namespace ds::peer
