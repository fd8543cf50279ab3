#!/usr/bin/env python3
"""py_bench: Python put + get_meta + get_data of TransferQueue's 288 MiB
perftest shape (9 float32 torch tensors [1024, 8192] in a
tensordict.TensorDict) against the same cycle through the C++ API, in one
run, for the simple backend and the datasystem backend
(YuanrongStorageManager) on this node.

A program, not a test. Run with the project's venv (torch, tensordict,
omegaconf):

    .venv/bin/python bench/python/py_bench.py [--quick] [--reps N] [--json FILE]

It finds `tq`, `dscli` and `tq_backend_bench` in build-b5/ or build/
(bin/, tools/, bench/queue/), else on PATH; and the `transfer_queue`
package from this checkout with the extension of that build, else the
installed one. Set TQ_BUILD_DIR to pick a build directory.

Both sides use the same services, started here: a controller with two
simple storage units (the local `tq controller` process behind
`TransferQueueController.remote()`) and a datasystem worker (`dscli start`,
2 GiB of shared memory) on 127.0.0.1; both are stopped at the end, also on
failure. The C++ side is `tq_backend_bench --cpp-cycle` (one in-process
client, the same cycle). Per backend, ROUNDS rounds, each a block of each
side, alternating which side goes first; each block runs a verified warm-up
cycle (not timed), then REPS timed cycles; each cycle clears its partition.

Python puts a real tensordict.TensorDict (built once, as the C++ side
builds its batch once) and get_data returns one (dense float32 fields),
checked on the warm-up cycle: the timed Python cycle includes reading the
TensorDict's fields and building the returned TensorDict.

Target: Python cycle time <= 1.15 x the C++ cycle time (medians), like for
like: Python's get_data returns dense torch tensors, the C++ API per-sample
views, so the verdict compares with C++ get_data + Batch::Stack (dense
tensors, what the Python reader receives; free when the samples already lie
back to back, as on the datasystem backend, a copy of every field on the
simple one). The plain C++ cycle is printed beside it.
"""

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BATCH, FIELDS, SEQ = 1024, 9, 8192
TARGET = 1.15


def build_dirs():
    env = os.environ.get("TQ_BUILD_DIR")
    dirs = [env] if env else []
    return dirs + [os.path.join(REPO, "build-b5"), os.path.join(REPO, "build")]


def find_program(name):
    # The build tree first, so that both sides run the code just built (an
    # older `make install` on PATH would otherwise be measured).
    for d in build_dirs():
        for sub in ("bin", "tools/tq", "tools/dscli", "bench/queue"):
            p = os.path.join(d, sub, name)
            if os.access(p, os.X_OK):
                return p
    path = shutil.which(name)
    if path:
        return path
    sys.exit(f"py_bench: cannot find `{name}` in {build_dirs()} or on PATH (build it first)")


def import_transfer_queue():
    # The build tree's extension and this checkout's package sources first,
    # like the programs; else the installed package.
    for d in build_dirs():
        p = os.path.join(d, "python")
        if any(f.startswith("_tqds") for f in (os.listdir(p) if os.path.isdir(p) else [])):
            sys.path[:0] = [os.path.join(REPO, "python"), p]
            break
    import transfer_queue

    return transfer_queue


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def loadavg():
    with open("/proc/loadavg") as f:
        return f.read().split()[0]


def median(v):
    return statistics.median(v) if v else float("nan")


class Services:
    """A datasystem worker and a controller with 2 simple units, on 127.0.0.1."""

    def __init__(self, tqm, dscli, controller=True):
        self.dscli = dscli
        self.dir = tempfile.mkdtemp(prefix="tqpyb_")
        self.port = free_port()
        self.worker = f"127.0.0.1:{self.port}"
        self.worker_pid = None
        self.controller = None
        self.ctl = None
        r = subprocess.run([dscli, "start", "-w", "--worker_address", self.worker, "--unix_socket_dir", self.dir,
                            "--shared_memory_size_mb", "2048", "--shared_memory_populate", "true"],
                           capture_output=True, text=True, timeout=60)
        pidfile = os.path.join(self.dir, f"datasystem_worker_127.0.0.1_{self.port}.pid")
        if os.path.exists(pidfile):
            with open(pidfile) as f:
                self.worker_pid = int(f.read().split()[0])
        if r.returncode != 0:
            self.stop()
            sys.exit(f"py_bench: dscli start failed: {r.stdout}{r.stderr}")
        if not controller:  # the caller starts its own (kv_bench: transfer_queue.init)
            return
        # The controller process that TransferQueueController.remote() runs
        # (inside a Ray actor where Ray is installed), started directly: a
        # local Ray cluster would only add its daemons' load to both sides.
        try:
            self.ctl = tqm.TransferQueueControllerHandle(storage_units=2, unit_capacity_mb=4096)
        except Exception:
            self.stop()
            raise
        self.info = tqm.process_zmq_server_info(self.ctl)
        self.controller = self.info.to_addr("request")

    def config(self, backend):
        if backend == "simple":
            return {"manager_type": "SimpleStorageManager"}
        return {"manager_type": "YuanrongStorageManager", "client_name": "YuanrongStorageClient",
                "host": "127.0.0.1", "port": self.port}

    def stop(self):
        if getattr(self, "ctl", None) is not None:
            self.ctl.stop()
            self.ctl = None
        if self.worker_pid:
            subprocess.run(["timeout", "20", self.dscli, "stop", "--worker_address", self.worker],
                           capture_output=True)
            try:
                os.kill(self.worker_pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.worker_pid = None
        shutil.rmtree(self.dir, ignore_errors=True)


def perftest_data():
    """(field names, {name: tensor}, TensorDict) of the perftest shape, with the
    same bytes as the C++ side: element i of field f is i ^ salt(f)."""
    import torch
    from tensordict import TensorDict

    names = [f"field_{f}" for f in range(FIELDS)]
    idx = torch.arange(BATCH * SEQ, dtype=torch.int64)
    tensors = {}
    for f, name in enumerate(names):
        salt = (0x9E3779B9 * (f + 1)) & 0xFFFFFFFF
        bits = (idx ^ salt).to(torch.int64) & 0xFFFFFFFF
        tensors[name] = bits.to(torch.int32).view(torch.float32).reshape(BATCH, SEQ).contiguous()
    return names, tensors, TensorDict(tensors, batch_size=[BATCH])


def python_cycles(tqm, services, backend, reps):
    import torch
    from tensordict import TensorDict

    # The cycle itself runs no torch op; the warm-up's check does, and
    # torch's intra-op threads spin a while after each op, taking a core
    # from the timed cycles that follow on a small machine.
    torch.set_num_threads(1)

    names, tensors, data = perftest_data()
    client = tqm.TransferQueueClient(client_id="py-bench", controller_info=services.info)
    client.initialize_storage_manager(manager_type=services.config(backend)["manager_type"],
                                      config=services.config(backend))
    times = {"put": [], "get_meta": [], "get_data": [], "clear": []}
    for rep in range(reps + 1):
        part = f"py-{backend}-{os.getpid()}-{rep}"
        t0 = time.perf_counter()
        put_meta = client.put(data=data, partition_id=part)
        t1 = time.perf_counter()
        meta = client.get_meta(data_fields=names, batch_size=BATCH, partition_id=part, task_name="train")
        t2 = time.perf_counter()
        out = client.get_data(meta)
        t3 = time.perf_counter()
        if rep == 0:  # verify outside timing
            if type(out) is not TensorDict or out.batch_size != torch.Size([BATCH]):
                raise RuntimeError(f"{backend}: get_data returned {type(out).__name__} {getattr(out, 'batch_size', '')}")
            for name in names:
                got = out[name]
                if not isinstance(got, torch.Tensor) or tuple(got.shape) != (BATCH, SEQ) or got.dtype != torch.float32:
                    raise RuntimeError(f"{backend}: field {name} came back as {type(got).__name__} "
                                       f"{getattr(got, 'shape', None)}")
                if not torch.equal(got.view(torch.int32), tensors[name].view(torch.int32)):
                    raise RuntimeError(f"{backend}: field {name} differs from what was put")
        del out
        t4 = time.perf_counter()
        client.clear_partition(part)
        t5 = time.perf_counter()
        # The results live to the end of the cycle and are freed untimed, as
        # on the C++ side; otherwise put would also time freeing its result
        # and the next get_meta freeing this cycle's BatchMeta.
        del put_meta, meta
        if rep == 0:
            continue
        times["put"].append(t1 - t0)
        times["get_meta"].append(t2 - t1)
        times["get_data"].append(t3 - t2)
        times["clear"].append(t5 - t4)
    return times


def cpp_cycles(bench, services, backend, reps):
    cmd = [bench, "--cpp-cycle", services.controller, json.dumps(services.config(backend)), str(BATCH), str(FIELDS),
           str(SEQ), str(reps)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    last = (r.stdout.strip().splitlines() or [""])[-1]
    if r.returncode != 0 or not last.startswith("{"):
        raise RuntimeError(f"C++ cycle failed ({r.returncode}): {r.stdout}{r.stderr}")
    return json.loads(last)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="2 rounds of 2 timed cycles per side")
    ap.add_argument("--reps", type=int, default=0, help="timed cycles per side in each round (default 3)")
    ap.add_argument("--rounds", type=int, default=0, help="rounds per backend (default 6)")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--backend", choices=["simple", "datasystem", "both"], default="both")
    args = ap.parse_args()
    reps = args.reps or (2 if args.quick else 3)
    rounds = args.rounds or (2 if args.quick else 6)

    tq_bin, dscli, bench = find_program("tq"), find_program("dscli"), find_program("tq_backend_bench")
    os.environ.setdefault("TQ_BINARY", tq_bin)
    tqm = import_transfer_queue()
    backends = ["simple", "datasystem"] if args.backend == "both" else [args.backend]
    load_start = loadavg()
    print(f"load average (1 min) at start: {load_start}")
    print(f"shape: {BATCH} x {FIELDS} fields x {SEQ} float32 = {BATCH * FIELDS * SEQ * 4 / 2**20:.0f} MiB; "
          f"{rounds} rounds x {reps} timed cycles per side, sides alternating first (+1 verified warm-up each)")
    services = Services(tqm, dscli)
    rows, failures = [], 0
    try:
        for backend in backends:
            try:
                # Rounds alternate which side runs first (A-B, B-A, ...), pooled:
                # the machine is shared and load drifts during a run, so short
                # interleaved blocks compare like with like.
                py = {k: [] for k in ("put", "get_meta", "get_data", "clear")}
                cpp = {k: [] for k in ("put", "get_meta", "get_data", "stack", "clear")}
                for r in range(rounds):
                    for side in (("py", "cpp") if r % 2 == 0 else ("cpp", "py")):
                        if side == "py":
                            got = python_cycles(tqm, services, backend, reps)
                            for k in py:
                                py[k] += got[k]
                        else:
                            got = cpp_cycles(bench, services, backend, reps)
                            for k in cpp:
                                cpp[k] += got[k]
            except Exception as e:  # report and go on with the other backend
                print(f"{backend}: ERROR {e}")
                failures += 1
                continue
            py_total = median([a + b + c for a, b, c in zip(py["put"], py["get_meta"], py["get_data"])])
            cpp_total = median([a + b + c for a, b, c in zip(cpp["put"], cpp["get_meta"], cpp["get_data"])])
            cpp_dense = median([a + b + c + d for a, b, c, d in
                                zip(cpp["put"], cpp["get_meta"], cpp["get_data"], cpp["stack"])])
            rows.append({"backend": backend, "python": py, "cpp": cpp, "python_s": py_total, "cpp_s": cpp_total,
                         "cpp_dense_s": cpp_dense, "ratio": py_total / cpp_total,
                         "ratio_to_dense": py_total / cpp_dense, "pass": py_total <= TARGET * cpp_dense})
    finally:
        services.stop()

    gb = BATCH * FIELDS * SEQ * 4 / 1e9
    print("\n== put + get_meta + get_data, 288 MiB, medians in ms (GB/s = bytes / cycle) ==")
    print(f"{'backend':<11}{'side':<22}{'put':>9}{'get_meta':>10}{'get_data':>10}{'stack':>9}{'cycle':>10}"
          f"{'GB/s':>8}")
    for r in rows:
        py, cpp = r["python"], r["cpp"]
        print(f"{r['backend']:<11}{'Python':<22}{median(py['put'])*1e3:9.1f}{median(py['get_meta'])*1e3:10.2f}"
              f"{median(py['get_data'])*1e3:10.1f}{'-':>9}{r['python_s']*1e3:10.1f}{gb / r['python_s']:8.2f}")
        print(f"{'':<11}{'C++ API':<22}{median(cpp['put'])*1e3:9.1f}{median(cpp['get_meta'])*1e3:10.2f}"
              f"{median(cpp['get_data'])*1e3:10.1f}{'-':>9}{r['cpp_s']*1e3:10.1f}{gb / r['cpp_s']:8.2f}")
        print(f"{'':<11}{'C++ API + Stack':<22}{'':>9}{'':>10}{'':>10}{median(cpp['stack'])*1e3:9.1f}"
              f"{r['cpp_dense_s']*1e3:10.1f}{gb / r['cpp_dense_s']:8.2f}")
    print(f"\n== target: Python <= {TARGET:.2f} x C++ with the same dense result (C++ API + Stack) ==")
    for r in rows:
        print(f"{'PASS' if r['pass'] else 'MISS'} {r['backend']:<11} Python / (C++ + Stack) = "
              f"{r['ratio_to_dense']:.2f}   (Python / C++ per-sample views = {r['ratio']:.2f})")
    print(f"load average (1 min) at end: {loadavg()}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"shape": [BATCH, FIELDS, SEQ], "rounds": rounds, "reps": reps, "target": TARGET,
                       "load_start": load_start, "load_end": loadavg(), "rows": rows}, f, indent=2)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
