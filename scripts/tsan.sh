#!/usr/bin/env bash
# Builds the C++ tree with ThreadSanitizer (-DTQDS_TSAN=ON, into build-tsan/)
# and runs every ctest suite under it; a data race fails its test. The only
# suppressions (scripts/tsan.supp) are for libzmq, which is not
# instrumented. Run ./scripts/setup.sh first (Debian packages).
#   scripts/tsan.sh [ctest arguments...]     e.g. scripts/tsan.sh -L datasystem
set -euo pipefail
cd "$(dirname "$0")/.."
cmake -S . -B build-tsan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DTQDS_TSAN=ON \
  -DTQDS_BUILD_BENCH=OFF -DTQDS_BUILD_PYTHON=OFF -DCMAKE_UNITY_BUILD=ON -DCMAKE_UNITY_BUILD_BATCH_SIZE=16 \
  -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g1" >/dev/null
cmake --build build-tsan -j"$(nproc)"
# Processes the tests start (workers, controllers, dscli) inherit these.
export TSAN_OPTIONS="suppressions=$PWD/scripts/tsan.supp second_deadlock_stack=1 history_size=4 ${TSAN_OPTIONS:-}"
ctest --test-dir build-tsan --output-on-failure -j"$(nproc)" --timeout 900 "$@"
