"""Scenarios 13-16 of docs/upstream_api.md §6.3: the key-value API (kv_put,
kv_batch_put, kv_batch_get, kv_batch_get_by_meta, kv_list, kv_clear and the
client's kv_retrieve_*), its validation, under the default config."""

from __future__ import annotations

import pytest
import torch
from tensordict import TensorDict

import transfer_queue as tq
from .conftest import unique


def dense(x) -> torch.Tensor:
    if isinstance(x, torch.Tensor) and x.is_nested:
        return torch.stack(list(x.unbind()))
    return torch.as_tensor(x)


def test_s13_kv_put_dict_and_batch_put(tq_default):
    pid = unique("kv")
    meta = tq.kv_put("k0", pid, fields={"x": torch.tensor([1.0, 2.0]), "y": torch.tensor([3])}, tag={"t": 1})
    assert isinstance(meta, tq.KVBatchMeta)
    assert meta.keys == ["k0"] and meta.partition_id == pid
    assert meta.fields == ["x", "y"]
    assert meta.tags == [{"t": 1}]
    bm = tq.kv_batch_put(["k1", "k2"], pid,
                         fields=TensorDict({"x": torch.tensor([[4.0, 5.0], [6.0, 7.0]]),
                                            "y": torch.tensor([[8], [9]])}, batch_size=2),
                         tags=[{"t": 2}, {"t": 3}])
    assert bm.keys == ["k1", "k2"] and bm.size == 2 and len(bm) == 2
    assert tq.kv_list(pid) == {pid: {"k0": {"t": 1}, "k1": {"t": 2}, "k2": {"t": 3}}}
    out = tq.kv_batch_get(["k2", "k0", "k1"], pid)
    assert out.batch_size[0] == 3
    assert sorted(out.keys()) == ["x", "y"]
    assert torch.equal(dense(out["x"]), torch.tensor([[6.0, 7.0], [1.0, 2.0], [4.0, 5.0]]))
    assert torch.equal(dense(out["y"]).reshape(3), torch.tensor([9, 3, 8]))


def test_s13_kv_put_dict_with_strings(tq_default):
    pid = unique("kv")
    tq.kv_put("a", pid, fields={"text": "hello", "x": torch.tensor([1, 2])})
    tq.kv_put("b", pid, fields={"text": "wörld", "x": torch.tensor([3, 4])})
    out = tq.kv_batch_get(["b", "a"], pid)
    assert list(out.get("text").tolist()) == ["wörld", "hello"]
    assert torch.equal(dense(out["x"]), torch.tensor([[3, 4], [1, 2]]))


def test_s13_kv_append_field_to_subset_and_select(tq_default):
    pid = unique("kv")
    tq.kv_batch_put(["a", "b", "c"], pid, fields=TensorDict({"x": torch.arange(3).reshape(3, 1)}, batch_size=3))
    tq.kv_batch_put(["a", "c"], pid, fields=TensorDict({"z": torch.tensor([[10], [30]])}, batch_size=2))
    common = tq.kv_batch_get(["a", "b", "c"], pid)
    assert list(common.keys()) == ["x"]  # only the fields every key has
    both = tq.kv_batch_get(["c", "a"], pid, select_fields=["x", "z"])
    assert torch.equal(dense(both["z"]).reshape(2), torch.tensor([30, 10]))
    assert torch.equal(dense(both["x"]).reshape(2), torch.tensor([2, 0]))
    one = tq.kv_batch_get("a", pid, select_fields="z")
    assert list(one.keys()) == ["z"] and one.batch_size[0] == 1


def test_s13_kv_tag_only_update_merges(tq_default):
    pid = unique("kv")
    tq.kv_put("k", pid, fields={"x": torch.tensor([1])}, tag={"a": 1})
    meta = tq.kv_put("k", pid, tag={"b": "two"})
    assert meta.tags == [{"a": 1, "b": "two"}]
    assert tq.kv_list(pid) == {pid: {"k": {"a": 1, "b": "two"}}}
    assert torch.equal(dense(tq.kv_batch_get("k", pid)["x"]).reshape(1), torch.tensor([1]))


def test_s13_kv_list_shapes(tq_default):
    pid = unique("kv")
    tq.kv_put("untagged", pid, fields={"x": torch.tensor([1])})
    assert tq.kv_list(pid) == {pid: {"untagged": {}}}
    assert tq.kv_list(unique("none")) == {}
    everything = tq.kv_list()
    assert everything[pid] == {"untagged": {}}
    assert tq.get_client().kv_list(pid) == {pid: {"untagged": {}}}


def test_s13_kv_batch_get_missing_keys(tq_default):
    pid = unique("kv")
    tq.kv_batch_put(["a", "b"], pid, fields=TensorDict({"x": torch.tensor([[1], [2]])}, batch_size=2))
    partly = tq.kv_batch_get(["b", "nope", "a"], pid)
    assert partly.batch_size[0] == 2
    assert torch.equal(dense(partly["x"]).reshape(2), torch.tensor([2, 1]))
    with pytest.raises(ValueError):
        tq.kv_batch_get(["nope"], pid)
    with pytest.raises(ValueError):
        tq.kv_batch_get(["a"], unique("none"))


def test_s14_kv_batch_get_by_meta(tq_default):
    pid = unique("kv")
    meta = tq.kv_batch_put(["a", "b"], pid, fields=TensorDict({"x": torch.tensor([[1], [2]])}, batch_size=2))
    out = tq.kv_batch_get_by_meta(meta)
    assert torch.equal(dense(out["x"]).reshape(2), torch.tensor([1, 2]))
    with pytest.raises(ValueError):
        tq.kv_batch_get_by_meta(meta, select_fields=["not_a_field"])
    with pytest.raises(ValueError):
        tq.kv_batch_get_by_meta(tq.KVBatchMeta(keys=["a"], tags=[{}], partition_id=None, fields=["x"]))


def test_s14_tag_only_key_is_not_ready(tq_default):
    pid = unique("kv")
    tq.kv_put("k", pid, tag={"only": True})
    meta = tq.kv_put("k2", pid, fields={"x": torch.tensor([1])})
    assert tq.kv_list(pid)[pid]["k"] == {"only": True}
    with pytest.raises(ValueError):
        tq.kv_batch_get(["k"], pid, select_fields=["x"])
    assert meta.fields == ["x"]


def test_s15_kv_clear_idempotent_and_reput(tq_default):
    pid = unique("kv")
    tq.kv_batch_put(["a", "b"], pid, fields=TensorDict({"x": torch.tensor([[1], [2]])}, batch_size=2))
    tq.kv_clear(["a"], pid)
    tq.kv_clear(["a"], pid)  # twice: a no-op
    tq.kv_clear("nope", pid)
    tq.kv_clear(["a"], unique("none"))
    assert tq.kv_list(pid) == {pid: {"b": {}}}
    with pytest.raises(ValueError):
        tq.kv_batch_get(["a"], pid)
    tq.kv_put("a", pid, fields={"x": torch.tensor([7])})
    assert list(tq.kv_list(pid)[pid]) == ["b", "a"]
    assert torch.equal(dense(tq.kv_batch_get(["a"], pid)["x"]).reshape(1), torch.tensor([7]))
    tq.kv_clear(["a", "b"], pid)
    assert tq.kv_list(pid) == {pid: {}}
    assert pid in tq.get_client().get_partition_list()


def test_s15_cleared_key_never_resolves_in_other_partition(tq_default):
    c = tq.get_client()
    pa, pb = unique("kva"), unique("kvb")
    tq.kv_batch_put(["k1", "k2"], pa, fields=TensorDict({"x": torch.tensor([[1], [2]])}, batch_size=2))
    old = c.kv_retrieve_meta(["k1", "k2"], pa)
    assert old.size == 2
    tq.kv_clear(["k1", "k2"], pa)
    fresh = c.put(TensorDict({"x": torch.tensor([[3], [4]])}, batch_size=2), partition_id=pb)
    keys = c.kv_retrieve_keys(list(fresh.global_indexes), pb)
    assert "k1" not in keys and "k2" not in keys


def test_s15_kv_retrieve_meta_and_keys(tq_default):
    c = tq.get_client()
    pid = unique("kv")
    tq.kv_batch_put(["a", "b"], pid, fields=TensorDict({"x": torch.tensor([[1], [2]])}, batch_size=2),
                    tags=[{"n": 1}, {"n": 2}])
    meta = c.kv_retrieve_meta(["b", "a"], pid)
    assert meta.size == 2 and meta.field_names == ["x"] and meta.is_ready
    assert meta.get_all_custom_meta() == [{"n": 2}, {"n": 1}]
    assert c.kv_retrieve_keys(list(meta.global_indexes), pid) == ["b", "a"]
    assert c.kv_retrieve_keys(meta.global_indexes[0], pid) == ["b"]
    assert c.kv_retrieve_meta(["a", "missing"], pid).size == 1
    assert c.kv_retrieve_meta(["a"], unique("none")).size == 0
    created = c.kv_retrieve_meta(["new"], pid, create=True)
    assert created.size == 1 and list(created.production_status) == [0]
    assert "new" in tq.kv_list(pid)[pid]


def test_s16_validation(tq_default):
    pid = unique("kv")
    c = tq.get_client()
    two = TensorDict({"x": torch.tensor([[1], [2]])}, batch_size=2)
    with pytest.raises(ValueError):
        tq.kv_batch_put(["a", "b", "c"], pid, fields=two)
    with pytest.raises(ValueError):
        tq.kv_batch_put(["a", "b"], pid)
    with pytest.raises(ValueError):
        tq.kv_put("a", pid)
    with pytest.raises(ValueError):
        tq.kv_put("a", pid, fields=[1, 2])
    with pytest.raises(ValueError):
        tq.kv_batch_put(["a", "b"], pid, fields=two, tags=[{}])
    with pytest.raises(ValueError):
        tq.kv_clear([], pid)
    with pytest.raises(TypeError):
        tq.kv_clear([1], pid)
    with pytest.raises(ValueError):
        c.kv_retrieve_meta([], pid)
    with pytest.raises(TypeError):
        c.kv_retrieve_meta([1], pid)
    with pytest.raises(TypeError):
        c.kv_retrieve_meta(("a", "b"), pid)
    with pytest.raises(TypeError):
        c.kv_retrieve_keys(["0"], pid)
