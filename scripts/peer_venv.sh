#!/usr/bin/env bash
# Makes the "peer" virtual environment that holds upstream TransferQueue
# 0.1.11 from PyPI, for the compatibility scenarios (python/tests/compat,
# driven by python/tests/test_upstream_compat.py):
#   scripts/peer_venv.sh [DIR]        # default: <repo>/.peer-venv
# It installs torch 2.13.0 (the CPU build), TransferQueue==0.1.11 (which
# brings ray, tensordict, omegaconf) and pytest. Idempotent: a venv that
# already imports all three at those versions is left as it is.
# Upstream's wheel ships its tutorial scripts as a top-level `tutorial`
# directory in site-packages; the last line printed is that directory.
set -euo pipefail
cd "$(dirname "$0")/.."

DIR="${1:-$PWD/.peer-venv}"
PYTHON="${PYTHON:-$(command -v python3.11 || command -v python3)}"
TQ_VERSION="0.1.11"
TORCH_VERSION="2.13.0"

check() {
  "$DIR/bin/python" - "$TQ_VERSION" "$TORCH_VERSION" <<'PY' 2>/dev/null
import sys
from importlib.metadata import version
import pytest  # noqa: F401
assert version("TransferQueue") == sys.argv[1], version("TransferQueue")
assert version("torch").split("+")[0] == sys.argv[2], version("torch")
PY
}

if [ -x "$DIR/bin/python" ] && check; then
  echo "peer_venv: $DIR already holds TransferQueue $TQ_VERSION" >&2
else
  if [ ! -x "$DIR/bin/python" ]; then
    echo "peer_venv: creating $DIR with $PYTHON" >&2
    "$PYTHON" -m venv "$DIR"
  fi
  PIP=("$DIR/bin/python" -m pip --disable-pip-version-check -q)
  # torch first and pinned in the same resolve: 2.13.0 is the CPU build;
  # anything else a dependency asked for could be a multi-GB CUDA build.
  echo "peer_venv: pip install torch==$TORCH_VERSION" >&2
  "${PIP[@]}" install "torch==$TORCH_VERSION"
  echo "peer_venv: pip install TransferQueue==$TQ_VERSION pytest" >&2
  "${PIP[@]}" install "torch==$TORCH_VERSION" "TransferQueue==$TQ_VERSION" pytest
  check || { echo "peer_venv: $DIR does not import TransferQueue $TQ_VERSION, torch $TORCH_VERSION and pytest" >&2; exit 1; }
fi

"$DIR/bin/python" -c 'import os, sysconfig; print(os.path.join(sysconfig.get_paths()["purelib"], "tutorial"))'
