"""Hostile input against the TransferQueue controller and storage units
(issue 15, findings 5, 6 and 8), through the Python binding and the `tq`
binary: absurd get_meta timeouts, oversized allocations, a registered unit
that dies, and ipc socket files left behind by stopped units.

Every process started here is killed by pid, also when a test fails.
"""

from __future__ import annotations

import math
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import _tqds
from conftest import kill_pid, unique


def put(client, partition, values):
    arr = np.ascontiguousarray(values, dtype=np.int64)
    return client.put(len(arr), [("dense", "x", arr, "int64", list(arr.shape))], partition_id=partition)


@pytest.fixture
def controller():
    ctl = _tqds.Controller(storage_units=1, unit_capacity_mb=64)
    yield ctl
    ctl.stop()


def new_client(address):
    c = _tqds.Client(unique("hostile"), address)
    c.initialize_storage_manager("SimpleStorageManager", "{}")
    return c


# --------------------------------------------------------------------------- finding 8: timeouts

@pytest.mark.parametrize("bad", [math.nan, -1.0, -math.inf])
def test_get_meta_timeout_nan_or_negative_is_invalid(controller, bad):
    client = new_client(controller.address)
    with pytest.raises(_tqds.InvalidArgumentError, match="timeout"):
        client.get_meta(["x"], 1, unique(), "t", None, "fetch", bad)


@pytest.mark.parametrize("huge", [math.inf, 1e300, 1e18])
def test_get_meta_with_an_unbounded_timeout_waits_for_data(controller, huge):
    """It used to time out at once, reporting "-9223372036854775808 ms"."""
    client = new_client(controller.address)
    p = unique()
    result = {}

    def fetch():
        try:
            result["meta"] = client.get_meta(["x"], 2, p, "t", None, "fetch", huge)
        except Exception as e:  # noqa: BLE001 - reported below
            result["error"] = e

    t = threading.Thread(target=fetch, daemon=True)
    t.start()
    t.join(0.3)
    assert t.is_alive(), f"get_meta returned at once: {result}"
    put(client, p, [1, 2])
    t.join(30)
    assert not t.is_alive()
    assert "error" not in result, result.get("error")
    assert len(result["meta"]) == 2


# --------------------------------------------------------------------------- finding 6: allocation limits

def test_allocation_limits_name_the_limit_and_the_partition():
    ctl = _tqds.Controller(storage_units=1, unit_capacity_mb=64, max_allocate_per_request=10,
                           max_samples_per_partition=20, max_samples_total=30)
    try:
        client = new_client(ctl.address)
        with pytest.raises(_tqds.InvalidArgumentError, match="max_allocate_per_request"):
            client.allocate("p", 11)
        client.allocate("p", 10)
        client.allocate("p", 10)
        with pytest.raises(_tqds.OutOfSpaceError, match="partition 'p'.*max_samples_per_partition"):
            client.allocate("p", 1)
        client.allocate("q", 10)
        with pytest.raises(_tqds.OutOfSpaceError, match="max_samples_total"):
            client.allocate("r", 1)
        client.clear_partition("p")
        client.allocate("r", 10)
    finally:
        ctl.stop()


def test_a_huge_allocate_is_refused_at_once(controller):
    client = new_client(controller.address)
    start = time.monotonic()
    with pytest.raises(_tqds.OutOfSpaceError, match="max_samples_per_partition"):
        client.allocate("p", 1 << 40)
    assert time.monotonic() - start < 60
    assert client.get_production_status("p")["num_samples"] == 0, "a refused allocate leaves nothing"


# --------------------------------------------------------------------------- processes

def _start(args, env=None):
    """Starts `tq ...` and returns (proc, the endpoints it printed)."""
    proc = subprocess.Popen([shutil.which("tq"), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)
    return proc


def _wait_lines(proc, n, timeout=30.0):
    """The first `n` 'listening on' lines of proc's stdout (its readiness)."""
    lines = []
    deadline = time.monotonic() + timeout
    while len(lines) < n:
        assert time.monotonic() < deadline, f"tq printed only {lines}"
        line = proc.stdout.readline()
        assert line, f"tq exited early ({proc.poll()}): {proc.stderr.read()}"
        if "listening on" in line:
            lines.append(line.split()[-1])
    return lines


def _sockets(directory):
    return sorted(p.name for p in Path(directory).glob("tq-unit-*.sock"))


@pytest.mark.parametrize("args,units", [(["storage-unit", "--capacity-mb", "16"], 1),
                                        (["controller", "--storage-units", "2", "--unit-capacity-mb", "16"], 2)])
def test_sigterm_removes_the_units_ipc_socket_files(args, units):
    tmp = tempfile.mkdtemp(prefix="tqs")  # short: the socket path must fit
    env = dict(os.environ, TMPDIR=tmp)
    proc = _start(args, env)
    try:
        _wait_lines(proc, 1 + (units if args[0] == "controller" else 0))
        assert len(_sockets(tmp)) == units, "each tcp unit also listens on an ipc socket"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        assert _sockets(tmp) == [], "stopped units leave no socket file"
    finally:
        kill_pid(proc.pid)
        proc.wait(timeout=10)
        shutil.rmtree(tmp, ignore_errors=True)


# --------------------------------------------------------------------------- finding 5: dead units

def test_a_registered_unit_that_dies_does_not_break_new_clients(controller):
    proc = _start(["storage-unit", "--controller", controller.address, "--capacity-mb", "16"])
    try:
        (unit,) = _wait_lines(proc, 1)
        assert unit in controller.storage_units
        proc.kill()  # SIGKILL: no clean exit
        proc.wait(timeout=10)
        # Still listed (the controller waits a whole liveness timeout), but a
        # new client skips it instead of failing.
        after = new_client(controller.address)
        p = unique()
        got = after.get_data(put(after, p, [5, 6, 7]))
        assert got is not None
    finally:
        kill_pid(proc.pid)
        if proc.poll() is None:
            proc.wait(timeout=10)
