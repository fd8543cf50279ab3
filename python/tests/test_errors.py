"""Error paths raise the registered exception types, with messages that say
what went wrong and what to do."""

import json
import os
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import torch

import datasystem
import transfer_queue as tq
from tensordict import TensorDict

from conftest import kill_pid, make_client, stop_controller, unique, yuanrong_config, free_port


# ------------------------------------------------------------------ exception types

def test_exception_hierarchy():
    assert issubclass(tq.InvalidArgumentError, ValueError)
    assert issubclass(tq.NotFoundError, KeyError)
    assert issubclass(tq.TimeoutError_, TimeoutError)
    assert issubclass(tq.UnavailableError, ConnectionError)
    assert issubclass(tq.DTypeError, TypeError)
    assert issubclass(tq.OutOfSpaceError, tq.TQDSError)
    for t in (tq.InvalidArgumentError, tq.NotFoundError, tq.TimeoutError_, tq.UnavailableError, tq.DTypeError):
        assert issubclass(t, tq.TQDSError)
    # One set of types for both packages.
    assert datasystem.NotFoundError is tq.NotFoundError
    assert datasystem.UnavailableError is tq.UnavailableError


# ------------------------------------------------------------------ storage manager config

@pytest.fixture
def bare_client(controller):
    return tq.TransferQueueClient(client_id=unique("c"), controller_info=tq.process_zmq_server_info(controller))


def test_unknown_manager_type_names_known_ones(bare_client):
    with pytest.raises(tq.InvalidArgumentError) as ei:
        bare_client.initialize_storage_manager(manager_type="MooncakeStorageManager", config={})
    msg = str(ei.value)
    assert "MooncakeStorageManager" in msg
    assert "SimpleStorageManager" in msg and "YuanrongStorageManager" in msg


def test_manager_type_must_be_a_string(bare_client):
    with pytest.raises(tq.InvalidArgumentError):
        bare_client.initialize_storage_manager(manager_type=None, config={})


@pytest.mark.parametrize("missing", ["host", "port"])
def test_yuanrong_missing_host_or_port(bare_client, ds_worker, missing):
    cfg = yuanrong_config(ds_worker)
    del cfg[missing]
    with pytest.raises(tq.InvalidArgumentError) as ei:
        bare_client.initialize_storage_manager(manager_type="YuanrongStorageManager", config=cfg)
    assert f"'{missing}'" in str(ei.value)


def test_yuanrong_bad_port_value(bare_client, ds_worker):
    cfg = dict(yuanrong_config(ds_worker), port="thirty-one")
    with pytest.raises(tq.InvalidArgumentError, match="port"):
        bare_client.initialize_storage_manager(manager_type="YuanrongStorageManager", config=cfg)


def test_yuanrong_unknown_client_name(bare_client, ds_worker):
    cfg = dict(yuanrong_config(ds_worker), client_name="MooncakeStorageClient")
    with pytest.raises(tq.InvalidArgumentError) as ei:
        bare_client.initialize_storage_manager(manager_type="YuanrongStorageManager", config=cfg)
    assert "MooncakeStorageClient" in str(ei.value) and "YuanrongStorageClient" in str(ei.value)


def test_yuanrong_no_worker_at_address(bare_client):
    port = free_port()
    cfg = {"manager_type": "YuanrongStorageManager", "client_name": "YuanrongStorageClient",
           "host": "127.0.0.1", "port": port}
    t0 = time.monotonic()
    with pytest.raises(tq.UnavailableError) as ei:
        bare_client.initialize_storage_manager(manager_type="YuanrongStorageManager", config=cfg)
    assert time.monotonic() - t0 < 20
    msg = str(ei.value)
    assert f"127.0.0.1:{port}" in msg
    assert "dscli start" in msg  # says what to do


def test_put_before_initialize_storage_manager(bare_client):
    with pytest.raises(tq.InvalidArgumentError, match="initialize_storage_manager"):
        bare_client.put(data=TensorDict({"a": torch.zeros(2)}, batch_size=[2]), partition_id="p")


def test_bad_controller_info():
    with pytest.raises(tq.InvalidArgumentError, match="controller_info"):
        tq.TransferQueueClient(client_id="x", controller_info=42)


# ------------------------------------------------------------------ wrong data

@pytest.fixture
def sclient(controller):
    return make_client(controller, "simple")


@pytest.mark.parametrize("data", [5, "text", [1, 2, 3], torch.zeros(3)], ids=["int", "str", "list", "tensor"])
def test_put_of_a_non_batch(sclient, data):
    with pytest.raises(tq.DTypeError, match="TensorDict"):
        sclient.put(data=data, partition_id="p")


def test_put_field_of_unsupported_type(sclient):
    with pytest.raises(tq.DTypeError) as ei:
        sclient.put(data={"a": 3}, partition_id="p")
    assert "'a'" in str(ei.value) and "int" in str(ei.value)


@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128])
def test_put_of_unsupported_dtype(sclient, dtype):
    with pytest.raises(tq.DTypeError, match=str(dtype).split(".")[1]):
        sclient.put(data=TensorDict({"a": torch.zeros(2, dtype=dtype)}, batch_size=[2]), partition_id="p")


def test_put_of_numpy_object_array_with_an_unpicklable_element(sclient, partition):
    """Object arrays store one pickled value per element (test_tensordict.py);
    an element that cannot be pickled fails the whole put, naming the field."""
    with pytest.raises(tq.DTypeError, match="'a' sample 1"):
        sclient.put(data={"ok": torch.zeros(2), "a": np.array([1, lambda: 0], dtype=object)},
                    partition_id=partition)
    assert partition not in sclient.list_partitions()


def test_put_of_sparse_tensor(sclient):
    sparse = torch.eye(3).to_sparse()
    with pytest.raises(tq.DTypeError, match="layout"):
        sclient.put(data={"a": sparse}, partition_id="p")


def test_binding_rejects_device_or_strided_tensors(sclient):
    """The extension reads tensors in place only when they are contiguous
    and on the CPU (the Python layer makes them so; a direct call may not)."""
    x = torch.arange(12, dtype=torch.float32).reshape(3, 4).t()
    with pytest.raises(tq.DTypeError, match="contiguous"):
        sclient._client.put(4, [("dense", "x", x, "float32", (4, 3))], partition_id="p")


def test_ragged_field_with_mixed_dtypes(sclient):
    with pytest.raises(tq.DTypeError, match="'a'"):
        sclient.put(data=TensorDict({"a": [torch.zeros(2), torch.zeros(3, dtype=torch.int32)]}, batch_size=[2]),
                    partition_id="p")


def test_zero_dim_field_is_rejected(sclient):
    with pytest.raises(tq.InvalidArgumentError, match="batch dimension"):
        sclient.put(data={"a": torch.tensor(1.0)}, partition_id="p")


def test_empty_put(sclient):
    with pytest.raises(tq.InvalidArgumentError, match="no fields"):
        sclient.put(data={}, partition_id="p")


def test_put_needs_partition(sclient):
    with pytest.raises(tq.InvalidArgumentError, match="partition_id"):
        sclient.put(data={"a": torch.zeros(2)})


def test_non_string_field_name(sclient):
    with pytest.raises(tq.InvalidArgumentError, match="field names"):
        sclient.put(data={1: torch.zeros(2)}, partition_id="p")


# ------------------------------------------------------------------ mismatched batch sizes

def test_mismatched_batch_sizes_in_dict(sclient):
    with pytest.raises(tq.InvalidArgumentError) as ei:
        sclient.put(data={"a": torch.zeros(2), "b": torch.zeros(3)}, partition_id="p")
    assert "'b'" in str(ei.value) and "3" in str(ei.value) and "2" in str(ei.value)
    with pytest.raises(tq.InvalidArgumentError, match="'b'"):
        sclient.put(data={"a": torch.zeros(2), "b": ["x"]}, partition_id="p")


def test_tensordict_batch_size_must_cover_the_fields(sclient, partition):
    """tensordict itself refuses fields longer than the batch; put reads the
    batch size from the TensorDict, not from its first field."""
    with pytest.raises(RuntimeError, match="'a'"):
        TensorDict({"a": torch.zeros(4)}, batch_size=[2])
    td = TensorDict({"a": torch.zeros(4, 3)}, batch_size=[4, 3])
    meta = sclient.put(data=td, partition_id=partition)
    assert len(meta) == 4 and tuple(meta.field_schema["a"]["shape"]) == (3,)


def test_put_with_metadata_of_other_size(sclient, partition):
    meta = sclient.put(data={"a": torch.zeros(2)}, partition_id=partition)
    with pytest.raises(tq.InvalidArgumentError, match="3"):
        sclient.put(data={"b": torch.zeros(3)}, metadata=meta)
    # Nothing was written.
    assert sclient.get_production_status(partition)["produced"].get("b", 0) == 0


def test_field_kind_conflict_in_a_partition(sclient, partition):
    """A field holding strings in some samples and tensors in others must not
    hand back the tensors' raw bytes: reject the put, or return the tensors."""
    sclient.put(data={"s": ["x", "y"]}, partition_id=partition)
    try:
        sclient.put(data={"s": torch.arange(2)}, partition_id=partition)
    except tq.DTypeError:
        return
    out = sclient.get_data(sclient.get_meta(["s"], 4, partition, task_name="t", mode="poll"))
    assert out["s"][:2] == ["x", "y"]
    assert all(isinstance(v, torch.Tensor) for v in out["s"][2:]), out["s"]


# ------------------------------------------------------------------ get_meta / get_data

def test_get_meta_timeout(sclient, partition):
    sclient.put(data={"a": torch.zeros(1)}, partition_id=partition)
    t0 = time.monotonic()
    with pytest.raises(tq.TimeoutError_) as ei:
        sclient.get_meta(["a"], 2, partition, task_name="t", mode="fetch", timeout=0.4)
    elapsed = time.monotonic() - t0
    assert 0.35 <= elapsed < 5
    assert isinstance(ei.value, TimeoutError)
    assert partition in str(ei.value)


def test_get_meta_bad_arguments(sclient, partition):
    with pytest.raises(tq.InvalidArgumentError, match="poll"):
        sclient.get_meta(["a"], 1, partition, mode="sometimes")
    with pytest.raises(tq.InvalidArgumentError):
        sclient.get_meta(["a"], -1, partition, mode="poll")
    with pytest.raises(tq.InvalidArgumentError):
        sclient.get_meta([], 1, partition, mode="poll")
    with pytest.raises(tq.InvalidArgumentError, match="BatchMeta"):
        sclient.get_data("not a meta")


def test_status_of_unknown_partition(sclient):
    with pytest.raises(tq.NotFoundError, match="nope"):
        sclient.get_production_status(unique("nope"))


# ------------------------------------------------------------------ dead peers

DEAD_CONTROLLER_CHILD = textwrap.dedent("""
    import json, os, signal, sys, threading, time
    import torch
    import transfer_queue as tq

    ctl = tq.TransferQueueControllerHandle()
    print(json.dumps({"controller_pid": ctl.pid}), flush=True)
    client = tq.TransferQueueClient(client_id="c", controller_info=tq.process_zmq_server_info(ctl))
    client.initialize_storage_manager(manager_type="SimpleStorageManager", config={})
    client.put(data={"a": torch.zeros(2)}, partition_id="p")
    os.kill(ctl.pid, signal.SIGKILL)
    os.waitpid(ctl.pid, 0)
    results = {}
    print_lock = threading.Lock()

    def call(name, fn):
        t0 = time.monotonic()
        try:
            fn()
            results[name] = {"error": None}
        except BaseException as e:
            results[name] = {"error": type(e).__name__, "message": str(e)}
        results[name]["elapsed"] = time.monotonic() - t0
        with print_lock:  # one whole line per result
            print(json.dumps({name: results[name]}), flush=True)

    threads = [
        threading.Thread(target=call, args=("get_meta", lambda: client.get_meta(
            ["a"], 4, "p", task_name="t", mode="fetch", timeout=2.0))),
        threading.Thread(target=call, args=("put", lambda: client.put(
            data={"a": torch.zeros(2)}, partition_id="p"))),
    ]
    for t in threads: t.start()
    for t in threads: t.join()
""")


def child_env():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    return env


def test_dead_controller_raises_unavailable_not_hang(tmp_path):
    """Kill the controller; a get_meta with a 2 s timeout raises UnavailableError
    within its timeout (plus slack), and a put raises rather than hangs."""
    script = tmp_path / "child.py"
    script.write_text(DEAD_CONTROLLER_CHILD)
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=child_env())
    ctl_pid = None
    try:
        out, err = proc.communicate(timeout=45)
    except subprocess.TimeoutExpired:
        kill_pid(proc.pid, timeout=1)
        out, err = proc.communicate()
    finally:
        kill_pid(proc.pid, timeout=1)
    lines = [json.loads(l) for l in out.splitlines() if l.startswith("{")]
    for line in lines:
        ctl_pid = line.get("controller_pid", ctl_pid)
    kill_pid(ctl_pid, timeout=1)
    res = {k: v for line in lines for k, v in line.items() if k != "controller_pid"}
    assert "get_meta" in res and "put" in res, f"child did not finish within 45 s: {out}\n{err}"
    gm, put = res["get_meta"], res["put"]
    assert gm["error"] == "UnavailableError", gm
    assert put["error"] == "UnavailableError", put
    assert "controller" in gm["message"]
    assert put["elapsed"] < 35
    assert gm["elapsed"] < 2.0 + 5.0, (
        f"get_meta(timeout=2) on a dead controller took {gm['elapsed']:.1f} s")


def test_dead_worker_raises_unavailable(fresh_worker, controller):
    c = make_client(controller, "yuanrong", fresh_worker)
    partition = unique()
    c.put(data={"a": torch.arange(3)}, partition_id=partition)
    meta = c.get_meta(["a"], 3, partition, task_name="t")
    address = fresh_worker.address
    fresh_worker.stop()
    t0 = time.monotonic()
    with pytest.raises(tq.UnavailableError) as ei:
        c.put(data={"a": torch.arange(3)}, partition_id=partition)
    assert address in str(ei.value), str(ei.value)
    with pytest.raises(tq.UnavailableError):
        c.get_data(meta)
    assert time.monotonic() - t0 < 20


# ------------------------------------------------------------------ KVClient

def test_kvclient_errors(ds_worker):
    kv = datasystem.KVClient(ds_worker.host, ds_worker.port)
    with pytest.raises(tq.InvalidArgumentError, match="Init"):
        kv.get("x")  # before init
    kv.init()
    key = unique("missing")
    with pytest.raises(tq.NotFoundError) as ei:
        kv.get(key)
    assert key in str(ei.value)
    assert isinstance(ei.value, KeyError)
    t0 = time.monotonic()
    with pytest.raises(tq.NotFoundError):
        kv.get(key, timeout_ms=300)  # waits for the key, then gives up
    assert 0.25 <= time.monotonic() - t0 < 5
    with pytest.raises(tq.InvalidArgumentError, match="2 keys"):
        kv.mset(["a", "b"], [b"1"])
    (buf,) = kv.mcreate([unique("k")], [4])
    with pytest.raises(tq.InvalidArgumentError, match="exceeds"):
        buf.write(b"12345")
    buf.write(b"1234")
    kv.mset_buffer([buf])
    with pytest.raises(tq.InvalidArgumentError, match="sealed"):
        buf.memoryview()
    with pytest.raises(TypeError):
        kv.set("k", 5)


def test_kvclient_no_worker():
    port = free_port()
    kv = datasystem.KVClient("127.0.0.1", port)
    t0 = time.monotonic()
    with pytest.raises(tq.UnavailableError) as ei:
        kv.init()
    assert time.monotonic() - t0 < 20
    assert f"127.0.0.1:{port}" in str(ei.value)
    assert isinstance(ei.value, ConnectionError)


def test_kvclient_dead_worker(fresh_worker):
    kv = datasystem.KVClient(fresh_worker.host, fresh_worker.port)
    kv.init()
    kv.set("k", b"v")
    fresh_worker.stop()
    with pytest.raises(tq.UnavailableError):
        kv.get("k")
