"""Data model: dtypes, shapes, ragged and object fields, BatchMeta, get_meta
modes, consumption, clearing and sampling; over both storage backends."""

import pickle
import threading
import warnings
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import transfer_queue as tq
from tensordict import TensorDict
from transfer_queue import BatchMeta

from conftest import make_client, stop_controller, unique

DTYPES = [torch.bool, torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64,
          torch.float16, torch.bfloat16, torch.float32, torch.float64]


def sample_tensor(dtype, shape):
    g = torch.Generator().manual_seed(1234)
    if dtype == torch.bool:
        return torch.randint(0, 2, shape, generator=g).bool()
    if dtype.is_floating_point:
        return (torch.randn(shape, generator=g) * 100).to(dtype)
    info = torch.iinfo(dtype)
    return torch.randint(max(info.min, -1000), min(info.max, 1000), shape, generator=g).to(dtype)


def roundtrip(client, data, fields=None, batch_size=None, task="t"):
    partition = unique("rt")
    if isinstance(data, dict):
        n = batch_size
        client.put(data=TensorDict(data, batch_size=[n]), partition_id=partition)
        fields = fields or list(data.keys())
    else:
        n = data.batch_size[0]
        client.put(data=data, partition_id=partition)
        fields = fields or list(data.keys())
    meta = client.get_meta(data_fields=fields, batch_size=n, partition_id=partition, task_name=task)
    assert len(meta) == n
    out = client.get_data(meta)
    assert isinstance(out, TensorDict) and out.batch_size == torch.Size([n])
    return out


def assert_jagged(value, want):
    """value is a jagged nested tensor whose samples equal the tensors in want."""
    assert isinstance(value, torch.Tensor) and value.is_nested and value.layout is torch.jagged, value
    parts = value.unbind()
    assert len(parts) == len(want)
    for got, w in zip(parts, want):
        assert got.dtype == w.dtype and got.shape == w.shape and torch.equal(got, w)


# ------------------------------------------------------------------ dtypes and shapes

@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d).split(".")[1])
def test_dtype_roundtrip(client, dtype):
    x = sample_tensor(dtype, (4, 3, 5))
    out = roundtrip(client, {"x": x}, batch_size=4)
    assert out["x"].dtype == dtype
    assert out["x"].shape == (4, 3, 5)
    assert torch.equal(out["x"], x)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d).split(".")[1])
def test_dtype_roundtrip_ragged(client, dtype):
    xs = [sample_tensor(dtype, (n,)) for n in (1, 4, 2)]
    out = roundtrip(client, {"x": xs}, batch_size=3)
    assert out["x"].dtype == dtype
    assert_jagged(out["x"], xs)


def test_field_schema_records_dtype_and_per_sample_shape(client, partition):
    meta = client.put(data=TensorDict({"x": torch.zeros(3, 7, dtype=torch.float16),
                                       "s": torch.arange(3)}, batch_size=[3]), partition_id=partition)
    schema = meta.field_schema
    assert schema["x"]["dtype"] == torch.float16 and tuple(schema["x"]["shape"]) == (7,)
    assert schema["s"]["dtype"] == torch.int64 and tuple(schema["s"]["shape"]) == (1,)  # upstream's record of a 1-D field
    assert not schema["x"]["ragged"] and not schema["x"]["is_nested"]


def test_scalar_per_sample_keeps_shape(client):
    x = torch.tensor([1.5, -2.0, 3.25])
    out = roundtrip(client, {"x": x}, batch_size=3)
    assert out["x"].shape == (3,)  # not (3, 1)
    assert torch.equal(out["x"], x)


def test_list_of_0d_tensors_comes_back_dense(client):
    xs = [torch.tensor(7), torch.tensor(8)]
    out = roundtrip(client, {"x": xs}, batch_size=2)
    assert isinstance(out["x"], torch.Tensor)
    assert out["x"].shape == (2,)
    assert out["x"].tolist() == [7, 8]


def test_uniform_list_of_tensors_comes_back_dense(client):
    xs = [torch.arange(4) + 10 * i for i in range(3)]
    out = roundtrip(client, {"x": xs}, batch_size=3)
    assert isinstance(out["x"], torch.Tensor), "uniform fields must come back as one dense tensor"
    assert out["x"].shape == (3, 4)
    assert torch.equal(out["x"], torch.stack(xs))


def test_ragged_field_list_of_tensors(client):
    xs = [torch.arange(3), torch.arange(5) * 2, torch.arange(1)]
    out = roundtrip(client, {"r": xs, "d": torch.ones(3, 2)}, batch_size=3)
    assert_jagged(out["r"], xs)
    assert [t.shape[0] for t in out["r"].unbind()] == [3, 5, 1]
    assert isinstance(out["d"], torch.Tensor) and out["d"].shape == (3, 2)


def test_ragged_2d_field(client):
    xs = [torch.randn(2, 3), torch.randn(4, 3)]
    out = roundtrip(client, {"r": xs}, batch_size=2)
    assert_jagged(out["r"], xs)
    assert out["r"].shape[2] == 3


def test_ragged_field_is_a_usable_jagged_tensor(client):
    """The jagged field works with what consumers do with one: offsets,
    values, and ops over the ragged dimension."""
    xs = [torch.arange(3, dtype=torch.float32), torch.arange(5, dtype=torch.float32)]
    out = roundtrip(client, {"r": xs}, batch_size=2)
    r = out["r"]
    assert_jagged(r, xs)
    assert r.offsets().tolist() == [0, 3, 8]
    assert torch.equal(r.values(), torch.cat(xs))
    assert torch.equal((r * 2).values(), torch.cat(xs) * 2)


def test_nested_tensor_input_is_accepted(client):
    xs = [torch.arange(2), torch.arange(6)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        nt = torch.nested.nested_tensor(xs)
    partition = unique()
    client.put(data=TensorDict({"r": nt}, batch_size=[2]), partition_id=partition)
    out = client.get_data(client.get_meta(["r"], 2, partition, task_name="t"))
    assert_jagged(out["r"], xs)


def test_non_contiguous_tensor(client):
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    x = base.t()  # (6, 4), not contiguous
    assert not x.is_contiguous()
    out = roundtrip(client, {"x": x}, batch_size=6)
    assert torch.equal(out["x"], x)


def test_tensors_are_read_in_place(client):
    """Tensors cross into C++ through data_ptr(): ones that need grad, views
    that start inside their storage, bfloat16 and empty tensors all arrive."""
    w = torch.randn(3, 4, requires_grad=True)
    base = torch.arange(40, dtype=torch.int64)
    view = base[8:20].view(3, 4)  # storage offset 8
    assert view.storage_offset() == 8 and view.is_contiguous()
    bf = torch.randn(3, 2).to(torch.bfloat16)
    empty = torch.zeros(3, 0)
    rag = [torch.randn(k, requires_grad=True) for k in (1, 3, 2)]
    out = roundtrip(client, {"w": w, "view": view, "bf": bf, "empty": empty, "rag": rag}, batch_size=3)
    assert torch.equal(out["w"], w.detach()) and not out["w"].requires_grad
    assert torch.equal(out["view"], view) and torch.equal(out["bf"], bf)
    assert out["empty"].shape == (3, 0)
    assert_jagged(out["rag"], [t.detach() for t in rag])


def test_numpy_arrays_accepted(client):
    a = np.arange(12, dtype=np.int32).reshape(3, 4)
    f = np.linspace(0, 1, 3, dtype=np.float64)
    rag = [np.arange(2, dtype=np.float32), np.arange(5, dtype=np.float32)]
    out = roundtrip(client, {"a": a, "f": f}, batch_size=3)
    assert out["a"].dtype == torch.int32 and torch.equal(out["a"], torch.from_numpy(a))
    assert torch.equal(out["f"], torch.from_numpy(f))
    out = roundtrip(client, {"r": rag}, batch_size=2)
    assert_jagged(out["r"], [torch.from_numpy(x) for x in rag])


def test_plain_dict_input(client, partition):
    client.put(data={"x": torch.arange(4), "s": ["a", "b", "c", "d"]}, partition_id=partition)
    out = client.get_data(client.get_meta(["x", "s"], 4, partition, task_name="t"))
    assert out["x"].tolist() == [0, 1, 2, 3] and out["s"] == ["a", "b", "c", "d"]


def test_output_is_writable_copy_or_safe(client):
    """Dense outputs are usable as normal tensors (arithmetic, in-place ops)."""
    out = roundtrip(client, {"x": torch.ones(2, 3)}, batch_size=2)
    y = out["x"] * 2
    assert torch.equal(y, torch.full((2, 3), 2.0))
    out["x"].add_(1)
    assert torch.equal(out["x"], torch.full((2, 3), 2.0))


def test_two_live_results_of_one_sample_are_independent(client, partition):
    """Upstream: a result is independent of storage and of another reader's
    result. Two get_data of the same samples in one process, both alive:
    writing into one changes neither the other nor what a third read sees."""
    data = torch.arange(4 * 4096, dtype=torch.float32).reshape(4, 4096)  # 64 KiB per sample
    meta = client.put(data=TensorDict({"x": data}, batch_size=[4]), partition_id=partition)
    first = client.get_data(meta)["x"]
    second = client.get_data(meta)["x"]
    first.mul_(-1)
    second[0].fill_(7)
    assert torch.equal(first, -data)
    assert torch.equal(second[1:], data[1:]) and bool((second[0] == 7).all())
    assert torch.equal(client.get_data(meta)["x"], data)


# ------------------------------------------------------------------ object fields

def test_strings_bytes_and_objects(client):
    strings = ["plain", "ünïcødé ✓", ""]
    blobs = [b"\x00\x01\xff", b"", bytes(range(256)) * 10]
    objs = [{"k": 1}, {"nested": [1, 2.5, "x"], "t": (1, 2)}, None]
    out = roundtrip(client, {"s": strings, "b": blobs, "o": objs}, batch_size=3)
    assert out["s"] == strings
    assert all(isinstance(v, str) for v in out["s"])
    assert out["b"] == blobs
    assert all(isinstance(v, bytes) for v in out["b"])
    assert out["o"] == objs


def test_object_field_schema_kind(client, partition):
    meta = client.put(data=TensorDict({"s": ["x", "y"], "b": [b"1", b"2"], "o": [1, {}]}, batch_size=[2]),
                      partition_id=partition)
    kinds = {k: v["kind"] for k, v in meta.field_schema.items()}
    assert len(set(kinds.values())) == 3, kinds  # string, bytes and pickle are told apart


def test_large_object_values(client):
    big = "x" * (1 << 20)
    out = roundtrip(client, {"s": [big, "y"]}, batch_size=2)
    assert out["s"][0] == big and out["s"][1] == "y"


def test_field_subset(client, partition):
    client.put(data=TensorDict({"a": torch.arange(3), "b": ["x", "y", "z"]}, batch_size=[3]),
               partition_id=partition)
    meta = client.get_meta(data_fields=["b"], batch_size=3, partition_id=partition, task_name="t")
    assert meta.field_names == ["b"]
    out = client.get_data(meta)
    assert list(out.keys()) == ["b"]
    assert out["b"] == ["x", "y", "z"]


# ------------------------------------------------------------------ put into existing samples

def test_put_with_metadata_adds_fields(client, partition):
    prompts = torch.arange(8).reshape(4, 2)
    meta = client.put(data=TensorDict({"prompt": prompts}, batch_size=[4]), partition_id=partition)
    assert len(meta) == 4
    # Not ready yet for a reader that needs "response".
    assert len(client.get_meta(["prompt", "response"], 4, partition, task_name="train", mode="poll")) == 0
    # The rollout reads the prompts, and writes responses into the same samples.
    rmeta = client.get_meta(["prompt"], 4, partition, task_name="rollout")
    responses = [torch.full((n,), n) for n in (1, 2, 3, 4)]
    client.put(data=TensorDict({"response": responses, "score": torch.tensor([0.1, 0.2, 0.3, 0.4])},
                               batch_size=[4]), metadata=rmeta)
    status = client.get_production_status(partition)
    assert status["num_samples"] == 4
    assert status["produced"]["response"] == 4
    tmeta = client.get_meta(["prompt", "response", "score"], 4, partition, task_name="train")
    assert sorted(tmeta.global_indexes) == sorted(meta.global_indexes)
    out = client.get_data(tmeta)
    assert torch.equal(out["prompt"], prompts)
    assert_jagged(out["response"], responses)
    assert torch.allclose(out["score"], torch.tensor([0.1, 0.2, 0.3, 0.4]))


def test_put_with_metadata_of_a_subset(client, partition):
    meta = client.put(data=TensorDict({"a": torch.arange(4)}, batch_size=[4]), partition_id=partition)
    sub = meta.select_samples([1, 3])
    client.put(data=TensorDict({"b": torch.tensor([10, 30])}, batch_size=[2]), metadata=sub)
    m = client.get_meta(["a", "b"], 4, partition, task_name="t", mode="poll")
    assert sorted(m.global_indexes) == sorted(sub.global_indexes)
    out = client.get_data(m)
    assert sorted(zip(out["a"].tolist(), out["b"].tolist())) == [(1, 10), (3, 30)]


# ------------------------------------------------------------------ BatchMeta

def test_batch_meta_pickles(client, partition):
    client.put(data=TensorDict({"a": torch.arange(4), "s": list("wxyz")}, batch_size=[4]),
               partition_id=partition)
    meta = client.get_meta(["a", "s"], 4, partition, task_name="t")
    meta.set_custom_meta([{"i": i, "f": 0.5 * i, "s": str(i)} for i in range(4)])
    again = pickle.loads(pickle.dumps(meta))
    assert again == meta
    assert again is not meta
    assert again.global_indexes == meta.global_indexes
    assert again.field_names == meta.field_names
    assert again.get_custom_meta() == meta.get_custom_meta()
    assert [type(d["f"]) for d in again.get_custom_meta()] == [float] * 4  # 0.0 and 1.0 stay floats
    assert type(again) is tq.BatchMeta and type(again).__module__ == "transfer_queue.metadata"  # upstream's path
    out = client.get_data(again)  # an unpickled meta is as good as the original
    assert out["a"].tolist() == [0, 1, 2, 3] and out["s"] == list("wxyz")


def test_batch_meta_inequality(client, partition):
    client.put(data=TensorDict({"a": torch.arange(4)}, batch_size=[4]), partition_id=partition)
    meta = client.get_meta(["a"], 4, partition, task_name="t")
    assert meta != meta.select_samples([0, 1])
    assert not (meta == BatchMeta())


def test_batch_meta_select_chunk_concat(client, partition):
    client.put(data=TensorDict({"a": torch.arange(6), "b": torch.arange(6) * 10}, batch_size=[6]),
               partition_id=partition)
    meta = client.get_meta(["a", "b"], 6, partition, task_name="t")
    idx = meta.global_indexes

    sel = meta.select_samples([4, 0, 2])
    assert sel.global_indexes == [idx[4], idx[0], idx[2]]
    assert len(sel) == 3 and sel.size == 3
    assert client.get_data(sel)["a"].tolist() == [4, 0, 2]

    only_b = meta.select_fields(["b"])
    assert only_b.field_names == ["b"]
    out = client.get_data(only_b)
    assert list(out.keys()) == ["b"] and out["b"].tolist() == [0, 10, 20, 30, 40, 50]

    chunks = meta.chunk(3)
    assert [len(c) for c in chunks] == [2, 2, 2]
    assert sum((c.global_indexes for c in chunks), []) == idx
    assert BatchMeta.concat(chunks) == meta
    uneven = meta.chunk(4)
    assert sum(len(c) for c in uneven) == 6
    assert client.get_data(BatchMeta.concat([chunks[2], chunks[0]]))["a"].tolist() == [4, 5, 0, 1]

    with pytest.raises(ValueError):
        meta.select_samples([6])
    assert meta.select_fields(["b", "nope"]).field_names == ["b"]  # unknown names are dropped, as upstream


def test_custom_meta_set_and_get(client, partition):
    meta = client.put(data=TensorDict({"a": torch.arange(3)}, batch_size=[3]), partition_id=partition)
    values = [{"seq_len": 10 * (i + 1), "reward": 0.25 * i, "tag": f"s{i}"} for i in range(3)]
    meta.set_custom_meta(values)
    assert meta.get_custom_meta() == values  # local
    client.set_custom_meta(meta)
    got = client.get_custom_meta(partition, meta.global_indexes)
    assert got.global_indexes == meta.global_indexes
    assert got.get_custom_meta() == values
    # Types survive the wire: a float that happens to be integral stays a float.
    assert [type(d["reward"]) for d in got.get_custom_meta()] == [float] * 3
    assert [type(d["seq_len"]) for d in got.get_custom_meta()] == [int] * 3
    # The controller hands the custom meta to readers too.
    fetched = client.get_meta(["a"], 3, partition, task_name="t")
    by_index = dict(zip(fetched.global_indexes, fetched.get_custom_meta()))
    assert [by_index[i] for i in meta.global_indexes] == values
    with pytest.raises(tq.InvalidArgumentError):
        meta.set_custom_meta(values[:2])


# ------------------------------------------------------------------ get_meta modes and consumption

def test_get_meta_fetch_poll_force_fetch(client, partition):
    client.put(data=TensorDict({"a": torch.arange(5)}, batch_size=[5]), partition_id=partition)

    # poll: up to batch_size now, may be fewer.
    p = client.get_meta(["a"], 3, partition, task_name="poller", mode="poll")
    assert len(p) == 3
    p2 = client.get_meta(["a"], 3, partition, task_name="poller", mode="poll")
    assert len(p2) == 2
    assert not set(p.global_indexes) & set(p2.global_indexes)
    assert len(client.get_meta(["a"], 3, partition, task_name="poller", mode="poll")) == 0

    # force_fetch: present samples, marks nothing consumed.
    f1 = client.get_meta(["a"], 5, partition, task_name="forcer", mode="force_fetch")
    f2 = client.get_meta(["a"], 5, partition, task_name="forcer", mode="force_fetch")
    assert len(f1) == 5 and f1.global_indexes == f2.global_indexes
    assert client.get_consumption_status(partition_id=partition, task_name="forcer")["consumed"] == 0

    # fetch: exactly batch_size, consumed.
    f = client.get_meta(["a"], 5, partition, task_name="forcer", mode="fetch", timeout=5)
    assert sorted(f.global_indexes) == sorted(f1.global_indexes)
    assert client.get_consumption_status(partition_id=partition, task_name="forcer")["consumed"] == 5
    with pytest.raises(tq.TimeoutError_):
        client.get_meta(["a"], 1, partition, task_name="forcer", mode="fetch", timeout=0.2)


def test_fetch_waits_for_enough_samples(client, partition):
    client.put(data=TensorDict({"a": torch.arange(2)}, batch_size=[2]), partition_id=partition)
    with pytest.raises(TimeoutError):
        client.get_meta(["a"], 3, partition, task_name="t", mode="fetch", timeout=0.2)
    # The failed fetch consumed nothing.
    client.put(data=TensorDict({"a": torch.arange(2, 4)}, batch_size=[2]), partition_id=partition)
    m = client.get_meta(["a"], 3, partition, task_name="t", mode="fetch", timeout=5)
    assert client.get_data(m)["a"].tolist() == [0, 1, 2]


def test_exactly_once_per_task_two_tasks(client, partition):
    n = 20
    client.put(data=TensorDict({"a": torch.arange(n)}, batch_size=[n]), partition_id=partition)
    for task in ("actor", "critic"):
        seen = []
        while True:
            m = client.get_meta(["a"], 3, partition, task_name=task, mode="poll")
            if len(m) == 0:
                break
            seen += client.get_data(m)["a"].tolist()
        assert sorted(seen) == list(range(n)), task  # every sample, once
        st = client.get_consumption_status(partition_id=partition, task_name=task)
        assert st["consumed"] == n and st["num_samples"] == n


def test_exactly_once_with_concurrent_consumers(client, make_another_client, partition):
    n = 60
    client.put(data=TensorDict({"a": torch.arange(n)}, batch_size=[n]), partition_id=partition)
    consumers = [make_another_client() for _ in range(3)]
    seen = [[] for _ in consumers]
    errors = []

    def consume(i):
        try:
            while True:
                m = consumers[i].get_meta(["a"], 4, partition, task_name="shared", mode="poll")
                if len(m) == 0:
                    return
                seen[i].extend(consumers[i].get_data(m)["a"].tolist())
        except Exception as e:  # pragma: no cover
            errors.append(e)

    threads = [threading.Thread(target=consume, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    allseen = sum(seen, [])
    assert sorted(allseen) == list(range(n))


def test_reset_consumption(client, partition):
    client.put(data=TensorDict({"a": torch.arange(3)}, batch_size=[3]), partition_id=partition)
    client.get_meta(["a"], 3, partition, task_name="t")
    assert len(client.get_meta(["a"], 3, partition, task_name="t", mode="poll")) == 0
    client.reset_consumption(partition, "t")
    assert len(client.get_meta(["a"], 3, partition, task_name="t", mode="poll")) == 3


# ------------------------------------------------------------------ partitions and clearing

def test_partitions_are_isolated(client):
    p1, p2 = unique("iso"), unique("iso")
    client.put(data=TensorDict({"a": torch.zeros(2)}, batch_size=[2]), partition_id=p1)
    client.put(data=TensorDict({"a": torch.ones(3)}, batch_size=[3]), partition_id=p2)
    parts = client.list_partitions()
    assert p1 in parts and p2 in parts
    m1 = client.get_meta(["a"], 5, p1, task_name="t", mode="poll")
    assert len(m1) == 2 and set(m1.partition_ids) == {p1}
    assert torch.equal(client.get_data(m1)["a"], torch.zeros(2))


def test_clear_partition_then_stale_meta_raises_not_found(client, partition):
    client.put(data=TensorDict({"a": torch.arange(4), "s": list("abcd")}, batch_size=[4]),
               partition_id=partition)
    meta = client.get_meta(["a", "s"], 4, partition, task_name="t")
    client.clear_partition(partition)
    with pytest.raises(tq.NotFoundError) as ei:
        client.get_data(meta)
    assert isinstance(ei.value, KeyError)
    assert partition not in client.list_partitions()
    client.clear_partition(partition)  # idempotent


def test_reused_partition_name_after_clear_does_not_leak(client, partition):
    client.put(data=TensorDict({"a": torch.zeros(3)}, batch_size=[3]), partition_id=partition)
    old = client.get_meta(["a"], 3, partition, task_name="t")
    client.clear_partition(partition)
    client.put(data=TensorDict({"a": torch.ones(3)}, batch_size=[3]), partition_id=partition)
    new = client.get_meta(["a"], 3, partition, task_name="t")
    assert torch.equal(client.get_data(new)["a"], torch.ones(3))
    with pytest.raises(tq.NotFoundError):
        client.get_data(old)  # never the new partition's data


def test_clear_samples(client, backend, partition):
    meta = client.put(data=TensorDict({"a": torch.arange(4)}, batch_size=[4]), partition_id=partition)
    client.clear_samples(meta.select_samples([0, 1]))
    if backend == "yuanrong":
        # The datasystem packs a put's small values into one object, freed
        # when its last sample is cleared: until then a meta taken before the
        # clear still reads the cleared sample's own bytes, never another's.
        assert client.get_data(meta.select_samples([0]))["a"].tolist() == [0]
    else:
        with pytest.raises(tq.NotFoundError):
            client.get_data(meta.select_samples([0]))
    rest = client.get_meta(["a"], 4, partition, task_name="t", mode="poll")
    assert client.get_data(rest)["a"].tolist() == [2, 3]
    assert rest.global_indexes == meta.global_indexes[2:], "the controller never hands out a cleared sample"
    client.clear_samples(rest)
    with pytest.raises(tq.NotFoundError):
        client.get_data(meta.select_samples([0]))


def test_clear_frees_datasystem_memory(ds_worker, controller, partition):
    from datasystem import KVClient

    kv = KVClient(ds_worker.host, ds_worker.port)
    kv.init()
    c = make_client(controller, "yuanrong", ds_worker)
    before = kv.stats()
    c.put(data=TensorDict({"a": torch.zeros(8, 1 << 16)}, batch_size=[8]), partition_id=partition)
    during = kv.stats()
    assert during["objects"] >= before["objects"] + 8
    assert during["used"] >= before["used"] + 8 * (1 << 18)
    c.clear_partition(partition)
    after = kv.stats()
    assert after["objects"] <= during["objects"] - 8
    assert after["used"] <= during["used"] - 8 * (1 << 18)


def test_a_puts_small_values_share_one_object_per_field(ds_worker, controller, partition):
    """The datasystem backend packs a put's values below 64 KiB: each
    field's values into one object. A pack is freed when no sample uses it
    any more: cleared or overwritten, never before."""
    from datasystem import KVClient

    kv = KVClient(ds_worker.host, ds_worker.port)
    kv.init()
    c = make_client(controller, "yuanrong", ds_worker)
    n = 2000
    g = torch.Generator().manual_seed(7)
    x = torch.randn(n, 100, generator=g)
    ids = torch.randint(0, 1 << 40, (n, 3), generator=g)
    text = [f"sample {i} " + "é" * (i % 17) for i in range(n)]
    base = kv.stats()["objects"]
    meta = c.put(data={"x": x, "ids": ids, "text": text}, partition_id=partition)
    assert kv.stats()["objects"] == base + 3, "one pack per field"
    out = c.get_data(meta)
    assert torch.equal(out["x"], x) and torch.equal(out["ids"], ids) and list(out["text"]) == text
    # Any subset, in any order, reads its own samples' bytes.
    pick = [1999, 0, 777, 778, 5]
    sub = c.get_data(meta.select_samples(pick))
    assert torch.equal(sub["x"], x[pick]) and list(sub["text"]) == [text[i] for i in pick]

    # Half cleared: the packs keep the other half's values.
    c.clear_samples(meta.select_samples(list(range(n // 2))))
    assert kv.stats()["objects"] == base + 3
    rest = meta.select_samples(list(range(n // 2, n)))
    assert torch.equal(c.get_data(rest)["ids"], ids[n // 2:])
    # Field x of the other half rewritten: a new pack for it; the old one has
    # no user left and is freed.
    x2 = torch.full((n // 2, 100), 3.0)
    c.put(data={"x": x2}, metadata=rest)
    assert kv.stats()["objects"] == base + 3
    fresh = c.get_meta(["x", "ids", "text"], n // 2, partition, task_name="t", mode="poll")
    back = c.get_data(fresh)
    assert torch.equal(back["x"], x2) and torch.equal(back["ids"], ids[n // 2:])
    assert list(back["text"]) == text[n // 2:]
    c.clear_samples(fresh)
    assert kv.stats()["objects"] == base, "the last clear frees every pack"

    # Values of 64 KiB and more stay objects of their own.
    big = c.put(data={"w": torch.ones(2, 1 << 14)}, partition_id=partition)
    assert kv.stats()["objects"] == base + 2
    assert torch.equal(c.get_data(big)["w"], torch.ones(2, 1 << 14))
    c.clear_partition(partition)
    assert kv.stats()["objects"] == base


def test_readers_on_another_node_pull_only_their_share_of_a_pack(controller, partition, tmp_path):
    """Trainer ranks on other nodes each read their part of a put: each
    worker pulls the bytes of the samples its reader asked for, not the
    whole pack (one object per field) the writer's put made."""
    from datasystem import KVClient
    from test_yr_differential import _ours_cluster

    with _ours_cluster(tmp_path, 2) as ports:
        writer_node, reader_node = (SimpleNamespace(host="127.0.0.1", port=p) for p in ports)
        stats = KVClient("127.0.0.1", ports[1])
        stats.init()
        writer = make_client(controller, "yuanrong", writer_node)
        reader = make_client(controller, "yuanrong", reader_node)
        n, ranks = 1024, 8
        x = torch.arange(n * 1024, dtype=torch.float32).reshape(n, 1024)  # 4 MiB, one pack
        text = [f"sample {i}" for i in range(n)]
        meta = writer.put(data={"x": x, "text": text}, partition_id=partition)
        share = n // ranks
        before = stats.stats()["pulled_bytes"]
        rank = 5
        part = reader.get_data(meta.select_samples(list(range(rank * share, (rank + 1) * share))))
        assert torch.equal(part["x"], x[rank * share:(rank + 1) * share])
        assert list(part["text"]) == text[rank * share:(rank + 1) * share]
        pulled = stats.stats()["pulled_bytes"] - before
        x_share = share * 1024 * 4
        assert x_share <= pulled < x_share + 4096, f"pulled {pulled} bytes for a share of {x_share}"
        # Scattered samples: the range from the first to the last one asked for.
        pick = [3, 900, 17]
        before = stats.stats()["pulled_bytes"]
        some = reader.get_data(meta.select_samples(pick))
        assert torch.equal(some["x"], x[pick]) and list(some["text"]) == [text[i] for i in pick]
        assert stats.stats()["pulled_bytes"] - before < (900 - 3 + 1) * 1024 * 4 + 16384
        # The whole put, read on the other node, is byte-identical.
        whole = reader.get_data(meta)
        assert torch.equal(whole["x"], x) and list(whole["text"]) == text
        reader.clear_samples(meta)


def test_two_controllers_sharing_one_worker_do_not_collide(ds_worker):
    """Two jobs on one node share its datasystem worker; each may call its
    partition "train_0". Neither may read (or overwrite) the other's data."""
    c1 = tq.TransferQueueControllerHandle()
    c2 = tq.TransferQueueControllerHandle()
    try:
        a = make_client(c1, "yuanrong", ds_worker)
        b = make_client(c2, "yuanrong", ds_worker)
        a.put(data=TensorDict({"x": torch.zeros(2, 4)}, batch_size=[2]), partition_id="train_0")
        b.put(data=TensorDict({"x": torch.ones(2, 4)}, batch_size=[2]), partition_id="train_0")
        ma = a.get_meta(["x"], 2, "train_0", task_name="t")
        mb = b.get_meta(["x"], 2, "train_0", task_name="t")
        assert torch.equal(b.get_data(mb)["x"], torch.ones(2, 4))
        assert torch.equal(a.get_data(ma)["x"], torch.zeros(2, 4)), "job 2 overwrote job 1's samples"
        b.clear_partition("train_0")
        assert torch.equal(a.get_data(ma)["x"], torch.zeros(2, 4)), "job 2's clear deleted job 1's samples"
    finally:
        stop_controller(c1)
        stop_controller(c2)


# ------------------------------------------------------------------ sampling

def test_sampling_grpo_group_n(request, backend, own_controller, partition):
    # Groups are runs of n consecutive GLOBAL INDEXES among the ready samples,
    # scanned in ascending order (upstream's GRPOGroupNSampler). A controller
    # of its own gives this partition indexes 0-5.
    worker = request.getfixturevalue("ds_worker") if backend == "yuanrong" else None
    client = make_client(own_controller, backend, worker)
    n = 2
    meta = client.put(data=TensorDict({"a": torch.arange(6)}, batch_size=[6]), partition_id=partition)
    assert meta.global_indexes == [0, 1, 2, 3, 4, 5]
    # "b" for samples 0, 1, 3, 4, 5: the runs of 2 are (0, 1) and (3, 4).
    client.put(data=TensorDict({"b": torch.tensor([0, 1, 3, 4, 5])}, batch_size=[5]),
               metadata=meta.select_samples([0, 1, 3, 4, 5]))
    cfg = {"sampler": "grpo_group_n", "n_samples_per_prompt": n}
    m = client.get_meta(["a", "b"], 4, partition, task_name="grpo", sampling_config=cfg, mode="poll")
    assert sorted(client.get_data(m)["a"].tolist()) == [0, 1, 3, 4]
    assert len(client.get_meta(["a", "b"], 2, partition, task_name="grpo", sampling_config=cfg,
                               mode="poll")) == 0  # 5 alone is no run
    # A sequential reader takes everything ready.
    seq = client.get_meta(["a", "b"], 5, partition, task_name="seq", mode="poll")
    assert sorted(client.get_data(seq)["a"].tolist()) == [0, 1, 3, 4, 5]
    # Producing sample 2 makes no run (3 is consumed); a new sample 6 makes (5, 6).
    client.put(data=TensorDict({"b": torch.tensor([2])}, batch_size=[1]), metadata=meta.select_samples([2]))
    assert len(client.get_meta(["a", "b"], 2, partition, task_name="grpo", sampling_config=cfg,
                               mode="poll")) == 0
    client.put(data=TensorDict({"a": torch.tensor([6]), "b": torch.tensor([6])}, batch_size=[1]),
               partition_id=partition)
    m = client.get_meta(["a", "b"], 2, partition, task_name="grpo", sampling_config=cfg, mode="fetch", timeout=5)
    assert sorted(client.get_data(m)["a"].tolist()) == [5, 6]
    with pytest.raises(tq.InvalidArgumentError, match="multiple"):
        client.get_meta(["a"], 3, partition, task_name="grpo2", sampling_config=cfg, mode="poll")


def test_sampling_upstream_n_samples_per_prompt_alone(client, partition):
    meta = client.put(data=TensorDict({"a": torch.arange(4)}, batch_size=[4]), partition_id=partition)
    client.put(data=TensorDict({"b": torch.tensor([0, 2, 3])}, batch_size=[3]),
               metadata=meta.select_samples([0, 2, 3]))
    m = client.get_meta(["a", "b"], 4, partition, task_name="g", mode="poll",
                        sampling_config={"n_samples_per_prompt": 2})
    assert sorted(client.get_data(m)["a"].tolist()) == [2, 3]


def test_sampling_config_from_omegaconf(client, partition):
    from omegaconf import OmegaConf

    client.put(data=TensorDict({"a": torch.arange(4)}, batch_size=[4]), partition_id=partition)
    cfg = OmegaConf.create({"sampler": "grpo_group_n", "n_samples_per_prompt": 2})
    m = client.get_meta(["a"], 4, partition, task_name="g", sampling_config=cfg)
    assert len(m) == 4


def test_unknown_sampler_is_rejected(client, partition):
    client.put(data=TensorDict({"a": torch.arange(2)}, batch_size=[2]), partition_id=partition)
    with pytest.raises(tq.InvalidArgumentError, match="sequential"):
        client.get_meta(["a"], 2, partition, task_name="t", sampling_config={"sampler": "nope"}, mode="poll")
