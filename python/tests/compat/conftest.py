"""Fixtures of the compatibility scenarios (python/tests/compat).

These scenarios are written once against upstream TransferQueue 0.1.11's
public API and run unchanged under two interpreters: a venv holding upstream
from PyPI (scripts/peer_venv.sh) and a venv holding ours. Run them with this
directory as the conftest root, so that python/tests/conftest.py (ours) is
not loaded under the peer venv:

    PY -m pytest -q --confcutdir python/tests/compat -p no:cacheprovider python/tests/compat

python/tests/test_upstream_compat.py does that for both interpreters and
compares the outcomes.

Ray runs once per session, on loopback only, with more logical CPUs than
the machine has: upstream's controller and each of its storage units ask
for one CPU each, so a 2-core machine could not place them.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from pathlib import Path

import pytest
from omegaconf import OmegaConf

HERE = Path(__file__).resolve().parent


def _is_compat_run(config) -> bool:
    """True when pytest runs with --confcutdir at this directory: the way
    these scenarios are meant to run. Our own suite (python/tests) walks
    into this directory too; there they are neither collected nor allowed to
    touch the environment."""
    cut = config.getoption("confcutdir", None)
    if not cut:
        return False
    return (Path(config.invocation_params.dir) / cut).resolve() == HERE


def pytest_ignore_collect(collection_path, config):
    if not _is_compat_run(config) and HERE in Path(collection_path).resolve().parents:
        return True
    return None


def pytest_configure(config):
    if not _is_compat_run(config):
        return
    # Read by the controller when its module is imported (in Ray's workers,
    # which inherit this environment): a non-polling fetch that cannot be
    # served fails after about a second.
    os.environ.setdefault("TQ_CONTROLLER_GET_METADATA_CHECK_INTERVAL", "1")
    os.environ.setdefault("TQ_CONTROLLER_GET_METADATA_TIMEOUT", "1")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    # Keeps the node address 127.0.0.1 (Ray otherwise swaps in the host's
    # routable address and binds its servers there).
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    # Processes the implementation starts (Ray workers, a controller hosting
    # a Python sampler) import compat.compat_samplers by name.
    parent = str(HERE.parent)
    if parent not in os.environ.get("PYTHONPATH", "").split(os.pathsep):
        os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (os.environ.get("PYTHONPATH", ""), parent) if p)


RAY_NAMESPACE = "tq_compat"
RAY_NUM_CPUS = 16


def unique(prefix: str = "p") -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


_RAY_TMP: list[str] = []


def start_ray() -> None:
    """Starts the session's Ray (again, after a scenario shut it down)."""
    import ray  # here, not at import: our suite loads this file without running it
    from ray._private import ray_constants

    if ray.is_initialized():
        return
    ray_constants.ENABLE_RAY_CLUSTER = False  # read at import, maybe before pytest_configure set the variable
    if not _RAY_TMP:
        _RAY_TMP.append(tempfile.mkdtemp(prefix="tqcr_", dir="/tmp"))  # short: Ray's sockets live there
    ray.init(namespace=RAY_NAMESPACE, num_cpus=RAY_NUM_CPUS, include_dashboard=False,
             object_store_memory=256 * 1024 * 1024, _temp_dir=_RAY_TMP[0], log_to_driver=False)


@pytest.fixture(scope="session")
def ray_session():
    import ray

    start_ray()
    yield ray
    if ray.is_initialized():
        ray.shutdown()
    for d in _RAY_TMP:
        shutil.rmtree(d, ignore_errors=True)


def make_conf(**controller):
    """An allow_objects config overriding `controller.*` (sampler, polling_mode)."""
    conf = OmegaConf.create({}, flags={"allow_objects": True})
    if controller:
        conf = OmegaConf.merge(conf, OmegaConf.create({"controller": controller}, flags={"allow_objects": True}))
    return conf


class TQ:
    """tq.init(conf) on entry, tq.close() on exit (for scenarios about the lifecycle)."""

    def __init__(self, conf=None):
        self.conf = conf

    def __enter__(self):
        import transfer_queue as tq

        release_shared()
        self.merged = tq.init(self.conf)
        return tq.get_client()

    def __exit__(self, *exc):
        import transfer_queue as tq

        tq.close()
        return False


# One TransferQueue at a time, shared by consecutive tests that want the same
# config: an init costs seconds, so tests of one config sit together.
_SHARED = {"key": None, "conf": None}


def release_shared() -> None:
    """Closes the shared TransferQueue, if one is up."""
    import transfer_queue as tq

    if _SHARED["key"] is not None:
        _SHARED["key"] = None
        _SHARED["conf"] = None
        tq.close()


def shared_tq(key: str, conf_factory):
    """The client of a shared TransferQueue initialised with conf_factory();
    reuses the running one when it was made for the same key."""
    import transfer_queue as tq

    start_ray()
    if _SHARED["key"] != key:
        release_shared()
        try:
            _SHARED["conf"] = tq.init(conf_factory())
        except BaseException:
            tq.close()  # forget a half-made controller, so the next test starts clean
            raise
        _SHARED["key"] = key
    return tq.get_client()


def shared_conf():
    """What tq.init returned for the shared TransferQueue."""
    return _SHARED["conf"]


@pytest.fixture(scope="session", autouse=True)
def _close_shared_at_end(ray_session):
    yield
    release_shared()


@pytest.fixture
def tq_default(ray_session):
    """A TransferQueue with upstream's default config (SequentialSampler, no polling)."""
    return shared_tq("default", lambda: None)


@pytest.fixture
def tq_polling(ray_session):
    """A TransferQueue with polling_mode=True and the sampler named by string."""
    return shared_tq("polling", lambda: make_conf(polling_mode=True, sampler="GRPOGroupNSampler"))


@pytest.fixture
def tq_rank(ray_session):
    """A TransferQueue with RankAwareSampler (passed as a class) and polling_mode=True."""
    from transfer_queue import RankAwareSampler

    return shared_tq("rank_polling", lambda: make_conf(sampler=RankAwareSampler, polling_mode=True))
