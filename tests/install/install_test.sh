#!/usr/bin/env bash
# The installed C++ package end to end: `cmake --install` this build into a
# temporary prefix, configure and build tests/install/consumer against it
# with find_package(tqds), and run the program against a `tq controller` and
# a `datasystem_worker` started from the prefix's bin/. Every process it starts is
# killed by pid on exit, failure included; everything listens on 127.0.0.1.
# Run by ctest (tests/install/CMakeLists.txt passes the arguments):
#   install_test.sh --build-dir B --config C --consumer DIR --cmake CMAKE
#                   --generator G --cxx CXX [--forbid PATH]...
set -euo pipefail

BUILD_DIR="" CONFIG="" CONSUMER="" CMAKE=cmake GENERATOR="" CXX_COMPILER=""
FORBID=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --build-dir) BUILD_DIR="$2" ;;
    --config) CONFIG="$2" ;;
    --consumer) CONSUMER="$2" ;;
    --cmake) CMAKE="$2" ;;
    --generator) GENERATOR="$2" ;;
    --cxx) CXX_COMPILER="$2" ;;
    --forbid) FORBID+=("$2") ;;
    *) echo "install_test: unknown argument $1" >&2; exit 2 ;;
  esac
  shift 2
done
[[ -n "$BUILD_DIR" && -n "$CONSUMER" ]] || { echo "install_test: --build-dir and --consumer are required" >&2; exit 2; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/tqds-install-test.XXXXXX")
PREFIX="$WORK/prefix"
PIDS=()

stop_pid() {  # SIGTERM, then SIGKILL after 5 s; reaps the child
  local pid=$1
  kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return; }
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 50); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}
cleanup() {
  local rc=$?
  for pid in "${PIDS[@]}"; do stop_pid "$pid"; done
  if [[ $rc -ne 0 ]]; then
    for log in "$WORK"/*.log; do
      [[ -f "$log" ]] || continue
      echo "---- $(basename "$log") (last lines)"
      tail -n 40 "$log"
    done
  fi
  rm -rf "$WORK"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

fail() { echo "FAIL: $*" >&2; exit 1; }
step() { echo "== $*"; }

# Waits up to $3 seconds for a line matching regex $2 in file $1 while pid $4
# lives; prints the first match.
wait_for_line() {
  local file=$1 regex=$2 timeout=$3 pid=$4 line
  for _ in $(seq $((timeout * 10))); do
    line=$(grep -m1 -E "$regex" "$file" 2>/dev/null || true)
    if [[ -n "$line" ]]; then echo "$line"; return 0; fi
    kill -0 "$pid" 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}

step "install $BUILD_DIR into $PREFIX"
install_args=(--install "$BUILD_DIR" --prefix "$PREFIX")
[[ -n "$CONFIG" ]] && install_args+=(--config "$CONFIG")
"$CMAKE" "${install_args[@]}" >"$WORK/install.log" 2>&1 || fail "cmake --install failed"
for f in include/tq/client.h include/ds/kv_client.h include/tqds/status.h \
         lib/cmake/tqds/tqdsConfig.cmake lib/cmake/tqds/tqdsConfigVersion.cmake \
         lib/cmake/tqds/tqdsTargets.cmake bin/tq; do
  [[ -e "$PREFIX/$f" ]] || fail "the install has no $f"
done
# The package must not point back into the source or build tree.
for path in "${FORBID[@]}"; do
  if grep -rlF "$path" "$PREFIX/lib/cmake" "$PREFIX/include"; then
    fail "installed files above refer to $path"
  fi
done
# Only the public headers are installed.
if find "$PREFIX/include" -type f ! -path "$PREFIX/include/tq/*" ! -path "$PREFIX/include/ds/*" \
     ! -path "$PREFIX/include/tqds/*" | grep .; then
  fail "unexpected files under include/ (above)"
fi

step "configure and build the consumer against the prefix"
configure_args=(-S "$CONSUMER" -B "$WORK/consumer-build"
                -DCMAKE_PREFIX_PATH="$PREFIX"
                -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF
                -DCMAKE_FIND_PACKAGE_NO_SYSTEM_PACKAGE_REGISTRY=ON)
[[ -n "$GENERATOR" ]] && configure_args+=(-G "$GENERATOR")
[[ -n "$CONFIG" ]] && configure_args+=(-DCMAKE_BUILD_TYPE="$CONFIG")
[[ -n "$CXX_COMPILER" ]] && configure_args+=(-DCMAKE_CXX_COMPILER="$CXX_COMPILER")
"$CMAKE" "${configure_args[@]}" >"$WORK/consumer-configure.log" 2>&1 ||
  fail "configuring the consumer failed"
found=$(grep -m1 -E '^-- tqds .* from ' "$WORK/consumer-configure.log" || true)
echo "$found"
[[ "$found" == *" from $PREFIX/"* ]] || fail "find_package(tqds) did not use the test prefix"
"$CMAKE" --build "$WORK/consumer-build" --parallel 2 >"$WORK/consumer-build.log" 2>&1 ||
  fail "building the consumer failed"
CONSUMER_BIN="$WORK/consumer-build/tqds_consumer"
[[ -x "$CONSUMER_BIN" || -z "$CONFIG" ]] || CONSUMER_BIN="$WORK/consumer-build/$CONFIG/tqds_consumer"  # multi-config
[[ -x "$CONSUMER_BIN" ]] || fail "no $CONSUMER_BIN"

step "start tq controller"
"$PREFIX/bin/tq" controller --host 127.0.0.1 --port 0 --storage-units 1 --unit-capacity-mb 64 \
  >"$WORK/tq.log" 2>&1 &
PIDS+=($!)
line=$(wait_for_line "$WORK/tq.log" 'controller listening on tcp://127\.0\.0\.1:[0-9]+' 30 "${PIDS[-1]}") ||
  fail "tq controller did not start"
CONTROLLER=$(grep -oE 'tcp://127\.0\.0\.1:[0-9]+' <<<"$line")
echo "controller at $CONTROLLER"
consumer_args=(--controller "$CONTROLLER")

if [[ -x "$PREFIX/bin/datasystem_worker" ]]; then
  step "start datasystem_worker"
  mkdir -p "$WORK/ds"
  WORKER=""
  # The worker needs a concrete port: try a few unprivileged ones below the
  # ephemeral range, each fresh from $RANDOM.
  for attempt in 1 2 3 4 5; do
    port=$((20000 + RANDOM % 12000))
    log="$WORK/datasystem_worker.$attempt.log"
    "$PREFIX/bin/datasystem_worker" --worker_address "127.0.0.1:$port" --shared_memory_size_mb 64 \
      --unix_socket_dir "$WORK/ds" --log_dir "$WORK/ds" --no_populate_memory >"$log" 2>&1 &
    PIDS+=($!)
    if wait_for_line "$log" '^READY [0-9]+' 30 "${PIDS[-1]}" >/dev/null; then
      WORKER="127.0.0.1:$port"
      break
    fi
    stop_pid "${PIDS[-1]}"
    unset 'PIDS[-1]'
    echo "datasystem_worker on port $port did not start: $(tail -n 1 "$log")"
  done
  [[ -n "$WORKER" ]] || fail "datasystem_worker did not start"
  echo "datasystem_worker at $WORKER"
  consumer_args+=(--worker "$WORKER")
else
  echo "(no datasystem_worker installed: the datasystem part is skipped)"
fi

step "run the consumer"
timeout 120 "$CONSUMER_BIN" "${consumer_args[@]}"
echo "PASS: installed package builds and runs"
