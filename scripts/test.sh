#!/usr/bin/env bash
# Sets up (Debian packages, .venv with the package, the CMake build) and runs
# every test: the C++ suites with ctest, the Python suites with the venv's
# pytest, the C++ suites again under AddressSanitizer + UBSan, and each
# libFuzzer target for a few seconds (scripts/fuzz.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
# The disk this run has (a CI machine once ran out of it in the ASan link).
df -h . | sed 's/^/disk: /'
./scripts/setup.sh

VENV="${VENV:-$PWD/.venv}"
jobs="$(nproc)"
status=0

# Upstream TransferQueue's side of the compatibility check (its own venv,
# .peer-venv, from PyPI; then its run of the scenarios and tutorials, cached)
# goes on in the background while ctest runs; pytest then runs ours.
prime_log="$(mktemp)"
"$VENV/bin/python" python/tests/test_upstream_compat.py --prime-upstream >"$prime_log" 2>&1 &
prime_pid=$!
# openYuanrong datasystem's own wheel (.yr-venv), for the differential tests
# of yr.datasystem, also from PyPI, also in the background.
yr_log="$(mktemp)"
bash scripts/yr_venv.sh >"$yr_log" 2>&1 &
yr_pid=$!

# The AddressSanitizer + UBSan tree compiles in the background at low
# priority from here on: the suites below run first whenever they want the
# CPU, and the compiler takes what they leave idle (waits on processes,
# Ray, the network). Unity batches and line tables only (-g1): reports keep
# file:line, and the tree compiles faster (CI has 2 cores). It is a clang
# tree with libFuzzer's coverage instrumentation (-DTQDS_FUZZ=ON), so the
# same build gives the test suites under ASan+UBSan and the fuzz targets
# (one build instead of two; the targets replay their corpora when fuzzed).
# Its libraries are shared: statically linked, each of its ~40 programs
# carried its own copy of the instrumented libraries (2 GB of the 2.6 GB tree).
asan_log="$(mktemp)"
# A tree of an earlier layout (gcc, no fuzz instrumentation) is made afresh:
# CMake would switch the compiler but forget the options.
if [ -f build-asan/CMakeCache.txt ] && ! grep -q '^TQDS_FUZZ:BOOL=ON' build-asan/CMakeCache.txt; then
  rm -rf build-asan
fi
(
  cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=Debug -DTQDS_SANITIZE=ON -DTQDS_FUZZ=ON -DTQDS_SHARED_LIBS=ON \
    -DCMAKE_C_COMPILER=clang-14 -DCMAKE_CXX_COMPILER=clang++-14 \
    -DTQDS_BUILD_BENCH=OFF -DTQDS_BUILD_PYTHON=OFF \
    -DCMAKE_UNITY_BUILD=ON -DCMAKE_UNITY_BUILD_BATCH_SIZE=16 -DCMAKE_CXX_FLAGS_DEBUG=-g1 >/dev/null &&
    nice -n 15 cmake --build build-asan -j"$jobs"
) >"$asan_log" 2>&1 &
asan_pid=$!
# Every command of the trap may fail (nothing left to kill): under set -e a
# failing one would turn the run's exit status into 1.
trap 'pkill -P "$asan_pid" 2>/dev/null || true; kill "$prime_pid" "$yr_pid" "$asan_pid" 2>/dev/null || true' EXIT

echo "== ctest (RelWithDebInfo) =="
ctest --test-dir build --output-on-failure -j"$jobs" --timeout 300 || status=1

echo "== upstream's side of the compatibility check =="
wait "$prime_pid" || true
cat "$prime_log"
wait "$yr_pid" || true
cat "$yr_log"
# The three venvs hold many identical files (torch 2.13.0, numpy, ray's
# dependencies, from the same wheels): they become hard links to one copy
# (util-linux's hardlink, contents compared byte by byte), about 850 MB less
# disk. pip replaces files rather than writing into them, so no venv can
# change another's files. Python sources are left apart: a linked .py has
# one mtime, and the other venv's .pyc files (which record its own install
# time) would then be stale, so every import compiled from source
# (PYTHONDONTWRITEBYTECODE is set here): a tutorial test took 19 s instead
# of 9.
venv_dirs=()
for d in "$VENV/lib" .peer-venv/lib .yr-venv; do [ -d "$d" ] && venv_dirs+=("$d"); done
if command -v hardlink >/dev/null && [ "${#venv_dirs[@]}" -gt 1 ]; then
  hardlink -c -x '\.py$' "${venv_dirs[@]}" 2>&1 | grep -E '^(Linked|Saved):' | sed 's/^/venv files: /' || true
fi

echo "== pytest =="
rc=0
# The installed package and its console scripts (tq, dscli, ray) come first.
# Two pytest-xdist workers, a module each at a time (--dist loadfile: a
# module's fixtures are made once): most suites wait on processes they start
# (Ray, workers, controllers) rather than compute.
PATH="$VENV/bin:$PATH" TQDS_TEST_INSTALLED=1 "$VENV/bin/python" -m pytest -q -rs \
  -n "${PYTEST_WORKERS:-2}" --dist loadfile python/tests || rc=$?
# pytest exits 5 when it collected no test: that is a failure here too.
[ "$rc" -eq 0 ] || status=1

echo "== ctest (AddressSanitizer + UBSan) =="
asan_built=0
if wait "$asan_pid"; then
  asan_built=1
  tail -n 3 "$asan_log"
else
  cat "$asan_log"
  df -h . | sed 's/^/disk: /'
  echo "the AddressSanitizer build failed"
  status=1
fi
if [ "$asan_built" = 1 ]; then
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    ctest --test-dir build-asan --output-on-failure -j"$jobs" --timeout 600 || status=1
fi

df -h . | sed 's/^/disk: /'
echo "== fuzz (every target briefly, from its seed corpus) =="
if [ "$asan_built" = 1 ]; then
  FUZZ_BUILD_DIR=build-asan FUZZ_SECONDS="${FUZZ_SECONDS:-5}" ./scripts/fuzz.sh || status=1
fi

exit "$status"
