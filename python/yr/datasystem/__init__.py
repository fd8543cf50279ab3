"""yr.datasystem: openYuanrong datasystem's Python client API (KVClient),
served by this project's datasystem worker.

    from yr.datasystem import KVClient
    client = KVClient("127.0.0.1", 31501)
    client.init()
    client.set("key", b"value")
    client.get(["key"])            # [b'value']

Code written for openYuanrong datasystem 0.8's `yr.datasystem.KVClient`
runs unchanged: the same constructor, methods, defaults, results and
errors (RuntimeError whose text starts with "code: [<name>]", TypeError for a
value of the wrong type). See docs/yr_datasystem.md for the few differences.
The older API stays available as `import datasystem`.
"""

from yr.datasystem.kv_client import (  # noqa: F401
    ExistenceOpt,
    KVClient,
    ReadOnlyBuffer,
    ReadParam,
    SetParam,
    Status,
    WriteMode,
)
from _tqds import WriteBuffer as StateValueBuffer  # noqa: F401  (what mcreate returns)

__all__ = ["KVClient", "WriteMode", "ExistenceOpt", "ReadParam", "ReadOnlyBuffer", "SetParam",
           "Status", "StateValueBuffer"]
