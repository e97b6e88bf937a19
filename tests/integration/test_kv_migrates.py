"""On Dynamo 1.6.1, `router_mode: auto` with 2 workers is kv, and a worker SIGKILLed under load
fails no request: 1.6's KV router migrates a dead worker's requests (1.4.2's fails them, so auto
is round-robin there: launcher/compat.py). Real etcd, NATS, frontend and mockers of 1.6.1."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from launcher_run import Launcher, Load, sigkill_under_load, up_mocker

from testkit import procs

pytestmark = pytest.mark.integration


def test_auto_is_kv_and_a_killed_worker_fails_no_request(
    started: list[Launcher], tmp_path: Path, dynamo16_python: Path
) -> None:
    env = {"DYNLAUNCH_DYNAMO__PYTHON": str(dynamo16_python)}
    launcher, port = up_mocker(started, tmp_path, "--workers", "2", tag="d16", env=env)
    launcher.wait_ready()
    frontend = procs.cmdline(launcher.child_pid("frontend"))  # what runs, from /proc
    assert frontend[0] == str(dynamo16_python)
    assert frontend[frontend.index("--router-mode") + 1] == "kv"
    assert int(frontend[frontend.index("--migration-limit") + 1]) > 0

    results = sigkill_under_load(launcher, port)
    assert Load.failed(results) == 0, f"{Load.failed(results)} of {len(results)} failed"
    models = httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=10).json()["data"]
    assert [m["id"] for m in models] == ["tiny"]
