"""The supervisor against real misbehaving children: stop escalation and the tag sweep."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from launcher.plan import ProcessSpec
from launcher.supervision.supervisor import Child, Supervisor
from testkit.procs import tagged_pids

CHILDREN = Path(__file__).resolve().parents[1] / "children"


def _start(tmp_path: Path, script: str) -> tuple[Supervisor, list[Child]]:
    sup = Supervisor(uuid.uuid4().hex, tmp_path / "logs", os.environ)
    spec = ProcessSpec(script, "worker", (sys.executable, str(CHILDREN / f"{script}.py")), {})
    child = sup.add(spec, 20)
    sup.spawn(child, time.monotonic())
    deadline = time.monotonic() + 10
    while not child.relay.tail and time.monotonic() < deadline:
        time.sleep(0.05)
    assert child.relay.tail, "the child never said it was ready"
    return sup, [child]


def test_sigterm_ignorer_is_killed_after_its_timeout_not_before(tmp_path: Path) -> None:
    sup, children = _start(tmp_path, "sigterm_ignorer")
    began = time.monotonic()
    killed = sup.stop(children, timeout=1.5)
    took = time.monotonic() - began
    assert killed
    assert took >= 1.5
    assert took < 5
    status = children[0].status
    assert status is not None
    assert os.WIFSIGNALED(status)
    assert os.WTERMSIG(status) == signal.SIGKILL


def test_grandchild_that_called_setsid_is_gone_after_stop(tmp_path: Path) -> None:
    sup, children = _start(tmp_path, "setsid_grandchild")
    grandchild = int(children[0].relay.tail[0].split()[1])
    assert grandchild in tagged_pids(sup.run_id)
    sup.stop(children, timeout=2)
    assert sup.sweep() == 1  # it escaped the group kill; the tag found it
    deadline = time.monotonic() + 5
    while grandchild in tagged_pids(sup.run_id) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert tagged_pids(sup.run_id) == set()


def _drive(mode: str) -> dict[str, int | bool]:
    done = subprocess.run(
        [sys.executable, str(CHILDREN / "subreaper_driver.py"), mode],
        capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    result: dict[str, int | bool] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_orphaned_grandchild_is_adopted_and_reaped_by_a_subreaper() -> None:
    got = _drive("subreaper")
    assert got["ppid"] == got["pid"]  # re-parented to the supervisor, not to PID 1
    assert got["swept"] == 1
    assert got["gone"]  # killed by the sweep and reaped by us: no zombie left behind


def test_without_the_subreaper_the_orphan_goes_elsewhere() -> None:
    """The control: the same run without become_subreaper() does not adopt the orphan."""
    got = _drive("plain")
    assert got["ppid"] != got["pid"]


def test_the_started_line_never_shows_a_secret_flag_value(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The line shows the first words of argv: a secret flag among them is masked too."""
    sup = Supervisor(uuid.uuid4().hex, tmp_path / "logs", os.environ)
    argv = (sys.executable, str(CHILDREN / "sigterm_ignorer.py"), "--api-key=s3cr3t", "--hf-token",
            "hf_s3cr3t")  # fmt: skip
    child = sup.add(ProcessSpec("w", "worker", argv, {}), 4)
    with caplog.at_level(logging.INFO, logger="launcher"):
        sup.spawn(child, time.monotonic())
    try:
        started = [r.getMessage() for r in caplog.records if ": started: " in r.getMessage()]
        assert started == [f"w pid={child.pid}: started: {sys.executable} {argv[1]} --api-key=***"
                           " --hf-token"]  # fmt: skip
        assert "s3cr3t" not in caplog.text
    finally:
        sup.stop([child], timeout=0.5)
