"""On Dynamo 1.4.2, `router_mode: auto` with 2 workers stays round-robin, `plan` says why, and a
worker SIGKILLed under load fails no request; an explicit kv is allowed and warns. 1.4.2's KV
router fails a dead worker's in-flight requests instead of migrating them (launcher/compat.py,
kv_router_migrates; 1.6.1, the default, migrates: tests/integration/test_kv_migrates.py).
Real etcd, NATS, frontend and mockers of 1.4.2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from launcher_run import REPO, Launcher, Load, sigkill_under_load, up_env, up_mocker

from testkit import procs

pytestmark = pytest.mark.integration


def test_auto_is_round_robin_and_a_killed_worker_fails_no_request(
    started: list[Launcher], tmp_path: Path, dynamo14_python: Path
) -> None:
    env = {"DYNLAUNCH_DYNAMO__PYTHON": str(dynamo14_python)}
    launcher, port = up_mocker(started, tmp_path, "--workers", "2", tag="d14", env=env)
    launcher.wait_ready()
    frontend = procs.cmdline(launcher.child_pid("frontend"))  # what runs, from /proc
    assert frontend[0] == str(dynamo14_python)
    assert frontend[frontend.index("--router-mode") + 1] == "round-robin"

    results = sigkill_under_load(launcher, port)
    assert Load.failed(results) == 0, f"{Load.failed(results)} of {len(results)} failed"
    models = httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=10).json()["data"]
    assert [m["id"] for m in models] == ["tiny"]
    assert launcher.stop() == 0, launcher.dump()


def _plan(tmp_path: Path, python: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "launcher", "plan", "mocker", "--workers", "2"],
        cwd=REPO, env=up_env(tmp_path, {"DYNLAUNCH_DYNAMO__PYTHON": str(python), **env}),
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def test_plan_says_why_auto_is_not_kv_and_an_explicit_kv_warns(
    tmp_path: Path, dynamo14_python: Path
) -> None:
    auto = _plan(tmp_path, dynamo14_python)
    assert auto.returncode == 0, auto.stderr
    routing = next(x for x in auto.stdout.splitlines() if x.startswith("# routing: "))
    assert routing.startswith("# routing: round-robin")
    assert "auto: not kv, because Dynamo 1.4.2's KV router fails" in routing
    assert "warning" not in auto.stderr
    kv = _plan(tmp_path, dynamo14_python, DYNLAUNCH_FRONTEND__ROUTER_MODE="kv")
    assert kv.returncode == 0, kv.stderr
    assert "# routing: kv" in kv.stdout
    warnings = [x for x in kv.stderr.splitlines() if x.startswith("dynlaunch: warning: ")]
    assert len(warnings) == 1, kv.stderr
    assert "router_mode kv on Dynamo 1.4.2" in warnings[0]
