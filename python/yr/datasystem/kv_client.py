"""yr.datasystem.KVClient: openYuanrong datasystem's key-value client API.

This layer checks argument types strictly (as openYuanrong does: `type(x) is
list`, not isinstance), fills in defaults and the worker address from the
environment, and calls _tqds.YrKVClient, which validates keys, releases the
GIL and raises openYuanrong's errors. Values move through shared memory with
the copies of the `datasystem` package: set/mset read Python buffers in
place, get copies each value once into bytes, get_buffers/read return
zero-copy read-only views, mcreate/mset_buffer fill shared memory in place.
"""

from __future__ import annotations

import os
from collections import namedtuple
from enum import Enum
from typing import List

from _tqds import YrKVClient as _Native

_INT32_MAX = 0x7FFFFFFF
_UINT32_MAX = 0xFFFFFFFF
_MAX_FAST_TRANSPORT_MEM_SIZE = 2 * 1024 * 1024 * 1024


class WriteMode(Enum):
    """How reliably a value is kept. Only the cache modes are served here
    (this worker has no second-level store): NONE_L2_CACHE (default) keeps a
    value until deleted or expired; NONE_L2_CACHE_EVICT lets the worker drop
    it under memory pressure. The L2 modes are refused, as by an openYuanrong
    worker started without an L2 cache."""

    NONE_L2_CACHE = 0
    WRITE_THROUGH_L2_CACHE = 1
    WRITE_BACK_L2_CACHE = 2
    NONE_L2_CACHE_EVICT = 3
    WRITE_BACK_L2_CACHE_EVICT = 4


class ExistenceOpt(Enum):
    """mset: NONE overwrites existing keys; NX leaves an existing key as it
    is and lists it among the failed keys."""

    NONE = 0
    NX = 1


ReadParam = namedtuple("ReadParam", ["key", "offset", "size"])
ReadParam.__doc__ = """One range for KVClient.read: `size` bytes of the value of `key` from
`offset` (size 0, or a size past the end: up to the end)."""


class SetParam:
    """Write options, as openYuanrong's SetParam (for code that builds one)."""

    def __init__(self) -> None:
        self.write_mode = WriteMode.NONE_L2_CACHE
        self.ttl_second = 0
        self.existence = ExistenceOpt.NONE


class Status:
    """The outcome of health_check(): is_ok(), is_error(), to_string()."""

    __slots__ = ("_ok", "_text")

    def __init__(self, ok: bool, text: str) -> None:
        self._ok = ok
        self._text = text

    def is_ok(self) -> bool:
        return self._ok

    def is_error(self) -> bool:
        return not self._ok

    def to_string(self) -> str:
        return self._text

    get_msg = to_string

    def __repr__(self) -> str:
        return f"Status({self._text!r})"


class ReadOnlyBuffer:
    """A read-only value from get_read_only_buffers or read.

    immutable_data() returns a memoryview of shared memory (zero copy),
    valid while this object or the view lives. Values are immutable once
    written, so the latch methods have nothing to wait for; they only check
    their arguments."""

    __slots__ = ("_view",)

    def __init__(self, view) -> None:
        self._view = view

    def immutable_data(self, with_latch=False, timeout_sec=60) -> memoryview:
        _check_types([["with_latch", with_latch, bool], ["timeout_sec", timeout_sec, int]])
        _check_range("timeout_sec", timeout_sec, 1, _INT32_MAX)
        return memoryview(self._view)

    def rlatch(self, timeout_sec=60) -> None:
        _check_types([["timeout_sec", timeout_sec, int]])
        _check_range("timeout_sec", timeout_sec, 1, _INT32_MAX)

    def unrlatch(self) -> None:
        return None

    def GetSize(self) -> int:  # noqa: N802 (openYuanrong's name)
        return self._view.GetSize()


def _check_types(args) -> None:
    """Each entry is [name, value, *allowed types]; the type must match
    exactly (a bool is not an int, a tuple is not a list)."""
    for name, value, *types in args:
        if type(value) not in types:
            raise TypeError(f"The input of {name} has invalid type, valid type: {types}")


def _check_range(name: str, value: int, low: int, high: int) -> None:
    if not low <= value <= high:
        raise RuntimeError(f"Invalid {name} size {value} is set, which should be between [{low},{high}]")


def _check_ttl(ttl_second) -> None:
    if type(ttl_second) is not int:
        raise TypeError(f"The input of ttl_second has invalid type, valid type: [{int}]")
    if not 0 <= ttl_second <= _UINT32_MAX:
        raise TypeError(f"ttl_second must be between 0 and {_UINT32_MAX}, got {ttl_second}")


def _evictable(write_mode) -> bool:
    """Whether `write_mode` lets the worker drop the value; raises for the L2 modes."""
    if write_mode is WriteMode.NONE_L2_CACHE:
        return False
    if write_mode is WriteMode.NONE_L2_CACHE_EVICT:
        return True
    if type(write_mode) is not WriteMode:
        raise TypeError(f"The input of write_mode has invalid type, valid type: [{WriteMode}]")
    raise RuntimeError(
        f"code: [Invalid parameter], msg: [write mode {write_mode.name} needs a second-level (L2) "
        "store, which this datasystem worker does not have: use WriteMode.NONE_L2_CACHE or "
        "WriteMode.NONE_L2_CACHE_EVICT]")


_VALUE_TYPES = (memoryview, bytes, bytearray, str)


def _check_batch_write(keys, vals, ttl_second, existence_opt) -> None:
    """The argument checks of mset and msettx, with openYuanrong's TypeErrors."""
    if type(keys) is not list:
        raise TypeError(f"The input of keys has invalid type, valid type: [{list}]")
    if type(vals) is not list:
        raise TypeError(f"The input of vals has invalid type, valid type: [{list}]")
    if type(existence_opt) is not ExistenceOpt:
        raise TypeError(f"The input of existence_opt has invalid type, valid type: [{ExistenceOpt}]")
    _check_ttl(ttl_second)


class KVClient:
    """Client of the datasystem worker at host:port on this host.

    Args:
        host, port: the worker's address; when host is "" (port 0), taken
            from the environment variable DATASYSTEM_HOST (DATASYSTEM_PORT).
        connect_timeout_ms: how long init() waits for the worker (default
            60 s; 0 means the default).
        req_timeout_ms: how long a request waits for the worker's reply
            (plus the wait a get asks for); 0 or less: connect_timeout_ms.
            A request past it raises RuntimeError (RPC deadline exceeded)
            and the client gives up its connection (make a new client).
        client_public_key, client_private_key, server_public_key: this
            client's own CURVE keys for the worker's TCP port (Z85, 40
            characters each, as `tq keys` writes them; the worker started with
            --enable_curve_zmq true --curve_key_dir DIR must list the client
            key in DIR/authorized_clients): all three or none. None: the
            keys of $TQDS_CURVE_KEY_DIR, if set. A partial set or a string that
            is not a key is refused at construction; keys the worker does not
            accept fail init() with an authentication error.
        token, access_key, secret_key, tenant_id: token/AK-SK authentication
            and tenancy, which this worker does not have: a non-empty value
            is refused.
        enable_cross_node_connection, enable_exclusive_connection,
        fast_transport_mem_size: accepted for compatibility (no effect).

    Call init() before anything else. A client may be shared by threads;
    its requests run one at a time.
    """

    def __init__(self, host: str = "", port: int = 0, connect_timeout_ms=60000, token: str = "",
                 client_public_key: str = "", client_private_key: str = "", server_public_key: str = "",
                 access_key="", secret_key="", tenant_id="", enable_cross_node_connection=False,
                 req_timeout_ms=0, enable_exclusive_connection=False,
                 fast_transport_mem_size=256 * 1024 * 1024):
        _check_types([
            ["host", host, str], ["port", port, int], ["connect_timeout_ms", connect_timeout_ms, int],
            ["client_public_key", client_public_key, str], ["client_private_key", client_private_key, str],
            ["server_public_key", server_public_key, str], ["access_key", access_key, str],
            ["secret_key", secret_key, str], ["tenant_id", tenant_id, str],
            ["enable_cross_node_connection", enable_cross_node_connection, bool],
            ["enable_exclusive_connection", enable_exclusive_connection, bool],
            ["fast_transport_mem_size", fast_transport_mem_size, int],
        ])
        _check_range("connect_timeout_ms", connect_timeout_ms, 0, _INT32_MAX)
        _check_range("fast_transport_mem_size", fast_transport_mem_size, 1, _MAX_FAST_TRANSPORT_MEM_SIZE)
        _check_types([["token", token, str]])
        secrets = {"token": token, "access_key": access_key, "secret_key": secret_key, "tenant_id": tenant_id}
        given = [name for name, value in secrets.items() if value]
        if given:
            raise RuntimeError(
                f"code: [Invalid parameter], msg: [{', '.join(given)}: this datasystem worker has no token or "
                "AK/SK authentication and no tenants; leave them empty (its authentication is CURVE keys: "
                "client_public_key, client_private_key, server_public_key)]")
        curve = [client_public_key, client_private_key, server_public_key]
        if any(curve) and not all(curve):
            missing = [n for n, v in zip(["client_public_key", "client_private_key", "server_public_key"], curve)
                       if not v]
            raise RuntimeError(f"code: [Invalid parameter], msg: [client keys: {', '.join(missing)} missing (give "
                               "client_public_key, client_private_key and server_public_key together, or none)]")
        if not host:
            host = os.environ.get("DATASYSTEM_HOST", "")
        if port == 0:
            env_port = os.environ.get("DATASYSTEM_PORT", "")
            try:
                port = int(env_port) if env_port else 0
            except ValueError:
                raise RuntimeError(f"code: [Invalid parameter], msg: [DATASYSTEM_PORT={env_port!r} is not "
                                   "a port number]") from None
        if not 0 <= port <= 65535:
            raise RuntimeError(f"code: [Invalid parameter], msg: [port {port} is not between 0 and 65535]")
        self._host = host
        self._port = port
        if type(req_timeout_ms) is not int:
            raise TypeError(f"The input of req_timeout_ms has invalid type, valid type: [{int}]")
        if req_timeout_ms > _INT32_MAX:
            raise RuntimeError(f"Invalid req_timeout_ms size {req_timeout_ms} is set, which should be at "
                               f"most {_INT32_MAX}")
        connect_timeout_ms = connect_timeout_ms or 60000
        self._client = _Native(host, port, connect_timeout_ms,
                               req_timeout_ms if req_timeout_ms > 0 else connect_timeout_ms,
                               client_public_key, client_private_key, server_public_key)

    def init(self) -> None:
        """Connects to the worker (RuntimeError when it does not answer)."""
        if not self._host or self._port == 0:
            raise RuntimeError(
                "code: [Invalid parameter], msg: [no worker address: pass host and port, or set "
                "DATASYSTEM_HOST and DATASYSTEM_PORT]")
        self._client.init()

    # ------------------------------------------------------------ writes

    def set(self, key, val, write_mode=WriteMode.NONE_L2_CACHE, ttl_second=0) -> None:
        """Writes one value (bytes, bytearray, memoryview or str), replacing
        any earlier one; it expires after ttl_second seconds (0: never)."""
        if type(key) is not str:
            raise TypeError(f"The input of key has invalid type, valid type: [{str}]")
        if type(val) not in _VALUE_TYPES:
            raise TypeError(f"The input of val has invalid type, valid type: {list(_VALUE_TYPES)}")
        _check_ttl(ttl_second)
        self._client.set(key, val, _evictable(write_mode), ttl_second)

    def set_value(self, val, write_mode=WriteMode.NONE_L2_CACHE, ttl_second=0) -> str:
        """Writes one value under a new key (generate_key()) and returns the
        key; an empty value writes nothing and returns ""."""
        if type(val) not in _VALUE_TYPES:
            raise TypeError(f"The input of val has invalid type, valid type: {list(_VALUE_TYPES)}")
        _check_ttl(ttl_second)
        return self._client.set_value(val, _evictable(write_mode), ttl_second)

    def mset(self, keys, vals, write_mode=WriteMode.NONE_L2_CACHE, ttl_second=0,
             existence_opt=ExistenceOpt.NONE) -> List[str]:
        """Writes a batch in one request and returns the keys that were not
        written (with ExistenceOpt.NX: the keys that existed; also a bad key,
        an empty value, a key given twice). Raises when no key was written."""
        _check_batch_write(keys, vals, ttl_second, existence_opt)
        return self._client.mset(keys, vals, _evictable(write_mode), ttl_second,
                                 existence_opt is ExistenceOpt.NX)

    def mcreate(self, keys, sizes, write_mode=WriteMode.NONE_L2_CACHE, ttl_second=0) -> list:
        """Allocates shared memory for each key (sizes in bytes, at least 1).
        Fill each buffer through buf.MutableData() (a writable memoryview),
        then mset_buffer(buffers) makes them visible. A buffer dropped
        unsealed is discarded."""
        if type(keys) is not list:
            raise TypeError(f"The input of keys has invalid type, valid type: [{list}]")
        if type(sizes) is not list:
            raise TypeError(f"The input of sizes has invalid type, valid type: [{list}]")
        _check_ttl(ttl_second)
        return self._client.mcreate(keys, sizes, _evictable(write_mode), ttl_second)

    def mset_buffer(self, buffers) -> None:
        """Seals buffers from mcreate (one request); a buffer sealed before is
        left as it is."""
        if type(buffers) is not list:
            raise TypeError(f"The input of buffers has invalid type, valid type: [{list}]")
        self._client.mset_buffer(buffers)

    # ------------------------------------------------------------- reads

    def get(self, keys: list = None, convert_to_str: bool = False, sub_timeout_ms=0) -> list:
        """The values of keys as bytes (str with convert_to_str), None for a
        missing key; waits up to sub_timeout_ms for missing keys. Raises
        RuntimeError (Key not found) when none is found."""
        if type(keys) is not list:
            raise TypeError(f"The input of keys has invalid type, valid type: [{list}]")
        if type(sub_timeout_ms) is not int:
            raise TypeError(f"The input of sub_timeout_ms has invalid type, valid type: [{int}]")
        _check_range("sub_timeout_ms", sub_timeout_ms, 0, _INT32_MAX)
        values = self._client.get(keys, sub_timeout_ms)
        if not convert_to_str:
            return values
        return [None if v is None else v.decode() for v in values]

    def get_buffers(self, keys: list, timeout_ms=0) -> list:
        """Zero-copy reads: per key a read-only buffer of shared memory
        (memoryview(buf) to read it, buf.GetSize() for its size), None for a
        missing key. Raises when none is found."""
        if type(keys) is not list:
            raise TypeError(f"The input of keys has invalid type, valid type: [{list}]")
        if type(timeout_ms) is not int:
            raise TypeError(f"The input of timeout_ms has invalid type, valid type: [{int}]")
        _check_range("timeout_ms", timeout_ms, 0, _INT32_MAX)
        return self._client.get_buffers(keys, timeout_ms)

    def get_read_only_buffers(self, keys: list = None, timeout_ms=0) -> List[ReadOnlyBuffer]:
        """As get_buffers, each value wrapped in a ReadOnlyBuffer."""
        if type(keys) is not list:
            raise TypeError(f"The input of keys has invalid type, valid type: [{list}]")
        if type(timeout_ms) is not int:
            raise TypeError(f"The input of timeout_ms has invalid type, valid type: [{int}]")
        _check_range("timeout_ms", timeout_ms, 0, _INT32_MAX)
        views = self._client.get_buffers(keys, timeout_ms)
        return [None if v is None else ReadOnlyBuffer(v) for v in views]

    def read(self, read_params) -> List[ReadOnlyBuffer]:
        """Partial reads: for each ReadParam(key, offset, size) a
        ReadOnlyBuffer of that range (zero copy), None for a missing key.
        Raises RuntimeError (Out of range) for an offset at or past the end,
        (Key not found) when no key is found."""
        if type(read_params) is not list:
            raise TypeError(f"The input of read_params has invalid type, valid type: [{list}]")
        ranges = []
        for p in read_params:
            key, offset, size = p.key, p.offset, p.size
            if type(key) is not str or type(offset) is not int or type(size) is not int or offset < 0 or size < 0:
                raise TypeError(f"a ReadParam needs a str key and non-negative int offset and size, got {p!r}")
            ranges.append((key, offset, size))
        views = self._client.read(ranges)
        return [None if v is None else ReadOnlyBuffer(v) for v in views]

    def exist(self, keys) -> list:
        """Whether each key exists (a list of bool)."""
        if type(keys) is not list:
            raise TypeError(f"The input of keys has invalid type, valid type: [{list}]")
        return self._client.exist(keys)

    # ------------------------------------------------------------ others

    def delete(self, keys: list = None) -> list:
        """Deletes keys and returns those that could not be deleted (a missing
        key counts as deleted)."""
        if type(keys) is not list:
            raise TypeError(f"The input of keys has invalid type, valid type: [{list}]")
        return self._client.delete(keys)

    def expire(self, keys, ttl_second) -> list:
        """Gives each key ttl_second more seconds to live, from now (0 keeps
        its expiry as it is); returns the keys that do not exist. Raises when
        none exists."""
        if type(keys) is not list:
            raise TypeError(f"The input of keys has invalid type, valid type: [{list}]")
        _check_ttl(ttl_second)
        return self._client.expire(keys, ttl_second)

    def generate_key(self, prefix: str = "") -> str:
        """A new unique key: "<prefix or a random UUID>;<worker id>"."""
        if type(prefix) is not str:
            raise TypeError(f"The input of prefix has invalid type, valid type: [{str}]")
        return self._client.generate_key(prefix)

    def health_check(self) -> Status:
        """Whether the worker answers: a Status (is_ok(), to_string())."""
        return Status(*self._client.health_check())

    def msettx(self, keys, vals, write_mode=WriteMode.NONE_L2_CACHE, ttl_second=0,
               existence_opt=ExistenceOpt.NONE) -> None:
        """Writes 1 to 8 new keys together or not at all: with
        ExistenceOpt.NX (the only option served), a key that exists raises
        and none of the keys is written. A key held by another worker of
        the cluster exists too; atomic on this client's worker (a key that
        another worker writes between this write's create and its seal is
        not seen)."""
        _check_batch_write(keys, vals, ttl_second, existence_opt)
        self._client.msettx(keys, vals, _evictable(write_mode), ttl_second, existence_opt is ExistenceOpt.NX)
