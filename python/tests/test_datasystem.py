"""datasystem.KVClient against a real worker started with dscli."""

import gc
import os
import signal
import subprocess
import sys
import textwrap
import threading
import warnings

import numpy as np
import pytest
import torch

import datasystem
import transfer_queue as tq
from datasystem import KVClient

from conftest import unique


@pytest.fixture
def kv(ds_worker):
    c = KVClient(ds_worker.host, ds_worker.port)
    c.init()
    return c


def test_set_get(kv):
    k = unique("k")
    kv.set(k, b"hello\x00world")
    assert kv.get(k) == b"hello\x00world"
    kv.set(k, b"overwritten")
    assert kv.get(k) == b"overwritten"
    kv.set(k + "s", "text ✓")  # str is stored as UTF-8
    assert kv.get(k + "s") == "text ✓".encode()
    kv.set(k + "e", b"")
    assert kv.get(k + "e") == b""


def test_set_accepts_buffers(kv):
    k = unique("k")
    arr = np.arange(100, dtype=np.int32)
    kv.set(k, arr)
    assert np.array_equal(np.frombuffer(kv.get(k), dtype=np.int32), arr)
    kv.set(k, memoryview(b"mv"))
    assert kv.get(k) == b"mv"
    kv.set(k, bytearray(b"ba"))
    assert kv.get(k) == b"ba"


def test_large_value(kv):
    k = unique("big")
    v = np.random.default_rng(1).integers(0, 256, size=8 << 20, dtype=np.uint8).tobytes()
    kv.set(k, v)
    assert kv.get(k) == v
    kv.delete([k])


def test_set_if_absent(kv):
    k = unique("k")
    kv.set(k, b"first", if_absent=True)
    try:
        kv.set(k, b"second", if_absent=True)
    except tq.AlreadyExistsError:
        pass
    assert kv.get(k) == b"first"


def test_mset_mget(kv):
    keys = [unique("m") for _ in range(5)]
    values = [bytes([i]) * (i * 100) for i in range(5)]
    kv.mset(keys, values)
    assert kv.mget(keys) == values
    missing = unique("missing")
    got = kv.mget([keys[0], missing, keys[4]])
    assert got == [values[0], None, values[4]]


def test_mcreate_write_mset_buffer_get_buffers(kv):
    keys = [unique("buf") for _ in range(3)]
    sizes = [16, 4096, 1 << 20]
    bufs = kv.mcreate(keys, sizes)
    assert [b.key for b in bufs] == keys
    assert [b.size for b in bufs] == sizes
    assert not any(b.sealed for b in bufs)
    # Not visible before sealing.
    assert kv.exist(keys) == [False, False, False]

    bufs[0].write(b"0123456789abcdef")
    mv = bufs[1].memoryview()
    assert not mv.readonly and len(mv) == 4096
    mv[:] = bytes(range(256)) * 16
    payload = np.arange(sizes[2] // 4, dtype=np.float32)
    np.frombuffer(bufs[2].memoryview(), dtype=np.float32)[:] = payload  # fill in place
    bufs[2].write(b"\xff\xff", offset=sizes[2] - 2)
    del mv  # a live view would make the seal store a copy (test_hostile_datasystem.py)
    kv.mset_buffer(bufs)
    assert all(b.sealed for b in bufs)
    assert kv.exist(keys) == [True, True, True]

    views = kv.get_buffers(keys + [unique("missing")])
    assert views[3] is None
    assert bytes(views[0]) == b"0123456789abcdef"
    assert bytes(views[1]) == bytes(range(256)) * 16
    got = np.frombuffer(views[2], dtype=np.float32)
    assert np.array_equal(got[:-1], payload[:-1])
    assert bytes(views[2][-2:]) == b"\xff\xff"
    for v in views[:3]:
        assert isinstance(v, memoryview)
        assert v.readonly
        with pytest.raises(TypeError):
            v[0] = 1
    # get returns the same bytes as a copy.
    assert kv.get(keys[1]) == bytes(views[1])


def test_mset_buffer_refuses_a_buffer_listed_twice(kv):
    k = unique("twice")
    b, = kv.mcreate([k], [8])
    b.write(b"ABCDEFGH")
    with pytest.raises(tq.InvalidArgumentError, match=f"'{k}' is listed twice"):
        kv.mset_buffer([b, b])
    assert kv.exist([k]) == [False] and not b.sealed
    kv.mset_buffer((x for x in [b]))  # any iterable
    assert b.sealed and kv.get(k) == b"ABCDEFGH"
    b2, = kv.mcreate([unique("twice")], [1])
    with pytest.raises(TypeError, match="WriteBuffer"):
        kv.mset_buffer([b2, b"not a buffer"])
    assert not b2.sealed  # nothing moved
    kv.mset_buffer([b2])


def test_mset_buffer_survives_the_list_changing_under_it(kv):
    """mset_buffer works on a copy of the list: another thread emptying or
    refilling the caller's list while the call runs without the GIL never
    puts a buffer into the wrong object (or a freed one)."""
    stop = threading.Event()
    lst: list = []

    def meddle():
        while not stop.is_set():
            lst[:] = [object(), object()]
            lst.clear()

    t = threading.Thread(target=meddle)
    t.start()
    try:
        for round_ in range(200):
            keys = [unique("meddle") for _ in range(2)]
            bufs = kv.mcreate(keys, [4096, 4096])
            for i, b in enumerate(bufs):
                b.write(bytes([round_ % 256, i]) * 2048)
            lst[:] = bufs
            try:
                kv.mset_buffer(lst)
            except TypeError:  # the other thread got there first: a list of other objects
                pass
            rest = [b for b in bufs if not b.sealed]  # or it emptied the list first
            if rest:
                kv.mset_buffer(rest)
            assert all(b.sealed and b.key == k for b, k in zip(bufs, keys))
            assert kv.get(keys[1]) == bytes([round_ % 256, 1]) * 2048
    finally:
        stop.set()
        t.join()


def _address(view) -> int:
    return np.frombuffer(view, dtype=np.uint8).__array_interface__["data"][0]


def test_get_buffers_is_zero_copy(kv):
    """Reads one after another map the same shared memory, and a torch
    tensor can wrap one."""
    k = unique("zc")
    data = torch.arange(1024, dtype=torch.float32)
    kv.set(k, data.numpy())
    a, = kv.get_buffers([k])
    pa = _address(a)
    del a
    b, = kv.get_buffers([k])
    assert _address(b) == pa, "a read after the last one ended should map the same shared memory"
    t = torch.frombuffer(bytearray(b), dtype=torch.float32)
    assert torch.equal(t, data)


def test_views_of_one_call_share_one_exporter(kv):
    """A call's memoryviews are narrowed views of one export: each shows
    exactly its value (empty ones too) to every consumer of the buffer
    protocol, the others stay readable when some are dropped, and the
    object behind them refuses a second export."""
    keys = [unique("call") for _ in range(4)]
    values = [b"", b"small value", bytes(range(256)) * 16384, b"\x00" * 7]  # 4 MiB in the middle
    kv.mset(keys, values)
    views = kv.get_buffers([keys[0], unique("missing"), *keys[1:]])
    assert views[1] is None
    views = [views[0], *views[2:]]
    for v, want in zip(views, values):
        assert (len(v), v.nbytes, v.readonly, v.format, v.shape) == (len(want), len(want), True, "B", (len(want),))
        assert bytes(v) == v.tobytes() == want
        assert hash(v) == hash(want)
        assert np.frombuffer(v, dtype=np.uint8).tobytes() == want
        assert bytes(memoryview(v)) == bytes(v.cast("B")) == want
    assert bytes(views[2][-3:]) == values[2][-3:] and bytes(views[1][6:]) == b"value"
    assert len({id(v.obj) for v in views}) == 1, "one object behind the views of a call"
    with pytest.raises(BufferError, match="get_buffers"):
        memoryview(views[0].obj)
    last = views[2]
    del views, v
    gc.collect()
    assert bytes(last) == values[2] and hash(last) == hash(values[2])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "buffer is not writable"
        assert torch.equal(torch.frombuffer(last, dtype=torch.uint8),
                           torch.frombuffer(bytearray(values[2]), dtype=torch.uint8))


def test_live_results_of_one_key_are_independent(kv):
    """A key read again while an earlier result lives comes back as a copy:
    a write into one result never shows in the other, nor in the stored value."""
    k = unique("indep")
    data = torch.arange(1 << 20, dtype=torch.float32)  # 4 MiB: later results mapped alone
    kv.set(k, data.numpy())
    a, = kv.get_buffers([k])
    b, c = kv.get_buffers([k, k])  # the same key twice in one call too
    assert len({_address(a), _address(b), _address(c)}) == 3
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "buffer is not writable"
        ta, tb, tc = (torch.frombuffer(v, dtype=torch.float32) for v in (a, b, c))
    ta.add_(1)
    tb.mul_(2)
    assert torch.equal(ta, data + 1)
    assert torch.equal(tb, data * 2)
    assert torch.equal(tc, data)
    assert kv.get(k) == data.numpy().tobytes()


def test_torch_writes_into_a_view_never_reach_the_stored_value(kv, ds_worker):
    """numpy refuses to write a view; a torch tensor over one writes a
    private copy of the pages (the kernel's copy-on-write of the client's
    MAP_PRIVATE mapping), not the worker's memory; a later result over the
    same pages shows the stored bytes."""
    k = unique("cow")
    data = torch.arange(1 << 20, dtype=torch.float32)  # 4 MiB
    kv.set(k, data.numpy())
    v, = kv.get_buffers([k])
    with pytest.raises(ValueError):
        np.frombuffer(v, dtype=np.float32)[0] = 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "buffer is not writable"
        t = torch.frombuffer(v, dtype=torch.float32)
    t.add_(1)
    assert torch.equal(t, data + 1)
    other = KVClient("127.0.0.1", ds_worker.port)
    other.init()
    assert other.get(k) == data.numpy().tobytes()
    w, = kv.get_buffers([k])
    assert bytes(w) == data.numpy().tobytes()
    where = _address(v)
    del t, v, w
    x, = kv.get_buffers([k])  # the written pages were dropped with the result
    assert _address(x) == where
    assert bytes(x) == data.numpy().tobytes()


FAULTHANDLER_CHILD = textwrap.dedent("""
    import ctypes, faulthandler, signal, sys, warnings
    import numpy as np, torch
    from datasystem import KVClient
    port, mode = int(sys.argv[1]), sys.argv[2]
    if mode != "after_get":
        faulthandler.enable()
    # The in-place add below runs on several intra-op threads.
    torch.set_num_threads(4)
    kv = KVClient("127.0.0.1", port)
    kv.init()
    kv.set("fh", np.arange(1 << 20, dtype=np.float32))
    v, = kv.get_buffers(["fh"])
    if mode == "after_get":
        # The library installs no SIGSEGV handler (the C-level one is the
        # default until faulthandler installs its own).
        act = ctypes.create_string_buffer(256)  # struct sigaction; sa_handler first
        assert ctypes.CDLL(None, use_errno=True).sigaction(signal.SIGSEGV, None, act) == 0
        assert not ctypes.c_void_p.from_buffer(act).value, "a SIGSEGV handler is installed"
        faulthandler.enable()
    warnings.simplefilter("ignore")
    t = torch.frombuffer(v, dtype=torch.float32)
    t.add_(1)
    stored = np.frombuffer(kv.get("fh"), dtype=np.float32)
    print("wrote", t[:3].tolist(), "stored", stored[:3].tolist(), flush=True)
    if mode == "crash":
        ctypes.string_at(0)  # a real fault: faulthandler reports it, the process dies
    if mode == "raise":
        signal.raise_signal(signal.SIGSEGV)  # sent, not a fault: the process dies
""")


@pytest.mark.parametrize("mode", ["before_init", "after_get", "crash", "raise"])
def test_writes_into_views_with_faulthandler(ds_worker, tmp_path, mode):
    """Writes into views are the kernel's copy-on-write, not a fault: with
    Python's faulthandler enabled (before the client starts or after a get)
    they go ahead silently, and a real fault or a SIGSEGV the process raises
    itself still kills it, with faulthandler's one report."""
    script = tmp_path / "child.py"
    script.write_text(FAULTHANDLER_CHILD)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    r = subprocess.run([sys.executable, str(script), str(ds_worker.port), mode], capture_output=True,
                       text=True, env=env, timeout=60)
    assert "wrote [1.0, 2.0, 3.0] stored [0.0, 1.0, 2.0]" in r.stdout, r.stderr
    if mode in ("crash", "raise"):
        assert r.returncode == -signal.SIGSEGV, r.stderr
        assert "Fatal Python error: Segmentation fault" in r.stderr
        assert r.stderr.count("Fatal Python error") == 1, r.stderr
    else:
        assert r.returncode == 0, r.stderr
        assert "Fatal Python error" not in r.stderr, r.stderr


def test_view_outlives_delete(kv):
    """A view keeps its shared memory alive: deleting the key does not change it."""
    k = unique("alive")
    kv.set(k, b"A" * 4096)
    v, = kv.get_buffers([k])
    assert kv.delete([k]) == 1
    assert kv.exist([k]) == [False]
    kv.set(unique("other"), b"B" * 4096)  # reuse of freed memory must not show through
    assert bytes(v) == b"A" * 4096


def test_delete_exist(kv):
    keys = [unique("d") for _ in range(3)]
    kv.mset(keys, [b"1", b"2", b"3"])
    assert kv.exist(keys + [unique("none")]) == [True, True, True, False]
    assert kv.delete(keys[:2] + [unique("none")]) == 2
    assert kv.exist(keys) == [False, False, True]
    with pytest.raises(tq.NotFoundError):
        kv.get(keys[0])
    assert kv.delete(keys[:2]) == 0


def test_stats_track_objects(kv, ds_worker):
    before = kv.stats()
    assert before["pid"] == ds_worker.pid
    assert before["capacity"] > 0
    assert before["clients"] >= 1  # this client's connection
    # A standalone worker: no cluster, nothing pulled from other workers.
    assert (before["coordination"], before["peers"], before["pulls"]) == ("", [], 0)
    assert before["worker"] == f"{ds_worker.host}:{ds_worker.port}"
    keys = [unique("s") for _ in range(4)]
    kv.mset(keys, [b"x" * 100_000] * 4)
    mid = kv.stats()
    assert mid["objects"] >= before["objects"] + 4
    assert mid["used"] >= before["used"] + 400_000
    kv.delete(keys)
    after = kv.stats()
    assert after["objects"] <= mid["objects"] - 4
    assert after["used"] <= mid["used"] - 400_000


def test_two_clients_see_each_other(ds_worker):
    a = KVClient(ds_worker.host, ds_worker.port)
    b = KVClient(ds_worker.host, ds_worker.port)
    a.init()
    b.init()
    k = unique("shared")
    a.set(k, b"from a")
    assert b.get(k) == b"from a"
    assert bytes(b.get_buffers([k])[0]) == b"from a"


def test_get_waits_for_a_later_set(kv, ds_worker):
    k = unique("later")
    writer = KVClient(ds_worker.host, ds_worker.port)
    writer.init()
    result = {}
    reader = threading.Thread(target=lambda: result.setdefault("v", kv.get(k, timeout_ms=10000)))
    reader.start()
    writer.set(k, b"late")
    reader.join(15)
    assert not reader.is_alive()
    assert result["v"] == b"late"


def test_concurrent_threads(ds_worker):
    """Several threads on one client: every value lands and reads back."""
    kv = KVClient(ds_worker.host, ds_worker.port)
    kv.init()
    errors = []

    def work(i):
        try:
            for j in range(50):
                k = f"{unique('t')}_{i}_{j}"
                kv.set(k, bytes([i]) * 1000)
                assert kv.get(k) == bytes([i]) * 1000
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors


def test_package_exports():
    assert datasystem.KVClient is KVClient
    assert hasattr(datasystem, "WriteBuffer")
