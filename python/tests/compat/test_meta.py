"""Scenarios 19 and 20 of docs/upstream_api.md §6.3: BatchMeta and
KVBatchMeta as values (constructor checks, indexing, chunk, concat, union,
reorder, select, sample views, extra info, pickling through Ray)."""

from __future__ import annotations

import pickle

import pytest
import ray
import torch
from tensordict import TensorDict

import transfer_queue as tq


def meta(n: int, pid: str = "p", start: int = 0, fields=("a",)) -> "tq.BatchMeta":
    """A produced meta of n samples, built the way the client builds one."""
    m = tq.BatchMeta(list(range(start, start + n)), [pid] * n)
    if n:
        m.add_fields(TensorDict({f: torch.zeros(n, 2) for f in fields}, batch_size=n))
    return m


def test_s19_constructor_defaults_and_checks():
    m = tq.BatchMeta([3, 4], ["p", "p"])
    assert m.size == 2 and len(m) == 2
    assert list(m.production_status) == [0, 0]
    assert not m.is_ready
    assert m.field_names == []
    assert m.custom_meta == [{}, {}]
    with pytest.raises(ValueError):
        tq.BatchMeta([1, 2], ["p"])
    with pytest.raises(ValueError):
        tq.BatchMeta([1, 2], ["p", "p"], production_status=[1])
    with pytest.raises(ValueError):
        tq.BatchMeta([1, 2], ["p", "p"], custom_meta=[{}])
    empty = tq.BatchMeta.empty()
    assert empty.size == 0 and not empty.is_ready


def test_s19_add_fields_schema():
    m = tq.BatchMeta([0, 1], ["p", "p"])
    out = m.add_fields(TensorDict({"b": torch.zeros(2, 3, dtype=torch.bfloat16), "a": torch.arange(2)}, batch_size=2))
    assert out is m
    assert m.field_names == ["a", "b"]
    assert m.is_ready
    assert m.field_schema["b"]["dtype"] == torch.bfloat16
    assert tuple(m.field_schema["b"]["shape"]) == (3,)
    assert m.field_schema["b"]["is_nested"] is False
    assert m.get_dtypes("b") == [torch.bfloat16, torch.bfloat16]
    assert [tuple(s) for s in m.get_shapes("b")] == [(3,), (3,)]
    with pytest.raises(KeyError):
        m.get_dtypes("zz")
    with pytest.raises(ValueError):
        m.add_fields(TensorDict({"c": torch.zeros(3)}, batch_size=3))


def test_s19_getitem_and_select():
    m = meta(5)
    assert m[1].global_indexes == [1]
    assert m[-1].global_indexes == [4]
    assert m[1:4].global_indexes == [1, 2, 3]
    with pytest.raises(IndexError):
        m[5]
    with pytest.raises(TypeError):
        m["a"]
    sel = m.select_samples([4, 0])
    assert sel.global_indexes == [4, 0]
    with pytest.raises(ValueError):
        m.select_samples([5])
    two = meta(2, fields=("a", "b"))
    only = two.select_fields(["b", "missing"])
    assert only.field_names == ["b"]
    assert only.is_ready


def test_s19_chunk():
    parts = meta(5).chunk(2)
    assert [p.global_indexes for p in parts] == [[0, 1, 2], [3, 4]]
    parts = meta(2).chunk(3)
    assert [p.size for p in parts] == [1, 1, 0]


def test_s19_chunk_by_partition():
    m = tq.BatchMeta.concat([meta(2, "x"), meta(1, "y", start=2), meta(1, "x", start=3)])
    parts = m.chunk_by_partition()
    assert [p.partition_ids[0] for p in parts] == ["x", "y"]
    assert [p.global_indexes for p in parts] == [[0, 1, 3], [2]]


def test_s19_concat():
    c = tq.BatchMeta.concat([meta(2), tq.BatchMeta.empty(), meta(1, start=2)])
    assert c.global_indexes == [0, 1, 2]
    assert c.is_ready
    assert tq.BatchMeta.concat([]).size == 0
    with pytest.raises(ValueError):
        tq.BatchMeta.concat([meta(1, fields=("a",)), meta(1, start=1, fields=("b",))])


def test_s19_union():
    a = meta(2, fields=("a",))
    b = meta(2, fields=("b",))
    a.update_custom_meta([{"x": 1}, {}])
    b.update_custom_meta([{"y": 2}, {"z": 3}])
    u = a.union(b)
    assert u.field_names == ["a", "b"]
    assert u.get_all_custom_meta() == [{"x": 1, "y": 2}, {"z": 3}]
    with pytest.raises(ValueError):
        a.union(meta(2, start=5))
    assert a.union(tq.BatchMeta.empty()).global_indexes == a.global_indexes


def test_s19_reorder():
    m = meta(3)
    m.update_custom_meta([{"i": 0}, {"i": 1}, {"i": 2}])
    m.reorder([2, 0, 1])
    assert m.global_indexes == [2, 0, 1]
    assert m.get_all_custom_meta() == [{"i": 2}, {"i": 0}, {"i": 1}]
    for bad in ([0, 1], [0, 0, 1], [0, 1, 3]):
        with pytest.raises(ValueError):
            m.reorder(bad)


def test_s19_samples_views_and_extra_info():
    m = meta(2, pid="q", start=7)
    s = m.samples[1]
    assert s.global_index == 8 and s.partition_id == "q" and s.production_status == 1
    assert "a" in s.fields
    m.set_extra_info("step", 3)
    assert m.get_extra_info("step") == 3 and m.has_extra_info("step")
    assert m.get_extra_info("nope", "d") == "d"
    m.update_extra_info({"k": "v"})
    assert m.get_all_extra_info() == {"step": 3, "k": "v"}
    assert m.remove_extra_info("k") == "v"
    assert m.select_samples([0]).get_extra_info("step") == 3
    c = m.copy()
    c.set_extra_info("step", 4)
    assert m.get_extra_info("step") == 3
    m.clear_extra_info()
    assert m.get_all_extra_info() == {}
    m.update_custom_meta([{"a": 1}, {"b": 2}])
    m.clear_custom_meta()
    assert m.get_all_custom_meta() == [{}, {}]


@ray.remote(num_cpus=0)
def _echo(x):
    return x


def test_s19_pickling_and_through_ray(ray_session):
    m = meta(3)
    m.update_custom_meta([{"a": 1}, {}, {"s": "x"}])
    m.set_extra_info("e", [1, 2])
    for back in (pickle.loads(pickle.dumps(m)), ray.get(_echo.remote(m))):
        assert back.global_indexes == m.global_indexes
        assert back.field_names == m.field_names
        assert back.get_all_custom_meta() == m.get_all_custom_meta()
        assert back.get_extra_info("e") == [1, 2]
        assert back.is_ready


def test_s20_kvbatchmeta():
    k = tq.KVBatchMeta(keys=["a", "b", "c"], tags=[{"i": 0}, {"i": 1}, {"i": 2}], partition_id="p", fields=["x"])
    assert k.size == 3 and len(k) == 3
    with pytest.raises(ValueError):
        tq.KVBatchMeta(keys=["a", "a"], tags=[{}, {}])
    with pytest.raises(ValueError):
        tq.KVBatchMeta(keys=["a"], tags=[])
    sub = k.select_keys(["c", "a"])
    assert sub.keys == ["c", "a"] and sub.tags == [{"i": 2}, {"i": 0}]
    with pytest.raises(RuntimeError):
        k.select_keys(["zz"])
    with pytest.raises(ValueError):
        k.select_keys(["a", "a"])
    parts = k.chunk(2)
    assert [p.keys for p in parts] == [["a", "b"], ["c"]]
    back = tq.KVBatchMeta.concat(parts)
    assert back.keys == ["a", "b", "c"] and back.partition_id == "p"
    with pytest.raises(ValueError):
        tq.KVBatchMeta.concat([k.select_keys(["a"]), tq.KVBatchMeta(keys=["z"], tags=[{}], partition_id="other", fields=["x"])])
    k.reorder([2, 1, 0])
    assert k.keys == ["c", "b", "a"]
    with pytest.raises(ValueError):
        k.reorder([0, 0, 1])
