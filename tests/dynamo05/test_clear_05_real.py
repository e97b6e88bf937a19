"""clear-namespace against what a real Dynamo 0.5.0 stack leaves behind when everything of the run,
dynlaunch included, is SIGKILLed (external etcd and NATS, so that the state outlives the run)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from launcher_run import REPO, Launcher, chat_ok

from testkit import procs
from testkit.etcd import Gateway, PrivateEtcd
from testkit.net import free_port, poll_for

pytestmark = pytest.mark.integration


class Nats:
    """A real nats-server with JetStream on free loopback ports, data under ``root``."""

    def __init__(self, root: Path) -> None:
        self.port, self.monitor = free_port(), free_port()
        self.url = f"nats://127.0.0.1:{self.port}"
        binary = (
            "/usr/sbin/nats-server" if os.path.exists("/usr/sbin/nats-server") else "nats-server"
        )
        argv = [binary, "-a", "127.0.0.1", "-p", str(self.port), "-m", str(self.monitor)]
        argv += ["-js", "-sd", str(root / "nats")]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        poll_for(self.healthy, 30, "nats-server to answer")

    def healthy(self) -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{self.monitor}/healthz", timeout=2).is_success
        except httpx.HTTPError:
            return False

    def streams(self) -> set[str]:
        """Stream names, from the server's own monitoring endpoint."""
        data = httpx.get(f"http://127.0.0.1:{self.monitor}/jsz?streams=true", timeout=10).json()
        return {
            s["name"] for a in data.get("account_details", []) for s in a.get("stream_detail", [])
        }

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(20)


@pytest.fixture
def infra(tmp_path: Path) -> Iterator[tuple[PrivateEtcd, Nats]]:
    etcd = PrivateEtcd(tmp_path / "etcd").start()
    nats = Nats(tmp_path)
    yield etcd, nats
    nats.stop()
    etcd.stop()


def ready(launcher: Launcher) -> None:
    try:
        launcher.wait_ready()
    except AssertionError as err:
        raise AssertionError(f"{err}\n{launcher.dump()}") from None


def test_sigkill_of_everything_then_clear_then_up_serves(
    infra: tuple[PrivateEtcd, Nats], tmp_path: Path, dynamo05_python: Path
) -> None:
    etcd, nats = infra
    gateway = Gateway(etcd.url)
    ns, port = f"k05-{uuid.uuid4().hex[:8]}", free_port()
    env = {
        "DYNLAUNCH_DYNAMO__PYTHON": str(dynamo05_python),
        "ETCD_ENDPOINTS": etcd.url,
        "NATS_SERVER": nats.url,
    }
    args = ["mocker", "--workers", "2", "--namespace", ns, "--http-port", str(port)]
    first = Launcher(args, tmp_path / "first", env)
    try:
        ready(first)
        kv_events = f"namespace-{ns}-component-backend-kv-events"
        # The mockers create it about a second after they start: a run that has served a while.
        poll_for(lambda: {"OBJ_tiny", kv_events} <= nats.streams(), 60, "the 0.5 streams")
        run_id = str(first.info()["run_id"])
        tagged = procs.tagged_pids(run_id)
        for pid in [first.proc.pid, *tagged]:  # everything at once, dynlaunch included
            os.kill(pid, signal.SIGKILL)
        poll_for(lambda: not procs.tagged_pids(run_id), 30, "no process of the run")
    finally:
        first.kill()
    assert {"OBJ_tiny", kv_events} <= nats.streams()
    assert gateway.get("mdc/tiny") is not None
    # 0.5 never revokes a lease itself: the dead workers' keys stay for their 10 s TTL, and the
    # clear runs within it. Their owners are judged by NATS: no live instance of the
    # service advertises their subjects.
    stale = gateway.dump(f"instances/{ns}/")
    assert len({kv[2] for kv in stale}) == 2, stale  # each worker's lease, still alive
    done = subprocess.run(
        [sys.executable, "-m", "launcher", "clear-namespace", "--namespace", ns, "--json",
         "--etcd", etcd.url, "--nats", nats.url],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    removed = {item["key"] for item in json.loads(done.stdout)["removed"]}
    assert {"mdc/tiny", "OBJ_tiny", kv_events} <= removed, done.stdout
    assert gateway.get("mdc/tiny") is None
    assert gateway.dump(f"instances/{ns}/") == []
    models = [json.loads(kv[1]) for kv in gateway.dump("models/")]
    assert not [m for m in models if m["endpoint"]["namespace"] == ns], models
    assert not {"OBJ_tiny", kv_events} & nats.streams()

    second = Launcher(args, tmp_path / "second", env)
    try:
        ready(second)
        assert chat_ok(port)
        assert not any("Missing model deployment card" in line for line in second.out), (
            second.dump()
        )
        assert second.stop(signal.SIGTERM) == 0, second.dump()
    finally:
        second.kill()


def test_external_nats_fencing_asks_the_services(
    infra: tuple[PrivateEtcd, Nats], tmp_path: Path, dynamo05_python: Path
) -> None:
    """With an external NATS, dynlaunch knows no monitoring port: the dead worker's lease is
    found by asking $SRV.INFO which subjects the live instances advertise."""
    etcd, nats = infra
    gateway = Gateway(etcd.url)
    ns, port = f"f05-{uuid.uuid4().hex[:8]}", free_port()
    env = {
        "DYNLAUNCH_DYNAMO__PYTHON": str(dynamo05_python),
        "ETCD_ENDPOINTS": etcd.url,
        "NATS_SERVER": nats.url,
    }
    args = ["mocker", "--workers", "2", "--namespace", ns, "--http-port", str(port)]
    launcher = Launcher(args, tmp_path / "run", env)
    try:
        ready(launcher)
        before = {kv[2] for kv in gateway.dump(f"instances/{ns}/")}
        assert len(before) == 2
        victim = launcher.child_pid("worker-0")
        os.kill(victim, signal.SIGKILL)
        poll_for(lambda: launcher.stderr_has(f"worker-0 pid={victim}: fenced"), 30, "fenced")
        gone = before - gateway.leases()
        assert len(gone) == 1, launcher.dump()  # revoked, well within the 10 s TTL
        assert launcher.stop(signal.SIGTERM) == 0, launcher.dump()
    finally:
        launcher.kill()
