#!/usr/bin/env bash
# Fuzzes every decoder target in fuzz/ with libFuzzer (clang + AddressSanitizer
# + UBSan), starting from the seed corpus in fuzz/corpus/<target>/.
#   scripts/fuzz.sh [RUNS_PER_TARGET] [TARGET...]   (default 1500000 each, every target)
# Installs Debian's clang-14, libclang-rt-14-dev and libfuzzer-14-dev when missing, builds into
# build-fuzz/, and runs each target for RUNS executions on a scratch copy of
# its corpus (the repository's corpus is not changed; new inputs stay in
# build-fuzz/corpus/). Prints one line per target and the total; exits 1 on
# the first finding (libFuzzer writes the input as build-fuzz/crash-*).
# FUZZ_SECONDS=N runs each target for N seconds instead of RUNS executions
# (the test command: every target briefly); FUZZ_BUILD_ONLY=1 only builds.
# FUZZ_BUILD_DIR=DIR uses the targets of a tree configured already with
# clang and -DTQDS_FUZZ=ON (the test command's AddressSanitizer tree, which
# builds them beside the test suites), instead of configuring build-fuzz/.
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-1500000}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
if ! command -v clang++-14 >/dev/null || [ ! -e /usr/lib/llvm-14/lib/clang/14.0.6/lib/linux/libclang_rt.fuzzer-x86_64.a ]; then
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends clang-14 libclang-rt-14-dev libfuzzer-14-dev >/dev/null
fi
shift || true
# The targets: those named, or every one fuzz/CMakeLists.txt lists.
if [ "$#" -gt 0 ]; then
  targets=("$@")
else
  read -r -a targets <<<"$(sed -n '/^set(TQDS_FUZZ_TARGETS/,/)/p' fuzz/CMakeLists.txt |
                           sed 's/set(TQDS_FUZZ_TARGETS//; s/)//' | tr '\n' ' ')"
fi
dir="${FUZZ_BUILD_DIR:-build-fuzz}"
if [ -z "${FUZZ_BUILD_DIR:-}" ]; then
  # Unity batches and line tables only, as the ASan tree.
  CC=clang-14 CXX=clang++-14 cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DTQDS_FUZZ=ON \
    -DTQDS_BUILD_TESTS=OFF -DTQDS_BUILD_BENCH=OFF -DTQDS_BUILD_PYTHON=OFF -DTQDS_INSTALL_DEV=OFF \
    -DCMAKE_UNITY_BUILD=ON -DCMAKE_UNITY_BUILD_BATCH_SIZE=16 -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g1" >/dev/null
elif ! grep -q '^TQDS_FUZZ:BOOL=ON' "$dir/CMakeCache.txt" 2>/dev/null; then
  echo "fuzz.sh: $dir is not a tree configured with -DTQDS_FUZZ=ON" >&2
  exit 2
fi
cmake --build "$dir" -j"$(nproc)" --target "${targets[@]/#/fuzz_}"
if [ "${FUZZ_BUILD_ONLY:-0}" = 1 ]; then exit 0; fi
limit=(-runs="$runs")
if [ -n "${FUZZ_SECONDS:-}" ]; then limit=(-runs=-1 -max_total_time="$FUZZ_SECONDS"); fi
total=0
printf '%-24s %12s %8s %10s\n' target executions seconds corpus
seeds="$PWD/fuzz/corpus"
for t in "${targets[@]}"; do
  work="$dir/corpus/$t"
  mkdir -p "$work"
  log="$dir/$t.log"
  # The scratch corpus first (where new inputs go), then the seeds.
  if ! (cd "$dir" && "./fuzz/fuzz_$t" "${limit[@]}" -max_len=65536 -print_final_stats=1 \
          "corpus/$t" "$seeds/$t" >"$t.log" 2>&1); then
    tail -n 40 "$log"
    echo "fuzz.sh: target $t found a crash (input in $dir/crash-*)" >&2
    exit 1
  fi
  n=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
  s=$(sed -n 's/^Done [0-9]* runs in \([0-9]*\) second.*/\1/p' "$log" | tail -n 1)
  [ -n "$s" ] || s="${FUZZ_SECONDS:-?}"
  c=$(find "$work" -type f | wc -l)
  printf '%-24s %12s %8s %10s\n' "$t" "$n" "${s:-?}" "$c"
  total=$((total + n))
done
echo "total executions: $total, no finding"
