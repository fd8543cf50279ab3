// An annotated mutex for the metastore: Clang's thread-safety attributes
// (checked with -Wthread-safety under clang; no-ops under GCC) on a
// std::mutex, a scoped lock, and condition waits that keep the annotations
// honest. The project has no shared thread_annotations header yet; when one
// lands (src/common), this file should fold into it.
#pragma once

#include <chrono>
#include <condition_variable>
#include <mutex>

#if defined(__clang__)
#define MS_THREAD_ANNOTATION(x) __attribute__((x))
#else
#define MS_THREAD_ANNOTATION(x)
#endif

#define MS_CAPABILITY(x) MS_THREAD_ANNOTATION(capability(x))
#define MS_SCOPED_CAPABILITY MS_THREAD_ANNOTATION(scoped_lockable)
#define MS_GUARDED_BY(x) MS_THREAD_ANNOTATION(guarded_by(x))
#define MS_REQUIRES(...) MS_THREAD_ANNOTATION(requires_capability(__VA_ARGS__))
#define MS_EXCLUDES(...) MS_THREAD_ANNOTATION(locks_excluded(__VA_ARGS__))
#define MS_ACQUIRE(...) MS_THREAD_ANNOTATION(acquire_capability(__VA_ARGS__))
#define MS_RELEASE(...) MS_THREAD_ANNOTATION(release_capability(__VA_ARGS__))

namespace ds::cluster::metastore {

class MS_CAPABILITY("mutex") Mutex {
 public:
  void Lock() MS_ACQUIRE() { mu_.lock(); }
  void Unlock() MS_RELEASE() { mu_.unlock(); }

  // Waits on `cv` with this mutex held (as the caller must) until notified
  // or `deadline`; the mutex is held again on return. False on timeout.
  // Spurious wake-ups happen: callers re-check their condition in a loop.
  bool WaitUntil(std::condition_variable& cv, std::chrono::steady_clock::time_point deadline)
      MS_REQUIRES(this) {
    std::unique_lock<std::mutex> lock(mu_, std::adopt_lock);
    bool notified = cv.wait_until(lock, deadline) == std::cv_status::no_timeout;
    lock.release();  // still held; ownership stays with the caller
    return notified;
  }

 private:
  std::mutex mu_;
};

class MS_SCOPED_CAPABILITY MutexLock {
 public:
  explicit MutexLock(Mutex* mu) MS_ACQUIRE(mu) : mu_(mu) { mu_->Lock(); }
  ~MutexLock() MS_RELEASE() { mu_->Unlock(); }
  MutexLock(const MutexLock&) = delete;
  MutexLock& operator=(const MutexLock&) = delete;

 private:
  Mutex* const mu_;
};

}  // namespace ds::cluster::metastore
