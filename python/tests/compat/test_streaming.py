"""Scenario 22 of docs/upstream_api.md §6.3: StreamingDataset and
StreamingDataLoader (num_workers=0) over RankAwareSampler with polling:
micro-batches aligned with their metas, the stop on full consumption,
reset() replaying the buffer, step() switching partition."""

from __future__ import annotations

import pytest
import torch
from tensordict import TensorDict

from .conftest import shared_conf, unique
import transfer_queue as tq


def put(client, values, pid):
    n = len(values)
    meta = client.put(TensorDict({"x": torch.tensor(values).reshape(n, 1)}, batch_size=n), partition_id=pid)
    return dict(zip(meta.global_indexes, values))


def drain(loader):
    out = []
    for td, meta in loader:
        assert isinstance(meta, tq.BatchMeta)
        assert td.batch_size[0] == meta.size
        x = td["x"]
        if x.is_nested:  # upstream packs even uniform fields as jagged
            x = torch.stack(list(x.unbind()))
        out.append((x.reshape(-1).tolist(), list(meta.global_indexes)))
    return out


def dataset(pid, **kw):
    args = dict(config=shared_conf(), batch_size=4, micro_batch_size=2, data_fields=["x"], partition_id=pid,
                task_name="train", dp_rank=0, should_check_consumption_status=True)
    args.update(kw)
    return tq.StreamingDataset(**args)


def test_s22_dataset_argument_checks(tq_rank):
    for bad in ({"micro_batch_size": 0}, {"data_fields": []}, {"dp_rank": -1}):
        with pytest.raises(ValueError):
            dataset(unique("sd"), **bad)


def test_s22_streaming_loader_micro_batches_reset_and_step(tq_rank):
    c = tq_rank
    pid = unique("sd")
    value_of = put(c, [10, 11, 12, 13, 14, 15, 16, 17], pid)
    ds = dataset(pid)
    loader = tq.StreamingDataLoader(ds, num_workers=0)
    first = drain(loader)
    assert [len(v) for v, _ in first] == [2, 2, 2, 2]
    for values, gidx in first:
        assert values == [value_of[g] for g in gidx]  # data rows follow the meta
    assert sorted(v for values, _ in first for v in values) == list(range(10, 18))
    assert c.check_consumption_status("train", pid)

    loader.reset()
    assert drain(loader) == first  # replays the buffer

    pid2 = unique("sd")
    value_of2 = put(c, [20, 21, 22, 23], pid2)
    loader.step(pid2)
    second = drain(loader)
    assert [len(v) for v, _ in second] == [2, 2]
    assert sorted(v for values, _ in second for v in values) == [20, 21, 22, 23]
    for values, gidx in second:
        assert values == [value_of2[g] for g in gidx]
