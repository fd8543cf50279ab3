"""Custom Python samplers (upstream's ``controller.sampler`` set to a user's
BaseSampler class or instance) through transfer_queue.init(): the sampler
runs in the controller host process (transfer_queue._controller_host) and
is called on every fetch with the ready indexes, batch_size, ``partition=``
and the call's sampling_config; only what it reports consumed is consumed.

Each test has its own session ($TQDS_SESSION) with Ray forced off; the
controller host process is stopped by close() and checked (and killed if
left) by pid.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tensordict import TensorDict

import transfer_queue.interface as tqi
from transfer_queue.sampler import BaseSampler

from conftest import pid_alive, unique


@pytest.fixture
def session(local_tq_session):
    return local_tq_session  # conftest.py: own session name, no Ray, everything stopped after


def put_rows(client, partition: str, n: int):
    return client.put(TensorDict({"x": torch.arange(n).reshape(n, 1)}, batch_size=[n]), partition_id=partition)


class EveryOther(BaseSampler):
    """Every other ready index (module level: pickled by reference)."""

    def sample(self, ready_indexes, batch_size, *args, **kwargs):
        picked = ready_indexes[::2][:batch_size]
        return picked, picked


def start(sampler):
    conf = tqi.init({"controller": {"sampler": sampler}})
    return conf, tqi.get_client(), tqi._current_session().controller_pid


@pytest.mark.parametrize("as_class", [True, False], ids=["class", "instance"])
def test_a_custom_sampler_picks_and_consumes(session, as_class):
    _, client, pid = start(EveryOther if as_class else EveryOther())
    session.append(pid)
    part = unique("p")
    put_rows(client, part, 6)
    meta = client.get_meta(data_fields=["x"], batch_size=2, partition_id=part, task_name="t")
    assert meta.global_indexes == [0, 2]
    meta = client.get_meta(data_fields=["x"], batch_size=2, partition_id=part, task_name="t")
    assert meta.global_indexes == [1, 4]  # ready now: 1, 3, 4, 5
    assert client.get_data(meta)["x"].flatten().tolist() == [1, 4]
    assert client.get_consumption_status("t", part)[1].tolist() == [1, 1, 1, 0, 1, 0]


def test_sampling_with_replacement_returns_the_same_samples_again(session):
    class FirstTwoKept(BaseSampler):  # local class: cloudpickle sends it by value
        def sample(self, ready_indexes, batch_size, *args, **kwargs):
            return ready_indexes[:batch_size], []

    _, client, pid = start(FirstTwoKept())
    session.append(pid)
    part = unique("p")
    put_rows(client, part, 4)
    first = client.get_meta(data_fields=["x"], batch_size=2, partition_id=part, task_name="t")
    second = client.get_meta(data_fields=["x"], batch_size=2, partition_id=part, task_name="t")
    assert first.global_indexes == second.global_indexes == [0, 1]
    assert client.get_consumption_status("t", part)[1].tolist() == [0, 0, 0, 0]


def test_sampling_config_reaches_the_sampler_with_a_numpy_array(session):
    class Heaviest(BaseSampler):
        def sample(self, ready_indexes, batch_size, *args, weights=None, label=None, **kwargs):
            assert isinstance(weights, np.ndarray) and weights.dtype == np.float64, type(weights)
            assert label == "w" and "partition" in kwargs
            order = sorted(ready_indexes, key=lambda i: -weights[i])[:batch_size]
            return order, order

    _, client, pid = start(Heaviest)
    session.append(pid)
    part = unique("p")
    put_rows(client, part, 5)
    weights = np.array([0.1, 5.0, 0.2, 9.0, 0.3])
    meta = client.get_meta(data_fields=["x"], batch_size=2, partition_id=part, task_name="t",
                           sampling_config={"weights": weights, "label": "w"})
    assert meta.global_indexes == [3, 1]


def test_partition_get_custom_meta_reads_the_samples_tags(session):
    class Tagged(BaseSampler):
        def sample(self, ready_indexes, batch_size, *args, partition=None, **kwargs):
            assert partition.partition_id
            tags = partition.get_custom_meta(ready_indexes)
            picked = [i for i in ready_indexes if tags.get(i, {}).get("keep")][:batch_size]
            return picked, picked

    _, client, pid = start(Tagged())
    session.append(pid)
    part = unique("p")
    meta = put_rows(client, part, 4)
    meta.update_custom_meta([{"keep": i % 2 == 1} for i in range(4)])
    client.set_custom_meta(meta)
    got = client.get_meta(data_fields=["x"], batch_size=2, partition_id=part, task_name="t")
    assert got.global_indexes == [1, 3]


def test_a_sampler_that_raises_fails_the_call_with_runtime_error(session):
    class Broken(BaseSampler):
        def sample(self, ready_indexes, batch_size, *args, **kwargs):
            raise ValueError("no luck today")

    _, client, pid = start(Broken())
    session.append(pid)
    part = unique("p")
    put_rows(client, part, 2)
    with pytest.raises(RuntimeError, match=r"Broken.*no luck today"):
        client.get_meta(data_fields=["x"], batch_size=1, partition_id=part, task_name="t")
    # The controller survives a sampler's error.
    assert client.get_meta(data_fields=["x"], batch_size=2, partition_id=part, mode="force_fetch").size == 2


def test_a_sampler_returning_an_unknown_index_is_refused(session):
    class Wild(BaseSampler):
        def sample(self, ready_indexes, batch_size, *args, **kwargs):
            return [10_000], []

    _, client, pid = start(Wild())
    session.append(pid)
    part = unique("p")
    put_rows(client, part, 2)
    with pytest.raises(RuntimeError, match="10000 is not a live sample"):
        client.get_meta(data_fields=["x"], batch_size=1, partition_id=part, task_name="t")


def test_clear_partition_clears_the_samplers_cache(session, tmp_path):
    log = tmp_path / "cleared.txt"

    class Logged(BaseSampler):
        def sample(self, ready_indexes, batch_size, *args, **kwargs):
            return ready_indexes[:batch_size], ready_indexes[:batch_size]

        def clear_cache(self, partition_id):
            with open(str(log), "a") as f:
                f.write(partition_id + "\n")

    _, client, pid = start(Logged())
    session.append(pid)
    part = unique("p")
    put_rows(client, part, 2)
    client.get_meta(data_fields=["x"], batch_size=1, partition_id=part, task_name="t")
    client.clear_partition(part)
    assert log.read_text().split() == [part]


class CachedPerRank(BaseSampler):
    """Caches what each (dp_rank, batch_index) got, so every rank of a step
    gets the same samples (module level: pickled by reference)."""

    def sample(self, ready_indexes, batch_size, *args, dp_rank=0, batch_index=0, task_name="",
               partition_id="", **kwargs):
        per_rank = self._states.setdefault(partition_id, {}).setdefault(task_name, {})
        for rank_cache in per_rank.values():
            if batch_index in rank_cache:
                picked = rank_cache[batch_index]
                per_rank.setdefault(dp_rank, {})[batch_index] = picked
                return picked, []
        if len(ready_indexes) < batch_size:
            return [], []
        picked = ready_indexes[:batch_size]
        per_rank.setdefault(dp_rank, {})[batch_index] = picked
        return picked, picked


def test_polling_mode_asks_a_sampler_with_a_cached_result(session):
    """Upstream: in polling mode, a fetch that finds too few samples ready
    still calls the sampler when its has_cached_result says it holds the
    answer (a rank repeating a step), instead of answering empty."""
    tqi.init({"controller": {"sampler": CachedPerRank(), "polling_mode": True}})
    session.append(tqi._current_session().controller_pid)
    client = tqi.get_client()
    part = unique("p")
    put_rows(client, part, 2)

    def fetch(rank, step):
        cfg = {"dp_rank": rank, "batch_index": step, "task_name": "t", "partition_id": part}
        return client.get_meta(data_fields=["x"], batch_size=2, partition_id=part, task_name="t",
                               mode="fetch", sampling_config=cfg)

    first = fetch(0, 0)
    assert sorted(first.global_indexes) == [0, 1]  # consumed: nothing is ready any more
    assert sorted(fetch(0, 0).global_indexes) == [0, 1], "rank 0 repeats step 0: its cached answer"
    assert len(fetch(0, 1)) == 0, "a new step with too few ready: empty at once (polling)"
    # Rank 1 has no entry of its own for step 0, so has_cached_result is False
    # for it (upstream's check is per rank): empty, as upstream answers.
    assert len(fetch(1, 0)) == 0


def test_close_stops_the_controller_host_process(session):
    _, client, pid = start(EveryOther())
    session.append(pid)
    cmdline = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")
    assert b"transfer_queue._controller_host" in cmdline
    tqi.close()  # the owner stops its controller and waits for it
    assert not pid_alive(pid)
