#!/usr/bin/env python3
"""kv_bench: upstream TransferQueue's key-value path against its index path,
from Python, on TransferQueue's 288 MiB perftest shape (9 float32 fields of
[1024, 8192] in a tensordict.TensorDict), for the simple backend and the
datasystem backend, in one run.

A program, not a test. Run with the project's venv:

    .venv/bin/python bench/python/kv_bench.py [--quick] [--reps N] [--rounds N] [--json FILE]

It finds the programs and the package like py_bench.py (TQ_BUILD_DIR, else
build-b5/ or build/, else the installed package). Services, started here and
stopped at the end (also on failure): a datasystem worker (`dscli start`,
2 GiB of shared memory) on 127.0.0.1, and per backend the controller that
``transfer_queue.init(conf)`` starts (SimpleStorage: its two embedded units;
Yuanrong: auto_init off, ``worker_port`` = that worker).

Cycles, one client (``tq.get_client()``), 1024 samples each:

    index:  put(td, partition_id=p)  get_meta(fields, 1024, p, task_name=...)  get_data(meta)  clear_partition(p)
    kv:     kv_batch_put(keys, p, td)  kv_batch_get(keys, p)                   kv_clear(keys, p)

Per backend, ROUNDS rounds, each a block of each path (alternating which goes
first), each block a verified warm-up cycle and REPS timed cycles.
Target: kv cycle <= 1.1 x index cycle (medians). The memcpy of the same bytes
is printed as the physical reference.
"""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from py_bench import BATCH, FIELDS, SEQ, find_program, import_transfer_queue, loadavg, median, perftest_data  # noqa: E402,E501
from py_bench import Services  # noqa: E402

TARGET = 1.1


def verify(out, names, tensors, what):
    import torch

    if out.batch_size != torch.Size([BATCH]):
        raise RuntimeError(f"{what}: batch size {out.batch_size}")
    for name in names:
        got = out[name]
        if tuple(got.shape) != (BATCH, SEQ) or not torch.equal(got.view(torch.int32), tensors[name].view(torch.int32)):
            raise RuntimeError(f"{what}: field {name} differs from what was put")


def index_cycles(tq, names, tensors, data, reps, tag):
    client = tq.get_client()
    times = {"put": [], "get": [], "clear": []}
    for rep in range(reps + 1):
        part = f"idx-{tag}-{os.getpid()}-{rep}"
        t0 = time.perf_counter()
        put_meta = client.put(data, partition_id=part)
        t1 = time.perf_counter()
        meta = client.get_meta(names, BATCH, part, task_name="bench")
        out = client.get_data(meta)
        t2 = time.perf_counter()
        if rep == 0:
            verify(out, names, tensors, f"index/{tag}")
        del out
        t3 = time.perf_counter()
        client.clear_partition(part)
        t4 = time.perf_counter()
        del put_meta, meta
        if rep:
            times["put"].append(t1 - t0)
            times["get"].append(t2 - t1)
            times["clear"].append(t4 - t3)
    return times


def kv_cycles(tq, names, tensors, data, reps, tag):
    keys = [f"sample-{i}" for i in range(BATCH)]
    times = {"put": [], "get": [], "clear": []}
    for rep in range(reps + 1):
        part = f"kv-{tag}-{os.getpid()}-{rep}"
        t0 = time.perf_counter()
        kv_meta = tq.kv_batch_put(keys, part, fields=data)
        t1 = time.perf_counter()
        out = tq.kv_batch_get(keys, part)
        t2 = time.perf_counter()
        if rep == 0:
            verify(out, names, tensors, f"kv/{tag}")
        del out
        t3 = time.perf_counter()
        tq.kv_clear(keys, part)
        t4 = time.perf_counter()
        tq.get_client().clear_partition(part)  # untimed: drops the (now empty) partition
        del kv_meta
        if rep:
            times["put"].append(t1 - t0)
            times["get"].append(t2 - t1)
            times["clear"].append(t4 - t3)
    return times


def memcpy_s(tensors):
    import torch

    srcs = list(tensors.values())
    dsts = [torch.empty_like(t) for t in srcs]
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        for d, s in zip(dsts, srcs):
            d.copy_(s)
        best = min(best, time.perf_counter() - t0)
    return best


def conf_for(backend, services):
    if backend == "simple":
        return {"backend": {"storage_backend": "SimpleStorage", "SimpleStorage": {"num_data_storage_units": 2}}}
    return {"backend": {"storage_backend": "Yuanrong",
                        "Yuanrong": {"auto_init": False, "worker_port": services.port}}}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="2 rounds of 2 timed cycles per path")
    ap.add_argument("--reps", type=int, default=0, help="timed cycles per path in each round (default 3)")
    ap.add_argument("--rounds", type=int, default=0, help="rounds per backend (default 4)")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--backend", choices=["simple", "datasystem", "both"], default="both")
    args = ap.parse_args()
    reps = args.reps or (2 if args.quick else 3)
    rounds = args.rounds or (2 if args.quick else 4)

    os.environ.setdefault("TQ_BINARY", find_program("tq"))
    dscli = find_program("dscli")
    tq = import_transfer_queue()
    import torch

    torch.set_num_threads(1)
    names, tensors, data = perftest_data()
    backends = ["simple", "datasystem"] if args.backend == "both" else [args.backend]
    load_start = loadavg()
    print(f"load average (1 min) at start: {load_start}")
    print(f"shape: {BATCH} x {FIELDS} fields x {SEQ} float32 = {BATCH * FIELDS * SEQ * 4 / 2**20:.0f} MiB; "
          f"{rounds} rounds x {reps} timed cycles per path, paths alternating first (+1 verified warm-up each)")
    mc = memcpy_s(tensors)
    services = Services(tq, dscli, controller=False) if "datasystem" in backends else None
    rows, failures = [], 0
    try:
        for backend in backends:
            try:
                tq.init(conf_for(backend, services))
                try:
                    got = {"index": {"put": [], "get": [], "clear": []}, "kv": {"put": [], "get": [], "clear": []}}
                    for r in range(rounds):
                        for path in (("index", "kv") if r % 2 == 0 else ("kv", "index")):
                            fn = index_cycles if path == "index" else kv_cycles
                            t = fn(tq, names, tensors, data, reps, f"{backend}{r}")
                            for k in t:
                                got[path][k] += t[k]
                finally:
                    tq.close()
            except Exception as e:  # report and go on with the other backend
                print(f"{backend}: ERROR {type(e).__name__}: {e}")
                failures += 1
                continue
            cyc = {p: median([a + b + c for a, b, c in zip(v["put"], v["get"], v["clear"])]) for p, v in got.items()}
            rows.append({"backend": backend, "times": got, "index_s": cyc["index"], "kv_s": cyc["kv"],
                         "ratio": cyc["kv"] / cyc["index"], "pass": cyc["kv"] <= TARGET * cyc["index"]})
    finally:
        if services is not None:
            services.stop()

    gb = BATCH * FIELDS * SEQ * 4 / 1e9
    print(f"\n== 288 MiB cycle, medians in ms (memcpy of the same bytes: {mc*1e3:.1f} ms, {gb/mc:.2f} GB/s) ==")
    print(f"{'backend':<12}{'path':<7}{'put':>9}{'get':>9}{'clear':>9}{'cycle':>9}{'GB/s':>8}{'x memcpy':>10}")
    for r in rows:
        for path in ("index", "kv"):
            t = r["times"][path]
            c = r[f"{path}_s"]
            print(f"{r['backend'] if path == 'index' else '':<12}{path:<7}{median(t['put'])*1e3:9.1f}"
                  f"{median(t['get'])*1e3:9.1f}{median(t['clear'])*1e3:9.1f}{c*1e3:9.1f}{2*gb/c:8.2f}{c/mc:10.1f}")
    print(f"\n== target: kv <= {TARGET:.2f} x index ==")
    for r in rows:
        print(f"{'PASS' if r['pass'] else 'MISS'} {r['backend']:<11} kv / index = {r['ratio']:.3f}")
    print(f"load average (1 min) at end: {loadavg()}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"shape": [BATCH, FIELDS, SEQ], "rounds": rounds, "reps": reps, "target": TARGET,
                       "memcpy_s": mc, "load_start": load_start, "load_end": loadavg(), "rows": rows}, f, indent=2)
    return 1 if failures or not all(r["pass"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
