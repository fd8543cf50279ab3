"""The two-worker calls of the yr.datasystem differential test: one client
on each of two workers of one cluster (one etcd), run as a program under
either Python, against openYuanrong's workers or ours. Prints one JSON
object, case name -> outcome, normalised as yr_diff_cases.py does.

    python yr_diff_cluster_cases.py HOST1 PORT1 HOST2 PORT2 [--wait-ready SECONDS]

What it asks: does a key written through one worker exist, read and block
ExistenceOpt.NX writes through the other; does a delete or an overwrite
through one reach readers of the other.
"""

from __future__ import annotations

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from yr_diff_cases import P, connect, outcome, wait_until  # noqa: E402

from yr.datasystem.kv_client import ExistenceOpt  # noqa: E402


def k(name):
    return P + name


def cases(c1, c2):
    NX = ExistenceOpt.NX
    return [
        ("w1_set", lambda: c1.set(k("a"), b"one")),
        ("w2_get", lambda: c2.get([k("a")])),
        ("w2_exist", lambda: c2.exist([k("a"), k("never")])),
        # NX through worker 2 on a key that worker 1 holds.
        ("w2_msettx_nx_existing", lambda: c2.msettx([k("b"), k("a")], [b"x", b"y"], existence_opt=NX)),
        ("w2_msettx_nx_existing_left", lambda: [c2.exist([k("b"), k("a")]), c1.get([k("a")]), c2.get([k("a")])]),
        ("w2_msettx_nx_new", lambda: c2.msettx([k("c"), k("d")], [b"c2", b"d2"], existence_opt=NX)),
        ("w1_reads_w2", lambda: c1.get([k("c"), k("d")])),
        # And the other way: worker 1 on a key that worker 2 holds.
        ("w1_msettx_nx_existing", lambda: c1.msettx([k("c")], [b"c1"], existence_opt=NX)),
        ("w1_msettx_nx_existing_left", lambda: [c1.get([k("c")]), c2.get([k("c")])]),
        # An overwrite through one worker is what the other reads next.
        ("w1_overwrites_w2", lambda: c1.set(k("d"), b"d1")),
        ("w2_reads_overwrite", lambda: wait_until(lambda: c2.get([k("d")]) == [b"d1"], 10)),
        # A delete through one worker reaches the other.
        ("w2_deletes_w1", lambda: c2.delete([k("a")])),
        ("w1_after_delete", lambda: [c1.exist([k("a")]), wait_until(lambda: c1.exist([k("a")]) == [False], 10)]),
        ("w1_msettx_nx_after_delete", lambda: c1.msettx([k("a")], [b"again"], existence_opt=NX)),
        ("w2_reads_again", lambda: c2.get([k("a")])),
    ]


def main() -> None:
    h1, p1, h2, p2 = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    wait_s = float(sys.argv[6]) if len(sys.argv) > 6 and sys.argv[5] == "--wait-ready" else 10.0
    c1, c2 = connect(h1, p1, wait_s), connect(h2, p2, wait_s)
    results = {}
    for name, fn in cases(c1, c2):
        results[name] = outcome(fn)
    print(json.dumps(results, sort_keys=True))


if __name__ == "__main__":
    main()
