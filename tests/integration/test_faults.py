"""Faults against the real stack: launcher SIGKILL, PID 1 duty, crash loop, worker kill under
load, etcd kill."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from launcher_run import REPO, Launcher, chat_ok

from testkit import procs
from testkit.net import free_port, poll_for
from testkit.procs import tagged_pids

pytestmark = pytest.mark.integration


@pytest.fixture
def started() -> Iterator[list[Launcher]]:
    launchers: list[Launcher] = []
    yield launchers
    for launcher in launchers:
        launcher.kill()


def _up(
    started: list[Launcher], tmp_path: Path, *args: str, env: dict[str, str] | None = None,
    prefix: tuple[str, ...] = (),
) -> tuple[Launcher, int]:  # fmt: skip
    port = free_port()
    ns = f"ft-{uuid.uuid4().hex[:8]}"
    launcher = Launcher(["mocker", "--namespace", ns, "--http-port", str(port), *args], tmp_path,
                        env=env, prefix=prefix)  # fmt: skip
    started.append(launcher)
    return launcher, port


def test_sigkill_of_the_launcher_leaves_no_process(started: list[Launcher], tmp_path: Path) -> None:
    launcher, _ = _up(started, tmp_path, "--workers", "2")
    launcher.wait_ready()
    run_id = str(launcher.info()["run_id"])
    assert len(tagged_pids(run_id)) >= 5
    launcher.proc.kill()
    launcher.wait(10)
    poll_for(lambda: not tagged_pids(run_id), 5, "the run's processes to die")


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"), reason="needs root")
def test_as_pid_1_it_reaps_orphans_and_stops_cleanly_on_sigterm(
    started: list[Launcher], tmp_path: Path
) -> None:
    prefix = ("unshare", "--pid", "--fork", "--mount-proc")
    launcher, port = _up(started, tmp_path, prefix=prefix)
    launcher.wait_ready()
    (pid1,) = procs.children_of(launcher.proc.pid)  # dynlaunch, PID 1 inside the namespace
    assert _ns_pid(pid1) == 1
    # An orphan: its parent exits at once, so the kernel hands it to the namespace's PID 1.
    out = subprocess.run(
        ["nsenter", "-t", str(pid1), "-p", "--", "sh", "-c",
         "sleep 2 >/dev/null 2>&1 & echo $!; exit 0"],
        capture_output=True, text=True, check=True, timeout=10,
    )  # fmt: skip
    orphan_ns_pid = int(out.stdout.split()[0])
    orphans: list[int] = []

    def handed_over() -> bool:
        orphans[:] = [p for p in procs.children_of(pid1) if _ns_pid(p) == orphan_ns_pid]
        return bool(orphans)

    poll_for(handed_over, 2, "the orphan to be handed to dynlaunch")
    poll_for(lambda: procs.state(orphans[0]) is None, 10, "the orphan to be reaped (no zombie)")
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
    model = tmp_path / "model"
    subprocess.run([sys.executable, str(REPO / "scripts" / "make_tiny_model.py"), str(model)],
                   check=True, capture_output=True)  # fmt: skip
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
    results: list[bool] = []
    stop_at = time.monotonic() + 12

    def client() -> None:
        with httpx.Client(timeout=30) as http:
            body = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}],
                    "max_tokens": 8}  # fmt: skip
            url = f"http://127.0.0.1:{port}/v1/chat/completions"
            while time.monotonic() < stop_at:
                try:
                    results.append(http.post(url, json=body).status_code == 200)
                except httpx.HTTPError:
                    results.append(False)

    threads = [threading.Thread(target=client) for _ in range(4)]
    for thread in threads:
        thread.start()
    time.sleep(3)
    os.kill(launcher.child_pid("worker-0"), signal.SIGKILL)
    for thread in threads:
        thread.join()
    assert len(results) >= 200
    assert all(results), f"{results.count(False)} of {len(results)} requests failed"
    status = subprocess.run(
        [sys.executable, "-m", "launcher", "status", "--state-dir", str(launcher.state_dir),
         "--json"], capture_output=True, text=True, check=True, cwd=REPO,
    )  # fmt: skip
    report = json.loads(status.stdout)
    workers = {c["name"]: c for c in report["children"]}
    assert workers["worker-0"]["restarts"] == 1
    assert workers["worker-0"]["state"] == "running"
    assert report["registrations"]["model_cards"] >= 1  # counted in the run's etcd
    assert launcher.stop() == 0


def test_killed_etcd_is_restarted_and_the_stack_serves_again(
    started: list[Launcher], tmp_path: Path
) -> None:
    launcher, port = _up(started, tmp_path)
    launcher.wait_ready()
    os.kill(launcher.child_pid("etcd"), signal.SIGKILL)
    poll_for(lambda: len([x for x in launcher.err if " etcd pid=" in x and "started" in x]) == 2,
             15, "etcd's restart")  # fmt: skip
    poll_for(lambda: chat_ok(port), 60, "the stack to serve again")
    assert launcher.stop() == 0
