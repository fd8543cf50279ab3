"""Upstream TransferQueue 0.1.11 behaviour in the native bindings (_tqds):
per-sample status shapes, get_meta modes poll_all / force_fetch_all, the
controller-wide polling_mode and default_sampling (as `_tqds.Controller`
kwargs and as `tq controller` flags), and the samplers' upstream semantics.

Drives `_tqds.Client` directly against real controllers, so it does not
depend on the Python layer that maps upstream's API onto these calls."""

from __future__ import annotations

import json
import subprocess
import time

import numpy as np
import pytest

import _tqds
from conftest import kill_pid, unique


# --------------------------------------------------------------------------- helpers

def put(client, partition, field, values, meta=None, custom=None):
    """Writes int64 `values` as field `field`: new samples of `partition`, or
    the samples of `meta`. With `custom`, sets each sample's custom meta."""
    arr = np.ascontiguousarray(values, dtype=np.int64)
    fields = [("dense", field, arr, "int64", list(arr.shape))]
    if meta is None:
        out = client.put(len(arr), fields, partition_id=partition)
    else:
        out = client.put(len(arr), fields, meta=meta)
    if custom is not None:
        out.set_custom_meta(custom)
        client.set_custom_meta(out)
    return out


def matrix(status, columns):
    """(indexes, bytes) -> (indexes, int8 array N x columns)."""
    gidx, raw = status
    return gidx, np.frombuffer(raw, dtype=np.int8).reshape(len(gidx), columns)


def new_client(address):
    c = _tqds.Client(unique("native"), address)
    c.initialize_storage_manager("SimpleStorageManager", "{}")
    return c


@pytest.fixture
def make_controller():
    """Starts in-process controllers with the given options; stops them after."""
    started = []

    def start(**options):
        ctl = _tqds.Controller(storage_units=1, unit_capacity_mb=64, **options)
        started.append(ctl)
        return ctl

    yield start
    for ctl in started:
        ctl.stop()


@pytest.fixture
def client(make_controller):
    return new_client(make_controller().address)


# --------------------------------------------------------------------------- status shapes

def test_production_status_is_none_or_indexes_and_a_matrix(client):
    p = unique()
    assert client.production_status(p, ["x"]) is None, "unknown partition"
    meta = put(client, p, "x", [1, 2, 3])
    put(client, p, "w", [5, 6], meta=meta.select_samples([0, 2]))
    put(client, p, "y", [7], meta=meta.select_samples([1]))
    assert client.production_status(p, []) is None, "no fields"
    assert client.production_status(p, ["x", "never"]) is None, "a field never produced"

    gidx, m = matrix(client.production_status(p, ["y", "w"]), 2)
    assert gidx == sorted(meta.global_indexes)
    # Columns in registration order (w before y), whatever order was asked.
    assert m.tolist() == [[1, 0], [0, 1], [1, 0]]
    # The seed's summary is unchanged.
    assert client.get_production_status(p) == {"num_samples": 3, "produced": {"x": 3, "w": 2, "y": 1}}


def test_production_status_rows_include_unproduced_and_drop_cleared(client):
    p = unique()
    a = put(client, p, "x", [1, 2])
    b = put(client, p, "y", [3])  # a sample without "x"
    gidx, m = matrix(client.production_status(p, ["x"]), 1)
    assert gidx == sorted(a.global_indexes + b.global_indexes)
    assert dict(zip(gidx, m[:, 0].tolist())) == {a.global_indexes[0]: 1, a.global_indexes[1]: 1,
                                                 b.global_indexes[0]: 0}
    client.clear_samples(a.select_samples([0]))
    gidx, m = matrix(client.production_status(p, ["x", "y"]), 2)
    assert gidx == sorted([a.global_indexes[1], b.global_indexes[0]])
    assert dict(zip(gidx, m.tolist())) == {a.global_indexes[1]: [1, 0], b.global_indexes[0]: [0, 1]}


def test_consumption_status(client):
    p = unique()
    assert client.consumption_status(p, "t") is None, "unknown partition"
    meta = put(client, p, "x", [1, 2, 3, 4])
    gidx, raw = client.consumption_status(p, "t")
    assert gidx == sorted(meta.global_indexes)
    assert raw == bytes(4), "an unknown task gets zeros"
    got = client.get_meta(["x"], 2, p, "t", None, "fetch", 10.0)
    _, raw = client.consumption_status(p, "t")
    consumed = [gi for gi, flag in zip(gidx, raw) if flag]
    assert consumed == sorted(got.global_indexes)
    assert client.get_consumption_status(p, "t") == {"num_samples": 4, "consumed": 2}
    client.reset_consumption(p, "t")
    assert client.consumption_status(p, "t")[1] == bytes(4)


# --------------------------------------------------------------------------- get_meta modes

def test_poll_all_is_all_or_nothing_and_answers_at_once(client):
    p = unique()
    put(client, p, "x", [1, 2, 3])
    t0 = time.monotonic()
    empty = client.get_meta(["x"], 4, p, "t", None, "poll_all", 30.0)
    assert len(empty) == 0
    assert time.monotonic() - t0 < 10, "poll_all must not wait for its timeout"
    assert client.consumption_status(p, "t")[1] == bytes(3), "nothing consumed"
    got = client.get_meta(["x"], 3, p, "t", None, "poll_all")
    assert len(got) == 3
    assert len(client.get_meta(["x"], 1, p, "t", None, "poll_all")) == 0
    assert len(client.get_meta(["x"], 1, unique(), "t", None, "poll_all")) == 0, "unknown partition: empty"


def test_force_fetch_all_returns_every_live_sample_and_marks_nothing(client):
    p = unique()
    a = put(client, p, "x", [1, 2])
    b = client.put(1, [("dense", "y", np.array([9], dtype=np.int64), "int64", [1])], partition_id=p)
    meta = client.get_meta(["x", "never"], 0, p, "", None, "force_fetch_all")
    assert meta.global_indexes == sorted(a.global_indexes + b.global_indexes)
    assert meta.field_names == ["x"], "only registered fields"
    produced = dict(zip(meta.global_indexes, meta.production_status))
    assert [produced[g] for g in a.global_indexes] == [1, 1]
    assert produced[b.global_indexes[0]] == 0
    assert client.consumption_status(p, "t")[1] == bytes(3)
    with pytest.raises(_tqds.NotFoundError, match="does not exist"):
        client.get_meta(["x"], 0, unique(), "", None, "force_fetch_all")
    with pytest.raises(RuntimeError):  # the upstream-style catch still works
        client.get_meta(["x"], 0, unique(), "", None, "force_fetch_all")


def test_allocate_reserves_unproduced_samples(client):
    p = unique()
    reserved = client.allocate(p, 2)
    assert len(reserved) == 2 and reserved.field_names == []
    assert client.production_status(p, ["x"]) is None, "nothing produced yet"
    put(client, p, "x", [7, 8], meta=reserved)
    gidx, m = matrix(client.production_status(p, ["x"]), 1)
    assert gidx == sorted(reserved.global_indexes) and m.tolist() == [[1], [1]]
    with pytest.raises(_tqds.InvalidArgumentError):
        client.allocate(p, 0)


def test_unknown_mode_names_the_known_ones(client):
    with pytest.raises(_tqds.InvalidArgumentError, match="force_fetch_all"):
        client.get_meta(["x"], 1, unique(), "t", None, "insert")


# --------------------------------------------------------------------------- controller options

def test_polling_mode_makes_fetch_answer_at_once(make_controller):
    c = new_client(make_controller(polling_mode=True).address)
    p = unique()
    put(c, p, "x", [1, 2])
    t0 = time.monotonic()
    assert len(c.get_meta(["x"], 3, p, "t", None, "fetch", 30.0)) == 0
    assert time.monotonic() - t0 < 10
    assert len(c.get_meta(["x"], 2, p, "t", None, "fetch", 30.0)) == 2


def test_default_sampling_applies_when_the_call_names_no_sampler(make_controller):
    ctl = make_controller(default_sampling={"sampler": "grpo_group_n", "n_samples_per_prompt": 2})
    c = new_client(ctl.address)
    p = unique()
    meta = put(c, p, "x", [0, 1, 2, 3, 4, 5])
    ready = meta.select_samples([0, 1, 3, 4, 5])
    put(c, p, "y", [0, 1, 3, 4, 5], meta=ready)
    gi = meta.global_indexes
    got = c.get_meta(["x", "y"], 4, p, "t", None, "poll")
    assert sorted(got.global_indexes) == [gi[0], gi[1], gi[3], gi[4]], "runs of 2 consecutive indexes"
    with pytest.raises(_tqds.InvalidArgumentError, match="multiple"):
        c.get_meta(["x"], 3, p, "u", None, "poll")
    assert len(c.get_meta(["x"], 3, p, "v", {"sampler": "sequential"}, "poll")) == 3


def test_unknown_default_sampler_is_refused(make_controller):
    with pytest.raises(_tqds.InvalidArgumentError, match="unknown sampler 'nope'"):
        make_controller(default_sampling={"sampler": "nope"})


def test_tq_controller_flags(tmp_path):
    """`tq controller --polling-mode --default-sampling '<json>'`."""
    cfg = {"sampler": "rank_aware"}
    proc = subprocess.Popen(["tq", "controller", "--storage-units", "1", "--unit-capacity-mb", "64",
                             "--polling-mode", "--default-sampling", json.dumps(cfg)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        line = proc.stdout.readline()
        assert "listening on" in line, line
        address = line.split()[-1]
        a, b = new_client(address), new_client(address)
        p = unique()
        put(a, p, "x", list(range(6)))
        dp0 = {"dp_rank": 0, "batch_index": 0}
        first = a.get_meta(["x"], 3, p, "t", dp0, "fetch", 30.0)
        assert len(first) == 3
        assert b.get_meta(["x"], 3, p, "t", dp0, "fetch", 30.0).global_indexes == first.global_indexes
        second = b.get_meta(["x"], 3, p, "t", {"dp_rank": 1, "batch_index": 0}, "fetch", 30.0)
        assert not set(second.global_indexes) & set(first.global_indexes)
        # Polling mode: nothing left for a new key, an empty answer at once.
        assert len(a.get_meta(["x"], 3, p, "t", {"dp_rank": 0, "batch_index": 1}, "fetch", 30.0)) == 0
    finally:
        kill_pid(proc.pid)
        proc.wait(timeout=10)
        proc.stdout.close()


def test_tq_controller_rejects_a_bad_default_sampling():
    r = subprocess.run(["tq", "controller", "--default-sampling", "[1]"], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode != 0
    assert "--default-sampling" in r.stderr and "JSON object" in r.stderr


# --------------------------------------------------------------------------- samplers

def test_rank_aware_upstream_mode_caches_until_the_partition_is_cleared(client):
    p = unique()
    put(client, p, "x", [1, 2, 3, 4])
    key = {"sampler": "rank_aware", "dp_rank": 0, "batch_index": 0}
    first = client.get_meta(["x"], 2, p, "t", key, "poll_all")
    assert len(first) == 2
    client.reset_consumption(p, "")
    assert client.get_meta(["x"], 2, p, "t", key, "poll_all").global_indexes == first.global_indexes
    with pytest.raises(_tqds.InvalidArgumentError, match="batch_index"):
        client.get_meta(["x"], 2, p, "t", {"sampler": "rank_aware", "dp_rank": 0}, "poll")
    with pytest.raises(_tqds.InvalidArgumentError, match="batch_index"):  # None counts as absent
        client.get_meta(["x"], 2, p, "t", {"sampler": "rank_aware", "dp_rank": 0, "batch_index": None}, "poll")
    with pytest.raises(_tqds.InvalidArgumentError, match="dp_rank must be >= 0"):
        client.get_meta(["x"], 2, p, "t", {"sampler": "rank_aware", "dp_rank": -1, "batch_index": 0}, "poll")
    client.clear_partition(p)
    assert len(client.get_meta(["x"], 2, p, "t", key, "poll_all")) == 0, "the cache went with the partition"


def test_seqlen_balanced_splits_by_total_lengths(client):
    p = unique()
    lengths = [1, 1, 2, 2, 50, 50, 51, 51]
    meta = put(client, p, "x", list(range(8)), custom=[{"total_lengths": n} for n in lengths])
    length_of = dict(zip(meta.global_indexes, lengths))
    cfg = {"sampler": "seqlen_balanced", "dp_size": 2, "n_samples_per_prompt": 2, "batch_index": 0}
    shares = [client.get_meta(["x"], 4, p, "t", dict(cfg, dp_rank=r), "fetch", 10.0).global_indexes
              for r in (1, 0)]
    assert sorted(shares[0] + shares[1]) == sorted(meta.global_indexes)
    assert [sum(length_of[g] for g in s) for s in shares] == [104, 104]
    again = client.get_meta(["x"], 4, p, "t", dict(cfg, dp_rank=1), "poll_all")
    assert again.global_indexes == shares[0], "every rank's share is cached"
