"""transfer_queue.metadata: BatchMeta and KVBatchMeta against upstream
TransferQueue 0.1.11 (the expected values were obtained by running the same
calls on upstream's classes), and the private link to the C++ core's
_tqds.BatchMeta, against an in-process controller."""

from __future__ import annotations

import pickle
import types

import _tqds
import numpy as np
import pytest
import torch
from tensordict import TensorDict

from transfer_queue import metadata as md
from transfer_queue.batch import from_fields, to_fields
from transfer_queue.metadata import BatchMeta, KVBatchMeta, extract_field_schema

UPSTREAM_KEYS = {"dtype", "shape", "is_nested", "is_non_tensor"}


def jagged(lengths):
    return torch.nested.nested_tensor([torch.ones(k) for k in lengths], layout=torch.jagged)


def sample_td():
    td = TensorDict({"a": torch.zeros(4, 3), "b": torch.arange(4), "c": jagged([1, 2, 3, 4])}, batch_size=[4])
    td["s"] = ["w", "x", "y", "z"]
    return td


def base():
    m = BatchMeta([10, 11, 12, 13], ["p", "p", "q", "p"], extra_info={"k": 1},
                  custom_meta=[{"i": i} for i in range(4)])
    return m.add_fields(sample_td())


def upstream_view(schema):
    return {name: {k: v for k, v in e.items() if k in UPSTREAM_KEYS | {"per_sample_shapes"}}
            for name, e in schema.items()}


BASE_SCHEMA = {
    "a": {"dtype": torch.float32, "shape": torch.Size([3]), "is_nested": False, "is_non_tensor": False},
    "b": {"dtype": torch.int64, "shape": torch.Size([1]), "is_nested": False, "is_non_tensor": False},
    "c": {"dtype": torch.float32, "shape": torch.Size([1]), "is_nested": True, "is_non_tensor": False,
          "per_sample_shapes": [(1,), (2,), (3,), (4,)]},
    "s": {"dtype": None, "shape": None, "is_nested": False, "is_non_tensor": True},
}


# ------------------------------------------------------------------ constructor and attributes

@pytest.mark.parametrize("kwargs", [
    dict(global_indexes=[1, 2], partition_ids=["p"]),
    dict(global_indexes=[1, 2], partition_ids=["p", "p"], production_status=[1]),
    dict(global_indexes=[1, 2], partition_ids=["p", "p"], custom_meta=[{}]),
    dict(global_indexes=[1, 2], partition_ids=["p", "p"], field_schema={"x": {"per_sample_shapes": [(1,)]}}),
])
def test_constructor_length_mismatch_is_value_error(kwargs):
    with pytest.raises(ValueError):
        BatchMeta(**kwargs)


def test_constructor_defaults_and_copies():
    gidx, status = [1, 2], np.array([1.0, 0.0])
    m = BatchMeta(gidx, ["p", "p"], production_status=status)
    gidx.append(3)
    status[1] = 1
    assert m.global_indexes == [1, 2] and m.size == 2 and len(m) == 2
    assert m.production_status.dtype == np.int8 and m.production_status.tolist() == [1, 0]
    assert m.custom_meta == [{}, {}] and m.extra_info == {} and m.field_schema == {} and m.field_names == []
    assert not m.is_ready
    assert BatchMeta([1], ["p"]).production_status.tolist() == [0]
    assert BatchMeta([1, 2], ["p", "p"], production_status=[1, 1]).is_ready


def test_empty_and_str():
    e = BatchMeta.empty(extra_info={"e": 2})
    assert e.size == 0 and not e and not e.is_ready and e.extra_info == {"e": 2}
    assert e.production_status.dtype == np.int8
    assert str(base()) == ("BatchMeta(size=4, field_names=['a', 'b', 'c', 's'], is_ready=True, "
                           "global_indexes=[10, 11, 12, 13], extra_info={'k': 1})")


def test_add_fields_schema_sorted_names_and_status():
    m = BatchMeta([10, 11, 12, 13], ["p"] * 4)
    assert m.add_fields(sample_td(), set_all_ready=False) is m
    assert m.field_schema == BASE_SCHEMA
    assert m.field_names == ["a", "b", "c", "s"]
    assert m.production_status.tolist() == [0] * 4 and not m.is_ready
    m.add_fields(TensorDict({"0first": torch.zeros(4)}, batch_size=[4]))
    assert m.field_names == ["0first", "a", "b", "c", "s"] and m.is_ready
    with pytest.raises(ValueError):
        BatchMeta([1], ["p"]).add_fields(sample_td())
    one = BatchMeta([1], ["p"])
    assert one.add_fields(TensorDict({"a": torch.zeros(0, 2)}, batch_size=[0])).field_names == []
    assert one.production_status.tolist() == [0]


def test_extract_field_schema_checks_lengths():
    assert extract_field_schema(sample_td()) == BASE_SCHEMA
    assert extract_field_schema(TensorDict({}, batch_size=[0])) == {}


def test_samples_views():
    m = base()
    assert len(m.samples) == 4
    views = list(m.samples)
    assert [(s.global_index, s.partition_id, s.production_status) for s in views] == [
        (10, "p", 1), (11, "p", 1), (12, "q", 1), (13, "p", 1)]
    assert dict(views[2].custom_meta) == {"i": 2}
    f = views[2].fields
    assert f["c"]["shape"] == (3,) and "per_sample_shapes" not in f["c"]
    assert f["a"]["shape"] == torch.Size([3])
    with pytest.raises(TypeError):
        f["a"]["shape"] = (1,)
    with pytest.raises(TypeError):
        views[0].custom_meta["i"] = 5


def test_get_dtypes_and_shapes():
    m = base()
    assert m.get_dtypes("a") == [torch.float32] * 4
    assert m.get_dtypes("s") == [None] * 4
    assert m.get_shapes("c") == [(1,), (2,), (3,), (4,)]
    assert m.get_shapes("b") == [torch.Size([1])] * 4
    for fn in (m.get_dtypes, m.get_shapes):
        with pytest.raises(KeyError):
            fn("zz")


def test_extra_info_methods():
    m = base()
    assert [m.get_extra_info("k"), m.get_extra_info("x", 5), m.has_extra_info("k")] == [1, 5, True]
    m.set_extra_info("x", [1])
    m.get_all_extra_info()["x"].append(2)  # a deep copy
    assert m.extra_info == {"k": 1, "x": [1]}
    m.update_extra_info({"y": 3})
    assert m.remove_extra_info("k") == 1 and m.remove_extra_info("nope") is None
    assert m.extra_info == {"x": [1], "y": 3}
    m.clear_extra_info()
    assert m.extra_info == {}


def test_custom_meta_methods():
    m = base()
    m.get_all_custom_meta()[0]["i"] = 99  # a deep copy
    m.update_custom_meta([{"j": 1}, {}, {"i": 7}, {"j": 2}])
    assert m.custom_meta == [{"i": 0, "j": 1}, {"i": 1}, {"i": 7}, {"i": 3, "j": 2}]
    m.update_custom_meta(None)
    with pytest.raises(ValueError):
        m.update_custom_meta([{}])
    m.custom_meta[1]["obj"] = object  # any value on the Python side
    assert m.custom_meta[1]["obj"] is object
    m.clear_custom_meta()
    assert m.custom_meta == [{}] * 4


def test_seed_custom_meta_api():
    m = base()
    got = m.get_custom_meta()
    got[0]["i"] = 50
    assert m.custom_meta[0] == {"i": 0}
    m.set_custom_meta([{"t": torch.ones(1)}, {}, {}, {"s": "x"}])  # replaces
    assert list(m.custom_meta[0]) == ["t"] and m.custom_meta[3] == {"s": "x"}
    with pytest.raises(_tqds.InvalidArgumentError):
        m.set_custom_meta([{}])
    with pytest.raises(ValueError):
        m.set_custom_meta([{}])
    with pytest.raises(TypeError):
        m.set_custom_meta([{}, {}, {}, 5])


# ------------------------------------------------------------------ selection and algebra

def test_select_samples():
    s = base().select_samples([3, 1])
    assert (s.global_indexes, s.partition_ids, s.custom_meta) == ([13, 11], ["p", "p"], [{"i": 3}, {"i": 1}])
    assert s.field_schema["c"]["per_sample_shapes"] == [(4,), (2,)] and s.field_schema["c"]["is_nested"]
    assert s.extra_info == {"k": 1} and s.is_ready
    e = base().select_samples([])
    assert e.size == 0 and e.field_names == ["a", "b", "c", "s"] and e.field_schema["c"]["per_sample_shapes"] == []
    for bad in ([-1], [4]):
        with pytest.raises(ValueError):
            base().select_samples(bad)


def test_select_fields_drops_unknown_names():
    m = base()
    m.production_status[1] = 0
    s = m.select_fields(["c", "zz", "a"])
    assert s.field_names == ["a", "c"] and list(s.field_schema) == ["c", "a"]
    assert s.production_status.tolist() == [1, 0, 1, 1] and s.custom_meta == m.custom_meta
    none = base().select_fields([])
    assert none.field_names == [] and none.is_ready and none.size == 4


def test_copy_is_deep():
    m = base()
    c = m.copy()
    c.custom_meta[0]["i"] = 100
    c.field_schema["c"]["per_sample_shapes"][0] = (9,)
    c.production_status[0] = 0
    c.extra_info["k"] = 2
    assert m.custom_meta[0] == {"i": 0} and m.field_schema["c"]["per_sample_shapes"][0] == (1,)
    assert m.production_status[0] == 1 and m.extra_info == {"k": 1}


def test_getitem():
    m = base()
    assert m[1].global_indexes == [11] and m[-1].global_indexes == [13]
    assert m[np.int64(2)].partition_ids == ["q"]
    assert m[1:3].global_indexes == [11, 12] and m[::-2].global_indexes == [13, 11]
    assert m[1].field_schema["c"]["per_sample_shapes"] == [(2,)]
    for bad in (4, -5):
        with pytest.raises(IndexError):
            m[bad]
    for bad in ("a", [0]):
        with pytest.raises(TypeError):
            m[bad]


def test_chunk():
    assert [c.global_indexes for c in base().chunk(3)] == [[10, 11], [12], [13]]
    six = base().chunk(6)
    assert [c.size for c in six] == [1, 1, 1, 1, 0, 0]
    assert six[5].field_names == ["a", "b", "c", "s"]
    assert [c.global_indexes for c in base().chunk(1)] == [[10, 11, 12, 13]]
    with pytest.raises(ZeroDivisionError):
        base().chunk(0)


def test_chunk_by_partition_first_appearance_order():
    m = BatchMeta([1, 2, 3, 4, 5], ["q", "p", "q", "r", "p"])
    assert [(c.partition_ids[0], c.global_indexes) for c in m.chunk_by_partition()] == [
        ("q", [1, 3]), ("p", [2, 5]), ("r", [4])]


def test_union():
    a = base().select_fields(["a", "b"])
    b = base().select_fields(["c"])
    b.production_status[1] = 0
    b.custom_meta[0]["z"] = 1
    b.extra_info["k"] = 2
    u = a.union(b)
    assert u.field_names == ["a", "b", "c"]
    assert u.production_status.tolist() == [1, 0, 1, 1]
    assert u.custom_meta[0] == {"i": 0, "z": 1} and u.extra_info == {"k": 2}
    assert u.field_schema["c"] == BASE_SCHEMA["c"]
    with pytest.raises(ValueError):
        base().union(base().select_samples([1, 0, 2, 3]))
    with pytest.raises(ValueError):
        base().union(BatchMeta([10, 11, 12, 13], ["p"] * 4))
    m = base()
    for u in (m.union(BatchMeta.empty()), BatchMeta.empty().union(m)):
        assert u is not m and u.global_indexes == m.global_indexes and u.field_schema == m.field_schema


def test_concat():
    c = BatchMeta.concat(base().chunk(3))
    assert c.global_indexes == [10, 11, 12, 13] and c.field_schema == BASE_SCHEMA | {
        "c": dict(BASE_SCHEMA["c"], shape=None)}  # a nested field's shape is not kept
    assert c.custom_meta == [{"i": i} for i in range(4)] and c.extra_info == {"k": 1}
    for empty in ([], [BatchMeta.empty(), BatchMeta.empty()]):
        assert BatchMeta.concat(empty).size == 0
    with pytest.raises(ValueError):
        BatchMeta.concat([base().select_fields(["a"]), base()])
    loose = BatchMeta.concat([base().select_fields(["a"]), base()], validate=False)
    assert loose.size == 8 and loose.field_names == ["a"]
    m2 = BatchMeta([1, 2], ["p", "p"]).add_fields(TensorDict({"a": torch.zeros(2, 3, dtype=torch.int32)}, [2]))
    with pytest.raises(ValueError):
        BatchMeta.concat([base().select_fields(["a"]), m2])
    x, y = base().chunk(2)
    y.extra_info["k"] = 5
    with pytest.raises(ValueError):
        BatchMeta.concat([x, y])
    x.extra_info["t"] = torch.ones(2)
    y.extra_info.update(k=1, t=torch.ones(2))
    assert set(BatchMeta.concat([x, y]).extra_info) == {"k", "t"}


def test_concat_nested_wins():
    m1 = BatchMeta([1, 2], ["p", "p"]).add_fields(TensorDict({"x": torch.zeros(2, 3)}, [2]))
    m2 = BatchMeta([3, 4], ["p", "p"]).add_fields(TensorDict({"x": jagged([1, 5])}, [2]))
    e = BatchMeta.concat([m1, m2]).field_schema["x"]
    assert e["is_nested"] and e["shape"] is None
    assert e["per_sample_shapes"] == [torch.Size([3]), torch.Size([3]), (1,), (5,)]


def test_reorder_in_place():
    m = base()
    assert m.reorder([2, 0, 3, 1]) is None
    assert m.global_indexes == [12, 10, 13, 11] and m.partition_ids == ["q", "p", "p", "p"]
    assert m.custom_meta == [{"i": 2}, {"i": 0}, {"i": 3}, {"i": 1}]
    assert m.field_schema["c"]["per_sample_shapes"] == [(3,), (1,), (4,), (2,)]
    for bad in ([0], [0, 0, 1, 2], [0, 1, 2, 4], [0, 1, 2, -1]):
        with pytest.raises(ValueError):
            base().reorder(bad)


def test_pickle_and_read_only_status():
    m = base()
    m.set_extra_info("t", torch.arange(3))
    back = pickle.loads(pickle.dumps(m))
    assert back == m and back.field_schema == m.field_schema
    back.production_status.flags.writeable = False
    again = pickle.loads(pickle.dumps(back))
    assert again.production_status.flags.writeable  # as after Ray's zero-copy read


def test_equality_seed_semantics():
    assert BatchMeta() == BatchMeta.empty()
    assert base() == base() and base() != base().select_samples([0, 1])
    m = base()
    m.custom_meta[0]["i"] = 9
    assert m != base()


# ------------------------------------------------------------------ KVBatchMeta

def kvm():
    return KVBatchMeta(keys=["a", "b", "c"], tags=[{"x": 1}, {}, {"y": 2}], partition_id="p", fields=["f", "g"],
                       extra_info={"e": 1})


def test_kv_construct_and_errors():
    d = KVBatchMeta()
    assert (d.keys, d.tags, d.partition_id, d.fields, d.extra_info, d.size, len(d)) == ([], [], None, None, {}, 0, 0)
    assert str(kvm()) == "KVBatchMeta(size=3, field_names=['f', 'g'], extra_info={'e': 1})"
    assert KVBatchMeta(keys=["a"], tags=[{}], extra_info=None).extra_info is None
    for kwargs in (dict(keys=["a"], tags=[]), dict(keys=["a", "a"], tags=[{}, {}]),
                   dict(keys=["a"], tags=[{}], fields=["f", "f"])):
        with pytest.raises(ValueError):
            KVBatchMeta(**kwargs)
    tags = [{"x": [1]}]
    m = KVBatchMeta(keys=["a"], tags=tags)
    tags[0]["x"].append(2)
    m.chunk(1)[0].tags[0]["x"].append(3)
    assert m.tags == [{"x": [1]}]
    assert kvm() == kvm()


def test_kv_select_keys_and_reorder():
    s = kvm().select_keys(["c", "a"])
    assert (s.keys, s.tags, s.partition_id, s.fields, s.extra_info) == (["c", "a"], [{"y": 2}, {"x": 1}], "p",
                                                                         ["f", "g"], {"e": 1})
    with pytest.raises(ValueError):
        kvm().select_keys(["a", "a"])
    with pytest.raises(RuntimeError):
        kvm().select_keys(["a", "z"])
    m = kvm()
    m.reorder([2, 0, 1])
    assert m.keys == ["c", "a", "b"] and m.tags == [{"y": 2}, {"x": 1}, {}]
    for bad in ([0], [0, 0, 1]):
        with pytest.raises(ValueError):
            kvm().reorder(bad)
    with pytest.raises(IndexError):
        kvm().reorder([0, 1, 5])


def test_kv_chunk_and_concat():
    assert [c.keys for c in kvm().chunk(2)] == [["a", "b"], ["c"]]
    assert [c.keys for c in kvm().chunk(5)] == [["a"], ["b"], ["c"], [], []]
    with pytest.raises(ZeroDivisionError):
        kvm().chunk(0)
    assert KVBatchMeta.concat(kvm().chunk(2)) == kvm()
    for empty in ([], [KVBatchMeta(), KVBatchMeta()]):
        assert KVBatchMeta.concat(empty) == KVBatchMeta()
    other = dict(keys=["d"], tags=[{}], partition_id="p")
    with pytest.raises(ValueError):
        KVBatchMeta.concat([kvm(), KVBatchMeta(**other, fields=["f"])])
    assert KVBatchMeta.concat([kvm(), KVBatchMeta(**other)]).keys == ["a", "b", "c", "d"]
    with pytest.raises(ValueError):  # the first chunk's None fields mean "no fields"
        KVBatchMeta.concat([KVBatchMeta(**other), kvm()])
    with pytest.raises(ValueError):
        KVBatchMeta.concat([kvm(), KVBatchMeta(keys=["d"], tags=[{}], partition_id="q", fields=["f", "g"])])
    with pytest.raises(ValueError):
        KVBatchMeta.concat([kvm(), KVBatchMeta(**other, fields=["g", "f"], extra_info={"e": 2})])
    with pytest.raises(ValueError):
        KVBatchMeta.concat([kvm(), kvm()])  # duplicate keys
    plain = KVBatchMeta.concat([KVBatchMeta(keys=["d"], tags=[{}]), KVBatchMeta(keys=["e"], tags=[{}])])
    assert plain.keys == ["d", "e"] and plain.extra_info is None


# ------------------------------------------------------------------ the native link

class FakeNative:
    """Stands in for _tqds.BatchMeta: counts the calls that lazy wrapping must avoid."""

    def __init__(self, n, shapes):
        self.size = n
        self.field_names = ["r"]
        self.global_indexes = list(range(n))
        self.partition_ids = ["p"] * n
        self.generations = [7] * n
        self._shapes = shapes
        self.calls = []

    @property
    def field_schema(self):
        self.calls.append("field_schema")
        return {"r": {"kind": 0, "dtype": "int32", "shape": self._shapes[0], "ragged": True, "produced": True}}

    def field_shapes(self, name):
        self.calls.append("field_shapes")
        return self._shapes

    def get_custom_meta(self):
        self.calls.append("get_custom_meta")
        return [{}] * self.size

    def select_samples(self, positions):
        raise AssertionError("per-sample fallback used although field_shapes exists")


def test_from_native_is_lazy_and_uses_field_shapes():
    shapes = [(i % 3 + 1,) for i in range(10000)]
    fake = FakeNative(10000, shapes)
    m = BatchMeta._from_native(fake)
    assert m.size == 10000 and len(m.global_indexes) == 10000 and m.field_names == ["r"]
    assert m.generations[0] == 7
    assert fake.calls == []
    e = m.field_schema["r"]
    assert e["is_nested"] and e["dtype"] == torch.int32 and e["per_sample_shapes"][:3] == [(1,), (2,), (3,)]
    assert m.is_ready
    _ = m.field_schema, m.production_status
    assert fake.calls == ["field_schema", "field_shapes"]  # once, then cached


@pytest.fixture(scope="module")
def core():
    ctl = _tqds.Controller("tcp://127.0.0.1:0", 2, 64)
    try:
        c = _tqds.Client("meta-test", ctl.address)
        c.initialize_storage_manager("SimpleStorageManager", "{}")
        yield c
    finally:
        ctl.stop()


_parts = iter(range(1_000_000))


@pytest.fixture
def part():
    return f"meta{next(_parts)}"


def put(core, data, partition=None, meta=None):
    n, fields = to_fields(data)
    if meta is not None:
        return core.put(n, fields, meta=meta)
    return core.put(n, fields, partition_id=partition)


def get(core, meta):
    native = meta._to_native()
    return from_fields(core.get_data(native), native.size)


def test_from_native_schema(core, part):
    td = TensorDict({"x": torch.zeros(3, 7, dtype=torch.float16), "s": torch.arange(3), "r": jagged([2, 3, 1])},
                    batch_size=[3])
    td["t"] = ["a", "b", "c"]
    td["o"] = [1, {}, None]
    native = put(core, td, part)
    m = BatchMeta._from_native(native)
    assert m.field_names == ["o", "r", "s", "t", "x"]
    assert upstream_view(m.field_schema) == {
        "x": {"dtype": torch.float16, "shape": torch.Size([7]), "is_nested": False, "is_non_tensor": False},
        "s": {"dtype": torch.int64, "shape": torch.Size([1]), "is_nested": False, "is_non_tensor": False},
        "r": {"dtype": torch.float32, "shape": None, "is_nested": True, "is_non_tensor": False,
              "per_sample_shapes": [(2,), (3,), (1,)]},
        "t": {"dtype": None, "shape": None, "is_nested": False, "is_non_tensor": True},
        "o": {"dtype": None, "shape": None, "is_nested": False, "is_non_tensor": True},
    }
    schema = m.field_schema
    assert schema["r"]["ragged"] and not schema["x"]["ragged"] and all(e["produced"] for e in schema.values())
    assert schema["x"]["kind"] == 0 and schema["t"]["kind"] != schema["o"]["kind"]
    assert m.production_status.tolist() == [1, 1, 1] and m.production_status.dtype == np.int8 and m.is_ready
    assert m.generations == native.generations and m.global_indexes == native.global_indexes
    assert m.partition_ids == [part] * 3 and m.custom_meta == [{}] * 3
    assert m.samples[2].fields["r"]["shape"] == (1,)
    assert m.get_shapes("r") == [(2,), (3,), (1,)]
    assert BatchMeta._from_native(native, production_status=[0, 1, 0]).production_status.tolist() == [0, 1, 0]
    with pytest.raises(ValueError):
        BatchMeta._from_native(native, production_status=[1])


def test_from_native_partly_produced(core, part):
    native = put(core, {"x": torch.arange(4)}, part)
    put(core, {"y": torch.ones(2, 2)}, meta=native.select_samples([0, 1]))
    xy = core.get_meta(["x", "y"], 2, part, "t", None, "fetch", 5.0)
    # A native whose last two samples lack y (concat records a missing field as not produced).
    mixed = _tqds.BatchMeta.concat([xy, native.select_samples([2, 3])])
    m = BatchMeta._from_native(mixed)
    assert m.production_status.tolist() == [1, 1, 0, 0] and not m.is_ready
    y = m.field_schema["y"]
    assert y["shape"] == torch.Size([2]) and not y["is_nested"] and not y["produced"]
    assert m.field_schema["x"]["produced"]
    assert BatchMeta._from_native(_tqds.BatchMeta.build([1], ["p"], [1])).production_status.tolist() == [0]
    unproduced = BatchMeta._from_native(_tqds.BatchMeta.build([1], ["p"], [1], ["z"])).field_schema["z"]
    assert upstream_view({"z": unproduced})["z"] == {"dtype": None, "shape": None, "is_nested": False,
                                                     "is_non_tensor": False}  # upstream's insert placeholder


def test_python_operations_reach_the_native(core, part):
    native = put(core, {"a": torch.arange(6), "b": torch.arange(6) * 10}, part)
    m = BatchMeta._from_native(native)
    assert get(core, m.select_samples([4, 0, 2]))["a"].tolist() == [4, 0, 2]
    assert get(core, m[1:3])["b"].tolist() == [10, 20]
    only_b = m.select_fields(["b", "zz"])
    assert only_b._to_native().field_names == ["b"] and list(get(core, only_b).keys()) == ["b"]
    chunks = m.chunk(3)
    joined = BatchMeta.concat([chunks[2], chunks[0]])
    assert get(core, joined)["a"].tolist() == [4, 5, 0, 1]
    assert joined.generations == [native.generations[i] for i in (4, 5, 0, 1)]
    r = m.copy()
    r.reorder([5, 4, 3, 2, 1, 0])
    assert get(core, r)["a"].tolist() == [5, 4, 3, 2, 1, 0]
    assert get(core, m)["a"].tolist() == list(range(6))  # the copy's reorder left m alone
    assert BatchMeta.concat(chunks) == m
    assert get(core, pickle.loads(pickle.dumps(m[::2])))["a"].tolist() == [0, 2, 4]
    u = m.union(m.select_fields(["b"]))  # the other's fields are a subset: its native is not needed
    assert u.field_names == ["a", "b"] and sorted(get(core, u).keys()) == ["a", "b"]


@pytest.mark.skipif(not hasattr(_tqds.BatchMeta, "union"), reason="needs the native _tqds.BatchMeta.union")
def test_union_of_disjoint_fields_reads_both(core, part):
    m = BatchMeta._from_native(put(core, {"a": torch.arange(3), "b": torch.arange(3) * 10}, part))
    u = m.select_fields(["a"]).union(m.select_fields(["b"]))
    out = get(core, u)
    assert out["a"].tolist() == [0, 1, 2] and out["b"].tolist() == [0, 10, 20]


def test_to_native_carries_custom_meta(core, part):
    native = put(core, {"a": torch.arange(3)}, part)
    m = BatchMeta._from_native(native)
    assert m._to_native() is native  # nothing changed on the Python side: no copy
    m.update_custom_meta([{"seq_len": 10}, {"reward": 0.5}, {"tag": "s"}])
    sent = m._to_native()
    assert sent.get_custom_meta() == [{"seq_len": 10}, {"reward": 0.5}, {"tag": "s"}]
    assert native.get_custom_meta() == [{}, {}, {}]  # the wrapped native is never changed
    core.set_custom_meta(sent)
    back = BatchMeta._from_native(core.get_custom_meta(part, m.global_indexes))
    assert back.custom_meta == m.custom_meta and back.get_custom_meta() == m.custom_meta
    m.set_custom_meta([{"x": i} for i in range(3)])
    assert m._to_native().get_custom_meta() == [{"x": 0}, {"x": 1}, {"x": 2}]


def test_user_built_meta_converts_through_build(monkeypatch):
    m = BatchMeta([5, 7], ["p", "q"], custom_meta=[{"x": 1}, {}])
    native = m._to_native()
    assert (native.global_indexes, native.partition_ids, native.generations) == ([5, 7], ["p", "q"], [0, 0])
    assert native.get_custom_meta() == [{"x": 1}, {}]
    monkeypatch.setattr(md, "_tqds", types.SimpleNamespace(BatchMeta=types.SimpleNamespace()))
    with pytest.raises(NotImplementedError):
        m._to_native()


def test_hand_set_indexes_keep_generations(core, part):
    native = put(core, {"a": torch.arange(2)}, part)
    m = BatchMeta._from_native(native)
    m.global_indexes = list(reversed(m.global_indexes))
    assert m._native is None and m.generations == native.generations
    assert m.field_names == ["a"] and m.is_ready  # learnt before the native was dropped
    assert m._to_native().global_indexes == list(reversed(native.global_indexes))


def test_update_from_native_after_put(core, part):
    native = put(core, {"x": torch.arange(3)}, part)
    m = BatchMeta._from_native(native.select_fields([]))  # samples without fields, as a fresh allocation
    m.set_extra_info("k", 1)
    m.update_custom_meta([{"c": 1}, {}, {}])
    assert not m.is_ready
    td = TensorDict({"y": jagged([2, 2, 2])}, batch_size=[3])  # uniform, but passed as nested
    ret = put(core, td, meta=m._to_native())
    assert m._update_from_native(ret) is m
    assert m.field_names == ["y"] and m.is_ready and m.extra_info == {"k": 1} and m.custom_meta[0] == {"c": 1}
    assert not m.field_schema["y"]["is_nested"]  # the native sees equal shapes
    assert get(core, m)["y"].shape == (3, 2)
    m2 = BatchMeta._from_native(native.select_fields([]))
    m2._update_from_native(put(core, td, meta=m2._to_native()), data=td)
    y = m2.field_schema["y"]
    assert y["is_nested"] and y["per_sample_shapes"] == [(2,)] * 3 and y["kind"] == 0  # as upstream's add_fields
    with pytest.raises(ValueError):
        m2._update_from_native(native.select_samples([0]))
    m3 = BatchMeta._from_native(native.select_fields([]))
    with pytest.raises(ValueError, match="other samples"):  # the same samples in another order
        m3._update_from_native(native.select_samples([2, 1, 0]))
    assert m3._update_from_native(native.select_samples([0, 1, 2])) is m3


def test_concat_of_native_and_user_built_metas(core, part):
    native = put(core, {"a": torch.arange(2)}, part)
    mine = BatchMeta([99], [part], custom_meta=[{"u": 1}])
    joined = BatchMeta.concat([BatchMeta._from_native(native).select_fields([]), mine])
    assert joined.global_indexes == native.global_indexes + [99]
    assert joined.generations == native.generations + [0]  # 0: unknown, as built by the user
    sent = joined._to_native()
    assert sent.global_indexes == joined.global_indexes and sent.get_custom_meta() == [{}, {}, {"u": 1}]
