"""A role pod on a default Dynamo 1.x platform: the operator gives it Kubernetes discovery
(DYN_DISCOVERY_BACKEND=kubernetes) and no etcd or NATS. dynlaunch must not ask for them, wait for
them or act on them: it says which discovery the pod has and hands the process to Dynamo, which
here (no cluster) stops at its own first Kubernetes step: reading the pod's name."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from launcher_run import REPO, up_env

from testkit.net import free_port

pytestmark = pytest.mark.integration


def test_frontend_pod_with_kubernetes_discovery_needs_no_etcd(tmp_path: Path) -> None:
    env = up_env(tmp_path, {"DYN_DISCOVERY_BACKEND": "kubernetes", "DYN_NAMESPACE": "ns-dgd"})
    argv = [sys.executable, "-m", "launcher", "up", "mocker", "--role", "frontend",
            "--http-port", str(free_port()), "--state-dir", str(tmp_path / "state")]  # fmt: skip
    done = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    err = done.stderr
    assert "discovery: kubernetes (DYN_DISCOVERY_BACKEND), namespace ns-dgd" in err, err
    assert "no stale-only clear and no fencing" in err, err
    assert "ETCD_ENDPOINTS" not in err, err
    assert "unreachable" not in err, err
    # Dynamo's frontend ran and reached its Kubernetes discovery (nothing of etcd in between).
    log = (tmp_path / "state" / "logs" / "frontend.log").read_text()
    assert "POD_NAME not available" in log, log[-2000:]
    assert done.returncode == 3, err
