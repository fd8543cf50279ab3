"""Upstream TransferQueue 0.1.11's tutorial scripts (shipped in its wheel as
`tutorial/`), run unchanged under upstream and under ours: every script that
passes upstream must pass ours. The interpreters, the peer venv and the cache
of upstream's outcomes are test_upstream_compat.py's (see its docstring);
TQ_COMPAT_TUTORIALS=0 skips these (about half a minute each per side).
"""

from __future__ import annotations

import json
import os

import pytest
from test_upstream_compat import (  # noqa: F401  (implementations: a fixture)
    TUTORIALS,
    _cache_dir,
    _run_tutorial,
    _tutorial_dir,
    _upstream_key,
    implementations,
)


@pytest.mark.skipif(os.environ.get("TQ_COMPAT_TUTORIALS") == "0", reason="TQ_COMPAT_TUTORIALS=0")
@pytest.mark.parametrize("name", TUTORIALS)
def test_tutorial_matches_upstream(name, implementations, tmp_path):
    peer, ours = implementations
    script = _tutorial_dir(peer) / f"{name}.py"
    if not script.exists():
        pytest.skip(f"{script} is not in the peer venv")
    cached = _cache_dir() / f"tutorial-{name}-{_upstream_key(peer, [script])}.json"
    if cached.exists():
        rc, out = json.loads(cached.read_text())
    else:
        rc, out = _run_tutorial(peer, script, tmp_path)
        if rc is not None:  # a timeout is not remembered
            cached.write_text(json.dumps([rc, out[-2000:]]))
    if rc != 0:
        pytest.skip(f"not counted: fails under upstream (rc={rc}): {out.strip()[-500:]}")
    rc, out = _run_tutorial(ours, script, tmp_path)
    if rc != 0:
        pytest.fail(f"{name} passes upstream but fails under ours (rc={rc}):\n{out.strip()[-3000:]}", pytrace=False)
