"""Scenarios 1-3 of docs/upstream_api.md §6.3: init, attach, close and the
init/close/ray.shutdown cycle of the tutorials; the controller config."""

from __future__ import annotations

import time

import pytest
import ray
import torch
from tensordict import TensorDict

import transfer_queue as tq
from .conftest import TQ, make_conf, release_shared, shared_conf, start_ray, unique


@ray.remote(num_cpus=0)
def _partitions_seen_from_a_task():
    import transfer_queue as tq_in_task

    tq_in_task.init()
    return tq_in_task.get_client().get_partition_list()


def test_s01_init_returns_conf_and_second_init_attaches(tq_default):
    conf = shared_conf()
    assert conf is not None
    assert conf.controller.zmq_info is not None
    assert conf.backend.storage_backend == "SimpleStorage"
    assert tq.init() is None  # attaching: the conf passed in comes back as it was
    assert tq.get_client() is tq_default
    pid = unique()
    tq_default.put(TensorDict({"x": torch.arange(4).reshape(2, 2)}, batch_size=2), partition_id=pid)
    assert pid in ray.get(_partitions_seen_from_a_task.remote())


def test_s01_get_client_before_init_fails(ray_session):
    release_shared()
    with pytest.raises(AssertionError):
        tq.get_client()


def test_s02_init_close_shutdown_cycle():
    release_shared()
    for _ in range(2):
        start_ray()
        with TQ() as client:
            pid = unique()
            meta = client.put(TensorDict({"x": torch.ones(3, 2)}, batch_size=3), partition_id=pid)
            assert meta.size == 3
            assert client.get_partition_list() == [pid]
        ray.shutdown()
    start_ray()  # the session's Ray, for the tests after this one


def test_s03_init_with_polling_and_sampler_by_name(tq_polling):
    conf = shared_conf()
    assert conf.controller.polling_mode is True
    assert conf.controller.zmq_info is not None
    client = tq_polling
    pid = unique()
    client.put(TensorDict({"x": torch.arange(8)}, batch_size=8), partition_id=pid)
    meta = client.get_meta(["x"], 4, pid, task_name="t")
    assert meta.size == 4


def test_s07_polling_fetch_without_enough_data_is_empty_at_once(tq_polling):
    client = tq_polling
    pid = unique()
    client.put(TensorDict({"x": torch.arange(3)}, batch_size=3), partition_id=pid)
    t0 = time.monotonic()
    empty = client.get_meta(["x"], 4, pid, task_name="t")
    assert empty.size == 0 and not empty.is_ready
    assert time.monotonic() - t0 < 0.9  # no wait (the check interval is 1 s)
    assert client.get_meta(["x"], 1, unique(), task_name="t").size == 0  # unknown partition: empty too
    assert client.get_meta(["x"], 3, pid, task_name="t").size == 3  # nothing was consumed meanwhile


def test_s03_unknown_sampler_name_is_value_error(ray_session):
    release_shared()
    with pytest.raises(ValueError):
        tq.init(make_conf(sampler="NoSuchSampler"))
    tq.close()
