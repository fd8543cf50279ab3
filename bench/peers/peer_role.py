#!/usr/bin/env python3
"""peer_role: the writer or the reader process of one system in
bench/peers/peer_bench.py. Runs under our venv (systems ours-*) or the peers'
venv (upstream-*, ray); the driver starts one writer and one reader and
times each step from its side, as upstream's perftest times each actor call.

Protocol: one JSON object a line on stdin, one answer a line on the file
descriptor that was stdout at start (stdout itself is sent to stderr, so a
library's prints never mix with answers). Answers are {"ok": true, ...} or
{"ok": false, "error": "<ExceptionType>: <message>"}.

  {"op": "init"}                       ray.init (if --ray-address) and tq.init(conf)
  {"op": "make", "shape": NAME}        writer: build the shape's TensorDict (seeded)
  {"op": "put", "part": P}             writer: kv_batch_put(keys, P, td)
  {"op": "list", "part": P}            reader: kv_list(P) -> {"n": number of keys}
  {"op": "get", "part": P, "keep": B}  reader: kv_batch_get(keys, P); kept only if B
  {"op": "digest"}                     writer: of its td; reader: of the kept result
  {"op": "clear", "part": P}           writer: kv_clear(keys, P)
  {"op": "close"}                      tq.close(), ray.shutdown(), exit

The Ray baseline (--system ray) passes the TensorDict to a Ray actor placed on
the reader's node (upstream's ray_perftest_baseline): put is the writer's
store.put(td), list the actor's count, get the reader's store.get(), clear
the writer's store.clear().
"""

import argparse
import hashlib
import json
import os
import random
import sys
import time
import traceback

# name: (batch, fields, seq, kind). Sizes as upstream's perftest counts them
# (GiB; a string field counts seq * 4 bytes a sample, a jagged one the mean
# of its lengths 1..seq).
SHAPES = {
    "small": (1024, 9, 8192, "dense"),       # upstream's Small: 288 MiB
    "medium": (4096, 9, 8192, "dense"),      # 4 x Small, 1.125 GiB: see peer_bench.py on its size
    "complex": (1024, 9, 8192, "complex"),   # upstream's --use_complex_case at Small's size
    "many_small": (16384, 2, 512, "dense"),  # 16384 samples of 4 KiB (2 fields of 2 KiB)
}


def shape_gib(name):
    batch, fields, seq, kind = SHAPES[name]
    if kind == "dense":
        return batch * seq * 4 * fields / 2**30
    regular = nested = (fields + 2) // 3
    strings = fields - regular - nested
    return (batch * seq * 4 * regular + int(batch * (1 + seq) / 2 * 4) * nested + batch * seq * 4 * strings) / 2**30


def make_data(name):
    """The shape's TensorDict: float32 from a seeded generator, jagged nested
    lengths 1..seq in arithmetic progression, hex strings of seq * 4 chars
    (upstream's create_test_case / create_complex_test_case layout)."""
    import torch
    from tensordict import NonTensorStack, TensorDict

    batch, fields, seq, kind = SHAPES[name]
    g = torch.Generator().manual_seed(1234 + len(name))
    td = TensorDict(batch_size=(batch,))
    if kind == "dense":
        for i in range(fields):
            td.set(f"field_{i}", torch.randn(batch, seq, dtype=torch.float32, generator=g))
        return td
    regular = nested = (fields + 2) // 3
    strings = fields - regular - nested
    for i in range(regular):
        td.set(f"field_{i}", torch.randn(batch, seq, dtype=torch.float32, generator=g))
    step = (seq - 1) / (batch - 1)
    lengths = [max(1, min(int(round(1 + j * step)), seq)) for j in range(batch)]
    for i in range(nested):
        flat = torch.randn(sum(lengths), dtype=torch.float32, generator=g)
        td.set(f"nested_field_{i}", torch.nested.as_nested_tensor(list(torch.split(flat, lengths)),
                                                                  layout=torch.jagged))
    rnd = random.Random(99)
    for i in range(strings):
        td.set(f"nontensor_field_{i}", NonTensorStack.from_list([rnd.randbytes(seq * 2).hex() for _ in range(batch)]))
    return td


def _tensor_bytes(t):
    import torch

    return t.contiguous().reshape(-1).view(torch.uint8).numpy()


def field_digest(v):
    """sha256 of a field's samples in order (each sample's bytes, its element
    count, the dtype; strings as UTF-8), whatever container the system
    returned it in: a dense tensor, a jagged or strided nested tensor, a
    NonTensorStack, a list."""
    import torch

    h = hashlib.sha256()
    if isinstance(v, torch.Tensor):
        h.update(str(v.dtype).encode())
        if v.is_nested:
            parts = v.unbind()
            for p in parts:
                h.update(p.numel().to_bytes(8, "little"))
            if v.layout == torch.jagged:
                h.update(_tensor_bytes(v.values()))  # the samples' bytes, in order
            else:
                for p in parts:
                    h.update(_tensor_bytes(p))
        else:
            n = v[0].numel() if v.dim() else 1
            for _ in range(v.shape[0]):
                h.update(n.to_bytes(8, "little"))
            h.update(_tensor_bytes(v))
        return h.hexdigest()[:16]
    if hasattr(v, "tolist") and not isinstance(v, list):
        v = v.tolist()
    elif hasattr(v, "data") and not isinstance(v, list):
        v = v.data
    h.update(b"str")
    for s in v:
        h.update(s.encode() if isinstance(s, str) else repr(s).encode())
        h.update(b"\0")
    return h.hexdigest()[:16]


def digests(td):
    return {k: field_digest(td.get(k)) for k in sorted(td.keys())}


class Role:
    def __init__(self, args):
        self.a = args
        self.conf = json.loads(args.conf) if args.conf else {}
        self.td = None
        self.keys = []
        self.kept = None
        self.tq = None
        self.store = None

    # -- ops --
    def init(self, m):
        if self.a.ray_address:
            import ray

            # _node_ip_address: the namespaces share one hostname and have no
            # route out, so Ray's own guess names the head's address in both.
            ray.init(address=self.a.ray_address, namespace="peer_bench", log_to_driver=False,
                     logging_level="WARNING", _node_ip_address=self.a.node_ip)
        if self.a.system == "ray":
            return self._init_ray_store()
        import transfer_queue as tq
        from omegaconf import OmegaConf

        self.tq = tq
        tq.init(OmegaConf.create(self.conf))
        return {}

    def _init_ray_store(self):
        import ray

        if self.a.role == "writer":
            @ray.remote
            class PeerStore:
                def __init__(self):
                    self.data = None

                def put(self, data):
                    self.data = data

                def get(self):
                    return self.data

                def count(self):
                    return 0 if self.data is None else int(self.data.batch_size[0])

                def clear(self):
                    self.data = None

            self.store = PeerStore.options(name="peer_store", num_cpus=0.001,
                                           resources={f"node:{self.a.reader_ip}": 0.001}).remote()
            ray.get(self.store.count.remote())
        else:
            self.store = ray.get_actor("peer_store", namespace="peer_bench")
        return {}

    def make(self, m):
        self.td = None
        self.td = make_data(m["shape"])
        self.keys = [f"test_key_{i}" for i in range(self.td.batch_size[0])]
        return {"gib": shape_gib(m["shape"])}

    def keys_for(self, m):
        batch = SHAPES[m["shape"]][0]
        if len(self.keys) != batch:
            self.keys = [f"test_key_{i}" for i in range(batch)]
        return self.keys

    def put(self, m):
        if self.store is not None:
            import ray

            ray.get(self.store.put.remote(self.td))
        else:
            self.tq.kv_batch_put(keys=self.keys, partition_id=m["part"], fields=self.td)
        return {}

    def list(self, m):
        if self.store is not None:
            import ray

            return {"n": ray.get(self.store.count.remote())}
        info = self.tq.kv_list(partition_id=m["part"])
        return {"n": len(info.get(m["part"], {}))}

    def get(self, m):
        self.kept = None
        if self.store is not None:
            import ray

            out = ray.get(self.store.get.remote())
        else:
            out = self.tq.kv_batch_get(keys=self.keys_for(m), partition_id=m["part"])
        if m.get("keep"):
            self.kept = out
        return {}

    def get_split(self, m):
        """ours only (profile_cross --split): kv_batch_get's two steps timed
        apart, the controller's kv_retrieve and the storage read."""
        from transfer_queue import kv

        c = kv.get_client()
        t0 = time.perf_counter()
        meta = c.kv_retrieve_meta(self.keys_for(m), m["part"])
        t1 = time.perf_counter()
        c.get_data(meta)
        return {"retrieve": t1 - t0, "data": time.perf_counter() - t1}

    def digest(self, m):
        td = self.td if self.a.role == "writer" else self.kept
        d = digests(td)
        self.kept = None
        return {"digest": d}

    def clear(self, m):
        if self.store is not None:
            import ray

            ray.get(self.store.clear.remote())
        else:
            self.tq.kv_clear(keys=self.keys, partition_id=m["part"])
        return {}

    def close(self, m):
        self.td = self.kept = None
        if self.tq is not None:
            try:
                self.tq.close()
            except Exception:
                pass
        if self.a.ray_address:
            import ray

            if self.store is not None and self.a.role == "writer":
                try:
                    ray.kill(self.store)
                except Exception:
                    pass
            ray.shutdown()
        return {}


def main():
    ap = argparse.ArgumentParser(description="peer_bench's writer or reader process")
    ap.add_argument("--system", required=True)
    ap.add_argument("--role", choices=["writer", "reader"], required=True)
    ap.add_argument("--conf", default="", help="tq.init config, JSON")
    ap.add_argument("--ray-address", default="")
    ap.add_argument("--reader-ip", default="127.0.0.1", help="the Ray baseline's actor goes to this node")
    ap.add_argument("--node-ip", default="127.0.0.1", help="this process's Ray node address")
    args = ap.parse_args()
    out = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    import torch

    torch.set_num_threads(1)
    role = Role(args)
    for line in sys.stdin:
        m = json.loads(line)
        t0 = time.perf_counter()
        try:
            ans = getattr(role, m["op"])(m)
            ans["ok"] = True
        except BaseException as e:  # the driver records it in the table cell
            traceback.print_exc()
            msg = str(e).strip().splitlines()
            ans = {"ok": False, "error": f"{type(e).__name__}: {msg[0] if msg else ''}"[:400],
                   "detail": "\n".join(msg[:12])[:2000]}
        ans["t"] = time.perf_counter() - t0
        out.write(json.dumps(ans) + "\n")
        if m["op"] == "close":
            break


if __name__ == "__main__":
    main()
