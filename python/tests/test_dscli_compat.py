"""`dscli` as a drop-in for openYuanrong datasystem's, driven the way its users
drive it: upstream TransferQueue 0.1.11's Yuanrong bootstrap command line
(worker and head nodes, metastore mode), the seed's multi-node commands with
two nodes on one machine (127.0.0.1 and 127.0.0.2, one port), and the real
dscli's output lines. Real processes on loopback; every process started here
is killed by pid at the end.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile

import pytest

from conftest import free_port, kill_pid, pid_alive, start_etcd



def run(cmd: list[str], timeout: float = 90) -> subprocess.CompletedProcess:
    # As upstream TransferQueue runs it: stdout and stderr together, text.
    return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout)


def ok_pid(out: str, address: str) -> int | None:
    m = re.search(r"\[  OK  \] Start worker service @ " + re.escape(address) + r" success, PID: (\d+)", out)
    return int(m.group(1)) if m else None


@pytest.fixture
def socket_dir():
    d = tempfile.mkdtemp(prefix="tqds_compat_")
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def workers():
    """Pids of the workers a test started; killed at the end whatever happened."""
    started: list[tuple[str, int]] = []
    yield started
    for address, pid in started:
        subprocess.run(["dscli", "stop", "--worker_address", address, "--timeout_s", "10"],
                       capture_output=True, timeout=30)
        kill_pid(pid)


@pytest.fixture
def etcd():
    """A real etcd on free loopback ports; yields its client address."""
    d = tempfile.mkdtemp(prefix="tqds_compat_etcd_")
    procs: list[subprocess.Popen] = []
    try:
        yield start_etcd(d, procs)
    finally:
        for proc in procs:
            kill_pid(proc.pid)
            proc.wait()
        shutil.rmtree(d, ignore_errors=True)


def bootstrap_command(worker_address: str, metastore_address: str, is_head: bool, worker_args: str) -> list[str]:
    """The command line upstream TransferQueue 0.1.11 builds in
    transfer_queue/storage/bootstrap/yuanrong_bootstrap.py (same order)."""
    cmd = ["dscli", "start", "-w", "--worker_address", worker_address]
    cmd.extend(["--metastore_address", metastore_address])
    if is_head:
        cmd.extend(["--start_metastore_service", "true"])
    cmd.extend(["--arena_per_tenant", "1", "--enable_worker_worker_batch_get", "true"])
    if worker_args:
        cmd.extend(worker_args.split())
    return cmd


def test_transfer_queue_0_1_11_worker_node(etcd, workers, socket_dir):
    # A worker node: the head's metastore is a real etcd here (same API). The
    # worker_args are upstream's default plus its NPU recommendations.
    port = free_port()
    address = f"127.0.0.1:{port}"
    args = (f"--shared_memory_size_mb 8192 --enable_huge_tlb true --remote_h2d_device_ids 0,1,2,3 "
            f"--unix_domain_socket_dir {socket_dir}")
    r = run(bootstrap_command(address, etcd, False, args))
    pid = ok_pid(r.stdout, address)
    if pid:
        workers.append((address, pid))
    assert r.returncode == 0 and "[  OK  ]" in r.stdout, r.stdout
    assert "no effect" in r.stdout  # arena_per_tenant, batch get, huge TLB, RH2D: reported once
    assert r.stdout.count("--arena_per_tenant=1") == 1

    from datasystem import KVClient
    kv = KVClient("127.0.0.1", port)
    kv.init()
    kv.set("compat/k", b"v")
    assert kv.get("compat/k") == b"v"

    # upstream's stop_datasystem_worker
    s = subprocess.run(["dscli", "stop", "--worker_address", address], timeout=90, capture_output=True)
    assert s.returncode == 0, s.stdout + s.stderr
    assert f"[  OK  ] Stop worker service @ {address} normally, PID: {pid}".encode() in s.stdout


def test_transfer_queue_0_1_11_head_and_worker_nodes(workers, socket_dir):
    # Metastore mode without etcd, as upstream deploys it: the head node starts
    # the metastore service, then a worker node joins through it.
    head_port, node_port, ms_port = free_port(), free_port(), free_port()
    metastore = f"127.0.0.1:{ms_port}"
    for port, is_head in ((head_port, True), (node_port, False)):
        address = f"127.0.0.1:{port}"
        r = run(bootstrap_command(address, metastore, is_head,
                                  f"--shared_memory_size_mb 256 --unix_domain_socket_dir {socket_dir}"))
        pid = ok_pid(r.stdout, address)
        if pid:
            workers.append((address, pid))
        assert r.returncode == 0 and "[  OK  ]" in r.stdout, r.stdout

    from datasystem import KVClient
    head, node = KVClient("127.0.0.1", head_port), KVClient("127.0.0.1", node_port)
    head.init()
    node.init()
    head.set("tq/meta", b"from the head")
    assert node.get("tq/meta") == b"from the head"


def start_two_loopback_workers(etcd, workers, socket_dir, shared_memory_mb):
    """Two workers joined through `etcd` on one port of two loopback addresses
    (the seed's two nodes on one machine, sharing one file system), each
    recorded in `workers` (stopped by pid at the end). Returns (port, head
    address, node address)."""
    port = free_port()
    head, node = f"127.0.0.1:{port}", f"127.0.0.2:{port}"
    for address in (head, node):
        r = run(["dscli", "start", "-w", "--worker_address", address, "--etcd_address", etcd,
                 "--unix_domain_socket_dir", socket_dir, "--shared_memory_size_mb", str(shared_memory_mb)])
        pid = ok_pid(r.stdout, address)
        if pid:
            workers.append((address, pid))
        assert r.returncode == 0 and pid, r.stdout
    return port, head, node


def test_seed_multi_node_commands_on_one_machine(etcd, workers, socket_dir):
    # The seed's Appendix B with the two nodes as two loopback addresses and
    # one port, sharing one file system: each starts, serves, and reads what
    # the other wrote; stopping one leaves the other running.
    port, head, node = start_two_loopback_workers(etcd, workers, socket_dir, shared_memory_mb=256)

    from datasystem import KVClient
    a, b = KVClient("127.0.0.1", port), KVClient("127.0.0.2", port)
    a.init()
    b.init()
    a.set("seed/x", b"written on the head node")
    assert b.get("seed/x") == b"written on the head node"

    s = run(["dscli", "stop", "--worker_address", node])
    assert s.returncode == 0 and f"[  OK  ] Stop worker service @ {node} normally" in s.stdout, s.stdout
    assert a.get("seed/x") == b"written on the head node"
    again = run(["dscli", "stop", "--worker_address", node])
    assert again.returncode == 1 and "Stop failed" in again.stdout


def test_yr_nx_writes_see_a_key_held_by_another_worker(etcd, workers, socket_dir):
    # openYuanrong's ExistenceOpt.NX spans the cluster: a key the head's
    # worker holds refuses msettx on the other worker (nothing written) and
    # fails that key of an mset NX there; its value stays the head's.
    port, _, _ = start_two_loopback_workers(etcd, workers, socket_dir, shared_memory_mb=64)

    from yr.datasystem import ExistenceOpt, KVClient
    a, b = KVClient("127.0.0.1", port), KVClient("127.0.0.2", port)
    a.init()
    b.init()
    a.set("nx_held", b"head")
    with pytest.raises(RuntimeError, match=r"^code: \[Object already exist error\].*nx_held"):
        b.msettx(["nx_held", "nx_new"], [b"node", b"x"], existence_opt=ExistenceOpt.NX)
    assert b.exist(["nx_new"]) == [False] and a.exist(["nx_new"]) == [False]
    assert b.mset(["nx_held", "nx_other"], [b"node", b"y"], existence_opt=ExistenceOpt.NX) == ["nx_held"]
    assert b.get(["nx_held", "nx_other"]) == [b"head", b"y"]
    assert a.get(["nx_held"]) == [b"head"]
    b.msettx(["nx_tx1", "nx_tx2"], [b"1", b"2"], existence_opt=ExistenceOpt.NX)  # new keys: written
    assert a.get(["nx_tx1", "nx_tx2"]) == [b"1", b"2"]


def test_real_dscli_spellings(workers, socket_dir):
    # The real dscli's option forms: -t before -w, stop -w ADDR, --version.
    port = free_port()
    address = f"127.0.0.1:{port}"
    r = run(["dscli", "start", "-t", "30", "-w", f"--worker_address={address}",
             f"--unix_domain_socket_dir={socket_dir}", "--shared_memory_size_mb=64"])
    pid = ok_pid(r.stdout, address)
    if pid:
        workers.append((address, pid))
    assert r.returncode == 0 and pid, r.stdout
    assert f"Starting worker service with PID: {pid}" in r.stdout
    s = run(["dscli", "stop", "-w", address])
    assert s.returncode == 0 and f"PID: {pid}" in s.stdout, s.stdout
    v = run(["dscli", "--version"])
    assert v.returncode == 0 and v.stdout.startswith("dscli ")


def test_stop_acts_in_its_own_network_namespace(workers, socket_dir):
    # One address in two network namespaces is two workers (two containers,
    # two `ip netns` nodes on one host): `dscli stop` run in one namespace
    # stops that namespace's worker and leaves the other serving.
    from test_multi_node import fresh_netns_pair

    port = free_port()
    address = f"127.0.0.1:{port}"
    with fresh_netns_pair() as pair:
        pids = {}
        for ns, sub in ((pair.a, "a"), (pair.b, "b")):
            ns_dir = os.path.join(socket_dir, sub)  # short: the worker's socket lives there
            os.mkdir(ns_dir)
            r = run(pair.exec(ns) + ["dscli", "start", "-w", "--worker_address", address,
                                     "--unix_domain_socket_dir", ns_dir, "--shared_memory_size_mb", "64"])
            pids[ns] = ok_pid(r.stdout, address)
            if pids[ns]:
                workers.append((address, pids[ns]))  # stop by pid, whichever namespace
            assert r.returncode == 0 and pids[ns], r.stdout

        s = run(pair.exec(pair.a) + ["dscli", "stop", "--worker_address", address])
        assert s.returncode == 0 and f"PID: {pids[pair.a]}" in s.stdout, s.stdout
        assert not pid_alive(pids[pair.a]), f"the worker in {pair.a} outlived its dscli stop"
        assert pid_alive(pids[pair.b]), f"dscli stop in {pair.a} stopped the worker in {pair.b}"
        st = run(pair.exec(pair.b) + ["dscli", "status", "--worker_address", address])
        assert st.returncode == 0, st.stdout
        s = run(pair.exec(pair.b) + ["dscli", "stop", "--worker_address", address])
        assert s.returncode == 0 and f"PID: {pids[pair.b]}" in s.stdout, s.stdout
        assert not pid_alive(pids[pair.b])
