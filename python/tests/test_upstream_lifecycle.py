"""transfer_queue.init() / get_client() / close(), for real: a controller
started by the first init() of a session and attached to by the next ones
(in this process, in another process, in a Ray task), torn down only by the
process that started it.

Local-mode tests run without Ray (forced off even where another test module
left Ray initialised in this process) and each uses its own session name
($TQDS_SESSION), so they never meet another test's or another user's
controller. The Ray tests come last and share test_ray.py's loopback Ray.
Every process a test starts is stopped by pid at its end.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest
import torch
from tensordict import TensorDict

import transfer_queue.interface as tqi
from transfer_queue.controller import ZMQServerInfo

from conftest import REPO, free_port, kill_pid, pid_alive, unique
from test_ray import _worker_pythonpath, local_ray_session, ray, wait_until  # noqa: F401 (fixture)

CHILD_TIMEOUT = 120


# --------------------------------------------------------------------------- helpers

@pytest.fixture
def session(local_tq_session):
    return local_tq_session  # conftest.py: own session name, no Ray, everything stopped after


def child_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (_worker_pythonpath(), env.get("PYTHONPATH", "")) if p)
    return env


def run_child(code: str) -> dict:
    """Runs `code` in a fresh Python (same session env); it prints one
    RESULT <json> line, which is returned."""
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                       timeout=CHILD_TIMEOUT, env=child_env(), cwd=str(REPO))
    m = re.search(r"^RESULT (.*)$", r.stdout, re.M)
    assert r.returncode == 0 and m, f"child failed (exit {r.returncode}):\n{r.stdout}\n{r.stderr[-4000:]}"
    return json.loads(m.group(1))


def put_rows(client, partition: str, n: int = 3, start: int = 0):
    data = TensorDict({"x": torch.arange(start, start + 2 * n).reshape(n, 2)}, batch_size=[n])
    return client.put(data, partition_id=partition)


def read_x(client, meta) -> torch.Tensor:
    x = client.get_data(meta)["x"]
    return torch.stack(list(x.unbind())) if getattr(x, "is_nested", False) else x


def rendezvous_path() -> Path:
    return tqi._Rendezvous(os.environ[tqi.SESSION_ENV]).path


# --------------------------------------------------------------------------- local mode

def test_get_client_before_init_is_an_assertion_error(session):
    with pytest.raises(AssertionError, match="init"):
        tqi.get_client()


def test_init_starts_then_a_second_init_attaches_to_the_same_client(session):
    conf = tqi.init({"backend": {"SimpleStorage": {"num_data_storage_units": 3}}})
    info = conf.controller.zmq_info
    assert isinstance(info, ZMQServerInfo)
    port = info.ports["request"]
    assert info.ports["request_handle_socket"] == port and info.ports["handshake_socket"] == port
    units = conf.backend.SimpleStorage.zmq_info
    assert sorted(units) == [f"TransferQueueStorageUnit#{i}" for i in range(3)]
    assert conf.controller.sampler == "SequentialSampler" and conf.backend.Yuanrong.worker_port == 31501
    client = tqi.get_client()
    assert client.client_id == f"TransferQueueClient_{os.getpid()}"
    part = unique("p")
    meta = put_rows(client, part)

    # Attaching returns the given conf unchanged (None here) and keeps the client.
    assert tqi.init() is None
    mine = {"controller": {"polling_mode": True}}
    assert tqi.init(mine) is mine
    assert tqi.get_client() is client
    assert torch.equal(read_x(client, meta), torch.arange(6).reshape(3, 2))
    assert json.loads(rendezvous_path().read_text())["controller_pid"] == tqi._current_session().controller_pid


def test_another_process_attaches_and_its_close_leaves_the_controller(session):
    tqi.init()
    client = tqi.get_client()
    pid = tqi._current_session().controller_pid
    part = unique("p")
    put_rows(client, part, n=4)

    got = run_child(f"""
        import json, os
        import transfer_queue.interface as tqi
        ret = tqi.init({{"controller": {{"polling_mode": True}}}})  # ignored: it attaches
        c = tqi.get_client()
        meta = c.get_meta(data_fields=["x"], batch_size=4, partition_id={part!r}, task_name="child")
        x = c.get_data(meta)["x"]
        c.put({{"x": x + 100}}, partition_id={part!r} + "_child")
        s = tqi._current_session()
        out = {{"partitions": c.list_partitions(), "x": x.tolist(), "owner": s.owner,
                "controller_pid": s.controller_pid, "ret_unchanged": ret == {{"controller": {{"polling_mode": True}}}}}}
        tqi.close()
        print("RESULT " + json.dumps(out))
    """)
    assert got["owner"] is False and got["ret_unchanged"]
    assert got["controller_pid"] == pid
    assert part in got["partitions"]
    assert got["x"] == torch.arange(8).reshape(4, 2).tolist()

    # The attacher's close left the controller serving this process.
    assert pid_alive(pid)
    meta = client.get_meta(data_fields=["x"], batch_size=4, partition_id=part + "_child", task_name="owner")
    assert torch.equal(read_x(client, meta), torch.arange(8).reshape(4, 2) + 100)

    # The owner's close stops it and withdraws the session file.
    tqi.close()
    wait_until(lambda: not pid_alive(pid), 30, f"controller {pid} stopped by the owner's close")
    assert not rendezvous_path().exists()
    assert not rendezvous_path().with_suffix(".lock").exists()
    with pytest.raises(AssertionError):
        tqi.get_client()


def test_init_close_init_cycle_starts_a_new_controller(session):
    tqi.init()
    first = tqi._current_session().controller_pid
    put_rows(tqi.get_client(), unique("p"))
    tqi.close()
    tqi.close()  # idempotent
    assert not pid_alive(first)

    tqi.init()
    second = tqi._current_session().controller_pid
    session.append(second)
    assert second != first and pid_alive(second)
    part = unique("p")
    meta = put_rows(tqi.get_client(), part, start=10)
    assert torch.equal(read_x(tqi.get_client(), meta), torch.arange(10, 16).reshape(3, 2))
    assert tqi.get_client().list_partitions() == [part]  # a new controller: the old partition is gone


def test_a_dead_owners_session_file_is_replaced(session):
    """An owner killed with SIGKILL takes its controller along (PDEATHSIG);
    the next init() finds the stale file by its pids and starts anew."""
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent("""
        import sys
        import transfer_queue.interface as tqi
        tqi.init()
        print(tqi._current_session().controller_pid, flush=True)
        sys.stdin.read()  # until the test kills this process
    """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=child_env(), cwd=str(REPO))
    old = None
    try:
        line = proc.stdout.readline()
        assert line.strip().isdigit(), f"owner child printed {line!r}"
        old = int(line)
        session.append(old)
        assert rendezvous_path().exists()
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        wait_until(lambda: not pid_alive(old), 30, f"controller {old} ended with its owner")
        tqi.init()
        s = tqi._current_session()
        assert s.owner and s.controller_pid != old
        assert json.loads(rendezvous_path().read_text())["owner_pid"] == os.getpid()
    finally:
        with contextlib.suppress(Exception):
            proc.kill()
            proc.wait(timeout=10)
        if proc.stdin:
            proc.stdin.close()
        if proc.stdout:
            proc.stdout.close()


def test_processes_racing_to_init_share_one_controller(session):
    """Two processes call init() at once: one starts the controller, the
    other attaches to it."""
    code = textwrap.dedent("""
        import sys
        import transfer_queue.interface as tqi
        tqi.init()
        s = tqi._current_session()
        print(int(s.owner), s.controller_pid, flush=True)
        sys.stdin.read()  # until the test closes stdin
        tqi.close()
    """)
    procs = [subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True, env=child_env(), cwd=str(REPO)) for _ in range(2)]
    try:
        lines = [p.stdout.readline().split() for p in procs]
        assert all(len(line) == 2 for line in lines), lines
        session.extend(int(pid) for _, pid in lines)
        assert sorted(int(owner) for owner, _ in lines) == [0, 1]
        assert len({pid for _, pid in lines}) == 1
    finally:
        for p in procs:
            p.stdin.close()
        for p in procs:
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                kill_pid(p.pid)
            p.stdout.close()


def test_unknown_sampler_name_is_a_value_error_and_starts_nothing(session):
    with pytest.raises(ValueError, match="NoSuchSampler"):
        tqi.init({"controller": {"sampler": "NoSuchSampler"}})
    assert not rendezvous_path().exists()
    assert not rendezvous_path().with_suffix(".lock").exists()
    with pytest.raises(AssertionError):
        tqi.get_client()


def test_a_builtin_sampler_instance_becomes_the_controllers_default(session):
    if not _tq_supports("--default-sampling"):
        pytest.skip("this `tq` has no --default-sampling yet")
    from transfer_queue.sampler import GRPOGroupNSampler

    conf = tqi.init({"controller": {"sampler": GRPOGroupNSampler(n_samples_per_prompt=2)}})
    assert isinstance(conf.controller.sampler, GRPOGroupNSampler)
    cmdline = Path(f"/proc/{tqi._current_session().controller_pid}/cmdline").read_bytes().split(b"\0")
    sampling = json.loads(cmdline[cmdline.index(b"--default-sampling") + 1])
    assert sampling == {"sampler": "grpo_group_n", "n_samples_per_prompt": 2}


@pytest.mark.parametrize("backend", ["MooncakeStore", "RayStore", "Nope"])
def test_unsupported_backend_is_a_value_error(session, backend):
    with pytest.raises(ValueError, match=backend):
        tqi.init({"backend": {"storage_backend": backend}})
    assert not rendezvous_path().exists()


def test_simple_storage_needs_a_unit(session):
    with pytest.raises(ValueError, match="num_data_storage_units"):
        tqi.init({"backend": {"SimpleStorage": {"num_data_storage_units": 0}}})
    assert not rendezvous_path().exists()


def test_total_storage_size_bounds_the_samples_held(session):
    """upstream's backend.SimpleStorage.total_storage_size: at most that many
    samples over all units; a put past it fails, naming the limit, before
    anything is written; clearing makes room again."""
    tqi.init({"backend": {"SimpleStorage": {"num_data_storage_units": 2, "total_storage_size": 8}}})
    client = tqi.get_client()
    part = unique("p")
    meta = put_rows(client, part, n=5)
    with pytest.raises(Exception, match=r"holds 5 samples and 4 more would pass its limit of 8"):
        put_rows(client, part, n=4, start=100)
    put_rows(client, unique("q"), n=3)  # exactly full
    with pytest.raises(Exception, match=r"the controller holds 8 samples and 1 more .* would pass its limit of 8"):
        put_rows(client, unique("r"), n=1)
    assert torch.equal(read_x(client, meta), torch.arange(10).reshape(5, 2))
    client.clear_partition(part)
    put_rows(client, unique("p"), n=5)


def test_total_storage_size_must_be_a_positive_int(session):
    with pytest.raises(ValueError, match="total_storage_size"):
        tqi.init({"backend": {"SimpleStorage": {"total_storage_size": "big"}}})
    assert not rendezvous_path().exists()


def test_conf_of_a_wrong_type_is_a_type_error(session):
    with pytest.raises(TypeError):
        tqi.init(["controller"])


def _tq_supports(flag: str) -> bool:
    from transfer_queue.controller import _tq_binary

    r = subprocess.run([_tq_binary(), "controller", "--help"], capture_output=True, text=True, timeout=30)
    return flag in r.stdout


def test_polling_mode_reaches_the_controller(session):
    if not _tq_supports("--polling-mode"):
        pytest.skip("this `tq` has no --polling-mode yet")
    tqi.init({"controller": {"polling_mode": True}})
    client = tqi.get_client()
    part = unique("p")
    put_rows(client, part, n=2)
    meta = client.get_meta(data_fields=["x"], batch_size=4, partition_id=part, task_name="t", mode="fetch")
    assert len(meta) == 0  # too few ready: an empty answer at once, not a wait


@pytest.mark.parametrize("custom_sampler", [False, True], ids=["builtin", "python_sampler"])
def test_pre_alloc_sample_num_reserves_rows_until_producers_fill_them(session, monkeypatch, custom_sampler):
    """TQ_PRE_ALLOC_SAMPLE_NUM, read by the controller that init() starts:
    a new partition's status lists that many rows before anything is
    produced, consumption is not complete until they are all produced and
    consumed, and puts take those indexes first."""
    from transfer_queue.sampler import BaseSampler

    class InOrder(BaseSampler):  # a Python sampler: the controller runs in the Python host
        def sample(self, ready_indexes, batch_size, *args, **kwargs):
            return ready_indexes[:batch_size], ready_indexes[:batch_size]

    monkeypatch.setenv("TQ_PRE_ALLOC_SAMPLE_NUM", "6")
    tqi.init({"controller": {"sampler": InOrder() if custom_sampler else "SequentialSampler"}})
    session.append(tqi._current_session().controller_pid)
    client = tqi.get_client()
    part = unique("p")
    first = put_rows(client, part, n=2)
    base = min(first.global_indexes)
    assert sorted(first.global_indexes) == [base, base + 1]
    gidx, consumed = client.get_consumption_status("t", part)
    assert gidx.tolist() == list(range(base, base + 6)), "the reserved rows are listed before they are produced"
    assert consumed.tolist() == [0] * 6
    gidx, produced = client.get_production_status(["x"], part)
    assert produced[:, 0].tolist() == [1, 1, 0, 0, 0, 0]
    meta = client.get_meta(data_fields=["x"], batch_size=2, partition_id=part, task_name="t", mode="fetch")
    assert sorted(meta.global_indexes) == [base, base + 1]
    assert not client.check_consumption_status("t", part), "4 reserved rows are still to come"
    assert not client.check_production_status(["x"], part)
    rest = put_rows(client, part, n=5, start=10)
    assert sorted(rest.global_indexes)[:4] == list(range(base + 2, base + 6)), "puts take the reserved indexes first"
    meta = client.get_meta(data_fields=["x"], batch_size=5, partition_id=part, task_name="t", mode="fetch")
    assert len(meta) == 5
    assert client.check_consumption_status("t", part)
    assert client.check_production_status(["x"], part)
    # Clearing gives the indexes back; a new partition reserves again.
    client.clear_partition(part)
    other = unique("p")
    put_rows(client, other, n=1)
    assert len(client.get_consumption_status("t", other)[0]) == 6


def test_bad_pre_alloc_sample_num_fails_init_naming_it(session, monkeypatch):
    monkeypatch.setenv("TQ_PRE_ALLOC_SAMPLE_NUM", "lots")
    with pytest.raises(ValueError, match="TQ_PRE_ALLOC_SAMPLE_NUM"):
        tqi.init()


def test_default_fetch_timeout_reads_tq_variables(monkeypatch):
    monkeypatch.delenv("TQ_CONTROLLER_GET_METADATA_TIMEOUT", raising=False)
    monkeypatch.delenv("TQ_CONTROLLER_GET_METADATA_CHECK_INTERVAL", raising=False)
    assert tqi.default_fetch_timeout() == 60.0  # neither set: the seed's bound (answered as soon as samples arrive)
    monkeypatch.setenv("TQ_CONTROLLER_GET_METADATA_CHECK_INTERVAL", "1")
    assert tqi.default_fetch_timeout() == 1.0
    monkeypatch.setenv("TQ_CONTROLLER_GET_METADATA_TIMEOUT", "7")
    assert tqi.default_fetch_timeout() == 7.0
    monkeypatch.setenv("TQ_CONTROLLER_GET_METADATA_TIMEOUT", "soon")
    with pytest.raises(ValueError, match="TQ_CONTROLLER_GET_METADATA_TIMEOUT"):
        tqi.default_fetch_timeout()


def test_version_and_upstream_import_paths():
    cmake = (REPO / "CMakeLists.txt").read_text()
    assert tqi.__version__ == re.search(r"project\(tqds VERSION ([0-9.]+)", cmake).group(1)
    from transfer_queue.utils.zmq_utils import ZMQServerInfo as Z, process_zmq_server_info as p

    from transfer_queue.controller import process_zmq_server_info

    assert Z is ZMQServerInfo and p is process_zmq_server_info
    with pytest.raises(RuntimeError, match="init"):  # before init(), as upstream (test_checkpoint.py)
        tqi.save_checkpoint("/nonexistent")
    with pytest.raises(RuntimeError, match="init"):
        tqi.load_checkpoint("/nonexistent")
    assert tqi.get_metrics_endpoint() is None


def test_yuanrong_backend_starts_its_worker_and_close_stops_it(session):
    port = free_port()
    conf = tqi.init({"backend": {"storage_backend": "Yuanrong", "Yuanrong": {
        "worker_port": port, "worker_args": "--shared_memory_size_mb 128 --no_populate_memory"}}})
    s = tqi._current_session()
    worker_pid = s.ds_worker.pid
    session.append(worker_pid)
    assert pid_alive(worker_pid) and conf.backend.Yuanrong.worker_port == port
    client = tqi.get_client()
    part = unique("p")
    put_rows(client, part, n=3, start=5)
    got = run_child(f"""
        import json
        import transfer_queue.interface as tqi
        tqi.init()
        c = tqi.get_client()
        meta = c.get_meta(data_fields=["x"], batch_size=3, partition_id={part!r}, task_name="child")
        x = c.get_data(meta)["x"]
        tqi.close()
        print("RESULT " + json.dumps({{"x": x.tolist()}}))
    """)
    assert got["x"] == torch.arange(5, 11).reshape(3, 2).tolist()
    assert pid_alive(worker_pid)  # the attacher's close left it
    tqi.close()
    wait_until(lambda: not pid_alive(worker_pid), 30, f"datasystem worker {worker_pid} stopped by close")


# --------------------------------------------------------------------------- Ray

needs_ray = pytest.mark.skipif(ray is None, reason="Ray is not installed")


def _attach_in_ray_task(partition: str):
    """Runs in a Ray worker process: init() there attaches to the actor."""
    import transfer_queue.interface as tqi_

    ret = tqi_.init()
    s = tqi_._current_session()
    out = {"ret_is_none": ret is None, "owner": s.owner, "mode": s.mode,
           "partitions": tqi_.get_client().list_partitions()}
    meta = tqi_.get_client().get_meta(data_fields=["x"], batch_size=3, partition_id=partition, task_name="task")
    out["x"] = tqi_.get_client().get_data(meta)["x"].tolist()
    tqi_.close()
    return out


@needs_ray
def test_ray_init_names_the_actor_and_a_ray_task_attaches(local_ray_session, monkeypatch):
    monkeypatch.setenv(tqi.SESSION_ENV, unique("tqs"))  # must stay unused in Ray mode
    conf = tqi.init()
    pid = None
    try:
        s = tqi._current_session()
        assert s.mode == "ray" and s.owner
        pid = s.controller_pid
        actor = ray.get_actor("TransferQueueController", namespace="transfer_queue")
        assert ray.get(actor.get_zmq_server_info.remote()) == conf.controller.zmq_info
        assert ray.get(actor.get_config.remote()).controller.zmq_info == conf.controller.zmq_info
        assert not rendezvous_path().exists()
        part = unique("p")
        put_rows(tqi.get_client(), part, start=20)

        got = ray.get(ray.remote(num_cpus=0)(_attach_in_ray_task).remote(part), timeout=CHILD_TIMEOUT)
        assert got["ret_is_none"] and got["owner"] is False and got["mode"] == "ray"
        assert part in got["partitions"]
        assert got["x"] == torch.arange(20, 26).reshape(3, 2).tolist()
        assert pid_alive(pid)  # the task's close left the controller
        assert tqi.init() is None  # attaches in this process too
    finally:
        tqi.close()
        if pid:
            wait_until(lambda: not pid_alive(pid), 60, f"controller {pid} ended with the owner's close")

    def name_released() -> bool:
        try:
            ray.get_actor("TransferQueueController", namespace="transfer_queue")
        except ValueError:
            return True
        return False

    wait_until(name_released, 60, "the actor name was released")
    # init/close/init in one Ray session.
    tqi.init()
    try:
        assert tqi._current_session().controller_pid != pid
    finally:
        second = tqi._current_session().controller_pid
        tqi.close()
        wait_until(lambda: not pid_alive(second), 60, f"controller {second} ended")


@needs_ray
def test_ray_tutorial_cycle_init_close_shutdown_init():
    """upstream's tutorials: ray.init, tq.init, tq.close, ray.shutdown, then
    again, in one process (a child, so this test process's Ray is untouched)."""
    temp_dir = tempfile.mkdtemp(prefix="tqr_", dir="/tmp")  # short: Ray's unix sockets live under it
    try:
        got = _tutorial_cycle(temp_dir)
    finally:
        shutil.rmtree(temp_dir, ignore_errors=True)
    assert [r["x"] for r in got] == [[0, 0], [1, 1]]
    assert [r["partitions"] for r in got] == [["p"], ["p"]]
    for r in got:
        assert not pid_alive(r["pid"])


def _tutorial_cycle(temp_dir: str) -> list:
    return run_child(f"""
        import json, os
        os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
        os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # loopback node address
        import ray
        from ray._private import ray_constants
        import torch
        from tensordict import TensorDict
        import transfer_queue.interface as tqi

        ray_constants.ENABLE_RAY_CLUSTER = False
        out = []
        for round in range(2):
            ray.init(address="local", num_cpus=1, object_store_memory=128 * 1024 * 1024,
                     include_dashboard=False, _temp_dir={temp_dir!r}, log_to_driver=False)
            assert ray.util.get_node_ip_address() == "127.0.0.1"
            conf = tqi.init()
            c = tqi.get_client()
            c.put(TensorDict({{"x": torch.full((2, 1), round)}}, batch_size=[2]), partition_id="p")
            meta = c.get_meta(data_fields=["x"], batch_size=2, partition_id="p", task_name="t")
            out.append({{"x": c.get_data(meta)["x"].flatten().tolist(), "pid": tqi._current_session().controller_pid,
                        "partitions": c.list_partitions()}})
            tqi.close()
            ray.shutdown()
        print("RESULT " + json.dumps(out))
    """)
