// Ownership and symbolic-link checks of the worker's directories.
#include "datasystem/safe_dir.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace ds {

using tqds::Status;

tqds::Status CheckSharedDir(const std::string& path, const char* what) {
  struct stat st{};
  if (::stat(path.c_str(), &st) != 0) {
    return Status::IOError("cannot use ", what, " ", path, ": ", std::strerror(errno));
  }
  if (!S_ISDIR(st.st_mode)) return Status::IOError(what, " ", path, " is not a directory");
  const uid_t me = ::geteuid();
  const bool sticky = (st.st_mode & S_ISVTX) != 0;
  if (st.st_uid != me && !(st.st_uid == 0 && sticky)) {
    return Status::IOError(what, " ", path, " is owned by uid ", st.st_uid,
                           ", not by the worker's user (uid ", me,
                           "): another user could replace the worker's files there; use a "
                           "directory of your own");
  }
  if ((st.st_mode & S_IWOTH) != 0 && !sticky) {
    return Status::IOError(what, " ", path,
                           " is writable by every user and has no sticky bit: another user "
                           "could replace the worker's files there; chmod o-w (or +t) it, or "
                           "use a directory of your own");
  }
  return Status::OK();
}

tqds::Result<int> OpenPrivateDir(const std::string& path, const char* what) {
  if (::mkdir(path.c_str(), 0700) != 0 && errno != EEXIST) {
    return Status::IOError("cannot create ", what, " ", path, ": ", std::strerror(errno));
  }
  struct stat st{};
  if (::lstat(path.c_str(), &st) != 0) {
    return Status::IOError("cannot use ", what, " ", path, ": ", std::strerror(errno));
  }
  if (S_ISLNK(st.st_mode)) {
    return Status::IOError(what, " ", path,
                           " is a symbolic link: refusing to follow it (someone may be "
                           "redirecting the worker's files); remove it");
  }
  int fd = ::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) {
    return Status::IOError("cannot open ", what, " ", path, ": ", std::strerror(errno),
                           errno == ELOOP ? " (it is a symbolic link; remove it)" : "");
  }
  // Checked on the descriptor: what was opened is what is checked.
  if (::fstat(fd, &st) != 0 || st.st_uid != ::geteuid()) {
    const unsigned owner = st.st_uid;
    ::close(fd);
    return Status::IOError(what, " ", path, " is owned by uid ", owner,
                           ", not by the worker's user (uid ", ::geteuid(),
                           "): refusing to keep files there; remove it or use another "
                           "directory");
  }
  return fd;
}

}  // namespace ds
