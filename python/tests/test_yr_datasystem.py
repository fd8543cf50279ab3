"""yr.datasystem (openYuanrong datasystem's Python KV client API) against our
worker: the calls upstream TransferQueue 0.1.11's Yuanrong backend makes,
the rest of the API, its errors, and what differs from the old `datasystem`
package. The same calls against openYuanrong's own worker are compared in
test_yr_differential.py.
"""

from __future__ import annotations

import os
import pickle
import re
import threading
import time

import pytest

import datasystem
from yr import datasystem as yr_ds
from yr.datasystem import ExistenceOpt, KVClient, ReadParam, WriteMode

from conftest import unique, wait_until


@pytest.fixture
def kv(ds_worker):
    c = KVClient(ds_worker.host, ds_worker.port)
    c.init()
    return c


@pytest.fixture
def p():
    """A key prefix of this test's own (letters, digits and _ only)."""
    return unique("yr") + "_"


def test_imports_both_ways():
    from yr.datasystem import KVClient as K

    assert K is yr_ds.KVClient
    assert hasattr(datasystem, "KVClient")  # the old top-level package stays
    import yr

    assert any(path.endswith("yr") for path in yr.__path__)  # a pkgutil namespace


def test_transferqueue_yuanrong_backend_calls(kv, p):
    """What GeneralKVClientAdapter does: mcreate, fill MutableData() views,
    mset_buffer; get_buffers with None for a missing key, memoryview() of
    each; delete."""
    objs = [b"x" * 10, {"a": 1}, list(range(100))]
    payloads = [pickle.dumps(o) for o in objs]
    keys = [p + str(i) for i in range(3)]
    bufs = kv.mcreate(keys, [len(b) for b in payloads])
    views = [b.MutableData() for b in bufs]
    assert [type(v) for v in views] == [memoryview] * 3
    for v, data in zip(views, payloads):
        v[: len(data)] = data
    # Upstream drops its views before sealing (batch_encode_into keeps none);
    # a view alive at the seal is refused (test_hostile_datasystem.py).
    del views, v
    kv.mset_buffer(bufs)
    got = kv.get_buffers(keys + [p + "missing"])
    assert got[3] is None
    assert [pickle.loads(memoryview(b)) for b in got[:3]] == objs
    assert [b.GetSize() for b in got[:3]] == [len(d) for d in payloads]
    assert kv.delete(keys) == []
    with pytest.raises(RuntimeError, match=r"^code: \[Key not found\]"):
        kv.get_buffers(keys)


def test_set_get_and_str_conversion(kv, p):
    kv.set(p + "a", b"hello")
    kv.set(p + "b", "wörld")
    kv.set(p + "c", bytearray(b"ba"))
    kv.set(p + "d", memoryview(b"mv"))
    assert kv.get([p + "a", p + "b", p + "c", p + "d"]) == [b"hello", "wörld".encode(), b"ba", b"mv"]
    assert kv.get([p + "a", p + "b"], True) == ["hello", "wörld"]
    assert kv.get([p + "a", p + "nope"]) == [b"hello", None]
    with pytest.raises(RuntimeError, match=r"^code: \[Key not found\]"):
        kv.get([p + "nope"])


def test_mset_reports_failed_keys(kv, p):
    assert kv.mset([p + "1", p + "2"], [b"a", "b"]) == []
    assert kv.mset([p + "1", p + "3"], [b"new", b"c"], existence_opt=ExistenceOpt.NX) == [p + "1"]
    assert kv.get([p + "1", p + "3"]) == [b"a", b"c"]  # NX left the existing key as it was
    assert kv.mset([p + "d", p + "d"], [b"first", b"second"]) == [p + "d"]
    assert kv.get([p + "d"]) == [b"first"]
    assert kv.mset([p + "ok", "bad key", p + "empty"], [b"x", b"y", b""]) == ["bad key", p + "empty"]
    with pytest.raises(RuntimeError, match=r"^code: \[Object already exist error\]"):
        kv.mset([p + "1"], [b"x"], existence_opt=ExistenceOpt.NX)  # every key failed
    big = os.urandom(600 * 1024)  # written through shared memory, not inline
    assert kv.mset([p + "big", p + "1"], [big, b"z"], existence_opt=ExistenceOpt.NX) == [p + "1"]
    assert kv.get([p + "big"]) == [big]


@pytest.mark.parametrize("key", ["a b", "a/b", "ключ", "", "a" * 256, "tab\tkey"])
def test_bad_keys_are_refused_naming_the_key(kv, key):
    for call in (lambda: kv.set(key, b"x"), lambda: kv.get([key]), lambda: kv.exist([key]),
                 lambda: kv.delete([key]), lambda: kv.expire([key], 1), lambda: kv.get_buffers([key]),
                 lambda: kv.mcreate([key], [1]), lambda: kv.read([ReadParam(key, 0, 1)])):
        with pytest.raises(RuntimeError, match=r"^code: \[Invalid parameter\], msg: \[(a key is empty|key ')"):
            call()


@pytest.mark.parametrize("at", [0, 3, 6])
@pytest.mark.parametrize("offset", [0, 1, 2, 3, 5, -1, -2])
def test_a_bad_key_anywhere_in_a_batch_is_found(kv, p, at, offset):
    # Seven keys one byte apart in length (the check reads four bytes at a
    # time, then the rest); key `at` has a '/' at `offset`: it is named, and
    # the calls that take the batch whole write or read nothing.
    keys = [p + "k" * i for i in range(1, 8)]
    bad = list(keys[at])
    bad[offset] = "/"
    keys[at] = "".join(bad)
    named = r"^code: \[Invalid parameter\], msg: \[key '" + re.escape(keys[at]) + "'"
    for call in (lambda: kv.mcreate(keys, [1] * 7), lambda: kv.get(keys), lambda: kv.delete(keys),
                 lambda: kv.exist(keys), lambda: kv.get_buffers(keys)):
        with pytest.raises(RuntimeError, match=named):
            call()
    good = [k for i, k in enumerate(keys) if i != at]
    assert kv.exist(good) == [False] * 6
    assert kv.mset(keys, [b"v"] * 7) == [keys[at]]  # mset writes the others
    assert kv.get(good) == [b"v"] * 6


def test_key_limits(kv, p):
    kv.set(p + "a" * (255 - len(p)), b"x")
    kv.set(p + "-_!@#%^*()+=:;", b"sym")
    assert kv.get([p + "-_!@#%^*()+=:;"]) == [b"sym"]


def test_type_errors_as_openyuanrong(kv, p):
    with pytest.raises(TypeError):
        kv.set(b"k", b"x")
    with pytest.raises(TypeError):
        kv.set(p, 5)
    with pytest.raises(TypeError):
        kv.get((p,))
    with pytest.raises(TypeError):
        kv.mset([p], [5])
    with pytest.raises(TypeError) as e:
        kv.mset_buffer([1])
    assert type(e.value) is TypeError
    with pytest.raises(TypeError):
        kv.set(p, b"x", ttl_second=-1)
    with pytest.raises(TypeError):
        kv.set(p, b"x", 0)  # write_mode must be a WriteMode
    with pytest.raises(TypeError):
        KVClient("127.0.0.1", "31501")


def test_empty_inputs(kv, p):
    for call in (lambda: kv.get([]), lambda: kv.exist([]), lambda: kv.delete([]), lambda: kv.expire([], 1),
                 lambda: kv.mset([], []), lambda: kv.mcreate([], []), lambda: kv.mset_buffer([]),
                 lambda: kv.get_buffers([]), lambda: kv.read([]), lambda: kv.set(p, b""),
                 lambda: kv.mcreate([p], [0])):
        with pytest.raises(RuntimeError, match=r"^code: \[Invalid parameter\]"):
            call()
    assert kv.set_value(b"") == ""


def test_write_modes(kv, p):
    kv.set(p + "e", b"x", WriteMode.NONE_L2_CACHE_EVICT)
    assert kv.get([p + "e"]) == [b"x"]
    for mode in (WriteMode.WRITE_THROUGH_L2_CACHE, WriteMode.WRITE_BACK_L2_CACHE,
                 WriteMode.WRITE_BACK_L2_CACHE_EVICT):
        with pytest.raises(RuntimeError, match="L2"):
            kv.set(p + "l2", b"x", mode)


def test_ttl_and_expire(kv, p):
    kv.set(p + "t", b"v", ttl_second=1)
    assert kv.exist([p + "t"]) == [True]
    assert wait_until(lambda: kv.exist([p + "t"]) == [False])
    kv.mset([p + "a", p + "b"], [b"1", b"2"])
    assert kv.expire([p + "a", p + "nope"], 1) == [p + "nope"]
    assert wait_until(lambda: kv.exist([p + "a", p + "b"]) == [False, True])
    with pytest.raises(RuntimeError, match=r"^code: \[Key not found\]"):
        kv.expire([p + "nope"], 5)
    # 0 keeps a key's expiry as it is; a later expire replaces an earlier one.
    kv.set(p + "keep", b"v")
    assert kv.expire([p + "keep"], 0) == []
    kv.set(p + "longer", b"v", ttl_second=1)
    assert kv.expire([p + "longer"], 100) == []
    time.sleep(1.5)  # past the first TTL: the key must still be there (nothing to poll for)
    assert kv.exist([p + "keep", p + "longer"]) == [True, True]


def test_read_ranges(kv, p):
    kv.set(p + "w", b"world")
    kv.set(p + "h", b"hello")
    got = kv.read([ReadParam(p + "w", 1, 3), ReadParam(p + "h", 0, 100), ReadParam(p + "w", 1, 0),
                   ReadParam(p + "nope", 0, 1)])
    assert [None if b is None else bytes(b.immutable_data()) for b in got] == [b"orl", b"hello", b"orld", None]
    assert got[0].immutable_data().readonly
    with pytest.raises(RuntimeError, match=r"^code: \[Out of range\]"):
        kv.read([ReadParam(p + "w", 5, 1)])
    with pytest.raises(RuntimeError, match=r"^code: \[Key not found\]"):
        kv.read([ReadParam(p + "nope", 0, 1)])
    with pytest.raises(TypeError):
        kv.read([ReadParam(p + "w", -1, 1)])


def test_read_only_buffers(kv, p):
    kv.set(p + "r", b"abc")
    ro = kv.get_read_only_buffers([p + "r", p + "nope"])
    assert ro[1] is None
    assert bytes(ro[0].immutable_data()) == b"abc"
    assert ro[0].immutable_data(True, 5).readonly
    ro[0].rlatch()
    ro[0].unrlatch()


def test_mcreate_buffer_methods(kv, p):
    (b,) = kv.mcreate([p + "m"], [5])
    assert b.GetSize() == 5 and b.size == 5
    # A new block is not cleared (it may hold an earlier value's bytes), as
    # openYuanrong's: write all of it.
    b.MutableData()[:2] = b"ab"
    b.MutableData()[2:] = b"cde"
    assert bytes(b.ImmutableData(False, 1)) == b"abcde"
    assert b.ImmutableData().readonly
    kv.mset_buffer([b])
    kv.mset_buffer([b])  # sealed already: nothing to do
    assert kv.get([p + "m"]) == [b"abcde"]
    with pytest.raises(Exception, match="sealed"):
        b.MutableData()  # the stored value never changes
    # A key written again through mcreate replaces the value.
    (b2,) = kv.mcreate([p + "m"], [1])
    b2.MutableData()[:] = b"z"
    kv.mset_buffer([b2])
    assert kv.get([p + "m"]) == [b"z"]


def test_write_buffer_offset_overflow_is_refused(ds_worker, p):
    """The old API's WriteBuffer.write(data, offset) bounds check cannot wrap."""
    c = datasystem.KVClient(ds_worker.host, ds_worker.port)
    c.init()
    (b,) = c.mcreate([p + "w"], [8])
    for offset in (2 ** 64 - 1, 2 ** 64 - 2, 9, 8):
        with pytest.raises(Exception, match="exceeds"):
            b.write(b"xy", offset)
    b.write(b"xy", 6)
    with pytest.raises(OverflowError):
        b.write(b"xy", 2 ** 64)
    with pytest.raises(OverflowError):
        b.write(b"xy", -1)


def test_generate_key_and_set_value(kv, p):
    k1, k2 = kv.generate_key(), kv.generate_key()
    assert k1 != k2 and ";" in k1 and k1.split(";")[1] == k2.split(";")[1]
    assert kv.generate_key("pre").startswith("pre;")
    with pytest.raises(RuntimeError, match=r"^code: \[Invalid parameter\]"):
        kv.generate_key("bad key")
    key = kv.set_value(b"vv", ttl_second=100)
    assert kv.get([key]) == [b"vv"]


def test_health_check_and_not_ready(ds_worker, kv):
    st = kv.health_check()
    assert st.is_ok() and not st.is_error() and st.to_string() == "code: [OK], msg: []"
    c = KVClient(ds_worker.host, ds_worker.port)
    assert not c.health_check().is_ok()
    with pytest.raises(RuntimeError, match=r"^code: \[Not ready\]"):
        c.get(["k"])


def test_address_from_environment(ds_worker, monkeypatch, p):
    monkeypatch.setenv("DATASYSTEM_HOST", ds_worker.host)
    monkeypatch.setenv("DATASYSTEM_PORT", str(ds_worker.port))
    c = KVClient()
    c.init()
    c.set(p + "env", b"1")
    assert c.get([p + "env"]) == [b"1"]
    monkeypatch.delenv("DATASYSTEM_HOST")
    with pytest.raises(RuntimeError, match="DATASYSTEM_HOST"):
        KVClient(port=ds_worker.port).init()
    monkeypatch.setenv("DATASYSTEM_PORT", "not-a-port")
    with pytest.raises(RuntimeError, match="DATASYSTEM_PORT"):
        KVClient(ds_worker.host)


def test_unreachable_worker_and_authentication(p):
    from conftest import free_port

    c = KVClient("127.0.0.1", free_port(), connect_timeout_ms=500)
    t0 = time.monotonic()
    with pytest.raises(RuntimeError, match=r"^code: \[RPC unavailable\]"):
        c.init()
    assert time.monotonic() - t0 < 10
    with pytest.raises(RuntimeError, match="token"):
        KVClient("127.0.0.1", 1, token="secret")
    with pytest.raises(RuntimeError, match=r"connect_timeout_ms"):
        KVClient("127.0.0.1", 1, connect_timeout_ms=-1)


def test_threads_share_one_client(kv, p):
    errors = []

    def work(t):
        try:
            for i in range(50):
                key = f"{p}{t}_{i}"
                kv.set(key, key.encode())
                assert kv.get([key]) == [key.encode()]
                bufs = kv.mcreate([key + "_b"], [3])
                bufs[0].MutableData()[:] = b"abc"
                kv.mset_buffer(bufs)
                assert bytes(memoryview(kv.get_buffers([key + "_b"])[0])) == b"abc"
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors


def test_upstream_transferqueue_storage_client_runs_unchanged(ds_worker):
    """Upstream TransferQueue 0.1.11's own Yuanrong storage client, its code
    as published, against our worker (skips unless it is installed in
    .yr-venv/upstream-tq; see yr_upstream_tq_client.py)."""
    import subprocess
    import sys
    from pathlib import Path

    from conftest import BUILD, REPO

    upstream = Path(os.environ.get("TQDS_UPSTREAM_TQ", REPO / ".yr-venv" / "upstream-tq"))
    if not (upstream / "transfer_queue" / "storage" / "clients" / "yuanrong_client.py").exists():
        pytest.skip(f"upstream TransferQueue 0.1.11 is not in {upstream}: pip install --no-deps --target "
                    f"{upstream} TransferQueue==0.1.11 msgspec pyzmq")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO / "python"), str(BUILD / "python")]))
    r = subprocess.run([sys.executable, str(Path(__file__).with_name("yr_upstream_tq_client.py")), str(upstream),
                        str(ds_worker.port)], capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0 and r.stdout.strip().endswith("OK"), r.stdout[-2000:] + r.stderr[-4000:]


def test_request_timeout(fresh_worker, p):
    """req_timeout_ms: a worker that answers nothing (stopped) fails the
    request in time; the client then gives up its connection."""
    import signal

    c = KVClient(fresh_worker.host, fresh_worker.port, req_timeout_ms=300)
    c.init()
    c.set(p + "k", b"v")
    assert c.get([p + "k", p + "later"], sub_timeout_ms=600) == [b"v", None]  # a get may wait longer
    os.kill(fresh_worker.pid, signal.SIGSTOP)
    try:
        # Readiness: every thread of the worker has stopped (a thread still
        # running could answer the next request).
        deadline = time.monotonic() + 5
        while any(open(f"/proc/{fresh_worker.pid}/task/{t}/stat").read().rsplit(")", 1)[1].split()[0] != "T"
                  for t in os.listdir(f"/proc/{fresh_worker.pid}/task")):
            assert time.monotonic() < deadline, "the worker's threads did not stop"
            time.sleep(0.005)
        t0 = time.monotonic()
        with pytest.raises(RuntimeError, match=r"^code: \[RPC deadline exceeded\]"):
            c.exist([p + "k"])
        assert 0.25 < time.monotonic() - t0 < 5
    finally:
        os.kill(fresh_worker.pid, signal.SIGCONT)
    with pytest.raises(RuntimeError, match=r"^code: \[RPC unavailable\].*new client"):
        c.get([p + "k"])
    d = KVClient(fresh_worker.host, fresh_worker.port)
    d.init()
    assert d.get([p + "k"]) == [b"v"]


@pytest.mark.parametrize("size", [16, 200 * 1024])  # inline, and through shared memory
def test_msettx_writes_every_key_or_none(kv, p, size):
    v = b"t" * size
    kv.msettx([p + "a", p + "b"], [v, v], existence_opt=ExistenceOpt.NX)
    assert kv.get([p + "a", p + "b"]) == [v, v]
    kv.set(p + "taken", b"old")
    with pytest.raises(RuntimeError, match=r"^code: \[Object already exist error\].*none of the 3 keys.*" + p + "taken"):
        kv.msettx([p + "c", p + "taken", p + "d"], [v, v, v], existence_opt=ExistenceOpt.NX)
    assert kv.exist([p + "c", p + "taken", p + "d"]) == [False, True, False]
    assert kv.get([p + "taken"]) == [b"old"]


def test_msettx_arguments(kv, p):
    with pytest.raises(RuntimeError, match=r"^code: \[Invalid parameter\].*ExistenceOpt.NX"):
        kv.msettx([p + "x"], [b"x"])  # NONE is not served, as openYuanrong documents
    with pytest.raises(RuntimeError, match=r"^code: \[Invalid parameter\].*1 to 8"):
        kv.msettx([p + str(i) for i in range(9)], [b"x"] * 9, existence_opt=ExistenceOpt.NX)
    with pytest.raises(RuntimeError, match=r"^code: \[Invalid parameter\]"):
        kv.msettx([p + "bad key"], [b"x"], existence_opt=ExistenceOpt.NX)
    with pytest.raises(TypeError):
        kv.msettx(p + "x", [b"x"], existence_opt=ExistenceOpt.NX)
    assert kv.exist([p + "x"]) == [False]
