"""transfer_queue.dataloader: StreamingDataset / StreamingDataLoader, as upstream TransferQueue 0.1.11.

Unit tests drive the dataset with fake clients and fetch hooks; the end-to-end
tests stream from a real controller (tq.init) with rank-aware sampling in
polling mode.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import threading
from pathlib import Path

import pytest
import torch
from tensordict import NonTensorStack, TensorDict

from transfer_queue.dataloader import StreamingDataLoader, StreamingDataset
from transfer_queue.dataloader.streaming_dataset import chunk_batch_fn, default_fetch_batch_fn
from transfer_queue.metadata import BatchMeta

CONFIG = {"controller": {"zmq_info": None}, "backend": {"storage_backend": "SimpleStorage", "SimpleStorage": {}}}


def make_meta(global_indexes):
    indexes = list(global_indexes)
    return BatchMeta(global_indexes=indexes, partition_ids=["p"] * len(indexes))


def make_dataset(**overrides) -> StreamingDataset:
    kwargs = dict(config=CONFIG, batch_size=4, micro_batch_size=2, data_fields=["x"], partition_id="p",
                  task_name="train", dp_rank=0)
    kwargs.update(overrides)
    return StreamingDataset(**kwargs)


# --------------------------------------------------------------- chunk_batch_fn

def test_chunks_pair_each_piece_with_the_meta_of_its_samples():
    td = TensorDict({"x": torch.arange(10), "y": torch.arange(20).reshape(10, 2)}, batch_size=[10])
    pieces = chunk_batch_fn(td, make_meta(range(100, 110)), micro_batch_size=4)
    assert [p[0]["x"].tolist() for p in pieces] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    # upstream pairs the uneven tail wrongly (meta.chunk gives 4/3/3 samples); ours follows the data
    assert [list(p[1].global_indexes) for p in pieces] == [[100, 101, 102, 103], [104, 105, 106, 107], [108, 109]]
    assert pieces[2][0]["y"].tolist() == [[16, 17], [18, 19]]
    assert all(p[0].batch_size[0] == len(p[1].global_indexes) for p in pieces)


def test_chunks_rebuild_nested_fields_with_their_layout():
    jagged = torch.nested.as_nested_tensor([torch.full((i + 1,), float(i)) for i in range(5)], layout=torch.jagged)
    strided = torch.nested.nested_tensor([torch.zeros(i + 1, 2) for i in range(5)])
    td = TensorDict({"j": jagged, "s": strided, "d": torch.arange(5),
                     "t": NonTensorStack(*[f"s{i}" for i in range(5)])}, batch_size=[5])
    pieces = chunk_batch_fn(td, make_meta(range(5)), micro_batch_size=2)
    assert len(pieces) == 3
    for k, (piece, meta) in enumerate(pieces):
        rows = list(range(2 * k, min(2 * k + 2, 5)))
        assert piece["j"].is_nested and piece["j"].layout == torch.jagged
        assert piece["s"].is_nested and piece["s"].layout == torch.strided
        assert [t.tolist() for t in piece["j"].unbind(0)] == [[float(i)] * (i + 1) for i in rows]
        assert [tuple(t.shape) for t in piece["s"].unbind(0)] == [(i + 1, 2) for i in rows]
        assert piece["d"].tolist() == rows
        assert piece.get("t").tolist() == [f"s{i}" for i in rows]
        assert list(meta.global_indexes) == rows


def test_only_nested_fields_still_give_sized_pieces():
    jagged = torch.nested.as_nested_tensor([torch.ones(i + 1) for i in range(3)], layout=torch.jagged)
    pieces = chunk_batch_fn(TensorDict({"j": jagged}, batch_size=[3]), make_meta(range(3)), micro_batch_size=2)
    assert [p[0].batch_size[0] for p in pieces] == [2, 1]


@pytest.mark.parametrize("td, m, err, match", [
    ({"x": torch.zeros(2)}, 1, TypeError, "Expected TensorDict, got dict"),
    (TensorDict({"x": torch.zeros(2)}, batch_size=[2]), 0, ValueError, "positive integer"),
    (TensorDict({"x": torch.zeros(2)}, batch_size=[2]), 1.5, ValueError, "positive integer"),
    (TensorDict({"x": torch.zeros(2)}, batch_size=[2]), 3, ValueError, r"exceeds total batch size \(2\)"),
    (TensorDict({"x": torch.zeros(())}, batch_size=[]), 1, ValueError, "non-empty batch_size"),
])
def test_chunk_rejects_bad_input(td, m, err, match):
    with pytest.raises(err, match=match):
        chunk_batch_fn(td, make_meta(range(2)), micro_batch_size=m)


def test_even_chunks_match_upstream():
    """Upstream's own chunk_batch_fn cuts the same batch at the same places."""
    if not PEER_PYTHON.exists():
        pytest.skip(f"upstream TransferQueue's interpreter {PEER_PYTHON} is not here")
    script = r'''
import json, torch
from tensordict import TensorDict
from transfer_queue.metadata import BatchMeta
from transfer_queue.dataloader.streaming_dataset import chunk_batch_fn
out = []
for total, m in [(8, 2), (6, 3), (5, 5), (4, 1)]:
    jagged = torch.nested.as_nested_tensor([torch.arange(i + 1) for i in range(total)], layout=torch.jagged)
    td = TensorDict({"x": torch.arange(total), "j": jagged}, batch_size=[total])
    meta = BatchMeta(global_indexes=list(range(50, 50 + total)), partition_ids=["p"] * total)
    out.append([[p["x"].tolist(), [t.tolist() for t in p["j"].unbind(0)], list(mm.global_indexes)]
                for p, mm in chunk_batch_fn(td, meta, micro_batch_size=m)])
print(json.dumps(out))
'''
    proc = subprocess.run([str(PEER_PYTHON), "-c", script], capture_output=True, text=True, timeout=120, cwd="/",
                          env={**os.environ, "PYTHONPATH": ""})
    assert proc.returncode == 0, proc.stderr[-3000:]
    theirs = json.loads(proc.stdout.strip().splitlines()[-1])
    ours = []
    for total, m in [(8, 2), (6, 3), (5, 5), (4, 1)]:
        jagged = torch.nested.as_nested_tensor([torch.arange(i + 1) for i in range(total)], layout=torch.jagged)
        td = TensorDict({"x": torch.arange(total), "j": jagged}, batch_size=[total])
        ours.append([[p["x"].tolist(), [t.tolist() for t in p["j"].unbind(0)], list(mm.global_indexes)]
                     for p, mm in chunk_batch_fn(td, make_meta(range(50, 50 + total)), micro_batch_size=m)])
    assert ours == theirs


# --------------------------------------------------------------- constructor checks

@pytest.mark.parametrize("overrides, match", [
    ({"micro_batch_size": 0}, "micro_batch_size must be >= 1"),
    ({"data_fields": []}, "at least one field"),
    ({"dp_rank": -1}, "dp_rank -1 must be greater than or equal to 0"),
])
def test_dataset_rejects_bad_arguments(overrides, match):
    with pytest.raises(ValueError, match=match):
        make_dataset(**overrides)


def test_dataset_is_an_iterable_dataset_with_upstreams_attributes():
    ds = make_dataset(dp_rank=3, task_name="actor")
    assert isinstance(ds, torch.utils.data.IterableDataset)
    assert ds.sampling_config == {"dp_rank": 3, "task_name": "actor"}
    assert ds.buffer == [] and ds.batch_index == 0
    assert ds.fetch_batch_fn is default_fetch_batch_fn and ds.process_batch_fn is chunk_batch_fn


# --------------------------------------------------------------- iteration with a fake fetch

class ScriptedFetch:
    """A fetch_batch_fn that serves a script of batches (None = nothing ready) and records its calls."""

    def __init__(self, script):
        self.script = list(script)
        self.calls: list[dict] = []

    def __call__(self, **kwargs):
        self.calls.append(kwargs)
        if not self.script:
            raise StopFetching
        size = self.script.pop(0)
        if size is None:
            return None, make_meta([])
        first = 10 * len(self.calls)
        td = TensorDict({"x": torch.arange(first, first + size)}, batch_size=[size])
        return td, make_meta(range(first, first + size))


class StopFetching(Exception):
    pass


class FakeClient:
    def __init__(self, consumed_after: int | None = None):
        self.checks = 0
        self.consumed_after = consumed_after

    def check_consumption_status(self, task_name, partition_id):
        self.checks += 1
        return self.consumed_after is not None and self.checks > self.consumed_after


@pytest.fixture(autouse=True)
def no_empty_batch_sleep(monkeypatch):
    monkeypatch.setenv("TQ_STREAMING_DATASET_EMPTY_BATCH_SLEEP_INTERVAL", "0")


def xs(pieces):
    return [p[0]["x"].tolist() for p in pieces]


def take(iterator, n):
    return [next(iterator) for _ in range(n)]


def test_iteration_fetches_step_by_step_and_buffers():
    fetch = ScriptedFetch([4, None, 4])
    ds = make_dataset(fetch_batch_fn=fetch)
    ds._tq_client = FakeClient()
    it = iter(ds)
    assert xs(take(it, 4)) == [[10, 11], [12, 13], [30, 31], [32, 33]]
    # an empty answer is retried for the same step; every call names the step it wants
    assert [c["batch_index"] for c in fetch.calls] == [0, 1, 1]
    assert fetch.calls[0] == {"tq_client": ds._tq_client, "data_fields": ["x"], "batch_size": 4,
                              "partition_id": "p", "task_name": "train",
                              "sampling_config": {"dp_rank": 0, "task_name": "train"}, "batch_index": 0}
    assert len(ds.buffer) == 2 and ds.batch_index == 2
    with pytest.raises(StopFetching):  # a hook's error ends the iteration
        next(it)


def test_reset_replays_the_buffer_and_step_drops_it():
    fetch = ScriptedFetch([2, 2])
    ds = make_dataset(fetch_batch_fn=fetch, micro_batch_size=1)
    ds._tq_client = FakeClient()
    first = xs(take(iter(ds), 4))
    assert first == [[10], [11], [20], [21]]
    ds.reset()
    assert ds.batch_index == 0
    it = iter(ds)
    assert xs(take(it, 4)) == first  # from the buffer
    assert len(fetch.calls) == 2  # nothing fetched again
    ds.step("q")
    assert (ds.buffer, ds.batch_index, ds.partition_id) == ([], 0, "q")
    fetch.script = [3]
    assert xs(take(iter(ds), 1)) == [[30]]
    assert fetch.calls[-1]["partition_id"] == "q" and fetch.calls[-1]["batch_index"] == 0


def test_consumption_check_stops_after_the_buffer_is_exhausted():
    fetch = ScriptedFetch([2, 2])
    ds = make_dataset(fetch_batch_fn=fetch, micro_batch_size=2, should_check_consumption_status=True)
    client = FakeClient(consumed_after=2)  # third check says consumed
    ds._tq_client = client
    assert xs(list(ds)) == [[10, 11], [20, 21]]
    # replay after reset: buffered steps are yielded although all is consumed
    ds.reset()
    assert xs(list(ds)) == [[10, 11], [20, 21]]
    assert len(fetch.calls) == 2


def test_process_batch_fn_hook_receives_each_batch():
    seen = []

    def whole(td, meta, micro_batch_size):
        seen.append((td["x"].tolist(), list(meta.global_indexes), micro_batch_size))
        return [(td, meta)]

    ds = make_dataset(fetch_batch_fn=ScriptedFetch([3]), process_batch_fn=whole, micro_batch_size=2)
    ds._tq_client = FakeClient()
    assert xs(take(iter(ds), 1)) == [[10, 11, 12]]
    assert seen == [([10, 11, 12], [10, 11, 12], 2)]


def test_default_fetch_batch_fn_asks_for_the_step_and_reads_it():
    class Client:
        def __init__(self, meta):
            self.meta = meta
            self.get_meta_calls = []

        def get_meta(self, **kwargs):
            self.get_meta_calls.append(kwargs)
            return self.meta

        def get_data(self, meta):
            return TensorDict({"x": torch.tensor(list(meta.global_indexes))}, batch_size=[meta.size])

    client = Client(make_meta([7, 8]))
    td, meta = default_fetch_batch_fn(client, ["x"], 2, "p", "t", {"dp_rank": 1, "task_name": "t"}, 5)
    assert td["x"].tolist() == [7, 8] and list(meta.global_indexes) == [7, 8]
    assert client.get_meta_calls == [{"data_fields": ["x"], "batch_size": 2, "partition_id": "p", "task_name": "t",
                                      "sampling_config": {"dp_rank": 1, "task_name": "t", "batch_index": 5,
                                                          "partition_id": "p"}}]
    empty = Client(make_meta([]))
    td, meta = default_fetch_batch_fn(empty, ["x"], 2, "p", "t", {}, 0)
    assert td is None and meta.size == 0


def test_the_empty_batch_sleep_is_read_from_the_environment(monkeypatch):
    from transfer_queue.dataloader import streaming_dataset

    monkeypatch.setenv("TQ_STREAMING_DATASET_EMPTY_BATCH_SLEEP_INTERVAL", "0.25")
    slept = []
    monkeypatch.setattr(streaming_dataset.time, "sleep", slept.append)
    ds = make_dataset(fetch_batch_fn=ScriptedFetch([None, 4]))
    ds._tq_client = FakeClient()
    take(iter(ds), 1)
    assert slept == [0.25]
    monkeypatch.setenv("TQ_STREAMING_DATASET_EMPTY_BATCH_SLEEP_INTERVAL", "soon")
    ds2 = make_dataset(fetch_batch_fn=ScriptedFetch([None]))
    ds2._tq_client = FakeClient()
    with pytest.raises(ValueError, match="TQ_STREAMING_DATASET_EMPTY_BATCH_SLEEP_INTERVAL"):
        next(iter(ds2))


def test_a_pickled_dataset_leaves_its_client_behind():
    import pickle

    ds = make_dataset(fetch_batch_fn=None)
    ds._tq_client = threading.Lock()  # stands for a live, unpicklable client
    copy = pickle.loads(pickle.dumps(ds))
    assert copy._tq_client is None and copy.partition_id == "p"


# --------------------------------------------------------------- the DataLoader

def test_dataloader_yields_the_datasets_pieces_and_forwards_controls():
    fetch = ScriptedFetch([4])
    ds = make_dataset(fetch_batch_fn=fetch)
    ds._tq_client = FakeClient()
    loader = StreamingDataLoader(ds)
    assert isinstance(loader, torch.utils.data.DataLoader) and loader.batch_size is None
    it = iter(loader)
    td, meta = next(it)
    assert isinstance(td, TensorDict) and td["x"].tolist() == [10, 11] and list(meta.global_indexes) == [10, 11]
    next(it)
    assert loader.get_buffer() is ds.buffer and len(loader.get_buffer()) == 1
    loader.reset()
    assert ds.batch_index == 0
    loader.step("other")
    assert ds.partition_id == "other" and loader.get_buffer() == []


def test_dataloader_takes_a_collate_fn():
    ds = make_dataset(fetch_batch_fn=ScriptedFetch([2]))
    ds._tq_client = FakeClient()
    loader = StreamingDataLoader(ds, collate_fn=lambda item: ("mine", item[0]["x"].tolist()))
    assert next(iter(loader)) == ("mine", [10, 11])


# --------------------------------------------------------------- end to end: tq.init, rank-aware, polling

import transfer_queue as tq  # noqa: E402

from conftest import PEER_PYTHON, kill_pid, unique  # noqa: E402

# No step of these tests should take long; a hang fails instead of blocking the suite.
STEP_TIMEOUT_S = 60.0


def next_within(iterator, timeout: float = STEP_TIMEOUT_S):
    """next(iterator), failing the test when it does not return within `timeout`."""
    box: dict = {}

    def run():
        try:
            box["value"] = next(iterator)
        except BaseException as e:  # noqa: BLE001 (re-raised below)
            box["error"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(timeout)
    assert not t.is_alive(), f"no item within {timeout} s"
    if "error" in box:
        raise box["error"]
    return box["value"]


@contextlib.contextmanager
def tq_session(monkeypatch, backend: dict):
    """A tq.init session of its own (rank-aware sampler, polling mode, the given backend block), closed after."""
    monkeypatch.setenv("TQDS_SESSION", unique("dl"))
    monkeypatch.setenv("TQ_STREAMING_DATASET_EMPTY_BATCH_SLEEP_INTERVAL", "0.05")
    conf = tq.init({"controller": {"sampler": "RankAwareSampler", "polling_mode": True}, "backend": backend})
    from transfer_queue import interface

    controller_pid = getattr(interface._SESSION, "controller_pid", None)
    try:
        yield conf
    finally:
        tq.close()
        kill_pid(controller_pid)  # a no-op when close() stopped it


@pytest.fixture
def session(monkeypatch):
    with tq_session(monkeypatch, {"storage_backend": "SimpleStorage",
                                  "SimpleStorage": {"num_data_storage_units": 1}}) as conf:
        yield conf


@pytest.fixture
def yuanrong_session(monkeypatch, ds_worker):
    with tq_session(monkeypatch, {"storage_backend": "Yuanrong",
                                  "Yuanrong": {"auto_init": False, "worker_port": ds_worker.port}}) as conf:
        yield conf


def put_range(pid: str, lo: int, hi: int) -> dict[int, int]:
    """Puts samples x = lo..hi-1 (plus a ragged field r) into `pid`; returns {x: global index}."""
    td = TensorDict({"x": torch.arange(lo, hi),
                     "r": torch.nested.as_nested_tensor([torch.arange(v % 3 + 1) for v in range(lo, hi)],
                                                        layout=torch.jagged)}, batch_size=[hi - lo])
    meta = tq.get_client().put(td, partition_id=pid)
    return dict(zip(range(lo, hi), meta.global_indexes))


def stream(conf, dp_rank: int, partition_id: str = "train", check: bool = False, **kwargs) -> StreamingDataset:
    return StreamingDataset(config=conf, batch_size=4, micro_batch_size=2, data_fields=["x", "r"],
                            partition_id=partition_id, task_name="actor", dp_rank=dp_rank,
                            should_check_consumption_status=check, **kwargs)


def seen(pieces) -> list[tuple[list[int], list[int]]]:
    return [(td["x"].tolist(), list(meta.global_indexes)) for td, meta in pieces]


def test_ranks_of_one_dp_group_stream_the_same_samples(session):
    empty_answer = threading.Event()

    def fetch_noting_empty(**kwargs):
        td, meta = default_fetch_batch_fn(**kwargs)
        if td is None:
            empty_answer.set()
        return td, meta

    a = StreamingDataLoader(stream(session, 0, fetch_batch_fn=fetch_noting_empty))
    b, c = StreamingDataLoader(stream(session, 0)), StreamingDataLoader(stream(session, 1))
    ia, ib, ic = iter(a), iter(b), iter(c)
    first: dict = {}
    reader = threading.Thread(target=lambda: first.update(a=[next(ia), next(ia)]), daemon=True)
    reader.start()
    # polling mode: with nothing put, the controller answers at once with an empty batch
    assert empty_answer.wait(STEP_TIMEOUT_S)
    assert reader.is_alive()
    gidx = put_range("train", 0, 12)
    reader.join(STEP_TIMEOUT_S)
    assert not reader.is_alive()

    def expect(*xs):
        return [(list(x), [gidx[v] for v in x]) for x in xs]

    assert seen(first["a"]) == expect([0, 1], [2, 3])
    td, _ = first["a"][0]
    assert td["r"].is_nested and [t.tolist() for t in td["r"].unbind(0)] == [[0], [0, 1]]
    # the other rank of dp group 0 gets the same step; dp group 1 the next samples
    assert seen([next_within(ib), next_within(ib)]) == expect([0, 1], [2, 3])
    assert seen([next_within(ic), next_within(ic)]) == expect([4, 5], [6, 7])
    assert seen([next_within(ia), next_within(ia)]) == expect([8, 9], [10, 11])
    assert seen([next_within(ib), next_within(ib)]) == expect([8, 9], [10, 11])
    assert tq.get_client().check_consumption_status("actor", "train")

    # reset replays the buffer without asking the controller
    assert len(a.get_buffer()) == 2
    a.reset()
    replay = iter(a)
    assert [p[0] for p in seen([next_within(replay) for _ in range(4)])] == [[0, 1], [2, 3], [8, 9], [10, 11]]
    a.step("val")
    assert a.get_buffer() == [] and a.dataset.partition_id == "val"


def test_finite_mode_stops_once_the_partition_is_consumed(session):
    put_range("val", 100, 108)
    d, e = iter(StreamingDataLoader(stream(session, 0, "val", check=True))), \
        iter(StreamingDataLoader(stream(session, 1, "val", check=True)))
    got = [next_within(it)[0]["x"].tolist() for it in (d, e, d, e)]
    assert got == [[100, 101], [104, 105], [102, 103], [106, 107]]
    for it in (d, e):
        with pytest.raises(StopIteration):
            next_within(it)


# fork: the child inherits the parent's ZMQ context without its I/O threads;
# ours makes a fresh one in a process whose pid differs from the owner's.
@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_a_worker_process_builds_its_own_client(session, context):
    put_range("train", 0, 4)
    loader = StreamingDataLoader(stream(session, 0, check=True), num_workers=1, multiprocessing_context=context)
    got = [seen([item]) for item in loader]
    assert [g[0][0] for g in got] == [[0, 1], [2, 3]]
    # the worker's buffer stays in the worker
    assert loader.get_buffer() == []


def test_streaming_over_the_yuanrong_backend(yuanrong_session):
    """The dataset's own client reaches Yuanrong storage from upstream's backend block (worker_port only)."""
    gidx = put_range("train", 0, 4)
    it = iter(StreamingDataLoader(stream(yuanrong_session, 0, check=True)))
    assert seen([next_within(it), next_within(it)]) == [([0, 1], [gidx[0], gidx[1]]), ([2, 3], [gidx[2], gidx[3]])]
    with pytest.raises(StopIteration):
        next_within(it)
