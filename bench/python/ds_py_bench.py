#!/usr/bin/env python3
"""ds_py_bench: the Python datasystem client (datasystem.KVClient) against
the C++ one (ds::KVClient), op by op, in one run.

A program, not a test:

    .venv/bin/python bench/python/ds_py_bench.py \
        [--build-dir build-kv] [--rounds 3] [--reps 5] [--json FILE] [--default-malloc]

Ops: set (one call per key), get (one call per key), mset, mget,
mcreate + fill + mset_buffer (filled with WriteBuffer.write, and on a second
Python row through WriteBuffer.memoryview()), get_buffers; then the same
ops in openYuanrong's call styles through yr.datasystem.KVClient (rows
"yr ...": get([key]) per key, get(keys), mcreate filled through
MutableData(), ...), each against the same C++ op. Shapes: 1000 keys
of 4 KiB ("small") and one key of 64 MiB ("large"). The C++ side is
`ds_kv_ops_bench --serve` (bench/datasystem/), one warm client in its own
process, driven line by line so that the two sides alternate op by op:
each round runs, for every op x shape, REPS timed reps of C++ then REPS of
Python. Both sides follow the same protocol: values built once outside the
timed region; untimed, the keys are deleted before each rep of a write op
and written once before the reps of a read op; two untimed warm-up reps per
batch; results are dropped inside the timed region. Ops under 100 ms get up
to 2000 reps (about 0.3 s) per round after the first, run in 4 turns of C++
then Python (one batch each had let a 64 MiB row's two sides land in a
fast and a slow stretch of this VM's memory bandwidth: the same C++ mset
read 5.3 and 8.3 ms in two rows of one run). Every row has its own C++
batches, the mcreate rows included. Both clients use
copy-on-write views (the Python package always does). The reported time is
the best rep over all rounds (the machine is shared; the JSON also has the
medians).

The `datasystem` package comes from this checkout's python/ with the
build's extension (<build>/python), programs from the build tree: both
sides run the code just built.

Each mcreate row is followed by its three steps, timed apart on both sides
(the mcreate call, the caller's fill loop, the mset_buffer call): the calls
carry a verdict in parentheses, not counted; the fill shows what the
caller's Python loop costs next to C++'s memcpy loop.

Target: Python time <= 1.2 x C++ time per row (PASS/MISS). The table also
shows memcpy of the same bytes (C++, warm buffers) as the reference, and the
minor page faults per rep on each side (fresh memory is what makes a 64 MiB
get slow in both languages). Unless GLIBC_TUNABLES is set (or
--default-malloc is given), the script re-executes itself with glibc malloc
tunables that keep freed heap memory, which the C++ process inherits, so
that both sides allocate under the same rules (see MALLOC_TUNABLES).

The script starts its own datasystem worker (`dscli start -w`, 2 GiB of
shared memory, a free loopback port, a temporary socket directory) and stops
it by pid at the end, also on failure. With two or more CPUs it pins the
worker to the last one and itself (its client, and the C++ process it
starts) to the others (--no-pin leaves placement to the scheduler): the two
clients then see the same placement, where the scheduler otherwise put one
beside the worker more often than the other and moved single sub-ms rows by
1.2-1.5x between runs on the 2-core VM.
"""

import argparse
import contextlib
import json
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TARGET = 1.2
# Turns per row and round after the first (see main).
CHUNKS = 4
# The steps of an mcreate row, timed apart on both sides: the two client
# calls, and between them the caller's fill loop (a memcpy per key in C++,
# a Python loop of write() or of a memoryview slice assignment per key).
PARTS = ("mcreate", "fill", "mset_buffer")
SHAPES = {"small": (1000, 4096), "large": (1, 64 << 20)}
# (row name, C++ op, Python op)
ROWS = [
    ("set", "set", "set"),
    ("get", "get", "get"),
    ("mset", "mset", "mset"),
    ("mget", "mget", "mget"),
    ("mcreate+write+mset_buffer", "mcreate", "mcreate_write"),
    ("mcreate+memoryview+mset_buffer", "mcreate", "mcreate_memoryview"),
    ("get_buffers", "get_buffers", "get_buffers"),
    # The same ops in openYuanrong's call styles (yr.datasystem.KVClient).
    ("yr set", "set", "yr_set"),
    ("yr get([key])", "get", "yr_get"),
    ("yr mset", "mset", "yr_mset"),
    ("yr get(keys)", "mget", "yr_mget"),
    ("yr mcreate+MutableData+mset_buffer", "mcreate", "yr_mcreate"),
    ("yr get_buffers", "get_buffers", "yr_get_buffers"),
]


def fill_write(bufs, values):
    for b, v in zip(bufs, values):
        b.write(v)


def fill_memoryview(bufs, values):
    for b, v in zip(bufs, values):
        b.memoryview()[:] = v


def fill_mutable_data(bufs, values):
    for b, v in zip(bufs, values):
        b.MutableData()[:] = v


# The caller's fill loop of each mcreate op.
MCREATE_FILLS = {"mcreate_write": fill_write, "mcreate_memoryview": fill_memoryview,
                 "yr_mcreate": fill_mutable_data}


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--build-dir", default=os.environ.get("TQDS_BUILD_DIR"),
                   help="build tree with bin/dscli, python/_tqds*.so and bench/datasystem/ds_kv_ops_bench "
                        "(default: $TQDS_BUILD_DIR, else build-kv/ or build/)")
    p.add_argument("--rounds", type=int, default=3, help="alternating C++/Python rounds (default 3)")
    p.add_argument("--reps", type=int, default=5, help="timed reps per op, shape, side and round (default 5)")
    p.add_argument("--json", metavar="FILE", help="write the results as JSON")
    p.add_argument("--only", metavar="ROW,...", help="run only these rows (e.g. get_buffers,mget)")
    p.add_argument("--shapes", default="small,large", help="shapes to run (default small,large)")
    p.add_argument("--no-pin", action="store_true",
                   help="leave placement to the scheduler (default: the worker on the last CPU, both clients "
                        "on the others)")
    p.add_argument("--default-malloc", action="store_true",
                   help="leave glibc's malloc thresholds alone (default: both sides run with "
                        "GLIBC_TUNABLES=" + MALLOC_TUNABLES + " unless GLIBC_TUNABLES is set)")
    return p.parse_args()


def find_build(arg):
    for d in ([arg] if arg else [os.path.join(REPO, "build-kv"), os.path.join(REPO, "build")]):
        if d and os.path.exists(os.path.join(d, "bench", "datasystem", "ds_kv_ops_bench")):
            return os.path.abspath(d)
    sys.exit("ds_py_bench: no build with bench/datasystem/ds_kv_ops_bench found (build the targets "
             "_tqds dscli datasystem_worker ds_kv_ops_bench, and pass --build-dir)")


def import_datasystem(build):
    # This checkout's package sources and the build's extension first.
    sys.path[:0] = [os.path.join(REPO, "python"), os.path.join(build, "python")]
    import datasystem
    import yr.datasystem  # noqa: F401  (checked here: the yr rows need it)

    return datasystem


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Worker:
    """A datasystem worker started with `dscli start -w`, stopped by pid."""

    def __init__(self, dscli, cpus=None):
        self.dir = tempfile.mkdtemp(prefix="ds_py_bench_")
        self.pid = None
        self.port = free_port()
        r = subprocess.run([dscli, "start", "-w", "--worker_address", f"127.0.0.1:{self.port}",
                            "--unix_socket_dir", self.dir, "--shared_memory_size_mb", "2048",
                            "--shared_memory_populate", "true"],
                           capture_output=True, text=True, timeout=60,
                           preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None)
        m = re.search(r"PID: (\d+)", r.stdout)
        if m:
            self.pid = int(m.group(1))
        if r.returncode != 0 or not m:
            self.stop()
            raise RuntimeError(f"dscli start failed: {(r.stdout + r.stderr).strip()}")

    def stop(self):
        if self.pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGTERM)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                try:
                    os.kill(self.pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.05)
            else:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, signal.SIGKILL)
            self.pid = None
        shutil.rmtree(self.dir, ignore_errors=True)


class CppSide:
    """ds_kv_ops_bench --serve: one warm C++ client in its own process."""

    def __init__(self, program, port):
        self.proc = subprocess.Popen([program, "--port", str(port), "--serve"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, bufsize=1)
        ready = json.loads(self.proc.stdout.readline() or "{}")
        if not ready.get("ready"):
            self.close()
            raise RuntimeError("ds_kv_ops_bench did not start")

    def run(self, op, shape, reps):
        self.proc.stdin.write(f"{op} {shape} {reps}\n")
        self.proc.stdin.flush()
        reply = json.loads(self.proc.stdout.readline() or '{"error": "ds_kv_ops_bench exited"}')
        if "error" in reply:
            raise RuntimeError(f"C++ {op} {shape}: {reply['error']}")
        parts = reply.get("parts_s")
        return reply["times_s"], reply["faults_per_rep"], [parts[k] for k in PARTS] if parts else []

    def close(self):
        if self.proc.poll() is None:
            with contextlib.suppress(BrokenPipeError):
                self.proc.stdin.write("quit\n")
                self.proc.stdin.flush()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class PySide:
    """The same protocol as ds_kv_ops_bench, through datasystem.KVClient."""

    def __init__(self, datasystem, port):
        import numpy as np

        from yr.datasystem import KVClient as YrKVClient

        self.kv = datasystem.KVClient("127.0.0.1", port)
        self.kv.init()
        self.yr = YrKVClient("127.0.0.1", port)
        self.yr.init()
        rng = np.random.default_rng(42)
        self.shapes = {}
        for name, (n, size) in SHAPES.items():
            keys = [f"kvops/{name}/{i:06d}" for i in range(n)]
            values = [rng.integers(0, 256, size=size, dtype=np.uint8).tobytes() for _ in range(n)]
            self.shapes[name] = (keys, values, [size] * n)

    def wait_warm(self, timeout=120):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.kv.stats().get("memory_populated", True):
                return
            time.sleep(0.05)

    def run(self, op, shape, reps):
        kv = self.kv
        keys, values, sizes = self.shapes[shape]
        if op.startswith("yr_"):  # openYuanrong's key rules: no '/'
            keys = [k.replace("/", "_") for k in keys]
        pairs = list(zip(keys, values))
        yr = self.yr

        # Prepared through the client under test, as the C++ side does.
        prepare_with = yr if op.startswith("yr_") else kv

        def delete():
            prepare_with.delete(keys)

        def ensure():
            prepare_with.mset(keys, values)

        parts = []  # mcreate ops, per rep (warm-ups included): the mcreate call, the fill, mset_buffer
        prep_each_rep = op not in ("get", "mget", "get_buffers", "yr_get", "yr_mget", "yr_get_buffers")
        if op == "set":
            prep = delete

            def body():
                for k, v in pairs:
                    kv.set(k, v)
        elif op == "mset":
            prep = delete

            def body():
                kv.mset(keys, values)
        elif op in MCREATE_FILLS:
            prep = delete
            body = self.mcreate_body(yr if op == "yr_mcreate" else kv, keys, values, sizes, MCREATE_FILLS[op],
                                     parts)
        elif op == "get":
            prep = ensure

            def body():
                for k in keys:
                    kv.get(k)
        elif op == "mget":
            prep = ensure

            def body():
                kv.mget(keys)
        elif op == "get_buffers":
            prep = ensure

            def body():
                kv.get_buffers(keys)
        elif op == "yr_set":
            prep = delete

            def body():
                for k, v in pairs:
                    yr.set(k, v)
        elif op == "yr_get":
            prep = ensure

            def body():
                for k in keys:
                    yr.get([k])
        elif op == "yr_mset":
            prep = delete

            def body():
                yr.mset(keys, values)
        elif op == "yr_mget":
            prep = ensure

            def body():
                yr.get(keys)
        elif op == "yr_get_buffers":
            prep = ensure

            def body():
                yr.get_buffers(keys)
        else:
            raise ValueError(op)
        times, faults = [], 0
        for r in range(-2, reps):
            if prep_each_rep or r == -2:
                prep()
            f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            t0 = time.perf_counter()
            body()
            dt = time.perf_counter() - t0
            if r >= 0:
                times.append(dt)
                faults += resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0
        self.verify(op, keys, values)
        return times, faults / reps, [list(p) for p in zip(*parts[2:])]

    @staticmethod
    def mcreate_body(client, keys, values, sizes, fill, parts):
        """mcreate + fill + mset_buffer, each step timed into `parts`; `fill`
        runs the whole fill loop (one call per rep, the loop inside it)."""
        clock = time.perf_counter

        def body():
            t0 = clock()
            bufs = client.mcreate(keys, sizes)
            t1 = clock()
            fill(bufs, values)
            t2 = clock()
            client.mset_buffer(bufs)
            parts.append((t1 - t0, t2 - t1, clock() - t2))
        return body

    def verify(self, op, keys, values):
        """What was written or read is right (untimed)."""
        if op.startswith("yr_"):
            got = self.yr.get(keys)
        elif op in ("get", "mget", "set"):
            got = [self.kv.get(k) for k in keys] if op != "mget" else self.kv.mget(keys)
        else:
            got = [bytes(v) for v in self.kv.get_buffers(keys)]
        if got != values:
            raise RuntimeError(f"{op}: values read back differ from the values written")


def add_parts(into, parts):
    """Appends one batch's per-part times (a list per part, or none)."""
    for k, times in enumerate(parts):
        into[k] += times


def fmt_rate(bytes_, n, t):
    if t <= 0:
        return "-", "-"
    return f"{bytes_ / t / 1e9:9.2f}", f"{n / t:11.0f}"


# Both processes keep freed heap memory (as `tq` does with mallopt): with
# glibc's default, self-adjusting thresholds, whether a run hands its freed
# heap back (and faults it in again on the next rep) depends on the history
# of the process, not on the client: a C++ MGet of 1000 x 4 KiB measured
# 5 ms with 2000 page faults per rep after some ops, 1.3 ms without.
# Values of 64 MiB stay above glibc's largest mmap threshold (32 MiB): a
# get of one allocates fresh pages in both languages.
MALLOC_TUNABLES = "glibc.malloc.trim_threshold=1073741824:glibc.malloc.mmap_threshold=33554432"


def main():
    args = parse_args()
    if not args.default_malloc and "GLIBC_TUNABLES" not in os.environ:
        env = dict(os.environ, GLIBC_TUNABLES=MALLOC_TUNABLES)
        os.execve(sys.executable, [sys.executable] + sys.argv, env)
    build = find_build(args.build_dir)
    datasystem = import_datasystem(build)
    dscli = os.path.join(build, "bin", "dscli")
    program = os.path.join(build, "bench", "datasystem", "ds_kv_ops_bench")
    # A SIGTERM stops the worker too (through the finally below).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    # Pinned, the worker and the client under test never share a core, and
    # both clients (never running at once) get the same placement: on a
    # 2-core VM the scheduler otherwise moves single rows by 1.2-1.5x.
    cpus = sorted(os.sched_getaffinity(0))
    pin = not args.no_pin and len(cpus) >= 2
    worker = Worker(dscli, {cpus[-1]} if pin else None)
    if pin:
        os.sched_setaffinity(0, set(cpus[:-1]))  # this process, its client's threads and the C++ side
    cpp = None
    results = {}
    rows = [r for r in ROWS if not args.only or r[0] in args.only.split(",")]
    shapes = [s for s in SHAPES if s in args.shapes.split(",")]
    if not rows or not shapes:
        sys.exit(f"ds_py_bench: no rows/shapes selected (rows: {[r[0] for r in ROWS]}, shapes: {list(SHAPES)})")
    try:
        py = PySide(datasystem, worker.port)
        py.wait_warm()
        cpp = CppSide(program, worker.port)
        memcpy = {s: [] for s in shapes}
        row_reps = {}
        for rnd in range(args.rounds):
            for shape in shapes:
                memcpy[shape] += cpp.run("memcpy", shape, args.reps)[0]
                for row, cop, pop in rows:
                    r = results.setdefault((row, shape), {"cpp": [], "py": [], "cpp_faults": [], "py_faults": [],
                                                          "cpp_parts": [[] for _ in PARTS],
                                                          "py_parts": [[] for _ in PARTS]})
                    reps = row_reps.get((row, shape), args.reps)
                    # After the first round a row's batch is cut into
                    # CHUNKS, C++ and Python taking turns, so that both
                    # sides see the same stretches of this shared machine.
                    chunks = CHUNKS if rnd > 0 and reps >= CHUNKS * args.reps else 1
                    for _ in range(chunks):
                        t, f, parts = cpp.run(cop, shape, reps // chunks)
                        r["cpp"] += t
                        r["cpp_faults"].append(f)
                        add_parts(r["cpp_parts"], parts)
                        t, f, parts = py.run(pop, shape, reps // chunks)
                        r["py"] += t
                        r["py_faults"].append(f)
                        add_parts(r["py_parts"], parts)
                    # Ops under 100 ms get more reps from the next round on
                    # (about 0.3 s per batch), so that their best is stable
                    # on a shared machine.
                    if rnd == 0 and r["cpp"]:
                        med = statistics.median(r["cpp"])
                        if med < 0.1:
                            row_reps[(row, shape)] = max(args.reps, min(2000, int(0.3 / med)))
            print(f"round {rnd + 1}/{args.rounds} done (load {os.getloadavg()[0]:.1f})", file=sys.stderr,
                  flush=True)
    finally:
        if cpp:
            cpp.close()
        worker.stop()

    print_table(args, memcpy, results, rows, shapes)
    return 0


def print_parts(r, label):
    """Sub-rows of an mcreate row: each step's best rep on each side. The
    two calls carry a verdict in parentheses (not counted); the fill is the
    caller's own loop, shown for where the time goes."""
    parts = {}
    for k, name in enumerate(PARTS):
        c, p = min(r["cpp_parts"][k]), min(r["py_parts"][k])
        call = name != "fill"
        shown = f"  {name} call" if call else "  fill (caller's loop)"
        verdict = ("(PASS)" if p / c <= TARGET else "(MISS)") if call else ""
        print(f"{shown:31s} {label:10s} {c * 1e3:8.3f} {'':8s} {'':9s} {p * 1e3:8.3f} {'':8s} {'':9s} "
              f"{'':>13s} {p / c:6.2f}  {verdict}")
        parts[name] = {"cpp_best_s": c, "py_best_s": p, "ratio_best": p / c}
    return parts


def print_table(args, memcpy, results, rows, shapes):
    head = (f"{'op':31s} {'shape':10s} {'C++ ms':>8s} {'C++ GB/s':>8s} {'C++ op/s':>9s} {'Py ms':>8s} "
            f"{'Py GB/s':>8s} {'Py op/s':>9s} {'faults C++/Py':>13s} {'Py/C++':>6s}  <= {TARGET}x")
    print(head)
    print("-" * len(head))
    out = {"target": TARGET, "rounds": args.rounds, "reps": args.reps,
           "glibc_tunables": os.environ.get("GLIBC_TUNABLES", ""), "rows": []}
    for shape in shapes:
        n, size = SHAPES[shape]
        label = f"{n}x{size >> 10}KiB" if size < (1 << 20) else f"{n}x{size >> 20}MiB"
        total = n * size
        mc = min(memcpy[shape])
        print(f"{'memcpy (C++, reference)':31s} {label:10s} {mc * 1e3:8.3f} {total / mc / 1e9:8.2f} "
              f"{n / mc:9.0f}")
        out["rows"].append({"op": "memcpy", "shape": label, "bytes": total, "keys": n,
                            "cpp_best_s": mc, "cpp_median_s": statistics.median(memcpy[shape])})
        for row, _, _ in rows:
            r = results[(row, shape)]
            c, p = min(r["cpp"]), min(r["py"])
            ratio = p / c
            verdict = "PASS" if ratio <= TARGET else "MISS"
            cf, pf = min(r["cpp_faults"]), min(r["py_faults"])
            faults = f"{cf:.0f}/{pf:.0f}"
            print(f"{row:31s} {label:10s} {c * 1e3:8.3f} {total / c / 1e9:8.2f} {n / c:9.0f} {p * 1e3:8.3f} "
                  f"{total / p / 1e9:8.2f} {n / p:9.0f} {faults:>13s} {ratio:6.2f}  {verdict}")
            out["rows"].append({"op": row, "shape": label, "bytes": total, "keys": n,
                                "cpp_best_s": c, "py_best_s": p,
                                "cpp_median_s": statistics.median(r["cpp"]),
                                "py_median_s": statistics.median(r["py"]),
                                "ratio_best": ratio,
                                "ratio_median": statistics.median(r["py"]) / statistics.median(r["cpp"]),
                                "verdict": verdict, "cpp_faults_per_rep": cf, "py_faults_per_rep": pf,
                                "cpp_times_s": r["cpp"], "py_times_s": r["py"]})
            if r["cpp_parts"][0] and r["py_parts"][0]:
                out["rows"][-1]["parts"] = print_parts(r, label)
    misses = sum(1 for r in out["rows"] if r.get("verdict") == "MISS")
    passes = sum(1 for r in out["rows"] if r.get("verdict") == "PASS")
    print(f"{passes} PASS, {misses} MISS: best rep of {args.rounds} rounds per side (ops under 100 ms: up to "
          f"2000 reps, about 0.3 s, per round after the first); faults: minor page faults per rep; "
          f"GLIBC_TUNABLES={out['glibc_tunables'] or '(unset)'}; load {os.getloadavg()[0]:.1f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    sys.exit(main())
