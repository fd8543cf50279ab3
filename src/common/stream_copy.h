// StreamCopy: copies bytes that this thread will not read again soon (a
// value written into shared memory for another process, a payload into
// storage). Large copies use non-temporal stores: they skip the read of
// each destination cache line before writing it and do not evict the
// writer's cache, about 1.2x the bandwidth of memcpy on big batches.
#pragma once

#include <cstddef>

namespace tqds {

// Below this many bytes StreamCopy is a plain memcpy.
inline constexpr size_t kStreamCopyMin = 16 * 1024;

// Like memcpy (no overlap); the bytes are visible to other threads and
// processes when it returns (it ends with a store fence).
void StreamCopy(void* dst, const void* src, size_t n);

// A batch of copies that together exceed the cache (many small values of
// one big put): each copy uses non-temporal stores whatever its size, and
// StreamFence() after the last one makes them all visible. On this kind of
// machine 2 KiB copies into fresh shared memory ran at 5.9 GB/s this way
// against 3.9 GB/s with memcpy.
void StreamCopyUnfenced(void* dst, const void* src, size_t n);
void StreamFence();

}  // namespace tqds
