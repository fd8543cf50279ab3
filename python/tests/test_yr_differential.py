"""Differential test of yr.datasystem: the same KV calls (yr_diff_cases.py)
against openYuanrong datasystem's own wheel and worker, and against our
package and worker, must give the same results and raise the same errors.

The real wheel lives in its own venv (never among our dependencies):

    python3.11 -m venv .yr-venv && .yr-venv/bin/pip install openyuanrong-datasystem==0.8.1

(TQDS_YR_VENV points elsewhere). Its worker (datasystem_worker, shipped in
the wheel) needs an etcd; the test starts one and the worker on free
loopback ports and kills both by pid. Without the venv or etcd the test
skips, saying how to get them; when the real worker cannot run here, it
skips with the error the worker printed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, BUILD, free_port, kill_pid, pid_alive

CASES = Path(__file__).with_name("yr_diff_cases.py")
YR_VENV = Path(os.environ.get("TQDS_YR_VENV", REPO / ".yr-venv"))
REAL_WORKER_START_S = 90

# Cases where we differ from openYuanrong 0.8.1 on purpose, and why.
KNOWN_DIFFERENCES = {
    "mset_nx": "0.8.1's worker refuses ExistenceOpt.NX in mset ('MSet doesn't support nx'); ours "
               "skips an existing key and lists it among the failed keys",
    "mset_nx_read": "follows from mset_nx",
    "mset_some_bad_keys": "0.8.1 returns [] for a batch holding an invalid key next to valid ones "
                          "(the invalid key is not reported); ours lists the invalid key as failed",
    "mcreate_dup": "0.8.1 creates two buffers for a key given twice; ours refuses the batch "
                   "(one of the two writes would be lost at seal)",
}


def _real_python() -> Path:
    py = YR_VENV / "bin" / "python"
    if not py.exists():
        pytest.skip(f"openYuanrong's wheel is not installed in {YR_VENV}: python3.11 -m venv .yr-venv && "
                    ".yr-venv/bin/pip install openyuanrong-datasystem==0.8.1")
    r = subprocess.run([str(py), "-c", "import yr.datasystem, os; print(os.path.dirname(yr.datasystem.__file__))"],
                       capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        pytest.skip(f"openYuanrong's yr.datasystem does not import in {YR_VENV}: {r.stderr.strip()[-800:]}")
    return py


def _wait_port(port: int, proc: subprocess.Popen, timeout_s: float) -> bool:
    import socket
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return True
        time.sleep(0.1)
    return False


@pytest.fixture(scope="module")
def real_worker(tmp_path_factory):
    """openYuanrong's worker (from the wheel) and an etcd: yields (python, host, port)."""
    py = _real_python()
    etcd = shutil.which("etcd")
    if etcd is None:
        pytest.skip("etcd is not installed (apt-get install etcd-server); openYuanrong's worker needs one")
    pkg = Path(subprocess.run([str(py), "-c", "import yr.datasystem, os; print(os.path.dirname(yr.datasystem.__file__))"],
                              capture_output=True, text=True, timeout=120).stdout.strip())
    worker_bin = pkg / "datasystem_worker"
    if not worker_bin.exists():
        pytest.skip(f"the wheel has no worker binary at {worker_bin}")
    tmp = tmp_path_factory.mktemp("yr_real")
    etcd_port, peer_port, worker_port = free_port(), free_port(), free_port()
    procs: list[subprocess.Popen] = []
    try:
        etcd_log = open(tmp / "etcd.log", "w")
        procs.append(subprocess.Popen(
            [etcd, "--data-dir", str(tmp / "etcd"), "--name", "yrdiff",
             "--listen-client-urls", f"http://127.0.0.1:{etcd_port}",
             "--advertise-client-urls", f"http://127.0.0.1:{etcd_port}",
             "--listen-peer-urls", f"http://127.0.0.1:{peer_port}",
             "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer_port}",
             "--initial-cluster", f"yrdiff=http://127.0.0.1:{peer_port}"],
            stdout=etcd_log, stderr=subprocess.STDOUT))
        if not _wait_port(etcd_port, procs[0], 30):
            pytest.skip(f"etcd did not start: {(tmp / 'etcd.log').read_text()[-800:]}")
        env = dict(os.environ, LD_LIBRARY_PATH=f"{pkg / 'lib'}:{os.environ.get('LD_LIBRARY_PATH', '')}")
        out = open(tmp / "worker.out", "w")
        procs.append(subprocess.Popen(
            [str(worker_bin), f"--worker_address=127.0.0.1:{worker_port}",
             f"--etcd_address=127.0.0.1:{etcd_port}", "--shared_memory_size_mb=512",
             f"--log_dir={tmp / 'log'}", f"--unix_domain_socket_dir={tmp / 'uds'}",
             f"--rocksdb_store_dir={tmp / 'rocksdb'}"],
            stdout=out, stderr=subprocess.STDOUT, env=env, cwd=tmp))  # it writes ./datasystem/probe
        if not _wait_port(worker_port, procs[1], REAL_WORKER_START_S):
            printed = (tmp / "worker.out").read_text()[-1500:]
            logs = ""
            for f in sorted((tmp / "log").glob("*.INFO*"))[:1]:
                logs = f.read_text(errors="replace")[-1500:]
            pytest.skip(f"openYuanrong's worker cannot run on this machine (exit code "
                        f"{procs[1].poll()}): {printed or logs or 'it printed nothing'}")
        yield py, "127.0.0.1", worker_port
    finally:
        for p in reversed(procs):
            kill_pid(p.pid, timeout=10)
            p.wait(timeout=10)


def _run_cases(python: str, host: str, port: int, env: dict | None = None) -> dict:
    r = subprocess.run([python, str(CASES), host, str(port), "--wait-ready", "60"],
                       capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, f"{python} {CASES.name} failed:\n{r.stdout[-2000:]}\n{r.stderr[-4000:]}"
    return json.loads(r.stdout.strip().splitlines()[-1])


def _ours_env() -> dict:
    paths = [str(REPO / "python")]
    if any((BUILD / "python").glob("_tqds*.so")):
        paths.append(str(BUILD / "python"))
    return dict(os.environ, PYTHONPATH=os.pathsep.join(paths + [os.environ.get("PYTHONPATH", "")]))


def test_same_results_and_errors_as_openyuanrong(real_worker, ds_worker):
    real_py, host, port = real_worker
    real = _run_cases(str(real_py), host, port)
    ours = _run_cases(sys.executable, ds_worker.host, ds_worker.port, env=_ours_env())
    assert real.keys() == ours.keys()
    differ = {name: {"openyuanrong": real[name], "ours": ours[name]}
              for name in real if real[name] != ours[name] and name not in KNOWN_DIFFERENCES}
    assert not differ, "yr.datasystem differs from openYuanrong 0.8.1:\n" + json.dumps(differ, indent=1)
    # Recorded, not compared (pytest -s shows them).
    print("known differences:", json.dumps({n: {"openyuanrong": real[n], "ours": ours[n]}
                                            for n in KNOWN_DIFFERENCES}, indent=1))


def test_cases_run_against_ours_alone(ds_worker):
    """The case program itself against our worker (runs without the real wheel)."""
    ours = _run_cases(sys.executable, ds_worker.host, ds_worker.port, env=_ours_env())
    assert ours["get"] == {"ok": [{"bytes": "hello"}, {"bytes": "world"}, {"bytes": "ba"}, {"bytes": "mv"}]}
    assert ours["get_all_missing"] == {"raises": "RuntimeError", "code": "Key not found"}
    assert ours["ttl_expires"] == {"ok": [[True], True]}
    assert ours["mcreate_fill_seal"]["ok"][-1] == [{"bytes": "abcd"}, {"bytes": "xyz"}]
    assert ours["mset_nx"] == {"ok": ["<P>m1"]}
    assert ours["mset_nx_read"] == {"ok": [{"bytes": "z"}, {"bytes": "r"}]}
