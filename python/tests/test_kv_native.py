"""The native KV bindings of _tqds.Client (kv_retrieve, kv_keys, kv_list,
kv_clear), _tqds.BatchMeta.build and custom metadata of any Python type,
against a real controller process."""

import _tqds
import pytest

import transfer_queue as tq


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


@pytest.mark.parametrize("args", [
    ([1, 2], ["p"], [1, 2]),
    ([1], ["p"], [1, 2]),
    ([1], ["p"], [1], [], [{}, {}]),
    ([1], ["p"], [1], ["a", "a"]),
])
def test_build_rejects_mismatches(args):
    with pytest.raises(tq.InvalidArgumentError):
        _tqds.BatchMeta.build(*args)
