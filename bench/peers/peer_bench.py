#!/usr/bin/env python3
"""peer_bench: ours against upstream TransferQueue 0.1.11 (SimpleStorage,
openYuanrong datasystem, Mooncake store), plain Ray object passing, memcpy and
iperf3, in one run, by upstream's perftest method.

A program, not a test. Make the peers' venv once, then run with any Python 3
(the driver itself needs only the standard library; it runs ours from
.venv and the peers from .bench-peers-venv):

    bench/peers/setup_peers.sh
    python3 bench/peers/peer_bench.py [--quick] [--json FILE] [--png FILE]
            [--scenarios same,cross] [--systems ...] [--shapes ...] [--reps N]

Needs root (ip netns) and etcd, iperf3, curl on PATH. Method, results and
the reasons behind the set-up below: docs/peer_bench.md.

Method (upstream's scripts/performance_test/perftest.py): a writer and a
reader in two processes; per iteration the writer kv_batch_put()s the shape
under fresh keys, the reader kv_list()s the partition and kv_batch_get()s the
keys, the writer kv_clear()s them. The driver times put and get as the time
from sending the request to the process until its answer (upstream times
ray.get() of the actor call the same way). Throughput is upstream's:
16 x GiB / (put + get) in Gbps (GiB as upstream counts the shape's bytes),
put and get alone 8 x GiB / t. Each (system, shape) runs one verified
iteration first (the reader keeps what it got and both sides hash every field
sample by sample: the row shows '!' where a digest differs), then REPS timed
iterations (default 4, upstream perftest's default --num_test_iterations);
the table shows medians.

Scenarios: 'same' runs every process of a system in one network namespace
with only its loopback; 'cross' puts the writer in namespace A (10.210.0.1)
and the reader in B (10.210.0.2), joined by a veth pair, each namespace with
its own Ray node and datasystem worker where the system uses them; the
driver counts the bytes on A's veth during each put and get (veth_put,
veth_get in the JSON), which shows that no system took a same-host shortcut
(the namespaces share one filesystem and one /dev/shm). All a
system's processes live in those namespaces, so the cleanup after each system
(also on failure) ends every process in them by pid and deletes them.

Systems:
  ours-simple        our package, SimpleStorage backend (units in the controller)
  ours-ds            our package, Yuanrong backend on our datasystem worker
                     (one per namespace; cross: joined through etcd in A)
  upstream-simple    TransferQueue 0.1.11, SimpleStorage (2 storage-unit actors)
  upstream-yuanrong  TransferQueue 0.1.11, Yuanrong backend, auto_init: the real
                     openyuanrong-datasystem 0.8.1 worker on every Ray node
  upstream-mooncake  TransferQueue 0.1.11, MooncakeStore backend, auto_init:
                     mooncake_master, P2PHANDSHAKE metadata, TCP transport
  ray                the TensorDict passed to a Ray actor on the reader's node
                     (upstream's ray_perftest_baseline)
Ours runs without Ray on the same node (our tq.init needs none) and with a
Ray cluster across nodes (the controller is then a Ray actor, as upstream's).

References, same run: memcpy (one thread, warm pages) of the shape's bytes,
as Gbps = 8 x GiB / t (a put and a get each one memcpy); iperf3 (one TCP
stream, 5 s) from A to B over the same veth.

Shapes (peer_role.SHAPES): small = upstream's Small (1024 x 9 x 8192 float32,
288 MiB); medium = 4 x Small (1.125 GiB): the largest power-of-two multiple of
Small whose worst system (about six live copies: the writer's TensorDict, a
serialised copy, the stored copy, the copy in flight, the reader's result, an
object-store or segment spare) stays under half of this 24 GiB, 2-core
machine next to the other jobs on it; complex = upstream's complex case at
Small's size (3 dense, 3 jagged nested, 3 string fields); many_small = 16384
samples of 4 KiB.
"""

import argparse
import contextlib
import datetime
import json
import os
import secrets
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
from peer_role import SHAPES, shape_gib  # noqa: E402

OURS_VENV = os.path.join(REPO, ".venv")
PEER_VENV = os.path.join(REPO, ".bench-peers-venv")
IP_A, IP_B = "10.210.0.1", "10.210.0.2"
RAY_PORT, DS_PORT, ETCD_PORT, META_PORT, MC_PORT = 6379, 31501, 2379, 32379, 50051
SYSTEMS = ["ours-simple", "ours-ds", "upstream-simple", "upstream-yuanrong", "upstream-mooncake", "ray"]
PEERS = ["upstream-simple", "upstream-yuanrong", "upstream-mooncake", "ray"]
SHM_MB = 3072            # datasystem shared memory per worker (ours and openYuanrong's)
SEGMENT = 3 << 30        # Mooncake global segment per client
OBJECT_STORE = 3 << 30   # Ray object store per node
CALL_TIMEOUT = 300


def log(*a):
    print(f"[{time.strftime('%H:%M:%S')}]", *a, file=sys.stderr, flush=True)


def run(*cmd, check=True, timeout=60, **kw):
    return subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout, check=check, **kw)


def pid_alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def stop_pids(pids, timeout=5.0):
    pids = [p for p in pids if p != os.getpid() and pid_alive(p)]
    for p in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(p, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(pid_alive(p) for p in pids):
        time.sleep(0.05)
    for p in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(p, signal.SIGKILL)


def loadavg():
    with open("/proc/loadavg") as f:
        return [float(x) for x in f.read().split()[:3]]


class Namespaces:
    """'same': one namespace with only loopback; 'cross': two joined by a veth
    pair (A 10.210.0.1/24, B 10.210.0.2/24). down() ends every process in them
    and deletes them, also after a failure halfway through up()."""

    def __init__(self, scenario):
        tag = uuid.uuid4().hex[:6]
        self.cross = scenario == "cross"
        self.a = f"pbA{tag}"
        self.b = f"pbB{tag}" if self.cross else self.a
        self.va, self.vb = f"pbva{tag}", f"pbvb{tag}"
        self.ip_a = IP_A if self.cross else "127.0.0.1"
        self.ip_b = IP_B if self.cross else "127.0.0.1"
        self.created = []

    def up(self):
        try:
            for ns in dict.fromkeys((self.a, self.b)):
                run("ip", "netns", "add", ns)
                self.created.append(ns)
                run("ip", "-n", ns, "link", "set", "lo", "up")
            if self.cross:
                run("ip", "link", "add", self.va, "type", "veth", "peer", "name", self.vb)
                for ns, dev, ip in ((self.a, self.va, IP_A), (self.b, self.vb, IP_B)):
                    run("ip", "link", "set", dev, "netns", ns)
                    run("ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", dev)
                    run("ip", "-n", ns, "link", "set", dev, "up")
        except BaseException:
            self.down()
            raise
        return self

    def exec(self, ns):
        return ["ip", "netns", "exec", ns]

    def veth_bytes(self):
        """Bytes A sent plus bytes A received on its veth end so far (0 on 'same')."""
        if not self.cross:
            return 0
        r = run("ip", "-n", self.a, "-s", "-j", "link", "show", "dev", self.va, check=False)
        st = json.loads(r.stdout)[0]["stats64"]
        return st["rx"]["bytes"] + st["tx"]["bytes"]

    def pids(self):
        out = []
        for ns in self.created:
            r = run("ip", "netns", "pids", ns, check=False)
            out += [int(p) for p in r.stdout.split() if p.isdigit()]
        return out

    def down(self):
        for _ in range(3):  # a process may fork while the first round stops its parent
            pids = self.pids()
            if not pids:
                break
            stop_pids(pids)
        for ns in self.created:
            run("ip", "netns", "del", ns, check=False)
        if self.cross:
            run("ip", "link", "del", self.va, check=False)
        self.created = []


class RoleProc:
    """One peer_role.py process; call() sends a request and waits for the answer."""

    def __init__(self, nsx, python, args, env, logpath, cwd):
        self.log = open(logpath, "w")
        os.makedirs(cwd, exist_ok=True)
        self.p = subprocess.Popen(nsx + [python, "-u", os.path.join(HERE, "peer_role.py")] + args,
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, env=env,
                                  text=True, bufsize=1, cwd=cwd)
        self.logpath = logpath

    def call(self, msg, timeout=CALL_TIMEOUT):
        t0 = time.perf_counter()
        self.p.stdin.write(json.dumps(msg) + "\n")
        self.p.stdin.flush()
        r, _, _ = select.select([self.p.stdout], [], [], timeout)
        line = self.p.stdout.readline() if r else ""
        dt = time.perf_counter() - t0
        if not line:
            raise RuntimeError(f"{msg['op']}: no answer within {timeout} s" if not r
                               else f"{msg['op']}: the process exited ({self.tail()})")
        ans = json.loads(line)
        ans["dt"] = dt
        if not ans["ok"]:
            raise StepError(ans["error"], ans.get("detail", ""))
        return ans

    def tail(self, n=3):
        try:
            with open(self.logpath) as f:
                lines = [x.strip() for x in f if x.strip()]
            return " | ".join(lines[-n:])[-400:]
        except OSError:
            return ""

    def close(self):
        if self.p.poll() is None:
            with contextlib.suppress(Exception):
                self.call({"op": "close"}, timeout=30)
        with contextlib.suppress(Exception):
            self.p.wait(timeout=10)
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait()
        self.log.close()


class StepError(Exception):
    def __init__(self, error, detail=""):
        super().__init__(error)
        self.detail = detail


def venv_env(venv, extra=None):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "VIRTUAL_ENV", "PYTHON"))}
    env["PATH"] = f"{venv}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    env["VIRTUAL_ENV"] = venv
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    env["TQ_LOGGING_LEVEL"] = "WARNING"
    env.update(extra or {})
    return env


class SystemRun:
    """The services of one system in one scenario: started by start(), all in
    the scenario's namespaces; the namespaces' teardown ends them."""

    def __init__(self, system, ns, work):
        self.system, self.ns, self.work = system, ns, work
        self.ours = system.startswith("ours")
        self.venv = OURS_VENV if self.ours else PEER_VENV
        self.python = os.path.join(self.venv, "bin", "python")
        self.use_ray = not self.ours or ns.cross
        token = secrets.token_hex(32)
        extra = {"TQDS_SESSION": f"peer-bench-{uuid.uuid4().hex[:8]}",
                 "DATASYSTEM_CLIENT_LOG_DIR": os.path.join(work, "ds-client-logs"),
                 "TMPDIR": work}
        if self.use_ray:
            extra.update({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token})
        if self.ours and ns.cross and os.environ.get("TQDS_ALLOW_INSECURE") != "1":
            # Ours refuses plain tcp off loopback: the deployment's keys, as
            # the README deploys them, for every process of ours (with
            # TQDS_ALLOW_INSECURE=1 in the driver's environment: plain tcp,
            # as the peers run).
            keys = os.path.join(work, "curve-keys")
            r = run(os.path.join(self.venv, "bin", "tq"), "keys", keys, check=False, timeout=60)
            if r.returncode != 0:
                raise StepError(f"tq keys: {(r.stdout + r.stderr).strip().splitlines()[-1:]}")
            extra["TQDS_CURVE_KEY_DIR"] = keys
        self.env = venv_env(self.venv, extra)
        self.procs = []
        self.ds_workers = []
        self.ray_dirs = []

    def start(self):
        ns = self.ns
        if not os.access(self.python, os.X_OK):
            raise StepError(f"no venv at {self.venv} (run bench/peers/setup_peers.sh)")
        if self.system == "ours-ds":
            etcd = None
            if ns.cross:
                etcd = self._etcd()
            for n, ip in dict.fromkeys(((ns.a, ns.ip_a), (ns.b, ns.ip_b))):
                d = tempfile.mkdtemp(prefix="ds-", dir=self.work)
                cmd = ns.exec(n) + [os.path.join(self.venv, "bin", "dscli"), "start", "-w", "--worker_address",
                                    f"{ip}:{DS_PORT}", "--unix_socket_dir", d, "--shared_memory_size_mb",
                                    str(SHM_MB)]
                if etcd:
                    cmd += ["--etcd_address", etcd]
                r = run(*cmd, check=False, timeout=120, env=self.env)
                if r.returncode != 0:
                    raise StepError(f"dscli start: {(r.stdout + r.stderr).strip().splitlines()[-1:]}")
                self.ds_workers.append((n, ip))
        if self.use_ray:
            self._ray_node(ns.a, ns.ip_a, head=True)
            if ns.cross:
                self._ray_node(ns.b, ns.ip_b, head=False)

    def _etcd(self):
        d = os.path.join(self.work, "etcd")
        url_c, url_p = f"http://{IP_A}:{ETCD_PORT}", f"http://{IP_A}:{ETCD_PORT + 1}"
        self.etcd_log = open(os.path.join(self.work, "etcd.log"), "w")
        subprocess.Popen(self.ns.exec(self.ns.a) + [
            "etcd", "--name", "pb", "--data-dir", d, "--listen-client-urls", url_c, "--advertise-client-urls", url_c,
            "--listen-peer-urls", url_p, "--initial-advertise-peer-urls", url_p,
            "--initial-cluster", f"pb={url_p}"], stdout=self.etcd_log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            r = run(*self.ns.exec(self.ns.a), "curl", "-s", "-m", "2", f"{url_c}/health", check=False)
            if '"health":"true"' in r.stdout:
                return f"{IP_A}:{ETCD_PORT}"
            time.sleep(0.3)
        raise StepError("etcd did not become healthy within 30 s")

    def _ray_node(self, n, ip, head):
        cmd = self.ns.exec(n) + [os.path.join(self.venv, "bin", "ray"), "start", f"--node-ip-address={ip}",
                                 "--num-cpus=8", f"--object-store-memory={OBJECT_STORE}", "--disable-usage-stats",
                                 f"--temp-dir={self._short_dir()}"]
        cmd += ["--head", f"--port={RAY_PORT}", "--include-dashboard=false"] if head else \
            [f"--address={self.ns.ip_a}:{RAY_PORT}"]
        # Each node its own working directory, as on two machines: Ray's
        # workers inherit it, and openYuanrong's dscli puts its logs, RocksDB
        # and sockets in ./datasystem of the directory it is started from.
        cwd = os.path.join(self.work, f"node-{ip}")
        os.makedirs(cwd, exist_ok=True)
        r = run(*cmd, check=False, timeout=180, env=self.env, cwd=cwd)
        if r.returncode != 0:
            msg = [x for x in (r.stdout + r.stderr).strip().splitlines() if x.strip()]
            raise StepError(f"ray start: {msg[-1] if msg else r.returncode}")

    def _short_dir(self):
        # Ray's socket paths must stay under 107 bytes: a short directory of
        # its own in /tmp, removed in stop().
        d = tempfile.mkdtemp(prefix="pbr", dir="/tmp")
        os.chmod(d, 0o755)
        self.ray_dirs.append(d)
        return d

    def conf(self):
        s = self.system
        if s in ("ours-simple", "upstream-simple"):
            block = {"num_data_storage_units": 2}
            if s == "ours-simple" and self.ns.cross:
                # Our client reaches a unit on the same host through its Unix
                # socket; the namespaces share one filesystem, so without this
                # the reader in B would read A's units without the veth.
                block["prefer_ipc"] = False
            return {"backend": {"storage_backend": "SimpleStorage", "SimpleStorage": block}}
        if s == "ours-ds":
            return {"backend": {"storage_backend": "Yuanrong", "Yuanrong": {"auto_init": False,
                                                                           "worker_port": DS_PORT}}}
        if s == "upstream-yuanrong":
            return {"backend": {"storage_backend": "Yuanrong", "Yuanrong": {
                "auto_init": True, "worker_port": DS_PORT, "metastore_port": META_PORT,
                "worker_args": f"--shared_memory_size_mb {SHM_MB}"}}}
        if s == "upstream-mooncake":
            return {"backend": {"storage_backend": "MooncakeStore", "MooncakeStore": {
                "auto_init": True, "metadata_server": "P2PHANDSHAKE",
                "master_server_address": f"{self.ns.ip_a}:{MC_PORT}", "local_hostname": "", "protocol": "tcp",
                "global_segment_size": SEGMENT, "local_buffer_size": 1 << 30, "device_name": ""}}}
        return {}

    def roles(self):
        ns = self.ns
        common = ["--system", self.system, "--conf", json.dumps(self.conf()), "--reader-ip", ns.ip_b]
        if self.use_ray:
            common += ["--ray-address", f"{ns.ip_a}:{RAY_PORT}"]
        w = RoleProc(ns.exec(ns.a), self.python, common + ["--role", "writer", "--node-ip", ns.ip_a], self.env,
                     os.path.join(self.work, "writer.log"), os.path.join(self.work, f"node-{ns.ip_a}"))
        self.procs.append(w)
        r = RoleProc(ns.exec(ns.b), self.python, common + ["--role", "reader", "--node-ip", ns.ip_b], self.env,
                     os.path.join(self.work, "reader.log"), os.path.join(self.work, f"node-{ns.ip_b}"))
        self.procs.append(r)
        return w, r

    def stop(self):
        for p in self.procs:
            with contextlib.suppress(Exception):
                p.close()
        # A clean stop first; the namespace teardown kills what is left. Never
        # raises (a dscli that fails or hangs), so the callers' ns.down() runs.
        for n, ip in self.ds_workers:
            with contextlib.suppress(Exception):
                run(*self.ns.exec(n), os.path.join(self.venv, "bin", "dscli"), "stop", "--worker_address",
                    f"{ip}:{DS_PORT}", check=False, timeout=30, env=self.env)

    def remove_dirs(self):  # after the namespaces' processes have ended
        for d in self.ray_dirs:
            shutil.rmtree(d, ignore_errors=True)


def median(v):
    return statistics.median(v) if v else float("nan")


def bench_system(system, scenario, shapes, reps, work, sleep):
    """Runs one system through every shape; returns {shape: cell}."""
    cells = {}
    ns = Namespaces(scenario)
    sysrun = None
    try:
        ns.up()
        sysrun = SystemRun(system, ns, work)
        t0 = time.perf_counter()
        sysrun.start()
        writer, reader = sysrun.roles()
        writer.call({"op": "init"}, timeout=240)
        reader.call({"op": "init"}, timeout=240)
        log(f"{scenario} {system}: services and init {time.perf_counter() - t0:.1f} s")
        for shape in shapes:
            cells[shape] = one_shape(writer, reader, shape, reps, sleep, f"{scenario} {system}", ns)
            if "error" in cells[shape] and cells[shape].get("fatal"):
                for s in shapes[shapes.index(shape) + 1:]:
                    cells[s] = {"error": f"not run: {cells[shape]['error']}"}
                break
    except StepError as e:
        log(f"{scenario} {system}: ERROR {e} {getattr(e, 'detail', '')[:800]}")
        for s in shapes:
            cells.setdefault(s, {"error": str(e)})
    except Exception as e:
        log(f"{scenario} {system}: ERROR {type(e).__name__}: {e}")
        for s in shapes:
            cells.setdefault(s, {"error": f"{type(e).__name__}: {e}"})
    finally:
        if sysrun is not None:
            sysrun.stop()
        ns.down()
        if sysrun is not None:
            sysrun.remove_dirs()
    return cells


def one_shape(writer, reader, shape, reps, sleep, what, ns):
    gib = shape_gib(shape)
    batch = SHAPES[shape][0]
    cell = {"gib": gib, "put": [], "get": [], "list": [], "clear": [], "veth_put": [], "veth_get": []}
    try:
        writer.call({"op": "make", "shape": shape})
        for it in range(reps + 1):
            part = f"{shape}_{it}"
            verify = it == 0
            b0 = ns.veth_bytes()
            a = writer.call({"op": "put", "part": part, "shape": shape})
            b1 = ns.veth_bytes()
            time.sleep(sleep)
            n = reader.call({"op": "list", "part": part, "shape": shape})
            if n["n"] != batch:
                raise StepError(f"kv_list saw {n['n']} keys, not {batch}")
            time.sleep(sleep)
            b2 = ns.veth_bytes()
            g = reader.call({"op": "get", "part": part, "shape": shape, "keep": verify})
            b3 = ns.veth_bytes()
            if verify:
                want = writer.call({"op": "digest"})["digest"]
                got = reader.call({"op": "digest"})["digest"]
                cell["verified"] = want == got
                if want != got:
                    cell["digest_mismatch"] = sorted(k for k in set(want) | set(got) if want.get(k) != got.get(k))
            time.sleep(sleep)
            c = writer.call({"op": "clear", "part": part, "shape": shape})
            if not verify:
                cell["put"].append(a["dt"])
                cell["get"].append(g["dt"])
                cell["list"].append(n["dt"])
                cell["clear"].append(c["dt"])
                cell["veth_put"].append(b1 - b0)
                cell["veth_get"].append(b3 - b2)
    except StepError as e:
        log(f"{what} {shape}: ERROR {e} {e.detail[:600]}")
        return {"gib": gib, "error": str(e)}
    except Exception as e:  # no answer: the process is gone or stuck; the rest of this system is skipped
        log(f"{what} {shape}: ERROR {type(e).__name__}: {e}")
        return {"gib": gib, "error": f"{type(e).__name__}: {e}", "fatal": True}
    put, get = median(cell["put"]), median(cell["get"])
    cell.update(put_s=put, get_s=get, gbps=16 * gib / (put + get), put_gbps=8 * gib / put, get_gbps=8 * gib / get)
    crossed = (median(cell["veth_put"]) + median(cell["veth_get"])) / (gib * 2**30)
    cell["veth_ratio"] = crossed
    log(f"{what} {shape}: put {put * 1e3:.1f} ms get {get * 1e3:.1f} ms -> {cell['gbps']:.2f} Gbps"
        + (f", {crossed:.2f} x the shape's bytes crossed the veth" if ns.cross else "")
        + f"{'' if cell.get('verified') else '  BYTES DIFFER ' + str(cell.get('digest_mismatch'))}")
    return cell


def memcpy_ref(shapes, work):
    """memcpy (torch copy_, one thread, into warm pages) of each shape's bytes,
    best of 5: Gbps = 8 x GiB / t."""
    code = r"""
import json, sys, time, torch
torch.set_num_threads(1)
out = {}
for name, gib in json.loads(sys.argv[1]).items():
    n = int(gib * 2**30) // 4
    src = torch.randn(n)
    dst = torch.empty_like(src)
    dst.copy_(src)
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        dst.copy_(src)
        times.append(time.perf_counter() - t0)
    out[name] = {"s": min(times), "gbps": 8 * gib / min(times)}
    del src, dst
print(json.dumps(out))
"""
    r = run(os.path.join(OURS_VENV, "bin", "python"), "-c", code, json.dumps({s: shape_gib(s) for s in shapes}),
            timeout=300)
    return json.loads(r.stdout.strip().splitlines()[-1])


def iperf3_ref(work, seconds=5):
    ns = Namespaces("cross")
    try:
        ns.up()
        srv = subprocess.Popen(ns.exec(ns.b) + ["iperf3", "-s", "-B", IP_B, "-1"], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 15
        while f"{IP_B}:5201" not in run(*ns.exec(ns.b), "ss", "-ltn", check=False).stdout:
            if time.monotonic() > deadline:
                return {"error": "iperf3 -s did not listen within 15 s"}
            time.sleep(0.1)
        r = run(*ns.exec(ns.a), "iperf3", "-c", IP_B, "-t", str(seconds), "-J", check=False, timeout=seconds + 30)
        with contextlib.suppress(subprocess.TimeoutExpired):
            srv.wait(timeout=10)
        j = json.loads(r.stdout)
        if "error" in j:
            return {"error": j["error"]}
        return {"gbps": j["end"]["sum_received"]["bits_per_second"] / 2**30,
                "gbit_si": j["end"]["sum_received"]["bits_per_second"] / 1e9}
    except Exception as e:
        return {"error": f"{type(e).__name__}: {e}"}
    finally:
        ns.down()


def fmt_cell(c):
    if c is None:
        return "-"
    if "error" in c:
        return "n/a"
    return f"{c['gbps']:.2f}{'' if c.get('verified') else '!'}"


def best_peer(row):
    best = None
    for s in PEERS:
        c = row.get(s)
        if c and "gbps" in c and (best is None or c["gbps"] > best[1]):
            best = (s, c["gbps"])
    return best


def table(result):
    shapes, scenarios, systems = result["shapes"], result["scenarios"], result["systems"]
    lines = []
    head = f"{'shape':<11}{'scen.':<6}" + "".join(f"{s:>18}" for s in systems) + \
        f"{'memcpy':>9}{'iperf3':>8}{'ds/best':>9}{'simple/up':>10}"
    lines.append(head)
    notes = {}
    for shape in shapes:
        for scen in scenarios:
            row = result["rows"][scen][shape]
            cells = []
            for s in systems:
                c = row.get(s)
                t = fmt_cell(c)
                if c and "error" in c:
                    k = notes.setdefault(c["error"], len(notes) + 1)
                    t = f"n/a[{k}]"
                cells.append(f"{t:>18}")
            mc = result["memcpy"].get(shape, {}).get("gbps")
            ip = result["iperf3"].get("gbps") if scen == "cross" else None
            bp = best_peer(row)
            ds = row.get("ours-ds", {}).get("gbps")
            sim, up = row.get("ours-simple", {}).get("gbps"), row.get("upstream-simple", {}).get("gbps")
            lines.append(f"{shape:<11}{scen:<6}" + "".join(cells) +
                         f"{mc:9.2f}" + (f"{ip:8.2f}" if ip else f"{'':>8}") +
                         (f"{ds / bp[1]:9.2f}" if ds and bp else f"{'-':>9}") +
                         (f"{sim / up:10.2f}" if sim and up else f"{'-':>10}"))
    lines.append("Gbps = 16 x GiB / (put + get), medians; '!' = bytes differ; ds/best = ours-ds over the best peer;"
                 " simple/up = ours-simple over upstream-simple")
    for err, k in notes.items():
        lines.append(f"[{k}] {err}")
    return "\n".join(lines)


def markdown(result):
    """The table as Markdown (README, docs/peer_bench.md): Gbps per system,
    the references, ours over the best peer."""
    systems = result["systems"]
    head = ["shape", "scenario"] + systems + ["memcpy", "iperf3", "ours-ds / best peer",
                                              "ours-simple / upstream-simple"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    notes = {}
    for shape in result["shapes"]:
        for scen in result["scenarios"]:
            row = result["rows"][scen][shape]
            cells = [shape, scen]
            for s in systems:
                c = row.get(s) or {"error": "not run"}
                if "error" in c:
                    k = notes.setdefault(c["error"], len(notes) + 1)
                    cells.append(f"n/a [{k}]")
                else:
                    cells.append(fmt_cell(c))
            cells.append(f"{result['memcpy'].get(shape, {}).get('gbps', float('nan')):.1f}")
            cells.append(f"{result['iperf3']['gbps']:.1f}" if scen == "cross" and "gbps" in result["iperf3"] else "")
            bp = best_peer(row)
            ds = row.get("ours-ds", {}).get("gbps")
            sim, up = row.get("ours-simple", {}).get("gbps"), row.get("upstream-simple", {}).get("gbps")
            cells.append(f"{ds / bp[1]:.2f} x ({bp[0]})" if ds and bp else "-")
            cells.append(f"{sim / up:.2f} x" if sim and up else "-")
            lines.append("| " + " | ".join(cells) + " |")
    for err, k in notes.items():
        lines.append(f"\n[{k}] {err}")
    return "\n".join(lines)


def targets(result):
    out = []
    rows = result["rows"]
    for scen in result["scenarios"]:
        for shape in result["shapes"]:
            row = rows[scen][shape]
            bp = best_peer(row)
            ds = row.get("ours-ds", {}).get("gbps")
            if ds and bp:
                out.append((f"ours-ds >= 2x best peer, {shape} {scen}", ds / bp[1] >= 2,
                            f"{ds:.2f} vs {bp[0]} {bp[1]:.2f} = {ds / bp[1]:.2f}x"))
            sim, up = row.get("ours-simple", {}).get("gbps"), row.get("upstream-simple", {}).get("gbps")
            if sim and up:
                out.append((f"ours-simple >= upstream-simple, {shape} {scen}", sim >= up,
                            f"{sim:.2f} vs {up:.2f} = {sim / up:.2f}x"))
    if "same" in rows and "small" in rows["same"]:
        ds = rows["same"]["small"].get("ours-ds", {}).get("gbps")
        mc = result["memcpy"].get("small", {}).get("gbps")
        if ds and mc:
            out.append(("ours-ds same small >= 0.6x memcpy", ds >= 0.6 * mc, f"{ds:.2f} vs {mc:.2f} = {ds / mc:.2f}x"))
    ip = result["iperf3"].get("gbps")
    if "cross" in rows and ip:
        for shape in result["shapes"]:
            ds = rows["cross"][shape].get("ours-ds", {}).get("gbps")
            if ds:
                out.append((f"ours-ds cross {shape} >= 0.9x iperf3", ds >= 0.9 * ip,
                            f"{ds:.2f} vs {ip:.2f} = {ds / ip:.2f}x"))
    for scen in result["scenarios"]:
        if "many_small" in rows[scen] and "small" in rows[scen]:
            a, b = rows[scen]["many_small"].get("ours-ds", {}), rows[scen]["small"].get("ours-ds", {})
            if "gbps" in a and "gbps" in b:
                out.append((f"ours-ds many_small within 2x of small, {scen}", a["gbps"] * 2 >= b["gbps"],
                            f"{a['gbps']:.2f} vs {b['gbps']:.2f} = {a['gbps'] / b['gbps']:.2f}x"))
    return out


def chart(result, path):
    code = r"""
import json, sys
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
r = json.load(open(sys.argv[1]))
systems = r["systems"]
labels, groups = [], []
for scen in r["scenarios"]:
    for shape in r["shapes"]:
        labels.append(f"{shape}\n{scen}")
        groups.append(r["rows"][scen][shape])
fig, ax = plt.subplots(figsize=(max(8, 1.7 * len(labels)), 5.4))
w = 0.8 / (len(systems) + 2)
colors = plt.get_cmap("tab10").colors
for i, s in enumerate(systems):
    xs = [k + i * w for k in range(len(groups))]
    vals = [g.get(s, {}).get("gbps", 0) for g in groups]
    ax.bar(xs, vals, w, label=s, color=colors[i % 10])
    for x, g in zip(xs, groups):
        if "error" in g.get(s, {"error": 1}):
            ax.text(x, 0.05, "n/a", rotation=90, ha="center", va="bottom", fontsize=7)
refs = []
for k, (scen, shape) in enumerate((sc, sh) for sc in r["scenarios"] for sh in r["shapes"]):
    mc = r["memcpy"].get(shape, {}).get("gbps", 0)
    ip = r["iperf3"].get("gbps", 0) if scen == "cross" else 0
    refs.append((mc, ip))
i = len(systems)
ax.bar([k + i * w for k in range(len(groups))], [m for m, _ in refs], w, label="memcpy", color="#bbbbbb")
ax.bar([k + (i + 1) * w for k in range(len(groups))], [p for _, p in refs], w, label="iperf3 (veth)", color="#555555")
ax.set_xticks([k + 0.4 - w / 2 for k in range(len(groups))])
ax.set_xticklabels(labels, fontsize=8)
ax.set_ylabel("Gbps = 16 x GiB / (put + get)")
ax.set_yscale("log")
ax.set_title(f"TransferQueue kv perftest, writer and reader processes ({r['date']}, 2 cores)")
ax.legend(fontsize=7, ncol=8, loc="upper center", bbox_to_anchor=(0.5, -0.13))
ax.grid(axis="y", alpha=0.3)
fig.tight_layout()
fig.savefig(sys.argv[2], dpi=110)
"""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(result, f)
    try:
        for py in (os.path.join(PEER_VENV, "bin", "python"), os.path.join(OURS_VENV, "bin", "python")):
            r = run(py, "-c", code, f.name, path, check=False, timeout=120)
            if r.returncode == 0:
                return None
        return r.stderr.strip().splitlines()[-1:]
    finally:
        os.unlink(f.name)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="1 timed iteration, shapes small, complex, many_small")
    ap.add_argument("--reps", type=int, default=0,
                    help="timed iterations per shape (default 4, as upstream's perftest; --quick 1)")
    ap.add_argument("--scenarios", default="same,cross")
    ap.add_argument("--systems", default=",".join(SYSTEMS))
    ap.add_argument("--shapes", default="")
    ap.add_argument("--sleep", type=float, default=0.3, help="seconds between steps (upstream: 2)")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--png", help="write the chart here")
    ap.add_argument("--keep-logs", action="store_true", help="keep the work directory with every process's log")
    ap.add_argument("--markdown-from", metavar="JSON",
                    help="print the Markdown table of an earlier run's JSON and exit")
    args = ap.parse_args()
    if args.markdown_from:
        with open(args.markdown_from) as f:
            print(markdown(json.load(f)))
        return
    if os.geteuid() != 0:
        sys.exit("peer_bench: needs root for ip netns")
    reps = args.reps or (1 if args.quick else 4)
    shapes = args.shapes.split(",") if args.shapes else (
        ["small", "complex", "many_small"] if args.quick else ["small", "medium", "complex", "many_small"])
    systems = args.systems.split(",")
    scenarios = args.scenarios.split(",")
    work = tempfile.mkdtemp(prefix="peer_bench_")
    os.chmod(work, 0o755)
    result = {"date": datetime.date.today().isoformat(), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
              "command": " ".join([os.path.basename(sys.executable)] + sys.argv), "reps": reps,
              "sleep_s": args.sleep, "shapes": shapes, "shape_dims": {s: SHAPES[s] for s in shapes},
              "shape_gib": {s: shape_gib(s) for s in shapes}, "systems": systems, "scenarios": scenarios,
              "load_start": loadavg(), "rows": {}, "work": work}
    log(f"load average at start {result['load_start']}; work directory {work}")
    t_start = time.perf_counter()
    try:
        result["memcpy"] = memcpy_ref(shapes, work)
        log("memcpy: " + ", ".join(f"{s} {v['gbps']:.2f} Gbps" for s, v in result["memcpy"].items()))
        result["iperf3"] = iperf3_ref(work) if "cross" in scenarios else {}
        if result["iperf3"]:
            log(f"iperf3 A->B over the veth: {result['iperf3']}")
        for scen in scenarios:
            result["rows"][scen] = {s: {} for s in shapes}
            for system in systems:
                d = os.path.join(work, f"{scen}-{system}")
                os.makedirs(d)
                os.chmod(d, 0o777)
                cells = bench_system(system, scen, shapes, reps, d, args.sleep)
                for s in shapes:
                    result["rows"][scen][s][system] = cells.get(s, {"error": "not run"})
                result.setdefault("load_during", []).append(loadavg()[0])
    finally:
        result["load_end"] = loadavg()
        result["seconds"] = time.perf_counter() - t_start
    result["targets"] = [{"target": t, "met": m, "figures": f} for t, m, f in targets(result)]
    print(f"\n== peer_bench {result['started']}: {reps} timed iterations (+1 verified) per cell, "
          f"load {result['load_start'][0]:.2f} -> {result['load_end'][0]:.2f}, {result['seconds']:.0f} s ==")
    print("shapes: " + ", ".join(f"{s} {SHAPES[s][0]}x{SHAPES[s][1]}x{SHAPES[s][2]} {SHAPES[s][3]} "
                                 f"{shape_gib(s) * 1024:.0f} MiB" for s in shapes))
    text = table(result)
    result["table"] = text
    print(text)
    print("\n== targets ==")
    for t in result["targets"]:
        print(f"{'MET ' if t['met'] else 'MISS'} {t['target']}: {t['figures']}")
    if args.png:
        err = chart(result, args.png)
        print(f"chart: {args.png}" if err is None else f"chart failed: {err}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    if not args.keep_logs:
        shutil.rmtree(work, ignore_errors=True)
    else:
        print(f"logs: {work}")


if __name__ == "__main__":
    main()
