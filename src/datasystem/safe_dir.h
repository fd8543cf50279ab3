// Checks on the directories a worker keeps private state in (its Unix socket
// and pid file, its spill files): another local user must not be able to
// own them, swap them for a symbolic link, or replace what is inside them.
// Thread-safe (no state).
#pragma once

#include <string>

#include "tqds/status.h"

namespace ds {

// A directory the worker puts files into (a socket directory, the parent of
// its spill subdirectory): `path` (symbolic links followed, as configured)
// must be a directory owned by the worker's effective user, or by root with
// the sticky bit (as /tmp); and when others may write to it, the sticky bit
// must be set (so no one else can rename or delete the worker's entries).
// `what` names the flag in the error, which says what to do.
tqds::Status CheckSharedDir(const std::string& path, const char* what);

// Opens (creating it 0700 when missing) a directory that only the worker may
// use: `path` itself must not be a symbolic link and must be owned by the
// worker's effective user. Returns an O_DIRECTORY descriptor (the caller
// closes it); files inside are reached relative to it, so a later swap of
// the path does not redirect them.
tqds::Result<int> OpenPrivateDir(const std::string& path, const char* what);

}  // namespace ds
