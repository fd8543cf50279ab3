#!/usr/bin/env bash
# Makes the venv of openYuanrong datasystem's own wheel, for the
# differential tests of yr.datasystem (python/tests/test_yr_differential.py)
# and upstream TransferQueue 0.1.11's Yuanrong storage client next to it
# (python/tests/test_yr_datasystem.py, yr_upstream_tq_client.py):
#   scripts/yr_venv.sh [DIR]        # default: <repo>/.yr-venv
# DIR gets openyuanrong-datasystem==0.8.1 (never one of our dependencies);
# DIR/upstream-tq gets TransferQueue 0.1.11's package and the two modules its
# storage client imports (pip --target, no dependencies). Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."

DIR="${1:-$PWD/.yr-venv}"
PYTHON="${PYTHON:-$(command -v python3.11 || command -v python3)}"
YR_VERSION="0.8.1"
TQ_VERSION="0.1.11"

if ! "$DIR/bin/python" -c "from importlib.metadata import version; assert version('openyuanrong-datasystem') == '$YR_VERSION'" 2>/dev/null; then
  [ -x "$DIR/bin/python" ] || "$PYTHON" -m venv "$DIR"
  echo "yr_venv: pip install openyuanrong-datasystem==$YR_VERSION into $DIR" >&2
  "$DIR/bin/python" -m pip --disable-pip-version-check -q install "openyuanrong-datasystem==$YR_VERSION"
fi
if [ ! -f "$DIR/upstream-tq/transfer_queue/storage/clients/yuanrong_client.py" ]; then
  echo "yr_venv: TransferQueue==$TQ_VERSION (its storage client) into $DIR/upstream-tq" >&2
  "$DIR/bin/python" -m pip --disable-pip-version-check -q install --no-deps --target "$DIR/upstream-tq" \
    "TransferQueue==$TQ_VERSION" msgspec pyzmq
fi
echo "yr_venv: $DIR ready" >&2
