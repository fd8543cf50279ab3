#!/usr/bin/env python3
"""profile_ours: ours on the datasystem backend, one process, one shape of
peer_bench, put / get / clear in a loop, for a profiler to watch (the
peer_bench targets that ours misses are found with this).

    .venv/bin/python bench/peers/profile_ours.py [--shape many_small] [--iters 20] [--pidfile F] [--pause S]

It starts its own datasystem worker (dscli start, 127.0.0.1, a free port,
3 GiB of shared memory) and stops it at the end, also on failure; --pidfile
writes "<this pid> <worker pid>" once both are up, and the loop waits
--delay seconds after that, so that a profiler can attach to both:

    .venv/bin/python bench/peers/profile_ours.py --pidfile /tmp/p --delay 3 &
    sleep 8; read C W < /tmp/p
    perf record -F 499 -g -p $C -o client.data -- sleep 10 &
    perf record -F 499 -g -p $W -o worker.data -- sleep 10

Prints the median put, get and clear times and the per-key cost, and the
controller's own time per request type (its Prometheus endpoint's
tq_controller_request_duration_seconds, mean per call over the loop).
"""

import argparse
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from peer_role import SHAPES, make_data, shape_gib  # noqa: E402


def controller_seconds(port):
    """{request type: (seconds, calls)} from the controller's metrics endpoint."""
    import urllib.request

    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    out = {}
    for m in re.finditer(r'^tq_controller_request_duration_seconds_(sum|count)\{op_type="(\w+)"\} (\S+)$', text, re.M):
        secs, calls = out.get(m.group(2), (0.0, 0.0))
        if m.group(1) == "sum":
            secs = float(m.group(3))
        else:
            calls = float(m.group(3))
        out[m.group(2)] = (secs, calls)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shape", default="many_small", choices=sorted(SHAPES))
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--pidfile")
    ap.add_argument("--delay", type=float, default=0)
    ap.add_argument("--pause", type=float, default=0,
                    help="seconds to sleep before each put, get and clear (peer_bench sleeps 0.3 s between steps)")
    args = ap.parse_args()
    venv_bin = os.path.dirname(sys.executable)
    d = tempfile.mkdtemp(prefix="pbprof_")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = subprocess.run([os.path.join(venv_bin, "dscli"), "start", "-w", "--worker_address", f"127.0.0.1:{port}",
                        "--unix_socket_dir", d, "--shared_memory_size_mb", "3072"],
                       capture_output=True, text=True, timeout=120)
    m = re.search(r"PID: (\d+)", r.stdout)
    if r.returncode != 0 or not m:
        shutil.rmtree(d, ignore_errors=True)
        sys.exit(f"dscli start failed: {r.stdout}{r.stderr}")
    worker = int(m.group(1))
    os.environ["TQDS_SESSION"] = f"pbprof-{os.getpid()}"
    try:
        import torch
        import transfer_queue as tq

        torch.set_num_threads(1)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            metrics_port = s.getsockname()[1]
        tq.init({"backend": {"storage_backend": "Yuanrong", "Yuanrong": {"auto_init": False, "worker_port": port}},
                 "metrics": {"enabled": True, "port": metrics_port}})
        before = controller_seconds(metrics_port)
        td = make_data(args.shape)
        keys = [f"test_key_{i}" for i in range(td.batch_size[0])]
        if args.pidfile:
            with open(args.pidfile, "w") as f:
                f.write(f"{os.getpid()} {worker}\n")
            time.sleep(args.delay)
        t = {"put": [], "get": [], "clear": []}
        for it in range(args.iters):
            part = f"p{it}"
            time.sleep(args.pause)
            t0 = time.perf_counter()
            tq.kv_batch_put(keys=keys, partition_id=part, fields=td)
            t1 = time.perf_counter()
            time.sleep(args.pause)
            t1s = time.perf_counter()
            out = tq.kv_batch_get(keys=keys, partition_id=part)
            del out
            t2 = time.perf_counter()
            time.sleep(args.pause)
            t2s = time.perf_counter()
            tq.kv_clear(keys=keys, partition_id=part)
            t3 = time.perf_counter()
            t["put"].append(t1 - t0)
            t["get"].append(t2 - t1s)
            t["clear"].append(t3 - t2s)
        gib = shape_gib(args.shape)
        put, get, clear = (statistics.median(t[k]) for k in ("put", "get", "clear"))
        n = len(keys) * len(td.keys())
        print(f"{args.shape}: {len(keys)} keys x {len(td.keys())} fields, {gib * 1024:.0f} MiB; medians: "
              f"put {put * 1e3:.1f} ms, get {get * 1e3:.1f} ms, clear {clear * 1e3:.1f} ms; "
              f"{16 * gib / (put + get):.2f} Gbps; per sample-field: put {put / n * 1e6:.2f} us, "
              f"get {get / n * 1e6:.2f} us")
        spent = {}  # request type -> (seconds, calls) during the loop
        for op, (secs, calls) in controller_seconds(metrics_port).items():
            secs0, calls0 = before.get(op, (0.0, 0.0))
            if calls > calls0 and op != "PING":
                spent[op] = (secs - secs0, calls - calls0)
        print("controller, mean ms per call: " + ", ".join(
            f"{op} {secs / calls * 1e3:.2f} ({calls:.0f} calls)" for op, (secs, calls) in sorted(spent.items())))
        tq.close()
    finally:
        subprocess.run([os.path.join(venv_bin, "dscli"), "stop", "--worker_address", f"127.0.0.1:{port}"],
                       capture_output=True, timeout=60)
        try:
            os.kill(worker, signal.SIGKILL)
        except ProcessLookupError:
            pass
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
