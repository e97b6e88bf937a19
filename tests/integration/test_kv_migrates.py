"""On Dynamo 1.6.1, `router_mode: auto` with 2 workers is kv, and a worker SIGKILLed under load
fails no request: 1.6's KV router migrates a dead worker's requests (1.4.2's fails them, so auto
is round-robin there: launcher/compat.py). Real etcd, NATS, frontend and mockers of 1.6.1."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import httpx
import pytest
from launcher_run import Launcher, Load, up_mocker

from testkit.net import poll_for

pytestmark = pytest.mark.integration


def cmdline(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")


def test_auto_is_kv_and_a_killed_worker_fails_no_request(
    started: list[Launcher], tmp_path: Path, dynamo16_python: Path
) -> None:
    env = {"DYNLAUNCH_DYNAMO__PYTHON": str(dynamo16_python)}
    launcher, port = up_mocker(started, tmp_path, "--workers", "2", tag="d16", env=env)
    launcher.wait_ready()
    frontend = cmdline(launcher.child_pid("frontend"))  # what runs, from /proc
    assert frontend[0] == str(dynamo16_python)
    assert frontend[frontend.index("--router-mode") + 1] == "kv"
    assert int(frontend[frontend.index("--migration-limit") + 1]) > 0

    load = Load(port, clients=4)
    try:
        poll_for(lambda: sum(ok for ok, _ in load.results) >= 40, 120, "40 answers before")
        victim = launcher.child_pid("worker-0")
        os.kill(victim, signal.SIGKILL)
        poll_for(lambda: launcher.starts("worker-0") >= 2, 120, "worker-0 started again")
        served = len(load.results)
        poll_for(lambda: len(load.results) >= served + 40, 120, "40 answers after")
        time.sleep(1)
    finally:
        results = load.stop()
    assert Load.failed(results) == 0, f"{Load.failed(results)} of {len(results)} failed"
    models = httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=10).json()["data"]
    assert [m["id"] for m in models] == ["tiny"]
