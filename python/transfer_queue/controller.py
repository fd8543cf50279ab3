"""TransferQueueController.remote(), ZMQServerInfo and process_zmq_server_info,
with the seed's names. Without Ray, remote() starts a local controller
process (`tq controller`, with two embedded storage units); where Ray is
installed, it starts the same controller process inside a Ray actor, and the
process lives exactly as long as the actor.

The constructor also takes upstream TransferQueue's ``sampler=`` (the
controller-wide sampler: a built-in's name, class or instance, or a custom
Python sampler, which then runs in a Python controller process) and
``polling_mode=``, and the actor keeps the config that ``transfer_queue.init``
publishes (``store_config`` / ``get_config``)."""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import uuid
import weakref

from _tqds import InvalidArgumentError, UnavailableError


class ZMQServerInfo:
    """Where a ZMQ server listens. Picklable, so it can be handed to other
    processes and Ray actors. A plain class on purpose: OmegaConf (with
    allow_objects) keeps it as an object, where a dataclass would be turned
    into a DictConfig."""

    __slots__ = ("role", "id", "ip", "ports")

    def __init__(self, role: str, id: str, ip: str, ports: dict | None = None):
        self.role = role
        self.id = id
        self.ip = ip
        self.ports = dict(ports or {})

    def __eq__(self, other) -> bool:
        return isinstance(other, ZMQServerInfo) and (self.role, self.id, self.ip, self.ports) == (
            other.role, other.id, other.ip, other.ports)

    def __hash__(self) -> int:
        return hash((self.role, self.id, self.ip, tuple(sorted(self.ports.items()))))

    def __reduce__(self):
        return (ZMQServerInfo, (self.role, self.id, self.ip, self.ports))

    def __repr__(self) -> str:
        return f"ZMQServerInfo(role={self.role!r}, id={self.id!r}, ip={self.ip!r}, ports={self.ports!r})"

    def to_addr(self, port_name: str = "request") -> str:
        return f"tcp://{self.ip}:{self.ports[port_name]}"

    @property
    def address(self) -> str:
        return self.to_addr("request")

    def to_dict(self) -> dict:
        return {"role": self.role, "id": self.id, "ip": self.ip, "ports": dict(self.ports)}

    @staticmethod
    def from_address(address: str, role: str = "TransferQueueController", id: str | None = None) -> "ZMQServerInfo":
        """Our controller serves every request on one port: ``ports`` names it
        "request", and also "request_handle_socket" and "handshake_socket",
        upstream's names for its two controller ports."""
        if not address.startswith("tcp://") or address.count(":") != 2:
            raise ValueError(f"expected an address like tcp://host:port, got {address!r}")
        host, port = address[len("tcp://"):].rsplit(":", 1)
        return ZMQServerInfo(role=role, id=id or f"{role}-{port}", ip=host,
                             ports={name: int(port) for name in _CONTROLLER_PORT_NAMES})


# The one port of our controller under its own name and upstream's two.
_CONTROLLER_PORT_NAMES = ("request", "request_handle_socket", "handshake_socket")


def _env_seconds(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise InvalidArgumentError(f"{name}={raw!r}: expected a number of seconds") from None
    if value < 0:
        raise InvalidArgumentError(f"{name}={raw!r}: must not be negative")
    return value


def default_fetch_timeout() -> float:
    """Seconds a fetch-mode get_meta waits for enough samples when the call
    names no timeout. Upstream gives up after about
    max(TQ_CONTROLLER_GET_METADATA_TIMEOUT (default 1),
    TQ_CONTROLLER_GET_METADATA_CHECK_INTERVAL (default 5)) seconds; where
    either variable is set, that is the wait here too. With neither set, a
    fetch waits up to 60 s, as the seed's did: ours is answered the moment
    the samples arrive, so a longer bound only matters to a job that is
    stuck. Read on every call. (Here, not in interface.py, so that client.py
    can import it without a cycle.)

    Upstream's other TQ_* knobs (ZMQ sizing, storage RPC timeouts, logging,
    metrics cadence) are accepted and ignored."""
    names = ("TQ_CONTROLLER_GET_METADATA_TIMEOUT", "TQ_CONTROLLER_GET_METADATA_CHECK_INTERVAL")
    if all((os.environ.get(n) or "").strip() == "" for n in names):
        return 60.0
    return max(_env_seconds(names[0], 1.0), _env_seconds(names[1], 5.0))


def pre_alloc_sample_num() -> int:
    """Upstream's TQ_PRE_ALLOC_SAMPLE_NUM: the indexes each new partition
    reserves (default 1). The controller process reads the variable itself;
    this checks it first, so a bad value fails init() with its name."""
    raw = (os.environ.get("TQ_PRE_ALLOC_SAMPLE_NUM") or "").strip() or "1"
    try:
        n = int(raw)
    except ValueError:
        raise ValueError(f"TQ_PRE_ALLOC_SAMPLE_NUM={raw!r} is not a whole number") from None
    if not 0 <= n <= 1 << 24:
        raise ValueError(f"TQ_PRE_ALLOC_SAMPLE_NUM={n} is outside [0, 2^24]")
    return n


def _tq_binary() -> str:
    """$TQ_BINARY, else the `tq` a pip install bundles (built with this very
    extension, so it wins over an older one on PATH), else `tq` on PATH."""
    bundled = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "datasystem", "_bin", "tq")
    path = os.environ.get("TQ_BINARY") or (bundled if os.path.exists(bundled) else shutil.which("tq"))
    if not path:
        raise FileNotFoundError("the `tq` program is not on PATH (run the README's set-up command)")
    return path


def _default_host() -> str:
    """127.0.0.1, or this node's address inside a Ray cluster of more than
    one node (an actor on one node serves clients on the others). Serving
    such an address needs the deployment's keys (TQDS_CURVE_KEY_DIR, made
    with `tq keys DIR`, on every node) or explicit consent to plain tcp
    (TQDS_ALLOW_INSECURE=1); a single-node cluster stays on loopback."""
    try:
        import ray  # type: ignore

        if ray.is_initialized() and len({n["NodeManagerAddress"] for n in ray.nodes() if n.get("Alive")}) > 1:
            return ray.util.get_node_ip_address()
    except Exception:  # no Ray, or it cannot tell
        pass
    return "127.0.0.1"


_PR_SET_PDEATHSIG = 1
try:
    _prctl = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):  # not Linux
    _prctl = None


def _die_with_parent(parent_pid: int):
    """A preexec_fn: the child gets SIGKILL when the thread that started it
    exits (so when its process exits, however it dies: a Ray actor's worker
    is killed with SIGKILL, which runs no atexit handler). If the parent
    died before prctl took effect, the child ends itself."""

    def preexec():
        _prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        if os.getppid() != parent_pid:
            os.kill(os.getpid(), int(signal.SIGKILL))

    return preexec


# The policy the controller runs when a get_meta call names no sampler.
_SEQUENTIAL = {"sampler": "sequential"}

def resolve_sampling_config(sampler) -> dict | None:
    """The controller-wide sampling config for upstream's ``sampler`` setting
    (a built-in sampler's class name, its class, or an instance), or None for
    the controller's default (sequential) and for a custom Python sampler
    (see custom_sampler: that one runs in the controller process itself). An
    unknown name raises ValueError."""
    if sampler is None or custom_sampler(sampler) is not None:
        return None
    from .sampler import resolve_sampler  # lazy: the samplers are not needed to start a plain controller

    config = dict(resolve_sampler(sampler)._tq_sampling_config())
    return None if config in ({}, _SEQUENTIAL) else config


def custom_sampler(sampler):
    """The sampler instance when upstream's ``sampler`` setting names a
    Python sampler our C++ samplers cannot run (a BaseSampler subclass of the
    user's, or a built-in whose ``sample`` is overridden; a class is
    instantiated), else None. An unknown name raises ValueError."""
    if sampler is None:
        return None
    from .sampler import resolve_sampler

    instance = resolve_sampler(sampler)
    try:
        instance._tq_sampling_config()
    except NotImplementedError:
        return instance
    return None


def _pickle_sampler(sampler) -> bytes:
    """The sampler pickled for the controller host process: with cloudpickle
    (a tensordict and Ray dependency) where importable, so that a class of
    ``__main__`` or one defined in a function travels by value."""
    try:
        import cloudpickle as dumper  # type: ignore
    except ImportError:
        try:
            from ray import cloudpickle as dumper  # type: ignore
        except ImportError:
            import pickle as dumper
    try:
        return dumper.dumps(sampler)
    except Exception as e:
        raise TypeError(f"sampler {type(sampler).__qualname__} cannot be pickled for the controller process: "
                        f"{e}") from e


def _host_command(host: str, port: int, storage_units: int, unit_capacity_mb: int, polling_mode: bool,
                  limits: list[str]):
    """The controller host program (transfer_queue._controller_host) and its
    environment: this interpreter, with this process's import path, so the
    child imports the same transfer_queue and _tqds, and the sampler's
    module where the sampler was pickled by reference."""
    cmd = [sys.executable, "-m", "transfer_queue._controller_host", "--host", host, "--port", str(port),
           "--storage-units", str(storage_units), "--unit-capacity-mb", str(unit_capacity_mb), *limits]
    if polling_mode:
        cmd.append("--polling-mode")
    env = dict(os.environ)
    paths = [os.path.abspath(p) for p in sys.path if p and os.path.isdir(p)]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths + [p for p in env.get("PYTHONPATH", "").split(
        os.pathsep) if p]))
    return cmd, env


def _stop_process(proc: subprocess.Popen, lock: threading.Lock) -> None:
    with lock:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stdout:
            proc.stdout.close()


class TransferQueueControllerHandle:
    """A controller running in a local child process. The process stops with
    stop(), when the handle is garbage-collected, at interpreter exit, and,
    when the handle was made on the main thread, also when this process is
    killed (the child gets SIGKILL when its parent dies: PR_SET_PDEATHSIG).

    Inside a Ray actor (``TransferQueueController.remote()``) that ties the
    controller process to the actor: it ends when the actor ends (its last
    handle goes, ``ray.kill``, the owner's exit, or the node's)."""

    def __init__(self, host: str | None = None, port: int = 0, storage_units: int = 2,
                 unit_capacity_mb: int = 8192, sampler=None, polling_mode: bool = False,
                 metrics_port: int | None = None, state_dir: str | None = None, unit_capacity_samples: int = 0,
                 max_samples_per_partition: int | None = None, max_samples_total: int | None = None):
        """sampler: the controller-wide sampler (upstream's kwarg: a built-in
        sampler's name, class or instance; None = sequential; any other
        BaseSampler class or instance runs in a Python controller process,
        transfer_queue._controller_host, which gets it pickled). polling_mode:
        a fetch that finds too few samples returns an empty BatchMeta at once
        instead of waiting. Both reach `tq controller` only when they differ
        from its defaults. metrics_port: serve Prometheus metrics (upstream's
        tq_* names) on host at this port (0: a free one);
        get_metrics_endpoint() gives "host:port". Served by the C++
        controller process, so not with a Python sampler. state_dir: keep
        the controller's state in this directory (`tq controller
        --state-dir`): a controller killed in any way and started again on
        the same directory and port resumes exactly, and clients resend
        their requests by themselves (give a fixed port; not with a Python
        sampler; embedded storage units lose their data with the process).
        unit_capacity_samples: samples each embedded unit may hold (0: no
        limit but unit_capacity_mb); a put past it fails naming the unit.
        max_samples_per_partition / max_samples_total: the controller's
        allocation limits (`tq controller --max-samples-*`; None: its
        defaults); a put past them fails before anything is written (tq.init
        maps upstream's total_storage_size onto them)."""
        limits = []
        for name, value, low in (("unit_capacity_samples", unit_capacity_samples, 0),
                                 ("max_samples_per_partition", max_samples_per_partition, 1),
                                 ("max_samples_total", max_samples_total, 1)):
            if value is None or (name == "unit_capacity_samples" and value == 0):
                continue
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise InvalidArgumentError(f"{name} must be an int >= {low}, got {value!r}")
            limits += ["--" + name.replace("_", "-"), str(value)]
        host = host or _default_host()
        pre_alloc_sample_num()  # a bad TQ_PRE_ALLOC_SAMPLE_NUM: ValueError naming it
        custom = custom_sampler(sampler)
        if metrics_port is not None and custom is not None:
            raise InvalidArgumentError("metrics_port: the Prometheus endpoint is served by the C++ controller "
                                       "process, which a Python sampler replaces; use a built-in sampler")
        if state_dir is not None and custom is not None:
            raise InvalidArgumentError("state_dir: a restarted controller replays its requests, which only the "
                                       "built-in samplers answer exactly as before; use a built-in sampler")
        env = payload = None
        if custom is not None:
            # A Python sampler runs in a Python controller process (the same
            # C++ controller, embedded through _tqds, calling the sampler).
            payload = _pickle_sampler(custom)
            cmd, env = _host_command(host, port, storage_units, unit_capacity_mb, polling_mode, limits)
        else:
            cmd = [_tq_binary(), "controller", "--host", host, "--port", str(port),
                   "--storage-units", str(storage_units), "--unit-capacity-mb", str(unit_capacity_mb), *limits]
            sampling = resolve_sampling_config(sampler)
            if sampling is not None:
                cmd += ["--default-sampling", json.dumps(sampling)]
            if polling_mode:
                cmd += ["--polling-mode"]
            if metrics_port is not None:
                cmd += ["--metrics-port", str(metrics_port)]
            if state_dir is not None:
                cmd += ["--state-dir", os.fspath(state_dir)]
        self._config = None
        # PDEATHSIG fires when the *thread* that forked the child exits, so
        # only a child of the main thread can be tied to the process.
        tie = _prctl is not None and threading.current_thread() is threading.main_thread()
        self._proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env,
                                      stdin=subprocess.PIPE if payload is not None else None,
                                      preexec_fn=_die_with_parent(os.getpid()) if tie else None)
        self._lock = threading.Lock()
        self._finalizer = weakref.finalize(self, _stop_process, self._proc, self._lock)
        if payload is not None:
            try:
                self._proc.stdin.buffer.write(payload)
                self._proc.stdin.close()
            except BrokenPipeError:  # the child died first; the readiness check below says so
                pass
        line = self._proc.stdout.readline()  # the readiness line, or EOF if it failed
        if "listening on" not in line:
            code = self._proc.wait(timeout=10)
            self._finalizer()
            hint = "" if custom is None else (f" (it runs sampler {type(custom).__qualname__}; the controller "
                                              "process's error, e.g. unpickling it, is on stderr above)")
            raise UnavailableError(f"controller failed to start (exit {code}): {' '.join(cmd)}{hint}")
        address = line.strip().split("listening on ", 1)[1]
        self.storage_units = []
        for _ in range(storage_units):
            self.storage_units.append(self._proc.stdout.readline().strip().split("listening on ", 1)[1])
        self.metrics_endpoint = None
        if metrics_port is not None:  # "tq controller metrics on http://HOST:PORT/metrics"
            line = self._proc.stdout.readline().strip()
            if "metrics on http://" not in line:
                self._finalizer()
                raise UnavailableError(f"controller did not start its metrics endpoint: {line!r}")
            self.metrics_endpoint = line.split("http://", 1)[1].removesuffix("/metrics")
        self.info = ZMQServerInfo.from_address(address, id=f"TransferQueueController-{uuid.uuid4().hex[:8]}")

    @property
    def pid(self) -> int:
        return self._proc.pid

    def get_pid(self) -> int:
        """The controller process's pid (a method, so that a Ray actor handle has it too)."""
        return self._proc.pid

    def __reduce__(self):
        raise TypeError("a local TransferQueueControllerHandle owns its process and cannot be pickled; hand "
                        "process_zmq_server_info(handle) to other processes (or use the Ray actor from "
                        "TransferQueueController.remote())")

    def get_zmq_server_info(self) -> ZMQServerInfo:
        return self.info

    def get_metrics_endpoint(self) -> str | None:
        """"host:port" of the Prometheus endpoint (metrics_port given), else None."""
        return self.metrics_endpoint

    def get_storage_units(self) -> list:
        """The embedded storage units' addresses ('tcp://host:port')."""
        return list(self.storage_units)

    def store_config(self, conf) -> None:
        """Keeps the config transfer_queue.init() published (for attachers)."""
        self._config = conf

    def get_config(self):
        """The config stored with store_config, or None before it."""
        return self._config

    def is_alive(self) -> bool:
        return self._proc.poll() is None

    def stop(self) -> None:
        """Stops the controller process (SIGTERM, then SIGKILL after 10 s). Idempotent."""
        self._finalizer()


class TransferQueueController:
    """The seed's entry point: ``TransferQueueController.remote()``, and
    ``TransferQueueController.options(**ray_options).remote()`` as for a Ray
    actor class."""

    @staticmethod
    def remote(**kwargs):
        """A Ray actor where Ray is installed (Ray starts a local cluster if
        none is running, as for the seed's own ``@ray.remote`` controller);
        else a controller process on this host. kwargs: host, port,
        storage_units, unit_capacity_mb, and upstream's sampler and
        polling_mode (see TransferQueueControllerHandle)."""
        return TransferQueueController.options().remote(**kwargs)

    @staticmethod
    def options(**ray_options) -> "_Options":
        return _Options(ray_options)


class _Options:
    def __init__(self, ray_options: dict):
        self._ray_options = ray_options

    def remote(self, **kwargs):
        try:
            import ray  # type: ignore
        except ImportError:
            if self._ray_options:
                raise ImportError(f"Ray options {sorted(self._ray_options)} given, but Ray is not installed")
            return TransferQueueControllerHandle(**kwargs)
        # The actor only waits on a child process: it needs no CPU
        # (num_cpus=0 also lets it start on a node whose CPUs are all taken),
        # and it runs on the caller's node unless the options place it (Ray
        # would put a zero-resource actor on any node, even with a soft
        # affinity while the caller's node is still syncing its resources).
        opts = {"num_cpus": 0, **self._ray_options}
        placed = {"scheduling_strategy", "resources", "num_gpus", "accelerator_type", "label_selector"}
        if ray.is_initialized() and not placed & opts.keys():
            from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy  # type: ignore

            opts["scheduling_strategy"] = NodeAffinitySchedulingStrategy(
                node_id=ray.get_runtime_context().get_node_id(), soft=False)
        return _actor_class(ray).options(**opts).remote(**kwargs)


_ACTOR_CLASS = None
_ACTOR_CLASS_LOCK = threading.Lock()


def _actor_class(ray):
    global _ACTOR_CLASS
    with _ACTOR_CLASS_LOCK:
        if _ACTOR_CLASS is None:
            _ACTOR_CLASS = ray.remote(TransferQueueControllerHandle)
        return _ACTOR_CLASS


def _is_actor_handle(obj) -> bool:
    try:
        from ray.actor import ActorHandle  # type: ignore
    except ImportError:
        return False
    return isinstance(obj, ActorHandle)


def process_zmq_server_info(controller):
    """Server info of a controller handle (local, or a Ray actor: then it
    waits for the actor to start; an actor that failed to start raises Ray's
    error with the cause). A dict of handles gives a dict of infos, as
    upstream."""
    if isinstance(controller, dict):
        return {name: process_zmq_server_info(h) for name, h in controller.items()}
    if isinstance(controller, TransferQueueControllerHandle):
        return controller.info
    if isinstance(controller, ZMQServerInfo):
        return controller
    if _is_actor_handle(controller) or (hasattr(controller, "get_zmq_server_info")
                                        and hasattr(controller.get_zmq_server_info, "remote")):
        import ray  # type: ignore

        return ray.get(controller.get_zmq_server_info.remote())
    raise TypeError(f"not a TransferQueueController handle: {type(controller).__name__}")
