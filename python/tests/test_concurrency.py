"""Two Python threads transferring at once both make progress (blocking calls
release the GIL), and the asyncio twins run concurrently."""

import asyncio
import sys
import threading
import time

import pytest
import torch

import transfer_queue as tq
from tensordict import TensorDict

from conftest import unique

MB = 1 << 20


def test_blocked_get_meta_does_not_block_other_threads(client, make_another_client):
    """Thread A waits in get_meta(fetch, timeout 5 s) for samples of partition P.
    Meanwhile the main thread completes puts and gets on another partition and
    only then writes P. If get_meta held the GIL, the main thread could not
    run until A timed out, and A would raise TimeoutError instead of
    returning the samples written after it started waiting."""
    waiting = make_another_client()
    p, q = unique("p"), unique("q")
    result, started = {}, threading.Event()

    def wait_for_p():
        started.set()
        try:
            meta = waiting.get_meta(["x"], 4, p, task_name="t", mode="fetch", timeout=5.0)
            result["data"] = waiting.get_data(meta)["x"]
        except BaseException as e:  # pragma: no cover - reported below
            result["error"] = e
        result["done_at"] = time.monotonic()

    t = threading.Thread(target=wait_for_p)
    t.start()
    started.wait(5)
    rounds = 0
    for i in range(10):
        client.put(data=TensorDict({"x": torch.full((2, 8), i)}, batch_size=[2]), partition_id=q)
        m = client.get_meta(["x"], 2, q, task_name="t", mode="fetch", timeout=5)
        assert torch.equal(client.get_data(m)["x"], torch.full((2, 8), i))
        rounds += 1
    assert "done_at" not in result, "the waiting get_meta returned before its samples existed"
    put_at = time.monotonic()
    client.put(data=TensorDict({"x": torch.arange(4)}, batch_size=[4]), partition_id=p)
    t.join(10)
    assert not t.is_alive()
    assert "error" not in result, f"waiting get_meta failed: {result.get('error')!r}"
    assert rounds == 10
    assert result["data"].tolist() == [0, 1, 2, 3]
    assert result["done_at"] >= put_at


def heartbeat_gaps(fn):
    """Runs fn() while a pure-Python thread ticks; returns (fn's duration,
    the longest gap between ticks during fn, the number of ticks)."""
    ticks, stop = [], threading.Event()

    def beat():
        while not stop.is_set():
            ticks.append(time.perf_counter())
            time.sleep(0.001)

    hb = threading.Thread(target=beat)
    hb.start()
    while not ticks:
        time.sleep(0.001)
    t0 = time.perf_counter()
    fn()
    t1 = time.perf_counter()
    stop.set()
    hb.join()
    inside = [t0] + [x for x in ticks if t0 <= x <= t1] + [t1]
    return t1 - t0, max(b - a for a, b in zip(inside, inside[1:])), len(inside) - 2


def test_large_put_and_get_release_the_gil(client, partition):
    x = torch.randn(16, 4 * MB // 4)  # 64 MiB
    dur, gap, n = heartbeat_gaps(lambda: client.put(data=TensorDict({"x": x}, batch_size=[16]),
                                                    partition_id=partition))
    assert n > 0, "no Python thread ran during a large put"
    if dur > 0.05:  # long enough to tell a held GIL from scheduling noise
        assert gap < 0.6 * dur, f"the GIL looks held: put took {dur:.3f} s, longest gap {gap:.3f} s"
    meta = client.get_meta(["x"], 16, partition, task_name="t")
    out = {}
    dur, gap, n = heartbeat_gaps(lambda: out.setdefault("x", client.get_data(meta)["x"]))
    # A zero-copy read (datasystem) can finish before another thread is even
    # scheduled; judge the GIL only when the call took long enough to tell.
    if dur > 0.05:
        assert n > 0, "no Python thread ran during a large get_data"
        assert gap < 0.6 * dur, f"the GIL looks held: get_data took {dur:.3f} s, longest gap {gap:.3f} s"
    assert torch.equal(out["x"], x)


def test_put_takes_the_gil_back_once(client, partition):
    """put drops the tensors' Python buffers with the GIL held, after the
    transfer, instead of reacquiring the GIL once per buffer while a busy
    Python thread holds it (a wait of up to one switch interval each; here
    there are 177 buffers, against about one interval for the whole put)."""
    n = 16
    data = {f"d{i}": torch.full((n, 8), float(i)) for i in range(16)}  # dense: one buffer per field
    for i in range(5):
        data[f"r{i}"] = [torch.arange(k + 1) + i for k in range(n)]  # ragged: one buffer per sample
        data[f"o{i}"] = [f"s{i}.{k}" for k in range(n)]  # objects: one buffer per sample
    data["j"] = torch.nested.nested_tensor([torch.arange(k + 1) for k in range(n)],
                                           layout=torch.jagged)  # jagged: one buffer (its values)
    interval, spinning, stop = 0.05, threading.Event(), threading.Event()

    def busy():
        spinning.set()
        while not stop.is_set():
            pass

    old = sys.getswitchinterval()
    sys.setswitchinterval(interval)
    spinner = threading.Thread(target=busy)
    spinner.start()
    try:
        assert spinning.wait(5)
        t0 = time.perf_counter()
        client.put(data=TensorDict(data, batch_size=[n]), partition_id=partition)
        dur = time.perf_counter() - t0
    finally:
        stop.set()
        spinner.join()
        sys.setswitchinterval(old)
    assert dur < 10 * interval, f"put took {dur:.2f} s next to a busy thread: GIL reacquired per buffer?"
    out = client.get_data(client.get_meta(list(data), n, partition, task_name="t"))
    assert torch.equal(out["d3"], data["d3"]) and out["o2"] == data["o2"]
    assert out["r4"].layout is torch.jagged
    assert [t.tolist() for t in out["r4"].unbind()] == [t.tolist() for t in data["r4"]]
    assert [t.tolist() for t in out["j"].unbind()] == [list(range(k + 1)) for k in range(n)]


def test_two_threads_large_transfers_both_progress(client, make_another_client):
    clients = [client, make_another_client()]
    rounds = 4
    payloads = [torch.randn(8, 2 * MB // 4) + i for i in range(2)]  # 16 MiB each
    progress = [[] for _ in clients]
    errors = []

    def worker(i):
        try:
            c = clients[i]
            part = unique(f"big{i}")
            for r in range(rounds):
                c.put(data=TensorDict({"x": payloads[i]}, batch_size=[8]), partition_id=part)
                m = c.get_meta(["x"], 8, part, task_name="t", timeout=10)
                got = c.get_data(m)["x"]
                assert torch.equal(got, payloads[i])
                progress[i].append((time.monotonic(), r))
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not any(t.is_alive() for t in threads), "a transfer thread hung"
    assert not errors, errors
    assert [len(p) for p in progress] == [rounds, rounds]
    # Both made progress while the other was still running: neither finished
    # all its rounds before the other completed its first.
    first = [p[0][0] for p in progress]
    last = [p[-1][0] for p in progress]
    assert first[0] <= last[1] and first[1] <= last[0]
    assert time.monotonic() - t0 < 120


def test_asyncio_gather(client):
    parts = [unique("a") for _ in range(4)]

    async def main():
        # A fetch that waits for a partition the gather writes later: only
        # completes if the calls really run concurrently.
        waiter = asyncio.ensure_future(client.async_get_meta(
            data_fields=["x"], batch_size=3, partition_id=parts[0], task_name="t", mode="fetch", timeout=10))
        metas = await asyncio.gather(*[
            client.async_put(data=TensorDict({"x": torch.arange(3) + 10 * i, "s": [str(i)] * 3},
                                             batch_size=[3]), partition_id=p)
            for i, p in enumerate(parts)
        ])
        assert [len(m) for m in metas] == [3] * 4
        got_metas = await asyncio.gather(*[
            client.async_get_meta(data_fields=["x", "s"], batch_size=3, partition_id=p, task_name="t2")
            for p in parts
        ])
        outs = await asyncio.gather(*[client.async_get_data(m) for m in got_metas])
        wmeta = await asyncio.wait_for(waiter, 15)
        wout = await client.async_get_data(wmeta)
        await client.async_clear_partition(parts[3])
        return outs, wout

    outs, wout = asyncio.run(main())
    for i, out in enumerate(outs):
        assert out["x"].tolist() == [10 * i, 10 * i + 1, 10 * i + 2]
        assert out["s"] == [str(i)] * 3
    assert wout["x"].tolist() == [0, 1, 2]
    assert parts[3] not in client.list_partitions()


def test_asyncio_errors_propagate(client):
    async def main():
        with pytest.raises(tq.TimeoutError_):
            await client.async_get_meta(data_fields=["x"], batch_size=1, partition_id=unique("none"),
                                        task_name="t", mode="fetch", timeout=0.2)
        with pytest.raises(tq.DTypeError):
            await client.async_put(data=5, partition_id="p")

    asyncio.run(main())
