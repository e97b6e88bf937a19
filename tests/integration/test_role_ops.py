"""Operations in role mode, as in two pods: a frontend-role and a worker-role `dynlaunch up`
(separate state dirs) against real etcd and NATS (tests/integration/test_roles.py's infra). Under
a steady request stream through the frontend pod, the worker pod's launcher scales its own
workers 1 -> 2 -> 1 and restarts them: no request fails, and the frontend sees the right number
of instances each time (its own /health, and etcd's JSON gateway). What makes no sense in a pod
(restart --role frontend in the worker pod, scale in the frontend pod) is refused with one line,
exit 2, nothing touched."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import test_roles
from launcher_run import Launcher, Load

from testkit import procs
from testkit.etcd import Gateway
from testkit.net import free_port, poll_for

pytestmark = pytest.mark.integration
infra = test_roles.infra  # real etcd and nats-server on loopback, like the operator's


def _frontend_instances(port: int) -> int:
    """Generate instances the frontend itself knows (its /health)."""
    body = httpx.get(f"http://127.0.0.1:{port}/health", timeout=10).json()
    return sum(1 for i in body.get("instances", []) if i.get("endpoint") == "generate")


def _etcd_instances(env: dict[str, str]) -> int:
    prefix = f"v1/instances/{env['DYN_NAMESPACE']}/backend/generate/"
    return len(Gateway(env["ETCD_ENDPOINTS"]).dump(prefix))


def _workers(launcher: Launcher) -> dict[str, int]:
    return {c["name"]: c["pid"] for c in launcher.status()["children"] if c["role"] == "worker"}


def _sees(port: int, env: dict[str, str], count: int, what: str) -> None:
    """Etcd holds ``count`` generate instances, and the frontend pod knows that many."""
    assert _etcd_instances(env) == count, what  # registered before the command reported
    poll_for(lambda: _frontend_instances(port) == count, 60, f"the frontend to see {what}")


def _more_requests(load: Load, n: int = 10) -> None:
    after = len(load.results)
    poll_for(lambda: len(load.results) >= after + n, 120, f"{n} more requests")


def test_a_worker_pod_scales_and_restarts_its_own_workers_under_load(
    infra: dict[str, str], tmp_path: Path
) -> None:
    launchers: list[Launcher] = []
    try:
        worker = Launcher(["mocker", "--role", "worker"], tmp_path / "w", env=infra)
        launchers.append(worker)
        worker.wait_ready()
        port = free_port()
        frontend = Launcher(["mocker", "--role", "frontend", "--http-port", str(port)],
                            tmp_path / "f", env=infra)  # fmt: skip
        launchers.append(frontend)
        frontend.wait_ready()
        _sees(port, infra, 1, "1 instance")
        load = Load(port, clients=3)
        _more_requests(load)

        up = worker.cli(tmp_path, "scale", "--workers", "2")
        assert up.returncode == 0, up.stdout + up.stderr + worker.dump()
        added = _workers(worker)["worker-1"]
        assert procs.ppid(added) == worker.proc.pid  # /proc: a child of the worker pod's launcher
        _sees(port, infra, 2, "2 instances after scale --workers 2")
        _more_requests(load)

        down = worker.cli(tmp_path, "scale", "--workers", "1")
        assert down.returncode == 0, down.stdout + down.stderr + worker.dump()
        assert procs.state(added) is None  # stopped and reaped
        _sees(port, infra, 1, "1 instance after scale --workers 1")
        _more_requests(load)

        first = _workers(worker)["worker-0"]
        again = worker.cli(tmp_path, "restart")
        assert again.returncode == 0, again.stdout + again.stderr + worker.dump()
        new = _workers(worker)
        assert set(new) == {"worker-0.g2"}, new
        assert procs.ppid(new["worker-0.g2"]) == worker.proc.pid
        assert procs.state(first) is None
        _sees(port, infra, 1, "1 instance after the restart")
        _more_requests(load)
        results = load.stop()
        assert Load.failed(results) == 0, f"{Load.failed(results)} of {len(results)} failed"
        assert frontend.starts("frontend") == 1  # the frontend pod was never touched
        assert frontend.stop() == 0
        assert worker.stop() == 0
    finally:
        for launcher in launchers:
            launcher.kill()


def test_a_pod_refuses_operations_on_processes_it_does_not_run(
    infra: dict[str, str], tmp_path: Path
) -> None:
    launchers: list[Launcher] = []
    try:
        worker = Launcher(["mocker", "--role", "worker"], tmp_path / "w", env=infra)
        launchers.append(worker)
        port = free_port()
        frontend = Launcher(["mocker", "--role", "frontend", "--http-port", str(port)],
                            tmp_path / "f", env=infra)  # fmt: skip
        launchers.append(frontend)
        worker.wait_ready()
        frontend.wait_ready()
        pods = {"worker": worker, "frontend": frontend}
        before = {role: {c["name"]: c["pid"] for c in pod.status()["children"]}
                  for role, pod in pods.items()}  # fmt: skip
        asks = [(worker, ["restart", "--role", "frontend"], "this is a worker pod"),
                (frontend, ["scale", "--workers", "2"], "this is a frontend pod"),
                (frontend, ["restart", "--role", "worker"], "this is a frontend pod")]  # fmt: skip
        for pod, args, text in asks:
            done = pod.cli(tmp_path, *args)
            assert done.returncode == 2, done.stdout + done.stderr
            error = done.stderr.strip()
            assert error.startswith("dynlaunch: error: "), error
            assert "\n" not in error, error
            assert text in error, error
            assert "nothing was changed" in error, error
            assert "Traceback" not in done.stderr
        after = {role: {c["name"]: c["pid"] for c in pod.status()["children"]}
                 for role, pod in pods.items()}  # fmt: skip
        assert after == before
        for role, pod in pods.items():  # /proc: the same processes, still the pod's children
            assert all(procs.ppid(pid) == pod.proc.pid for pid in after[role].values())
        assert worker.starts("worker-0.g2") == frontend.starts("frontend.g2") == 0
        assert worker.starts("worker-1") == 0
        assert frontend.stop() == 0
        assert worker.stop() == 0
    finally:
        for launcher in launchers:
            launcher.kill()
