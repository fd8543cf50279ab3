"""Ray, for real: TransferQueueController.remote() is a Ray actor where Ray
is installed; handles, BatchMeta, ZMQServerInfo and allow_objects OmegaConf
configs cross Ray as actor arguments and as return values; the controller
process inside the actor lives exactly as long as the actor.

Ray runs locally in the test process (`ray.init(address="local")`, one per
pytest session, shared with test_seed_single_node.py through
`local_ray_session`), on 127.0.0.1 only: RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0
makes Ray keep the loopback node address (by default it replaces 127.0.0.1
with the host's routable address, and its servers bind that), no dashboard,
no usage stats, one CPU, a 256 MB object store, its own temp dir. Skipped
where Ray is not installed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
import time

import pytest
import torch
from omegaconf import DictConfig, OmegaConf

import transfer_queue as tq
from transfer_queue import (
    TransferQueueClient,
    TransferQueueController,
    ZMQServerInfo,
    process_zmq_server_info,
)

from conftest import pid_alive, unique

from tensordict import TensorDict

try:
    import ray
except ImportError:  # pragma: no cover
    ray = None

RAY_OBJECT_STORE_BYTES = 256 * 1024 * 1024


# ------------------------------------------------------------------ a local Ray for the session

_RAY = {"users": 0, "temp_dir": None, "env": None, "atexit": False}


def _worker_pythonpath() -> str:
    """The test process's own import path (the build tree's package and
    extension, the test directory for the actor classes defined in test
    modules), without the interpreter's own directories, which Ray's workers
    have anyway."""
    own = {os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)}
    keep = []
    for p in sys.path:
        if not p or not os.path.isdir(p):
            continue
        rp = os.path.realpath(p)
        if any(rp == o or rp.startswith(o + os.sep) for o in own):
            continue
        if rp not in keep:
            keep.append(rp)
    return os.pathsep.join(keep)


def start_local_ray() -> None:
    """Starts the session's local Ray (once; later calls share it)."""
    if ray is None:
        pytest.skip("Ray is not installed")
    _RAY["users"] += 1
    if _RAY["temp_dir"] is not None or _RAY.get("foreign"):
        return
    if ray.is_initialized():
        # Someone else's in this process (e.g. Ray's auto-init from a
        # TransferQueueController.remote() elsewhere): use it as it is rather
        # than end the actors living in it.
        import warnings

        warnings.warn("Ray was already initialised in the test process; the Ray tests use that instance")
        _RAY["foreign"] = True
        return
    env = {
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",  # node address 127.0.0.1, servers on loopback
        "PYTHONPATH": os.pathsep.join(p for p in (_worker_pythonpath(), os.environ.get("PYTHONPATH", "")) if p),
    }
    _RAY["env"] = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # Ray's processes (and so its workers) inherit this process's environment
    # Ray read RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER when it was imported; this
    # process picks the node address itself, so tell it too.
    from ray._private import ray_constants

    _RAY["cluster_flag"] = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False
    # A short path: Ray's unix sockets live under it.
    _RAY["temp_dir"] = tempfile.mkdtemp(prefix="tqray_", dir="/tmp")
    try:
        ray.init(address="local", num_cpus=1, object_store_memory=RAY_OBJECT_STORE_BYTES,
                 include_dashboard=False, _temp_dir=_RAY["temp_dir"], log_to_driver=True)
    except BaseException:
        _shutdown_local_ray()
        raise
    node_ip = ray.util.get_node_ip_address()
    if node_ip != "127.0.0.1":
        _shutdown_local_ray()
        pytest.fail(f"the local Ray took the node address {node_ip}, not 127.0.0.1")
    if not _RAY["atexit"]:
        import atexit

        atexit.register(_shutdown_local_ray)
        _RAY["atexit"] = True


def stop_local_ray() -> None:
    _RAY["users"] -= 1
    if _RAY["users"] <= 0:
        _shutdown_local_ray()


def node_ip() -> str:
    """The node address of the test process's Ray: 127.0.0.1 when the Ray is ours."""
    return ray.util.get_node_ip_address()


def _shutdown_local_ray() -> None:
    _RAY["users"] = 0
    if _RAY.pop("foreign", False):
        return
    if ray is not None and ray.is_initialized():
        ray.shutdown()
    if "cluster_flag" in _RAY:
        from ray._private import ray_constants

        ray_constants.ENABLE_RAY_CLUSTER = _RAY.pop("cluster_flag")
    for k, v in (_RAY["env"] or {}).items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    _RAY["env"] = None
    if _RAY["temp_dir"]:
        shutil.rmtree(_RAY["temp_dir"], ignore_errors=True)
    _RAY["temp_dir"] = None


@pytest.fixture(scope="session")
def local_ray_session():
    """The session's local Ray (started on first use)."""
    t0 = time.monotonic()
    start_local_ray()
    print(f"local Ray started in {time.monotonic() - t0:.1f} s")
    try:
        yield ray
    finally:
        stop_local_ray()


# ------------------------------------------------------------------ helpers

def wait_until(cond, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting until {what}")
        time.sleep(0.1)


def controller_pid(handle) -> int:
    return ray.get(handle.get_pid.remote())


def kill_controller_actor(handle, timeout: float = 30) -> None:
    """ray.kill, then wait for the controller process to be gone."""
    pid = None
    with contextlib.suppress(Exception):
        pid = controller_pid(handle)
    ray.kill(handle)
    if pid:
        wait_until(lambda: not pid_alive(pid), timeout, f"controller process {pid} ended after ray.kill")


def simple_client(info, client_id=None) -> TransferQueueClient:
    c = TransferQueueClient(client_id=client_id or unique("c"), controller_info=info)
    c.initialize_storage_manager(manager_type="SimpleStorageManager", config={})
    return c


def as_tensor(x) -> torch.Tensor:
    """A field of get_data's output as a dense tensor (whatever the container)."""
    if isinstance(x, torch.Tensor) and getattr(x, "is_nested", False):
        return torch.stack(list(x.unbind()))
    return x if isinstance(x, torch.Tensor) else torch.as_tensor(x)


# ------------------------------------------------------------------ actors used by the tests

@ray.remote(num_cpus=0) if ray is not None else (lambda c: c)
class Peer:
    """Gets a controller handle and an allow_objects config as actor
    arguments, and hands handles, configs, infos and BatchMetas back."""

    def __init__(self, controller, config):
        self.controller_handle = controller
        self.config = config
        self.info_from_handle = process_zmq_server_info(controller)
        self.client = TransferQueueClient(client_id="peer", controller_info=config.controller_info)
        self.client.initialize_storage_manager(manager_type=config["manager_type"], config=config)

    def describe(self) -> dict:
        return {
            "config_type": type(self.config).__name__,
            "allow_objects": self.config._get_flag("allow_objects"),
            "info_type": type(self.config.controller_info).__name__,
            "info": self.config.controller_info,
            "info_from_handle": self.info_from_handle,
            "node_ip": ray.util.get_node_ip_address(),
        }

    def echo(self, x):
        return x

    def type_name(self, x) -> str:
        return f"{type(x).__module__}.{type(x).__qualname__}"

    def controller(self):
        return self.controller_handle

    def make_config(self):
        cfg = OmegaConf.create({"manager_type": "SimpleStorageManager"}, flags={"allow_objects": True})
        cfg.controller_info = process_zmq_server_info(self.controller_handle)
        return cfg

    def put(self, data, partition_id):
        return self.client.put(data=data, partition_id=partition_id)

    def get_meta(self, **kwargs):
        return self.client.get_meta(**kwargs)

    def get_data(self, meta):
        return self.client.get_data(meta)


@ray.remote(num_cpus=0) if ray is not None else (lambda c: c)
class ControllerOwner:
    """An actor that owns a controller actor (as the seed's Trainer actor does)."""

    def __init__(self):
        self.controller = TransferQueueController.remote(storage_units=1, unit_capacity_mb=64)
        self.info = process_zmq_server_info(self.controller)

    def controller_pid(self) -> int:
        return ray.get(self.controller.get_pid.remote())

    def info_(self):
        return self.info


# ------------------------------------------------------------------ tests

pytestmark = pytest.mark.skipif(ray is None, reason="Ray is not installed")


def test_controller_remote_is_a_ray_actor_on_the_node_address(local_ray_session):
    handle = TransferQueueController.remote(storage_units=1, unit_capacity_mb=64)
    try:
        assert isinstance(handle, ray.actor.ActorHandle)
        info = process_zmq_server_info(handle)
        assert isinstance(info, ZMQServerInfo)
        assert info.ip == node_ip()
        assert process_zmq_server_info({"ctl": handle}) == {"ctl": info}
        pid = controller_pid(handle)
        assert pid_alive(pid)
        assert ray.get(handle.is_alive.remote())
        # The driver reaches the actor's controller; data round-trips.
        c = simple_client(info)
        part = unique("p")
        c.put(data=TensorDict({"x": torch.arange(6).reshape(3, 2)}, batch_size=[3]), partition_id=part)
        meta = c.get_meta(data_fields=["x"], batch_size=3, partition_id=part, task_name="t")
        assert torch.equal(as_tensor(c.get_data(meta)["x"]), torch.arange(6).reshape(3, 2))
    finally:
        kill_controller_actor(handle)  # ray.kill is SIGKILL to the actor: PDEATHSIG ends the controller


def test_controller_process_ends_when_the_last_handle_goes(local_ray_session):
    handle = TransferQueueController.remote(storage_units=1, unit_capacity_mb=64)
    pid = controller_pid(handle)
    assert pid_alive(pid)
    del handle  # Ray ends an actor whose handles are all gone
    wait_until(lambda: not pid_alive(pid), 60, f"controller process {pid} ended with its last handle")


def test_controller_stop_through_the_actor(local_ray_session):
    handle = TransferQueueController.remote(storage_units=1, unit_capacity_mb=64)
    try:
        pid = controller_pid(handle)
        ray.get(handle.stop.remote())
        assert not pid_alive(pid)
        assert ray.get(handle.is_alive.remote()) is False
        ray.get(handle.stop.remote())  # idempotent
    finally:
        ray.kill(handle)


def test_controller_ends_with_the_actor_that_owns_it(local_ray_session):
    owner = ControllerOwner.remote()
    pid = ray.get(owner.controller_pid.remote())
    info = ray.get(owner.info_.remote())
    assert pid_alive(pid) and info.ip == node_ip()
    ray.kill(owner)  # Ray ends the actors an actor owns with it
    wait_until(lambda: not pid_alive(pid), 60, f"controller process {pid} ended with its owner")


def test_controller_options_place_the_actor(local_ray_session):
    node = f"node:{ray.util.get_node_ip_address()}"
    handle = TransferQueueController.options(resources={node: 0.001}, name=unique("tqctl")).remote(
        storage_units=1, unit_capacity_mb=64)
    try:
        assert process_zmq_server_info(handle).ip == node_ip()
    finally:
        kill_controller_actor(handle)


def test_handles_meta_and_configs_cross_ray_both_ways(local_ray_session):
    """Actor arguments: an ActorHandle (the controller) and an allow_objects
    DictConfig holding a ZMQServerInfo. Return values: the handle, a fresh
    allow_objects config with a ZMQServerInfo, a ZMQServerInfo, BatchMetas.
    Each side then uses what it got."""
    controller = TransferQueueController.remote(storage_units=1, unit_capacity_mb=64)
    try:
        info = process_zmq_server_info(controller)
        cfg = OmegaConf.create({"manager_type": "SimpleStorageManager"}, flags={"allow_objects": True})
        cfg.controller_info = info
        assert isinstance(cfg.controller_info, ZMQServerInfo)

        peer = Peer.remote(controller, cfg)
        d = ray.get(peer.describe.remote())
        # driver -> actor: the config stayed an allow_objects DictConfig holding the object
        assert d["config_type"] == "DictConfig"
        assert d["allow_objects"] is True
        assert d["info_type"] == "ZMQServerInfo"
        assert d["info"] == info and d["info_from_handle"] == info
        # actor -> driver: a config made there
        cfg2 = ray.get(peer.make_config.remote())
        assert isinstance(cfg2, DictConfig) and cfg2._get_flag("allow_objects") is True
        assert isinstance(cfg2.controller_info, ZMQServerInfo) and cfg2.controller_info == info
        # ... and back again, merged as the seed merges it
        merged = OmegaConf.merge(OmegaConf.create({}, flags={"allow_objects": True}), cfg2)
        assert ray.get(peer.type_name.remote(merged.controller_info)) == "transfer_queue.controller.ZMQServerInfo"
        # ZMQServerInfo both ways
        back = ray.get(peer.echo.remote(info))
        assert isinstance(back, ZMQServerInfo) and back == info
        # the controller handle, returned by the actor, still drives the same controller
        h2 = ray.get(peer.controller.remote())
        assert isinstance(h2, ray.actor.ActorHandle)
        assert process_zmq_server_info(h2) == info
        assert controller_pid(h2) == controller_pid(controller)

        me = simple_client(info, "driver")
        part = unique("p")
        x = torch.arange(12, dtype=torch.float32).reshape(4, 3)
        # BatchMeta actor -> driver: the peer puts and returns the put's meta
        put_meta = ray.get(peer.put.remote(TensorDict({"x": x}, batch_size=[4]), part))
        assert isinstance(put_meta, tq.BatchMeta) and put_meta.global_indexes == [0, 1, 2, 3]
        assert ray.get(peer.type_name.remote(put_meta)) == "transfer_queue.metadata.BatchMeta"
        assert ray.get(peer.echo.remote(put_meta)) == put_meta
        assert ray.get(ray.put(put_meta)) == put_meta
        # BatchMeta actor -> driver: get_meta there, get_data here
        m_peer = ray.get(peer.get_meta.remote(data_fields=["x"], batch_size=4, partition_id=part,
                                              task_name="driver_reads"))
        assert isinstance(m_peer, tq.BatchMeta) and len(m_peer) == 4
        assert torch.equal(as_tensor(me.get_data(m_peer)["x"]), x)
        # BatchMeta driver -> actor: get_meta here, get_data there, the data back here
        m_me = me.get_meta(data_fields=["x"], batch_size=2, partition_id=part, task_name="peer_reads")
        got = ray.get(peer.get_data.remote(m_me))
        assert torch.equal(as_tensor(got["x"]), x[:2])
        # the config made by the driver also builds a client in a plain task
        @ray.remote(num_cpus=0)
        def read_with(conf, meta):
            c = TransferQueueClient(client_id="task", controller_info=conf.controller_info)
            c.initialize_storage_manager(manager_type=conf["manager_type"], config=conf)
            return c.get_data(meta)

        assert torch.equal(as_tensor(ray.get(read_with.remote(cfg, m_me))["x"]), x[:2])
        ray.kill(peer)
    finally:
        kill_controller_actor(controller)


def test_a_failing_controller_start_surfaces_through_process_zmq_server_info(local_ray_session):
    """An actor whose controller cannot start (an address Ray's node does not
    have) raises from process_zmq_server_info with the controller's reason,
    and leaves no process behind."""
    handle = TransferQueueController.remote(host="198.51.100.254", storage_units=1, unit_capacity_mb=64)
    with pytest.raises(ray.exceptions.RayActorError, match="controller failed to start"):
        process_zmq_server_info(handle)
