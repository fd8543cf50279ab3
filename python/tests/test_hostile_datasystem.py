"""Hostile input against the datasystem worker and its Python bindings
(issue 15): a sealed value stays immutable, declared frame sizes commit no
memory before the bytes arrive, and a frame over the limit closes only its
own connection. Real workers started with dscli, real sockets.
"""

from __future__ import annotations

import os
import socket
import sys
import struct
import time

import numpy as np
import pytest

from datasystem import KVClient
from yr.datasystem import KVClient as YrKVClient

from conftest import DsWorker, unique, wait_until


@pytest.fixture(params=["datasystem", "yr"])
def client(request, ds_worker):
    if request.param == "datasystem":
        c = KVClient(ds_worker.host, ds_worker.port)
        c.init()
        return c
    c = YrKVClient(ds_worker.host, ds_worker.port)
    c.init()
    return c


def key(prefix: str = "h") -> str:
    return unique(prefix).replace("-", "_")


def mcreate(c, keys, sizes):
    return c.mcreate(keys, sizes)


def read(c, k) -> bytes:
    (v,) = c.get_buffers([k]) if isinstance(c, KVClient) else c.get_buffers([k], 0)
    return bytes(memoryview(v))


# ------------------------------------------------ finding 1: offsets that wrap

@pytest.mark.parametrize("offset", [2 ** 64 - 64, 2 ** 64 - 1, 2 ** 63, 65, 64, 1])
def test_write_at_a_wrapping_offset_never_reaches_a_neighbour(ds_worker, offset):
    """The issue's reproduction: a write whose offset + length wraps past
    2**64 used to pass the bounds check and land before the block, in the
    neighbouring sealed value of another client. It is refused naming the
    sizes, and the neighbour keeps its bytes."""
    victim_owner = KVClient(ds_worker.host, ds_worker.port)
    victim_owner.init()
    attacker = KVClient(ds_worker.host, ds_worker.port)
    attacker.init()
    victim = key("victim")
    victim_owner.set(victim, b"V" * 64)
    (w,) = attacker.mcreate([key("a")], [64])
    with pytest.raises(Exception, match="exceeds"):
        w.write(b"X" * 64, offset)
    assert read(victim_owner, victim) == b"V" * 64
    w.write(b"X" * 64, 0)  # the buffer itself still takes a write that fits
    attacker.mset_buffer([w])
    assert read(victim_owner, victim) == b"V" * 64


# ------------------------------------------------------------- finding 2: seal

@pytest.mark.parametrize("export", ["MutableData", "memoryview", "builtin", "numpy", "slice", "ImmutableData"])
def test_seal_with_a_live_export_stores_a_copy(client, ds_worker, export):
    """A view kept across the seal (openYuanrong's scripts keep
    `mv = buf.MutableData()`) does not stop it: the value sealed is what the
    buffer held at the seal, and later writes through the view never reach
    it; the buffer is sealed for every other use. The view's memory goes back
    to the worker when the view and the buffer are gone."""
    k = key()
    (b,) = mcreate(client, [k], [4])
    make = {"MutableData": lambda: b.MutableData(), "memoryview": lambda: b.memoryview(),
            "builtin": lambda: memoryview(b), "numpy": lambda: np.frombuffer(b, dtype=np.uint8),
            "slice": lambda: memoryview(b)[1:3], "ImmutableData": lambda: b.ImmutableData()}[export]
    b.write(b"wxyz")
    view = make()
    writable = export != "ImmutableData"
    if writable:
        view[0] = ord("a")
    want = {"slice": b"wayz", "ImmutableData": b"wxyz"}.get(export, b"axyz")
    client.mset_buffer([b])
    assert b.sealed
    assert read(client, k) == want
    if writable:
        view[0] = ord("Q")  # the view's own memory now: not the stored value
        assert read(client, k) == want
    with pytest.raises(Exception, match="sealed"):
        b.write(b"z")
    with pytest.raises(Exception, match="sealed"):
        b.MutableData()
    client.mset_buffer([b])  # sealed already: nothing to do
    assert read(client, k) == want
    stats = KVClient(ds_worker.host, ds_worker.port)
    stats.init()
    assert stats.stats()["pending_creates"] >= 1  # the view's block, until it goes
    if isinstance(view, memoryview):
        view.release()
    del view, b
    assert wait_until(lambda: stats.stats()["pending_creates"] == 0, 10), stats.stats()
    assert read(client, k) == want


def test_a_batch_with_one_exported_buffer_seals_all(client):
    """The exported buffer is sealed through a copy, the others as they are."""
    k1, k2 = key(), key()
    b1, b2 = mcreate(client, [k1, k2], [1, 1])
    b1.write(b"x")
    mv = b2.MutableData()
    mv[:] = b"y"
    client.mset_buffer([b1, b2])
    assert b1.sealed and b2.sealed
    mv[:] = b"!"
    assert read(client, k1) == b"x" and read(client, k2) == b"y"


def test_after_the_seal_nothing_writes(client):
    """write(), MutableData(), memoryview() and the buffer protocol all refuse
    once sealed; the stored bytes are unchanged."""
    k = key()
    (b,) = mcreate(client, [k], [3])
    b.MutableData()[:] = b"abc"  # a temporary view: released at once
    client.mset_buffer([b])
    with pytest.raises(Exception, match="sealed"):
        b.write(b"z")
    for f in (b.MutableData, b.memoryview, lambda: memoryview(b), lambda: np.frombuffer(b, dtype=np.uint8),
              b.ImmutableData):
        with pytest.raises(Exception, match="sealed"):
            f()
    client.mset_buffer([b])  # sealed already: nothing to do
    assert read(client, k) == b"abc"


def test_two_live_views_and_a_ttl_survive_the_copy(client):
    """Two exports, one released before the seal: still a copy; the copy keeps
    what mcreate was given (here a time to live)."""
    k = key()
    (b,) = client.mcreate([k], [2], ttl_second=1) if not isinstance(client, KVClient) \
        else client.mcreate([k], [2], ttl_seconds=1)
    v1, v2 = b.MutableData(), memoryview(b)
    v1[:] = b"hi"
    v1.release()
    client.mset_buffer([b])
    v2[:] = b"no"
    assert read(client, k) == b"hi"
    assert wait_until(lambda: not client.exist([k])[0], 10), "the sealed copy kept no time to live"


def test_upstream_style_fill_still_seals(client):
    """TransferQueue 0.1.11's pattern: views made in a helper, packed
    through memoryview(view), dropped before mset_buffer."""
    keys = [key() for _ in range(3)]
    payloads = [b"one", b"two!", b"three"]
    buffers = []

    def alloc(sizes):
        bufs = mcreate(client, keys, sizes)
        buffers.extend(bufs)
        return [buf.MutableData() for buf in bufs]

    def encode_into(objs, alloc_fn):
        views = alloc_fn([len(o) for o in objs])
        for v, o in zip(views, objs):
            mv = memoryview(v)
            mv[: len(o)] = o
        return views, [len(o) for o in objs]

    encode_into(payloads, alloc)
    client.mset_buffer(buffers)
    assert [read(client, k) for k in keys] == payloads


# -------------------------------------------- finding 7: declared frame sizes

def local_socket(w: DsWorker) -> str:
    return os.path.join(w.socket_dir, f"datasystem_worker_{w.host}_{w.port}.sock")


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def thread_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


MAGIC = 0x314C5344


def frame_prefix(header_len: int, payload_lens: list[int]) -> bytes:
    return struct.pack("<IIII", MAGIC, header_len, len(payload_lens), 0) + b"".join(
        struct.pack("<Q", n) for n in payload_lens)


@pytest.fixture
def worker():
    w = DsWorker(shared_memory_mb=64)
    try:
        yield w
    finally:
        w.stop()


def test_declared_sizes_commit_no_memory(worker):
    """Frames within the limits whose bytes never come (a 64 MiB header; a
    short header then a 60 MiB payload; a 4 GiB payload, over the limit):
    the worker's memory does not grow with what they declare, its TCP port
    answers at once, and other clients are unaffected."""
    base = rss_bytes(worker.pid)
    socks = []
    try:
        frames = [frame_prefix(64 << 20, []) + b"\x95" * 64] * 2 + \
                 [frame_prefix(8, [60 << 20]) + b"\x00" * 8] * 3 + [frame_prefix(64, [4 << 30])]
        for f in frames:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(local_socket(worker))
            s.sendall(f)
            socks.append(s)
        kv = KVClient(worker.host, worker.port)
        t0 = time.monotonic()
        kv.init()
        kv.set("after", b"v")
        assert kv.get("after") == b"v"
        assert time.monotonic() - t0 < 5
        grown = rss_bytes(worker.pid) - base
        assert grown < 32 << 20, f"the worker grew by {grown >> 20} MiB for bytes that never came"
    finally:
        for s in socks:
            s.close()


def test_frame_over_the_limit_closes_only_its_connection(worker):
    """A frame declaring more than the worker can ever store (1 GiB on a
    64 MiB worker) is refused at its prefix: that connection gets an error
    frame naming the limit and is closed; a client connected before keeps
    working."""
    kv = KVClient(worker.host, worker.port)
    kv.init()
    kv.set("before", b"1")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(local_socket(worker))
    s.settimeout(10)
    s.sendall(frame_prefix(16, [1 << 30]))
    reply = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        reply += chunk
    s.close()
    assert b"bytes per frame" in reply, reply
    assert kv.get("before") == b"1"


def test_idle_local_connections_do_not_stall_the_worker(worker):
    """Many idle connections on the local socket: the worker refuses those
    over its cap (a clear error frame, connection closed) instead of growing
    a thread per connection without bound."""
    base_threads = thread_count(worker.pid)
    socks = []
    try:
        refused = 0
        for _ in range(1100):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(local_socket(worker))
            socks.append(s)
        assert wait_until(lambda: thread_count(worker.pid) < base_threads + 1100)
        for s in socks[-50:]:
            s.settimeout(10)
            data = s.recv(4096)
            refused += b"connections" in data
        assert refused == 50
        assert thread_count(worker.pid) <= base_threads + 1030
    finally:
        for s in socks:
            s.close()
    kv = KVClient(worker.host, worker.port)
    kv.init()
    kv.set("k", b"v")


# ------------------------------------------------- the TCP port (ZMQ, ZMTP 3)

def zmtp_connect(host: str, port: int) -> socket.socket:
    """A raw ZMTP 3.0 DEALER peer through the NULL handshake."""
    s = socket.create_connection((host, port), timeout=10)
    greeting = b"\xff" + b"\x00" * 8 + b"\x7f" + bytes([3, 0]) + b"NULL".ljust(20, b"\x00") + b"\x00" + b"\x00" * 31
    s.sendall(greeting)
    got = b""
    while len(got) < 64:
        chunk = s.recv(64 - len(got))
        assert chunk, "the worker closed during the greeting"
        got += chunk
    prop = b"\x0bSocket-Type" + struct.pack(">I", 6) + b"DEALER"
    body = b"\x05READY" + prop
    s.sendall(bytes([0x04, len(body)]) + body)
    return s


def test_tcp_frame_over_the_limit_drops_the_peer(worker):
    """A ZMQ peer whose frame declares 4 GiB on a 64 MiB worker is dropped
    at once (ZMQ_MAXMSGSIZE), before any of it is buffered; the port keeps
    serving other clients."""
    s = zmtp_connect(worker.host, worker.port)
    try:
        s.sendall(bytes([0x02]) + struct.pack(">Q", 4 << 30) + b"x" * 1024)  # one long, last frame
        t0 = time.monotonic()
        closed = False
        try:
            while time.monotonic() - t0 < 8:
                chunk = s.recv(65536)
                if not chunk:
                    closed = True
                    break
        except (ConnectionResetError, socket.timeout):
            closed = isinstance(sys.exc_info()[1], ConnectionResetError)
        assert closed, "the worker kept a connection whose frame declares 4 GiB"
    finally:
        s.close()
    kv = KVClient(worker.host, worker.port)
    kv.init()
    kv.set("k", b"v")
    assert kv.get("k") == b"v"
