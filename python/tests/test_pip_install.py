"""`pip install --no-build-isolation --no-index .` into a throwaway venv
(offline), then the installed packages and console scripts, used from that
venv alone: imports, `tq` / `dscli`, a worker started and stopped with
`dscli`, and a small put/get through a controller on both backends.

The install builds the extension and the programs with CMake (setup.py).
By default it builds from scratch in a temporary directory with 2 jobs
(about 1.5 to 3 minutes on 2 cores). To reuse a build instead, point
TQDS_PIP_TEST_BUILD_DIR at a configured CMake build directory (e.g. build/):
setup.py then only brings its _tqds, tq, dscli and ds_worker targets up to
date there (TQDS_CMAKE_BUILD_DIR), without reconfiguring it.

    TQDS_PIP_TEST_BUILD_DIR=$PWD/build /usr/bin/python3 -m pytest -q python/tests/test_pip_install.py

Skipped, with the reason, where venv/pip (python3-venv, python3-pip),
setuptools/wheel or cmake are missing.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import REPO, free_port, kill_pid

INSTALL_TIMEOUT_S = 900


def _missing_tools() -> list[str]:
    missing = [f"python module {m} (Debian package {pkg})"
               for m, pkg in (("venv", "python3-venv"), ("ensurepip", "python3-venv"), ("pip", "python3-pip"),
                              ("setuptools", "python3-setuptools"), ("wheel", "python3-wheel"))
               if importlib.util.find_spec(m) is None]
    if shutil.which("cmake") is None:
        missing.append("cmake")
    return missing


pytestmark = pytest.mark.skipif(bool(_missing_tools()),
                                reason=f"pip install test needs {', '.join(_missing_tools())}")


def _copy_sources(dst: Path) -> Path:
    """The repository without build trees, caches or .git: the install then
    writes nothing into the checkout."""
    def ignore(_dir, names):
        return [n for n in names if n.startswith("build") or n in (".git", ".pytest_cache", "__pycache__")
                or n.endswith(".egg-info")]
    shutil.copytree(REPO, dst, ignore=ignore)
    return dst


def _run_group(cmd: list[str], timeout: float, **kw) -> subprocess.CompletedProcess:
    """Runs cmd in its own process group; on timeout kills that group (the
    compilers a pip build starts too), then fails."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, **kw)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"{' '.join(cmd)} took more than {timeout:.0f} s:\n{out[-4000:]}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, "")


class Venv:
    def __init__(self, root: Path):
        self.root = root
        self.bin = root / "bin"
        self.python = self.bin / "python"
        # Only the venv and the system: no build trees, no PYTHONPATH, no
        # /usr/local (where an older install may live).
        self.env = {k: v for k, v in os.environ.items()
                    if k not in ("PYTHONPATH", "TQ_BINARY", "PYTHONHOME", "VIRTUAL_ENV")}
        self.env["PATH"] = f"{self.bin}{os.pathsep}/usr/bin{os.pathsep}/bin"

    def run(self, *cmd: str, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess:
        r = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout, env=self.env,
                           cwd=self.root)
        if check and r.returncode != 0:
            pytest.fail(f"{' '.join(cmd)} exited {r.returncode}:\n{r.stdout}{r.stderr}")
        return r


@pytest.fixture(scope="module")
def venv(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pip_install")
    r = subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(tmp / "venv")],
                       capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        pytest.skip(f"cannot create a venv with pip (install python3-venv): {(r.stdout + r.stderr).strip()}")
    v = Venv(tmp / "venv")
    src = _copy_sources(tmp / "src")
    env = dict(v.env)
    reuse = os.environ.get("TQDS_PIP_TEST_BUILD_DIR")
    env["TQDS_CMAKE_BUILD_DIR"] = reuse or str(tmp / "cmake")
    env.setdefault("TQDS_BUILD_JOBS", "2")
    r = _run_group([str(v.python), "-m", "pip", "install", "--no-build-isolation", "--no-index", str(src)],
                   INSTALL_TIMEOUT_S, env=env, cwd=tmp)
    if r.returncode != 0:
        pytest.fail(f"pip install exited {r.returncode}:\n{r.stdout[-6000:]}")
    return v


def test_imports_come_from_the_venv(venv):
    r = venv.run(str(venv.python), "-c",
                 "import sys, _tqds, transfer_queue, datasystem; "
                 "print('\\n'.join(m.__file__ for m in (_tqds, transfer_queue, datasystem)))")
    for path in r.stdout.split():
        assert Path(path).resolve().is_relative_to(venv.root.resolve()), r.stdout


def test_console_scripts(venv):
    for prog, word in (("tq", "controller"), ("dscli", "start")):
        exe = shutil.which(prog, path=venv.env["PATH"])
        assert exe and Path(exe).parent == venv.bin, exe
        r = venv.run(prog, "--help")
        assert word in r.stdout, r.stdout


PUT_GET = textwrap.dedent("""
    import os, sys
    from pathlib import Path
    import torch
    import transfer_queue as tq
    from datasystem import KVClient

    pid_file, worker_port = sys.argv[1], int(sys.argv[2])
    ctl = tq.TransferQueueController.remote(storage_units=1, unit_capacity_mb=64)
    Path(pid_file).write_text(str(ctl.pid))
    # The controller is the bundled `tq`, not one found elsewhere on the system.
    exe = Path(os.readlink(f"/proc/{ctl.pid}/exe"))
    assert exe.is_relative_to(Path(sys.prefix).resolve()), exe
    info = tq.process_zmq_server_info(ctl)
    x = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    for backend, cfg in (("SimpleStorageManager", {}),
                         ("YuanrongStorageManager", {"client_name": "YuanrongStorageClient",
                                                     "host": "127.0.0.1", "port": worker_port})):
        c = tq.TransferQueueClient(f"pip-{backend}", info)
        c.initialize_storage_manager(backend, cfg)
        c.put({"x": x, "s": ["a", "b", "c", "d"]}, partition_id=backend)
        out = c.get_data(c.get_meta(["x", "s"], 4, backend, "t"))
        assert torch.equal(out["x"], x) and list(out["s"]) == ["a", "b", "c", "d"], backend
        c.clear_partition(backend)
    kv = KVClient("127.0.0.1", worker_port)
    kv.init()
    kv.set("pip-key", b"value")
    assert kv.get("pip-key") == b"value"
    ctl.stop()
    print("put/get ok")
""")


def test_worker_and_put_get(venv, tmp_path):
    port = free_port()
    address = f"127.0.0.1:{port}"
    worker_pid = controller_pid = None
    pid_file = tmp_path / "controller.pid"
    try:
        r = venv.run("dscli", "start", "-w", "--worker_address", address, "--unix_socket_dir", str(tmp_path),
                     "--shared_memory_size_mb", "64")
        m = re.search(r"\(pid (\d+)", r.stdout)
        assert m, r.stdout
        worker_pid = int(m.group(1))
        exe = Path(os.readlink(f"/proc/{worker_pid}/exe"))
        assert exe.is_relative_to(venv.root.resolve()), exe  # the bundled ds_worker
        r = venv.run(str(venv.python), "-c", PUT_GET, str(pid_file), str(port), timeout=120, check=False)
        if pid_file.exists():
            controller_pid = int(pid_file.read_text())
        assert r.returncode == 0 and "put/get ok" in r.stdout, r.stdout + r.stderr
        r = venv.run("dscli", "stop", "--worker_address", address, "--timeout_s", "10", timeout=30)
        assert "stopped" in r.stdout, r.stdout
    finally:
        kill_pid(controller_pid)
        kill_pid(worker_pid)
