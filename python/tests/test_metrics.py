"""Prometheus metrics (issue 16) of the datasystem worker (--metrics_port)
and of the controller (`tq controller --metrics-port`, upstream's tq_*
names): real processes, scraped over HTTP, the text parsed with the
Prometheus client's own parser."""

from __future__ import annotations

import shutil
import socket
import subprocess
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

import torch
from tensordict import TensorDict

import transfer_queue as tq
from conftest import DsWorker, make_client, stop_controller, unique
from _tqds import InvalidArgumentError
from yr.datasystem import KVClient


def scrape(address: str) -> dict:
    """{(sample name, ((label, value), ...)): value} of one scrape, and the
    family types as {family name: type}."""
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as r:
        text = r.read().decode()
    values, types = {}, {}
    for family in text_string_to_metric_families(text):
        types[family.name] = family.type
        for s in family.samples:
            values[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return {"values": values, "types": types}


@pytest.fixture
def metrics_worker():
    w = DsWorker(shared_memory_mb=256, extra_args=["--metrics_port", "0"])
    try:
        yield w
    finally:
        w.stop()


def test_worker_metrics_follow_its_counters(metrics_worker):
    import datasystem

    w = metrics_worker
    stats = datasystem.KVClient(w.host, w.port)
    stats.init()
    address = stats.stats()["metrics"]
    assert address.startswith(w.host + ":"), address
    label = (("worker", w.address),)
    before = scrape(address)
    v = before["values"]
    assert before["types"]["ds_worker_shared_memory_used_bytes"] == "gauge"
    assert before["types"]["ds_worker_pulls"] == "counter"  # exposed as ds_worker_pulls_total
    assert v[("ds_worker_shared_memory_capacity_bytes", label)] == stats.stats()["capacity"]
    assert v[("ds_worker_objects", label)] == 0
    assert v[("ds_worker_pulls_total", label)] == 0
    assert v[("ds_worker_cluster_peers", label)] == 0  # standalone

    kv = KVClient(w.host, w.port)
    kv.init()
    p = unique("m") + "_"
    kv.mset([p + str(i) for i in range(4)], [b"x" * 100_000] * 4)
    after = scrape(address)["values"]
    assert after[("ds_worker_objects", label)] == 4
    assert after[("ds_worker_shared_memory_used_bytes", label)] >= 400_000
    assert 0 < after[("ds_worker_shared_memory_utilization_ratio", label)] < 1
    assert after[("ds_worker_clients", label)] >= 2  # stats and kv
    kv.delete([p + str(i) for i in range(4)])
    assert scrape(address)["values"][("ds_worker_objects", label)] == 0


def test_dscli_status_shows_the_metrics_address(metrics_worker):
    r = subprocess.run(["dscli", "status", "--worker_address", metrics_worker.address],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"metrics of {metrics_worker.address}: http://{metrics_worker.host}:" in r.stdout, r.stdout


def test_no_metrics_unless_asked(ds_worker):
    import datasystem

    c = datasystem.KVClient(ds_worker.host, ds_worker.port)
    c.init()
    assert c.stats()["metrics"] == ""


def test_a_taken_metrics_port_fails_the_start_naming_it():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(RuntimeError) as e:
            DsWorker(shared_memory_mb=64, extra_args=["--metrics_port", str(port)])
        assert f"cannot serve metrics on 127.0.0.1:{port}" in str(e.value), str(e.value)


def test_controller_metrics_with_upstreams_names():
    handle = tq.TransferQueueControllerHandle(storage_units=1, metrics_port=0)
    try:
        endpoint = handle.get_metrics_endpoint()
        assert endpoint and endpoint.rpartition(":")[2].isdigit(), endpoint
        empty = scrape(endpoint)["values"]
        assert empty[("tq_partitions_total", ())] == 0
        assert empty[("tq_controller_up", ())] == 1

        c = make_client(handle, "simple")
        p = unique("train")
        c.put(TensorDict({"prompt": torch.arange(8).reshape(8, 1)}, batch_size=[8]), partition_id=p)
        first5 = c.get_meta(["prompt"], 5, p, task_name="rollout")
        c.put(TensorDict({"response": torch.ones(5, 2)}, batch_size=[5]), metadata=first5)
        got = scrape(endpoint)
        v, types = got["values"], got["types"]
        assert types["tq_partition_samples_total"] == "gauge"
        assert v[("tq_partitions_total", ())] == 1
        assert v[("tq_partition_samples_total", (("partition_id", p),))] == 8
        assert v[("tq_partition_consumption_progress", (("partition_id", p), ("task_name", "rollout")))] == 5 / 8
        # production: the least produced field (response, 5 of 8)
        assert v[("tq_partition_production_progress", (("partition_id", p), ("task_name", "all")))] == 5 / 8
        assert v[("tq_controller_uptime_seconds", ())] > 0
        c.clear_partition(p)
        assert scrape(endpoint)["values"][("tq_partitions_total", ())] == 0
    finally:
        stop_controller(handle)


def test_controller_request_index_and_storage_metrics():
    """Upstream's request families (by op_type), index gauges and per-unit
    storage gauges follow what the controller did."""
    handle = tq.TransferQueueControllerHandle(storage_units=1, unit_capacity_mb=256, metrics_port=0,
                                              unit_capacity_samples=100)
    try:
        endpoint = handle.get_metrics_endpoint()
        unit = handle.get_storage_units()[0]
        c = make_client(handle, "simple")
        p = unique("req")
        c.put(TensorDict({"x": torch.arange(16).reshape(8, 2)}, batch_size=[8]), partition_id=p)
        assert len(c.get_meta(["x"], 5, p, task_name="t")) == 5
        with pytest.raises(Exception):
            c.get_meta(["x"], 4, p, task_name="t", timeout=0)  # 3 left: not ready, an error reply
        got = scrape(endpoint)
        v, types = got["values"], got["types"]
        get_meta, notify = (("op_type", "GET_META"),), (("op_type", "NOTIFY_DATA_UPDATE"),)
        assert types["tq_controller_request_duration_seconds"] == "histogram"
        assert types["tq_controller_request"] == "counter"
        assert v[("tq_controller_request_total", get_meta)] == 2
        assert v[("tq_controller_request_errors_total", get_meta)] == 1
        assert v[("tq_controller_request_samples_total", get_meta)] == 5
        assert v[("tq_controller_request_samples_total", notify)] == 8
        assert v[("tq_controller_request_duration_seconds_count", get_meta)] == 2
        assert v[("tq_controller_request_duration_seconds_bucket", (("le", "+Inf"),) + get_meta)] == 2
        assert v[("tq_controller_request_duration_seconds_sum", get_meta)] > 0
        assert v[("tq_global_index_allocated_total", ())] == 8
        assert v[("tq_global_index_reusable_total", ())] == 0
        assert v[("tq_controller_memory_rss_bytes", ())] > 1 << 20
        u = (("storage_unit_id", unit),)
        # upstream's: capacity and active keys in samples
        assert v[("tq_storage_capacity_total", u)] == 100
        assert v[("tq_storage_active_keys_total", u)] == 8
        assert v[("tq_storage_utilization_ratio", u)] == 8 / 100
        assert v[("tq_storage_memory_rss_bytes", u)] > 1 << 20
        # ours: bytes
        assert v[("tq_storage_capacity_bytes", u)] == 256 << 20
        assert v[("tq_storage_used_bytes", u)] == 16 * 8
        # the unit's own request gauges, upstream's op_types
        put = (("op_type", "PUT_DATA"),) + u  # labels sorted by name
        assert v[("tq_storage_request_ops", put)] == 1
        assert v[("tq_storage_request_latency_avg", put)] > 0
        assert 0 < v[("tq_storage_request_latency_p50", put)] <= v[("tq_storage_request_latency_p99", put)]
        assert ("tq_storage_request_ops", (("op_type", "GET_DATA"),) + u) not in v
        c.get_data(c.get_meta(["x"], 3, p, task_name="t"))
        assert scrape(endpoint)["values"][("tq_storage_request_ops", (("op_type", "GET_DATA"),) + u)] == 1

        c.clear_partition(p)
        v = scrape(endpoint)["values"]
        assert v[("tq_global_index_allocated_total", ())] == 0
        assert v[("tq_global_index_reusable_total", ())] == 8
        assert v[("tq_controller_request_samples_total", (("op_type", "CLEAR_PARTITION"),))] == 8
        assert v[("tq_storage_active_keys_total", u)] == 0
    finally:
        stop_controller(handle)


def test_unit_without_a_sample_limit_has_no_capacity_series():
    """As upstream leaves out an unlimited unit's capacity and utilisation."""
    handle = tq.TransferQueueControllerHandle(storage_units=1, unit_capacity_mb=64, metrics_port=0)
    try:
        u = (("storage_unit_id", handle.get_storage_units()[0]),)
        v = scrape(handle.get_metrics_endpoint())["values"]
        assert ("tq_storage_capacity_total", u) not in v
        assert ("tq_storage_utilization_ratio", u) not in v
        assert v[("tq_storage_active_keys_total", u)] == 0
        assert v[("tq_storage_capacity_bytes", u)] == 64 << 20
    finally:
        stop_controller(handle)


def test_storage_unit_serves_its_own_metrics():
    """`tq storage-unit --metrics-port 0`: upstream's storage role families
    (tq_storage_request_* by op_type) on the unit's own endpoint."""
    handle = tq.TransferQueueControllerHandle(storage_units=0)
    unit = subprocess.Popen([shutil.which("tq"), "storage-unit", "--controller", handle.info.address,
                             "--metrics-port", "0",
                             "--capacity-samples", "50"], stdout=subprocess.PIPE, text=True)
    try:
        address = unit.stdout.readline().strip().split("listening on ", 1)[1]
        endpoint = unit.stdout.readline().strip().split("http://", 1)[1].rsplit("/metrics", 1)[0]
        c = make_client(handle, "simple")
        p = unique("unit")
        c.put(TensorDict({"x": torch.arange(12).reshape(4, 3)}, batch_size=[4]), partition_id=p)
        c.get_data(c.get_meta(["x"], 4, p, task_name="t"))
        got = scrape(endpoint)
        v, types = got["values"], got["types"]
        put, get = (("op_type", "PUT_DATA"),), (("op_type", "GET_DATA"),)
        assert types["tq_storage_request_duration_seconds"] == "histogram"
        assert v[("tq_storage_request_total", put)] == 1
        assert v[("tq_storage_request_total", get)] == 1
        assert v[("tq_storage_request_errors_total", put)] == 0
        assert v[("tq_storage_request_samples_total", get)] == 4
        assert v[("tq_storage_request_duration_seconds_count", put)] == 1
        u = (("storage_unit_id", address),)
        assert v[("tq_storage_capacity_total", u)] == 50
        assert v[("tq_storage_active_keys_total", u)] == 4
    finally:
        unit.terminate()
        assert unit.wait(timeout=30) == 0
        unit.stdout.close()
        stop_controller(handle)


def test_controller_without_metrics_has_no_endpoint(own_controller):
    assert own_controller.get_metrics_endpoint() is None


def test_controller_metrics_need_the_cpp_controller():
    from transfer_queue.sampler import BaseSampler

    class Mine(BaseSampler):
        def sample(self, *args, **kwargs):  # pragma: no cover (never called)
            raise AssertionError

    with pytest.raises(InvalidArgumentError, match="metrics_port"):
        tq.TransferQueueControllerHandle(sampler=Mine(), metrics_port=0)


def test_init_with_metrics_enabled_gives_the_endpoint(local_tq_session):
    """upstream's calls: tq.init({"metrics": {"enabled": True}}), then
    tq.get_metrics_endpoint() -> "host:port" of a live exporter."""
    tq.init({"metrics": {"enabled": True, "port": 0}})
    endpoint = tq.get_metrics_endpoint()
    assert endpoint and endpoint.rpartition(":")[2].isdigit(), endpoint
    p = unique("kv")
    tq.kv_put(key="k1", partition_id=p, fields=TensorDict({"x": torch.ones(1, 2)}, batch_size=[1]))
    v = scrape(endpoint)["values"]
    assert v[("tq_partition_samples_total", (("partition_id", p),))] == 1
    tq.close()
    assert tq.get_metrics_endpoint() is None


def test_init_refuses_a_bad_metrics_port(local_tq_session):
    with pytest.raises(InvalidArgumentError, match="metrics.port"):
        tq.init({"metrics": {"enabled": True, "port": "9090"}})
