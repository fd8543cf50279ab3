"""The wheel, as a user gets it: `python -m build --wheel` from the source
tree, then `pip install <wheel>` into a fresh virtual environment (no system
site-packages; torch 2.13.0 CPU, tensordict, numpy and omegaconf come from
pip as the package declares them), and everything used from that venv alone,
from a directory outside the source tree: imports, the `tq` / `dscli`
console scripts, a worker started and stopped with `dscli`, and a put/get
with real TensorDicts through a controller on both backends.

The wheel build reuses the build tree of scripts/setup.sh (build/, with the
options of scripts/pip-dev-args), so it only relinks; without that tree it
is an isolated build of its own.
Skipped, with the reason, where venv or pip are missing.
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
import tempfile
import textwrap
import zipfile
from pathlib import Path

import pytest

from conftest import REPO, free_port, kill_pid

BUILD_TIMEOUT_S = 1200
INSTALL_TIMEOUT_S = 900

pytestmark = pytest.mark.skipif(importlib.util.find_spec("venv") is None or importlib.util.find_spec("pip") is None,
                                reason="the wheel test needs the venv and pip modules")


def _run_group(cmd: list[str], timeout: float, **kw) -> subprocess.CompletedProcess:
    """Runs cmd in its own process group; on timeout kills that group (the
    compilers a build starts too), then fails."""
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
        # other venv's console scripts.
        self.env = {k: v for k, v in os.environ.items()
                    if k not in ("PYTHONPATH", "TQ_BINARY", "PYTHONHOME", "VIRTUAL_ENV")}
        self.env["PATH"] = f"{self.bin}{os.pathsep}/usr/bin{os.pathsep}/bin"

    def run(self, *cmd: str, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess:
        r = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout, env=self.env,
                           cwd=self.root)
        if check and r.returncode != 0:
            pytest.fail(f"{' '.join(cmd)} exited {r.returncode}:\n{r.stdout}{r.stderr}")
        return r


def _requires(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as z:
        meta = next(z.read(n).decode() for n in z.namelist() if n.endswith(".dist-info/METADATA"))
    return [line.split(":", 1)[1].strip() for line in meta.splitlines() if line.startswith("Requires-Dist:")]


def _lower_bounds(wheel: Path) -> dict[str, str]:
    """name -> X for each plain (not extra) dependency declared `name>=X`."""
    bounds = {}
    for r in _requires(wheel):
        m = re.fullmatch(r"([A-Za-z0-9_.-]+)\s*>=\s*([0-9.]+)", r)
        if m:
            bounds[m.group(1).lower()] = m.group(2)
    return bounds


def _reuse_dev_build() -> list[str]:
    """`python -m build` options that build the wheel in the tree
    scripts/setup.sh made (build/, scripts/pip-dev-args: no isolation, this
    venv's scikit-build-core), so that it only relinks; none (an isolated
    build of its own, as a user's) where that tree or those tools are
    missing."""
    args = REPO / "scripts" / "pip-dev-args"
    if not (REPO / "build" / "CMakeCache.txt").exists() or not args.exists() or any(
            importlib.util.find_spec(m) is None for m in ("scikit_build_core", "pybind11")):
        return []
    opts = [a.strip() for a in args.read_text().splitlines() if a.strip()]
    return ["--no-isolation" if a == "--no-build-isolation" else a for a in opts]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    if importlib.util.find_spec("build") is None:
        pytest.skip("python -m build is not installed (pip install .[test])")
    out = tmp_path_factory.mktemp("dist")
    r = _run_group([sys.executable, "-m", "build", "--wheel", *_reuse_dev_build(), "--outdir", str(out), str(REPO)],
                   BUILD_TIMEOUT_S, cwd=out)
    if r.returncode != 0:
        pytest.fail(f"python -m build --wheel exited {r.returncode}:\n{r.stdout[-6000:]}")
    wheels = list(out.glob("*.whl"))
    assert len(wheels) == 1, r.stdout[-2000:]
    return wheels[0]


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory) -> Venv:
    tmp = tmp_path_factory.mktemp("wheel_venv")
    r = subprocess.run([sys.executable, "-m", "venv", str(tmp / "venv")], capture_output=True, text=True,
                       timeout=120)
    if r.returncode != 0:
        pytest.skip(f"cannot create a venv: {(r.stdout + r.stderr).strip()}")
    v = Venv(tmp / "venv")
    pip = [str(v.python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    # The declared lower bounds themselves (the main venv has the newest
    # releases), so that every bound is a tested version; torch's is 2.13,
    # the CPU build this machine keeps on disk, pinned in the same resolve.
    args = [f"{name}=={low}" for name, low in _lower_bounds(wheel).items()] + [str(wheel)]
    r = _run_group(pip + args, INSTALL_TIMEOUT_S, env=v.env, cwd=tmp)
    if r.returncode != 0:
        pytest.fail(f"pip install {' '.join(args)} exited {r.returncode}:\n{r.stdout[-6000:]}")
    return v


def test_wheel_holds_the_packages_and_programs_only(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    for prog in ("tq", "dscli", "datasystem_worker"):
        assert f"datasystem/_bin/{prog}" in names, names
    assert any(re.fullmatch(r"_tqds\.cpython-.*\.so", n) for n in names), names
    assert "transfer_queue/__init__.py" in names and "datasystem/__init__.py" in names
    assert "yr/datasystem/__init__.py" in names  # openYuanrong's import path
    tops = {n.split("/", 1)[0] for n in names}
    extra = {t for t in tops if not (t in ("transfer_queue", "datasystem", "yr") or t.startswith("_tqds")
                                     or t.endswith(".dist-info"))}
    assert not extra, f"unexpected top-level entries in the wheel: {sorted(extra)}"


def test_declared_dependencies(wheel):
    with zipfile.ZipFile(wheel) as z:
        meta = next(z.read(n).decode() for n in z.namelist() if n.endswith(".dist-info/METADATA"))
    requires = _requires(wheel)
    plain = {re.split(r"[ <>=;\[]", r, maxsplit=1)[0].lower() for r in requires if "extra ==" not in r}
    assert plain == {"torch", "tensordict", "numpy", "omegaconf"}, requires
    assert set(_lower_bounds(wheel)) == plain, requires  # each with a lower bound the venv below installs
    assert any(r.startswith("ray") and 'extra == "ray"' in r for r in requires), requires
    assert any(r.startswith("pytest") and 'extra == "test"' in r for r in requires), requires
    # One version for both packages: CMakeLists.txt's project() is the source.
    cmake_version = re.search(r"project\(tqds VERSION ([0-9.]+)", (REPO / "CMakeLists.txt").read_text()).group(1)
    assert f"\nVersion: {cmake_version}\n" in meta, meta[:300]


def test_the_venv_runs_on_the_lowest_declared_versions(venv, wheel):
    r = venv.run(str(venv.python), "-c",
                 "import importlib.metadata as m, sys; "
                 "print('\\n'.join(f'{n} {m.version(n)}' for n in sys.argv[1:]))", *_lower_bounds(wheel))
    got = dict(line.split() for line in r.stdout.splitlines())
    for name, low in _lower_bounds(wheel).items():
        have = [int(x) for x in got[name].split("+")[0].split(".")]
        want = [int(x) for x in low.split(".")]
        assert have[:len(want)] == want, (name, got[name], low)


def test_imports_come_from_the_venv(venv):
    r = venv.run(str(venv.python), "-c",
                 "import sys, _tqds, transfer_queue, datasystem, tensordict, torch; "
                 "print('\\n'.join(m.__file__ for m in (_tqds, transfer_queue, datasystem, tensordict, torch)))")
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
    from tensordict import TensorDict
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
        c.put(TensorDict({"x": x, "s": ["a", "b", "c", "d"]}, batch_size=[4]), partition_id=backend)
        out = c.get_data(c.get_meta(["x", "s"], 4, backend, task_name="t"))
        assert isinstance(out, TensorDict), type(out)
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
    # The worker's socket path must stay short; pytest's tmp_path (under
    # xdist, .../popen-gwN/...) may be too long for one.
    socket_dir = tempfile.mkdtemp(prefix="tqpip_", dir="/tmp")
    try:
        r = venv.run("dscli", "start", "-w", "--worker_address", address, "--unix_socket_dir", socket_dir,
                     "--shared_memory_size_mb", "64")
        m = re.search(r"PID: (\d+)", r.stdout)
        assert m, r.stdout
        worker_pid = int(m.group(1))
        exe = Path(os.readlink(f"/proc/{worker_pid}/exe"))
        assert exe.is_relative_to(venv.root.resolve()), exe  # the bundled datasystem_worker
        r = venv.run(str(venv.python), "-c", PUT_GET, str(pid_file), str(port), timeout=120, check=False)
        if pid_file.exists():
            controller_pid = int(pid_file.read_text())
        assert r.returncode == 0 and "put/get ok" in r.stdout, r.stdout + r.stderr
        r = venv.run("dscli", "stop", "--worker_address", address, "--timeout_s", "10", timeout=30)
        assert "[  OK  ] Stop worker service" in r.stdout, r.stdout
    finally:
        kill_pid(controller_pid)
        kill_pid(worker_pid)
        shutil.rmtree(socket_dir, ignore_errors=True)
