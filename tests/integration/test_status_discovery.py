"""`dynlaunch status` and `status --json` say which discovery the run's Dynamo processes use: etcd
for a whole stack (`up`), and for a pod what the operator gave it. Checked against the real
worker's environment in /proc."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from launcher_run import REPO, Launcher, up_mocker

from testkit import procs
from testkit.net import poll_for

pytestmark = pytest.mark.integration

NO_FENCING = "no stale-only clear and no fencing (they act on etcd discovery only)"


def status_text(launcher: Launcher) -> str:
    argv = [sys.executable, "-m", "launcher", "status", "--state-dir", str(launcher.state_dir)]
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=60, check=True)
    return done.stdout


def test_a_whole_stack_says_etcd(started: list[Any], tmp_path: Path) -> None:
    launcher, _ = up_mocker(started, tmp_path)
    launcher.wait_ready()
    report = launcher.status()
    assert report["launcher"]["discovery"] == "etcd"
    assert "discovery: etcd" in status_text(launcher).splitlines()
    worker = next(c for c in report["children"] if c["role"] == "worker")
    assert procs.environ(worker["pid"])["DYN_DISCOVERY_BACKEND"] == "etcd"
    assert launcher.stop() == 0


@pytest.fixture
def api_server() -> Iterator[int]:
    """A Kubernetes API address that accepts connections and never answers: Dynamo's discovery
    client waits on it, so the pod's run lasts long enough to be asked for its status."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        yield int(sock.getsockname()[1])


def test_a_worker_pod_with_kubernetes_discovery(
    started: list[Any], tmp_path: Path, api_server: int
) -> None:
    kube = tmp_path / ".kube"  # HOME is tmp_path: Dynamo reads ~/.kube/config outside a cluster
    kube.mkdir()
    (kube / "config").write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        f"clusters: [{{name: c, cluster: {{server: 'http://127.0.0.1:{api_server}'}}}}]\n"
        "contexts: [{name: c, context: {cluster: c, user: u, namespace: dynamo-cloud}}]\n"
        "users: [{name: u, user: {token: t}}]\n"
    )
    pod = {  # a default 1.x platform: the operator's discovery and namespaces, no etcd or NATS
        "DYN_DISCOVERY_BACKEND": "kubernetes",
        "DYN_NAMESPACE": "ns-dgd",
        "DYN_NAMESPACE_WORKER_SUFFIX": "a1b2c3",
        "POD_NAME": "ns-dgd-mockerworker-0",
        "POD_NAMESPACE": "dynamo-cloud",
        "POD_UID": "0b0e8a9e-5c1f-4d7e-9a65-7d1f1b1f0c01",
        "DYN_TCP_RPC_HOST": "127.0.0.1",
        "DYN_SYSTEM_HOST": "127.0.0.1",
        "DYN_TCP_RESPONSE_STREAM_HOST": "lo",
    }
    launcher = Launcher(["mocker", "--role", "worker"], tmp_path, env=pod)
    started.append(launcher)
    reports: list[dict[str, Any]] = []

    def worker_running() -> bool:
        if launcher.proc.poll() is not None:
            raise AssertionError(f"dynlaunch exited {launcher.proc.returncode}:\n{launcher.dump()}")
        if not (launcher.state_dir / "status.json").exists():
            return False
        reports.append(launcher.status())
        return any(c["pid"] for c in reports[-1]["children"])

    poll_for(worker_running, 120, "the worker pod's worker to run")
    line = f"kubernetes (DYN_DISCOVERY_BACKEND), namespace ns-dgd-a1b2c3; {NO_FENCING}"
    assert reports[-1]["launcher"]["discovery"] == line
    assert f"discovery: {line}" in status_text(launcher).splitlines()
    (worker,) = reports[-1]["children"]
    env = procs.environ(worker["pid"])  # what the worker really runs with
    assert env["DYN_DISCOVERY_BACKEND"] == "kubernetes"
    assert "ETCD_ENDPOINTS" not in env
    assert env["DYN_NAMESPACE"] == "ns-dgd-a1b2c3"
    assert json.loads((launcher.state_dir / "launcher.json").read_text())["discovery"] == line
