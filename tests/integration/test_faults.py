"""Faults against the real stack: launcher SIGKILL, PID 1 duty, crash loop, worker kill under
load, etcd kill."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest
from launcher_run import CHILDREN, Launcher, Load, chat_ok, make_model, up_mocker

from testkit import procs
from testkit.net import poll_for
from testkit.procs import tagged_pids

pytestmark = pytest.mark.integration


def _up(started: list[Launcher], tmp_path: Path, *args: str, **kw: Any) -> tuple[Launcher, int]:
    return up_mocker(started, tmp_path, *args, tag="ft", **kw)


def test_sigkill_of_the_launcher_leaves_no_process(started: list[Launcher], tmp_path: Path) -> None:
    launcher, _ = _up(started, tmp_path, "--workers", "2")
    launcher.wait_ready()
    run_id = str(launcher.info()["run_id"])
    # The run's processes, from its own lifecycle lines and /proc: exactly its five children
    # (tagged) and the dead-man switch (untagged, so that its own sweep spares it).
    children = {pid: procs.start_time(pid) for pid in map(launcher.child_pid, CHILDREN)}
    assert len(children) == len(CHILDREN)
    (deadman,) = procs.cmdline_pids("launcher.supervision.deadman", run_id)
    below = procs.tree_pids(launcher.proc.pid) - {launcher.proc.pid}
    assert below == {*children, deadman}
    assert tagged_pids(run_id) == set(children)
    children[deadman] = procs.start_time(deadman)
    ports = {line.split()[0] for line in procs.listeners(set(children))}
    assert len(ports) >= len(CHILDREN), ports
    launcher.proc.kill()
    launcher.wait(10)

    def gone() -> bool:
        return not any(procs.start_time(pid) == start for pid, start in children.items())

    poll_for(gone, 30, "the run's processes to die")
    assert not tagged_pids(run_id)
    assert not ports & procs.listening(), "a port of the run still listens"


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"), reason="needs root")
def test_as_pid_1_it_reaps_orphans_and_stops_cleanly_on_sigterm(
    started: list[Launcher], tmp_path: Path
) -> None:
    prefix = ("unshare", "--pid", "--fork", "--mount-proc")
    launcher, port = _up(started, tmp_path, prefix=prefix)
    launcher.wait_ready()
    (pid1,) = procs.children_of(launcher.proc.pid)  # dynlaunch, PID 1 inside the namespace
    assert _ns_pid(pid1) == 1
    # An orphan: its parent exits at once, so the kernel hands it to the namespace's PID 1. It
    # lives until the test says so (a file appears), however slow the machine.
    release = tmp_path / "release-orphan"
    out = subprocess.run(
        ["nsenter", "-t", str(pid1), "-p", "--", "sh", "-c",
         f"(while [ ! -e {release} ]; do sleep 0.1; done) >/dev/null 2>&1 & echo $!; exit 0"],
        capture_output=True, text=True, check=True, timeout=30,
    )  # fmt: skip
    orphan_ns_pid = int(out.stdout.split()[0])
    orphans: list[int] = []

    def handed_over() -> bool:
        orphans[:] = [p for p in procs.children_of(pid1) if _ns_pid(p) == orphan_ns_pid]
        return bool(orphans)

    poll_for(handed_over, 60, "the orphan to be handed to dynlaunch")
    release.touch()
    poll_for(lambda: procs.state(orphans[0]) is None, 60, "the orphan to be reaped (no zombie)")
    assert chat_ok(port)
    os.kill(pid1, signal.SIGTERM)  # what `docker stop` does
    assert launcher.wait(60) == 0, launcher.dump()
    assert launcher.stderr_has("SIGTERM received, stopping")


def _ns_pid(pid: int) -> int | None:
    """The pid as the innermost pid namespace sees it."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return None
    return next((int(ln.split()[-1]) for ln in lines if ln.startswith("NSpid:")), None)


def test_crash_loop_ends_the_run_with_the_childs_code(
    started: list[Launcher], tmp_path: Path
) -> None:
    model = make_model(tmp_path / "model")
    env = {
        "DYNLAUNCH_RESTART__MAX_RESTARTS": "2",
        "DYNLAUNCH_RESTART__BACKOFF_BASE_S": "0.5",
    }
    launcher, _ = _up(started, tmp_path, "--model-path", str(model), env=env)
    launcher.wait_ready()
    shutil.rmtree(model)  # every restart of the worker now fails at once
    os.kill(launcher.child_pid("worker-0"), signal.SIGKILL)
    code = launcher.wait(90)
    gave_up = [line for line in launcher.err if "gave up" in line]
    assert gave_up, launcher.dump()
    assert f"exited with code {code}" in gave_up[0]
    assert code != 0
    delays = [float(line.rsplit(" in ", 1)[1].rstrip("s")) for line in launcher.err
              if "worker-0" in line and "; restart " in line]  # fmt: skip
    assert len(delays) == 2
    assert delays[1] > delays[0]


def test_worker_sigkill_under_load_fails_no_request(
    started: list[Launcher], tmp_path: Path
) -> None:
    launcher, port = _up(started, tmp_path, "--workers", "2")
    launcher.wait_ready()
    load = Load(port, clients=4, timeout=30)
    # Traffic flows before the kill and after the restart: counted, not timed.
    poll_for(lambda: len(load.results) >= 20, 120, "20 requests before the kill")
    os.kill(launcher.child_pid("worker-0"), signal.SIGKILL)
    report: dict[str, Any] = {}

    def restarted_and_running() -> bool:
        report.update(launcher.status())
        worker = {c["name"]: c for c in report["children"]}["worker-0"]
        return bool(worker["restarts"] == 1 and worker["state"] == "running")

    poll_for(restarted_and_running, 120, "worker-0 to be restarted and running")
    after = len(load.results)
    poll_for(lambda: len(load.results) >= after + 20, 120, "20 requests after the restart")
    results = load.stop()
    assert not Load.failed(results), f"{Load.failed(results)} of {len(results)} requests failed"
    assert launcher.starts("worker-0") == 2
    assert report["registrations"]["model_cards"] >= 1  # counted in the run's etcd
    assert launcher.stop() == 0


def test_killed_etcd_is_restarted_and_the_stack_serves_again(
    started: list[Launcher], tmp_path: Path
) -> None:
    launcher, port = _up(started, tmp_path)
    launcher.wait_ready()
    os.kill(launcher.child_pid("etcd"), signal.SIGKILL)
    poll_for(lambda: launcher.starts("etcd") == 2, 60, "etcd's restart")
    poll_for(lambda: chat_ok(port), 60, "the stack to serve again")
    assert launcher.stop() == 0
