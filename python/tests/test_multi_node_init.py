"""Our transfer_queue.init() on a two-node Ray cluster with the Yuanrong
backend and auto_init, as upstream's bootstrap deploys it: one datasystem
worker per node, started by an actor on that node through `dscli` in
metastore mode (the driver's node serves the metastore; no etcd), a writer
actor on the second node putting through its own node's worker, the driver
reading on the head node (the bytes cross through the workers), and close()
stopping both workers.

The two nodes are two network namespaces joined by a veth pair, each a Ray
node (`ray start`, test_multi_node.py's RayCluster with this venv's Ray and
package). Every process in them is stopped by pid at the end (also on
failure) and the namespaces are deleted. Needs root, iproute2 and Ray;
skipped with the reason otherwise.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time

import pytest

from test_multi_node import HEAD_NODE_IP, RAY_PORT, WORKER_NODE_IP, LineReader, NetnsPair, RayCluster, cmdline, \
    fresh_netns_pair, node_env, ray_executable

WORKER_PORT, METASTORE_PORT = 31501, 2379
TIMEOUT_S = 240

DRIVER = textwrap.dedent("""
    import json, sys, time
    import ray, torch
    from tensordict import TensorDict
    import transfer_queue as tq

    head, worker, ray_address, worker_port, metastore_port = sys.argv[1:6]
    ray.init(address=ray_address)
    deadline = time.monotonic() + 60
    while len([n for n in ray.nodes() if n["Alive"]]) < 2:
        assert time.monotonic() < deadline, "the second Ray node did not join"
        time.sleep(0.2)
    tq.init({"backend": {"storage_backend": "Yuanrong", "Yuanrong": {
        "auto_init": True, "worker_port": int(worker_port), "metastore_port": int(metastore_port),
        "worker_args": "--shared_memory_size_mb 256"}}})
    print("UP", flush=True)
    sys.stdin.readline()  # the test has looked at the workers

    @ray.remote(num_cpus=0, resources={f"node:{worker}": 0.001})
    def write(keys, partition):
        import torch
        from tensordict import TensorDict
        import transfer_queue as tq
        from transfer_queue.controller import _default_host
        tq.init()  # attaches to the driver's controller (its Ray actor)
        data = TensorDict({"x": torch.arange(4 * 262144, dtype=torch.float32).reshape(4, 262144),
                           "s": [f"s{i}" for i in range(4)]}, batch_size=[4])
        tq.kv_batch_put(keys, partition, fields=data)
        return _default_host()

    keys = [f"k{i}" for i in range(4)]
    writer_ip = ray.get(write.remote(keys, "p"))
    got = tq.kv_batch_get(keys, "p")
    expected = torch.arange(4 * 262144, dtype=torch.float32).reshape(4, 262144)
    same = bool(torch.equal(got["x"], expected)) and list(got["s"]) == [f"s{i}" for i in range(4)]
    tq.kv_clear(keys, "p")
    print("RESULT " + json.dumps({"writer_ip": writer_ip, "same": same}), flush=True)
    tq.close()
    print("CLOSED", flush=True)
    ray.shutdown()
""")


@pytest.fixture
def netns_pair():
    if ray_executable() is None:
        pytest.skip("the `ray` command is not beside this Python nor on PATH")
    with fresh_netns_pair() as pair:
        yield pair


def workers_in(pair: NetnsPair, ns: str) -> dict[int, list[str]]:
    return {pid: cmdline(pid) for pid in pair.pids(ns) if any("datasystem_worker" in a for a in cmdline(pid)[:1])}


def test_init_starts_a_worker_per_node_in_metastore_mode(netns_pair, tmp_path):
    pair = netns_pair
    cluster = RayCluster(pair, set(), env=node_env(), num_cpus=2)
    driver = None
    try:
        cluster.start_node(pair.a, HEAD_NODE_IP, head=True)
        cluster.start_node(pair.b, WORKER_NODE_IP, head=False)
        (tmp_path / "driver.py").write_text(DRIVER)
        log = open(tmp_path / "driver.log", "w")
        driver = subprocess.Popen(
            pair.exec(pair.a) + [sys.executable, str(tmp_path / "driver.py"), HEAD_NODE_IP, WORKER_NODE_IP,
                                 f"{HEAD_NODE_IP}:{RAY_PORT}", str(WORKER_PORT), str(METASTORE_PORT)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True, env=cluster.env, cwd=tmp_path)
        out = LineReader(driver.stdout)

        def failed(what):
            log.flush()
            return f"{what}:\n{''.join(out.lines)}\n{(tmp_path / 'driver.log').read_text()[-4000:]}"

        deadline = time.monotonic() + TIMEOUT_S
        assert out.wait_for("UP", deadline) is not None, failed("tq.init did not come up")
        in_a, in_b = workers_in(pair, pair.a), workers_in(pair, pair.b)
        assert len(in_a) == 1 and len(in_b) == 1, f"one worker per node expected: {in_a} {in_b}"
        (head_pid, head_args), = in_a.items()
        (node_pid, node_args), = in_b.items()
        metastore = f"--metastore_address={HEAD_NODE_IP}:{METASTORE_PORT}"
        assert f"--worker_address={HEAD_NODE_IP}:{WORKER_PORT}" in head_args and metastore in head_args, head_args
        assert "--start_metastore_service=true" in head_args, head_args
        assert f"--worker_address={WORKER_NODE_IP}:{WORKER_PORT}" in node_args and metastore in node_args, node_args
        assert "--start_metastore_service=true" not in node_args, node_args

        driver.stdin.write("go\n")
        driver.stdin.flush()
        result = out.wait_for("RESULT ", deadline)
        assert result is not None, failed("no result")
        result = json.loads(result)
        assert result["writer_ip"] == WORKER_NODE_IP, result
        assert result["same"], "the bytes read on the head node differ from those written on the other"
        assert out.wait_for("CLOSED", deadline) is not None, failed("tq.close did not finish")
        driver.wait(60)
        assert driver.returncode == 0, failed(f"the driver exited {driver.returncode}")
        stop_by = time.monotonic() + 30
        while time.monotonic() < stop_by and (workers_in(pair, pair.a) or workers_in(pair, pair.b)):
            time.sleep(0.1)
        assert not workers_in(pair, pair.a) and not workers_in(pair, pair.b), "close() left a worker running"
    finally:
        if driver is not None and driver.poll() is None:
            driver.kill()
            driver.wait()
        cluster.stop()  # every process left in the two namespaces, by pid; the fixture deletes them
