"""`up --role frontend` and `up --role worker`, started separately against real etcd and NATS
(as two pods would be), form one stack; restarting the frontend pod does not drop the worker."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from launcher_run import Launcher, chat_ok

from testkit.etcd import PrivateEtcd
from testkit.net import accepts, free_port, poll_for

pytestmark = pytest.mark.integration


@pytest.fixture
def infra(tmp_path: Path) -> Iterator[dict[str, str]]:
    """A real etcd and nats-server on loopback, like the ones the operator runs."""
    etcd = PrivateEtcd(tmp_path / "etcd", name="default").start()
    nats = free_port()
    nats_argv = ["nats-server", "-a", "127.0.0.1", "-p", str(nats), "-js",
                 "-sd", str(tmp_path / "nats")]  # fmt: skip
    server = subprocess.Popen(nats_argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        nats_url = f"nats://127.0.0.1:{nats}"
        poll_for(lambda: accepts(nats), 20, "NATS")
        yield {
            "ETCD_ENDPOINTS": etcd.url,
            "NATS_SERVER": nats_url,
            "DYN_NAMESPACE": f"pods-{uuid.uuid4().hex[:6]}",
            # A pod leaves these to Dynamo (its own IP); on this test host they keep to loopback.
            "DYN_TCP_RPC_HOST": "127.0.0.1",
            "DYN_SYSTEM_HOST": "127.0.0.1",
            "DYN_TCP_RESPONSE_STREAM_HOST": "lo",
            "DYN_EVENT_PLANE_HOST": "127.0.0.1",
        }
    finally:
        etcd.stop()
        server.terminate()
        server.wait(10)


def test_frontend_and_worker_pods_form_one_stack(infra: dict[str, str], tmp_path: Path) -> None:
    launchers: list[Launcher] = []
    try:
        worker = Launcher(["mocker", "--role", "worker"], tmp_path / "w", env=infra)
        launchers.append(worker)
        worker.wait_ready()
        assert worker.stderr_has("worker(s) of 'tiny' healthy")
        assert not worker.stderr_has("etcd pid=")  # a role never starts infra

        port = free_port()
        args = ["mocker", "--role", "frontend", "--http-port", str(port)]
        frontend = Launcher(args, tmp_path / "f1", env=infra)
        launchers.append(frontend)
        frontend.wait_ready()
        poll_for(lambda: chat_ok(port), 30, "the worker pod's model through the frontend pod")
        assert frontend.stop() == 0

        again = Launcher(args, tmp_path / "f2", env=infra)  # the frontend pod restarts
        launchers.append(again)
        again.wait_ready()
        poll_for(lambda: chat_ok(port), 30, "serving again after the frontend restart")
        assert [line for line in worker.err if "worker-0 pid=" in line and "started" in line]
        assert not worker.stderr_has("restart 1")  # the live worker was never dropped
        assert again.stop() == 0
        assert worker.stop() == 0
    finally:
        for launcher in launchers:
            launcher.kill()
