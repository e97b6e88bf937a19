"""`dynlaunch scale` then `restart` against the real Dynamo 0.5.0 runtime, in the leg's network
namespace. 0.5's workers answer /health before they register (no RPC port to find them by), so a
new worker is ready only when its model has more entries in etcd than its other serving workers
have; after a scale that count is the current one, not the start's: each command returns only
once every worker it started is registered (read through etcd's own gateway)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from launcher_run import Launcher, Load

from testkit.etcd import Gateway
from testkit.net import free_port, poll_for

pytestmark = pytest.mark.integration


def _up05(started: list[Launcher], tmp: Path, python: Path, *args: str) -> tuple[Launcher, int]:
    """`up mocker` on the 0.5 runtime (as test_up_05.up05), killed at teardown (tests/conftest)."""
    port = free_port()
    env = {"DYNLAUNCH_DYNAMO__PYTHON": str(python)}
    argv = ["mocker", "--namespace", f"s05-{uuid.uuid4().hex[:8]}", "--http-port", str(port)]
    launcher = Launcher([*argv, *args], tmp, env)
    started.append(launcher)
    try:
        launcher.wait_ready()
    except AssertionError as err:
        raise AssertionError(f"{err}\n{launcher.dump()}") from None
    return launcher, port


def _entries(launcher: Launcher) -> int:
    """The models/ entries of the run's namespace (one per registered 0.5 worker)."""
    ns = str(launcher.info()["namespace"])
    found = Gateway.of_run(launcher.state_dir).dump("models/")
    return sum(1 for kv in found if json.loads(kv[1])["endpoint"]["namespace"] == ns)


def test_after_a_scale_a_restart_waits_for_each_replacement_to_register(
    started: list[Launcher], tmp_path: Path, dynamo05_python: Path
) -> None:
    launcher, port = _up05(started, tmp_path, dynamo05_python, "--workers", "1")
    load = Load(port, clients=2)
    poll_for(lambda: len(load.results) >= 5, 120, "5 requests before the scale")
    up = launcher.cli(tmp_path, "scale", "--workers", "3")
    assert up.returncode == 0, up.stdout + up.stderr + launcher.dump()
    assert _entries(launcher) == 3  # both added workers registered before it said so
    again = launcher.cli(tmp_path, "restart")
    assert again.returncode == 0, again.stdout + again.stderr + launcher.dump()
    # the last replacement registered before the command returned (a fenced old worker's entry
    # may stay a few seconds: 0.5 drops it once its NATS subject has no subscriber), then 3
    assert _entries(launcher) >= 3, again.stdout
    poll_for(lambda: _entries(launcher) == 3, 60, "the old workers' entries to go")
    names = {c["name"] for c in launcher.status()["children"] if c["role"] == "worker"}
    assert names == {"worker-0.g2", "worker-1.g2", "worker-2.g2"}, names
    after = len(load.results)
    poll_for(lambda: len(load.results) >= after + 5, 120, "5 requests after the restart")
    results = load.stop()
    assert Load.failed(results) == 0, f"{Load.failed(results)} of {len(results)} failed"
    # Each retired worker was fenced while it ran, by the subjects of its own NATS connection
    # (a SIGTERMed 0.5 worker keeps its lease to the TTL; before this, 1 in 3 runs failed a
    # request routed to one), and then left to finish and exit on its own.
    for name in ("worker-0", "worker-1", "worker-2"):
        pid = launcher.child_pid(name)
        fenced = f" {name} pid={pid}: fenced: revoked its etcd lease "
        assert any(fenced in line and "(the subjects of its NATS connection)" in line
                   for line in launcher.err), launcher.dump()  # fmt: skip
    assert launcher.stop() == 0, launcher.dump()
