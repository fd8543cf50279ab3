"""The calls of the yr.datasystem differential test, run as a program under
either Python: openYuanrong's wheel (in its own venv) against its worker, or
ours against our worker. Prints one JSON object: case name -> outcome, where
an outcome is {"ok": <normalised result>} or {"raises": <exception type>,
"code": <openYuanrong code name, when the text has one>}.

    python yr_diff_cases.py HOST PORT [--wait-ready SECONDS]

Keys start with a fresh prefix, so runs never see each other's keys; results
are normalised so that both sides print the same JSON when they behave
alike (bytes as latin-1 text, buffers as their bytes, keys without the run's
prefix, generated keys by shape). Waits for expiry by polling with a
deadline, never by a fixed sleep.
"""

from __future__ import annotations

import json
import os
import re
import socket
import sys
import time
import uuid

from yr.datasystem import KVClient
from yr.datasystem.kv_client import ExistenceOpt, ReadParam, WriteMode

P = "d" + uuid.uuid4().hex[:10] + "_"  # this run's key prefix


def norm(x):
    """A JSON-able form of a result, the same for equal behaviour on both sides."""
    if x is None or isinstance(x, (bool, int, float)):
        return x
    if isinstance(x, str):
        return x.replace(P, "<P>")
    if isinstance(x, (bytes, bytearray)):
        return {"bytes": bytes(x).decode("latin-1")}
    if isinstance(x, (list, tuple)):
        return [norm(v) for v in x]
    if hasattr(x, "immutable_data"):  # ReadOnlyBuffer
        return {"buffer": bytes(x.immutable_data()).decode("latin-1")}
    try:
        return {"buffer": bytes(memoryview(x)).decode("latin-1")}
    except TypeError:
        return {"object": type(x).__name__}


def outcome(fn):
    try:
        return {"ok": norm(fn())}
    except Exception as e:  # noqa: BLE001 (every exception is an outcome)
        m = re.match(r"code: \[([^\]]*)\]", str(e))
        out = {"raises": type(e).__name__}
        if m:
            out["code"] = m.group(1)
        return out


def wait_until(pred, timeout_s=10.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return False


def connect(host, port, wait_s):
    deadline = time.monotonic() + wait_s
    last = None
    while True:
        try:
            c = KVClient(host, port, connect_timeout_ms=3000)
            c.init()
            # A worker may accept connections before it serves requests.
            if c.health_check().is_ok():
                c.exist([P + "ready"])
                return c
            last = c.health_check().to_string()
        except RuntimeError as e:
            last = e
        if time.monotonic() >= deadline:
            raise SystemExit(f"no worker at {host}:{port}: {last}")
        time.sleep(0.5)


def cases(c: KVClient, host: str, port: int):
    """(name, callable) in order; later cases may use keys written earlier."""
    k = lambda name: P + name  # noqa: E731

    def mcreate_fill_seal():
        bufs = c.mcreate([k("b1"), k("b2")], [4, 3])
        sizes = [b.GetSize() for b in bufs]
        mv = bufs[0].MutableData()
        info = [type(mv).__name__, len(mv), mv.readonly]
        mv[:] = b"abcd"
        bufs[1].MutableData()[:] = b"xyz"
        del mv  # a view alive at the seal is the next case
        c.mset_buffer(bufs)
        again = c.mset_buffer(bufs)  # sealed already: nothing to do
        return [sizes, info, again, c.get([k("b1"), k("b2")])]

    def mset_buffer_live_view():
        (b,) = c.mcreate([k("lv")], [2])
        mv = b.MutableData()
        mv[:] = b"ab"
        try:
            c.mset_buffer([b])
            sealed = "sealed"
        except Exception as e:  # noqa: BLE001 (the outcome compared)
            sealed = type(e).__name__
        try:
            mv[:1] = b"z"  # after the seal: does the stored value change?
        except Exception as e:  # noqa: BLE001
            return [sealed, type(e).__name__]
        return [sealed, c.get([k("lv")])]

    def buffers_views():
        bufs = c.get_buffers([k("b1"), k("nope"), k("s2")])
        first = bufs[0]
        mv = memoryview(first)
        return [bytes(mv), mv.readonly, first.GetSize(), bufs[1], bytes(memoryview(bufs[2]))]

    def ttl_expires():
        c.set(k("ttl"), b"v", ttl_second=1)
        before = c.exist([k("ttl")])
        gone = wait_until(lambda: c.exist([k("ttl")]) == [False])
        return [before, gone]

    def expire_then_gone():
        c.set(k("ex1"), b"v")
        failed = c.expire([k("ex1")], 1)
        gone = wait_until(lambda: c.exist([k("ex1")]) == [False])
        return [failed, gone]

    def expire_zero_keeps():
        c.set(k("ex0"), b"v")
        return [c.expire([k("ex0")], 0), c.exist([k("ex0")])]

    def env_client():
        old = (os.environ.get("DATASYSTEM_HOST"), os.environ.get("DATASYSTEM_PORT"))
        os.environ["DATASYSTEM_HOST"], os.environ["DATASYSTEM_PORT"] = host, str(port)
        try:
            d = KVClient()
            d.init()
            return d.get([k("s1")])
        finally:
            for name, value in zip(("DATASYSTEM_HOST", "DATASYSTEM_PORT"), old):
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value

    def no_init():
        return KVClient(host, port).get([k("s1")])

    def unreachable():
        with socket.socket() as s:  # a port nothing listens on
            s.bind(("127.0.0.1", 0))
            free = s.getsockname()[1]
        d = KVClient("127.0.0.1", free, connect_timeout_ms=1000)
        d.init()

    def generated_key_shape(key):
        # "<uuid>;<worker uuid>": both parts version 4 UUIDs
        head, sep, tail = key.partition(";")
        return [bool(sep), is_uuid4(head), is_uuid4(tail)]

    def is_uuid4(text):
        import uuid
        try:
            return uuid.UUID(text).version == 4 and str(uuid.UUID(text)) == text
        except ValueError:
            return False

    return [
        ("set", lambda: c.set(k("s1"), b"hello")),
        ("set_str", lambda: c.set(k("s2"), "world")),
        ("set_bytearray", lambda: c.set(k("s3"), bytearray(b"ba"))),
        ("set_memoryview", lambda: c.set(k("s4"), memoryview(b"mv"))),
        ("get", lambda: c.get([k("s1"), k("s2"), k("s3"), k("s4")])),
        ("get_str", lambda: c.get([k("s1"), k("s2")], True)),
        ("get_partial_missing", lambda: c.get([k("s1"), k("nope")])),
        ("get_all_missing", lambda: c.get([k("nope")])),
        ("get_all_missing_wait", lambda: c.get([k("nope")], sub_timeout_ms=200)),
        ("get_dup", lambda: c.get([k("s1"), k("s1")])),
        ("get_empty_list", lambda: c.get([])),
        ("get_not_list", lambda: c.get(k("s1"))),
        ("get_tuple", lambda: c.get((k("s1"),))),
        ("get_negative_timeout", lambda: c.get([k("s1")], sub_timeout_ms=-1)),
        ("exist", lambda: c.exist([k("s1"), k("nope")])),
        ("exist_empty", lambda: c.exist([])),
        ("exist_none", lambda: c.exist(None)),
        ("mset", lambda: c.mset([k("m1"), k("m2")], [b"a", "b"])),
        ("mset_read", lambda: c.get([k("m1"), k("m2")])),
        ("mset_overwrite", lambda: c.mset([k("m1"), k("m3")], [b"z", b"y"])),
        ("mset_overwrite_read", lambda: c.get([k("m1"), k("m3")])),
        ("mset_dup", lambda: c.mset([k("dd"), k("dd")], [b"1", b"2"])),
        ("mset_dup_read", lambda: c.get([k("dd")])),
        ("mset_big", lambda: c.mset([k("big")], [b"x" * (600 * 1024)])),
        ("mset_big_read", lambda: len(c.get([k("big")])[0])),
        ("mset_mismatch", lambda: c.mset([k("a")], [b"x", b"y"])),
        ("mset_empty", lambda: c.mset([], [])),
        ("mset_empty_value", lambda: c.mset([k("ev")], [b""])),
        ("mset_all_bad_keys", lambda: c.mset(["bad key"], [b"y"])),
        ("mset_long_key", lambda: c.mset(["a" * 300], [b"y"])),
        ("mset_tuple", lambda: c.mset((k("a"),), [b"x"])),
        ("mset_int_value", lambda: c.mset([k("a")], [5])),
        ("delete", lambda: c.delete([k("m2"), k("nope")])),
        ("delete_read", lambda: c.exist([k("m2")])),
        ("delete_all_missing", lambda: c.delete([k("nope1")])),
        ("delete_dup", lambda: c.delete([k("dd"), k("dd")])),
        ("delete_empty", lambda: c.delete([])),
        ("delete_none", lambda: c.delete()),
        ("expire_mixed", lambda: c.expire([k("s1"), k("nope")], 100)),
        ("expire_all_missing", lambda: c.expire([k("nope1"), k("nope2")], 5)),
        ("expire_empty", lambda: c.expire([], 5)),
        ("expire_negative", lambda: c.expire([k("s1")], -1)),
        ("expire_zero_keeps", expire_zero_keeps),
        ("expire_then_gone", expire_then_gone),
        ("ttl_expires", ttl_expires),
        ("key_space", lambda: c.set("a b", b"x")),
        ("key_slash", lambda: c.set("a/b", b"x")),
        ("key_unicode", lambda: c.set("ключ", b"x")),
        ("key_empty", lambda: c.set("", b"x")),
        ("key_255", lambda: c.set(P + "a" * (255 - len(P)), b"x")),
        ("key_256", lambda: c.set(P + "a" * (256 - len(P)), b"x")),
        ("key_4096", lambda: c.set("a" * 4096, b"x")),
        ("key_symbols", lambda: c.set(P + "-_!@#%^*()+=:;", b"x")),
        ("key_symbols_read", lambda: c.get([P + "-_!@#%^*()+=:;"])),
        ("key_bytes", lambda: c.set(b"k", b"x")),
        ("value_int", lambda: c.set(k("a"), 5)),
        ("value_empty", lambda: c.set(k("ev"), b"")),
        ("exist_bad_key", lambda: c.exist(["bad key"])),
        ("delete_bad_key", lambda: c.delete(["bad key"])),
        ("get_bad_key", lambda: c.get(["bad key"])),
        ("expire_bad_key", lambda: c.expire(["bad key"], 5)),
        ("get_buffers_bad_key", lambda: c.get_buffers(["bad key"])),
        ("mcreate_bad_key", lambda: c.mcreate(["bad key"], [3])),
        ("write_mode_evict", lambda: c.set(k("ev1"), b"x", WriteMode.NONE_L2_CACHE_EVICT)),
        ("write_mode_l2", lambda: c.set(k("ev2"), b"x", WriteMode.WRITE_THROUGH_L2_CACHE)),
        ("write_mode_int", lambda: c.set(k("ev3"), b"x", 0)),
        ("ttl_negative", lambda: c.set(k("neg"), b"x", ttl_second=-1)),
        ("ttl_too_big", lambda: c.set(k("neg"), b"x", ttl_second=2 ** 32)),
        ("mcreate_fill_seal", mcreate_fill_seal),
        ("mset_buffer_live_view", mset_buffer_live_view),
        ("mcreate_existing_key", lambda: len(c.mcreate([k("b1")], [3]))),
        ("mcreate_mismatch", lambda: c.mcreate([k("x1"), k("x2")], [3])),
        ("mcreate_empty", lambda: c.mcreate([], [])),
        ("mcreate_size0", lambda: c.mcreate([k("z0")], [0])),
        ("mset_buffer_empty", lambda: c.mset_buffer([])),
        ("mset_buffer_not_buffers", lambda: c.mset_buffer([1])),
        ("mset_buffer_tuple", lambda: c.mset_buffer(tuple(c.mcreate([k("t1")], [1])))),
        ("get_buffers", buffers_views),
        ("get_buffers_dup", lambda: c.get_buffers([k("s1"), k("s1")])),
        ("get_buffers_all_missing", lambda: c.get_buffers([k("nope")])),
        ("get_buffers_empty", lambda: c.get_buffers([])),
        ("get_read_only_buffers", lambda: c.get_read_only_buffers([k("b1"), k("nope")])),
        ("get_read_only_buffers_all_missing", lambda: c.get_read_only_buffers([k("nope")])),
        ("read", lambda: c.read([ReadParam(k("s2"), 1, 3), ReadParam(k("s1"), 0, 100)])),
        ("read_size0_to_end", lambda: c.read([ReadParam(k("s2"), 1, 0)])),
        ("read_offset_past_end", lambda: c.read([ReadParam(k("s2"), 10, 1)])),
        ("read_offset_at_end", lambda: c.read([ReadParam(k("s2"), 5, 1)])),
        ("read_partial_missing", lambda: c.read([ReadParam(k("s1"), 0, 1), ReadParam(k("nope"), 0, 1)])),
        ("read_all_missing", lambda: c.read([ReadParam(k("nope"), 0, 1)])),
        ("read_empty", lambda: c.read([])),
        ("read_bad_key", lambda: c.read([ReadParam("bad key", 0, 1)])),
        ("read_negative_offset", lambda: c.read([ReadParam(k("s1"), -1, 1)])),
        ("read_tuple_param", lambda: c.read([(k("s1"), 1, 1)])),
        ("set_value", lambda: generated_key_shape(c.set_value(b"vv"))),
        ("set_value_str", lambda: generated_key_shape(c.set_value("s"))),
        ("set_value_empty", lambda: c.set_value(b"")),
        ("generate_key", lambda: generated_key_shape(c.generate_key())),
        ("generate_key_prefix", lambda: c.generate_key("pre").startswith("pre;")),
        ("generate_key_bad_prefix", lambda: c.generate_key("bad key")),
        ("generate_key_long_prefix", lambda: c.generate_key("a" * 300)),
        ("health_check", lambda: [c.health_check().is_ok(), c.health_check().is_error(),
                                  c.health_check().to_string().startswith("code: [OK]")]),
        ("env_client", env_client),
        ("no_init", no_init),
        ("port_str", lambda: KVClient("127.0.0.1", "31501")),
        ("kwargs", lambda: type(KVClient(host=host, port=port, connect_timeout_ms=1000,
                                         req_timeout_ms=500)).__name__),
        ("unreachable", unreachable),
        ("msettx_new", lambda: c.msettx([k("tx1"), k("tx2")], [b"a", b"b"], existence_opt=ExistenceOpt.NX)),
        ("msettx_new_read", lambda: c.get([k("tx1"), k("tx2")])),
        ("msettx_existing", lambda: c.msettx([k("tx3"), k("tx1")], [b"c", b"d"], existence_opt=ExistenceOpt.NX)),
        ("msettx_existing_read", lambda: [c.exist([k("tx3"), k("tx1")]), c.get([k("tx1")])]),
        ("msettx_none", lambda: c.msettx([k("tx4")], [b"e"])),
        ("msettx_none_read", lambda: c.exist([k("tx4")])),
        ("msettx_nine", lambda: c.msettx([k(f"tx9_{i}") for i in range(9)], [b"n"] * 9,
                                         existence_opt=ExistenceOpt.NX)),
        ("msettx_eight", lambda: c.msettx([k(f"tx8_{i}") for i in range(8)], [b"n"] * 8,
                                          existence_opt=ExistenceOpt.NX)),
        # Where the two differ on purpose (see KNOWN_DIFFERENCES in the test).
        ("mset_nx", lambda: c.mset([k("m1"), k("nx1")], [b"q", b"r"], existence_opt=ExistenceOpt.NX)),
        ("mset_nx_read", lambda: c.get([k("m1"), k("nx1")])),
        ("mset_some_bad_keys", lambda: c.mset([k("ok1"), "bad key"], [b"x", b"y"])),
        ("mcreate_dup", lambda: len(c.mcreate([k("d"), k("d")], [1, 1]))),
    ]


def main() -> None:
    host, port = sys.argv[1], int(sys.argv[2])
    wait_s = float(sys.argv[4]) if len(sys.argv) > 4 and sys.argv[3] == "--wait-ready" else 10.0
    c = connect(host, port, wait_s)
    results = {}
    for name, fn in cases(c, host, port):
        results[name] = outcome(fn)
    print(json.dumps(results, sort_keys=True))


if __name__ == "__main__":
    main()
