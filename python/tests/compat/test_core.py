"""Scenarios 1 and 4-12 of docs/upstream_api.md §6.3: the index API of the
client (put, get_meta modes, status tuples, consumption, clearing, custom
meta) under upstream's default config."""

from __future__ import annotations

import time

import pytest
import torch
from tensordict import TensorDict

import transfer_queue as tq
from .conftest import unique


def td(n: int, **fields) -> TensorDict:
    return TensorDict(fields, batch_size=n)


def test_s04_put_allocates_consecutive_indexes_and_sorted_fields(tq_default):
    c = tq_default
    pid = unique()
    meta = c.put(td(4, zeta=torch.arange(4), alpha=torch.ones(4, 3)), partition_id=pid)
    assert meta.size == 4 and len(meta) == 4
    gi = list(meta.global_indexes)
    assert gi == list(range(gi[0], gi[0] + 4))
    assert meta.partition_ids == [pid] * 4
    assert meta.field_names == ["alpha", "zeta"]
    assert meta.is_ready
    assert list(meta.production_status) == [1, 1, 1, 1]
    assert meta.field_schema["alpha"]["dtype"] == torch.float32
    assert tuple(meta.field_schema["alpha"]["shape"]) == (3,)
    assert meta.field_schema["zeta"]["dtype"] == torch.int64


def test_s04_put_with_meta_adds_field_and_mutates_meta(tq_default):
    c = tq_default
    pid = unique()
    meta = c.put(td(3, a=torch.arange(3)), partition_id=pid)
    out = c.put(td(3, b=torch.full((3, 2), 7.0)), meta)
    assert out is meta
    assert meta.field_names == ["a", "b"]
    data = c.get_data(meta)
    assert torch.equal(torch.as_tensor(data["a"]), torch.arange(3))
    b = data["b"]
    b = torch.stack(list(b.unbind())) if b.is_nested else b
    assert torch.equal(b, torch.full((3, 2), 7.0))


def test_s05_put_without_partition_or_meta_is_value_error(tq_default):
    with pytest.raises(ValueError):
        tq_default.put(td(2, a=torch.arange(2)))


def test_s06_fetch_two_tasks_independent_sequential(tq_default):
    c = tq_default
    pid = unique()
    meta = c.put(td(6, a=torch.arange(6)), partition_id=pid)
    gi = list(meta.global_indexes)
    seen = {}
    for task in ("t1", "t2"):
        got = []
        for _ in range(3):
            m = c.get_meta(["a"], 2, pid, task_name=task)
            assert m.size == 2 and m.is_ready
            got += list(m.global_indexes)
        seen[task] = got
    assert seen["t1"] == gi and seen["t2"] == gi
    forced = c.get_meta(["a"], 6, pid, "force_fetch")  # order not specified: compare by index
    data = c.get_data(forced)
    by_index = dict(zip(forced.global_indexes, torch.as_tensor(data["a"]).tolist()))
    assert [by_index[g] for g in gi] == list(range(6))


def test_s07_nonpolling_fetch_without_enough_data_is_runtime_error(tq_default):
    c = tq_default
    pid = unique()
    c.put(td(2, a=torch.arange(2)), partition_id=pid)
    t0 = time.monotonic()
    with pytest.raises(RuntimeError):
        c.get_meta(["a"], 3, pid, task_name="t")
    assert time.monotonic() - t0 < 30


def test_s07_bad_mode_is_runtime_error(tq_default):
    c = tq_default
    pid = unique()
    c.put(td(2, a=torch.arange(2)), partition_id=pid)
    with pytest.raises(RuntimeError):
        c.get_meta(["a"], 1, pid, mode="bogus", task_name="t")


def test_s07_fetch_without_task_is_runtime_error(tq_default):
    c = tq_default
    pid = unique()
    c.put(td(2, a=torch.arange(2)), partition_id=pid)
    with pytest.raises(RuntimeError):
        c.get_meta(["a"], 1, pid)


def test_s08_force_fetch_returns_every_sample_with_status(tq_default):
    c = tq_default
    pid = unique()
    m1 = c.put(td(2, a=torch.arange(2)), partition_id=pid)
    m2 = c.put(td(2, a=torch.arange(2), b=torch.arange(2)), partition_id=pid)
    forced = c.get_meta(["a", "b"], 1, pid, "force_fetch")
    assert sorted(forced.global_indexes) == sorted(list(m1.global_indexes) + list(m2.global_indexes))
    status = {g: int(s) for g, s in zip(forced.global_indexes, forced.production_status)}
    assert [status[g] for g in m1.global_indexes] == [0, 0]
    assert [status[g] for g in m2.global_indexes] == [1, 1]
    assert not forced.is_ready
    # force_fetch marks nothing consumed
    assert c.get_meta(["a"], 4, pid, task_name="t").size == 4


def test_s08_force_fetch_unknown_partition_is_runtime_error(tq_default):
    with pytest.raises(RuntimeError):
        tq_default.get_meta(["a"], 1, unique(), "force_fetch")


def test_s08_insert_allocates_unproduced_samples(tq_default):
    c = tq_default
    pid = unique()
    meta = c.get_meta(["a"], 3, pid, "insert")
    assert meta.size == 3
    assert list(meta.production_status) == [0, 0, 0]
    assert not meta.is_ready
    c.put(td(3, a=torch.arange(3) * 2), meta)
    got = c.get_meta(["a"], 3, pid, task_name="t")
    assert sorted(got.global_indexes) == sorted(meta.global_indexes)
    data = c.get_data(got)
    assert sorted(torch.as_tensor(data["a"]).tolist()) == [0, 2, 4]


def test_s09_production_status_tuple(tq_default):
    c = tq_default
    pid = unique()
    m1 = c.put(td(2, x=torch.arange(2), w=torch.arange(2)), partition_id=pid)
    c.put(td(2, y=torch.arange(2)), m1)
    gidx, status = c.get_production_status(["y", "w"], pid)
    assert gidx.dtype == torch.int64 and status.dtype == torch.int8
    assert gidx.tolist() == sorted(gidx.tolist())
    assert set(m1.global_indexes) <= set(gidx.tolist())
    assert status.shape == (gidx.shape[0], 2)
    rows = [gidx.tolist().index(g) for g in m1.global_indexes]
    assert status[rows].tolist() == [[1, 1], [1, 1]]
    assert c.get_production_status(["nope"], pid) == (None, None)
    assert c.get_production_status(["x"], unique()) == (None, None)


def test_s09_check_production_status(tq_default):
    c = tq_default
    pid = unique()
    meta = c.put(td(2, a=torch.arange(2)), partition_id=pid)
    assert c.check_production_status(["a"], pid)
    assert not c.check_production_status(["a", "b"], pid)
    c.put(td(2, b=torch.arange(2)), meta)
    assert c.check_production_status(["a", "b"], pid)
    assert not c.check_production_status(["a"], unique())


def test_s10_consumption_status_and_reset(tq_default):
    c = tq_default
    pid = unique()
    meta = c.put(td(3, a=torch.arange(3)), partition_id=pid)
    gidx, status = c.get_consumption_status("t", pid)
    assert gidx.dtype == torch.int64 and status.dtype == torch.int8
    assert status.shape == gidx.shape
    assert status.sum().item() == 0
    assert not c.check_consumption_status("t", pid)
    got = c.get_meta(["a"], 3, pid, task_name="t")
    assert sorted(got.global_indexes) == sorted(meta.global_indexes)
    gidx, status = c.get_consumption_status("t", pid)
    rows = [gidx.tolist().index(g) for g in meta.global_indexes]
    assert status[rows].tolist() == [1, 1, 1]
    assert c.check_consumption_status("t", pid)
    assert c.get_consumption_status("t", unique()) == (None, None)
    assert not c.check_consumption_status("t", unique())
    assert c.reset_consumption(pid, "t") is True
    assert not c.check_consumption_status("t", pid)
    again = c.get_meta(["a"], 3, pid, task_name="t")
    assert sorted(again.global_indexes) == sorted(meta.global_indexes)
    assert c.reset_consumption(pid) is True  # every task
    assert c.get_meta(["a"], 3, pid, task_name="t").size == 3
    assert c.reset_consumption(unique()) is True


def test_s10_unknown_task_has_zero_consumption(tq_default):
    c = tq_default
    pid = unique()
    c.put(td(2, a=torch.arange(2)), partition_id=pid)
    c.get_meta(["a"], 2, pid, task_name="t1")
    _, status = c.get_consumption_status("other", pid)
    assert status.sum().item() == 0


def test_s11_clear_samples_keeps_partition_listed(tq_default):
    c = tq_default
    pid = unique()
    meta = c.put(td(3, a=torch.arange(3)), partition_id=pid)
    c.clear_samples(meta)
    assert pid in c.get_partition_list()
    gidx, status = c.get_production_status(["a"], pid)  # the rows are gone
    assert gidx.numel() == 0 and status.shape == (0, 1)
    gidx, status = c.get_consumption_status("t", pid)
    assert gidx.numel() == 0 and status.numel() == 0
    assert c.get_meta(["a"], 3, pid, "force_fetch").size == 0
    with pytest.raises(KeyError):  # StorageKeyNotFoundError
        c.get_data(meta)
    with pytest.raises(tq.StorageKeyNotFoundError):
        c.get_data(meta)
    c.clear_samples(meta)  # again: no error
    again = c.put(td(2, a=torch.arange(2) + 5), partition_id=pid)
    got = c.get_meta(["a"], 2, pid, task_name="t")
    assert sorted(got.global_indexes) == sorted(again.global_indexes)
    assert sorted(torch.as_tensor(c.get_data(got)["a"]).tolist()) == [5, 6]


def test_s11_clear_partition_removes_it_and_indexes_are_reused(tq_default):
    c = tq_default
    pa, pb = unique("a"), unique("b")
    meta = c.put(td(3, a=torch.arange(3)), partition_id=pa)
    assert pa in c.get_partition_list()
    c.clear_partition(pa)
    assert pa not in c.get_partition_list()
    c.clear_partition(pa)  # unknown now: a no-op
    again = c.put(td(3, a=torch.arange(3)), partition_id=pb)
    assert set(meta.global_indexes) & set(again.global_indexes)


def test_s11_partition_list_in_creation_order(tq_default):
    c = tq_default
    names = [unique("o") for _ in range(3)]
    for n in names:
        c.put(td(1, a=torch.arange(1)), partition_id=n)
    listed = [p for p in c.get_partition_list() if p in names]
    assert listed == names


def test_s12_custom_meta_round_trip(tq_default):
    c = tq_default
    pid = unique()
    meta = c.put(td(2, a=torch.arange(2)), partition_id=pid)
    meta.update_custom_meta([{"score": 0.5, "name": "x"}, {"score": 1.5}])
    meta.update_custom_meta([{"extra": 1}, {}])  # merges locally
    assert meta.get_all_custom_meta() == [{"score": 0.5, "name": "x", "extra": 1}, {"score": 1.5}]
    c.set_custom_meta(meta)
    got = c.get_meta(["a"], 2, pid, task_name="t")
    by_index = dict(zip(got.global_indexes, got.get_all_custom_meta()))
    assert by_index[meta.global_indexes[0]] == {"score": 0.5, "name": "x", "extra": 1}
    assert by_index[meta.global_indexes[1]] == {"score": 1.5}
    assert got.samples[0].custom_meta == by_index[got.global_indexes[0]]


def test_s12_custom_meta_length_mismatch_is_value_error(tq_default):
    pid = unique()
    meta = tq_default.put(td(2, a=torch.arange(2)), partition_id=pid)
    with pytest.raises(ValueError):
        meta.update_custom_meta([{"a": 1}])
