"""End to end: a real Dynamo frontend and two real mockers on etcd and NATS; one mocker is SIGKILLed
and clear-namespace removes exactly its registrations while the other keeps serving."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from clearkit import Server, cli, cli_json, removed_keys

from launcher import tinymodel
from launcher.registrations import lock
from launcher.registrations.etcd import Etcd
from testkit.etcd import Gateway, dump
from testkit.net import poll_for

pytestmark = pytest.mark.integration
MODEL = "tiny"


def _env(tmp: Path, etcd_url: str, nats_url: str, ns: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DYN_", "DYNLAUNCH_"))}
    return env | {
        "ETCD_ENDPOINTS": etcd_url, "NATS_SERVER": nats_url, "DYN_DISCOVERY_BACKEND": "etcd",
        "DYN_EVENT_PLANE": "nats", "DYN_EVENT_PLANE_HOST": "127.0.0.1", "DYN_NAMESPACE": ns,
        "HOME": str(tmp / "home"), "HF_HUB_OFFLINE": "1", "DYN_SDK_DISABLE_ANSI_LOGGING": "1",
        "PYTHONUNBUFFERED": "1",
    }  # fmt: skip


class Stack:
    def __init__(self, tmp: Path, etcd_url: str, nats_url: str, ns: str, ports: list[int]) -> None:
        self.ns, self.http = ns, ports[0]
        self.url = f"http://127.0.0.1:{self.http}"
        model = tmp / "tiny-model"
        tinymodel.make(model)  # what scripts/make_tiny_model.py DIR does
        base = _env(tmp, etcd_url, nats_url, ns)
        self.servers: list[Server] = []
        frontend_env = base | {"DYN_TCP_RESPONSE_STREAM_HOST": "lo",
                               "DYN_TCP_RESPONSE_STREAM_PORT": str(ports[1])}  # fmt: skip
        self.frontend = self._start(
            [sys.executable, "-m", "dynamo.frontend", "--http-host", "127.0.0.1",
             "--http-port", str(self.http), "--namespace", ns, "--router-mode", "round-robin"],
            tmp / "frontend.log", frontend_env,
        )  # fmt: skip
        self.workers: list[Server] = []
        self.rpc: list[int] = []
        self.system: list[int] = []
        for i in range(2):
            system, rpc = ports[2 + 2 * i], ports[3 + 2 * i]
            worker_env = base | {
                "DYN_SYSTEM_HOST": "127.0.0.1", "DYN_SYSTEM_PORT": str(system),
                "DYN_TCP_RPC_HOST": "127.0.0.1", "DYN_TCP_RPC_PORT": str(rpc),
                "DYN_SYSTEM_USE_ENDPOINT_HEALTH_STATUS": '["generate"]',
                # 30 s instead of 1.4.2's 10 s: the killed worker's keys must outlive the checks.
                "ETCD_LEASE_TTL": "30",
            }  # fmt: skip
            self.workers.append(self._start(
                [sys.executable, "-m", "dynamo.mocker", "--model-path", str(model),
                 "--model-name", MODEL, "--block-size", "16",
                 "--endpoint", f"dyn://{ns}.backend.generate"],
                tmp / f"worker-{i}.log", worker_env,
            ))  # fmt: skip
            self.rpc.append(rpc)
            self.system.append(system)

    def _start(self, argv: list[str], log: Path, env: dict[str, str]) -> Server:
        server = Server(argv, log, env)
        self.servers.append(server)
        return server

    def stop(self) -> None:
        for server in reversed(self.servers):
            server.stop()

    def logs(self) -> str:
        return "\n".join(f"--- {s.log.name}\n{s.tail()}" for s in self.servers)

    def instances(self) -> list[int]:
        """Instance ids of this namespace's generate endpoint that the frontend's /health lists
        (the frontend lists every namespace it sees in the shared etcd, not only its own)."""
        try:
            body = httpx.get(f"{self.url}/health", timeout=5).json()
        except (httpx.HTTPError, ValueError):
            return []
        return [
            i["instance_id"]
            for i in body.get("instances", [])
            if i.get("endpoint") == "generate" and i.get("namespace") == self.ns
        ]

    def chat(self) -> int:
        body = {"model": MODEL, "messages": [{"role": "user", "content": "hello"}], "max_tokens": 4}
        try:
            return httpx.post(f"{self.url}/v1/chat/completions", json=body, timeout=30).status_code
        except httpx.HTTPError:
            return 0

    def wait_serving(self, timeout: float) -> None:
        def ready() -> bool:
            for server in self.servers:
                assert server.alive(), f"{server.log.name} exited early\n{self.logs()}"
            return len(self.instances()) == 2 and self.chat() == 200

        try:
            poll_for(ready, timeout, "the frontend to serve with two workers")
        except AssertionError as err:
            raise AssertionError(f"{err}\n{self.logs()}") from None


@pytest.fixture
def stack(
    tmp_path: Path, etcd_url: str, nats_url: str, ns: str, free_ports: list[int]
) -> Iterator[Stack]:
    started = Stack(tmp_path, etcd_url, nats_url, ns, free_ports[10:16])
    try:
        started.wait_serving(90)
        yield started
    finally:
        started.stop()


def test_sigkilled_worker_is_cleared_and_the_other_keeps_serving(
    stack: Stack, etcd: Etcd, gateway: Gateway, etcd_url: str, nats_url: str, ns: str
) -> None:
    dead_lease = lock.lease_of_rpc_port(etcd_url, ns, stack.rpc[1])
    live_lease = lock.lease_of_rpc_port(etcd_url, ns, stack.rpc[0])
    assert dead_lease
    assert live_lease
    assert dead_lease != live_lease
    stack.workers[1].kill()

    # Its registrations outlive it (until its lease expires): instances, card, event keys.
    owned = [kv for kv in dump(etcd, "v1/") if kv[2] == dead_lease]
    assert {k.split("/")[1] for k, *_ in owned} == {
        "instances",
        "mdc",
        "event_channels",
        "event_sources",
    }
    assert dead_lease in stack.instances()
    leases_before = gateway.leases()
    before = dump(etcd)

    dry = cli_json(
        "clear-namespace", "--namespace", ns, "--etcd", etcd_url, "--nats", nats_url, "--dry-run"
    )
    assert removed_keys(dry) == {k for k, *_ in owned} | {f"lease {dead_lease:x}"}
    assert dump(etcd) == before

    report = cli_json("clear-namespace", "--namespace", ns, "--etcd", etcd_url, "--nats", nats_url)
    assert removed_keys(report) == removed_keys(dry)
    lease_item = next(i for i in report["removed"] if i["kind"] == "leases")
    assert (
        f"127.0.0.1:{stack.rpc[1]} and system port 127.0.0.1:{stack.system[1]} refuse"
        in lease_item["reason"]
    )
    assert report["counts"]["instances"] == {"removed": 2, "kept": 2}
    # Only the dead worker's lease went (not the frontend's), and every other key is untouched.
    assert gateway.leases() == leases_before - {dead_lease}
    assert dump(etcd) == [kv for kv in before if kv[2] != dead_lease]

    poll_for(
        lambda: stack.instances() == [live_lease], 10, "the frontend to drop the dead instance"
    )
    assert [stack.chat() for _ in range(4)] == [200] * 4
    assert stack.frontend.alive()
    assert stack.workers[0].alive()

    again = cli_json("clear-namespace", "--namespace", ns, "--etcd", etcd_url, "--nats", nats_url)
    assert again["removed"] == []
    refused = cli("clear-namespace", "--namespace", ns, "--etcd", etcd_url, "--all")
    assert refused.returncode == 2
    assert "live-looking instances" in refused.stderr
    assert stack.chat() == 200
