"""kv_batch_put on both backends: on the datasystem (values under 64 KiB go
into packs) it stores the values first and then creates the keys and records
the fields in one controller request (KV_PUT); with a bigger value, or on
SimpleStorage, it asks for the keys' samples first (KV_RETRIEVE_META). Both
give the same KVBatchMeta and the same data, and the one-step put never
leaves a key without its fields."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import pickle
import re
import urllib.request

import pytest
import torch
from tensordict import TensorDict

import transfer_queue as tq
from transfer_queue import interface

from conftest import DsWorker, kill_pid, unique


@contextlib.contextmanager
def session(monkeypatch, backend: dict, **extra):
    monkeypatch.setenv("TQDS_SESSION", unique("kvput"))
    monkeypatch.setattr(interface, "_running_ray", lambda: None)
    tq.init({"backend": backend, **extra})
    controller_pid = getattr(interface._SESSION, "controller_pid", None)
    try:
        yield
    finally:
        tq.close()
        kill_pid(controller_pid)


def yuanrong(worker: DsWorker) -> dict:
    return {"storage_backend": "Yuanrong", "Yuanrong": {"auto_init": False, "worker_port": worker.port}}


@pytest.fixture(params=["SimpleStorage", "Yuanrong"])
def backend(request, monkeypatch):
    if request.param == "SimpleStorage":
        conf = {"storage_backend": "SimpleStorage", "SimpleStorage": {"num_data_storage_units": 2}}
    else:
        conf = yuanrong(request.getfixturevalue("ds_worker"))
    with session(monkeypatch, conf):
        yield request.param


def controller_calls() -> dict:
    """Calls per request type so far, from the controller's metrics endpoint."""
    text = urllib.request.urlopen(f"http://{tq.get_metrics_endpoint()}/metrics", timeout=10).read().decode()
    return {m.group(1): float(m.group(2)) for m in re.finditer(
        r'^tq_controller_request_duration_seconds_count\{op_type="(\w+)"\} (\S+)$', text, re.M)}


def rows(n: int, width: int, seed: int) -> TensorDict:
    g = torch.Generator().manual_seed(seed)
    return TensorDict({"a": torch.randn(n, width, generator=g), "b": torch.randint(0, 1 << 30, (n, 3), generator=g)},
                      batch_size=(n,))


@pytest.mark.parametrize("width", [16, 20000])  # 64 B and 80 KB values: packed, and not on the datasystem
def test_put_reports_fields_and_tags_and_reads_back(backend, width):
    pid = unique("kv")
    td = rows(5, width, 1)
    meta = tq.kv_batch_put([f"k{i}" for i in range(5)], pid, fields=td)
    assert meta.keys == [f"k{i}" for i in range(5)] and meta.partition_id == pid
    assert meta.fields == ["a", "b"] and meta.tags == [{}] * 5
    # The tags no key had yet are made when read: each key its own dict,
    # and a copy, a pickle or a comparison sees them as any meta would.
    untagged = tq.kv_batch_put([f"u{i}" for i in range(3)], pid, fields=rows(3, width, 2))
    assert pickle.loads(pickle.dumps(untagged)) == copy.deepcopy(untagged) == tq.KVBatchMeta(
        keys=["u0", "u1", "u2"], tags=[{}, {}, {}], partition_id=pid, fields=["a", "b"])
    untagged.tags[0]["x"] = 1
    assert untagged.tags == [{"x": 1}, {}, {}]
    assert dataclasses.asdict(untagged)["tags"] == [{"x": 1}, {}, {}]
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        untagged.nope
    fresh = tq.kv_batch_put(["v0", "v1"], pid, fields=rows(2, width, 3))
    assert pickle.loads(pickle.dumps(fresh)).__dict__["tags"] == [{}, {}], "pickled with its tags"
    out = tq.kv_batch_get(["k3", "k0"], pid)
    assert torch.equal(out["a"], td["a"][[3, 0]]) and torch.equal(out["b"], td["b"][[3, 0]])
    # A field selected twice is read once; a selected name that is no str
    # is no field of any key.
    twice = tq.kv_batch_get(["k3", "k0"], pid, select_fields=["b", "b"])
    assert list(twice.keys()) == ["b"] and torch.equal(twice["b"], td["b"][[3, 0]])
    with pytest.raises(ValueError, match=re.escape("has the fields [3]")):
        tq.kv_batch_get(["k3"], pid, select_fields=["a", 3])

    # Tags of an earlier call come back; a field the keys had stays listed
    # where every key has it.
    tq.kv_put("k1", pid, tag={"score": 7})
    more = TensorDict({"c": torch.arange(2).reshape(2, 1)}, batch_size=(2,))
    meta = tq.kv_batch_put(["k1", "new"], pid, fields=more)
    assert meta.fields == ["c"], "new has no a or b"
    assert meta.tags == [{"score": 7}, {}]
    meta = tq.kv_batch_put(["k1"], pid, fields=more[:1])
    assert meta.fields == ["a", "b", "c"]
    assert tq.kv_list(pid)[pid]["k1"] == {"score": 7}
    got = tq.kv_batch_get(["k1"], pid)
    assert torch.equal(got["a"], td["a"][1:2]) and torch.equal(got["c"], more["c"][:1])


def test_overwrite_frees_the_old_pack_and_reads_the_new_values(monkeypatch, ds_worker):
    with session(monkeypatch, yuanrong(ds_worker)):
        pid = unique("kv")
        keys = [f"k{i}" for i in range(64)]
        first, second = rows(64, 32, 2), rows(64, 32, 3)
        tq.kv_batch_put(keys, pid, fields=first)
        tq.kv_batch_put(keys, pid, fields=second)
        out = tq.kv_batch_get(keys, pid)
        assert torch.equal(out["a"], second["a"]) and torch.equal(out["b"], second["b"])
        tq.kv_clear(keys, pid)
        assert tq.kv_list(pid) == {pid: {}}


def test_small_values_take_one_controller_request(monkeypatch, ds_worker):
    with session(monkeypatch, yuanrong(ds_worker), metrics={"enabled": True, "port": 0}):
        pid = unique("kv")
        before = controller_calls()
        tq.kv_batch_put(["a", "b"], pid, fields=rows(2, 16, 4))
        after = controller_calls()
        assert after.get("KV_PUT", 0) == before.get("KV_PUT", 0) + 1
        assert after.get("KV_RETRIEVE_META", 0) == before.get("KV_RETRIEVE_META", 0)
        tq.kv_batch_put(["c"], pid, fields=rows(1, 20000, 5))  # an 80 KB value: its own key
        last = controller_calls()
        assert last.get("KV_RETRIEVE_META", 0) == after.get("KV_RETRIEVE_META", 0) + 1
        assert last.get("KV_PUT", 0) == after.get("KV_PUT", 0)


def test_a_put_that_does_not_fit_leaves_no_key(monkeypatch):
    worker = DsWorker(shared_memory_mb=64)
    try:
        with session(monkeypatch, yuanrong(worker)):
            pid = unique("kv")
            tq.kv_batch_put(["kept"], pid, fields=rows(1, 16, 6))
            big = TensorDict({"a": torch.zeros(16384, 1024), "b": torch.zeros(16384, 1024)}, batch_size=(16384,))
            keys = [f"k{i}" for i in range(16384)]
            with pytest.raises(Exception) as err:  # 128 MiB of 4 KiB values into 64 MiB
                tq.kv_batch_put(keys, pid, fields=big)
            assert "kv_put" in str(err.value)
            assert tq.kv_list(pid) == {pid: {"kept": {}}}, "no key of the failed put exists"
            # The worker took nothing of it: a put that fits goes through.
            tq.kv_batch_put(keys[:4096], pid, fields=big[:4096])
            assert len(tq.kv_list(pid)[pid]) == 4097
            assert torch.equal(tq.kv_batch_get(["k4095"], pid)["a"], big["a"][4095:4096])
    finally:
        worker.stop()


def test_keys_with_different_fields_and_bad_input(backend):
    """Ours beyond upstream's tests (compat/test_kv.py runs under both): a
    meta of keys with different fields holds the ones all of them have,
    each sample ready for them; a selected field some key lacks is an error,
    not a TensorDict without it; bad keys and tags are named and leave no
    key behind."""
    c = tq.get_client()
    pid = unique("kv")
    two = TensorDict({"x": torch.tensor([[1], [2]])}, batch_size=2)
    with pytest.raises(ValueError, match="2 keys but 1 tags"):
        tq.kv_batch_put(["a", "b"], pid, fields=two, tags=[{}])
    with pytest.raises(TypeError, match=r"every key must be a str, got bytes \(b'b'\)"):
        tq.kv_batch_put(["a", b"b"], pid, fields=two)
    with pytest.raises(TypeError, match="every key must be a str, got NoneType") as err:
        tq.kv_batch_put(["a", None], pid, tags=[{}, {}])
    assert err.value.__suppress_context__, "not chained to the native error it replaces"
    with pytest.raises(TypeError, match=r"every key must be a str, got int \(2\)"):
        tq.kv_batch_get(["a", 2], pid)
    with pytest.raises(TypeError, match=r"every key must be a str, got int \(1\)"):
        tq.kv_clear([1], pid)
    with pytest.raises(TypeError, match=r"every key must be a str, got int \(1\)"):
        c.kv_retrieve_meta([1], pid)
    assert tq.kv_list(pid) == {}, "a rejected put creates no key"

    tq.kv_batch_put(["a", "b"], pid, fields=two)
    tq.kv_put("a", pid, fields={"y": torch.tensor([5])})
    both = c.kv_retrieve_meta(["a", "b"], pid)
    assert both.field_names == ["x"] and list(both.production_status) == [1, 1] and both.is_ready
    assert tq.kv_batch_get(["a", "b"], pid)["x"].tolist() == [[1], [2]]
    assert tq.kv_batch_get(["a"], pid, select_fields="y")["y"].tolist() == [[5]]
    with pytest.raises(ValueError, match=r"\['y'\]"):  # b has no y
        tq.kv_batch_get(["a", "b"], pid, select_fields=["y"])
    with pytest.raises(ValueError, match=r"\['y'\]"):
        tq.kv_batch_get(["a", "b"], pid, select_fields=["x", "y"])
    with pytest.raises(ValueError, match="nope"):
        tq.kv_batch_get(["a"], pid, select_fields="nope")
    assert list(c.kv_retrieve_meta(["fresh"], pid, create=True).production_status) == [0]
    # Keys that share no field: an error whether nothing or no field is selected.
    for selected in (None, []):
        with pytest.raises(ValueError, match=re.escape("has the selected fields ([])")):
            tq.kv_batch_get(["a", "fresh"], pid, select_fields=selected)
    assert tq.kv_batch_get(["a", "b"], pid, select_fields=[]).batch_size == torch.Size([2])
