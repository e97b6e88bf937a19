"""Role pods read what the operator injects (launcher.k8s.podenv): which discovery, which
namespace a worker registers in and a frontend watches, and what the plan then leaves alone.
A table of pod environments (0.5 and 1.x operators, default and etcd platforms), then the real
`dynlaunch plan mocker --role ...` (a subprocess) in such an environment, read from its JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from launcher.k8s import podenv
from testkit.net import free_port

from .test_k8s_cli import run_cli

NS = "dynamo-cloud-sglang"  # what the 1.x operator computes for DGD sglang in dynamo-cloud
V1_DEFAULT = {  # a default 1.x platform: Kubernetes discovery, no etcd, no NATS
    "DYN_NAMESPACE": NS,
    "DYN_DISCOVERY_BACKEND": "kubernetes",
}
V1_FRONTEND = V1_DEFAULT | {"DYN_NAMESPACE_PREFIX": NS}
V1_WORKER = V1_DEFAULT | {"DYN_NAMESPACE_WORKER_SUFFIX": "a1b2c3d4"}
V1_ETCD_WORKER = V1_WORKER | {
    "DYN_DISCOVERY_BACKEND": "etcd",
    "ETCD_ENDPOINTS": "http://etcd.dynamo-system:2379",
    "NATS_SERVER": "nats://nats.dynamo-system:4222",
}
V05 = {  # 0.5: dynamoNamespace, etcd and NATS; no discovery backend (Dynamo's default, etcd)
    "DYN_NAMESPACE": "sglang",
    "ETCD_ENDPOINTS": "http://etcd.dynamo-cloud:2379",
    "NATS_SERVER": "nats://nats.dynamo-cloud:4222",
}


@pytest.mark.parametrize(
    ("environ", "role", "discovery", "namespace", "needs", "fencing"),
    [
        (V05, "frontend", "etcd", "sglang", ("ETCD_ENDPOINTS", "NATS_SERVER"), True),
        (V05, "worker", "etcd", "sglang", ("ETCD_ENDPOINTS", "NATS_SERVER"), True),
        (V1_FRONTEND, "frontend", "kubernetes", NS, (), False),
        (V1_WORKER, "worker", "kubernetes", f"{NS}-a1b2c3d4", (), False),
        (V1_WORKER, "frontend", "kubernetes", NS, (), False),  # the suffix is a worker's
        (V1_ETCD_WORKER, "worker", "etcd", f"{NS}-a1b2c3d4", ("ETCD_ENDPOINTS", "NATS_SERVER"),
         True),
        ({}, "worker", "etcd", None, ("ETCD_ENDPOINTS", "NATS_SERVER"), True),
        ({"DYN_DISCOVERY_BACKEND": "Kubernetes"}, "worker", "kubernetes", None, (), False),
    ],
)  # fmt: skip
def test_what_a_pod_has(
    environ: dict[str, str],
    role: str,
    discovery: str,
    namespace: str | None,
    needs: tuple[str, ...],
    fencing: bool,
) -> None:
    pod = podenv.read(environ)
    assert (pod.discovery, pod.namespace_for(role), pod.needs()) == (discovery, namespace, needs)
    assert pod.uses_etcd is fencing
    line = pod.describe(role)
    assert line.startswith(f"{discovery} (")
    assert ("no stale-only clear and no fencing" in line) is not fencing
    if role == "frontend" and pod.prefix:
        assert f"watching namespaces {NS}*" in line


def _plan(role: str, environ: dict[str, str], home: Path) -> dict[str, Any]:
    # a free --http-port: plan checks that the frontend's port is free (8000 may be in use here)
    port = ["--http-port", str(free_port())]
    result = run_cli(["plan", "mocker", "--role", role, "--json", *port], home, environ)
    assert result.returncode == 0, result.stderr
    plan: dict[str, Any] = json.loads(result.stdout)
    return plan


def test_worker_pod_on_a_default_1x_platform(tmp_path: Path) -> None:
    """No etcd, no NATS: the plan needs neither and sets neither; it registers under the suffixed
    namespace once (the child's suffix variable is emptied) and keeps the operator's backend."""
    plan = _plan("worker", V1_WORKER | {"DYN_SYSTEM_PORT": "9090"}, tmp_path)
    assert plan["namespace"] == f"{NS}-a1b2c3d4"
    (proc,) = plan["processes"]
    env = proc["env"]
    for name in ("ETCD_ENDPOINTS", "NATS_SERVER", "DYN_DISCOVERY_BACKEND", "DYN_EVENT_PLANE"):
        assert name not in env, name  # inherited from the pod, or left to Dynamo
    assert env["DYN_NAMESPACE"] == f"{NS}-a1b2c3d4"
    assert env["DYN_NAMESPACE_WORKER_SUFFIX"] == ""
    assert "DYN_SYSTEM_STARTING_HEALTH_STATUS" not in env
    argv = proc["argv"]
    assert argv[argv.index("--endpoint") + 1] == f"dyn://{NS}-a1b2c3d4.backend.generate"


def test_frontend_pod_on_a_default_1x_platform(tmp_path: Path) -> None:
    plan = _plan("frontend", V1_FRONTEND, tmp_path)
    (proc,) = plan["processes"]
    assert "--namespace" not in proc["argv"]  # the operator's prefix decides what it watches
    assert "ETCD_ENDPOINTS" not in proc["env"]
    assert "DYN_DISCOVERY_BACKEND" not in proc["env"]


def test_etcd_discovery_still_needs_etcd_and_nats(tmp_path: Path) -> None:
    environ = {"DYN_NAMESPACE": NS, "DYN_DISCOVERY_BACKEND": "etcd"}
    result = run_cli(["plan", "mocker", "--role", "worker", "--json"], tmp_path, environ)
    assert result.returncode == 2, result.stderr
    assert "needs ETCD_ENDPOINTS and NATS_SERVER" in result.stderr
    plan = _plan("worker", V1_ETCD_WORKER | {"DYN_SYSTEM_PORT": "9090"}, tmp_path)
    (proc,) = plan["processes"]
    assert proc["env"]["ETCD_ENDPOINTS"] == V1_ETCD_WORKER["ETCD_ENDPOINTS"]
