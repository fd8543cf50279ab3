"""TransferQueueController.remote(), ZMQServerInfo and process_zmq_server_info,
with the seed's names. Without Ray, remote() starts a local controller
process (`tq controller`, with two embedded storage units); with Ray
initialised, it starts the same controller inside a Ray actor."""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import threading
import uuid

from _tqds import UnavailableError


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

    @staticmethod
    def from_address(address: str, role: str = "TransferQueueController", id: str | None = None) -> "ZMQServerInfo":
        if not address.startswith("tcp://") or address.count(":") != 2:
            raise ValueError(f"expected an address like tcp://host:port, got {address!r}")
        host, port = address[len("tcp://"):].rsplit(":", 1)
        return ZMQServerInfo(role=role, id=id or f"{role}-{port}", ip=host, ports={"request": int(port)})


def _tq_binary() -> str:
    """$TQ_BINARY, else the `tq` a pip install bundles (built with this very
    extension, so it wins over an older one on PATH), else `tq` on PATH."""
    bundled = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "datasystem", "_bin", "tq")
    path = os.environ.get("TQ_BINARY") or (bundled if os.path.exists(bundled) else shutil.which("tq"))
    if not path:
        raise FileNotFoundError("the `tq` program is not on PATH (run the README's set-up command)")
    return path


def _default_host() -> str:
    """127.0.0.1, or this node's address inside a Ray cluster (an actor on
    one node serves clients on the others)."""
    try:
        import ray  # type: ignore

        if ray.is_initialized():
            return ray.util.get_node_ip_address()
    except Exception:  # no Ray, or it cannot tell
        pass
    return "127.0.0.1"


class TransferQueueControllerHandle:
    """A controller running in a local child process; stopped with stop(),
    when garbage-collected, or at interpreter exit."""

    def __init__(self, host: str | None = None, port: int = 0, storage_units: int = 2,
                 unit_capacity_mb: int = 8192):
        host = host or _default_host()
        cmd = [_tq_binary(), "controller", "--host", host, "--port", str(port),
               "--storage-units", str(storage_units), "--unit-capacity-mb", str(unit_capacity_mb)]
        self._proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        line = self._proc.stdout.readline()  # the readiness line, or EOF if it failed
        if "listening on" not in line:
            code = self._proc.wait(timeout=10)
            raise UnavailableError(f"controller failed to start (exit {code}): {' '.join(cmd)}")
        address = line.strip().split("listening on ", 1)[1]
        self.storage_units = []
        for _ in range(storage_units):
            self.storage_units.append(self._proc.stdout.readline().strip().split("listening on ", 1)[1])
        self.info = ZMQServerInfo.from_address(address, id=f"TransferQueueController-{uuid.uuid4().hex[:8]}")
        self._lock = threading.Lock()
        atexit.register(self.stop)

    @property
    def pid(self) -> int:
        return self._proc.pid

    def get_zmq_server_info(self) -> ZMQServerInfo:
        return self.info

    def stop(self) -> None:
        with self._lock:
            if self._proc.poll() is None:
                self._proc.terminate()
                try:
                    self._proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self._proc.kill()
                    self._proc.wait()
            if self._proc.stdout:
                self._proc.stdout.close()

    def __del__(self):
        try:
            self.stop()
        except Exception:
            pass


class TransferQueueController:
    """The seed's entry point: ``TransferQueueController.remote()``."""

    @staticmethod
    def remote(**kwargs):
        """A Ray actor where Ray is installed (Ray starts a local cluster if
        none is running, as for the seed's own ``@ray.remote`` controller);
        else a controller process on this host."""
        try:
            import ray  # type: ignore
        except ImportError:
            return TransferQueueControllerHandle(**kwargs)
        return ray.remote(TransferQueueControllerHandle).remote(**kwargs)


def process_zmq_server_info(controller) -> ZMQServerInfo:
    """Server info of a controller handle (local or Ray actor)."""
    if isinstance(controller, TransferQueueControllerHandle):
        return controller.info
    if hasattr(controller, "get_zmq_server_info") and hasattr(controller.get_zmq_server_info, "remote"):
        import ray  # type: ignore

        return ray.get(controller.get_zmq_server_info.remote())
    if isinstance(controller, ZMQServerInfo):
        return controller
    raise TypeError(f"not a TransferQueueController handle: {type(controller).__name__}")
