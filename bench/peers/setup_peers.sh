#!/usr/bin/env bash
# Makes the peers' virtual environment for bench/peers/peer_bench.py:
# upstream TransferQueue 0.1.11 from PyPI with its `yuanrong` and `mooncake`
# extras, Ray, and what they need, pinned. None of it is a dependency of our
# package; the venv is gitignored.
#   bench/peers/setup_peers.sh [DIR]     # default: <repo>/.bench-peers-venv
# What installed (pip freeze) goes to bench/peers/peer-venv-freeze.txt, and
# each step's outcome (ok / FAILED: last lines of its log) to
# bench/peers/peer-venv-install.txt. A step that fails is recorded and the
# script goes on: peer_bench.py then shows the import error in that system's
# cells.
#
# Steps, in this order:
# 1. torch 2.13.0 first (the CPU build; any other torch a dependency asked for
#    could be a multi-GB CUDA build).
# 2. TransferQueue[yuanrong,mooncake]==0.1.11 with ray[default]==2.60.0: the
#    extras bring openyuanrong-datasystem (the real worker, `dscli`) and
#    mooncake-transfer-engine (its CUDA build) with cuda-python.
# 3. The CUDA build of Mooncake does not load here (no libcudart); it is
#    replaced by the same release's non-CUDA wheel,
#    mooncake-transfer-engine-non-cuda (TCP transport). Both wheels link
#    libibverbs/librdmacm even for TCP: Debian's libibverbs1 and librdmacm1.
# 4. netifaces: upstream's Yuanrong bootstrap (utils/yuanrong_utils.py) imports
#    it to find this node's addresses but does not declare it; without it a
#    node knows only 127.0.0.1 and a cluster of two nodes cannot start
#    ("Cannot determine local node IP").
# 5. matplotlib, only for the chart.
set -uo pipefail
cd "$(dirname "$0")/../.."

DIR="${1:-$PWD/.bench-peers-venv}"
PYTHON="${PYTHON:-$(command -v python3.11 || command -v python3)}"
TORCH="torch==2.13.0"
TQ="TransferQueue[yuanrong,mooncake]==0.1.11"
RAY="ray[default]==2.60.0"
MOONCAKE="mooncake-transfer-engine-non-cuda==0.3.13.post1"
MPL="matplotlib==3.10.8"
NETIFACES="netifaces==0.11.0"
OUT=bench/peers
REPORT="$OUT/peer-venv-install.txt"
LOG="$(mktemp -d)"
: > "$REPORT"

step() {  # step NAME CMD...: runs CMD, records ok or FAILED with the tail of its output
  local name="$1"; shift
  echo "setup_peers: $name" >&2
  if "$@" > "$LOG/$name.log" 2>&1; then
    echo "ok      $name: $*" >> "$REPORT"
  else
    { echo "FAILED  $name: $*"; grep -v '^WARNING: Location' "$LOG/$name.log" | tail -5 | sed 's/^/        /'; } >> "$REPORT"
  fi
}

[ -x "$DIR/bin/python" ] || step venv "$PYTHON" -m venv "$DIR"
PIP=("$DIR/bin/python" -m pip --disable-pip-version-check)
step torch "${PIP[@]}" install "$TORCH"
step transferqueue "${PIP[@]}" install "$TORCH" "$TQ" "$RAY"
if ! "$DIR/bin/python" -c 'import mooncake.store' 2>/dev/null; then
  step mooncake-cuda-import "$DIR/bin/python" -c 'import mooncake.store'
  step mooncake-uninstall-cuda "${PIP[@]}" uninstall -y mooncake-transfer-engine
  # --force-reinstall: both wheels own the same `mooncake` files, so
  # removing the CUDA one also removes those of an earlier non-CUDA install.
  step mooncake-non-cuda "${PIP[@]}" install --force-reinstall --no-deps "$MOONCAKE"
  if ! "$DIR/bin/python" -c 'import mooncake.store' 2>/dev/null; then
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
    step apt-libibverbs sh -c "$SUDO apt-get install -y -q libibverbs1 librdmacm1 || { $SUDO apt-get update -q && $SUDO apt-get install -y -q libibverbs1 librdmacm1; }"
  fi
fi
step mooncake-import "$DIR/bin/python" -c 'import mooncake.store'
step yuanrong-import "$DIR/bin/python" -c 'import yr.datasystem'
step transferqueue-import "$DIR/bin/python" -c 'import transfer_queue, ray, tensordict'
step netifaces "${PIP[@]}" install "$NETIFACES"
step matplotlib "${PIP[@]}" install "$MPL"
"${PIP[@]}" freeze > "$OUT/peer-venv-freeze.txt" 2>/dev/null
rm -rf "$LOG"
cat "$REPORT"
