"""The native KV bindings of _tqds.Client (kv_retrieve, kv_keys, kv_list,
kv_clear), _tqds.BatchMeta.build and custom metadata of any Python type,
against a real controller process."""

import collections
import pickle

import _tqds
import numpy as np
import pytest
import torch

import transfer_queue as tq

from conftest import unique


@pytest.fixture
def native(controller):
    """A _tqds.Client on the session controller (simple storage) and a fresh partition."""
    c = _tqds.Client(unique("kvclient"), tq.process_zmq_server_info(controller).to_addr("request"))
    c.initialize_storage_manager("SimpleStorageManager", "{}")
    return c, unique("kv")


def put_rows(c, partition, n, field="a"):
    """Puts n int64 rows of `field` as new samples; returns their meta."""
    arr = np.arange(n, dtype=np.int64)
    return c.put(n, [("dense", field, arr, "int64", [n])], partition)


# ------------------------------------------------------------------ BatchMeta.build

def test_build_makes_unproduced_samples():
    m = _tqds.BatchMeta.build([5, 7], ["p", "q"], [11, 12], ["a", "b"], [{"x": 1}, {}])
    assert len(m) == 2
    assert m.global_indexes == [5, 7]
    assert m.partition_ids == ["p", "q"]
    assert m.generations == [11, 12]
    assert m.field_names == ["a", "b"]
    assert all(not s["produced"] for s in m.field_schema.values())
    assert m.get_custom_meta() == [{"x": 1}, {}]


def test_build_defaults_and_empty():
    m = _tqds.BatchMeta.build([3], ["p"], [1])
    assert m.field_names == [] and m.get_custom_meta() == [{}]
    assert len(_tqds.BatchMeta.build([], [], [])) == 0
    assert _tqds.BatchMeta.build([1, 2], ["p", "p"], [1, 2], custom=[None, {"k": None}]).get_custom_meta() == [
        {}, {"k": None}]


@pytest.mark.parametrize("args", [
    ([1, 2], ["p"], [1, 2]),
    ([1], ["p"], [1, 2]),
    ([1], ["p"], [1], [], [{}, {}]),
    ([1], ["p"], [1], ["a", "a"]),
])
def test_build_rejects_mismatches(args):
    with pytest.raises(tq.InvalidArgumentError):
        _tqds.BatchMeta.build(*args)


# ------------------------------------------------------------------ custom metadata of any type

class Point:  # a user class: travels pickled
    def __init__(self, x, y):
        self.x, self.y = x, y

    def __eq__(self, other):
        return isinstance(other, Point) and (self.x, self.y) == (other.x, other.y)


def any_type_tags():
    return {
        "none": None, "yes": True, "no": False, "n": -(2 ** 63), "big": 2 ** 70, "f": 1.0,
        "s": "text", "b": b"\x00\xff", "list": [1, [None, True], {"k": 2.5}], "dict": {"a": {"b": []}},
        "tuple": (1, "x"), "int_keys": {1: "one"}, "array": np.arange(6, dtype=np.int32).reshape(2, 3),
        "tensor": torch.tensor([1.5, 2.5]), "point": Point(1, 2), "np_int": np.int64(7),
    }


def assert_same_tags(got, want):
    assert got.keys() == want.keys()
    for k, w in want.items():
        g = got[k]
        if isinstance(w, np.ndarray):
            assert isinstance(g, np.ndarray) and g.dtype == w.dtype and np.array_equal(g, w), k
        elif isinstance(w, torch.Tensor):
            assert isinstance(g, torch.Tensor) and torch.equal(g, w), k
        elif isinstance(w, np.generic):
            assert g == w.item() and type(g) is type(w.item()), k  # numpy scalars arrive as numbers
        else:
            assert g == w and type(g) is type(w), (k, g, w)


def test_local_custom_meta_keeps_types():
    m = _tqds.BatchMeta.build([0], ["p"], [1])
    m.set_custom_meta([any_type_tags()])
    assert_same_tags(m.get_custom_meta()[0], any_type_tags())
    again = pickle.loads(pickle.dumps(m))
    assert_same_tags(again.get_custom_meta()[0], any_type_tags())
    # dict order survives inside values
    m.set_custom_meta([{"d": {"z": 1, "a": 2}}])
    assert list(m.get_custom_meta()[0]["d"]) == ["z", "a"]


def test_custom_meta_of_any_type_round_trips_through_the_controller(native):
    c, p = native
    meta = put_rows(c, p, 2)
    tags = any_type_tags()
    meta.set_custom_meta([tags, {"bool_only": True}])
    c.set_custom_meta(meta)
    got = c.get_custom_meta(p, meta.global_indexes).get_custom_meta()
    assert_same_tags(got[0], tags)
    assert got[1] == {"bool_only": True} and type(got[1]["bool_only"]) is bool


def test_deep_nesting_falls_back_to_pickle(native):
    c, p = native
    meta = put_rows(c, p, 1)
    deep = []
    for _ in range(100):
        deep = [deep]
    cyclic = [1]
    cyclic.append(cyclic)
    meta.set_custom_meta([{"deep": deep, "cyclic": cyclic}])
    c.set_custom_meta(meta)
    got = c.get_custom_meta(p, meta.global_indexes).get_custom_meta()[0]
    assert got["deep"] == deep
    assert got["cyclic"][0] == 1 and got["cyclic"][1][0] == 1


def test_unpicklable_tag_is_a_type_error():
    m = _tqds.BatchMeta.build([0], ["p"], [1])
    with pytest.raises(TypeError, match="'fn'"):
        m.set_custom_meta([{"fn": lambda: 1}])


def test_numbers_still_drive_the_seqlen_sampler(native):
    c, p = native
    meta = put_rows(c, p, 4)
    meta.set_custom_meta([{"seq_len": np.int64(10 * (i + 1))} for i in range(4)])
    c.set_custom_meta(meta)
    cfg = {"sampler": "seqlen_balanced", "dp_size": 2, "dp_rank": 0}
    got = c.get_meta(["a"], 2, p, "t", cfg, "poll")
    assert len(got) == 2


# ------------------------------------------------------------------ KV bindings

def test_kv_retrieve_create_put_and_read_back(native):
    c, p = native
    created = c.kv_retrieve(p, ["a", "b", "c"], True)
    assert isinstance(created, _tqds.BatchMeta)
    assert len(created) == 3 and created.field_names == [] and created.partition_ids == [p] * 3
    c.put(3, [("dense", "x", np.array([10, 20, 30], dtype=np.int64), "int64", [3])], meta=created)
    # Append a column to a subset of keys.
    ab = c.kv_retrieve(p, ["b", "a"], True)
    assert ab.global_indexes == [created.global_indexes[1], created.global_indexes[0]]
    c.put(2, [("dense", "y", np.array([2, 1], dtype=np.int64), "int64", [2])], meta=ab)

    got = c.kv_retrieve(p, ["c", "missing", "a"], False)
    assert got.global_indexes == [created.global_indexes[2], created.global_indexes[0]]
    assert got.field_names == ["x"]  # c has no y
    (name, form, arr, dtype), = c.get_data(got)
    assert (name, form) == ("x", "dense") and arr.tolist() == [30, 10]
    both = c.kv_retrieve(p, ["a", "b"])
    assert both.field_names == ["x", "y"]
    assert [f[2].tolist() for f in c.get_data(both)] == [[10, 20], [1, 2]]
    assert len(c.kv_retrieve(unique("nope"), ["a"], False)) == 0


def test_kv_retrieve_rejects_bad_keys(native):
    c, p = native
    with pytest.raises(tq.InvalidArgumentError, match="listed twice"):
        c.kv_retrieve(p, ["a", "a"], True)
    with pytest.raises(tq.InvalidArgumentError):
        c.kv_retrieve(p, [""], True)
    with pytest.raises(tq.InvalidArgumentError):
        c.kv_retrieve(p, ["k" * 300], True)
    with pytest.raises(TypeError, match="keys must be a list of str, got str"):
        c.kv_retrieve(p, "abc", True)  # a str is not a list of keys
    for call in (lambda k: c.kv_retrieve(p, k, True), lambda k: c.kv_clear(p, k), lambda k: c.kv_get(p, k),
                 lambda k: c.kv_put(p, k, 2, [("dense", "x", np.zeros(2, dtype=np.int64), "int64", [2])])):
        with pytest.raises(TypeError, match=r"got list \(key 1 is int\)"):
            call(["a", 1])
        with pytest.raises(TypeError, match=r"got tuple \(key 0 is bytes\)"):
            call((b"a", "b"))  # bytes are no key here (the datasystem's KVClient takes them)
        with pytest.raises(TypeError, match="got int"):
            call(5)
        with pytest.raises(UnicodeEncodeError):
            call(["a", "\ud800"])  # a lone surrogate has no UTF-8
    with pytest.raises(TypeError, match="got list"):
        c.kv_put(p, ["a", None], 2, [("dense", "x", np.zeros(2, dtype=np.int64), "int64", [2])])
    assert c.kv_list(p) == {}, "a rejected request creates nothing"
    # A tuple of keys is read like a list.
    assert c.kv_retrieve(p, ("t1", "t2"), True).size == 2
    assert set(c.kv_list(p)[p]) == {"t1", "t2"}


def test_kv_keys_as_columns_keep_every_byte(native):
    """kv_put, kv_get and kv_clear hand their keys over as columns (one
    buffer of bytes and their ends): keys of any UTF-8, lengths and order come
    back exactly, from a list, a tuple or another sequence."""
    c, p = native
    keys = ["a", "é", "日本語キー", "k" * 256, "x y", "🙂", "a:b/c"]
    n = len(keys)
    values = np.arange(n, dtype=np.int64)
    names, tags = c.kv_put(p, keys, n, [("dense", "x", values, "int64", [n])])
    assert names == ["x"] and tags is None
    assert list(c.kv_list(p)[p]) == keys
    for form in (list(reversed(keys)), tuple(reversed(keys)), collections.deque(reversed(keys))):
        fields, found, items = c.kv_get(p, form)
        assert (fields, found) == (["x"], n)
        (name, kind, arr, dtype), = items
        assert arr.tolist() == list(reversed(range(n)))
    c.kv_clear(p, ("é", "🙂"))
    assert list(c.kv_list(p)[p]) == [k for k in keys if k not in ("é", "🙂")]
    with pytest.raises(tq.InvalidArgumentError, match="longer than 256"):
        c.kv_get(p, ["k" * 257])


def test_kv_keys(native):
    c, p = native
    keyed = c.kv_retrieve(p, ["a", "b"], True)
    plain = put_rows(c, p, 1)
    other = put_rows(c, unique("other"), 1)
    idx = [keyed.global_indexes[1], plain.global_indexes[0], other.global_indexes[0], 10 ** 9,
           keyed.global_indexes[0]]
    assert c.kv_keys(p, idx) == ["b", None, None, None, "a"]
    with pytest.raises(tq.NotFoundError):
        c.kv_keys(unique("nope"), [0])


def test_kv_list_shapes(native):
    c, p = native
    m = c.kv_retrieve(p, ["z", "a"], True)
    m.set_custom_meta([{"score": 0.5, "ok": True}, {}])
    c.set_custom_meta(m)  # tags set through the index API show up in kv_list
    plain = unique("plain")
    put_rows(c, plain, 1)
    one = c.kv_list(p)
    assert one == {p: {"z": {"score": 0.5, "ok": True}, "a": {}}}
    assert list(one[p]) == ["z", "a"], "keys in insertion order"
    everything = c.kv_list(None)
    assert everything[p] == one[p] and everything[plain] == {}
    assert c.kv_list() == everything
    assert c.kv_list(unique("nope")) == {}


def test_kv_clear(native):
    c, p = native
    m = c.kv_retrieve(p, ["a", "b"], True)
    c.put(2, [("dense", "x", np.array([1, 2], dtype=np.int64), "int64", [2])], meta=m)
    written = c.kv_retrieve(p, ["a", "b"])
    assert written.field_names == ["x"]
    c.kv_clear(p, ["a", "missing"])
    assert list(c.kv_list(p)[p]) == ["b"]
    assert c.kv_keys(p, m.global_indexes) == [None, "b"]
    with pytest.raises(tq.NotFoundError):  # the old sample's data is gone
        c.get_data(written.select_samples([0]))
    assert c.get_data(written.select_samples([1]))[0][2].tolist() == [2]
    c.kv_clear(p, ["a"])  # twice: a no-op
    c.kv_clear(unique("nope"), ["a"])
    c.kv_clear(p, ["b"])
    assert c.kv_list(p) == {p: {}}, "the emptied partition stays"
    assert p in c.list_partitions()
    # Re-putting a cleared key allocates a fresh sample.
    again = c.kv_retrieve(p, ["a"], True)
    assert again.generations[0] not in m.generations and again.field_names == []


def test_clear_in_a_then_allocate_in_b_never_returns_a_key(native):
    c, _ = native
    a, b = unique("A"), unique("B")
    keys = [f"k{i}" for i in range(8)]
    ma = c.kv_retrieve(a, keys, True)
    c.put(8, [("dense", "x", np.arange(8, dtype=np.int64), "int64", [8])], meta=ma)
    c.kv_clear(a, keys)
    mb = put_rows(c, b, 64)  # reuses A's freed indexes (lowest first)
    assert set(ma.global_indexes) <= set(mb.global_indexes)
    assert c.kv_keys(b, mb.global_indexes) == [None] * 64
    assert c.kv_keys(a, ma.global_indexes) == [None] * 8
    assert c.kv_list(b) == {b: {}}


def test_kv_calls_from_several_threads(native):
    import threading
    c, p = native
    c.kv_retrieve(p, [f"k{i}" for i in range(100)], True)
    errors = []

    def worker(i):
        try:
            for _ in range(20):
                assert len(c.kv_retrieve(p, [f"k{i}", f"k{i + 50}"], False)) == 2
                c.kv_list(p)
        except Exception as e:  # pragma: no cover
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
