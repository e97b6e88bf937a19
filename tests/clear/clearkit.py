"""clear-namespace test helpers: real servers, the real CLI, keys as Dynamo writes them."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import nats

from launcher.registrations.etcd import Etcd

REPO = Path(__file__).resolve().parents[2]


def poll_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.1)


class Server:
    """A child process in its own session; stopped by its pid (SIGTERM, then SIGKILL)."""

    def __init__(self, argv: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.log = log
        self._out = open(log, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            argv, stdout=self._out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: the way a worker dies without cleaning up."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._out.close()

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), 0.5):
            return True
    except OSError:
        return False


@contextmanager
def listening(port: int) -> Iterator[socket.socket]:
    """Something that answers on 127.0.0.1:port, standing in for a live worker's listener."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(16)
    try:
        yield sock
    finally:
        sock.close()


def cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """The real `dynlaunch` command line, in a subprocess."""
    unset = ("ETCD_ENDPOINTS", "NATS_SERVER", "DYN_FILE_KV", "DYN_DISCOVERY_BACKEND")
    full = {k: v for k, v in os.environ.items() if k not in unset}
    full["XDG_STATE_HOME"] = "/nonexistent/dynlaunch-test-state"  # no running `up` to fall back on
    full |= env or {}
    return subprocess.run(
        [sys.executable, "-m", "launcher", *args],
        cwd=REPO, env=full, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def cli_json(*args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    done = cli(*args, "--json", env=env)
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert isinstance(data, dict)
    return data


def dump(etcd: Etcd, prefix: str = "") -> list[tuple[str, bytes, int, int, int]]:
    """Every key under ``prefix`` with value, lease and revisions: equal means untouched."""
    return [tuple(kv) for kv in etcd.get_prefix(prefix)]  # type: ignore[misc]


def removed_keys(report: dict[str, Any]) -> set[str]:
    return {item["key"] for item in report["removed"]}


# -- 1.x keys as Dynamo 1.4.2 writes them ----------------------------------------------------------


def worker_1x(
    ns: str, lease: int, rpc_port: int, system_port: int | None, pub: int = 0
) -> dict[str, dict[str, Any]]:
    """The keys and values one 1.x mocker registers: generate and kv-query instances, its card,
    an event channel and an event source (all on its lease in etcd)."""
    hexid = f"{lease:x}"
    pub = pub or (lease & 0xFFFFFFFFFFFF)
    pubhex = f"{pub:x}"
    tcp = f"127.0.0.1:{rpc_port}/{hexid}"
    card: dict[str, Any] = {"display_name": "tiny", "slug": "tiny"}
    if system_port is not None:
        base = f"http://127.0.0.1:{system_port}/v1/metadata/{ns}/backend/generate/tiny/_base"
        card["model_info"] = {"hf_config_json": {"path": f"{base}/config.json"}}
    scope = {
        "kind": "endpoint",
        "endpoint": {"namespace": ns, "component": "backend", "name": "generate"},
    }
    topic = f"namespace/{ns}/component/backend/endpoint/generate/topic/kv-events/{pubhex}"
    return {
        f"v1/instances/{ns}/backend/generate/{hexid}": {
            "type": "Endpoint", "component": "backend", "endpoint": "generate", "namespace": ns,
            "instance_id": lease, "transport": {"tcp": f"{tcp}/generate"},
        },
        f"v1/instances/{ns}/backend/worker_kv_query_source_{pubhex}/{hexid}": {
            "type": "Endpoint", "component": "backend", "namespace": ns, "instance_id": lease,
            "endpoint": f"worker_kv_query_source_{pubhex}",
            "transport": {"tcp": f"{tcp}/worker_kv_query_source_{pubhex}"},
        },
        f"v1/mdc/{ns}/backend/generate/{hexid}": {
            "type": "Model", "namespace": ns, "instance_id": lease, "card_json": card,
        },
        f"v1/event_channels/{topic}": {
            "type": "EventChannel", "scope": scope, "topic": "kv-events", "instance_id": pub,
            "transport": {"kind": "Nats", "config": {"subject_prefix": f"namespace.{ns}"}},
        },
        f"v1/event_sources/{topic}": {
            "type": "EventSource", "scope": scope, "topic": "kv-events", "publisher_id": pub,
            "metadata": {"worker": {"worker_id": lease, "dp_rank": 0}},
        },
    }  # fmt: skip


def put_worker_1x(
    etcd: Etcd, ns: str, lease: int, rpc_port: int, system_port: int | None, pub: int = 0
) -> list[str]:
    """Write `worker_1x`'s keys on ``lease``; their names."""
    values = worker_1x(ns, lease, rpc_port, system_port, pub)
    for key, value in values.items():
        etcd.put(key, json.dumps(value), lease)
    return sorted(values)


def put_many(etcd: Etcd, items: Mapping[str, Any], batch: int = 128) -> None:
    """Write many lease-less keys (values as JSON) in transactions of ``batch`` puts each (etcd's
    default --max-txn-ops is 128), not one request per key."""
    pairs = list(items.items())
    for start in range(0, len(pairs), batch):
        ops = [
            {"request_put": {"key": b64(key), "value": b64(json.dumps(value))}}
            for key, value in pairs[start : start + batch]
        ]
        url = f"{etcd.endpoints[0]}/v3/kv/txn"
        resp = httpx.post(url, json={"success": ops}, timeout=30, trust_env=False)
        assert resp.status_code == 200, resp.text


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def stale_workers_1x(
    ns: str, count: int, rpc_port: int, system_port: int, first: int = 0x7A000000
) -> dict[str, dict[str, Any]]:
    """``count`` dead 1.x workers' keys, left without a lease (their ports refuse connections)."""
    out: dict[str, dict[str, Any]] = {}
    for n in range(count):
        out |= worker_1x(ns, first + n, rpc_port, system_port)
    return out


def revision(etcd: Etcd) -> int:
    """The store's current revision."""
    return etcd.range_prefix("dynlaunch-test/nothing/")[1]


# -- NATS JetStream fixtures -----------------------------------------------------------------------


def make_streams(url: str, object_stores: list[str], streams: list[str]) -> None:
    """Object stores (each holding a config.json) and plain streams, as Dynamo 0.5 leaves them."""

    async def work() -> None:
        nc = await nats.connect(url, connect_timeout=5)
        try:
            js = nc.jetstream()
            for bucket in object_stores:
                store = await js.create_object_store(bucket)
                await store.put("config.json", b'{"model_type": "llama"}')
            for name in streams:
                await js.add_stream(name=name, subjects=[f"{name}.*"])
                await js.publish(f"{name}.x", b"event")
        finally:
            await nc.close()

    asyncio.run(work())
