"""transfer_queue.init() / get_client() / close(): upstream TransferQueue's
process-wide lifecycle over our controller and storage.

One controller serves a *session*. The first ``init()`` of a session starts
it (with its storage) and publishes the merged config; every later
``init()``, in this process or another one, attaches to it and only builds
this process's client. ``close()`` closes this process's client and stops
only what this process started: an attached process leaves the controller
running (upstream's ``close`` kills it from any process).

Where the session lives:

* **Ray initialised** (``ray.is_initialized()`` in this process, e.g. after
  ``ray.init()``, or inside a Ray task or actor): the controller runs in a
  Ray actor named ``TransferQueueController`` in namespace
  ``transfer_queue``, as upstream's; any process of the Ray cluster attaches
  to it by that name.
* **No Ray running**: Ray is *not* started (upstream's Ray auto-init is
  deliberately not reproduced). The controller is a child process
  (``tq controller``) of the first process, and the session is published in
  a per-user rendezvous file, ``$TMPDIR/tq-<uid>/<session>.json``, where
  other local processes find it. ``<session>`` is ``$TQDS_SESSION``, default
  ``transfer_queue``. The controller ends with that process.

Thread-safe: init/close/get_client take one process-wide lock.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import fcntl
import json
import logging
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
import time
from importlib import resources
from pathlib import Path
from typing import Any

from _tqds import InvalidArgumentError, UnavailableError

from .client import _UNSUPPORTED_BACKENDS, TransferQueueClient
from .controller import (
    TransferQueueController,
    TransferQueueControllerHandle,
    ZMQServerInfo,
    _default_host,
    default_fetch_timeout,
    process_zmq_server_info,
    resolve_sampling_config,
)

logger = logging.getLogger(__name__)

# Upstream's names: attachers anywhere in the Ray cluster find the actor by them.
CONTROLLER_ACTOR_NAME = "TransferQueueController"
CONTROLLER_NAMESPACE = "transfer_queue"
# The local (Ray-free) session's name; tests and parallel jobs set their own.
SESSION_ENV = "TQDS_SESSION"
DEFAULT_SESSION = "transfer_queue"

# How long an attacher waits for the owner to publish its config.
_ATTACH_TIMEOUT_S = 300.0
_DSCLI_TIMEOUT_S = 120.0

__all__ = [
    "init",
    "get_client",
    "close",
    "get_metrics_endpoint",
    "save_checkpoint",
    "load_checkpoint",
    "default_fetch_timeout",
    "__version__",
]


# --------------------------------------------------------------------------- version

def _package_version() -> str:
    """The installed distribution's version (pyproject's project name), else,
    from a source or build tree, CMakeLists.txt's project() version."""
    from importlib import metadata

    try:
        return metadata.version("transfer-queue-cpp")
    except metadata.PackageNotFoundError:
        pass
    for parent in Path(__file__).resolve().parents:
        cmake = parent / "CMakeLists.txt"
        if cmake.is_file():
            m = re.search(r"project\(tqds VERSION ([0-9.]+)", cmake.read_text())
            if m:
                return m.group(1)
    return "0+unknown"


__version__ = _package_version()


# --------------------------------------------------------------------------- config

def _load_config(conf) -> Any:
    """config.yaml <- conf, as an allow_objects DictConfig (sampler instances
    and ZMQServerInfo stay objects)."""
    from omegaconf import DictConfig, OmegaConf

    if conf is not None and not isinstance(conf, (dict, DictConfig)):
        raise TypeError(f"init(conf): expected a dict, a DictConfig or None, got {type(conf).__name__}")
    merged = OmegaConf.create({}, flags={"allow_objects": True})
    with resources.files("transfer_queue").joinpath("config.yaml").open("r", encoding="utf-8") as f:
        merged = OmegaConf.merge(merged, OmegaConf.load(f))
    if conf:
        merged = OmegaConf.merge(merged, conf)
    return merged


def _conf_to_json(conf) -> str:
    """The published config as JSON: ZMQServerInfo kept (tagged), any other
    object (a sampler instance or class) by its name; attachers need only
    the addresses and the backend block."""
    from omegaconf import OmegaConf

    def encode(o):
        if isinstance(o, ZMQServerInfo):
            return {"__ZMQServerInfo__": o.to_dict()}
        if isinstance(o, type):
            return o.__name__
        return type(o).__name__

    return json.dumps(OmegaConf.to_container(conf, resolve=True), default=encode)


def _conf_from_json(data: Any) -> Any:
    from omegaconf import OmegaConf

    def decode(d):
        if set(d) == {"__ZMQServerInfo__"}:
            return ZMQServerInfo(**d["__ZMQServerInfo__"])
        return d

    return OmegaConf.create(json.loads(json.dumps(data), object_hook=decode), flags={"allow_objects": True})


# --------------------------------------------------------------------------- storage



def _check_backend(conf) -> str:
    name = conf.backend.storage_backend
    if name in _UNSUPPORTED_BACKENDS:
        raise InvalidArgumentError(
            f"storage backend {name!r} is not supported by this package (transfer-queue-cpp); "
            "use 'SimpleStorage' (the controller's storage units) or 'Yuanrong' (our datasystem)")
    if name not in ("SimpleStorage", "Yuanrong"):
        raise InvalidArgumentError(f"unknown storage backend {name!r}: expected 'SimpleStorage' or 'Yuanrong'")
    if conf.backend.get(name) is None:
        raise InvalidArgumentError(f"backend.storage_backend is {name!r} but the config has no backend.{name} block")
    return name


def _storage_manager_args(backend: str, backend_conf) -> tuple[str, Any]:
    """What the client's initialize_storage_manager takes: upstream's backend
    name and block (the client maps them to ours); Yuanrong's host is this
    node's address (inside a Ray cluster the worker listens there)."""
    if backend == "Yuanrong":
        from omegaconf import DictConfig, OmegaConf

        block = dict(OmegaConf.to_container(backend_conf, resolve=True) if isinstance(backend_conf, DictConfig)
                     else backend_conf or {})
        block.setdefault("host", _default_host())
        return backend, block
    return backend, backend_conf


def _make_client(conf) -> TransferQueueClient:
    backend = _check_backend(conf)
    client = TransferQueueClient(client_id=f"TransferQueueClient_{os.getpid()}",
                                 controller_info=conf.controller.zmq_info)
    try:
        manager_type, manager_conf = _storage_manager_args(backend, conf.backend[backend])
        client.initialize_storage_manager(manager_type, manager_conf)
    except BaseException:
        _close_client(client)
        raise
    return client


def _close_client(client) -> None:
    close = getattr(client, "close", None)
    if close is not None:
        try:
            close()
        except Exception as e:  # closing must not stop the teardown
            logger.warning("closing the TransferQueueClient failed: %s", e)


def _program(name: str) -> str:
    """A bundled program (datasystem/_bin/<name>, as the `tq` lookup), else PATH."""
    bundled = Path(__file__).resolve().parent.parent / "datasystem" / "_bin" / name
    path = str(bundled) if bundled.exists() else shutil.which(name)
    if not path:
        raise FileNotFoundError(f"the `{name}` program is not on PATH (run the README's set-up command)")
    return path


@dataclasses.dataclass
class _DsWorker:
    """A datasystem worker this process started with `dscli start`."""

    address: str
    pid: int
    socket_dir: str

    @staticmethod
    def start(host: str, port: int, worker_args: str, env_vars, extra: tuple = ()) -> "_DsWorker":
        socket_dir = tempfile.mkdtemp(prefix="tq-ds-")
        address = f"{host}:{port}"
        cmd = [_program("dscli"), "start", "-w", "--worker_address", address, "--unix_socket_dir", socket_dir,
               *extra, *shlex.split(worker_args or "")]
        env = {**os.environ, **{str(k): str(v) for k, v in dict(env_vars or {}).items()}}
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=_DSCLI_TIMEOUT_S, env=env)
        except BaseException:
            shutil.rmtree(socket_dir, ignore_errors=True)
            raise
        m = re.search(r"PID: (\d+)", r.stdout)
        if r.returncode != 0 or not m:
            shutil.rmtree(socket_dir, ignore_errors=True)
            raise UnavailableError(
                f"backend Yuanrong (auto_init): `{shlex.join(cmd)}` failed (exit {r.returncode}): "
                f"{(r.stdout + r.stderr).strip()}; is worker_port {port} in use? Set "
                "backend.Yuanrong.worker_port, or auto_init=False to use a running worker")
        return _DsWorker(address=address, pid=int(m.group(1)), socket_dir=socket_dir)

    def stop(self) -> None:
        try:
            subprocess.run([_program("dscli"), "stop", "--worker_address", self.address, "--timeout_s", "10"],
                           capture_output=True, text=True, timeout=30)
        except Exception as e:
            logger.warning("dscli stop %s failed: %s", self.address, e)
        if _pid_alive(self.pid) and _cmdline(self.pid).find("datasystem_worker") >= 0:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, 9)
        shutil.rmtree(self.socket_dir, ignore_errors=True)


class _NodeWorker:
    """Ray actor (one per node): starts and stops that node's datasystem
    worker through `dscli`, as upstream's YuanrongWorkerActor does."""

    def __init__(self):
        self.worker: _DsWorker | None = None

    def node_ip(self) -> str:
        return _default_host()

    def start(self, port: int, metastore: str, is_head: bool, worker_args: str, env_vars) -> str:
        extra = ["--metastore_address", metastore] + (["--start_metastore_service", "true"] if is_head else [])
        self.worker = _DsWorker.start(_default_host(), port, worker_args, env_vars, tuple(extra))
        return self.worker.address

    def stop(self) -> None:
        if self.worker is not None:
            self.worker.stop()
            self.worker = None


class _ClusterWorkers:
    """The datasystem workers of a multi-node Ray cluster: one per alive node,
    each started by a _NodeWorker actor pinned to it (node affinity); the
    driver's node is the head and serves the metastore at its address and
    ``metastore_port``, and every other worker joins through it (no etcd),
    as upstream's bootstrap deploys them."""

    def __init__(self, ray, actors: list):
        self.ray, self.actors = ray, actors

    @staticmethod
    def start(ray, yr) -> "_ClusterWorkers":
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        head_ip = ray.util.get_node_ip_address()
        ips = sorted({n["NodeManagerAddress"] for n in nodes}, key=lambda ip: (ip != head_ip, ip))
        if head_ip not in ips:
            raise UnavailableError(f"backend Yuanrong (auto_init): this node ({head_ip}) is not among Ray's "
                                   f"alive nodes {ips}")
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        node_id = {n["NodeManagerAddress"]: n["NodeID"] for n in nodes}
        actor_class = ray.remote(num_cpus=0)(_NodeWorker)
        actors: list = []
        try:
            actors = [actor_class.options(scheduling_strategy=NodeAffinitySchedulingStrategy(
                node_id[ip], soft=False)).remote() for ip in ips]
            got = ray.get([a.node_ip.remote() for a in actors], timeout=_DSCLI_TIMEOUT_S)
            if got != ips:
                raise UnavailableError(f"backend Yuanrong (auto_init): worker actors landed on {got}, not {ips}")
            metastore = f"{head_ip}:{int(yr.get('metastore_port', 2379))}"
            args = (int(yr.worker_port), metastore)
            extra = (yr.get("worker_args", ""), dict(yr.get("ucx_env_vars") or {}))
            ray.get(actors[0].start.remote(*args, True, *extra), timeout=_DSCLI_TIMEOUT_S + 30)  # the metastore first
            ray.get([a.start.remote(*args, False, *extra) for a in actors[1:]], timeout=_DSCLI_TIMEOUT_S + 30)
        except BaseException:
            _ClusterWorkers(ray, actors).stop()
            raise
        return _ClusterWorkers(ray, actors)

    def stop(self) -> None:
        for actor in self.actors:
            with contextlib.suppress(Exception):
                self.ray.get(actor.stop.remote(), timeout=60)
            _kill_actor(self.ray, actor)
        self.actors = []


# --------------------------------------------------------------------------- processes

def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError):  # a zombie is dead
        with open(f"/proc/{pid}/stat") as f:
            if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                return False
    return True


def _start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (tells a pid's
    reuse apart), or None where /proc cannot tell."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


# --------------------------------------------------------------------------- local rendezvous

class _Rendezvous:
    """The per-user file that publishes a local session: ``<dir>/<name>.json``
    holding the owner's and the controller's pids (with start times) and the
    config, guarded by an flock on ``<name>.lock`` (see locked()), so
    that checking for a session and starting one is one step. The directory
    is ``$TMPDIR/tq-<uid>``, mode 0700, and must belong to this user."""

    def __init__(self, name: str):
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", name) or name.startswith("."):
            raise InvalidArgumentError(f"${SESSION_ENV}={name!r}: use letters, digits, '_', '-' and '.'")
        self.dir = Path(tempfile.gettempdir()) / f"tq-{os.getuid()}"
        self.path = self.dir / f"{name}.json"
        self._lock_path = self.dir / f"{name}.lock"

    def _ensure_dir(self) -> None:
        with contextlib.suppress(FileExistsError):
            os.mkdir(self.dir, 0o700)
        st = os.lstat(self.dir)
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
            raise UnavailableError(f"{self.dir} is not a private directory of this user; remove it")

    @contextlib.contextmanager
    def locked(self):
        """Holds the session's lock. The lock file exists only while a
        session is published or someone holds the lock: the holder removes
        it when it leaves no session file, so a waiter that then gets the
        lock on the removed file sees that its inode is no longer the path's
        and tries again."""
        self._ensure_dir()
        while True:
            fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                try:
                    current = os.stat(self._lock_path, follow_symlinks=False).st_ino
                except FileNotFoundError:
                    current = None
                if current == os.fstat(fd).st_ino:
                    break
            except BaseException:
                os.close(fd)
                raise
            os.close(fd)
        try:
            yield
        finally:
            try:
                if not self.path.exists():
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(self._lock_path)
            finally:
                os.close(fd)  # releases the lock

    def read_live(self) -> dict | None:
        """The published session if its owner and controller still run; a
        stale file is removed. Call with the lock held."""
        try:
            with open(self.path, encoding="utf-8") as f:
                record = json.load(f)
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            logger.warning("removing the unreadable session file %s: %s", self.path, e)
            self._unlink()
            return None
        for role in ("owner", "controller"):
            pid, started = record.get(f"{role}_pid"), record.get(f"{role}_start")
            if not isinstance(pid, int) or not _pid_alive(pid) or (started is not None
                                                                  and _start_time(pid) != started):
                logger.info("removing the stale session file %s (its %s is gone)", self.path, role)
                self._unlink()
                return None
        return record

    def publish(self, controller_pid: int, conf) -> None:
        """Writes the session file; it must not exist (O_EXCL). Call with the lock held."""
        record = {"owner_pid": os.getpid(), "owner_start": _start_time(os.getpid()),
                  "controller_pid": controller_pid, "controller_start": _start_time(controller_pid),
                  "conf": json.loads(_conf_to_json(conf))}
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(record, f)

    def remove_if_owned(self, controller_pid: int) -> None:
        """Removes the file if it publishes this process's controller."""
        with self.locked():
            try:
                with open(self.path, encoding="utf-8") as f:
                    record = json.load(f)
            except (OSError, ValueError):
                return
            if record.get("owner_pid") == os.getpid() and record.get("controller_pid") == controller_pid:
                self._unlink()

    def _unlink(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)


# --------------------------------------------------------------------------- the process-wide session

@dataclasses.dataclass
class _Session:
    pid: int  # the process that made it (a forked child does not inherit it)
    client: TransferQueueClient
    conf: Any  # the published config
    mode: str  # "ray" or "local"
    owner: bool
    controller: Any = None  # local handle or Ray actor handle
    controller_pid: int | None = None
    ds_worker: Any = None  # _DsWorker or _ClusterWorkers: what close() stops
    rendezvous: _Rendezvous | None = None


_LOCK = threading.RLock()
_SESSION: _Session | None = None
_ATEXIT_REGISTERED = False


def _running_ray():
    """The ray module if Ray is initialised in this process, else None. Never
    imports Ray (a process that did not import it cannot have started it)."""
    ray = sys.modules.get("ray")
    if ray is not None and getattr(ray, "is_initialized", lambda: False)():
        return ray
    return None


def _current_session() -> _Session | None:
    s = _SESSION
    return s if s is not None and s.pid == os.getpid() else None


def _session_is_live(s: _Session) -> bool:
    if s.mode == "ray":
        ray = _running_ray()
        if ray is None:
            return False
        try:
            actor = ray.get_actor(CONTROLLER_ACTOR_NAME, namespace=CONTROLLER_NAMESPACE)
        except ValueError:
            return False
        return actor._actor_id == s.controller._actor_id
    return s.controller_pid is None or _pid_alive(s.controller_pid)


def init(conf=None):
    """Starts TransferQueue or attaches to the running session, and makes
    this process's client (``get_client()``).

    If the session's controller exists (this process's, another local
    process's, or the Ray actor), attaches: ``conf`` is ignored and returned
    unchanged (it may be None). Otherwise merges ``conf`` (dict or
    DictConfig) over the package's config.yaml, starts the controller and the
    storage of ``backend.storage_backend`` (SimpleStorage: the controller's
    ``num_data_storage_units`` embedded units; Yuanrong: with ``auto_init`` a
    datasystem worker on ``worker_port``, started with `dscli start` and
    stopped by close()), publishes the config and returns it with
    ``controller.zmq_info`` filled.

    With Ray initialised the controller is the Ray actor
    ``TransferQueueController`` (namespace ``transfer_queue``); without, Ray
    is not started: the controller is a child process of this one and other
    local processes find it through a rendezvous file (module docstring).

    ``controller.sampler``: a built-in sampler (name, class or instance)
    runs inside the C++ controller; a custom ``BaseSampler`` subclass (class
    or instance) makes the controller a Python host process
    (``transfer_queue._controller_host``) that calls it on every fetch.

    Raises ValueError for an unknown sampler name or storage backend
    (MooncakeStore and RayStore are not supported by this package)."""
    global _SESSION
    with _LOCK:
        s = _current_session()
        if s is not None:
            if _session_is_live(s):
                return conf
            logger.warning("the TransferQueue session of this process is gone (controller ended or Ray shut "
                           "down without close()); starting over")
            _teardown(s)
        _SESSION = None
        ray = _running_ray()
        _SESSION = _init_ray(ray, conf) if ray is not None else _init_local(conf)
        _register_atexit()
        return conf if not _SESSION.owner else _SESSION.conf


def _prepare(conf):
    """The merged config, checked before anything starts."""
    merged = _load_config(conf)
    _check_backend(merged)
    resolve_sampling_config(merged.controller.sampler)  # unknown name -> ValueError
    port = merged.metrics.port
    if merged.metrics.enabled and (not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535):
        raise InvalidArgumentError(f"metrics.port must be an int from 0 (a free port) to 65535, got {port!r}")
    return merged


def _storage_unit_infos(addresses) -> dict:
    infos = {}
    for i, address in enumerate(addresses):
        host, port = address[len("tcp://"):].rsplit(":", 1)
        infos[f"TransferQueueStorageUnit#{i}"] = ZMQServerInfo(
            role="TransferQueueStorage", id=f"TransferQueueStorageUnit#{i}", ip=host,
            ports={"request": int(port), "put_get_socket": int(port)})
    return infos


def _start_storage(conf, unit_addresses, ray=None):
    """Fills the backend block of conf; starts the Yuanrong worker(s) if asked:
    in a Ray cluster of several nodes one per node (_ClusterWorkers), else
    one on this node."""
    backend = conf.backend.storage_backend
    if backend == "SimpleStorage":
        conf.backend.SimpleStorage.zmq_info = _storage_unit_infos(unit_addresses)
        return None
    yr = conf.backend.Yuanrong
    _storage_manager_args(backend, yr)  # validates worker_port
    if not yr.get("auto_init", True):
        return None
    if ray is not None and len({n["NodeManagerAddress"] for n in ray.nodes() if n.get("Alive")}) > 1:
        return _ClusterWorkers.start(ray, yr)
    return _DsWorker.start(_default_host(), int(yr.worker_port), yr.get("worker_args", ""), yr.get("ucx_env_vars"))


_DEFAULT_PARTITION_LIMIT = 1 << 22  # ControllerOptions::max_samples_per_partition


def _controller_kwargs(conf) -> dict:
    units = 0  # Yuanrong: the datasystem worker holds the data
    if conf.backend.storage_backend == "SimpleStorage":
        units = conf.backend.SimpleStorage.num_data_storage_units
        if not isinstance(units, int) or isinstance(units, bool) or units < 1:
            raise InvalidArgumentError(
                f"backend.SimpleStorage.num_data_storage_units must be an int >= 1, got {units!r}")
    limits = {}
    total = conf.backend.SimpleStorage.get("total_storage_size") if units else None
    if total is not None:
        if not isinstance(total, int) or isinstance(total, bool) or total < 1:
            raise InvalidArgumentError(
                f"backend.SimpleStorage.total_storage_size must be an int >= 1 or null, got {total!r}")
        # Upstream gives each unit ceil(total / units) and routes sample by
        # sample; ours routes blocks of 64 indexes, so the controller keeps the
        # total whole (a put past it is refused before anything is written)
        # and each unit reports the total as its capacity.
        limits = {"max_samples_total": total, "max_samples_per_partition": min(total, _DEFAULT_PARTITION_LIMIT),
                  "unit_capacity_samples": total}
    return {"storage_units": units, **limits, "sampler": conf.controller.sampler,
            "polling_mode": bool(conf.controller.polling_mode),
            "metrics_port": conf.metrics.port if conf.metrics.enabled else None}


def _init_ray(ray, conf) -> _Session:
    try:
        actor = ray.get_actor(CONTROLLER_ACTOR_NAME, namespace=CONTROLLER_NAMESPACE)
    except ValueError:
        actor = None
    if actor is not None:
        return _attach_ray(ray, actor)
    merged = _prepare(conf)
    try:
        actor = TransferQueueController.options(name=CONTROLLER_ACTOR_NAME, namespace=CONTROLLER_NAMESPACE).remote(
            **_controller_kwargs(merged))
    except ValueError:  # another process took the name first
        return _attach_ray(ray, ray.get_actor(CONTROLLER_ACTOR_NAME, namespace=CONTROLLER_NAMESPACE))
    worker = None
    client = None
    try:
        merged.controller.zmq_info = process_zmq_server_info(actor)
        merged.metrics.endpoint = ray.get(actor.get_metrics_endpoint.remote())
        worker = _start_storage(merged, ray.get(actor.get_storage_units.remote()), ray)
        ray.get(actor.store_config.remote(merged))
        client = _make_client(merged)
        controller_pid = ray.get(actor.get_pid.remote())
    except BaseException:
        if client is not None:
            _close_client(client)
        if worker is not None:
            worker.stop()
        _kill_actor(ray, actor)
        raise
    return _Session(pid=os.getpid(), client=client, conf=merged, mode="ray", owner=True, controller=actor,
                    controller_pid=controller_pid, ds_worker=worker)


def _attach_ray(ray, actor) -> _Session:
    """Waits for the owner to publish its config, then builds the client."""
    deadline = time.monotonic() + _ATTACH_TIMEOUT_S
    delay = 0.02
    while True:
        published = ray.get(actor.get_config.remote())
        if published is not None:
            break
        if time.monotonic() > deadline:
            raise UnavailableError(f"the {CONTROLLER_ACTOR_NAME} actor published no config within "
                                   f"{_ATTACH_TIMEOUT_S:.0f} s (its owner's init() did not finish)")
        time.sleep(delay)  # the owner is still starting its storage
        delay = min(delay * 2, 1.0)
    return _Session(pid=os.getpid(), client=_make_client(published), conf=published, mode="ray", owner=False,
                    controller=actor)


def _kill_actor(ray, actor) -> None:
    with contextlib.suppress(Exception):
        ray.get(actor.stop.remote(), timeout=30)
    with contextlib.suppress(Exception):
        ray.kill(actor)


def _init_local(conf) -> _Session:
    rendezvous = _Rendezvous(os.environ.get(SESSION_ENV) or DEFAULT_SESSION)
    with rendezvous.locked():
        record = rendezvous.read_live()
        if record is not None:
            published = _conf_from_json(record["conf"])
            return _Session(pid=os.getpid(), client=_make_client(published), conf=published, mode="local",
                            owner=False, controller_pid=record["controller_pid"])
        merged = _prepare(conf)
        handle = TransferQueueControllerHandle(host=_default_host(), **_controller_kwargs(merged))
        worker = None
        client = None
        try:
            merged.controller.zmq_info = handle.info
            merged.metrics.endpoint = handle.get_metrics_endpoint()
            worker = _start_storage(merged, handle.storage_units)
            handle.store_config(merged)
            client = _make_client(merged)
            rendezvous.publish(handle.pid, merged)
        except BaseException:
            if client is not None:
                _close_client(client)
            if worker is not None:
                worker.stop()
            handle.stop()
            raise
    return _Session(pid=os.getpid(), client=client, conf=merged, mode="local", owner=True, controller=handle,
                    controller_pid=handle.pid, ds_worker=worker, rendezvous=rendezvous)


def get_client() -> TransferQueueClient:
    """This process's TransferQueueClient (for the low-level API). Before
    init(): AssertionError, as upstream."""
    s = _current_session()
    assert s is not None, "TransferQueue is not initialized: call transfer_queue.init() first"
    return s.client


def close() -> None:
    """Closes this process's client and stops what this process's init()
    started (the controller, its storage, a Yuanrong worker); a process that
    attached leaves them running. Afterwards init() starts or attaches anew
    (also after ray.shutdown() / ray.init()). Errors while stopping are
    logged, not raised. Idempotent."""
    global _SESSION
    with _LOCK:
        s = _current_session()
        _SESSION = None
        if s is not None:
            _teardown(s)


def _teardown(s: _Session) -> None:
    _close_client(s.client)
    if not s.owner:
        return
    if s.mode == "local":
        with contextlib.suppress(Exception):
            s.rendezvous.remove_if_owned(s.controller_pid)
        s.controller.stop()
    else:
        ray = _running_ray()
        if ray is not None:
            _kill_actor(ray, s.controller)
        # Without Ray (shut down first) the actor, and with it the
        # controller process, has ended already.
    if s.ds_worker is not None:
        s.ds_worker.stop()


def _register_atexit() -> None:
    global _ATEXIT_REGISTERED
    if not _ATEXIT_REGISTERED:
        atexit.register(close)  # a Yuanrong worker is a daemon: it would outlive this process
        _ATEXIT_REGISTERED = True


def get_metrics_endpoint() -> str | None:
    """The controller's Prometheus endpoint ("host:port", GET /metrics), as
    upstream's: set when init() started the controller with
    ``{"metrics": {"enabled": True, "port": 0}}``; None when metrics are off
    or before init(). Processes that attached to the session see it too."""
    s = _current_session()
    if s is None:
        return None
    return s.conf.metrics.get("endpoint") or None


def _checkpoint_session(what: str) -> _Session:
    s = _current_session()
    if s is None:
        raise RuntimeError(f"{what}: TransferQueue is not initialized; call transfer_queue.init() first")
    return s


def save_checkpoint(checkpoint_dir, *, include_storage: bool = True, metadata: dict | None = None) -> None:
    """Saves the controller's whole metadata state and (``include_storage``)
    the data of every produced sample into ``checkpoint_dir`` (created; an
    existing checkpoint there is replaced atomically). ``metadata`` (a dict
    of JSON values) goes into metadata.json. With SimpleStorage the data
    lives only in the controller's memory, so, as upstream, include_storage
    is forced on. Layout: transfer_queue/checkpoint.py.

    Raises RuntimeError before init(), OSError when a file cannot be
    written."""
    from . import checkpoint

    with _LOCK:
        s = _checkpoint_session("save_checkpoint")
    if not include_storage and s.conf.backend.storage_backend == "SimpleStorage":
        logger.warning("save_checkpoint: include_storage=False has no effect with SimpleStorage "
                       "(its data is in memory only); saving the storage too")
        include_storage = True
    checkpoint.save(s.client, checkpoint_dir, include_storage=include_storage, metadata=metadata)


def load_checkpoint(checkpoint_dir) -> None:
    """Replaces the controller's state by a save_checkpoint's: the same
    partitions, samples (global indexes and generations), fields, custom
    meta, keys and consumption. When the checkpoint holds the storage, the
    current partitions' data is freed and the saved data is written back;
    without it only the metadata is restored (the data must still be in
    the storage). The snapshot is checked before anything changes.

    Raises RuntimeError before init() or for a corrupt or foreign checkpoint
    (nothing changed), FileNotFoundError for a missing directory or file."""
    from . import checkpoint

    with _LOCK:
        s = _checkpoint_session("load_checkpoint")
    checkpoint.load(s.client, checkpoint_dir)
