"""Shared fixtures of the Python test suite.

Runs against the package pip-installed into the venv (what scripts/test.sh
does), or against a CMake build tree during development:

    .venv/bin/python -m pytest -q python/tests                 # installed (TQDS_TEST_INSTALLED=1 forces it)
    TQDS_BUILD_DIR=$PWD/build .venv/bin/python -m pytest -q python/tests

With TQDS_BUILD_DIR (or a build/ holding build/python/_tqds*.so and
build/bin/tq, unless TQDS_TEST_INSTALLED=1) this file puts that build first
on PATH and sys.path, and the package sources (python/transfer_queue,
python/datasystem) before the build's copies, which CMake refreshes only
when the extension relinks. The directory of the running Python (the venv's
bin/, with the `tq`, `dscli` and `ray` console scripts) is always on PATH.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# Upstream TransferQueue 0.1.11's interpreter for the suites that compare
# with it in-process: $TQ_PEER_PYTHON, else the venv that scripts/test.sh
# makes (.peer-venv, scripts/peer_venv.sh); its absence skips those tests.
PEER_VENV = REPO / ".peer-venv"
PEER_PYTHON = Path(os.environ.get("TQ_PEER_PYTHON") or PEER_VENV / "bin" / "python")
BUILD = Path(os.environ.get("TQDS_BUILD_DIR", REPO / "build"))

_VENV_BIN = str(Path(sys.executable).parent)
if _VENV_BIN not in os.environ.get("PATH", "").split(os.pathsep):
    os.environ["PATH"] = f"{_VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"

if os.environ.get("TQDS_TEST_INSTALLED") != "1":
    if (BUILD / "bin" / "tq").exists():
        os.environ["PATH"] = f"{BUILD / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"
    if any((BUILD / "python").glob("_tqds*.so")):
        sys.path.insert(0, str(BUILD / "python"))
        sys.path.insert(0, str(REPO / "python"))

# Fail with one clear line, not twenty import errors, when nothing is built.
try:
    import _tqds  # noqa: F401
except ImportError as e:  # pragma: no cover
    raise pytest.UsageError(
        f"cannot import the _tqds extension ({e}); install the package into the venv "
        "(scripts/setup.sh, or .venv/bin/pip install .) and run with .venv/bin/python, "
        "or point TQDS_BUILD_DIR at a build tree configured for that Python"
    )

for _tool in ("tq", "dscli"):
    if shutil.which(_tool) is None:  # pragma: no cover
        raise pytest.UsageError(f"`{_tool}` is not on PATH; build it or run scripts/setup.sh")

import transfer_queue as tq  # noqa: E402

DSCLI_START_TIMEOUT = 60


# --------------------------------------------------------------------------- helpers

def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover
        return True
    # A zombie child of ours counts as dead.
    with contextlib.suppress(OSError):
        with open(f"/proc/{pid}/stat") as f:
            if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                return False
    return True


def wait_until(pred, timeout_s=10.0) -> bool:
    """Polls pred every 20 ms until it holds (True) or timeout_s passes (False)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.02)
    return False


def kill_pid(pid: int | None, timeout: float = 5.0) -> None:
    """SIGTERM, then SIGKILL after `timeout` seconds, one pid."""
    if not pid or not pid_alive(pid):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and pid_alive(pid):
        time.sleep(0.05)
    if pid_alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


ETCD_START_TIMEOUT_S = 30


def start_etcd(data_dir: Path | str, procs: list, name: str = "t") -> str:
    """A real etcd on free loopback ports, appended to `procs` (the caller
    kills it by pid); returns its client address once it answers /version.
    Other tests pick free ports too: a port taken between free_port() and
    etcd's bind ("address already in use") is retried on fresh ports. Any
    other exit, or no answer in ETCD_START_TIMEOUT_S, fails the test with
    etcd's exit status and the end of what it printed (a full disk, say)."""
    etcd = shutil.which("etcd") or "/usr/bin/etcd"
    if not os.access(etcd, os.X_OK):
        pytest.skip("etcd is not installed (apt-get install etcd-server)")
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    for attempt in range(3):
        client, peer = free_port(), free_port()
        curl, purl = f"http://127.0.0.1:{client}", f"http://127.0.0.1:{peer}"
        log_path = data_dir / f"etcd.{attempt}.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                [etcd, "--name", name, "--data-dir", str(data_dir / f"data{attempt}"),
                 "--listen-client-urls", curl, "--advertise-client-urls", curl,
                 "--listen-peer-urls", purl, "--initial-advertise-peer-urls", purl,
                 "--initial-cluster", f"{name}={purl}", "--log-level", "error"],
                stdout=log, stderr=subprocess.STDOUT)
        procs.append(proc)
        deadline = time.monotonic() + ETCD_START_TIMEOUT_S
        while proc.poll() is None and time.monotonic() < deadline:
            with contextlib.suppress(OSError):  # readiness: etcd answers /version
                with urllib.request.urlopen(f"{curl}/version", timeout=1) as r:
                    if b"etcdserver" in r.read():
                        return f"127.0.0.1:{client}"
            time.sleep(0.05)
        printed = log_path.read_text(errors="replace")[-1500:]
        if proc.poll() is not None and "address already in use" in printed:
            continue
        kill_pid(proc.pid)
        state = f"exited with status {proc.poll()}" if proc.poll() is not None else \
            f"did not answer {curl}/version in {ETCD_START_TIMEOUT_S} s"
        pytest.fail(f"etcd {state}; it printed: {printed.strip() or 'nothing'}", pytrace=False)
    pytest.fail("etcd found its free ports taken three times (address already in use)", pytrace=False)


def unique(prefix: str = "p") -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


@contextlib.contextmanager
def deployment_keys():
    """The deployment's CURVE keys for a multi-node test (the namespaces'
    addresses are not loopback, so every process must authenticate): a fresh
    key directory, exported as TQDS_CURVE_KEY_DIR to every process started
    meanwhile and used by this one; undone at the end."""
    import _tqds

    keys = tempfile.mkdtemp(prefix="tqds_keys_")
    _tqds.generate_curve_keys(keys)
    before = os.environ.get("TQDS_CURVE_KEY_DIR")
    os.environ["TQDS_CURVE_KEY_DIR"] = keys
    _tqds.use_curve_keys(keys)
    try:
        yield keys
    finally:
        if before is None:
            os.environ.pop("TQDS_CURVE_KEY_DIR", None)
        else:
            os.environ["TQDS_CURVE_KEY_DIR"] = before
        _tqds.use_curve_keys(before or "")
        shutil.rmtree(keys, ignore_errors=True)


class DsWorker:
    """A datasystem worker started with `dscli start -w`; stop() stops it with
    `dscli stop` and, if that fails, kills it by pid."""

    def __init__(self, host: str = "127.0.0.1", port: int | None = None, socket_dir: str | None = None,
                 shared_memory_mb: int = 1024, netns: list[str] | None = None, etcd_address: str | None = None,
                 extra_args: list[str] | None = None):
        self.host = host
        self.netns = netns or []  # e.g. ["ip", "netns", "exec", "ns"]
        self._own_dir = socket_dir is None
        self.socket_dir = socket_dir or tempfile.mkdtemp(prefix="tqds_ds_")
        self.pid = None
        last = ""
        for _ in range(3):  # a port picked by free_port() can be taken meanwhile
            self.port = port or free_port(host if not self.netns else "127.0.0.1")
            cmd = self.netns + ["dscli", "start", "-w", "--worker_address", self.address,
                                "--unix_socket_dir", self.socket_dir,
                                "--shared_memory_size_mb", str(shared_memory_mb)]
            if etcd_address:
                cmd += ["--etcd_address", etcd_address]
            cmd += extra_args or []
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=DSCLI_START_TIMEOUT)
            last = r.stdout + r.stderr
            m = re.search(r"PID: (\d+)", r.stdout)
            if r.returncode == 0 and m:
                self.pid = int(m.group(1))
                return
            if port is not None:
                break
        self._cleanup_dir()
        raise RuntimeError(f"dscli start failed: {last.strip()}")

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def stop(self) -> None:
        if self.pid is None:
            return
        with contextlib.suppress(Exception):
            subprocess.run(self.netns + ["dscli", "stop", "--worker_address", self.address, "--timeout_s", "10"],
                           capture_output=True, timeout=20)
        kill_pid(self.pid)
        self.pid = None
        self._cleanup_dir()

    def _cleanup_dir(self) -> None:
        if self._own_dir:
            shutil.rmtree(self.socket_dir, ignore_errors=True)


def yuanrong_config(worker: DsWorker) -> dict:
    return {"manager_type": "YuanrongStorageManager", "client_name": "YuanrongStorageClient",
            "host": worker.host, "port": worker.port}


def stop_controller(handle) -> None:
    """Stops a controller handle: a local one (TransferQueueControllerHandle)
    or a Ray actor (TransferQueueController.remote() where Ray runs), and
    kills its `tq controller` process by pid in case stop() did not."""
    if isinstance(handle, tq.TransferQueueControllerHandle):
        pid = handle.pid
        with contextlib.suppress(Exception):
            handle.stop()
        kill_pid(pid)
        return
    import ray  # an actor handle

    pid = None
    with contextlib.suppress(Exception):
        pid = ray.get(handle.get_pid.remote(), timeout=30)
        ray.get(handle.stop.remote(), timeout=30)
    with contextlib.suppress(Exception):
        ray.kill(handle)
    kill_pid(pid)


# --------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="session")
def ds_worker():
    """One datasystem worker on a free port with its own socket dir."""
    w = DsWorker()
    try:
        yield w
    finally:
        w.stop()


@pytest.fixture
def fresh_worker():
    """A worker of the test's own (tests that stop it)."""
    w = DsWorker()
    try:
        yield w
    finally:
        w.stop()


@pytest.fixture(scope="session")
def controller():
    """One local controller process (`tq controller`, 2 embedded storage
    units); a local handle even where Ray is installed (the Ray path has its
    own tests: test_ray.py, test_seed_single_node.py, test_multi_node.py)."""
    handle = tq.TransferQueueControllerHandle()
    try:
        yield handle
    finally:
        stop_controller(handle)


@pytest.fixture
def own_controller():
    handle = tq.TransferQueueControllerHandle()
    try:
        yield handle
    finally:
        stop_controller(handle)


def make_client(controller, backend: str, worker: DsWorker | None = None, client_id: str | None = None):
    c = tq.TransferQueueClient(client_id=client_id or unique("client"),
                               controller_info=tq.process_zmq_server_info(controller))
    if backend == "simple":
        c.initialize_storage_manager(manager_type="SimpleStorageManager", config={})
    elif backend == "yuanrong":
        cfg = yuanrong_config(worker)
        c.initialize_storage_manager(manager_type=cfg["manager_type"], config=cfg)
    else:  # pragma: no cover
        raise ValueError(backend)
    return c


@pytest.fixture(params=["simple", "yuanrong"])
def backend(request):
    return request.param


@pytest.fixture
def client(request, backend, controller):
    """A TransferQueueClient on the session controller, over each storage backend."""
    worker = request.getfixturevalue("ds_worker") if backend == "yuanrong" else None
    return make_client(controller, backend, worker)


@pytest.fixture
def make_another_client(request, backend, controller):
    def make():
        worker = request.getfixturevalue("ds_worker") if backend == "yuanrong" else None
        return make_client(controller, backend, worker)
    return make


@pytest.fixture
def partition():
    return unique("part")


@pytest.fixture
def local_tq_session(monkeypatch):
    """A fresh tq.init() session name, Ray forced off for init(), and at the
    end close() plus a kill of any controller left over (the fixture's value
    is a list where a test adds more pids to kill)."""
    import transfer_queue.interface as tqi

    monkeypatch.setenv(tqi.SESSION_ENV, unique("tqs"))
    monkeypatch.setattr(tqi, "_running_ray", lambda: None)
    pids: list[int] = []
    try:
        yield pids
    finally:
        s = tqi._current_session()
        if s is not None and s.controller_pid:
            pids.append(s.controller_pid)
        tqi.close()
        for pid in pids:
            kill_pid(pid)


# Modules that take minutes (Ray clusters, upstream's suites, venvs, network
# namespaces) are collected first: pytest-xdist (scripts/test.sh, --dist
# loadfile) hands modules out in collection order, so a long one started
# last would be the run's tail.
SLOW_MODULES = (
    "test_upstream_compat.py",
    "test_upstream_tutorials.py",
    "test_pip_install.py",
    "test_upstream_yuanrong.py",
    "test_upstream_lifecycle.py",
    "test_multi_node_init.py",
    "test_ray.py",
    "test_checkpoint.py",
    "test_seed_single_node.py",
    "test_multi_node.py",
)


def pytest_collection_modifyitems(session, config, items):
    rank = {name: i for i, name in enumerate(SLOW_MODULES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(SLOW_MODULES)))  # stable: order kept within
