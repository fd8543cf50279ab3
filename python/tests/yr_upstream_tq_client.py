"""Runs upstream TransferQueue 0.1.11's own YuanrongStorageClient (its
GeneralKVClientAdapter: mcreate + MutableData + mset_buffer, get_buffers,
delete) against a datasystem worker through `yr.datasystem`, as a program:

    python yr_upstream_tq_client.py UPSTREAM_DIR PORT

UPSTREAM_DIR holds upstream's transfer_queue package and the two modules
its storage client needs (pip install --no-deps --target DIR
TransferQueue==0.1.11 msgspec pyzmq). Only upstream's storage client
modules are loaded (its package __init__ files start its whole client).
Prints "OK" on success.
"""

import sys
import types

upstream, port = sys.argv[1], int(sys.argv[2])
sys.path.insert(0, upstream)
for name, sub in [("transfer_queue", ""), ("transfer_queue.storage", "storage"),
                  ("transfer_queue.storage.clients", "storage/clients"), ("transfer_queue.utils", "utils")]:
    module = types.ModuleType(name)
    module.__path__ = [f"{upstream}/transfer_queue/{sub}".rstrip("/")]
    sys.modules[name] = module

import torch  # noqa: E402
from transfer_queue.storage.clients.yuanrong_client import YuanrongStorageClient  # noqa: E402

client = YuanrongStorageClient({"worker_port": port})
keys = [f"{i}@field" for i in range(5)]
values = [torch.arange(6).reshape(2, 3), "text", {"k": [1, 2]}, torch.ones(3, dtype=torch.bfloat16),
          torch.zeros(0)]
tags = client.put(keys, values)
assert tags == ["2"] * 5, tags
got = client.get(keys, shapes=[None] * 5, dtypes=[None] * 5, custom_backend_meta=tags)
assert torch.equal(got[0], values[0]) and got[1] == values[1] and got[2] == values[2], got
assert torch.equal(got[3], values[3]) and got[4].numel() == 0, got
client.clear(keys, custom_backend_meta=tags)
try:
    client.get(keys, shapes=[None] * 5, dtypes=[None] * 5, custom_backend_meta=tags)
    raise AssertionError("a get after clear found the keys")
except RuntimeError as e:
    assert str(e).startswith("code: [Key not found]"), e
print("OK")
