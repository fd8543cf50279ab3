"""The client's glibc malloc thresholds (docs/architecture.md): a process
that made a client keeps a put's few-MiB blocks mapped between calls, so
the next call does not fault them in again; TQDS_MALLOC_TUNING=0 or a
glibc MALLOC_*_ variable of the user's leaves malloc as it is.

Each case runs in a fresh interpreter (the thresholds are per process)."""

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc")

# Three blocks of 4 MiB written and freed, as a 16384-sample call does with
# its metas and buffers; minor page faults per round after three rounds.
PROBE = r"""
import ctypes, json, resource
from transfer_queue import TransferQueueClient
import _tqds

TransferQueueClient("probe", "tcp://127.0.0.1:9")  # connects lazily: nothing is sent
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
sizes = [4 << 20] * 3

def round_trip():
    blocks = [libc.malloc(n) for n in sizes]
    for b, n in zip(blocks, sizes):
        ctypes.memset(b, 1, n)
    for b in blocks:
        libc.free(b)

for _ in range(3):
    round_trip()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    round_trip()
faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 10
print(json.dumps({"outcome": _tqds.tune_malloc(), "faults": faults}))
"""


def probe(**env):
    full = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "TQDS_MALLOC_TUNING"}
    full.update(env)
    proc = subprocess.run([sys.executable, "-c", PROBE], env=full, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_a_client_keeps_big_blocks_mapped_between_calls():
    tuned = probe()
    assert tuned["outcome"].startswith("on: M_MMAP_THRESHOLD=33554432 M_TRIM_THRESHOLD=67108864"), tuned
    # 12 MiB written a round: 3072 pages when they are fresh each time.
    assert tuned["faults"] < 100, tuned
    untuned = probe(TQDS_MALLOC_TUNING="0")
    assert untuned["outcome"] == "off: TQDS_MALLOC_TUNING=0", untuned
    # The same rounds without the thresholds fault the blocks in again (what
    # this test would miss if its probe saw no difference).
    assert untuned["faults"] > 1000, untuned


@pytest.mark.parametrize("var", ["MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TOP_PAD_"])
def test_a_users_own_malloc_setting_is_left_alone(var):
    got = probe(**{var: str(8 << 20)})
    assert got["outcome"] == f"off: {var} is set", got
