#!/usr/bin/env bash
# Sets up (Debian packages, .venv with the package, the CMake build) and runs
# the main job: `tq demo`, which starts a controller and two storage units on
# localhost and streams a rollout pipeline through them, checking every
# sample's bytes.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
VENV="${VENV:-$PWD/.venv}"
exec "$VENV/bin/tq" demo "$@"
