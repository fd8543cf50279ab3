// What a consumer process of the exactly-once tests reported: "ready" once
// connected, one line "seen UID" per sample it read, "corrupt UID" per
// sample whose bytes were wrong, then "done".
#pragma once

#include <chrono>
#include <cstdint>
#include <set>
#include <sstream>
#include <string>
#include <type_traits>

#include "common/process.h"

namespace tq::testing {

struct Seen {
  std::multiset<int64_t> uids;
  int corrupt = 0;
  bool done = false;
  std::string errors;  // why reading stopped before "done"
};

// Waits for every consumer's "ready": a test starts its producers after it,
// so that no consumer still starting up finds every batch already taken.
// `consumers`: ChildProcess objects or pointers to them.
template <typename Consumers>
tqds::Status WaitUntilReady(Consumers& consumers) {
  for (auto& c : consumers) {
    tqds::ChildProcess* p;
    if constexpr (std::is_pointer_v<std::decay_t<decltype(c)>>) {
      p = c;
    } else {
      p = &c;
    }
    auto line = p->WaitForLine("ready", std::chrono::seconds(60));
    if (!line.ok()) return line.status();
  }
  return tqds::Status::OK();
}

// Reads `p`'s lines until "done", or until no line comes for `quiet`.
inline Seen Collect(tqds::ChildProcess& p, std::chrono::seconds quiet) {
  Seen s;
  while (true) {
    auto line = p.WaitForLine("", quiet);
    if (!line.ok()) {
      s.errors = line.status().ToString();
      break;
    }
    std::istringstream in(*line);
    std::string word;
    int64_t uid = -1;
    in >> word >> uid;
    if (word == "seen") s.uids.insert(uid);
    if (word == "corrupt") ++s.corrupt;
    if (word == "done") {
      s.done = true;
      break;
    }
  }
  return s;
}

}  // namespace tq::testing
