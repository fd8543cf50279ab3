"""Driver of test_upstream_yuanrong.py, run with the peer venv's Python
(upstream TransferQueue 0.1.11 from PyPI) and with our `dscli`,
`datasystem_worker` and `yr.datasystem` found first:

    python upstream_yr_driver.py same  PARAMS_JSON   # a local Ray, one node
    python upstream_yr_driver.py cross PARAMS_JSON   # Ray started by the test, two nodes

Upstream's code runs as its users run it, unchanged: `tq.init(conf)` with
the Yuanrong backend and auto_init (its bootstrap starts one datasystem
worker per Ray node through `dscli start -w ...`), then kv_batch_put,
kv_list, kv_batch_get, kv_clear, tq.close(). In `cross` mode the put is made
by an actor pinned to the second node (it attaches with `tq.init()`, as
upstream's docstring shows), so the driver's get pulls the bytes from that
node's worker.

Lines on stdout, one JSON object after each tag: `UP` once tq.init()
returned (the test then looks for the workers in /proc), `RESULT` once the
data has been compared. Before tq.close() the driver waits for a line on
stdin, so that the test sees the workers still running.
"""

import json
import os
import subprocess
import sys
import time
import warnings

warnings.filterwarnings("ignore", message=r"The PyTorch API of nested tensors is in prototype stage*")

import ray  # noqa: E402
import torch  # noqa: E402
from tensordict import TensorDict  # noqa: E402
from tensordict.tensorclass import NonTensorStack  # noqa: E402

import transfer_queue as tq  # noqa: E402

MODE = sys.argv[1]
P = json.loads(sys.argv[2])
PARTITION = "issue13"


def emit(tag, obj):
    print(tag, json.dumps(obj), flush=True)


def make_batch(n=4):
    """Several kinds of field, as upstream's kv_batch_put takes them; the
    float field holds values whose bytes a lossy path would change."""
    g = torch.Generator().manual_seed(13)
    dense = torch.randn(n, 64, 32, generator=g)
    dense[0, 0, :4] = torch.tensor([float("nan"), float("inf"), -0.0, 1e-45])
    ids = torch.randint(-(2**62), 2**62, (n, 17), generator=g, dtype=torch.int64)
    jagged = torch.nested.nested_tensor([torch.randn(3 + 5 * i, 8, generator=g) for i in range(n)],
                                        layout=torch.jagged)
    text = NonTensorStack(*[f"sample {i}: {'é✓' * i} end" for i in range(n)])
    big = torch.randn(n, 256, 1024, generator=g)  # 1 MiB a sample
    return TensorDict({"dense": dense, "ids": ids, "jagged": jagged, "text": text, "big": big}, batch_size=[n])


def samples(td, field):
    """One field as a list of per-sample values (tensors or strings)."""
    v = td[field]
    if isinstance(v, torch.Tensor) and v.is_nested:
        return list(v.unbind())
    if isinstance(v, torch.Tensor):
        return list(v.unbind(0))
    if hasattr(v, "tolist"):
        return v.tolist()
    return list(v)


def same_bytes(a, b):
    if isinstance(a, torch.Tensor):
        if not isinstance(b, torch.Tensor) or a.dtype != b.dtype or a.shape != b.shape:
            return False
        return torch.equal(a.contiguous().view(torch.uint8), b.contiguous().view(torch.uint8))
    return type(a) is type(b) and a == b


def compare(want, got):
    """{field: 'ok' or why not}, comparing each sample's bytes."""
    out = {}
    for field in want.keys():
        if field not in got.keys():
            out[field] = "missing"
            continue
        w, g = samples(want, field), samples(got, field)
        if len(w) != len(g):
            out[field] = f"{len(g)} samples, want {len(w)}"
            continue
        bad = [i for i, (x, y) in enumerate(zip(w, g)) if not same_bytes(x, y)]
        out[field] = "ok" if not bad else f"samples {bad} differ (got {type(g[0]).__name__})"
    return out


def worker_status(ip):
    """`dscli status --json` of the worker at ip: its own row ({counter: value}; ours, over TCP)."""
    address = f"{ip}:{P['worker_port']}"
    r = subprocess.run(["dscli", "status", "--worker_address", address, "--json"],
                       capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        return {"error": r.stdout + r.stderr}
    rows = [w for w in json.loads(r.stdout)["workers"] if w["worker"] == address]
    return rows[0] if rows else {"error": r.stdout}


def conf():
    return {"backend": {"storage_backend": "Yuanrong",
                        "Yuanrong": {"auto_init": True, "worker_port": P["worker_port"],
                                     "metastore_port": P["metastore_port"], "worker_args": P["worker_args"]}}}


def our_modules():
    import yr.datasystem

    import _tqds
    return {"yr.datasystem": os.path.realpath(yr.datasystem.__file__), "_tqds": os.path.realpath(_tqds.__file__)}


@ray.remote(num_cpus=0)
class Writer:
    """Upstream's client in another process on another node: tq.init() with
    no conf attaches to the controller the driver made."""

    def put(self, keys):
        import transfer_queue as tq

        tq.init()
        from transfer_queue.utils.yuanrong_utils import find_reachable_host

        tq.kv_batch_put(keys=keys, partition_id=PARTITION, fields=make_batch(len(keys)),
                        tags=[{"writer": "B", "i": i} for i in range(len(keys))])
        return {"node_ip": ray.util.get_node_ip_address(), "ds_host": find_reachable_host(P["worker_port"]),
                "modules": our_modules()}

    def close(self):
        import transfer_queue as tq

        tq.close()  # this process made no storage: closes its client only


def main():
    t0 = time.monotonic()
    if MODE == "same":
        ray.init(_node_ip_address="127.0.0.1", _temp_dir=P["ray_temp_dir"], include_dashboard=False,
                 object_store_memory=P["object_store_bytes"], num_cpus=2)
    else:
        ray.init(address=P["ray_address"])
        deadline = time.monotonic() + 60
        while {n["NodeManagerAddress"] for n in ray.nodes() if n["Alive"]} < set(P["node_ips"]):
            if time.monotonic() > deadline:
                sys.exit("the Ray nodes did not come up")
            time.sleep(0.2)
    t_ray = time.monotonic() - t0

    t1 = time.monotonic()
    tq.init(conf())
    t_init = time.monotonic() - t1
    from transfer_queue.utils.yuanrong_utils import find_reachable_host

    result = {"modules": our_modules(), "driver_ip": ray.util.get_node_ip_address(),
              "ds_host": find_reachable_host(P["worker_port"]), "ray_s": round(t_ray, 2),
              "init_s": round(t_init, 2)}
    emit("UP", result)

    keys = [f"k{i}" for i in range(4)]
    want = make_batch(len(keys))
    t2 = time.monotonic()
    writer = None
    if MODE == "same":
        tq.kv_batch_put(keys=keys, partition_id=PARTITION, fields=want, tags=[{"i": i} for i in range(len(keys))])
    else:
        writer = Writer.options(resources={f"node:{P['node_ips'][1]}": 0.001}).remote()
        result["writer"] = ray.get(writer.put.remote(keys))
    listed = tq.kv_list(partition_id=PARTITION)
    result["listed"] = sorted(listed.get(PARTITION, {}))
    if MODE == "cross":  # where the bytes are before the get: each worker's counters
        result["status_before_get"] = {ip: worker_status(ip) for ip in P["node_ips"]}
    got = tq.kv_batch_get(keys=keys, partition_id=PARTITION)
    result["put_get_s"] = round(time.monotonic() - t2, 2)
    result["fields"] = compare(want, got)
    if MODE == "cross":
        result["status_after_get"] = {ip: worker_status(ip) for ip in P["node_ips"]}

    tq.kv_clear(keys=keys, partition_id=PARTITION)
    result["listed_after_clear"] = sorted(tq.kv_list(partition_id=PARTITION).get(PARTITION, {}))
    try:
        tq.kv_batch_get(keys=keys, partition_id=PARTITION)
        result["get_after_clear"] = "returned data"
    except Exception as e:  # noqa: BLE001
        result["get_after_clear"] = f"{type(e).__name__}: {str(e)[:200]}"
    emit("RESULT", result)

    sys.stdin.readline()  # the test has seen the workers
    if writer is not None:
        ray.get(writer.close.remote())
        ray.kill(writer)
    t3 = time.monotonic()
    tq.close()
    close_s = time.monotonic() - t3
    ray.shutdown()
    emit("CLOSED", {"close_s": round(close_s, 2)})


if __name__ == "__main__":
    main()
