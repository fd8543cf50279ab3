"""tq.save_checkpoint / tq.load_checkpoint over tq.init, on both backends
(SimpleStorage: the controller's units; Yuanrong: the suite's datasystem
worker): a load brings back the partitions as saved (same global indexes,
data, custom meta, keys, consumption), replacing what changed since; a
corrupt checkpoint raises and changes nothing; missing files raise
FileNotFoundError. Each test has its own session ($TQDS_SESSION)."""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import textwrap

import pytest
import torch
from tensordict import TensorDict

import transfer_queue as tq
from transfer_queue import interface

from conftest import REPO, kill_pid, unique
from test_ray import _worker_pythonpath


@contextlib.contextmanager
def tq_session(monkeypatch, backend: dict):
    monkeypatch.setenv("TQDS_SESSION", unique("ck"))
    monkeypatch.setattr(interface, "_running_ray", lambda: None)
    tq.init({"backend": backend})
    controller_pid = getattr(interface._SESSION, "controller_pid", None)
    try:
        yield tq.get_client()
    finally:
        tq.close()
        kill_pid(controller_pid)  # a no-op when close() stopped it


@pytest.fixture(params=["SimpleStorage", "Yuanrong"])
def client(request, monkeypatch):
    if request.param == "SimpleStorage":
        backend = {"storage_backend": "SimpleStorage", "SimpleStorage": {"num_data_storage_units": 2}}
    else:
        worker = request.getfixturevalue("ds_worker")
        backend = {"storage_backend": "Yuanrong", "Yuanrong": {"auto_init": False, "worker_port": worker.port}}
    with tq_session(monkeypatch, backend) as c:
        yield c


def dense(x):
    return torch.stack(list(x.unbind())) if getattr(x, "is_nested", False) else x


def everything(c, partition):
    """Indexes, data and custom meta of every sample of `partition` (force_fetch: consumes nothing)."""
    meta = c.get_meta([], 0, partition, mode="force_fetch")
    full = c.get_custom_meta(partition, meta.global_indexes)
    return list(meta.global_indexes), full.custom_meta


def fill(c):
    """Three partitions: a (tensor, ragged and string fields, custom meta, 2 of
    4 consumed by task t), kv (keyed samples with tags) and half (2 samples, 1
    produced)."""
    a, kv, half = unique("a"), unique("kv"), unique("half")
    td = TensorDict({
        "x": torch.arange(8).reshape(4, 2),
        "r": torch.nested.as_nested_tensor([torch.arange(n + 1, dtype=torch.float32) for n in range(4)],
                                           layout=torch.jagged),
    }, batch_size=[4])
    meta = c.put(td, partition_id=a)
    meta.update_custom_meta([{"score": i * 1.5, "tag": f"s{i}"} for i in range(4)])
    c.set_custom_meta(meta)
    got = c.get_meta(["x"], 2, a, task_name="t")
    assert len(got) == 2
    tq.kv_batch_put(["k1", "k2"], kv, fields=TensorDict({"v": torch.tensor([[1.0], [2.0]])}, batch_size=[2]),
                    tags=[{"lang": "en"}, {"lang": "fr"}])
    ins = c.get_meta(["y"], 2, half, mode="insert")
    one = ins.select_samples([0])
    c.put(TensorDict({"y": torch.tensor([42])}, batch_size=[1]), metadata=one)
    return a, kv, half, meta


def test_round_trip_restores_indexes_data_meta_keys_and_consumption(client, tmp_path):
    c = client
    a, kv, half, meta = fill(c)
    saved = {p: everything(c, p) for p in (a, kv, half)}
    saved_a_data = c.get_data(c.get_meta(["x", "r"], 0, a, mode="force_fetch"))
    tq.save_checkpoint(tmp_path / "ck", metadata={"step": 10})

    info = json.loads((tmp_path / "ck" / "metadata.json").read_text())
    assert info["user_metadata"] == {"step": 10} and info["storage_saved"] is True
    assert not (tmp_path / "ck.tmp").exists() and not (tmp_path / "ck.old").exists()

    # Change everything: clear a, consume more, re-key, add a partition.
    c.clear_partition(a)
    tq.kv_clear(["k1"], kv)
    extra = unique("extra")
    c.put(TensorDict({"x": torch.zeros(2, 2, dtype=torch.int64)}, batch_size=[2]), partition_id=extra)

    tq.load_checkpoint(tmp_path / "ck")
    assert sorted(c.get_partition_list()) == sorted([a, kv, half])
    for p, (indexes, custom) in saved.items():
        assert everything(c, p) == (indexes, custom), p

    # Data of a: same indexes, same bytes (ragged field included).
    again = c.get_data(c.get_meta(["x", "r"], 0, a, mode="force_fetch"))
    assert torch.equal(again["x"], saved_a_data["x"])
    for u, v in zip(again["r"].unbind(), saved_a_data["r"].unbind()):
        assert torch.equal(u, v)
    # Consumption: t had 2 of a; the next fetch gets the other 2, and no more.
    rest = c.get_meta(["x"], 2, a, task_name="t")
    assert sorted(rest.global_indexes) == sorted(meta.global_indexes[2:])
    assert c.get_consumption_status("t", a)[1].flatten().tolist() == [1, 1, 1, 1]
    # Keys and tags, and their data.
    assert tq.kv_list(kv) == {kv: {"k1": {"lang": "en"}, "k2": {"lang": "fr"}}}
    assert tq.kv_batch_get(["k1", "k2"], kv)["v"].tolist() == [[1.0], [2.0]]
    # half: one produced sample with its data, one still waiting.
    ready = c.get_meta(["y"], 0, half, mode="force_fetch")
    assert c.get_data(c.get_meta(["y"], 1, half, task_name="u"))["y"].tolist() == [42]
    assert len(everything(c, half)[0]) == 2 and len(ready) == 2
    assert c.get_production_status(["y"], half)[1].flatten().tolist() == [1, 0]
    # New samples get fresh indexes, never one of the restored ones.
    fresh = c.put(TensorDict({"x": torch.ones(1, 2, dtype=torch.int64)}, batch_size=[1]), partition_id=a)
    assert not set(fresh.global_indexes) & set(saved[a][0] + saved[kv][0] + saved[half][0])


def test_saving_twice_replaces_the_checkpoint(client, tmp_path):
    p = unique("p")
    client.put(TensorDict({"x": torch.arange(3)}, batch_size=[3]), partition_id=p)
    tq.save_checkpoint(tmp_path / "ck")
    q = unique("q")
    client.put(TensorDict({"x": torch.arange(2)}, batch_size=[2]), partition_id=q)
    tq.save_checkpoint(tmp_path / "ck", metadata={"n": 2})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]
    client.clear_partition(p)
    client.clear_partition(q)
    tq.load_checkpoint(tmp_path / "ck")
    assert sorted(client.get_partition_list()) == sorted([p, q])
    got = client.get_meta(["x"], 2, q, task_name="t")
    assert sorted(client.get_data(got)["x"].tolist()) == [0, 1]


def test_corrupt_snapshot_raises_and_changes_nothing(client, tmp_path):
    p = unique("p")
    client.put(TensorDict({"x": torch.arange(3)}, batch_size=[3]), partition_id=p)
    tq.save_checkpoint(tmp_path / "ck")
    snap = tmp_path / "ck" / "controller.snapshot"
    raw = snap.read_bytes()
    q = unique("q")
    meta = client.put(TensorDict({"x": torch.arange(10, 12)}, batch_size=[2]), partition_id=q)
    for corrupt in (raw[: len(raw) // 2], b"not msgpack at all", raw + b"\x00", b""):
        snap.write_bytes(corrupt)
        with pytest.raises(RuntimeError, match="snapshot"):
            tq.load_checkpoint(tmp_path / "ck")
        assert sorted(client.get_partition_list()) == sorted([p, q])
        assert client.get_data(meta)["x"].tolist() == [10, 11]


def test_unknown_version_or_bad_description_is_refused_and_changes_nothing(client, tmp_path):
    p = unique("p")
    client.put(TensorDict({"x": torch.arange(3)}, batch_size=[3]), partition_id=p)
    tq.save_checkpoint(tmp_path / "ck")
    info_path = tmp_path / "ck" / "metadata.json"
    info = json.loads(info_path.read_text())
    q = unique("q")
    meta = client.put(TensorDict({"x": torch.arange(10, 12)}, batch_size=[2]), partition_id=q)
    for bad, error in ((dict(info, version=999), "version 999 is not supported"),
                       (dict(info, format="something else"), "is not a .* description"),
                       ("{not json", "not valid JSON")):
        info_path.write_text(bad if isinstance(bad, str) else json.dumps(bad))
        with pytest.raises(RuntimeError, match=error):
            tq.load_checkpoint(tmp_path / "ck")
        assert sorted(client.get_partition_list()) == sorted([p, q])
        assert client.get_data(meta)["x"].tolist() == [10, 11]


def test_missing_directory_or_file_is_file_not_found(client, tmp_path):
    with pytest.raises(FileNotFoundError):
        tq.load_checkpoint(tmp_path / "absent")
    tq.save_checkpoint(tmp_path / "ck")
    (tmp_path / "ck" / "controller.snapshot").unlink()
    with pytest.raises(FileNotFoundError, match="controller.snapshot"):
        tq.load_checkpoint(tmp_path / "ck")
    (tmp_path / "ck" / "metadata.json").unlink()
    with pytest.raises(FileNotFoundError, match="metadata.json"):
        tq.load_checkpoint(tmp_path / "ck")


def test_before_init_is_a_runtime_error(tmp_path, monkeypatch):
    monkeypatch.setenv("TQDS_SESSION", unique("ck"))
    monkeypatch.setattr(interface, "_running_ray", lambda: None)
    with pytest.raises(RuntimeError, match="init"):
        tq.save_checkpoint(tmp_path / "ck")
    with pytest.raises(RuntimeError, match="init"):
        tq.load_checkpoint(tmp_path / "ck")


class _SnapshotFrom:
    """A native client whose snapshot_controller answers `snapshot` (as if
    the snapshot had been taken before whatever happened since)."""

    def __init__(self, native, snapshot: bytes):
        self._native, self._snapshot = native, snapshot

    def snapshot_controller(self):
        return self._snapshot

    def __getattr__(self, name):
        return getattr(self._native, name)


def test_samples_made_between_snapshot_and_data_read_are_left_out(client, tmp_path, monkeypatch):
    p = unique("p")
    first = client.put(TensorDict({"x": torch.arange(2)}, batch_size=[2]), partition_id=p)
    early = client._client.snapshot_controller()
    client.put(TensorDict({"x": torch.arange(5, 6)}, batch_size=[1]), partition_id=p)
    q = unique("q")
    client.put(TensorDict({"x": torch.arange(3)}, batch_size=[3]), partition_id=q)
    monkeypatch.setattr(client, "_client", _SnapshotFrom(client._client, early))
    tq.save_checkpoint(tmp_path / "ck")
    monkeypatch.undo()
    tq.load_checkpoint(tmp_path / "ck")
    assert client.get_partition_list() == [p]
    got = client.get_meta(["x"], 0, p, mode="force_fetch")
    assert list(got.global_indexes) == list(first.global_indexes)
    assert client.get_data(got)["x"].tolist() == [0, 1]


def test_metadata_only_checkpoint(client, tmp_path):
    p = unique("p")
    client.put(TensorDict({"x": torch.arange(4)}, batch_size=[4]), partition_id=p)
    client.get_meta(["x"], 1, p, task_name="t")
    tq.save_checkpoint(tmp_path / "ck", include_storage=False)
    info = json.loads((tmp_path / "ck" / "metadata.json").read_text())
    if interface._SESSION.conf.backend.storage_backend == "SimpleStorage":
        assert info["storage_saved"] is True  # in memory only: forced on, as upstream
        return
    assert info["storage_saved"] is False and not (tmp_path / "ck" / "data").exists()
    client.get_meta(["x"], 2, p, task_name="t")
    tq.load_checkpoint(tmp_path / "ck")  # the data stayed in the datasystem
    rest = client.get_meta(["x"], 3, p, task_name="t")
    assert sorted(client.get_data(rest)["x"].tolist()) == [1, 2, 3]


SAVER = textwrap.dedent("""
    import sys
    import transfer_queue as tq
    tq.init()  # attaches to the test's session ($TQDS_SESSION)
    print("READY", flush=True)
    n = 0
    while True:
        tq.save_checkpoint(sys.argv[1], metadata={"n": n})
        n += 1
        print("SAVED", n, flush=True)
""")


def test_a_save_killed_at_any_point_leaves_a_whole_checkpoint(monkeypatch, tmp_path):
    """A process saving in a loop is killed with SIGKILL at random points
    (inside torch.save, between the renames, ...); after each kill the
    checkpoint loads whole and restores the data as saved. (The files are
    written alike for both backends: SimpleStorage only.)"""
    with tq_session(monkeypatch, {"storage_backend": "SimpleStorage",
                                  "SimpleStorage": {"num_data_storage_units": 1}}) as client:
        _kill_saves(client, tmp_path, rounds=5)


def _kill_saves(client, tmp_path, rounds: int):
    p = unique("p")
    data = torch.arange(4096, dtype=torch.float32).reshape(64, 64)
    client.put(TensorDict({"x": data, "s": [f"s{i}" for i in range(64)]}, batch_size=[64]), partition_id=p)
    ck = tmp_path / "ck"
    tq.save_checkpoint(ck, metadata={"n": -1})
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(x for x in (_worker_pythonpath(), env.get("PYTHONPATH", "")) if x)
    rng = random.Random(1234)
    seen = set()
    for _ in range(rounds):
        proc = subprocess.Popen([sys.executable, "-c", SAVER, str(ck)], stdout=subprocess.PIPE, text=True,
                                env=env, cwd=str(REPO))
        try:
            assert proc.stdout.readline().strip() == "READY"
            # Let it complete a few saves, then kill it somewhere inside one.
            for _ in range(rng.randint(1, 3)):
                assert proc.stdout.readline().startswith("SAVED")
            time_in = rng.uniform(0.0, 0.15)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=time_in)  # a random point of the next save
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)  # kill -9: no handler runs
            proc.wait()
        tq.load_checkpoint(ck)
        seen.add(json.loads((ck / "metadata.json").read_text())["user_metadata"]["n"])
        got = client.get_data(client.get_meta(["x", "s"], 0, p, mode="force_fetch"))
        assert torch.equal(dense(got["x"]), data)
        assert list(got["s"]) == [f"s{i}" for i in range(64)]
    assert seen != {-1}, "the saver never completed a save"
