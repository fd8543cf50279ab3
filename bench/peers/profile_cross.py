#!/usr/bin/env python3
"""profile_cross: ours-ds (or ours-simple) across peer_bench's two
namespaces (or in one, --same), put / get / clear of one shape in a loop
for 10 s, with `perf record -g` on the writer, the reader, the datasystem
workers and our controller (perf data in /tmp/cross_<who>.data, /tmp/same_<who>.data with
--same).

    python3 bench/peers/profile_cross.py [SHAPE] [--dwarf] [--split] [--same] [--pause S] [--system ours-simple]
    # as root; default complex, ours-ds

--pause S sleeps S seconds before each put, get and clear (peer_bench
sleeps 0.3 s between its steps).
--same runs writer and reader in one namespace on loopback, as peer_bench's
same-node cells (two processes, unlike profile_ours.py's one).
--dwarf records DWARF call graphs (299 Hz): the worker and the extension
are built without frame pointers, so `-g` stacks stop at the first frame.
--split times the reader's get as its two steps (kv_retrieve at the
controller, then the read) and records no profile.
    perf report -i /tmp/cross_reader.data --no-children --sort dso,symbol -g none --stdio

Everything it starts lives in the namespaces and ends with them, also on
failure.
"""

import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import peer_bench as pb  # noqa: E402


def main():
    argv = sys.argv[1:]
    system = "ours-ds"
    if "--system" in argv:
        i = argv.index("--system")
        system = argv[i + 1]
        del argv[i:i + 2]
    pause = 0.0
    if "--pause" in argv:
        i = argv.index("--pause")
        pause = float(argv[i + 1])
        del argv[i:i + 2]
    args = [a for a in argv if a not in ("--dwarf", "--split", "--same")]
    split = "--split" in argv
    scenario = "same" if "--same" in argv else "cross"
    shape = args[0] if args else "complex"
    graph = ["-F", "299", "--call-graph", "dwarf,16384"] if "--dwarf" in sys.argv else ["-F", "999", "-g"]
    ns = pb.Namespaces(scenario).up()
    work = tempfile.mkdtemp(prefix="pcross_")
    os.chmod(work, 0o777)
    sr = None
    try:
        sr = pb.SystemRun(system, ns, work)  # may fail (no tq to make keys): the namespaces still go
        sr.start()
        w, r = sr.roles()
        w.call({"op": "init"}, timeout=240)
        r.call({"op": "init"}, timeout=240)
        w.call({"op": "make", "shape": shape})
        pids = {"writer": w.p.pid, "reader": r.p.pid}
        workers = (("wA", ns.ip_a), ("wB", ns.ip_b)) if ns.cross else (("wA", ns.ip_a),)
        for name, ip in workers if system == "ours-ds" else ():
            out = subprocess.run(["pgrep", "-f", f"worker_address.{ip}:{pb.DS_PORT}"], capture_output=True, text=True)
            pids[name] = int(out.stdout.split()[0])
        if system.startswith("ours"):  # the controller the writer's tq.init started
            out = subprocess.run(["pgrep", "-f", "tq controller --host"], capture_output=True, text=True)
            if out.stdout.split():
                pids["controller"] = int(out.stdout.split()[0])
        perfs = [] if split else [
            subprocess.Popen(["perf", "record", *graph, "-p", str(pid), "-o", f"/tmp/{scenario}_{n}.data",
                              "--", "sleep", "12"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for n, pid in pids.items()]
        time.sleep(1)
        times, i, t_end = [], 0, time.time() + 10
        while time.time() < t_end:
            part = f"p{i}"
            i += 1
            time.sleep(pause)
            a = w.call({"op": "put", "part": part, "shape": shape})["dt"]
            time.sleep(pause)
            if split:
                ans = r.call({"op": "get_split", "part": part, "shape": shape})
                g = (ans["retrieve"], ans["data"])
            else:
                g = r.call({"op": "get", "part": part, "shape": shape, "keep": False})["dt"]
            time.sleep(pause)
            c = w.call({"op": "clear", "part": part, "shape": shape})["t"]
            times.append((a, g, c))
        for p in perfs:
            p.wait()
        if split:
            med = lambda xs: sorted(xs)[len(xs) // 2]  # noqa: E731
            print(f"{shape}: {len(times)} iterations, medians ms: put {med([t[0] for t in times]) * 1e3:.1f}, "
                  f"get = kv_retrieve {med([t[1][0] for t in times]) * 1e3:.1f} + read "
                  f"{med([t[1][1] for t in times]) * 1e3:.1f}, clear {med([t[2] for t in times]) * 1e3:.1f}")
        else:
            print(f"{shape}: {len(times)} iterations, put / get / clear ms:",
                  " ".join(f"{a * 1e3:.0f}/{g * 1e3:.0f}/{c * 1e3:.0f}" for a, g, c in times))
    finally:
        if sr is not None:
            sr.stop()
        ns.down()
        if sr is not None:
            sr.remove_dirs()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
