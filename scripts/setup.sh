#!/usr/bin/env bash
# Installs what the project needs and builds it; idempotent; run as root or
# with sudo for apt-get:
#   1. Debian packages: the C++ toolchain and libraries, and the services the
#      tests and benchmarks start (etcd, redis, iperf3, iproute2); clang for
#      the libFuzzer targets (scripts/fuzz.sh).
#   2. A virtual environment (.venv, or $VENV) with torch 2.13.0 (CPU) and the
#      package itself, `pip install .[test,ray]`, which builds the extension
#      and the tq / dscli / datasystem_worker programs with scikit-build-core.
#   3. The same CMake build tree, build/, with the C++ tests and benchmarks.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

PACKAGES=(
  build-essential cmake ninja-build pkg-config git
  libzmq3-dev libsodium-dev cppzmq-dev libmsgpack-cxx-dev libspdlog-dev libfmt-dev libcli11-dev
  nlohmann-json3-dev libgtest-dev libgmock-dev libbenchmark-dev
  libcurl4-openssl-dev libcpp-httplib-dev prometheus-cpp-dev zlib1g-dev libabsl-dev
  etcd-server etcd-client redis-server redis-tools iperf3 iproute2 procps curl
  python3-dev python3-venv
  clang-14 libclang-rt-14-dev libfuzzer-14-dev
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# Debian starts services from packages; the project starts its own on demand.
for svc in redis-server etcd; do
  if command -v systemctl >/dev/null 2>&1; then $SUDO systemctl stop "$svc" >/dev/null 2>&1 || true; fi
done

# --- the virtual environment and the package ---------------------------------
VENV="${VENV:-$PWD/.venv}"
PYTHON="${PYTHON:-$(command -v python3.11 || command -v python3)}"
if [ ! -x "$VENV/bin/python" ]; then
  echo "setup: creating $VENV with $PYTHON"
  "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check -q)
# One build tree for everything: pip builds the package in build/ with the
# tests and benchmarks on (scripts/pip-dev-args; no build isolation, so the
# tree keeps pointing at this venv's pybind11), and cmake then builds the rest
# of that same tree, instead of compiling the libraries twice.
"${PIP[@]}" install "scikit-build-core>=0.10" "pybind11>=2.12"
mapfile -t DEV_ARGS < scripts/pip-dev-args
# torch pinned in the same resolve: 2.13.0 is the CPU build this kind of
# machine keeps on disk; any other release a dependency might ask for is a
# multi-GB CUDA build from PyPI.
echo "setup: pip install torch==2.13.0 .[test,ray] (builds the extension and programs in build/)"
"${PIP[@]}" install "${DEV_ARGS[@]}" torch==2.13.0 ".[test,ray]"

# --- the rest of the C++ build tree (tests, benchmarks) ----------------------
cmake --build build -j"$(nproc)"
echo "setup: built; the programs are in $VENV/bin (source $VENV/bin/activate)"
