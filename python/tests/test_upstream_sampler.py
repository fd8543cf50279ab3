"""transfer_queue.sampler: upstream's sampler classes, in-process and as controller configs.

The in-process answers are checked against upstream TransferQueue 0.1.11 itself:
one script of sampler calls runs here and, when the peer venv
(conftest.PEER_PYTHON) holds upstream, under upstream's interpreter; the outcomes
must be equal. The runner text below is ours; it only drives the classes.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
from pathlib import Path

import pytest
from conftest import PEER_PYTHON

from transfer_queue.sampler import (
    BaseSampler,
    GRPOGroupNSampler,
    RankAwareSampler,
    SeqlenBalancedSampler,
    SequentialSampler,
    resolve_sampler,
)
from transfer_queue.sampler.seqlen_balanced_sampler import get_seqlen_balanced_partitions


# Runs a list of cases against whichever `transfer_queue` the interpreter imports.
# A case: {"ctor": [class name, kwargs], "ops": [...]}; each op is one of
#   ["call", args, kwargs]   sampler(*args, **kwargs); kwargs["partition"] is a
#                            list of [index, custom_meta] pairs made into a fake partition
#   ["cached", pid, task, cfg]  has_cached_result
#   ["clear", pid]           clear_cache
#   ["states"]               a JSON image of _states
#   ["balance", lengths, k, equal]  get_seqlen_balanced_partitions
# Each op yields ["ok", value] or ["err", exception type name].
RUNNER = r'''
import json, sys
from transfer_queue import sampler as samplers
from transfer_queue.sampler.seqlen_balanced_sampler import get_seqlen_balanced_partitions

class FakePartition:
    def __init__(self, pairs):
        self.custom = {int(i): m for i, m in pairs}
    def get_custom_meta(self, indexes):
        return {i: self.custom.get(i, {}) for i in indexes}

def image(x):
    if isinstance(x, dict):
        return {repr(k): image(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [image(v) for v in x]
    return x

def run_case(case):
    out = []
    sampler = None
    if case.get("ctor"):
        name, kwargs = case["ctor"]
        try:
            sampler = getattr(samplers, name)(**kwargs)
        except Exception as e:
            return [["err", type(e).__name__]]
    for op in case["ops"]:
        try:
            if op[0] == "call":
                kwargs = dict(op[2])
                if "partition" in kwargs:
                    kwargs["partition"] = FakePartition(kwargs["partition"])
                sampled, consumed = sampler(*op[1], **kwargs)
                out.append(["ok", [list(sampled), list(consumed)]])
            elif op[0] == "cached":
                out.append(["ok", sampler.has_cached_result(op[1], op[2], op[3])])
            elif op[0] == "clear":
                sampler.clear_cache(op[1])
                out.append(["ok", None])
            elif op[0] == "states":
                out.append(["ok", image(sampler._states)])
            elif op[0] == "balance":
                out.append(["ok", get_seqlen_balanced_partitions(op[1], op[2], op[3])])
        except Exception as e:
            out.append(["err", type(e).__name__])
    return out

def run_cases(cases):
    return [run_case(c) for c in cases]

if __name__ == "__main__":
    print(json.dumps(run_cases(json.load(sys.stdin))))
'''


def run_ours(cases: list) -> list:
    scope: dict = {"__name__": "tq_sampler_runner"}
    exec(compile(RUNNER, "tq_sampler_runner", "exec"), scope)
    # JSON round trip: both sides compare as JSON values (tuples become lists).
    return json.loads(json.dumps(scope["run_cases"](cases)))


def run_upstream(cases: list) -> list:
    if not PEER_PYTHON.exists():
        pytest.skip(f"upstream TransferQueue's interpreter {PEER_PYTHON} is not here")
    proc = subprocess.run(
        [str(PEER_PYTHON), "-c", RUNNER], input=json.dumps(cases), capture_output=True, text=True,
        timeout=120, cwd="/", env={**os.environ, "PYTHONPATH": ""},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------- case builders

def random_ready(rng: random.Random, span: int, keep: float) -> list[int]:
    return [i for i in range(span) if rng.random() < keep]


def sequential_cases(rng: random.Random) -> list:
    cases = []
    for _ in range(20):
        ready = random_ready(rng, rng.randint(0, 20), 0.7)
        ops = [["call", [ready, rng.randint(0, 12)], {}] for _ in range(2)]
        cases.append({"ctor": ["SequentialSampler", {}], "ops": ops + [["states"]]})
    return cases


def grpo_cases(rng: random.Random) -> list:
    cases = [
        {"ctor": ["GRPOGroupNSampler", {"n_samples_per_prompt": 0}], "ops": []},
        {"ctor": ["GRPOGroupNSampler", {"n_samples_per_prompt": -2}], "ops": []},
        # upstream's docstring examples, and a batch that is not a multiple of n
        {"ctor": ["GRPOGroupNSampler", {"n_samples_per_prompt": 3}], "ops": [
            ["call", [[0, 1, 3, 4, 6, 7], 6], {}],
            ["call", [[0, 1, 3, 4, 5, 6, 7, 9, 10, 11], 6], {}],
            ["call", [[11, 10, 9, 5, 4, 3], 6], {}],
            ["call", [[0, 1, 2], 4], {}],
            ["call", [[], 0], {}],
        ]},
    ]
    for _ in range(60):
        n = rng.randint(1, 4)
        ops = []
        for _ in range(rng.randint(1, 5)):
            ready = random_ready(rng, rng.randint(0, 30), rng.choice([0.6, 0.85, 1.0]))
            rng.shuffle(ready) if rng.random() < 0.2 else None
            bs = n * rng.randint(0, 4) if rng.random() < 0.9 else rng.randint(1, 9)
            kwargs: dict = {}
            if rng.random() < 0.6:
                kwargs = {"dp_rank": rng.randint(0, 1), "batch_index": rng.randint(0, 1)}
            if rng.random() < 0.5:
                kwargs.update(task_name=rng.choice(["a", "b"]), partition_id=rng.choice(["p", "q"]))
            ops.append(["call", [ready, bs], kwargs])
            if rng.random() < 0.3:
                ops.append(["cached", rng.choice(["p", "q", ""]), rng.choice(["a", "b", ""]),
                            {"dp_rank": rng.randint(0, 1), "batch_index": rng.randint(0, 1)}])
        ops.append(["states"])
        cases.append({"ctor": ["GRPOGroupNSampler", {"n_samples_per_prompt": n}], "ops": ops})
    return cases


def rank_aware_cases(rng: random.Random) -> list:
    cases = [{"ctor": ["RankAwareSampler", {}], "ops": [
        ["call", [[1, 2, 3], 2], {"dp_rank": -1, "batch_index": 0, "task_name": "t", "partition_id": "p"}],
        ["call", [[1, 2, 3], 2], {"batch_index": 0, "task_name": "t", "partition_id": "p"}],  # no dp_rank
        ["call", [[1, 2, 3], 2], {"dp_rank": 0, "task_name": "t", "partition_id": "p"}],  # no batch_index
        ["call", [[1, 2, 3], 5], {"dp_rank": 0, "batch_index": 0, "task_name": "t", "partition_id": "p"}],
        ["states"],
        ["call", [[1, 2, 3], 2], {"dp_rank": 0, "batch_index": 0, "task_name": "t", "partition_id": "p"}],
        ["call", [[7, 8, 9], 2], {"dp_rank": 0, "batch_index": 0, "task_name": "t", "partition_id": "p"}],
        ["call", [[7, 8, 9], 2], {"dp_rank": 1, "batch_index": 0, "task_name": "t", "partition_id": "p"}],
        ["cached", "p", "t", {"dp_rank": 0, "batch_index": 0}],
        ["cached", "p", "t", {"dp_rank": 0, "batch_index": 1}],
        ["cached", "p", "t", {"batch_index": 0}],
        ["clear", "p"],
        ["cached", "p", "t", {"dp_rank": 0, "batch_index": 0}],
        ["call", [[7, 8, 9], 2], {"dp_rank": 0, "batch_index": 0, "task_name": "t", "partition_id": "p"}],
        ["states"],
    ]}]
    for _ in range(30):
        ops = []
        for _ in range(rng.randint(1, 8)):
            ready = random_ready(rng, rng.randint(0, 12), 0.8)
            cfg = {"dp_rank": rng.randint(0, 2), "batch_index": rng.randint(0, 2),
                   "task_name": rng.choice(["a", "b"]), "partition_id": rng.choice(["p", "q"])}
            ops.append(["call", [ready, rng.randint(0, 5)], cfg])
            if rng.random() < 0.15:
                ops.append(["clear", rng.choice(["p", "q"])])
        ops.append(["states"])
        cases.append({"ctor": ["RankAwareSampler", {}], "ops": ops})
    return cases


def seqlen_cases(rng: random.Random) -> list:
    cases = [
        {"ctor": ["SeqlenBalancedSampler", {"dp_size": 0}], "ops": []},
        {"ctor": ["SeqlenBalancedSampler", {"n_samples_per_prompt": 0, "dp_size": 2}], "ops": []},
    ]
    for _ in range(60):
        n = rng.randint(1, 3)
        dp = rng.randint(1, 4)
        per_rank = n * rng.randint(1, 3)
        # enough groups for every rank: KK needs at least dp_size groups, a multiple of dp_size
        groups_total = per_rank * dp // n
        if groups_total % dp:
            continue
        span = per_rank * dp + rng.randint(0, 8)
        ready = random_ready(rng, span, rng.choice([0.9, 1.0]))
        pairs = [[i, {"total_lengths": rng.randint(1, 400)}] for i in ready if rng.random() < 0.9]
        with_partition = rng.random() < 0.8
        ops = []
        for batch_index in range(rng.randint(1, 2)):
            ranks = list(range(dp))
            rng.shuffle(ranks)
            for r in ranks:
                kwargs: dict = {"dp_rank": r, "batch_index": batch_index, "task_name": "t", "partition_id": "p"}
                if with_partition:
                    kwargs["partition"] = pairs
                ops.append(["call", [ready, per_rank], kwargs])
            ops.append(["cached", "p", "t", {"dp_rank": dp - 1, "batch_index": batch_index}])
        ops.append(["states"])
        if rng.random() < 0.3:
            ops += [["clear", "p"], ["states"], ["call", [[], per_rank], {"dp_rank": 0, "task_name": "t",
                                                                           "partition_id": "p"}]]
        cases.append({"ctor": ["SeqlenBalancedSampler", {"n_samples_per_prompt": n, "dp_size": dp}], "ops": ops})
    # defaults: dp_rank 0 and batch_index 0 when the call omits them; too few ready
    cases.append({"ctor": ["SeqlenBalancedSampler", {"n_samples_per_prompt": 2, "dp_size": 2}], "ops": [
        ["call", [[0, 1, 2, 3, 4, 5, 6, 7], 2], {"partition": [[0, {"total_lengths": 9}], [5, {"total_lengths": 30}]]}],
        ["call", [[], 2], {"dp_rank": 1}],
        ["call", [[0, 1, 2], 4], {"batch_index": 3}],
        ["states"],
    ]})
    return cases


def balance_cases(rng: random.Random) -> list:
    ops = []
    for _ in range(150):
        k = rng.randint(1, 5)
        equal = rng.random() < 0.5
        count = k * rng.randint(1, 6) if equal else rng.randint(k, 25)
        # small weight ranges make many ties, which exercise the tie-breaking
        hi = rng.choice([3, 10, 1000])
        ops.append(["balance", [rng.randint(1, hi) for _ in range(count)], k, equal])
    return [{"ctor": None, "ops": ops}]


ALL_BUILDERS = [sequential_cases, grpo_cases, rank_aware_cases, seqlen_cases, balance_cases]


# --------------------------------------------------------------- against upstream

@pytest.fixture(scope="module")
def compared() -> list:
    """(case, ours, upstream) for every generated case; upstream runs once for the module."""
    rng = random.Random(20260212)
    cases = [c for build in ALL_BUILDERS for c in build(rng)]
    return list(zip(cases, run_ours(cases), run_upstream(cases)))


@pytest.mark.parametrize("sampler", ["SequentialSampler", "GRPOGroupNSampler", "RankAwareSampler",
                                     "SeqlenBalancedSampler", None])
def test_same_answers_as_upstream(compared, sampler):
    rows = [r for r in compared if (r[0]["ctor"] or [None])[0] == sampler]
    assert rows
    for case, ours, theirs in rows:
        assert ours == theirs, f"case {json.dumps(case)[:2000]}"


def test_the_comparison_covers_results_errors_and_caching(compared):
    """Guards against a vacuous comparison: the cases produce non-empty picks, errors and caches."""
    outcomes = [o for _, ours, _ in compared for o in ours]
    assert any(o[0] == "ok" and isinstance(o[1], list) and o[1] and o[1][0] for o in outcomes)
    errors = {o[1] for o in outcomes if o[0] == "err"}
    assert {"ValueError", "TypeError"} <= errors
    assert any(o == ["ok", True] for o in outcomes)  # some has_cached_result hit


# --------------------------------------------------------------- ours, directly

def test_grpo_takes_runs_of_consecutive_global_indexes():
    s = GRPOGroupNSampler(n_samples_per_prompt=2)
    # runs need not start at a multiple of n; 4 has no neighbour in ready
    assert s([1, 2, 4, 6, 7, 9], 4) == ([1, 2, 6, 7], [1, 2, 6, 7])
    assert s([1, 2, 4, 6, 7, 9], 6) == ([], [])
    with pytest.raises(ValueError, match="multiple of n_samples_per_prompt"):
        s([1, 2], 3)


def test_grpo_caches_per_rank_and_step_only_with_dp_rank():
    s = GRPOGroupNSampler(n_samples_per_prompt=2)
    first = s([0, 1, 2, 3], 2, "t", "p", dp_rank=0, batch_index=0)
    assert first == ([0, 1], [0, 1])
    # the same step returns the cached pick whatever is ready now
    assert s([8, 9], 2, "t", "p", dp_rank=0, batch_index=0) == first
    assert s.has_cached_result("p", "t", {"dp_rank": 0, "batch_index": 0})
    assert not s.has_cached_result("p", "t", {"dp_rank": 0, "batch_index": 1})
    assert s([8, 9], 2, "t", "p") == ([8, 9], [8, 9])  # no dp_rank: nothing cached or read
    s.clear_cache("p")
    assert not s.has_cached_result("p", "t", {"dp_rank": 0, "batch_index": 0})


def test_rank_aware_requires_its_keys_and_keeps_the_pick_until_cleared():
    s = RankAwareSampler()
    cfg = {"dp_rank": 0, "batch_index": 0, "task_name": "t", "partition_id": "p"}
    with pytest.raises(TypeError):
        s([1, 2], 1, dp_rank=0, task_name="t", partition_id="p")
    with pytest.raises(ValueError, match="dp_rank"):
        s([1, 2], 1, **{**cfg, "dp_rank": -1})
    assert s([1, 2], 3, **cfg) == ([], [])
    assert not s.has_cached_result("p", "t", cfg)
    assert s([1, 2, 3], 2, **cfg) == ([1, 2], [1, 2])
    for _ in range(3):  # every rank of the group, any number of times
        assert s([5, 6, 7], 2, **cfg) == ([1, 2], [1, 2])
    assert s([5, 6, 7], 2, **{**cfg, "dp_rank": 1}) == ([5, 6], [5, 6])
    s.clear_cache("p")
    assert s([5, 6, 7], 2, **cfg) == ([5, 6], [5, 6])


class _Lengths:
    def __init__(self, lengths: dict[int, int]):
        self.lengths = lengths

    def get_custom_meta(self, indexes):
        return {i: ({"total_lengths": self.lengths[i]} if i in self.lengths else {}) for i in indexes}


def test_seqlen_balanced_keeps_groups_whole_and_balances_sums():
    s = SeqlenBalancedSampler(n_samples_per_prompt=2, dp_size=2)
    # group weights: {0,1}=200, {2,3}=20, {4,5}=190, {6,7}=30 -> best split 220 / 220
    part = _Lengths({0: 100, 1: 100, 2: 10, 3: 10, 4: 95, 5: 95, 6: 15, 7: 15})
    ready = list(range(10))
    shares = [s(ready, 4, "t", "p", dp_rank=r, batch_index=0, partition=part)[0] for r in (1, 0)]
    assert sorted(shares[0] + shares[1]) == list(range(8))
    for share in shares:
        assert len(share) == 4
        assert all(i % 2 == 0 and i + 1 in share for i in share if i % 2 == 0)
        assert sum(part.lengths[i] for i in share) == 220
    # every rank's share is cached for the polling check
    assert s.has_cached_result("p", "t", {"dp_rank": 1, "batch_index": 0})
    s.clear_cache("p")
    assert not s.has_cached_result("p", "t", {"dp_rank": 1, "batch_index": 0})
    assert s._balanced_cache == {}


def test_seqlen_balanced_without_enough_groups_is_a_value_error():
    # upstream fails an assert here (AssertionError); ours names the problem
    s = SeqlenBalancedSampler(n_samples_per_prompt=4, dp_size=2)
    with pytest.raises(ValueError, match="non-empty partitions"):
        s(list(range(8)), 2, partition=_Lengths({}))
    with pytest.raises(ValueError, match="equal size"):
        get_seqlen_balanced_partitions([1, 2, 3], 2, equal_size=True)


def test_checkpoint_round_trip():
    s = SeqlenBalancedSampler(n_samples_per_prompt=1, dp_size=2)
    s([0, 1, 2, 3], 2, "t", "p", dp_rank=0, partition=_Lengths({0: 5, 1: 1, 2: 4, 3: 2}))
    state = s.save_checkpoint()
    fresh = SeqlenBalancedSampler(n_samples_per_prompt=1, dp_size=2)
    fresh.load_checkpoint(state)
    assert fresh([], 2, "t", "p", dp_rank=1) == s([], 2, "t", "p", dp_rank=1)
    assert fresh([], 2, "t", "p", dp_rank=1)[0]  # a cached, non-empty share


# --------------------------------------------------------------- controller configs

def test_builtin_samplers_describe_themselves_to_the_controller():
    assert SequentialSampler()._tq_sampling_config() == {"sampler": "sequential"}
    assert GRPOGroupNSampler(4)._tq_sampling_config() == {"sampler": "grpo_group_n", "n_samples_per_prompt": 4}
    assert RankAwareSampler()._tq_sampling_config() == {"sampler": "rank_aware"}
    assert SeqlenBalancedSampler(n_samples_per_prompt=2, dp_size=4)._tq_sampling_config() == {
        "sampler": "seqlen_balanced", "n_samples_per_prompt": 2, "dp_size": 4, "length_key": "total_lengths"}


def test_a_python_sampler_cannot_run_in_the_controller():
    class EveryOther(BaseSampler):
        def sample(self, ready_indexes, batch_size, *args, **kwargs):
            picked = ready_indexes[::2][:batch_size]
            return picked, picked

    class MyGroups(GRPOGroupNSampler):  # overrides a built-in's policy
        def sample(self, ready_indexes, batch_size, *args, **kwargs):
            return super().sample(list(reversed(ready_indexes)), batch_size, *args, **kwargs)

    class Tagged(SequentialSampler):  # same policy, extra state: still the built-in's config
        label = "x"

    assert EveryOther()([1, 2, 3, 4], 2) == ([1, 3], [1, 3])
    for sampler in (EveryOther(), MyGroups(2)):
        with pytest.raises(NotImplementedError, match=f"{type(sampler).__name__}.*only the built-in"):
            sampler._tq_sampling_config()
    assert Tagged()._tq_sampling_config() == {"sampler": "sequential"}


def test_base_sampler_is_abstract():
    with pytest.raises(TypeError):
        BaseSampler()


def test_resolve_sampler_accepts_what_upstreams_config_accepts():
    assert type(resolve_sampler("GRPOGroupNSampler")) is GRPOGroupNSampler
    assert type(resolve_sampler("SequentialSampler")) is SequentialSampler
    assert type(resolve_sampler(RankAwareSampler)) is RankAwareSampler
    mine = SeqlenBalancedSampler(n_samples_per_prompt=2, dp_size=2)
    assert resolve_sampler(mine) is mine
    with pytest.raises(ValueError, match="Could not find sampler NoSuchSampler"):
        resolve_sampler("NoSuchSampler")
    with pytest.raises(TypeError, match="sampler must be"):
        resolve_sampler(42)
