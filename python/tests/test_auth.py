"""Authenticated transports (issue 15): CURVE keys from a directory
(`tq keys DIR`, TQDS_CURVE_KEY_DIR; dscli's --enable_curve_zmq
--curve_key_dir) on real controller, storage-unit and datasystem-worker
processes, reached by client processes with the keys, without them, and with
another deployment's; and the rule that a non-loopback address needs keys or
explicit consent. Every client runs in its own process, so that its keys are
exactly what its environment gives."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap

import pytest

from conftest import DsWorker, free_port, kill_pid

TQ = shutil.which("tq")


def make_keys(path) -> str:
    r = subprocess.run([TQ, "keys", str(path)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    return str(path)


def env_with(keys: str | None, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("TQDS_CURVE_KEY_DIR", "TQDS_ALLOW_INSECURE")}
    if keys is not None:
        env["TQDS_CURVE_KEY_DIR"] = keys
    env.update(extra)
    return env


def run_python(code: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=120, env=env)


class Service:
    """A `tq` service process, killed by pid at the end."""

    def __init__(self, args: list[str], env: dict):
        self.proc = subprocess.Popen([TQ, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env=env)
        self.lines = [self.proc.stdout.readline()]

    def address(self) -> str:
        assert "listening on" in self.lines[0], self.lines[0] + self.proc.stderr.read()
        return self.lines[0].strip().split("listening on ", 1)[1]

    def stop(self) -> None:
        kill_pid(self.proc.pid)
        self.proc.wait(timeout=30)
        self.proc.stdout.close()
        self.proc.stderr.close()


ROUND_TRIP = """
    import torch
    from tensordict import TensorDict
    import transfer_queue as tq
    from transfer_queue import ZMQServerInfo
    try:
        c = tq.TransferQueueClient(client_id="auth-test", controller_info=ZMQServerInfo.from_address({address!r}))
        c.initialize_storage_manager(manager_type="SimpleStorageManager", config={{}})
        c.put(TensorDict({{"x": torch.arange(6).reshape(3, 2)}}, batch_size=[3]), partition_id="p")
        got = c.get_data(c.get_meta(["x"], 3, "p", task_name="t"))
        print("ROUND TRIP", got["x"].tolist())
    except Exception as e:
        print("ERROR", type(e).__name__, e)
"""


@pytest.fixture
def keyed_controller(tmp_path):
    keys = make_keys(tmp_path / "keys")
    svc = Service(["controller", "--host", "127.0.0.1", "--storage-units", "1"], env_with(keys))
    try:
        yield keys, svc.address()
    finally:
        svc.stop()


def test_key_holders_move_data_and_others_are_refused_by_name(keyed_controller, tmp_path):
    keys, address = keyed_controller
    ok = run_python(ROUND_TRIP.format(address=address), env_with(keys))
    assert "ROUND TRIP [[0, 1], [2, 3], [4, 5]]" in ok.stdout, ok.stdout + ok.stderr

    plain = run_python(ROUND_TRIP.format(address=address), env_with(None))
    assert "ERROR" in plain.stdout and "PermissionDenied" in plain.stdout, plain.stdout + plain.stderr
    assert "TQDS_CURVE_KEY_DIR" in plain.stdout, plain.stdout

    # Another deployment's client key, with this deployment's server key: the
    # server's authenticator refuses it.
    other = make_keys(tmp_path / "other")
    shutil.copy(os.path.join(keys, "server.key"), os.path.join(other, "server.key"))
    os.remove(os.path.join(other, "server.key_secret"))
    stranger = run_python(ROUND_TRIP.format(address=address), env_with(other))
    assert "refused this process's client key" in stranger.stdout, stranger.stdout + stranger.stderr

    # Authorizing that key (a new client of the deployment) lets it in, at a
    # controller started with the new list.
    with open(os.path.join(keys, "authorized_clients"), "a") as f:
        f.write(open(os.path.join(other, "client.key")).read())
    again = Service(["controller", "--host", "127.0.0.1", "--storage-units", "1"], env_with(keys))
    try:
        welcome = run_python(ROUND_TRIP.format(address=again.address()), env_with(other))
        assert "ROUND TRIP [[0, 1], [2, 3], [4, 5]]" in welcome.stdout, welcome.stdout + welcome.stderr
    finally:
        again.stop()


def test_an_unkeyed_storage_unit_cannot_register(keyed_controller):
    keys, address = keyed_controller
    r = subprocess.run([TQ, "storage-unit", "--controller", address], capture_output=True, text=True,
                       timeout=60, env=env_with(None))
    assert r.returncode != 0
    assert "PermissionDenied" in r.stderr and "registering with controller" in r.stderr, r.stderr


def test_a_non_loopback_address_needs_keys_or_consent(tmp_path):
    r = subprocess.run([TQ, "controller", "--host", "0.0.0.0"], capture_output=True, text=True, timeout=60,
                       env=env_with(None))
    assert r.returncode != 0
    assert "refusing to serve on tcp://0.0.0.0" in r.stderr and "without authentication" in r.stderr, r.stderr

    consent = Service(["controller", "--host", "0.0.0.0", "--allow-insecure"], env_with(None))
    try:
        assert consent.address().startswith("tcp://0.0.0.0:")
    finally:
        consent.stop()

    keyed = Service(["controller", "--host", "0.0.0.0", "--curve-key-dir", make_keys(tmp_path / "k")],
                    env_with(None))
    try:
        assert keyed.address().startswith("tcp://0.0.0.0:")
    finally:
        keyed.stop()


def test_consent_is_logged_as_a_warning():
    proc = subprocess.Popen([TQ, "controller", "--host", "0.0.0.0", "--storage-units", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env_with(None, TQDS_ALLOW_INSECURE="1"))
    try:
        assert "listening on" in proc.stdout.readline()
    finally:
        kill_pid(proc.pid)
        _, err = proc.communicate(timeout=30)
    assert "WITHOUT authentication (allowed explicitly)" in err, err


KV = """
    from yr.datasystem import KVClient
    try:
        kv = KVClient({host!r}, {port})
        kv.init()
        kv.set("k", b"v" * 100)
        print("GOT", kv.get(["k"])[0] == b"v" * 100)
    except Exception as e:
        print("ERROR", type(e).__name__, e)
"""


def test_datasystem_worker_with_curve_flags(tmp_path):
    """dscli start -w --enable_curve_zmq true --curve_key_dir DIR (openYuanrong's
    flags): tcp clients with the keys work, others are refused by name;
    dscli stop needs the keys too."""
    keys = make_keys(tmp_path / "keys")
    w = DsWorker(shared_memory_mb=64, extra_args=["--enable_curve_zmq", "true", "--curve_key_dir", keys])
    try:
        ok = run_python(KV.format(host=w.host, port=w.port), env_with(keys))
        assert "GOT True" in ok.stdout, ok.stdout + ok.stderr
        plain = run_python(KV.format(host=w.host, port=w.port), env_with(None))
        assert "ERROR" in plain.stdout and "authentication" in plain.stdout, plain.stdout + plain.stderr
        stop = subprocess.run(["dscli", "stop", "--worker_address", w.address, "--timeout_s", "10"],
                              capture_output=True, text=True, timeout=30, env=env_with(keys))
        assert stop.returncode == 0 and "[  OK  ]" in stop.stdout, stop.stdout + stop.stderr
        w.pid = None
    finally:
        w.stop()


def test_dscli_refuses_a_plain_non_loopback_worker_and_names_the_flags():
    port = free_port()
    r = subprocess.run(["dscli", "start", "-w", "--worker_address", f"127.0.0.1:{port}", "--bind_address",
                        f"0.0.0.0:{port}", "--shared_memory_size_mb", "64"], capture_output=True, text=True,
                       timeout=60, env=env_with(None))
    out = r.stdout + r.stderr
    assert r.returncode != 0 and "[  FAILED  ]" in out, out
    assert "without authentication" in out and "--allow_insecure" in out, out
    m = re.search(r"PID: (\d+)", out)
    if m:  # pragma: no cover (it must not have started)
        kill_pid(int(m.group(1)))
    with pytest.raises(RuntimeError, match="enable_curve_zmq needs --curve_key_dir"):
        DsWorker(shared_memory_mb=64, extra_args=["--enable_curve_zmq", "true"])


YR_OWN_KEYS = """
    from yr.datasystem import KVClient
    def attempt(**keys):
        try:
            kv = KVClient({host!r}, {port}, **keys)
            kv.init()
            kv.set("own", b"k" * 10)
            return "GOT " + str(kv.get(["own"])[0] == b"k" * 10)
        except Exception as e:
            return "ERROR " + type(e).__name__ + " " + str(e)
    print("OWN", attempt(client_public_key={cpub!r}, client_private_key={csec!r}, server_public_key={spub!r}))
    print("WRONGSERVER", attempt(client_public_key={cpub!r}, client_private_key={csec!r}, server_public_key={cpub!r}))
    print("PARTIAL", attempt(client_public_key={cpub!r}))
    print("NOTAKEY", attempt(client_public_key="not-a-key", client_private_key={csec!r}, server_public_key={spub!r}))
    print("NONE", attempt())
"""


def test_yr_client_with_its_own_curve_keys(tmp_path):
    """openYuanrong's KVClient(client_public_key=, client_private_key=,
    server_public_key=): a client with the deployment's keys passed as
    arguments (no TQDS_CURVE_KEY_DIR) reaches a keyed worker; the wrong server
    key, a partial set, a string that is not a key, or no keys at all are
    refused, each saying why."""
    keys = make_keys(tmp_path / "keys")
    read = lambda name: open(os.path.join(keys, name)).read().strip()  # noqa: E731
    w = DsWorker(shared_memory_mb=64, extra_args=["--enable_curve_zmq", "true", "--curve_key_dir", keys])
    try:
        code = YR_OWN_KEYS.format(host=w.host, port=w.port, cpub=read("client.key"), csec=read("client.key_secret"),
                                  spub=read("server.key"))
        r = run_python(code, env_with(None))
        out = dict(line.split(" ", 1) for line in r.stdout.splitlines() if " " in line)
        assert out.get("OWN") == "GOT True", r.stdout + r.stderr
        assert out["WRONGSERVER"].startswith("ERROR") and "authentication" in out["WRONGSERVER"], r.stdout
        assert "server public key this client was given" in out["WRONGSERVER"], r.stdout
        assert "client_private_key, server_public_key missing" in out["PARTIAL"], r.stdout
        assert "client_public_key is not a Z85 CURVE key" in out["NOTAKEY"], r.stdout
        assert out["NONE"].startswith("ERROR") and "authentication" in out["NONE"], r.stdout
    finally:
        w.stop()
