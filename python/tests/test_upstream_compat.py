"""Issue 12's compatibility check: the scenarios in python/tests/compat,
written once against upstream TransferQueue 0.1.11's public API, run under
upstream itself (a "peer" venv with TransferQueue from PyPI) and under ours;
every scenario that passes upstream must pass ours. A scenario that fails
upstream is not counted (it would test a guess of upstream's behaviour), only
reported. Upstream's tutorial scripts (shipped in its wheel as `tutorial/`)
are held to the same rule, run unchanged with each interpreter, in
test_upstream_tutorials.py (a module of its own, so that pytest-xdist runs
the two halves side by side).

The peer venv: $TQ_PEER_VENV if set (an existing venv with TransferQueue
0.1.11, e.g. /work/peer-venv), else <repo>/.peer-venv made by
scripts/peer_venv.sh (skipped, with the reason, when that cannot be made,
e.g. without network). Ours: this interpreter, with the package found the way
conftest.py finds it (installed, or a build tree through TQDS_BUILD_DIR).
TQ_COMPAT_TUTORIALS=0 skips the tutorials (about a minute each per side).
Upstream's outcomes are cached per version of the scenario sources (see
_upstream_key), so a rerun only runs ours.
"""

from __future__ import annotations

import ast
import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from conftest import PEER_VENV

REPO = Path(__file__).resolve().parents[2]
COMPAT = REPO / "python" / "tests" / "compat"
BUILD = Path(os.environ.get("TQDS_BUILD_DIR", REPO / "build"))
PEER_SCRIPT = REPO / "scripts" / "peer_venv.sh"

SCENARIO_RUN_TIMEOUT = 1200  # seconds, per implementation (upstream takes about 2 minutes here)
TUTORIAL_TIMEOUT = 400  # seconds, per script and implementation
PEER_SETUP_TIMEOUT = 1800
# Upstream's tutorials as shipped in the TransferQueue 0.1.11 wheel.
TUTORIALS = [
    "01_core_components",
    "02_kv_interface",
    "03_metadata_concepts",
    "04_understanding_controller",
    "05_custom_sampler",
    "06_streaming_dataloader",
]


def _scenario_ids() -> list[str]:
    """'module::function' of every scenario, read from the sources (no import)."""
    ids = []
    for path in sorted(COMPAT.glob("test_*.py")):
        tree = ast.parse(path.read_text())
        ids += [f"{path.stem}::{n.name}" for n in tree.body
                if isinstance(n, ast.FunctionDef) and n.name.startswith("test_")]
    return ids


# ----------------------------------------------------------------- the two interpreters

def _run(cmd, env, cwd, timeout):
    """Runs cmd in its own process group; on return or timeout, ends that
    group (Ray's processes started by the run live in it)."""
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
        rc = proc.returncode
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        rc = None
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    return rc, out


def _base_env() -> dict:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH" and not k.startswith("PYTEST_")}
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # Ray keeps the node address 127.0.0.1
    # Upstream's controller and each storage unit ask Ray for one CPU; the
    # tutorials' ray.init() declares the machine's cores, too few on a small box.
    env.setdefault("RAY_OVERRIDE_RESOURCES", json.dumps({"CPU": max(8, os.cpu_count() or 1)}))
    return env


class Impl:
    """An interpreter and the environment that makes it import one implementation."""

    def __init__(self, name, python, env, pytest_path=None):
        self.name, self.python, self.env, self.pytest_path = name, str(python), env, pytest_path

    def pytest_cmd(self, args):
        if self.pytest_path:  # pytest installed beside the peer venv, appended to its path
            launcher = ("import sys; sys.path.append(sys.argv.pop(1)); import pytest; "
                        "raise SystemExit(pytest.main(sys.argv[1:]))")
            return [self.python, "-c", launcher, self.pytest_path, *args]
        return [self.python, "-m", "pytest", *args]


def _ours() -> Impl:
    env = _base_env()
    path = [str(Path(sys.executable).parent)]
    if os.environ.get("TQDS_TEST_INSTALLED") != "1":
        if (BUILD / "bin" / "tq").exists():
            path.insert(0, str(BUILD / "bin"))
        if any((BUILD / "python").glob("_tqds*.so")):
            env["PYTHONPATH"] = os.pathsep.join([str(REPO / "python"), str(BUILD / "python")])
    env["PATH"] = os.pathsep.join(path + [env.get("PATH", "")])
    return Impl("ours", sys.executable, env)


def _peer() -> Impl:
    given = os.environ.get("TQ_PEER_VENV")
    venv = Path(given) if given else PEER_VENV
    python = venv / "bin" / "python"
    if not given:
        try:
            r = subprocess.run(["bash", str(PEER_SCRIPT), str(venv)], capture_output=True, text=True,
                               timeout=PEER_SETUP_TIMEOUT)
        except subprocess.TimeoutExpired:
            pytest.skip(f"scripts/peer_venv.sh did not finish in {PEER_SETUP_TIMEOUT} s")
        if r.returncode != 0:
            tail = "\n".join((r.stdout + r.stderr).strip().splitlines()[-5:])
            pytest.skip(f"scripts/peer_venv.sh could not make the upstream venv (no network?):\n{tail}")
    env = _base_env()
    env["PATH"] = os.pathsep.join([str(venv / "bin"), env.get("PATH", "")])
    probe = subprocess.run([str(python), "-c", "from importlib.metadata import version; "
                            "import transfer_queue; print(version('TransferQueue'))"],
                           capture_output=True, text=True, env=env, timeout=300)
    if probe.returncode != 0:
        pytest.skip(f"{python} does not import upstream transfer_queue: {probe.stderr.strip()[-300:]}")
    if probe.stdout.strip() != "0.1.11":
        pytest.skip(f"{venv} holds TransferQueue {probe.stdout.strip()}, not 0.1.11")
    pytest_path = None
    if subprocess.run([str(python), "-c", "import pytest"], env=env, capture_output=True).returncode != 0:
        # A venv given through TQ_PEER_VENV is not ours to change: pytest goes beside it.
        pytest_path = str(Path(tempfile.gettempdir()) / f"tqds-peer-pytest-{os.getuid()}")
        if not (Path(pytest_path) / "pytest").is_dir():
            r = subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                                "--target", pytest_path, "pytest"], capture_output=True, text=True, env=env,
                               timeout=600)
            if r.returncode != 0:
                pytest.skip(f"cannot install pytest for {python}: {r.stderr.strip()[-300:]}")
    return Impl("upstream", python, env, pytest_path)


# ----------------------------------------------------------------- running the scenarios

def _summary(text: str) -> str:
    """The first lines of a failure, plus its last error lines (the cause of
    a wrapped error, e.g. why a Ray actor died, sits at the end)."""
    lines = text.strip().splitlines()
    head = lines[:4]
    causes = [line for line in lines[4:] if line.startswith("E ") and "Error" in line][-3:]
    return "\n".join(head + (["..."] + causes if causes else []))


def _parse_junit(path: Path) -> dict[str, tuple[str, str]]:
    """{'module::function': (outcome, first lines of the message)}"""
    results = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        module = case.get("classname", "").rsplit(".", 1)[-1]
        key = f"{module}::{case.get('name')}"
        outcome, message = "passed", ""
        for tag in ("failure", "error", "skipped"):
            el = case.find(tag)
            if el is not None:
                outcome = "failed" if tag in ("failure", "error") else "skipped"
                message = _summary((el.get("message") or "") + "\n" + (el.text or ""))
                if tag == "error" and key in results:  # a teardown error after a pass
                    outcome = "failed"
                break
        if key in results and results[key][0] == "failed":
            continue
        results[key] = (outcome, message)
    return results


def _cache_dir() -> Path:
    d = Path(os.environ.get("TQ_COMPAT_CACHE") or Path(tempfile.gettempdir()) / f"tqds-compat-cache-{os.getuid()}")
    d.mkdir(parents=True, exist_ok=True)
    return d


def _upstream_key(peer: Impl, sources: list[Path]) -> str:
    """Upstream's outcome depends only on the sources it runs and the peer
    venv, so it is computed once per version of them (TQ_COMPAT_CACHE=<dir>
    moves the cache; deleting it reruns upstream)."""
    h = hashlib.sha256(peer.python.encode())
    for path in sources:
        h.update(path.name.encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:24]


def _run_scenarios(impl: Impl, workdir: Path) -> tuple[dict, str]:
    junit = workdir / f"{impl.name}.xml"
    args = ["-q", "-p", "no:cacheprovider", "--confcutdir", str(COMPAT), "--junitxml", str(junit),
            "-o", "junit_family=xunit1", str(COMPAT)]
    rc, out = _run(impl.pytest_cmd(args), impl.env, REPO, SCENARIO_RUN_TIMEOUT)
    if not junit.exists():
        return {}, f"rc={rc}; no junit report:\n{out[-3000:]}"
    return _parse_junit(junit), out


_CACHE: dict = {}


@pytest.fixture(scope="module")
def implementations():
    if "impls" not in _CACHE:
        _CACHE["impls"] = (_peer(), _ours())
    return _CACHE["impls"]


@pytest.fixture(scope="module")
def scenario_results(implementations, tmp_path_factory):
    if "results" not in _CACHE:
        work = tmp_path_factory.mktemp("compat")
        peer, ours = implementations
        cached = _cache_dir() / f"scenarios-{_upstream_key(peer, sorted(COMPAT.glob('*.py')))}.xml"
        if cached.exists():
            up, up_out = _parse_junit(cached), f"(upstream's outcomes from {cached})"
        else:
            up, up_out = _run_scenarios(peer, work)
            if not up:
                pytest.fail(f"the scenarios did not run under upstream:\n{up_out}")
            shutil.copy(work / f"{peer.name}.xml", cached)
        our, our_out = _run_scenarios(ours, work)
        failed_up = sorted(k for k, (o, _) in up.items() if o != "passed")
        print(f"\ncompat scenarios: {sum(o == 'passed' for o, _ in up.values())} pass upstream; "
              f"not counted (fail upstream): {failed_up or 'none'}")
        _CACHE["results"] = (up, our, our_out)
    return _CACHE["results"]


def _outcome(results: dict, scenario: str, missing: str) -> tuple[str, str]:
    """A scenario's outcome; a parametrized one passes when every case passes."""
    if scenario in results:
        return results[scenario]
    cases = [v for k, v in results.items() if k.startswith(scenario + "[")]
    if not cases:
        return "missing", missing
    bad = [(o, m) for o, m in cases if o != "passed"]
    return bad[0] if bad else ("passed", "")


@pytest.mark.parametrize("scenario", _scenario_ids())
def test_scenario_matches_upstream(scenario, scenario_results):
    up, our, our_out = scenario_results
    up_outcome, up_msg = _outcome(up, scenario, "")
    if up_outcome != "passed":
        pytest.skip(f"not counted: {up_outcome} under upstream: {up_msg.splitlines()[0] if up_msg else ''}")
    if not our:
        pytest.fail(f"the scenarios did not run under ours:\n{our_out[-3000:]}", pytrace=False)
    outcome, msg = _outcome(our, scenario, "not in ours' report (its module failed to import?)")
    if outcome != "passed":
        pytest.fail(f"{scenario} passes upstream but is {outcome} under ours:\n{msg}", pytrace=False)


# ----------------------------------------------------------------- the tutorials

def _tutorial_dir(peer: Impl) -> Path:
    r = subprocess.run([peer.python, "-c", "import os, sysconfig; "
                        "print(os.path.join(sysconfig.get_paths()['purelib'], 'tutorial'))"],
                       capture_output=True, text=True, env=peer.env, timeout=60)
    return Path(r.stdout.strip())


def _run_tutorial(impl: Impl, script: Path, workdir: Path):
    # A copy in a directory of its own: the script appends its parent's
    # parent to sys.path, which must not be the peer venv's site-packages.
    d = workdir / impl.name / "tutorial"
    d.mkdir(parents=True, exist_ok=True)
    shutil.copy(script, d / script.name)
    return _run([impl.python, script.name], impl.env, d, TUTORIAL_TIMEOUT)


# ----------------------------------------------------------------- priming the cache

def prime_upstream() -> int:
    """Runs upstream's side alone (the scenarios and the tutorials) into the
    cache, so that the test run that follows runs only ours. scripts/test.sh
    starts this in the background while the C++ suites run:

        python python/tests/test_upstream_compat.py --prime-upstream
    """
    try:
        peer = _peer()
    except BaseException as e:  # pytest.skip outside pytest: no peer venv
        print(f"prime-upstream: no upstream venv ({e})")
        return 0
    work = Path(tempfile.mkdtemp(prefix="tqds-compat-prime-"))
    try:
        cached = _cache_dir() / f"scenarios-{_upstream_key(peer, sorted(COMPAT.glob('*.py')))}.xml"
        if not cached.exists():
            up, out = _run_scenarios(peer, work)
            if up:
                shutil.copy(work / f"{peer.name}.xml", cached)
            print(f"prime-upstream: scenarios: {sum(o == 'passed' for o, _ in up.values())} of {len(up)} pass")
        if os.environ.get("TQ_COMPAT_TUTORIALS") != "0":
            for name in TUTORIALS:
                script = _tutorial_dir(peer) / f"{name}.py"
                cached = _cache_dir() / f"tutorial-{name}-{_upstream_key(peer, [script])}.json"
                if script.exists() and not cached.exists():
                    rc, out = _run_tutorial(peer, script, work)
                    if rc is not None:
                        cached.write_text(json.dumps([rc, out[-2000:]]))
                    print(f"prime-upstream: tutorial {name}: rc={rc}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__" and sys.argv[1:] == ["--prime-upstream"]:
    sys.exit(prime_upstream())
