"""Scenario 21 of docs/upstream_api.md §6.3: the samplers chosen through
tq.init(conf): GRPOGroupNSampler, RankAwareSampler with polling,
SeqlenBalancedSampler, and a user BaseSampler subclass (sampling with
replacement, a numpy array in sampling_config)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tensordict import TensorDict

from .conftest import make_conf, shared_tq, unique
import transfer_queue as tq


def put(client, n: int, pid: str):
    return client.put(TensorDict({"x": torch.arange(n)}, batch_size=n), partition_id=pid)


@pytest.fixture
def tq_grpo4(ray_session):
    return shared_tq("grpo4", lambda: make_conf(sampler=tq.GRPOGroupNSampler(n_samples_per_prompt=4)))


@pytest.fixture
def tq_seqlen(ray_session):
    return shared_tq("seqlen", lambda: make_conf(sampler=tq.SeqlenBalancedSampler(n_samples_per_prompt=2, dp_size=2)))


@pytest.fixture
def tq_custom(ray_session):
    from .compat_samplers import CompatSampler

    return shared_tq("custom", lambda: make_conf(sampler=CompatSampler()))


def test_s21_sampler_constructor_checks():
    with pytest.raises(ValueError):
        tq.GRPOGroupNSampler(n_samples_per_prompt=0)
    with pytest.raises(ValueError):
        tq.SeqlenBalancedSampler(n_samples_per_prompt=1, dp_size=0)


def test_s21_grpo_takes_whole_groups(tq_grpo4):
    c = tq_grpo4
    pid = unique("g")
    meta = put(c, 10, pid)
    gi = list(meta.global_indexes)
    first = c.get_meta(["x"], 8, pid, task_name="t")
    assert list(first.global_indexes) == gi[:8]
    with pytest.raises(RuntimeError):  # 2 left: not a whole group
        c.get_meta(["x"], 4, pid, task_name="t")


def test_s21_grpo_batch_not_multiple_of_n_is_runtime_error(tq_grpo4):
    c = tq_grpo4
    pid = unique("g")
    put(c, 8, pid)
    with pytest.raises(RuntimeError):
        c.get_meta(["x"], 6, pid, task_name="t")


def test_s21_seqlen_balanced_whole_groups(tq_seqlen):
    c = tq_seqlen
    pid = unique("s")
    meta = put(c, 8, pid)
    lengths = [10, 10, 1, 1, 9, 9, 2, 2]
    meta.update_custom_meta([{"total_lengths": n} for n in lengths])
    c.set_custom_meta(meta)
    length_of = dict(zip(meta.global_indexes, lengths))
    group_of = {g: i // 2 for i, g in enumerate(meta.global_indexes)}
    shares = []
    for rank in (0, 1):
        m = c.get_meta(["x"], 4, pid, task_name="t", sampling_config={"dp_rank": rank, "batch_index": 0})
        assert m.size == 4
        shares.append(list(m.global_indexes))
    assert sorted(shares[0] + shares[1]) == sorted(meta.global_indexes)
    for share in shares:
        groups = [group_of[g] for g in share]
        assert all(groups.count(gr) == 2 for gr in groups)  # whole groups only
    sums = [sum(length_of[g] for g in share) for share in shares]
    assert sums == [22, 22]


def test_s21_custom_sampler_with_replacement(tq_custom):
    c = tq_custom
    pid = unique("c")
    meta = put(c, 4, pid)
    a = c.get_meta(["x"], 2, pid, task_name="t")
    b = c.get_meta(["x"], 2, pid, task_name="t")
    assert list(a.global_indexes) == list(b.global_indexes) == list(meta.global_indexes[:2])
    assert not c.check_consumption_status("t", pid)


def test_s21_custom_sampler_reads_numpy_config(tq_custom):
    c = tq_custom
    pid = unique("c")
    meta = put(c, 4, pid)
    gi = list(meta.global_indexes)
    weights = np.zeros(max(gi) + 1)
    weights[gi[3]], weights[gi[1]] = 5.0, 3.0
    got = c.get_meta(["x"], 2, pid, task_name="t", sampling_config={"weights": weights})
    assert list(got.global_indexes) == [gi[3], gi[1]]
    rest = c.get_meta(["x"], 2, pid, task_name="t", sampling_config={"weights": weights})
    assert sorted(rest.global_indexes) == sorted([gi[0], gi[2]])


def _rank_cfg(pid, rank, batch_index, task="t"):
    return {"dp_rank": rank, "batch_index": batch_index, "task_name": task, "partition_id": pid}


def test_s21_rank_aware_same_rank_same_samples(tq_rank):
    c = tq_rank
    pid = unique("r")
    meta = put(c, 6, pid)
    a = c.get_meta(["x"], 2, pid, task_name="t", sampling_config=_rank_cfg(pid, 0, 0))
    b = c.get_meta(["x"], 2, pid, task_name="t", sampling_config=_rank_cfg(pid, 0, 0))
    assert a.size == 2 and list(a.global_indexes) == list(b.global_indexes)
    other = c.get_meta(["x"], 2, pid, task_name="t", sampling_config=_rank_cfg(pid, 1, 0))
    assert other.size == 2 and not set(other.global_indexes) & set(a.global_indexes)
    nxt = c.get_meta(["x"], 2, pid, task_name="t", sampling_config=_rank_cfg(pid, 0, 1))
    assert set(nxt.global_indexes).isdisjoint(set(a.global_indexes) | set(other.global_indexes))
    assert sorted(list(a.global_indexes) + list(other.global_indexes) + list(nxt.global_indexes)) == \
        sorted(meta.global_indexes)
    # nothing ready for a new batch: polling answers empty
    assert c.get_meta(["x"], 2, pid, task_name="t", sampling_config=_rank_cfg(pid, 1, 1)).size == 0
    # the cached batch is still served, whatever is ready
    again = c.get_meta(["x"], 2, pid, task_name="t", sampling_config=_rank_cfg(pid, 0, 0))
    assert list(again.global_indexes) == list(a.global_indexes)


def test_s21_rank_aware_cache_lives_until_clear_partition(tq_rank):
    c = tq_rank
    pid = unique("r")
    put(c, 2, pid)
    a = c.get_meta(["x"], 2, pid, task_name="t", sampling_config=_rank_cfg(pid, 0, 0))
    assert a.size == 2
    c.clear_partition(pid)
    fresh = put(c, 2, pid)
    b = c.get_meta(["x"], 2, pid, task_name="t", sampling_config=_rank_cfg(pid, 0, 0))
    assert sorted(b.global_indexes) == sorted(fresh.global_indexes)
    assert b.is_ready


def test_s21_rank_aware_missing_config_is_runtime_error(tq_rank):
    c = tq_rank
    pid = unique("r")
    put(c, 2, pid)
    with pytest.raises(RuntimeError):
        c.get_meta(["x"], 2, pid, task_name="t")
    with pytest.raises(RuntimeError):
        c.get_meta(["x"], 2, pid, task_name="t", sampling_config=_rank_cfg(pid, -1, 0))
