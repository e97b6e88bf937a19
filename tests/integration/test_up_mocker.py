"""`dynlaunch up mocker` end to end: real etcd, nats-server, Dynamo frontend and mockers."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import httpx
import pytest
from launcher_run import CHILDREN, Launcher, chat, up_mocker

from testkit import procs
from testkit.net import poll_for
from testkit.procs import tagged_pids

pytestmark = pytest.mark.integration


def _up(started: list[Launcher], tmp_path: Path, *args: str, **kw: Any) -> tuple[Launcher, int]:
    return up_mocker(started, tmp_path, *args, tag="it", **kw)


def test_two_workers_serve_then_sigterm_leaves_nothing(
    started: list[Launcher], tmp_path: Path
) -> None:
    launcher, port = _up(started, tmp_path, "--workers", "2")
    launcher.wait_ready()
    run_id = str(launcher.info()["run_id"])
    children = {launcher.child_pid(name) for name in CHILDREN}
    assert len(children) == len(CHILDREN)
    assert tagged_pids(run_id) == children, launcher.dump()  # no other process of the run

    models = httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=10).json()
    assert [m["id"] for m in models["data"]] == ["tiny"]

    plain = chat(port, stream=False)
    assert plain.status_code == 200, plain.text
    assert plain.json()["usage"]["completion_tokens"] == 8

    streamed = chat(port, stream=True)
    assert streamed.status_code == 200
    events = [line[6:] for line in streamed.text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"

    assert launcher.stop(signal.SIGTERM) == 0, launcher.dump()
    assert tagged_pids(run_id) == set()
    for pid in children:
        assert not procs.alive(pid)
    # Reverse order: workers stop before the frontend, the frontend before etcd.
    order = [line for line in launcher.err if "stopping (SIGTERM)" in line]
    names = [line.split()[1] for line in order]
    assert names.index("frontend") > max(names.index("worker-0"), names.index("worker-1"))
    assert names.index("frontend") < min(names.index("etcd"), names.index("nats"))  # infra last
    assert not (launcher.state_dir / "launcher.pid").exists()
    assert (launcher.state_dir / "logs" / "worker-1.log").stat().st_size > 0


def test_dead_worker_is_restarted_and_serves_again(started: list[Launcher], tmp_path: Path) -> None:
    launcher, port = _up(started, tmp_path)
    launcher.wait_ready()
    first = launcher.child_pid("worker-0")
    os.kill(first, signal.SIGKILL)
    poll_for(lambda: launcher.stderr_has(f"worker-0 pid={first}: killed by SIGKILL"), 20, "exit")
    poll_for(lambda: launcher.starts("worker-0") == 2, 60, "the restart")
    assert launcher.child_pid("worker-0", 2) != first

    def serving() -> bool:
        return chat(port, stream=False).status_code == 200

    poll_for(serving, 60, "a completion from the restarted worker")
    assert launcher.stop(signal.SIGINT) == 0, launcher.dump()


def test_child_dying_before_ready_stops_everything_with_exit_3(
    started: list[Launcher], tmp_path: Path
) -> None:
    launcher, _ = _up(started, tmp_path, "--", "--no-such-mocker-flag")
    assert launcher.wait(120) == 3, launcher.dump()
    assert launcher.stderr_has("worker-0 exited with code 2 during startup")
    assert launcher.stderr_has("no-such-mocker-flag")  # its last log lines are shown
    assert any("etcd pid=" in line and "stopped" in line for line in launcher.err)
