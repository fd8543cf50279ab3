"""A controller with a state directory (TransferQueueControllerHandle(
state_dir=...), `tq controller --state-dir`) killed with SIGKILL and started
again on the same directory and port: the same Python client carries on by
itself (a get_meta that was waiting when the controller died is answered
after the restart), consumption and data are exactly as before on both
backends, nothing is handed out twice. A second controller on a directory in use, a damaged
directory and a controller that came back without its state are refused
with errors that say so."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading

import pytest
import torch
from tensordict import TensorDict

import transfer_queue as tq
from transfer_queue import InvalidArgumentError

from conftest import free_port, kill_pid, make_client, stop_controller, unique


def tq_exe() -> str:
    exe = shutil.which("tq")
    assert exe, "the `tq` program is not on PATH"
    return exe


def start_unit(address: str) -> subprocess.Popen:
    """A `tq storage-unit` registered with the controller: its data outlives the controller."""
    p = subprocess.Popen([tq_exe(), "storage-unit", "--port", "0", "--controller", address, "--capacity-mb", "64"],
                         stdout=subprocess.PIPE, text=True)
    line = p.stdout.readline()
    assert "listening on" in line, line
    return p


def kill9(handle) -> None:
    os.kill(handle._proc.pid, signal.SIGKILL)
    assert handle._proc.wait(timeout=10) == -signal.SIGKILL
    stop_controller(handle)  # reaps nothing more; releases the handle


@pytest.fixture
def restartable(tmp_path):
    """(start, address): start() runs a controller on one fixed port and state directory."""
    port, state = free_port(), str(tmp_path / "state")
    handles, units = [], []

    def start():
        h = tq.TransferQueueControllerHandle(port=port, storage_units=0, state_dir=state)
        handles.append(h)
        return h

    first = start()
    address = tq.process_zmq_server_info(first).to_addr("request")
    units.append(start_unit(address))
    try:
        yield start, first, state
    finally:
        for h in handles:
            stop_controller(h)
        for u in units:
            kill_pid(u.pid)
            u.wait(timeout=10)


@pytest.mark.parametrize("backend", ["simple", "yuanrong"])
def test_killed_controller_resumes_and_the_client_carries_on(restartable, backend, request):
    """Simple: the data is in a registered `tq storage-unit`; yuanrong: in the
    suite's datasystem worker, under keys that name the controller's id,
    which the state directory keeps."""
    start, first, _ = restartable
    worker = request.getfixturevalue("ds_worker") if backend == "yuanrong" else None
    c = make_client(first, backend, worker)
    p = unique("wal")
    c.put(TensorDict({"x": torch.arange(16).reshape(8, 2)}, batch_size=[8]), partition_id=p)
    before = c.get_meta(["x"], 3, p, task_name="train")
    assert len(before) == 3

    kill9(first)
    second = start()
    assert tq.process_zmq_server_info(second).to_addr("request") == tq.process_zmq_server_info(first).to_addr("request")

    # The same client object, no reconnect call: the rest of the partition,
    # none of the three already handed out.
    after = c.get_meta(["x"], 5, p, task_name="train")
    assert sorted(after.global_indexes + before.global_indexes) == list(range(8))
    data = c.get_data(after)
    assert torch.equal(data["x"], torch.arange(16).reshape(8, 2)[after.global_indexes])
    assert c.check_consumption_status("train", p)
    # Writes go on as well.
    c.put(TensorDict({"x": torch.full((2, 2), 7)}, batch_size=[2]), partition_id=p)
    more = c.get_meta(["x"], 2, p, task_name="train")
    assert sorted(more.global_indexes) == [8, 9]
    assert torch.equal(c.get_data(more)["x"], torch.full((2, 2), 7))


def test_a_get_meta_waiting_when_the_controller_dies_is_answered_after_the_restart(restartable):
    start, first, _ = restartable
    c = make_client(first, "simple")
    producer = make_client(first, "simple")
    p = unique("wait")
    got = {}

    def consume():
        try:
            got["meta"] = c.get_meta(["x"], 4, p, task_name="t", timeout=60)
        except Exception as e:  # noqa: BLE001 - reported by the assert below
            got["error"] = e

    t = threading.Thread(target=consume)
    t.start()
    kill9(first)
    start()
    producer.put(TensorDict({"x": torch.arange(4)}, batch_size=[4]), partition_id=p)
    t.join(timeout=90)
    assert not t.is_alive()
    assert "error" not in got, got.get("error")
    assert sorted(got["meta"].global_indexes) == [0, 1, 2, 3]
    assert torch.equal(c.get_data(got["meta"])["x"].sort().values, torch.arange(4))


def test_a_directory_in_use_or_damaged_is_refused(restartable, tmp_path):
    _, first, state = restartable
    r = subprocess.run([tq_exe(), "controller", "--port", "0", "--state-dir", state],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert f"{state} is in use by another controller (pid {first._proc.pid})" in r.stderr, r.stderr

    damaged = tmp_path / "damaged"
    shutil.copytree(state, damaged, ignore=shutil.ignore_patterns("LOCK"))
    base = damaged / "base"
    raw = bytearray(base.read_bytes())
    raw[-1] ^= 0xFF
    base.write_bytes(bytes(raw))
    r = subprocess.run([tq_exe(), "controller", "--port", "0", "--state-dir", str(damaged)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert f"{damaged}/base fails its checksum" in r.stderr, r.stderr

    with pytest.raises(InvalidArgumentError, match="state_dir"):
        tq.TransferQueueControllerHandle(storage_units=0, state_dir=str(tmp_path / "x"),
                                         sampler=type("Mine", (tq.BaseSampler,), {
                                             "sample": lambda self, *a, **k: ([], [])})())


def test_a_controller_back_without_its_state_is_named(restartable, tmp_path, monkeypatch):
    start, first, _ = restartable
    c = make_client(first, "simple")
    p = unique("lost")
    c.put(TensorDict({"x": torch.arange(2)}, batch_size=[2]), partition_id=p)
    port = int(tq.process_zmq_server_info(first).to_addr("request").rsplit(":", 1)[1])
    kill9(first)
    other = tq.TransferQueueControllerHandle(port=port, storage_units=0, state_dir=str(tmp_path / "elsewhere"))
    try:
        with pytest.raises(Exception, match="came back without the state this client used"):
            c.get_meta(["x"], 2, p, task_name="t", timeout=5)
    finally:
        stop_controller(other)
