"""The seed's multi-node demo (its Appendix B), run as written on a real
two-node Ray cluster: two network namespaces on this machine stand for the
two nodes, joined by a veth pair; their addresses exist only inside them.

    namespace A, the head node (HEAD_NODE_IP): etcd, a datasystem worker
        (`dscli start -w --worker_address HEAD:31501 --etcd_address HEAD:2379`),
        `ray start --head --resources='{"node:HEAD": 1}'`, and the driver (the
        seed's script, run with `ip netns exec A python driver.py`)
    namespace B, the work node (WORKER_NODE_IP): a datasystem worker joined
        through the head's etcd, `ray start --address=HEAD:6379
        --resources='{"node:WORKER": 1}'`

The seed's TransferQueueController.remote() starts the controller inside Ray
(an actor listening on its node's address); the writer actor is pinned to the
head node and the reader to the work node with resources={f"node:{IP}":
0.001}, as written; the reader must get the writer's bytes exactly.

Differences from the seed, all outside its code:
- every `ray start` also gets --node-ip-address (the namespace's address),
  --num-cpus=1, a 200 MB object store, --include-dashboard=false (head only),
  --disable-usage-stats (and RAY_USAGE_STATS_ENABLED=0) and a temp dir of its
  own (so nothing is written to /tmp/ray, where another `ray.init()` on this
  machine would find it);
- every node and the driver run with RAY_AUTH_MODE=token and a token made
  by the test (RAY_AUTH_TOKEN): Ray turns token authentication on for a head
  node when ~/.ray/auth_token exists, but a node joining with `ray start
  --address` does not look for it unless RAY_AUTH_MODE=token, and then
  cannot connect;
- the driver calls ray.init(address=HEAD:6379) and waits for both nodes
  before main() (the seed assumes a running cluster and Ray's auto-init);
- main() gets one added line at its end, `return data, output,
  dict_conf.controller_info`, so that the test can compare the bytes and
  check that the controller process is gone once main()'s handle is;
- the seed's IPs are replaced by the namespaces' ones.

Binding: Ray's gcs_server, raylet, core workers and the two Prometheus
metrics servers (autoscaler 44217, dashboard 44227) bind the wildcard address
for a non-loopback node address, and this Ray has no flag to change that;
inside a namespace the wildcard covers only its loopback and veth address.
The Ray client server binds the node address and 127.0.0.1; etcd, the
datasystem workers and the tq controller bind the node address only (checked).

Teardown, also on failure: every process in the two namespaces is ours, so
each is stopped by pid (`ip netns pids`: SIGTERM, then SIGKILL): the Ray
processes of both nodes first, then the datasystem workers (`dscli stop`,
then their pids) and etcd, then the namespaces are deleted. `ray stop` is
not run: it stops every Ray process on the machine by name (psutil), not
those of one namespace, and would stop other users' Ray on this machine.

Needs root (ip netns), iproute2, etcd, curl, Ray, and a datasystem worker
with a cluster mode; skipped with the reason otherwise. TQDS_CLUSTER_TESTS=1
forces the cluster-mode check to pass, TQDS_CLUSTER_TESTS=0 skips.
"""

import contextlib
import json
import os
import queue
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import uuid

import pytest
import torch

from conftest import DsWorker, deployment_keys, kill_pid, pid_alive
from test_ray import _worker_pythonpath

HEAD_NODE_IP = "10.200.0.1"
WORKER_NODE_IP = "10.200.0.2"
DS_PORT = 31501
ETCD_PORT = 2379
RAY_PORT = 6379
RAY_OBJECT_STORE_BYTES = 200 * 1024 * 1024
RAY_START_TIMEOUT = 120


def cluster_support() -> tuple[bool, str]:
    env = os.environ.get("TQDS_CLUSTER_TESTS")
    if env == "0":
        return False, "TQDS_CLUSTER_TESTS=0"
    if env == "1":
        return True, ""
    r = subprocess.run(["dscli", "start", "-h"], capture_output=True, text=True, timeout=30)
    text = (r.stdout + r.stderr).lower()
    if "cluster" not in text:
        return False, ("the datasystem worker has no cluster mode yet (issue 4: `dscli start -h` does not "
                       "mention a cluster); set TQDS_CLUSTER_TESTS=1 to run anyway")
    return True, ""


def ray_executable() -> str | None:
    """The `ray` beside this interpreter (a venv's console script), else on PATH."""
    beside = os.path.join(os.path.dirname(sys.executable), "ray")
    return beside if os.access(beside, os.X_OK) else shutil.which("ray")


def run(*cmd, check=True, timeout=30):
    return subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout, check=check)


def stop_pids(pids, timeout: float = 5.0) -> None:
    """SIGTERM to each pid, then SIGKILL to those still alive after `timeout`."""
    pids = [p for p in pids if pid_alive(p)]
    for p in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(p, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(pid_alive(p) for p in pids):
        time.sleep(0.05)
    for p in pids:
        if pid_alive(p):
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, signal.SIGKILL)


def cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return []


class NetnsPair:
    def __init__(self):
        tag = uuid.uuid4().hex[:8]  # unique per run: parallel runs never share a name
        self.a, self.b = f"tqrayA{tag}", f"tqrayB{tag}"
        self.va, self.vb = f"tqva{tag}", f"tqvb{tag}"
        self.created = []

    def exec(self, ns):
        return ["ip", "netns", "exec", ns]

    def pids(self, ns) -> list[int]:
        r = run("ip", "netns", "pids", ns, check=False)
        return [int(p) for p in r.stdout.split() if p.isdigit()]

    def up(self):
        for ns in (self.a, self.b):
            run("ip", "netns", "add", ns)
            self.created.append(ns)
        run("ip", "link", "add", self.va, "type", "veth", "peer", "name", self.vb)
        for ns, dev, ip in ((self.a, self.va, HEAD_NODE_IP), (self.b, self.vb, WORKER_NODE_IP)):
            run("ip", "link", "set", dev, "netns", ns)
            run("ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", dev)
            run("ip", "-n", ns, "link", "set", dev, "up")
            run("ip", "-n", ns, "link", "set", "lo", "up")

    def down(self):
        for ns in self.created:  # whatever still runs in them is ours
            stop_pids(self.pids(ns))
        for ns in self.created:
            run("ip", "netns", "del", ns, check=False)
        run("ip", "link", "del", self.va, check=False)  # if it never moved into a namespace
        self.created = []


@contextlib.contextmanager
def fresh_netns_pair(default_route: bool = False):
    """Two new namespaces joined by a veth pair (skips, with the reason,
    without root, iproute2 or permission for `ip netns`), deleted at the end.
    default_route: each also gets a default route through its veth (for code
    that finds its address by a UDP connect; nothing leaves the veth).
    Every process started meanwhile authenticates with a fresh key set
    (deployment_keys): the namespaces' addresses are not loopback."""
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    if shutil.which("ip") is None:
        pytest.skip("`ip` (iproute2) is not installed")
    pair = NetnsPair()
    probe = subprocess.run(["ip", "netns", "add", pair.a], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"no permission for `ip netns add`: {probe.stderr.strip()}")
    run("ip", "netns", "del", pair.a)
    try:
        pair.up()
        if default_route:
            for ns, dev in ((pair.a, pair.va), (pair.b, pair.vb)):
                run("ip", "-n", ns, "route", "add", "default", "dev", dev)
        with deployment_keys():
            yield pair
    finally:
        pair.down()


@pytest.fixture(scope="module")
def netns_pair():
    ok, why = cluster_support()
    if not ok:
        pytest.skip(why)
    for tool in ("etcd", "curl"):
        if shutil.which(tool) is None:
            pytest.skip(f"`{tool}` is not installed")
    try:
        import ray  # noqa: F401
    except ImportError:
        pytest.skip("Ray is not installed")
    if ray_executable() is None:
        pytest.skip("the `ray` command is not beside this Python nor on PATH")
    with fresh_netns_pair() as pair:
        yield pair


@pytest.fixture(scope="module")
def etcd_on_head(netns_pair, tmp_path_factory):
    d = tmp_path_factory.mktemp("etcd")
    url_c = f"http://{HEAD_NODE_IP}:{ETCD_PORT}"
    url_p = f"http://{HEAD_NODE_IP}:{ETCD_PORT + 1}"
    log = open(d / "etcd.log", "w")
    # The seed's etcd command.
    proc = subprocess.Popen(netns_pair.exec(netns_pair.a) + [
        "etcd", "--name", "etcd-single", "--data-dir", str(d / "data"),
        "--listen-client-urls", url_c, "--advertise-client-urls", url_c,
        "--listen-peer-urls", url_p, "--initial-advertise-peer-urls", url_p,
        "--initial-cluster", f"etcd-single={url_p}"], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:  # readiness: etcd's health endpoint, from inside namespace A
            r = subprocess.run(netns_pair.exec(netns_pair.a) + ["curl", "-s", "-m", "2", f"{url_c}/health"],
                               capture_output=True, text=True)
            if '"health":"true"' in r.stdout.replace(" ", ""):
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"etcd did not become healthy: {(d / 'etcd.log').read_text()[-2000:]}")
            time.sleep(0.1)
        yield f"{HEAD_NODE_IP}:{ETCD_PORT}", proc.pid
    finally:
        kill_pid(proc.pid)
        with contextlib.suppress(Exception):
            proc.wait(5)
        log.close()


@pytest.fixture(scope="module")
def two_workers(netns_pair, etcd_on_head):
    """The seed's `dscli start -w --worker_address IP:31501 --etcd_address HEAD:2379`
    in each namespace; `dscli start` returns once the worker serves."""
    etcd_address, _ = etcd_on_head
    workers = []
    try:
        for ns, ip in ((netns_pair.a, HEAD_NODE_IP), (netns_pair.b, WORKER_NODE_IP)):
            workers.append(DsWorker(host=ip, port=DS_PORT, netns=netns_pair.exec(ns), etcd_address=etcd_address,
                                    shared_memory_mb=256))
        yield workers
    finally:
        for w in workers:
            w.stop()


def node_env() -> dict:
    """The environment of the Ray nodes and the driver: this test's package
    and extension importable (Ray's workers inherit the raylet's
    environment), `ray`, `tq` and `dscli` on PATH, no usage stats, and
    nothing left over from a local Ray in this process."""
    env = dict(os.environ)
    for k in ("RAY_ADDRESS", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"):
        env.pop(k, None)
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    # Token authentication with a token of this test's own, on every node
    # and the driver (a node joining with `ray start --address` does not turn
    # token mode on by itself, and ~/.ray/auth_token is left alone).
    env["RAY_AUTH_MODE"] = "token"
    env["RAY_AUTH_TOKEN"] = secrets.token_hex(32)
    env.pop("RAY_AUTH_TOKEN_PATH", None)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (_worker_pythonpath(), os.environ.get("PYTHONPATH", "")) if p)
    path = env.get("PATH", "").split(os.pathsep)
    if os.path.dirname(sys.executable) not in path:  # after the build's bin/, which conftest put first
        path.append(os.path.dirname(sys.executable))
    env["PATH"] = os.pathsep.join(path)
    return env


class RayCluster:
    """Ray nodes started with `ray start` in the namespaces; stop() stops
    every process in them but `keep_pids`, by pid. `ray` and `env` default to
    this venv's `ray` and node_env(); test_upstream_yuanrong.py passes the
    peer venv's."""

    def __init__(self, pair: NetnsPair, keep_pids: set[int], ray: str | None = None, env: dict | None = None,
                 num_cpus: int = 1):
        self.pair = pair
        self.keep = keep_pids  # etcd and the datasystem workers: their fixtures stop them
        self.temp_dirs = []
        self.logs = {}
        self.env = env if env is not None else node_env()
        self.ray = ray or ray_executable()
        self.num_cpus = num_cpus

    def start_node(self, ns: str, ip: str, head: bool) -> float:
        temp_dir = tempfile.mkdtemp(prefix="tqray_", dir="/tmp")  # short: Ray's unix sockets live under it
        self.temp_dirs.append(temp_dir)
        cmd = self.pair.exec(ns) + [self.ray, "start"]
        cmd += ["--head", f"--port={RAY_PORT}", "--include-dashboard=false"] if head else \
            [f"--address={HEAD_NODE_IP}:{RAY_PORT}"]
        cmd += [f"--node-ip-address={ip}", "--resources=" + json.dumps({f"node:{ip}": 1}),
                f"--num-cpus={self.num_cpus}", f"--object-store-memory={RAY_OBJECT_STORE_BYTES}",
                "--disable-usage-stats", f"--temp-dir={temp_dir}"]
        t0 = time.monotonic()
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=RAY_START_TIMEOUT, env=self.env)
        self.logs[ns] = r.stdout + r.stderr
        if r.returncode != 0:
            raise RuntimeError(f"`{' '.join(cmd[4:])}` in {ns} failed ({r.returncode}):\n{self.logs[ns][-3000:]}")
        return time.monotonic() - t0

    def listening(self, ns: str) -> str:
        return run(*self.pair.exec(ns), "ss", "-ltnpH", check=False).stdout

    def stop(self) -> None:
        for ns in (self.pair.b, self.pair.a):
            stop_pids([p for p in self.pair.pids(ns) if p not in self.keep])
        for d in self.temp_dirs:
            shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def ray_cluster(netns_pair, etcd_on_head, two_workers):
    keep = {etcd_on_head[1]} | {w.pid for w in two_workers}
    cluster = RayCluster(netns_pair, keep)
    try:
        t_head = cluster.start_node(netns_pair.a, HEAD_NODE_IP, head=True)
        t_worker = cluster.start_node(netns_pair.b, WORKER_NODE_IP, head=False)
        print(f"ray start: head {t_head:.1f} s, worker node {t_worker:.1f} s")
        yield cluster
    finally:
        cluster.stop()


# The seed's demo script (Appendix B, "Run demo"), as written; trailing
# whitespace stripped. The test substitutes the addresses, adds the one
# line at the end of main() and drops the __main__ block.
SEED_DEMO = '''\
from omegaconf import OmegaConf
from tensordict import TensorDict
from transfer_queue import (
    TransferQueueClient,
    TransferQueueController,
    process_zmq_server_info,
)
import torch
import ray

########################################################################
# Please set up Ray cluster before running this script
# e.g. ray start --head --resources='{"node:127.0.0.1": 1}'
########################################################################
HEAD_NODE_IP = "10.170.27.24"  # Replace with your head node IP
WORKER_NODE_IP = "10.170.27.33"  # Replace with your worker node IP


def initialize_controller():
    tq_controller = TransferQueueController.remote()
    tq_controller_info = process_zmq_server_info(tq_controller)
    return tq_controller, tq_controller_info

@ray.remote
class TransferQueueClientActor:
    def __init__(self, config: dict, client_id: str):
        self.config = config
        self.client_id = client_id
        self._initialize_client()

    def _initialize_client(self):
        # Create TransferQueueClient
        self.tq_client = TransferQueueClient(
            client_id=self.client_id,
            controller_info=self.config.controller_info,
        )
        # Connect to DataSystem
        self.tq_client.initialize_storage_manager(manager_type=self.config["manager_type"], config=self.config)
        return self.tq_client

    def put(self, data: TensorDict, partition_id: str):
        self.tq_client.put(data=data, partition_id=partition_id)

    def get(self, data_fields, batch_size, partition_id, task_name=None, sampling_config=None):
        # get metadata from tq_controller
        meta = self.tq_client.get_meta(
                data_fields=data_fields,
                batch_size=batch_size,
                partition_id=partition_id,
                task_name=task_name,
                sampling_config=sampling_config,
            )
        # use meta to fetch data
        return self.tq_client.get_data(meta)


def main():
    config_str = """
        manager_type: YuanrongStorageManager
        client_name: YuanrongStorageClient
        host: 10.170.27.24
        port: 31501
    """
    dict_conf = OmegaConf.create(config_str, flags={"allow_objects": True})
    # It is important to pay attention to the controller's lifecycle.
    controller, dict_conf.controller_info = initialize_controller()

    conf_writer = dict_conf.copy()
    conf_writer.host = HEAD_NODE_IP
    conf_reader = dict_conf.copy()
    conf_reader.host = WORKER_NODE_IP
    data = TensorDict({ "prompt": torch.ones(3, 512), "big_tensor": torch.randn(3,1024,1024)}, batch_size=[3])
    # you could assign npu or gpu devices by 'resources'
    # resources={f"node:{HEAD_NODE_IP}": 0.001} could Force the actor to run on HEAD_NODE
    writer = TransferQueueClientActor.options(
            resources={f"node:{HEAD_NODE_IP}": 0.001},
    ).remote(conf_writer, "train")
    reader = TransferQueueClientActor.options(
            resources={f"node:{WORKER_NODE_IP}": 0.001}
    ).remote(conf_reader, "rollout")

    ray.get(writer.put.remote(data=data, partition_id="train_0"))

    output = reader.get.remote(
        data_fields=list(data.keys()),
        batch_size=data.size(0),
        partition_id="train_0",
        task_name="generate_sequences",
    )
    output = ray.get(output)

if __name__ == "__main__":
    main()
'''


def driver_source() -> str:
    src = SEED_DEMO
    edits = [
        ('HEAD_NODE_IP = "10.170.27.24"', f'HEAD_NODE_IP = "{HEAD_NODE_IP}"'),
        ('WORKER_NODE_IP = "10.170.27.33"', f'WORKER_NODE_IP = "{WORKER_NODE_IP}"'),
        ("        host: 10.170.27.24\n", f"        host: {HEAD_NODE_IP}\n"),
        ("    output = ray.get(output)\n",
         "    output = ray.get(output)\n    return data, output, dict_conf.controller_info\n"),
        ('if __name__ == "__main__":\n    main()\n', ""),
    ]
    for old, new in edits:
        assert src.count(old) == 1, f"the seed demo changed: {old!r}"
        src = src.replace(old, new)
    return DRIVER_HEAD + src + DRIVER_TAIL


# Before the seed's code: connect to the cluster the test started, wait for both nodes.
DRIVER_HEAD = textwrap.dedent("""
    import json as _json, sys as _sys, time as _time
    import ray as _ray

    _t0 = _time.monotonic()
    _ray.init(address=_sys.argv[1])
    _deadline = _time.monotonic() + 60
    while True:
        _alive = {n["NodeManagerAddress"] for n in _ray.nodes() if n["Alive"]}
        if {_sys.argv[2], _sys.argv[3]} <= _alive:
            break
        if _time.monotonic() > _deadline:
            _sys.exit(f"only {sorted(_alive)} of the Ray nodes came up")
        _time.sleep(0.2)
    print("NODES_UP", round(_time.monotonic() - _t0, 2), flush=True)
""")

# After it: run main(), keep both sides' tensors, report, and stay connected
# until the test has checked the controller's process.
DRIVER_TAIL = textwrap.dedent("""

    _t1 = _time.monotonic()
    _data, _output, _info = main()
    _main_s = _time.monotonic() - _t1
    torch.save({"prompt": _data["prompt"], "big_tensor": _data["big_tensor"]}, _sys.argv[4])
    torch.save({"prompt": torch.as_tensor(_output["prompt"]), "big_tensor": torch.as_tensor(_output["big_tensor"])},
               _sys.argv[5])
    print("RESULT", _json.dumps({"controller_ip": _info.ip, "controller_port": _info.ports["request"],
                                "output_type": type(_output).__name__, "main_s": round(_main_s, 2)}), flush=True)
    _sys.stdin.readline()
""")


def tq_controllers(pair: NetnsPair) -> list[tuple[str, int]]:
    """(namespace, pid) of every `tq controller` process in the two namespaces."""
    found = []
    for ns in (pair.a, pair.b):
        for p in pair.pids(ns):
            args = cmdline(p)
            if len(args) >= 2 and os.path.basename(args[0]) == "tq" and args[1] == "controller" and pid_alive(p):
                found.append((ns, p))
    return found


class LineReader:
    """A child's stdout, line by line, with a timeout."""

    def __init__(self, stream):
        self.q = queue.Queue()
        self.lines = []
        threading.Thread(target=self._pump, args=(stream,), daemon=True).start()

    def _pump(self, stream):
        for line in stream:
            self.q.put(line)
        self.q.put(None)

    def wait_for(self, prefix: str, deadline: float) -> str | None:
        while True:
            try:
                line = self.q.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                return None
            if line is None:
                return None
            self.lines.append(line)
            if line.startswith(prefix):
                return line[len(prefix):].strip()


def test_seed_multi_node_on_ray(netns_pair, two_workers, ray_cluster, tmp_path):
    pair = netns_pair
    listening = {ns: ray_cluster.listening(ns) for ns in (pair.a, pair.b)}
    print("\n".join(f"--- listening in {ns}:\n{text}" for ns, text in listening.items()))
    for ns, ip in ((pair.a, HEAD_NODE_IP), (pair.b, WORKER_NODE_IP)):
        for line in listening[ns].splitlines():
            if '"etcd"' in line or '"datasystem_work' in line:
                assert f" {ip}:" in line, f"etcd / the datasystem worker should bind {ip} only: {line}"

    (tmp_path / "driver.py").write_text(driver_source())
    log = open(tmp_path / "driver.log", "w")
    driver = subprocess.Popen(
        pair.exec(pair.a) + [sys.executable, str(tmp_path / "driver.py"), f"{HEAD_NODE_IP}:{RAY_PORT}",
                             HEAD_NODE_IP, WORKER_NODE_IP, str(tmp_path / "input.pt"), str(tmp_path / "output.pt")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True, env=ray_cluster.env, cwd=tmp_path)
    out = LineReader(driver.stdout)

    def driver_failed(what):
        with contextlib.suppress(Exception):
            driver.kill()
            driver.wait(5)
        log.flush()
        pytest.fail(f"{what}\n--- driver stdout:\n{''.join(out.lines)[-3000:]}\n--- driver stderr:\n"
                    f"{(tmp_path / 'driver.log').read_text()[-5000:]}")

    try:
        t0 = time.monotonic()
        nodes_up = out.wait_for("NODES_UP", time.monotonic() + 90)
        if nodes_up is None:
            driver_failed("the driver did not see both Ray nodes")
        result = out.wait_for("RESULT", time.monotonic() + 180)
        if result is None:
            driver_failed("the seed's main() did not finish")
        result = json.loads(result)
        print(f"driver: both nodes seen after {nodes_up} s, main() {result['main_s']} s, "
              f"total {time.monotonic() - t0:.1f} s")

        # The reader on the work node got the writer's bytes exactly.
        want = torch.load(tmp_path / "input.pt")
        got = torch.load(tmp_path / "output.pt")
        assert got["prompt"].shape == (3, 512) and got["big_tensor"].shape == (3, 1024, 1024)
        assert got["big_tensor"].dtype == torch.float32
        assert torch.equal(got["prompt"], want["prompt"])
        assert torch.equal(got["big_tensor"], want["big_tensor"])

        # The controller ran inside Ray, on its node's own address (the reader
        # on the other node reached it), and its process ended once main()'s
        # handle was gone, while the driver and both Ray nodes are still up.
        # TransferQueueController.remote() places the actor on the caller's node.
        assert result["controller_ip"] == HEAD_NODE_IP, result
        deadline = time.monotonic() + 30
        while (left := tq_controllers(pair)) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not left, f"controller processes outlived their actor: {left}"
        assert driver.poll() is None, "the driver exited early"

        driver.stdin.write("done\n")
        driver.stdin.flush()
        driver.wait(60)
        assert driver.returncode == 0, (tmp_path / "driver.log").read_text()[-3000:]
    finally:
        if driver.poll() is None:
            driver.kill()
        with contextlib.suppress(Exception):
            driver.wait(10)
        log.close()
