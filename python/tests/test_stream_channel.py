"""The simple backend across two network namespaces with the deployment's
keys: a controller with an embedded storage unit in A (it logs its stream
channel's address), and client processes in B that put and get through the
veth. By default the client's payloads go over the unit's stream channel
(the client holds a connection to the logged port), byte-identical; with
`encrypt_payloads` the same bytes go over CURVE and no connection to that
port exists; a client without keys is refused by name.

The namespaces are made and deleted by fresh_netns_pair (test_multi_node.py),
which also gives every process it starts a fresh key set; every process
started here is stopped by pid at the end, also on failure."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap

from conftest import kill_pid
from test_multi_node import HEAD_NODE_IP, fresh_netns_pair

TQ = shutil.which("tq")

CLIENT = textwrap.dedent("""
    import json, os, sys
    import torch
    from tensordict import TensorDict
    import transfer_queue as tq
    from transfer_queue import ZMQServerInfo

    address, encrypt = sys.argv[1], sys.argv[2] == "1"
    try:
        c = tq.TransferQueueClient(client_id="stream-" + sys.argv[2],
                                   controller_info=ZMQServerInfo.from_address(address))
        c.initialize_storage_manager(manager_type="SimpleStorageManager",
                                     config={"prefer_ipc": False, "encrypt_payloads": encrypt})
        g = torch.Generator().manual_seed(7)
        x = torch.randn(64, 65536, generator=g)          # 16 MiB of float32
        t = torch.randint(0, 1 << 30, (64, 3), generator=g)
        partition = "p" + sys.argv[2]
        c.put(TensorDict({"x": x, "t": t}, batch_size=[64]), partition_id=partition)
        got = c.get_data(c.get_meta(["x", "t"], 64, partition, task_name="t"))
        same = torch.equal(got["x"], x) and torch.equal(got["t"], t)
        # The remote ports of this process's established tcp connections.
        inodes = set()
        for fd in os.listdir("/proc/self/fd"):
            try:
                link = os.readlink(f"/proc/self/fd/{fd}")
            except OSError:
                continue
            if link.startswith("socket:["):
                inodes.add(link[8:-1])
        ports = []
        with open("/proc/self/net/tcp") as f:
            for line in f.readlines()[1:]:
                p = line.split()
                if p[3] == "01" and p[9] in inodes:
                    ports.append(int(p[2].split(":")[1], 16))
        print("RESULT " + json.dumps({"same": same, "ports": ports}), flush=True)
    except Exception as e:
        print("ERROR", type(e).__name__, e, flush=True)
""")


def run_client(pair, address: str, encrypt: bool, env: dict | None = None) -> str:
    r = subprocess.run(pair.exec(pair.b) + [sys.executable, "-c", CLIENT, address, "1" if encrypt else "0"],
                       capture_output=True, text=True, timeout=180, env=env)
    return r.stdout + r.stderr


def result_of(out: str) -> dict:
    m = re.search(r"^RESULT (.*)$", out, re.M)
    assert m, out
    return json.loads(m.group(1))


def test_payloads_cross_on_the_stream_channel_unless_encrypted(tmp_path):
    with fresh_netns_pair() as pair:
        err = open(tmp_path / "controller.err", "w")
        ctl = subprocess.Popen(pair.exec(pair.a) + [TQ, "controller", "--host", HEAD_NODE_IP, "--storage-units", "1"],
                               stdout=subprocess.PIPE, stderr=err, text=True)
        try:
            first = ctl.stdout.readline()
            assert "listening on" in first, first + (tmp_path / "controller.err").read_text()
            address = first.strip().split("listening on ", 1)[1]
            logged = re.search(r"stream channel on ([\d.]+):(\d+)", (tmp_path / "controller.err").read_text())
            assert logged, (tmp_path / "controller.err").read_text()
            assert logged.group(1) == HEAD_NODE_IP
            stream_port = int(logged.group(2))

            plain = result_of(run_client(pair, address, encrypt=False))
            assert plain["same"], "the bytes read back differ from those written"
            assert stream_port in plain["ports"], plain

            curve = result_of(run_client(pair, address, encrypt=True))
            assert curve["same"], "the bytes read back differ from those written (encrypt_payloads)"
            assert stream_port not in curve["ports"], curve

            env = {k: v for k, v in os.environ.items() if k != "TQDS_CURVE_KEY_DIR"}
            refused = run_client(pair, address, encrypt=False, env=env)
            assert "ERROR" in refused and "PermissionDenied" in refused, refused
        finally:
            kill_pid(ctl.pid)
            ctl.wait(timeout=30)
            ctl.stdout.close()
            err.close()
