"""Real tensordict.TensorDicts in and out, over both storage backends.

What get_data returns for each kind of field (upstream TransferQueue 0.1.11
returns the same kinds, except that it makes uniform tensor fields jagged
too, where we return them dense):
  uniform tensors                     -> a dense tensor
  samples differing in one dimension  -> a jagged nested tensor
  ... in several dimensions           -> a strided nested tensor
  tensors of different ranks          -> a NonTensorStack of tensors
  str, bytes, other objects           -> a NonTensorStack of them
  numpy bytes (S) / str (U) arrays    -> a NonTensorStack of bytes / str
  numpy object arrays                 -> a NonTensorStack of the elements
"""

import pickle
import threading

import numpy as np
import pytest
import torch
from tensordict import NonTensorData, NonTensorStack, TensorDict, TensorDictBase

import transfer_queue as tq

from conftest import unique

DTYPES = [torch.bool, torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64,
          torch.float16, torch.bfloat16, torch.float32, torch.float64]
INT_OF = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def random_bits(dtype, shape, seed=0):
    """A tensor whose bytes are random: every bit pattern of the dtype may
    occur (NaNs with payloads, infinities, subnormals, -0); bool is 0 or 1."""
    g = torch.Generator().manual_seed(seed)
    if dtype == torch.bool:
        return torch.randint(0, 2, shape, generator=g).bool()
    size = torch.empty((), dtype=dtype).element_size()
    n = int(np.prod(shape)) if shape else 1
    raw = torch.randint(0, 256, (n * size,), dtype=torch.uint8, generator=g)
    return raw.view(dtype).reshape(shape)


def same_bits(a, b):
    """Equal dtype, shape and bytes (NaN payloads included)."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    size = a.element_size()
    return torch.equal(a.contiguous().view(INT_OF[size]), b.contiguous().view(INT_OF[size]))


def put_get(client, data, n=None, **get_kwargs):
    partition = unique("td")
    client.put(data=data, partition_id=partition)
    if n is None:
        n = data.batch_size[0] if isinstance(data, TensorDictBase) else len(next(iter(data.values())))
    fields = list(data.keys())
    meta = client.get_meta(data_fields=fields, batch_size=n, partition_id=partition, task_name="t")
    assert len(meta) == n
    out = client.get_data(meta, **get_kwargs)
    assert type(out) is TensorDict, type(out)
    assert out.batch_size == torch.Size([n])
    assert sorted(out.keys()) == sorted(fields)
    return out


def assert_jagged(value, want):
    assert isinstance(value, torch.Tensor) and value.is_nested, type(value)
    assert value.layout is torch.jagged, value.layout
    parts = value.unbind()
    assert len(parts) == len(want)
    for got, w in zip(parts, want):
        assert same_bits(got, w), (got, w)


def nothing_written(client, partition, fields):
    """No sample of `partition` has any of `fields`, by every reader's view."""
    if partition in client.list_partitions():
        meta = client.get_meta(fields, 100, partition, task_name=unique("probe"), mode="force_fetch")
        assert not any(meta.production_status), meta  # every sample, none with the fields
        produced = client.get_production_status(partition)["produced"]
        assert all(produced.get(f, 0) == 0 for f in fields), produced


# ------------------------------------------------------------------ the package

def test_transfer_queue_exports_no_tensordict_stand_in():
    assert not hasattr(tq, "Batch")
    assert not hasattr(tq, "TensorDict")
    with pytest.raises(ImportError):
        from transfer_queue import TensorDict as _  # noqa: F401


# ------------------------------------------------------------------ bit-exact dtypes

@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d).split(".")[1])
def test_dense_every_bit_pattern_roundtrips(client, dtype):
    x = random_bits(dtype, (6, 33), seed=1)
    out = put_get(client, TensorDict({"x": x}, batch_size=[6]))
    got = out["x"]
    assert isinstance(got, torch.Tensor) and not got.is_nested and got.layout is torch.strided
    assert same_bits(got, x)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d).split(".")[1])
def test_jagged_every_bit_pattern_roundtrips(client, dtype):
    xs = [random_bits(dtype, (k, 3), seed=k) for k in (2, 7, 0, 5)]
    nt = torch.nested.nested_tensor(xs, layout=torch.jagged)
    out = put_get(client, TensorDict({"x": nt}, batch_size=[4]))
    assert out["x"].dtype == dtype
    assert_jagged(out["x"], xs)


@pytest.mark.parametrize("dtype,bits", [
    (torch.float16, [0x7C00, 0xFC00, 0x7E01, 0x7C01, 0xFE7F, 0x8000, 0x0001]),
    (torch.bfloat16, [0x7F80, 0xFF80, 0x7FC1, 0x7F81, 0xFFFF, 0x8000, 0x0001]),
    (torch.float32, [0x7F800000, 0xFF800000, 0x7FC00001, 0x7F800001, 0xFFC12345, 0x80000000, 0x00000001]),
    (torch.float64, [0x7FF0000000000000, 0xFFF0000000000000, 0x7FF8000000000001, 0x7FF0000000000001,
                     0xFFF8123456789ABC, 0x8000000000000000, 0x0000000000000001]),
], ids=["float16", "bfloat16", "float32", "float64"])
def test_inf_and_nan_payloads_are_kept(client, dtype, bits):
    """+inf, -inf, quiet and signalling NaNs with payloads, -0, subnormals."""
    size = torch.empty((), dtype=dtype).element_size()
    raw = np.array(bits, dtype=f"<u{size}").view(f"<i{size}")
    x = torch.from_numpy(raw).view(dtype).reshape(len(bits), 1)
    assert torch.isnan(x).sum() == 3 and torch.isinf(x).sum() == 2
    rows = [x[: k + 1, 0] for k in range(len(bits))]
    out = put_get(client, {"x": x, "r": rows}, n=len(bits))
    assert same_bits(out["x"], x)
    assert_jagged(out["r"], rows)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d).split(".")[1])
def test_numpy_array_every_bit_pattern_roundtrips(client, dtype):
    if dtype == torch.bfloat16:
        pytest.skip("numpy has no bfloat16")
    x = random_bits(dtype, (5, 4), seed=3)
    out = put_get(client, {"x": x.numpy(), "r": [x[i, : i + 1].numpy() for i in range(5)]})
    assert same_bits(out["x"], x)
    assert_jagged(out["r"], [x[i, : i + 1] for i in range(5)])


def test_numpy_big_endian_array_is_read_by_value(client):
    a = np.arange(6, dtype=">f4").reshape(3, 2)
    out = put_get(client, {"a": a})
    assert out["a"].dtype == torch.float32
    assert out["a"].tolist() == a.tolist()


# ------------------------------------------------------------------ what get_data returns

def test_uniform_fields_come_back_dense(client):
    """Dense in, dense out; also a jagged tensor or list whose samples all
    have one shape, and 0-d samples (a 1-d field)."""
    same = [torch.arange(4) + i for i in range(3)]
    out = put_get(client, TensorDict({
        "d": torch.randn(3, 2, 5),
        "uj": torch.nested.nested_tensor(same, layout=torch.jagged),
        "ul": same,
        "s": torch.tensor([1.0, 2.0, 3.0]),
    }, batch_size=[3]))
    for k in ("d", "uj", "ul", "s"):
        assert isinstance(out[k], torch.Tensor) and not out[k].is_nested, k
    assert out["d"].shape == (3, 2, 5)
    assert torch.equal(out["uj"], torch.stack(same)) and torch.equal(out["ul"], torch.stack(same))
    assert out["s"].shape == (3,)


def test_ragged_first_dimension_comes_back_jagged(client):
    xs = [torch.randn(k, 4) for k in (3, 1, 6)]
    out = put_get(client, {"r": xs})
    r = out["r"]
    assert_jagged(r, xs)
    assert r._ragged_idx == 1
    assert r.offsets().tolist() == [0, 3, 4, 10]
    assert r.shape[0] == 3 and r.shape[2] == 4
    assert torch.equal(r.values(), torch.cat(xs))
    # What consumers do with a jagged field: reductions over the ragged dim.
    assert torch.allclose(r.sum(dim=1), torch.stack([x.sum(0) for x in xs]))


def test_ragged_other_dimension_comes_back_jagged(client):
    """Samples that differ in one dimension other than the first: jagged,
    as upstream returns them."""
    xs = [torch.randn(2, k) for k in (3, 5, 1)]
    out = put_get(client, {"r": xs})
    assert_jagged(out["r"], xs)


def test_ragged_in_two_dimensions_comes_back_strided_nested(client):
    xs = [torch.randn(2, 3), torch.randn(4, 5), torch.randn(1, 1)]
    out = put_get(client, {"r": xs})
    r = out["r"]
    assert isinstance(r, torch.Tensor) and r.is_nested and r.layout is torch.strided
    for got, want in zip(r.unbind(), xs):
        assert torch.equal(got, want)


def test_tensors_of_different_ranks_come_back_as_non_tensor_stack(client):
    xs = [torch.zeros(2), torch.ones(2, 2), torch.tensor(5.0)]
    out = put_get(client, {"r": xs})
    assert isinstance(out.get("r"), NonTensorStack)
    got = out["r"]
    assert len(got) == 3
    for g, w in zip(got, xs):
        assert isinstance(g, torch.Tensor) and torch.equal(g, w)


def test_strings_bytes_objects_come_back_as_non_tensor_stack(client):
    strings = ["plain", "ünïcødé ✓", ""]
    blobs = [b"\x00\x01\xff", b"", b"x" * 1000]
    objs = [{"k": [1, 2.5]}, None, (1, "two")]
    out = put_get(client, TensorDict({"s": strings, "b": blobs, "o": objs}, batch_size=[3]))
    for k in ("s", "b", "o"):
        assert isinstance(out.get(k), NonTensorStack), k
    assert out["s"] == strings and all(type(v) is str for v in out["s"])
    assert out["b"] == blobs and all(type(v) is bytes for v in out["b"])
    assert out["o"] == objs
    assert out.get("s").tolist() == strings
    # Selecting samples of the result works as on any TensorDict.
    assert out[1]["s"] == "ünïcødé ✓"
    assert out[[2, 0]]["s"] == ["", "plain"]


def test_a_string_that_cannot_be_utf8_is_refused_naming_field_and_sample(client, partition):
    data = TensorDict({"x": torch.arange(2), "s": ["fine", "lone \ud800 surrogate"]}, batch_size=[2])
    with pytest.raises(ValueError, match=r"field 's' sample 1.*cannot be encoded as UTF-8"):
        client.put(data=data, partition_id=partition)
    nothing_written(client, partition, ["x", "s"])


def test_a_stored_string_that_is_not_utf8_is_an_error_naming_field_and_sample(client, partition):
    # Written as strings by a client that does not check them (the native
    # put takes the kinds as given): the reader gets a clear error, no crash.
    kind_string = 2
    client._client.put(2, [("objects", "s", [b"fine", b"\xff\xfe"], [kind_string, kind_string])],
                       partition_id=partition)
    meta = client.get_meta(data_fields=["s"], batch_size=2, partition_id=partition, task_name="t")
    with pytest.raises(ValueError, match=r"field 's' sample 1 .*not UTF-8.*0xff"):
        client.get_data(meta)


def test_mixed_fields_in_one_tensordict(client):
    """The seed's shape: a dense float field and a string field."""
    data = TensorDict({"text": torch.Tensor([[1, 2], [3, 4]]), "prompt": ["5", "6"]}, batch_size=[2])
    out = put_get(client, data)
    assert torch.equal(out["text"], data["text"])
    assert out["prompt"] == ["5", "6"]


def test_empty_meta_gives_an_empty_tensordict(client, partition):
    client.put(data={"a": torch.arange(2)}, partition_id=partition)
    client.get_meta(["a"], 2, partition, task_name="t")
    meta = client.get_meta(["a"], 2, partition, task_name="t", mode="poll")
    assert len(meta) == 0
    out = client.get_data(meta)
    assert type(out) is TensorDict and out.batch_size == torch.Size([0]) and list(out.keys()) == []


# ------------------------------------------------------------------ what put takes

def test_put_jagged_tensor_with_holes(client):
    """A jagged tensor made by narrow() has lengths (holes between samples):
    each sample is read as it is."""
    base = torch.arange(20.0).view(4, 5)
    nt = torch.nested.narrow(base, 1, torch.tensor([0, 1, 0, 2]), torch.tensor([2, 3, 1, 3]),
                             layout=torch.jagged)
    want = list(nt.unbind())
    out = put_get(client, TensorDict({"r": nt}, batch_size=[4]))
    assert_jagged(out["r"], want)
    assert [t.tolist() for t in out["r"].unbind()] == [[0.0, 1.0], [6.0, 7.0, 8.0], [10.0], [17.0, 18.0, 19.0]]


def test_put_jagged_tensor_of_2d_samples(client):
    xs = [torch.randn(k, 3, 2) for k in (4, 1, 2)]
    out = put_get(client, TensorDict({"r": torch.nested.as_nested_tensor(xs, layout=torch.jagged)}, batch_size=[3]))
    assert_jagged(out["r"], xs)


def test_put_strided_nested_tensor(client):
    xs = [torch.randn(2, 3), torch.randn(2, 5)]
    nt = torch.nested.nested_tensor(xs)
    assert nt.layout is torch.strided
    out = put_get(client, TensorDict({"r": nt}, batch_size=[2]))
    assert_jagged(out["r"], xs)


def test_put_non_tensor_data_is_one_value_for_every_sample(client):
    out = put_get(client, TensorDict({"tag": NonTensorData("run-7", batch_size=[3]),
                                      "cfg": NonTensorData({"lr": 0.1}, batch_size=[3]),
                                      "x": torch.arange(3)}, batch_size=[3]))
    assert out["tag"] == ["run-7"] * 3
    assert out["cfg"] == [{"lr": 0.1}] * 3


def test_put_non_tensor_stack(client):
    out = put_get(client, TensorDict({"s": NonTensorStack("a", "b", "c"),
                                      "o": NonTensorStack({"i": 0}, [1], None)}, batch_size=[3]))
    assert out["s"] == ["a", "b", "c"]
    assert out["o"] == [{"i": 0}, [1], None]


def test_put_non_tensor_stack_of_tensors(client):
    """Tensors inside a NonTensorStack are tensors: stored as such and read
    back as a tensor field (jagged here), as upstream does."""
    xs = [torch.zeros(2), torch.ones(3)]
    out = put_get(client, TensorDict({"s": NonTensorStack(*xs)}, batch_size=[2]))
    assert_jagged(out["s"], xs)


def test_put_lazy_stack_of_samples(client):
    """torch.stack / lazy_stack of per-sample TensorDicts whose tensors
    differ in shape (what a rollout collecting samples one by one builds)."""
    from tensordict import LazyStackedTensorDict

    samples = [TensorDict({"resp": torch.arange(k), "tag": f"s{k}", "score": torch.tensor(k / 2)}, batch_size=[])
               for k in (3, 1, 4)]
    lz = LazyStackedTensorDict.lazy_stack(samples)
    out = put_get(client, lz)
    assert_jagged(out["resp"], [torch.arange(k) for k in (3, 1, 4)])
    assert out["tag"] == ["s3", "s1", "s4"]
    assert out["score"].tolist() == [1.5, 0.5, 2.0]


def test_put_plain_dict_of_tensors_lists_and_arrays(client):
    data = {
        "t": torch.arange(6).reshape(3, 2),
        "l": ["x", "y", "z"],
        "a": np.arange(3, dtype=np.float32),
        "ra": [np.arange(k, dtype=np.int16) for k in (1, 2, 3)],
    }
    out = put_get(client, data)
    assert torch.equal(out["t"], data["t"])
    assert out["l"] == ["x", "y", "z"]
    assert out["a"].dtype == torch.float32 and out["a"].tolist() == [0.0, 1.0, 2.0]
    assert_jagged(out["ra"], [torch.from_numpy(a) for a in data["ra"]])


def test_lists_of_python_numbers(client):
    """A plain dict's list of Python numbers is stored value by value (exact:
    0.1 stays the float64 0.1); a TensorDict has already made it a tensor
    (tensordict's own conversion, float32 for floats)."""
    out = put_get(client, {"f": [0.1, 2.5, -1.0], "i": [1, 2, 1 << 40]})
    assert out["f"] == [0.1, 2.5, -1.0] and all(type(v) is float for v in out["f"])
    assert out["i"] == [1, 2, 1 << 40]
    out = put_get(client, TensorDict({"f": [0.1, 2.5, -1.0]}, batch_size=[3]))
    assert isinstance(out["f"], torch.Tensor) and out["f"].dtype == torch.float32
    assert torch.equal(out["f"], torch.tensor([0.1, 2.5, -1.0]))


def test_numpy_bytes_and_str_arrays(client):
    """An S array's elements come back as bytes (numpy's own values: trailing
    NULs are not part of them), a U array's as str; upstream returns
    np.bytes_ / np.str_, subclasses with the same values."""
    s = np.array([b"ab", b"c", b"\x00z"])
    u = np.array(["ab", "ç", ""])
    out = put_get(client, {"s": s, "u": u})
    assert out["s"] == [b"ab", b"c", b"\x00z"] and all(type(v) is bytes for v in out["s"])
    assert out["u"] == ["ab", "ç", ""] and all(type(v) is str for v in out["u"])
    # Inside a TensorDict (which wraps such an array as one NonTensorData)
    # the elements are still the samples, as upstream stores them.
    out = put_get(client, TensorDict({"s": s}, batch_size=[3]))
    assert out["s"] == [b"ab", b"c", b"\x00z"]


def test_numpy_object_arrays(client):
    """One sample per element, as upstream: str, bytes and other objects."""
    o = np.array([1, "x", None, {"k": 2}], dtype=object)
    out = put_get(client, {"o": o})
    assert out["o"] == [1, "x", None, {"k": 2}]
    out = put_get(client, TensorDict({"o": o}, batch_size=[4]))
    assert out["o"] == [1, "x", None, {"k": 2}]


def test_numpy_2d_bytes_array_rows(client):
    s = np.array([[b"a", b"b"], [b"c", b"d"]])
    out = put_get(client, {"s": s})
    rows = out["s"]
    assert [r.tolist() for r in rows] == [[b"a", b"b"], [b"c", b"d"]]


def test_tensordict_field_order_and_batch_size(client):
    td = TensorDict({"z": torch.zeros(2), "a": ["p", "q"], "m": torch.ones(2, 3)}, batch_size=[2])
    out = put_get(client, td)
    assert list(out.keys()) == ["z", "a", "m"]
    assert out.batch_size == torch.Size([2])


# ------------------------------------------------------------------ copy-on-write and writable

def test_writable_jagged_values_are_private(client):
    xs = [torch.arange(3.0), torch.arange(4.0)]
    partition = unique("w")
    client.put(data={"r": xs}, partition_id=partition)
    meta = client.get_meta(["r"], 2, partition, task_name="t")
    mine = client.get_data(meta, writable=True)["r"]
    mine.values().add_(100)
    assert mine.unbind()[0].tolist() == [100.0, 101.0, 102.0]
    again = client.get_data(meta)["r"]
    assert_jagged(again, xs)
    # The default view accepts in-place ops too, without changing the store.
    view = client.get_data(meta)["r"]
    view.values().mul_(-1)
    assert_jagged(client.get_data(meta)["r"], xs)


# ------------------------------------------------------------------ fields that cannot be stored

BAD_TENSORS = [
    ("complex64", lambda n: torch.zeros(n, 2, dtype=torch.complex64), "complex64"),
    ("complex128", lambda n: torch.zeros(n, dtype=torch.complex128), "complex128"),
    ("float8_e4m3fn", lambda n: torch.zeros(n, 2).to(torch.float8_e4m3fn), "float8_e4m3fn"),
    ("float8_e5m2", lambda n: torch.zeros(n).to(torch.float8_e5m2), "float8_e5m2"),
    ("uint16", lambda n: torch.zeros(n, dtype=torch.uint16), "uint16"),
    ("meta", lambda n: torch.zeros(n, 4, device="meta"), "meta"),
    ("meta_jagged", lambda n: torch.nested.nested_tensor([torch.zeros(k + 1) for k in range(n)],
                                                         layout=torch.jagged).to("meta"), "meta"),
    ("complex_jagged", lambda n: torch.nested.nested_tensor([torch.zeros(k + 1, dtype=torch.complex64)
                                                             for k in range(n)], layout=torch.jagged), "complex64"),
    ("sparse", lambda n: torch.eye(n).to_sparse(), "layout"),
    ("complex_numpy", lambda n: np.zeros(n, dtype=np.complex64), "complex64"),
    ("datetime_numpy", lambda n: np.zeros(n, dtype="datetime64[s]"), "datetime64"),
    ("unpicklable", lambda n: [threading.Lock() for _ in range(n)], "pickle"),
    ("complex_in_list", lambda n: [torch.zeros(k + 1, dtype=torch.complex64) for k in range(n)], "complex64"),
]


@pytest.mark.parametrize("make,reason", [(m, r) for _, m, r in BAD_TENSORS], ids=[i for i, _, _ in BAD_TENSORS])
def test_unstorable_field_names_field_and_reason_and_writes_nothing(client, make, reason):
    n = 3
    partition = unique("bad")
    data = {"good": torch.arange(n), "strs": ["a", "b", "c"], "bad_field": make(n)}
    with pytest.raises(tq.DTypeError) as ei:
        client.put(data=data, partition_id=partition)
    msg = str(ei.value)
    assert "'bad_field'" in msg and reason in msg, msg
    nothing_written(client, partition, ["good"])
    assert partition not in client.list_partitions()


def test_unstorable_field_in_tensordict_leaves_existing_samples_alone(client, partition):
    """A partition with samples; a failed put of more samples adds none, and
    a failed put of more fields into the existing samples adds no field."""
    meta = client.put(data=TensorDict({"a": torch.arange(2)}, batch_size=[2]), partition_id=partition)
    bad = TensorDict({"a": torch.arange(3), "z": torch.zeros(3, dtype=torch.complex64)}, batch_size=[3])
    with pytest.raises(tq.DTypeError, match="'z'"):
        client.put(data=bad, partition_id=partition)
    got = client.get_meta(["a"], 10, partition, task_name="t", mode="force_fetch")
    assert sorted(got.global_indexes) == sorted(meta.global_indexes)
    assert client.get_production_status(partition)["num_samples"] == 2

    more = TensorDict({"b": torch.ones(2), "c": torch.zeros(2, device="meta")}, batch_size=[2])
    with pytest.raises(tq.DTypeError, match="'c'.*meta"):
        client.put(data=more, metadata=meta)
    produced = client.get_production_status(partition)["produced"]
    assert produced.get("b", 0) == 0 and produced.get("c", 0) == 0
    assert len(client.get_meta(["a", "b"], 2, partition, task_name="t2", mode="poll")) == 0
    assert client.get_data(client.get_meta(["a"], 2, partition, task_name="t3"))["a"].tolist() == [0, 1]


def test_dtype_may_differ_between_puts_of_a_field(client, partition):
    """As upstream (its tutorial 02 relies on it): a field written as float32
    for some samples and int32 for others is stored; each sample keeps its
    own dtype and counts as produced."""
    client.put(data={"x": torch.zeros(2, 3)}, partition_id=partition)
    client.put(data={"x": torch.ones(2, 3, dtype=torch.int32)}, partition_id=partition)
    assert client.check_production_status(["x"], partition)
    meta = client.get_meta(["x"], 4, partition, task_name="t")
    out = client.get_data(meta)["x"]
    # Read together they come back as one tensor in the promoted dtype (upstream's torch.stack)...
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32, out
    assert out.tolist() == [[0.0] * 3] * 2 + [[1.0] * 3] * 2
    # ...and each alone in its own dtype.
    late = client.get_data(meta.select_samples([2, 3]))["x"]
    assert late.dtype == torch.int32 and late.tolist() == [[1] * 3] * 2


def test_failed_put_writes_no_object_to_the_datasystem(ds_worker, controller):
    from datasystem import KVClient

    from conftest import make_client

    c = make_client(controller, "yuanrong", ds_worker)
    kv = KVClient(ds_worker.host, ds_worker.port)
    kv.init()
    before = kv.stats()["objects"]
    partition = unique("bad")
    with pytest.raises(tq.DTypeError, match="'bad'"):
        c.put(data={"big": torch.zeros(8, 1 << 16), "bad": torch.zeros(8, dtype=torch.complex64)},
              partition_id=partition)
    assert kv.stats()["objects"] == before
    assert partition not in c.list_partitions()


def test_nested_tensordict_field_is_rejected(client, partition):
    td = TensorDict({"a": torch.zeros(2), "sub": TensorDict({"x": torch.zeros(2)}, batch_size=[2])},
                    batch_size=[2])
    with pytest.raises(tq.DTypeError, match="'sub'.*flatten"):
        client.put(data=td, partition_id=partition)
    # The flattened TensorDict goes in.
    out = put_get(client, td.flatten_keys("."))
    assert sorted(out.keys()) == ["a", "sub.x"]


def test_tensordict_without_batch_dimension_is_rejected(client, partition):
    with pytest.raises(tq.InvalidArgumentError, match="batch_size"):
        client.put(data=TensorDict({"a": torch.zeros(2)}, batch_size=[]), partition_id=partition)


def test_field_length_must_match_the_batch(client, partition):
    with pytest.raises(tq.InvalidArgumentError, match="'b' has 3 samples"):
        client.put(data={"a": torch.zeros(2), "b": np.array([b"x", b"y", b"z"])}, partition_id=partition)
    with pytest.raises(tq.InvalidArgumentError, match="'b' has 1 samples"):
        client.put(data={"a": torch.zeros(2), "b": torch.nested.nested_tensor([torch.zeros(1)],
                                                                            layout=torch.jagged)},
                   partition_id=partition)
    nothing_written(client, partition, ["a"])


def test_binding_checks_jagged_shapes_against_values(client, partition):
    """The extension slices a jagged field's values by the sample shapes and
    refuses shapes that do not cover them exactly."""
    values = torch.arange(6, dtype=torch.float32)
    for shapes in ([(2,), (5,)], [(2,), (3,)], [(-1,), (7,)]):
        with pytest.raises(tq.InvalidArgumentError, match="'r'"):
            client._client.put(2, [("jagged", "r", values, "float32", shapes)], partition_id=partition)
    nothing_written(client, partition, ["r"])
    client._client.put(2, [("jagged", "r", values, "float32", [(2,), (4,)])], partition_id=partition)
    out = client.get_data(client.get_meta(["r"], 2, partition, task_name="t"))
    assert_jagged(out["r"], [values[:2], values[2:]])


def test_meta_pickles_and_reads_back_into_tensordict(client, partition):
    client.put(data=TensorDict({"r": [torch.arange(2), torch.arange(3)], "s": ["a", "b"]}, batch_size=[2]),
               partition_id=partition)
    meta = pickle.loads(pickle.dumps(client.get_meta(["r", "s"], 2, partition, task_name="t")))
    out = client.get_data(meta)
    assert_jagged(out["r"], [torch.arange(2), torch.arange(3)])
    assert out["s"] == ["a", "b"]
