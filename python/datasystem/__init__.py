"""datasystem: the Python client of the C++ datasystem worker.

    from datasystem import KVClient
    client = KVClient("127.0.0.1", 31501); client.init()
"""

from _tqds import KVClient, WriteBuffer  # noqa: F401
from _tqds import (  # noqa: F401
    AlreadyExistsError,
    NotFoundError,
    OutOfSpaceError,
    TQDSError,
    UnavailableError,
)

__all__ = ["KVClient", "WriteBuffer", "TQDSError", "NotFoundError", "AlreadyExistsError",
           "OutOfSpaceError", "UnavailableError"]
