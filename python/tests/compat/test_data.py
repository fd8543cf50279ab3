"""Scenarios 17 and 18 of docs/upstream_api.md §6.3: the async twins, and
the data types that go through put/get_data (dense tensors of several
dtypes, 1-D fields, ragged fields as nested tensors, strings and objects as
NonTensorStack, empty metas) with private results."""

from __future__ import annotations

import asyncio

import pytest
import torch
from tensordict import NonTensorStack, TensorDict

import transfer_queue as tq
from .conftest import unique


def dense(x) -> torch.Tensor:
    if isinstance(x, torch.Tensor) and x.is_nested:
        return torch.stack(list(x.unbind()))
    return torch.as_tensor(x)


def rows(x) -> list:
    """A field of get_data's result as a list of per-sample tensors."""
    if isinstance(x, torch.Tensor) and x.is_nested:
        return list(x.unbind())
    return list(x)


def test_s17_async_kv_functions(tq_default):
    pid = unique("akv")

    async def run():
        m = await tq.async_kv_put("a", pid, fields={"x": torch.tensor([1, 2])}, tag={"t": 1})
        assert m.keys == ["a"]
        await tq.async_kv_batch_put(["b", "c"], pid, fields=TensorDict({"x": torch.tensor([[3, 4], [5, 6]])},
                                                                       batch_size=2), tags=[{}, {"t": 3}])
        listed = await tq.async_kv_list(pid)
        got = await tq.async_kv_batch_get(["c", "a"], pid)
        by_meta = await tq.async_kv_batch_get_by_meta(m)
        await tq.async_kv_clear(["a"], pid)
        after = await tq.async_kv_list(pid)
        return listed, got, by_meta, after

    listed, got, by_meta, after = asyncio.run(run())
    assert listed == {pid: {"a": {"t": 1}, "b": {}, "c": {"t": 3}}}
    assert torch.equal(dense(got["x"]), torch.tensor([[5, 6], [1, 2]]))
    assert torch.equal(dense(by_meta["x"]), torch.tensor([[1, 2]]))
    assert after == {pid: {"b": {}, "c": {"t": 3}}}


def test_s17_async_client_methods(tq_default):
    c = tq_default
    pid = unique("ac")

    async def run():
        meta = await c.async_put(TensorDict({"x": torch.arange(4)}, batch_size=4), partition_id=pid)
        got = await c.async_get_meta(["x"], 4, pid, task_name="t")
        data = await c.async_get_data(got)
        prod = await c.async_get_production_status(["x"], pid)
        cons = await c.async_get_consumption_status("t", pid)
        ok = await c.async_check_consumption_status("t", pid)
        reset = await c.async_reset_consumption(pid, "t")
        meta.update_custom_meta([{"i": i} for i in range(4)])
        await c.async_set_custom_meta(meta)
        listed = await c.async_get_partition_list()
        await c.async_clear_partition(pid)
        after = await c.async_get_partition_list()
        other = await c.async_put(TensorDict({"x": torch.arange(2)}, batch_size=2), partition_id=pid + "b")
        await c.async_clear_samples(other)
        forced = await c.async_get_meta(["x"], 2, pid + "b", "force_fetch")
        return meta, got, data, prod, cons, ok, reset, listed, after, forced

    meta, got, data, prod, cons, ok, reset, listed, after, forced = asyncio.run(run())
    assert sorted(got.global_indexes) == sorted(meta.global_indexes)
    assert sorted(dense(data["x"]).tolist()) == [0, 1, 2, 3]
    assert prod[1].dtype == torch.int8 and cons[1].dtype == torch.int8
    assert ok is True and reset is True
    assert pid in listed and pid not in after
    assert forced.size == 0


def test_s18_uniform_dtypes_round_trip(tq_default):
    c = tq_default
    pid = unique("dt")
    src = {
        "f32": torch.randn(3, 4),
        "bf16": torch.randn(3, 2, 2).to(torch.bfloat16),
        "i64": torch.arange(6).reshape(3, 2),
        "i32": torch.arange(3, dtype=torch.int32),
        "u8": torch.tensor([[1, 2], [3, 4], [5, 6]], dtype=torch.uint8),
        "b": torch.tensor([True, False, True]),
        "f16": torch.randn(3, 1).half(),
    }
    meta = c.put(TensorDict(src, batch_size=3), partition_id=pid)
    assert meta.field_schema["bf16"]["dtype"] == torch.bfloat16
    assert tuple(meta.field_schema["f32"]["shape"]) == (4,)
    out = c.get_data(meta)
    assert out.batch_size[0] == 3
    for k, v in src.items():
        got = dense(out[k])
        assert got.dtype == v.dtype, k
        assert got.shape == v.shape, k
        assert torch.equal(got, v), k


def test_s18_one_dim_field_is_dense(tq_default):
    c = tq_default
    meta = c.put(TensorDict({"s": torch.tensor([1.5, 2.5, 3.5])}, batch_size=3), partition_id=unique("dt"))
    out = c.get_data(meta)
    assert isinstance(out["s"], torch.Tensor) and not out["s"].is_nested
    assert out["s"].shape == (3,)
    assert torch.equal(out["s"], torch.tensor([1.5, 2.5, 3.5]))


def test_s18_ragged_field_is_nested(tq_default):
    c = tq_default
    parts = [torch.arange(2), torch.arange(5), torch.arange(3)]
    nt = torch.nested.as_nested_tensor(parts, layout=torch.jagged)
    meta = c.put(TensorDict({"r": nt}, batch_size=3), partition_id=unique("dt"))
    assert meta.field_schema["r"]["is_nested"] is True
    assert [tuple(s) for s in meta.get_shapes("r")] == [(2,), (5,), (3,)]
    out = c.get_data(meta)
    assert out["r"].is_nested
    for a, b in zip(out["r"].unbind(), parts):
        assert torch.equal(a, b)


def test_s18_shapes_varying_between_puts(tq_default):
    c = tq_default
    pid = unique("dt")
    c.put(TensorDict({"v": torch.zeros(2, 3)}, batch_size=2), partition_id=pid)
    c.put(TensorDict({"v": torch.ones(2, 5)}, batch_size=2), partition_id=pid)
    got = c.get_meta(["v"], 4, pid, task_name="t")
    out = c.get_data(got)
    lens = sorted(r.shape[0] for r in rows(out["v"]))
    assert lens == [3, 3, 5, 5]


def test_s18_strings_and_objects(tq_default):
    c = tq_default
    pid = unique("dt")
    data = TensorDict({"text": NonTensorStack("hello", "wörld", ""),
                       "obj": NonTensorStack({"a": 1}, [1, 2], None),
                       "x": torch.arange(3)}, batch_size=3)
    meta = c.put(data, partition_id=pid)
    assert meta.field_schema["text"]["is_non_tensor"] is True
    out = c.get_data(meta)
    assert isinstance(out["text"], (list, NonTensorStack)) or hasattr(out["text"], "tolist")
    assert list(out.get("text").tolist()) == ["hello", "wörld", ""]
    assert list(out.get("obj").tolist()) == [{"a": 1}, [1, 2], None]


def test_s18_bytes_values(tq_default):
    c = tq_default
    data = TensorDict({"raw": NonTensorStack(b"\x00\x01", b"xyz")}, batch_size=2)
    meta = c.put(data, partition_id=unique("dt"))
    assert list(c.get_data(meta).get("raw").tolist()) == [b"\x00\x01", b"xyz"]


def test_s18_empty_meta_gives_empty_tensordict(tq_default):
    out = tq_default.get_data(tq.BatchMeta.empty())
    assert isinstance(out, TensorDict)
    assert out.batch_size[0] == 0 and len(list(out.keys())) == 0


def test_s18_results_are_private_copies(tq_default):
    c = tq_default
    meta = c.put(TensorDict({"x": torch.zeros(2, 3)}, batch_size=2), partition_id=unique("dt"))
    first = c.get_data(meta)
    second = c.get_data(meta)
    x = first["x"]
    if x.is_nested:
        x.values().fill_(9.0)
    else:
        x.fill_(9.0)
    assert torch.equal(dense(second["x"]), torch.zeros(2, 3))
    assert torch.equal(dense(c.get_data(meta)["x"]), torch.zeros(2, 3))
