"""The seed's single-node demo, its Trainer class as written.

Only change: the config's port is the test worker's port instead of 31501.

Where Ray is installed, the Trainer's `TransferQueueController.remote()` is a
Ray actor: these tests then run on the session's local Ray (test_ray.py's
`local_ray_session`: 127.0.0.1 only, no dashboard), and one of them runs the
Trainer itself as a Ray actor, as the seed says it can be.
"""

import pickle
import sys

import pytest
import torch
from omegaconf import OmegaConf

from tensordict import TensorDict
from transfer_queue import (
    TransferQueueClient,
    TransferQueueController,
    process_zmq_server_info,
)

from transfer_queue.controller import TransferQueueControllerHandle

from conftest import pid_alive, stop_controller, unique
from test_ray import as_tensor, kill_controller_actor, local_ray_session, node_ip, ray, wait_until  # noqa: F401

if ray is not None:
    @pytest.fixture(autouse=True)
    def _local_ray(local_ray_session):
        """TransferQueueController.remote() makes Ray actors here: start Ray
        first ourselves (loopback only), not by Ray's auto-init."""
        yield


def stop_tq_controller(handle) -> None:
    """Stops a controller from remote(): a Ray actor (ray.kill; its
    controller process ends with it) or a local handle."""
    if ray is not None and isinstance(handle, ray.actor.ActorHandle):
        kill_controller_actor(handle)
    else:
        stop_controller(handle)


def as_list(x) -> list:
    """A non-tensor field of get_data's output as a list (a list, a
    tensordict NonTensorStack, a numpy array of objects)."""
    if hasattr(x, "tolist") and not isinstance(x, (list, str)):
        x = x.tolist()
    return list(x)


# ---------------------------------------------------------------- seed code, as written
class Trainer:
    def __init__(self, config: dict):
        self.config = config
        self._initialize_transferqueue()

    def _initialize_transferqueue(self):
        # 1. Initialize TransferQueueController (single controller only)
        self.tq_controller = TransferQueueController.remote()

        # 2. Prepare necessary information of the controller
        self.tq_controller_info = process_zmq_server_info(self.tq_controller)

        tq_config = OmegaConf.create({}, flags={"allow_objects": True})  # Note: Need to generate a new DictConfig

        # with allow_objects=True to maintain ZMQServerInfo instance. Otherwise it will be flattened to dict
        tq_config.controller_info = self.tq_controller_info
        self.config = OmegaConf.merge(tq_config, self.config)

        # 3. Create TransferQueueClient
        self.tq_client = TransferQueueClient(
            client_id="Trainer",
            controller_info=self.tq_controller_info,
        )

        # 4. Connect to DataSystem
        self.tq_client.initialize_storage_manager(manager_type=self.config["manager_type"], config=self.config)

        return self.tq_client
# ---------------------------------------------------------------- end of seed code


SEED_CONFIG = """
  manager_type: YuanrongStorageManager
  client_name: YuanrongStorageClient
  host: 127.0.0.1
  port: 31501
"""


def run_seed_flow(dict_conf, partition_id="train_0"):
    # should import tensordict and torch
    data = TensorDict({"text": torch.Tensor([[1, 2], [3, 4]]), "prompt": ["5", "6"]}, batch_size=[2])

    trainer = Trainer(dict_conf)
    try:
        trainer.tq_client.put(data=data, partition_id=partition_id)

        # get_meta before get_data
        meta = trainer.tq_client.get_meta(
            data_fields=list(data.keys()),
            batch_size=data.size(0),
            partition_id=partition_id,
            task_name="generate_sequences",
        )

        output = trainer.tq_client.get_data(meta)
        print("output: ", output)
        return trainer, data, meta, output
    finally:
        stop_tq_controller(trainer.tq_controller)


def check_output(data, meta, output):
    assert len(meta) == 2
    assert sorted(meta.field_names) == ["prompt", "text"]
    assert set(output.keys()) == {"text", "prompt"}
    assert list(output.batch_size) == [2]
    assert isinstance(output["text"], torch.Tensor)
    assert output["text"].dtype == torch.float32
    assert output["text"].shape == (2, 2)
    assert torch.equal(output["text"], data["text"])
    assert as_list(output["prompt"]) == ["5", "6"]


def test_seed_single_node_yuanrong(ds_worker):
    dict_conf = OmegaConf.create(SEED_CONFIG, flags={"allow_objects": True})
    dict_conf.port = ds_worker.port
    trainer, data, meta, output = run_seed_flow(dict_conf)
    check_output(data, meta, output)
    # The payload went through the worker: it holds objects now.
    from datasystem import KVClient

    kv = KVClient(ds_worker.host, ds_worker.port)
    kv.init()
    assert kv.stats()["objects"] > 0


def test_seed_single_node_yuanrong_read_twice_other_task(ds_worker):
    """A second task reads the same samples; the first task cannot read them again."""
    dict_conf = OmegaConf.create(SEED_CONFIG, flags={"allow_objects": True})
    dict_conf.port = ds_worker.port
    data = TensorDict({"text": torch.Tensor([[1, 2], [3, 4]]), "prompt": ["5", "6"]}, batch_size=[2])
    trainer = Trainer(dict_conf)
    try:
        c = trainer.tq_client
        c.put(data=data, partition_id="train_0")
        m1 = c.get_meta(data_fields=["text", "prompt"], batch_size=2, partition_id="train_0",
                        task_name="generate_sequences")
        m2 = c.get_meta(data_fields=["text", "prompt"], batch_size=2, partition_id="train_0",
                        task_name="compute_reward")
        assert m1.global_indexes == m2.global_indexes
        check_output(data, m2, c.get_data(m2))
        again = c.get_meta(data_fields=["text"], batch_size=2, partition_id="train_0",
                           task_name="generate_sequences", mode="poll")
        assert len(again) == 0
    finally:
        stop_tq_controller(trainer.tq_controller)


def test_get_data_writable_gives_private_copies_and_storage_stays_intact(ds_worker):
    """writable=True gives private copies; the stored samples stay intact."""
    dict_conf = OmegaConf.create(SEED_CONFIG, flags={"allow_objects": True})
    dict_conf.port = ds_worker.port
    data = TensorDict({"text": torch.arange(8, dtype=torch.float32).reshape(2, 4)}, batch_size=[2])
    trainer = Trainer(dict_conf)
    try:
        c = trainer.tq_client
        c.put(data=data, partition_id="train_0")
        m1 = c.get_meta(data_fields=["text"], batch_size=2, partition_id="train_0", task_name="a")
        view = c.get_data(m1)["text"]
        assert torch.equal(view, data["text"])
        mine = c.get_data(m1, writable=True)["text"]
        mine.add_(100)
        assert torch.equal(mine, data["text"] + 100)
        assert torch.equal(view, data["text"])  # the stored sample is untouched
        m2 = c.get_meta(data_fields=["text"], batch_size=2, partition_id="train_0", task_name="b")
        assert torch.equal(c.get_data(m2)["text"], data["text"])
    finally:
        stop_tq_controller(trainer.tq_controller)


def test_in_place_ops_on_default_views_leave_the_stored_samples_intact(ds_worker):
    """The default zero-copy views are copy-on-write: in-place ops (also on
    torch's intra-op threads) work, and the stored samples never change."""
    dict_conf = OmegaConf.create(SEED_CONFIG, flags={"allow_objects": True})
    dict_conf.port = ds_worker.port
    n, width = 64, 64 * 1024  # 16 MiB of float32: a two-part put, many chunks
    obs = torch.randn(n, width)
    data = TensorDict({"obs": obs, "tag": torch.arange(n)}, batch_size=[n])
    trainer = Trainer(dict_conf)
    try:
        c = trainer.tq_client
        c.put(data=data, partition_id="train_0")
        m1 = c.get_meta(data_fields=["obs", "tag"], batch_size=n, partition_id="train_0", task_name="a")
        out = c.get_data(m1)
        view = out["obs"]
        assert torch.equal(view, obs)
        view.mul_(2).add_(1)  # would fault on read-only shared memory
        out["tag"][0] = -1
        assert torch.equal(view, obs * 2 + 1)
        assert out["tag"][0].item() == -1
        # Another task, and a second get of the same samples while the
        # written views live, see the stored bytes.
        m2 = c.get_meta(data_fields=["obs", "tag"], batch_size=n, partition_id="train_0", task_name="b")
        again = c.get_data(m2)
        assert torch.equal(again["obs"], obs)
        assert torch.equal(again["tag"], torch.arange(n))
        del out, view, again
        m3 = c.get_meta(data_fields=["obs"], batch_size=n, partition_id="train_0", task_name="c")
        assert torch.equal(c.get_data(m3)["obs"], obs)
    finally:
        stop_tq_controller(trainer.tq_controller)


def test_seed_single_node_simple_storage():
    dict_conf = OmegaConf.create({"manager_type": "SimpleStorageManager"}, flags={"allow_objects": True})
    _, data, meta, output = run_seed_flow(dict_conf, partition_id=unique("train"))
    check_output(data, meta, output)


def test_seed_config_as_plain_dict(ds_worker):
    """initialize_storage_manager also takes a plain dict config."""
    conf = {"manager_type": "YuanrongStorageManager", "client_name": "YuanrongStorageClient",
            "host": "127.0.0.1", "port": ds_worker.port}
    _, data, meta, output = run_seed_flow(conf)
    check_output(data, meta, output)


def test_seed_merged_config_controller_info_reaches_a_client(ds_worker):
    """The seed keeps controller_info in an allow_objects DictConfig "to maintain
    ZMQServerInfo instance", and its multi-node demo builds each actor's client
    from `self.config.controller_info`. That must work after the merge/copy."""
    dict_conf = OmegaConf.create(SEED_CONFIG, flags={"allow_objects": True})
    dict_conf.port = ds_worker.port
    trainer = Trainer(dict_conf)
    try:
        conf_reader = trainer.config.copy()
        other = TransferQueueClient(client_id="rollout", controller_info=conf_reader.controller_info)
        other.initialize_storage_manager(manager_type=conf_reader["manager_type"], config=conf_reader)
        partition = unique("train")
        trainer.tq_client.put(data=TensorDict({"x": torch.arange(3)}, batch_size=[3]), partition_id=partition)
        meta = other.get_meta(data_fields=["x"], batch_size=3, partition_id=partition, task_name="t")
        assert torch.equal(other.get_data(meta)["x"], torch.arange(3))
        assert isinstance(trainer.config.controller_info, type(trainer.tq_controller_info)), (
            "OmegaConf flattened ZMQServerInfo into a DictConfig")
    finally:
        stop_tq_controller(trainer.tq_controller)


def test_controller_remote_without_ray_is_a_local_process_on_loopback(monkeypatch):
    """Without Ray, TransferQueueController.remote() starts a controller
    process on 127.0.0.1 (with Ray it is an actor on the node's address);
    its server info pickles, and stop() ends the process. Where Ray is
    installed, this hides it (`import ray` fails)."""
    monkeypatch.setitem(sys.modules, "ray", None)
    handle = TransferQueueController.remote(storage_units=1)
    try:
        assert isinstance(handle, TransferQueueControllerHandle)
        assert pid_alive(handle.pid)
        info = process_zmq_server_info(handle)
        assert info.ip == "127.0.0.1"
        assert pickle.loads(pickle.dumps(info)) == info
        client = TransferQueueClient(client_id="c", controller_info=info)
        client.initialize_storage_manager(manager_type="SimpleStorageManager", config={})
        part = unique("p")
        client.put(data={"x": torch.arange(3)}, partition_id=part)
        meta = client.get_meta(data_fields=["x"], batch_size=3, partition_id=part, task_name="t")
        assert torch.equal(client.get_data(meta)["x"], torch.arange(3))
    finally:
        stop_controller(handle)
    assert not pid_alive(handle.pid)
    with pytest.raises(ImportError, match="Ray is not installed"):
        TransferQueueController.options(num_cpus=1).remote()


def test_local_controller_process_dies_with_its_python_process(tmp_path):
    """A local controller started from the main thread dies with the Python
    process that started it even when that process is SIGKILLed (no atexit):
    the child is started with PR_SET_PDEATHSIG."""
    import os
    import signal
    import subprocess
    import textwrap

    script = textwrap.dedent("""
        import sys
        sys.modules["ray"] = None  # a local controller even where Ray is installed
        import transfer_queue as tq
        h = tq.TransferQueueController.remote(storage_units=1, unit_capacity_mb=64)
        print(h.pid, flush=True)
        sys.stdin.readline()
    """)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    proc = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True, env=env)
    pid = None
    try:
        pid = int(proc.stdout.readline())
        assert pid_alive(pid)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        wait_until(lambda: not pid_alive(pid), 10, f"controller {pid} ended with its SIGKILLed parent")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if pid:
            from conftest import kill_pid

            kill_pid(pid)


def test_local_controller_handle_dropped_stops_the_process(monkeypatch):
    """As a Ray actor ends with its last handle, a local handle stops its
    process when it is garbage-collected."""
    import gc

    monkeypatch.setitem(sys.modules, "ray", None)
    handle = TransferQueueController.remote(storage_units=1, unit_capacity_mb=64)
    pid = handle.pid
    assert pid_alive(pid)
    del handle
    gc.collect()
    assert not pid_alive(pid)


@pytest.mark.skipif(ray is None, reason="Ray is not installed")
def test_seed_single_node_trainer_as_ray_actor(ds_worker):
    """"The class Trainer in the above code can also be used as a ray actor":
    the seed's Trainer (as written) as a Ray actor, its config (an
    allow_objects DictConfig) and data passed in, BatchMeta and the output
    passed back; the Trainer's own controller actor ends with the Trainer."""

    @ray.remote(num_cpus=0)
    class TrainerActor(Trainer):
        def put(self, data, partition_id):
            return self.tq_client.put(data=data, partition_id=partition_id)

        def get_meta(self, **kwargs):
            return self.tq_client.get_meta(**kwargs)

        def get_data(self, meta):
            return self.tq_client.get_data(meta)

        def controller_info(self):
            return self.tq_controller_info

        def controller_pid(self):
            return ray.get(self.tq_controller.get_pid.remote())

        def config_(self):
            return self.config

    dict_conf = OmegaConf.create(SEED_CONFIG, flags={"allow_objects": True})
    dict_conf.port = ds_worker.port
    # should import tensordict and torch
    data = TensorDict({"text": torch.Tensor([[1, 2], [3, 4]]), "prompt": ["5", "6"]}, batch_size=[2])

    trainer = TrainerActor.remote(dict_conf)
    pid = None
    try:
        pid = ray.get(trainer.controller_pid.remote())
        assert pid_alive(pid)
        info = ray.get(trainer.controller_info.remote())
        assert info.ip == node_ip()
        conf = ray.get(trainer.config_.remote())
        assert conf.controller_info == info and conf.port == ds_worker.port
        ray.get(trainer.put.remote(data=data, partition_id="train_0"))
        # get_meta before get_data
        meta = ray.get(trainer.get_meta.remote(
            data_fields=list(data.keys()),
            batch_size=data.size(0),
            partition_id="train_0",
            task_name="generate_sequences",
        ))
        output = ray.get(trainer.get_data.remote(meta))
        print("output: ", output)
        check_output(data, meta, output)
        # The driver reads the same samples through its own client, for another task.
        mine = TransferQueueClient(client_id="driver", controller_info=info)
        mine.initialize_storage_manager(manager_type=conf["manager_type"], config=conf)
        m2 = mine.get_meta(data_fields=["text"], batch_size=2, partition_id="train_0", task_name="other")
        assert torch.equal(as_tensor(mine.get_data(m2)["text"]), data["text"])
    finally:
        ray.kill(trainer)
    if pid:
        wait_until(lambda: not pid_alive(pid), 60, f"the Trainer's controller {pid} ended with the Trainer")


def test_local_handle_refuses_pickling_with_a_clear_error():
    import pickle

    import transfer_queue as tq

    handle = tq.TransferQueueControllerHandle(storage_units=1, unit_capacity_mb=64)
    try:
        with pytest.raises(TypeError, match="process_zmq_server_info"):
            pickle.dumps(handle)
        assert pickle.loads(pickle.dumps(tq.process_zmq_server_info(handle))) == handle.info
    finally:
        stop_controller(handle)
