"""Issue 13, end to end: upstream TransferQueue 0.1.11 from PyPI, in its own
venv (the peer venv of test_upstream_compat.py), with its Yuanrong backend,
over our datasystem, with no change to upstream's code.

Upstream's `tq.init(conf)` with `backend.Yuanrong.auto_init: True` places one
Ray actor per Ray node (STRICT_SPREAD) and each runs our `dscli start -w
--worker_address <node ip>:<port> --metastore_address <head ip>:<port>
[--start_metastore_service true] --arena_per_tenant 1
--enable_worker_worker_batch_get true <worker_args>` and looks for `[  OK  ]`;
its storage client imports `yr.datasystem` (ours); `tq.close()` runs `dscli
stop --worker_address`. The driver (upstream_yr_driver.py, run with the peer
venv's Python) puts a TensorDict (float32 with NaN/inf/-0.0, int64, a jagged
nested tensor, strings, a 4 MiB float field), lists, gets it back and
compares every sample's bytes, clears, closes.

- test_same_node: a local Ray (`ray.init` on 127.0.0.1, a temp dir of its
  own); one worker, the head, with the metastore.
- test_two_namespaces: two network namespaces joined by a veth pair (as
  test_multi_node.py), a Ray head in A and a Ray node in B (the peer venv's
  `ray start`); the driver runs in A. Upstream's bootstrap starts the head
  worker with the metastore in A and the other worker in B; an actor pinned
  to B puts through upstream's client (it attaches with `tq.init()`), the
  driver in A gets, so the bytes move from B's worker to A's through our
  worker-to-worker path.

The environment of upstream's side: PATH starts with a directory holding
only our `dscli` and `datasystem_worker` (links), then the peer venv's bin;
PYTHONPATH is a directory holding only links to our `yr`, `datasystem` and
`_tqds` (as this test process imports them: the build tree or the installed
package), so upstream's own transfer_queue is the one imported.

Outside upstream's code, each namespace gets a default route through its veth
(no traffic leaves: the peer namespace does not forward): upstream's
`get_local_ip_addresses()`, without netifaces, learns the node's address by
a UDP connect() to 8.8.8.8, which needs a route (a real machine has one).

Every process is stopped by pid at the end, also on failure: the driver, the
Ray processes (found by their temp dir, or `ip netns pids`), the datasystem
workers (found by `--worker_address` in /proc/*/cmdline). Skipped with the
reason when the peer venv cannot be made or lacks TransferQueue 0.1.11, and
(the second test) without root or `ip netns`.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from conftest import free_port, pid_alive
from test_multi_node import HEAD_NODE_IP, RAY_PORT, WORKER_NODE_IP, LineReader, RayCluster, cmdline, fresh_netns_pair, \
    stop_pids
from test_upstream_compat import _peer

DRIVER = Path(__file__).with_name("upstream_yr_driver.py")
UP_TIMEOUT = 150  # Ray start + tq.init (two dscli starts) on 2 busy cores
RESULT_TIMEOUT = 90
CLOSE_TIMEOUT = 90
GONE_TIMEOUT = 30
OBJECT_STORE_BYTES = 100 * 1024 * 1024
SHM_MB = 256


# ----------------------------------------------------------------- upstream's side

@pytest.fixture(scope="module")
def peer():
    """The peer venv's python (skips with the reason if it cannot be had)."""
    given = os.environ.get("TQ_PEER_VENV")
    if given and not os.access(Path(given) / "bin" / "python", os.X_OK):
        pytest.skip(f"TQ_PEER_VENV={given} has no bin/python")
    impl = _peer()  # makes <repo>/.peer-venv (scripts/peer_venv.sh) or skips with the reason
    if not Path(impl.python).parent.joinpath("ray").exists():
        pytest.skip(f"{impl.python} has no `ray` command beside it")
    return Path(impl.python)


def our_tool_dir(datasystem_pkg: Path) -> Path:
    """The directory of our dscli binary with datasystem_worker beside it (dscli
    runs the worker beside itself): the build tree's bin/ (the dscli on PATH),
    or, for a pip install, the package's _bin/ (the dscli on PATH is then a
    console script)."""
    candidates = []
    if found := shutil.which("dscli"):
        candidates.append(Path(os.path.realpath(found)).parent)
    candidates.append(datasystem_pkg / "_bin")
    for d in candidates:
        if all((d / t).is_file() and os.access(d / t, os.X_OK) for t in ("dscli", "datasystem_worker")):
            with open(d / "dscli", "rb") as f:
                if f.read(4) == b"\x7fELF":
                    return d.resolve()
    pytest.fail(f"no dscli binary with datasystem_worker beside it in {[str(d) for d in candidates]} "
                "(cmake --build build --target dscli datasystem_worker, or reinstall the package)")


@pytest.fixture
def ours():
    """(bin dir, python dir): links to our tools and our Python modules only."""
    import _tqds
    import datasystem
    import yr.datasystem

    root = Path(tempfile.mkdtemp(prefix="tqyr_", dir="/tmp"))  # short: Ray's sockets live under it
    bin_dir, py_dir = root / "bin", root / "py"
    bin_dir.mkdir()
    py_dir.mkdir()
    tools = our_tool_dir(Path(datasystem.__file__).resolve().parent)
    for tool in ("dscli", "datasystem_worker"):
        (bin_dir / tool).symlink_to(tools / tool)
    modules = {"yr": Path(yr.datasystem.__file__).resolve().parents[1],
               "datasystem": Path(datasystem.__file__).resolve().parent,
               Path(_tqds.__file__).name: Path(_tqds.__file__).resolve()}
    for name, target in modules.items():
        (py_dir / name).symlink_to(target)
    yield {"root": root, "bin": bin_dir, "py": py_dir, "yr": os.path.realpath(yr.datasystem.__file__),
           "_tqds": os.path.realpath(_tqds.__file__)}
    shutil.rmtree(root, ignore_errors=True)


def upstream_env(peer: Path, ours: dict) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "RAY_ADDRESS", "VIRTUAL_ENV") and not k.startswith("PYTEST_")}
    venv_bin = str(Path(sys.executable).parent)
    rest = [p for p in env.get("PATH", "").split(os.pathsep) if p and p != venv_bin and "/build/bin" not in p]
    env["PATH"] = os.pathsep.join([str(ours["bin"]), str(peer.parent)] + rest)
    env["PYTHONPATH"] = str(ours["py"])
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    env["TQ_LOGGING_LEVEL"] = "INFO"  # upstream's bootstrap logs each dscli step
    return env


# ----------------------------------------------------------------- processes

def ds_workers(address: str, pids=None) -> list[int]:
    """Live datasystem_worker processes serving `address` (by their command line)."""
    if pids is None:
        pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
    found = []
    for p in pids:
        args = cmdline(p)
        if args and os.path.basename(args[0]) == "datasystem_worker" and pid_alive(p) and (
                f"--worker_address={address}" in args or
                any(a == "--worker_address" and b == address for a, b in zip(args, args[1:]))):
            found.append(p)
    return found


def pids_mentioning(text: str) -> list[int]:
    """Live processes whose command line mentions `text` (a Ray temp dir)."""
    found = []
    for p in (int(p) for p in os.listdir("/proc") if p.isdigit()):
        if p != os.getpid() and any(text in a for a in cmdline(p)) and pid_alive(p):
            found.append(p)
    return found


def wait_gone(pids, timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    while (left := [p for p in pids if pid_alive(p)]) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


def worker_logs(socket_dir: Path) -> str:
    out = []
    for f in sorted((socket_dir / "logs").glob("*"))[:4]:
        with contextlib.suppress(OSError):
            out.append(f"--- {f.name}:\n{f.read_text(errors='replace')[-1500:]}")
    return "\n".join(out)


class Driver:
    """upstream_yr_driver.py as a child: its tagged stdout lines, stdin to go on."""

    def __init__(self, cmd: list[str], env: dict, cwd: Path):
        self.log_path = cwd / "driver.log"
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True,
                                     env=env, cwd=cwd, start_new_session=True)
        self.out = LineReader(self.proc.stdout)

    def expect(self, tag: str, timeout: float, context: str = "") -> dict:
        line = self.out.wait_for(tag + " ", time.monotonic() + timeout)
        if line is None:
            self.kill()
            pytest.fail(f"the driver gave no {tag} line in {timeout} s\n--- stdout:\n{''.join(self.out.lines)[-3000:]}"
                        f"\n--- stderr:\n{self.log_path.read_text(errors='replace')[-6000:]}\n{context}")
        return json.loads(line)

    def go_on(self) -> None:
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()

    def stderr(self) -> str:
        self.log.flush()
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        with contextlib.suppress(Exception):
            self.proc.wait(10)
        self.log.close()


def close_context(driver: Driver, socket_dir: Path, ray_dirs=()) -> str:
    """What tells why a worker outlived tq.close(): the lines about stopping
    in the driver's output and in the Ray workers' logs (where the worker
    actors log `dscli stop`'s result), and the datasystem workers' logs."""
    texts = [driver.stderr()]
    for d in ray_dirs:
        for f in Path(d).glob("session_latest/logs/worker-*"):
            with contextlib.suppress(OSError):
                texts.append(f.read_text(errors="replace"))
    lines = [ln for t in texts for ln in t.splitlines()
             if any(w in ln.lower() for w in ("stop", "dscli", "datasystem worker"))]
    return "--- lines about stopping:\n" + "\n".join(lines[-40:]) + "\n" + worker_logs(socket_dir)


def assert_stopped_cleanly(socket_dir: Path, address: str) -> None:
    """The worker at `address` ended through SIGTERM (upstream's `dscli stop`),
    as its log says, not killed with its Ray actor."""
    host, port = address.rsplit(":", 1)
    log = socket_dir / "logs" / f"datasystem_worker_{host}_{port}.log"
    text = log.read_text(errors="replace") if log.exists() else ""
    assert "stopping on signal 15" in text and f"datasystem worker {address} stopped" in text, \
        f"{log} does not show a clean stop:\n{text[-2000:]}"


def check_result(result: dict, ours: dict) -> None:
    # Upstream's storage client imported our yr.datasystem and _tqds.
    assert result["modules"] == {"yr.datasystem": ours["yr"], "_tqds": ours["_tqds"]}, result["modules"]
    assert result["listed"] == ["k0", "k1", "k2", "k3"], result
    assert result["fields"] == {f: "ok" for f in ("dense", "ids", "jagged", "text", "big")}, result["fields"]
    assert result["listed_after_clear"] == [], result
    assert result["get_after_clear"].startswith("ValueError"), result


# ----------------------------------------------------------------- same node

def test_same_node(peer, ours):
    root = ours["root"]
    ray_dir, socket_dir = root / "ray", root / "ds"
    socket_dir.mkdir()
    worker_port, metastore_port = free_port(), free_port()
    while metastore_port == worker_port:
        metastore_port = free_port()
    address = f"127.0.0.1:{worker_port}"
    params = {"worker_port": worker_port, "metastore_port": metastore_port, "ray_temp_dir": str(ray_dir),
              "object_store_bytes": OBJECT_STORE_BYTES,
              "worker_args": f"--shared_memory_size_mb {SHM_MB} --unix_domain_socket_dir {socket_dir}"}
    env = upstream_env(peer, ours)
    env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # a local Ray keeps its node on 127.0.0.1

    t0 = time.monotonic()
    driver = Driver([str(peer), str(DRIVER), "same", json.dumps(params)], env, root)
    started: set[int] = set()
    try:
        up = driver.expect("UP", UP_TIMEOUT, worker_logs(socket_dir))
        assert up["driver_ip"] == "127.0.0.1" and up["ds_host"] == "127.0.0.1", up
        workers = ds_workers(address)
        ray_pids = pids_mentioning(str(ray_dir))
        started |= set(workers) | set(ray_pids)
        assert len(workers) == 1, f"want one datasystem_worker at {address}, found {workers}"
        assert os.path.realpath(f"/proc/{workers[0]}/exe") == os.path.realpath(ours["bin"] / "datasystem_worker")
        assert ray_pids, f"no Ray process mentions {ray_dir}"

        result = driver.expect("RESULT", RESULT_TIMEOUT, worker_logs(socket_dir))
        check_result(result, ours)
        driver.go_on()
        closed = driver.expect("CLOSED", CLOSE_TIMEOUT, worker_logs(socket_dir))
        driver.proc.wait(60)
        assert driver.proc.returncode == 0, driver.stderr()[-3000:]
        # tq.close() stopped the worker through `dscli stop`; ray.shutdown() its local Ray.
        assert not wait_gone(workers, GONE_TIMEOUT), \
            f"datasystem_worker {workers} outlived tq.close()\n{close_context(driver, socket_dir, [ray_dir])}"
        assert_stopped_cleanly(socket_dir, address)
        left = wait_gone(set(ray_pids) | set(pids_mentioning(str(ray_dir))), GONE_TIMEOUT)
        assert not left, f"Ray processes outlived ray.shutdown(): {[(p, cmdline(p)[:2]) for p in left]}"
        print(f"same node: ray.init {up['ray_s']} s, tq.init {up['init_s']} s, put/list/get "
              f"{result['put_get_s']} s, tq.close {closed['close_s']} s, total {time.monotonic() - t0:.1f} s")
    finally:
        driver.kill()
        started |= set(ds_workers(address)) | set(pids_mentioning(str(ray_dir)))
        stop_pids(started)


# ----------------------------------------------------------------- two namespaces

@pytest.fixture
def netns_pair():
    # A default route in each: without netifaces, upstream's
    # get_local_ip_addresses() finds the node's address by a UDP connect.
    with fresh_netns_pair(default_route=True) as pair:
        yield pair


def test_two_namespaces(peer, ours, netns_pair, tmp_path):
    pair = netns_pair
    root = ours["root"]
    socket_dir = root / "ds"
    socket_dir.mkdir()
    worker_port, metastore_port = 31501, 2379
    head, node = f"{HEAD_NODE_IP}:{worker_port}", f"{WORKER_NODE_IP}:{worker_port}"
    env = upstream_env(peer, ours)
    env.pop("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", None)
    # Token authentication with a token of this test's own on every node and
    # the driver (see test_multi_node.py's node_env).
    env["RAY_AUTH_MODE"] = "token"
    env["RAY_AUTH_TOKEN"] = secrets.token_hex(32)
    env.pop("RAY_AUTH_TOKEN_PATH", None)
    cluster = RayCluster(pair, set(), ray=str(peer.parent / "ray"), env=env, num_cpus=2)
    driver = None
    t0 = time.monotonic()
    try:
        t_head = cluster.start_node(pair.a, HEAD_NODE_IP, head=True)
        t_node = cluster.start_node(pair.b, WORKER_NODE_IP, head=False)
        params = {"worker_port": worker_port, "metastore_port": metastore_port,
                  "ray_address": f"{HEAD_NODE_IP}:{RAY_PORT}", "node_ips": [HEAD_NODE_IP, WORKER_NODE_IP],
                  "worker_args": f"--shared_memory_size_mb {SHM_MB} --unix_domain_socket_dir {socket_dir}"}
        driver = Driver(pair.exec(pair.a) + [str(peer), str(DRIVER), "cross", json.dumps(params)], env, tmp_path)
        up = driver.expect("UP", UP_TIMEOUT, worker_logs(socket_dir))
        assert up["driver_ip"] == HEAD_NODE_IP and up["ds_host"] == HEAD_NODE_IP, up

        # Upstream's bootstrap started one worker in each namespace, through our dscli.
        in_a, in_b = ds_workers(head, pair.pids(pair.a)), ds_workers(node, pair.pids(pair.b))
        assert len(in_a) == 1 and len(in_b) == 1, f"workers: {head} {in_a}, {node} {in_b}"
        head_args, node_args = cmdline(in_a[0]), cmdline(in_b[0])
        assert f"--metastore_address={HEAD_NODE_IP}:{metastore_port}" in head_args, head_args
        assert "--start_metastore_service=true" in head_args, head_args
        assert f"--metastore_address={HEAD_NODE_IP}:{metastore_port}" in node_args, node_args
        assert "--start_metastore_service=false" in node_args, node_args

        result = driver.expect("RESULT", RESULT_TIMEOUT, worker_logs(socket_dir))
        check_result(result, ours)
        # The writer ran on B and wrote to B's worker; the driver read in A.
        assert result["writer"]["node_ip"] == WORKER_NODE_IP and result["writer"]["ds_host"] == WORKER_NODE_IP, \
            result["writer"]
        assert result["writer"]["modules"] == result["modules"], result["writer"]
        # Before the get, the 20 values (4 keys x 5 fields) were on B's worker
        # only; the get in A succeeded, so they came from B's worker.
        before, after = result["status_before_get"], result["status_after_get"]
        assert before[HEAD_NODE_IP].get("objects") == 0, before
        assert before[WORKER_NODE_IP].get("objects", 0) >= 20, before
        assert after[HEAD_NODE_IP].get("pulls", 0) >= 1, after  # moved across the veth by A's worker
        print(f"objects held: before the get A {before[HEAD_NODE_IP]['objects']} B "
              f"{before[WORKER_NODE_IP]['objects']}; after it A {after[HEAD_NODE_IP].get('objects')} "
              f"(cached copies) B {after[WORKER_NODE_IP].get('objects')}; A's worker pulled "
              f"{after[HEAD_NODE_IP].get('pulls')} object(s), {after[HEAD_NODE_IP].get('pulled_bytes')} bytes")

        driver.go_on()
        closed = driver.expect("CLOSED", CLOSE_TIMEOUT, worker_logs(socket_dir))
        driver.proc.wait(60)
        assert driver.proc.returncode == 0, driver.stderr()[-3000:]
        assert not wait_gone(in_a + in_b, GONE_TIMEOUT), \
            f"datasystem workers {in_a + in_b} outlived tq.close()\n" + \
            close_context(driver, socket_dir, cluster.temp_dirs)
        assert_stopped_cleanly(socket_dir, head)
        assert_stopped_cleanly(socket_dir, node)
        print(f"two namespaces: ray start head {t_head:.1f} s, node {t_node:.1f} s, ray.init {up['ray_s']} s, "
              f"tq.init {up['init_s']} s, put (B) + list + get (A) {result['put_get_s']} s, "
              f"tq.close {closed['close_s']} s, total {time.monotonic() - t0:.1f} s")
    finally:
        if driver is not None:
            driver.kill()
        cluster.stop()  # every process left in the two namespaces, by pid; pair.down() deletes them
