"""A worker that ends during start-up without a word is explained: here its endpoint already
serves another model (registered by a mocker dynlaunch did not start), which Dynamo refuses and
its mocker swallows (it exits 0, nothing logged). Real etcd, NATS and Dynamo 1.4.2 mockers."""

from __future__ import annotations

import os
import random
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from launcher_run import REPO, up_env

from launcher import tinymodel
from testkit.etcd import Gateway, PrivateEtcd
from testkit.net import accepts, free_port, poll_for

pytestmark = pytest.mark.integration


@pytest.fixture
def infra(tmp_path: Path) -> Iterator[dict[str, str]]:
    etcd = PrivateEtcd(tmp_path / "etcd").start()
    port = free_port()
    nats = subprocess.Popen(
        ["nats-server", "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", str(tmp_path / "js")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        poll_for(lambda: accepts(port), 20, "NATS")
        yield {"ETCD_ENDPOINTS": etcd.url, "NATS_SERVER": f"nats://127.0.0.1:{port}"}
    finally:
        nats.terminate()
        nats.wait(10)
        etcd.stop()


def low_port() -> int:
    """A free 127.0.0.1 port Dynamo takes as DYN_SYSTEM_PORT (a signed 16-bit number); the
    kernel's own picks lie above 32767."""
    for port in random.sample(range(20000, 32768), 200):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise AssertionError("no free port in 20000-32767")


def test_endpoint_taken_by_another_model_is_named(infra: dict[str, str], tmp_path: Path) -> None:
    ns = f"taken-{uuid.uuid4().hex[:6]}"
    model = tmp_path / "tiny"
    tinymodel.make(model)
    system = low_port()
    squatter_env = os.environ | infra | {
        "DYN_NAMESPACE": ns, "DYN_SYSTEM_PORT": str(system), "DYN_SYSTEM_HOST": "127.0.0.1",
        "DYN_TCP_RPC_HOST": "127.0.0.1", "DYN_EVENT_PLANE": "nats", "DYN_DISCOVERY_BACKEND": "etcd",
        "DYN_EVENT_PLANE_HOST": "127.0.0.1", "DYN_TCP_RESPONSE_STREAM_HOST": "lo",
    }  # fmt: skip
    squatter = subprocess.Popen(
        [sys.executable, "-m", "dynamo.mocker", "--model-path", str(model),
         "--model-name", "alpha", "--endpoint", f"dyn://{ns}.backend.generate"],
        env=squatter_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        gateway = Gateway(infra["ETCD_ENDPOINTS"])
        card = f"v1/mdc/{ns}/backend/generate/"
        poll_for(lambda: bool(gateway.dump(card)), 60, "alpha's card")
        state = str(tmp_path / "state")
        argv = [sys.executable, "-m", "launcher", "up", "mocker", "--namespace", ns,
                "--http-port", str(free_port()), "--state-dir", state]  # fmt: skip
        done = subprocess.run(
            argv, cwd=REPO, env=up_env(tmp_path, infra), capture_output=True, text=True,
            timeout=180,
        )  # fmt: skip
        last = done.stderr.strip().splitlines()[-1]
        assert done.returncode == 3, done.stderr
        assert "worker-0 exited with code 0 during startup" in last, last
        assert f"dyn://{ns}.backend.generate already serves model 'alpha'" in last, last
        assert "Dynamo refuses a second model ('tiny') on one endpoint" in last, last
        # The squatter was never touched: it still runs and is registered, its system port up.
        assert squatter.poll() is None
        assert len(gateway.dump(f"v1/instances/{ns}/backend/generate/")) == 1
        assert httpx.get(f"http://127.0.0.1:{system}/live", timeout=5).status_code in (200, 503)
    finally:
        squatter.kill()
        squatter.wait(10)
