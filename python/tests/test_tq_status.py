"""`tq status --controller ADDR [--json]` against a live controller (a real
`tq controller` process and a real client): one row per partition, in
creation order, with its live samples, production per field and consumption
per task; a controller that is not there gets one clear line and exit 1."""

from __future__ import annotations

import json
import shutil
import subprocess

import torch
from tensordict import TensorDict

import transfer_queue as tq
from conftest import free_port, make_client, unique


def tq_status(*args: str) -> subprocess.CompletedProcess:
    exe = shutil.which("tq")
    assert exe, "the `tq` program is not on PATH"
    return subprocess.run([exe, "status", *args], capture_output=True, text=True, timeout=60)


def test_status_shows_production_and_consumption(own_controller):
    address = tq.process_zmq_server_info(own_controller).to_addr("request")
    c = make_client(own_controller, "simple")
    train, val = unique("train"), unique("val")
    c.put(TensorDict({"prompt": torch.arange(8).reshape(8, 1)}, batch_size=[8]), partition_id=train)
    c.put(TensorDict({"prompt": torch.arange(3).reshape(3, 1)}, batch_size=[3]), partition_id=val)
    # responses for 5 of train's 8 samples
    first5 = c.get_meta(["prompt"], 5, train, task_name="rollout")
    c.put(TensorDict({"response": torch.ones(5, 2)}, batch_size=[5]), metadata=first5)
    c.get_meta(["prompt", "response"], 2, train, task_name="actor")

    r = tq_status("--controller", address)
    assert r.returncode == 0, r.stderr
    print(r.stdout)
    lines = r.stdout.splitlines()
    assert lines[0] == f"controller {address}: 2 partitions"
    assert lines[1].split()[:2] == ["partition", "samples"]
    rows = {line.split()[0]: line for line in lines[2:]}
    assert list(rows) == [train, val]  # creation order
    assert rows[train].split()[1] == "8"
    assert "prompt 8/8" in rows[train] and "response 5/8" in rows[train]
    assert "actor 2/8" in rows[train] and "rollout 5/8" in rows[train]
    assert rows[val].split()[1] == "3" and "prompt 3/3" in rows[val] and rows[val].rstrip().endswith("-")

    j = tq_status("--controller", address, "--json")
    assert j.returncode == 0, j.stderr
    doc = json.loads(j.stdout)
    assert doc["controller"] == address
    assert doc["partitions"] == [
        {"partition_id": train, "samples": 8, "produced": {"prompt": 8, "response": 5},
         "consumed": {"actor": 2, "rollout": 5}},
        {"partition_id": val, "samples": 3, "produced": {"prompt": 3}, "consumed": {}},
    ]

    c.clear_partition(val)
    doc = json.loads(tq_status("--controller", address, "--json").stdout)
    assert [p["partition_id"] for p in doc["partitions"]] == [train]


def test_status_of_a_controller_that_is_not_there():
    address = f"tcp://127.0.0.1:{free_port()}"
    r = tq_status("--controller", address)
    assert r.returncode == 1 and r.stdout == ""
    assert f"cannot ask the controller at {address}" in r.stderr and "Unavailable" in r.stderr
