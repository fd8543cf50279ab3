"""The public surface of upstream TransferQueue 0.1.11 beyond the numbered
scenarios of docs/upstream_api.md §6.3: exported names and import paths,
the metrics endpoint, client construction (TransferQueueClient and
AsyncTransferQueueClient from the config tq.init returns), client.close(),
and the checkpoint functions."""

from __future__ import annotations

import asyncio
import importlib

import pytest
import torch
from tensordict import TensorDict

import transfer_queue as tq

from .conftest import shared_conf, unique

UPSTREAM_ALL = [
    "init", "close", "get_metrics_endpoint", "kv_put", "kv_batch_put", "kv_batch_get", "kv_batch_get_by_meta",
    "kv_list", "kv_clear", "async_kv_put", "async_kv_batch_put", "async_kv_batch_get",
    "async_kv_batch_get_by_meta", "async_kv_list", "async_kv_clear", "KVBatchMeta", "save_checkpoint",
    "load_checkpoint", "StreamingDataset", "StreamingDataLoader", "get_client", "BatchMeta",
    "TransferQueueClient", "StorageKeyNotFoundError", "BaseSampler", "GRPOGroupNSampler", "SequentialSampler",
    "RankAwareSampler", "SeqlenBalancedSampler",
]


def test_api_public_names():
    assert set(UPSTREAM_ALL) <= set(tq.__all__)
    for name in UPSTREAM_ALL:
        assert hasattr(tq, name), name
    assert isinstance(tq.__version__, str)
    assert issubclass(tq.StorageKeyNotFoundError, KeyError)
    assert issubclass(tq.SequentialSampler, tq.BaseSampler)


@pytest.mark.parametrize("module, name", [
    ("transfer_queue.client", "AsyncTransferQueueClient"),
    ("transfer_queue.client", "TransferQueueClient"),
    ("transfer_queue.controller", "TransferQueueController"),
    ("transfer_queue.metadata", "BatchMeta"),
    ("transfer_queue.metadata", "KVBatchMeta"),
    ("transfer_queue.sampler", "BaseSampler"),
    ("transfer_queue.utils.zmq_utils", "ZMQServerInfo"),
    ("transfer_queue.utils.zmq_utils", "process_zmq_server_info"),
])
def test_api_import_paths(module, name):
    assert hasattr(importlib.import_module(module), name)


def test_api_metrics_endpoint_is_none_when_off(tq_default):
    assert tq.get_metrics_endpoint() is None


def test_api_client_constructor_checks():
    with pytest.raises(ValueError):
        tq.TransferQueueClient(unique("c"), None)
    with pytest.raises(TypeError):
        tq.TransferQueueClient(unique("c"), 12345)


def _client_from_conf(cls):
    conf = shared_conf()
    client = cls(unique("c"), conf.controller.zmq_info)
    backend = conf.backend.storage_backend
    client.initialize_storage_manager(backend, conf.backend[backend])
    return client


def test_api_second_client_from_conf_sees_the_same_data(tq_default):
    pid = unique()
    meta = tq_default.put(TensorDict({"x": torch.arange(3)}, batch_size=3), partition_id=pid)
    other = _client_from_conf(tq.TransferQueueClient)
    try:
        got = other.get_meta(["x"], 3, pid, task_name="t")
        assert sorted(got.global_indexes) == sorted(meta.global_indexes)
        assert sorted(torch.as_tensor(other.get_data(got)["x"]).tolist()) == [0, 1, 2]
    finally:
        other.close()


def test_api_async_client(tq_default):
    from transfer_queue.client import AsyncTransferQueueClient

    client = _client_from_conf(AsyncTransferQueueClient)
    pid = unique()

    async def run():
        meta = await client.async_put(TensorDict({"x": torch.arange(2) + 3}, batch_size=2), partition_id=pid)
        got = await client.async_get_meta(["x"], 2, pid, task_name="t")
        data = await client.async_get_data(got)
        return meta, got, data

    try:
        meta, got, data = asyncio.run(run())
    finally:
        client.close()
    assert sorted(got.global_indexes) == sorted(meta.global_indexes)
    assert sorted(torch.as_tensor(data["x"]).tolist()) == [3, 4]
    assert pid in tq_default.get_partition_list()


def test_api_load_checkpoint_missing_dir(tq_default, tmp_path):
    with pytest.raises(FileNotFoundError):
        tq.load_checkpoint(tmp_path / "absent")


def test_api_checkpoint_round_trip(tq_default, tmp_path):
    c = tq_default
    pid = unique("ck")
    meta = c.put(TensorDict({"x": torch.arange(3) * 7}, batch_size=3), partition_id=pid)
    tq.save_checkpoint(tmp_path / "ck")
    c.clear_partition(pid)
    assert pid not in c.get_partition_list()
    tq.load_checkpoint(tmp_path / "ck")
    assert pid in c.get_partition_list()
    got = c.get_meta(["x"], 3, pid, task_name="t")
    assert sorted(got.global_indexes) == sorted(meta.global_indexes)
    assert sorted(torch.as_tensor(c.get_data(got)["x"]).tolist()) == [0, 7, 14]
