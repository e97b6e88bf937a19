"""Liveness and the crash-loop policy against the real stack: a stopped (SIGSTOP) worker is
replaced under load with no failed request; a slow worker is never restarted; a worker that
crash-loops is left stopped while the other serves, and the stack stops when none is left."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from launcher_run import Launcher, Load, chat_ok, make_model, up_mocker

from testkit import procs
from testkit.etcd import Gateway
from testkit.net import poll_for

pytestmark = pytest.mark.integration


def _up(started: list[Launcher], tmp_path: Path, *args: str, **kw: Any) -> tuple[Launcher, int]:
    return up_mocker(started, tmp_path, *args, tag="lv", **kw)


def _status(launcher: Launcher) -> dict[str, dict[str, object]]:
    return {c["name"]: c for c in launcher.status()["children"]}


def test_a_stopped_worker_is_replaced_within_30s_and_no_request_fails(
    started: list[Launcher], tmp_path: Path
) -> None:
    launcher, port = _up(started, tmp_path, "--workers", "2")  # liveness defaults
    launcher.wait_ready()
    hung = launcher.child_pid("worker-0")
    poll_for(lambda: _status(launcher)["worker-0"]["live"] is True, 30, "a first liveness probe")
    load = Load(port, clients=3)
    poll_for(lambda: len(load.results) >= 10, 120, "10 requests before the stop")
    os.kill(hung, signal.SIGSTOP)
    stopped_at = time.monotonic()
    poll_for(lambda: launcher.starts("worker-0") == 2, 60, "worker-0's replacement")
    replaced_after = time.monotonic() - stopped_at
    new = launcher.child_pid("worker-0", 2)
    poll_for(
        lambda: procs.state(hung) is None, 10, "the hung worker to be gone"
    )  # killed and reaped
    after = len(load.results)  # the replacement serves too
    poll_for(lambda: len(load.results) >= after + 10, 120, "10 requests after the replacement")
    results = load.stop()
    assert replaced_after < 30, launcher.dump()
    assert procs.ppid(new) == launcher.proc.pid  # a real child of the launcher, running
    assert any("hung: no answer from" in x and "worker-0" in x for x in launcher.err)
    assert Load.failed(results) == 0, f"{Load.failed(results)} of {len(results)} failed"
    row = _status(launcher)["worker-0"]
    assert row["restarts"] == 1
    assert row["pid"] == new
    assert launcher.stop() == 0


def test_a_slow_worker_is_never_restarted(started: list[Launcher], tmp_path: Path) -> None:
    # A mocker 50x slower than real time keeps its engine busy with long generations while a
    # strict liveness probe (every 0.5 s, 1 s timeout, 2 misses) watches it.
    env = {
        "DYNLAUNCH_LIVENESS__INTERVAL_S": "0.5",
        "DYNLAUNCH_LIVENESS__TIMEOUT_S": "1",
        "DYNLAUNCH_LIVENESS__FAILURE_THRESHOLD": "2",
        "DYNLAUNCH_WORKERS__EXTRA_ARGS": '["--speedup-ratio", "0.02"]',
    }
    launcher, port = _up(started, tmp_path, env=env)
    launcher.wait_ready()
    body = {"model": "tiny", "messages": [{"role": "user", "content": "hi " * 200}],
            "max_tokens": 400}  # fmt: skip
    url = f"http://127.0.0.1:{port}/v1/chat/completions"

    def long_request() -> None:
        # Cut off by our timeout: the point is the engine's load meanwhile.
        with contextlib.suppress(httpx.HTTPError):
            httpx.post(url, json=body, timeout=25)

    busy = [threading.Thread(target=long_request, daemon=True) for _ in range(6)]
    for thread in busy:
        thread.start()
    time.sleep(12)
    row = _status(launcher)["worker-0"]
    assert row["live"] is True
    assert row["restarts"] == 0
    assert not any("hung:" in x for x in launcher.err), launcher.dump()
    assert launcher.stop() == 0


def _kill_until(launcher: Launcher, name: str, starts: int, timeout: float) -> None:
    """SIGKILL ``name`` each time it is (re)started, until it has started ``starts`` times."""
    deadline = time.monotonic() + timeout
    killed: set[int] = set()
    while time.monotonic() < deadline:
        for pid in [launcher.child_pid(name, n + 1) for n in range(launcher.starts(name))]:
            if pid not in killed:
                killed.add(pid)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        if len(killed) >= starts:
            return
        time.sleep(0.1)
    raise AssertionError(f"{name} started {len(killed)} times, not {starts}\n" + launcher.dump())


CRASHY = {
    "DYNLAUNCH_RESTART__MAX_RESTARTS": "2",
    "DYNLAUNCH_RESTART__BACKOFF_BASE_S": "0.2",
    "DYNLAUNCH_RESTART__STARTSECS": "30",
}


def test_a_crash_looping_worker_is_left_stopped_while_another_serves(
    started: list[Launcher], tmp_path: Path
) -> None:
    launcher, port = _up(started, tmp_path, "--workers", "2", env=CRASHY)
    launcher.wait_ready()
    load = Load(port, clients=2)
    _kill_until(launcher, "worker-1", 3, 60)  # the first start and its 2 restarts
    poll_for(lambda: launcher.stderr_has("left stopped while 1 other worker(s) serve"), 20,
             "worker-1 left stopped")  # fmt: skip
    after = len(load.results)
    poll_for(lambda: len(load.results) >= after + 10, 120, "10 requests with worker-1 stopped")
    results = load.stop()
    assert launcher.proc.poll() is None, launcher.dump()  # still serving
    assert chat_ok(port)
    rows = _status(launcher)
    assert rows["worker-1"]["state"] == "fatal"
    assert rows["worker-0"]["state"] == "running"
    assert Load.failed(results) == 0, f"{Load.failed(results)} of {len(results)} failed"
    # Now the last worker crash-loops too: no worker left, the stack stops with its code.
    _kill_until(launcher, "worker-0", 3, 60)
    code = launcher.wait(60)
    assert code == 128 + signal.SIGKILL, launcher.dump()
    assert launcher.stderr_has("stopping everything")


def test_stop_all_ends_the_run_when_one_worker_crash_loops(
    started: list[Launcher], tmp_path: Path
) -> None:
    env = CRASHY | {"DYNLAUNCH_RESTART__CRASH_LOOP": "stop-all"}
    launcher, _ = _up(started, tmp_path, "--workers", "2", env=env)
    launcher.wait_ready()
    _kill_until(launcher, "worker-1", 3, 60)
    assert launcher.wait(60) == 128 + signal.SIGKILL, launcher.dump()


def test_a_sigkill_from_outside_is_not_called_out_of_memory(
    started: list[Launcher], tmp_path: Path
) -> None:
    launcher, port = _up(started, tmp_path)
    launcher.wait_ready()
    os.kill(launcher.child_pid("worker-0"), signal.SIGKILL)
    poll_for(lambda: launcher.stderr_has("restart 1 in"), 20, "the restart line")
    line = next(x for x in launcher.err if "restart 1 in" in x)
    assert "killed by SIGKILL (not by dynlaunch" in line, line
    assert "out of memory" not in line
    poll_for(lambda: chat_ok(port), 60, "the stack to serve again")
    assert launcher.stop() == 0


def test_a_model_without_a_tokenizer_fails_fast_naming_the_cause(
    started: list[Launcher], tmp_path: Path
) -> None:
    model = make_model(tmp_path / "model")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (model / name).unlink()
    launcher, _ = _up(started, tmp_path, "--model-path", str(model), "--served-model-name", "tiny",
                      "--startup-timeout", "600")  # fmt: skip
    began = time.monotonic()
    code = launcher.wait(120)
    took = time.monotonic() - began
    errors = [x for x in launcher.err if x.startswith("dynlaunch: error:")]
    assert code == 3, launcher.dump()
    assert len(errors) == 1, launcher.dump()
    assert "cannot serve" in errors[0]
    assert took < 120  # not the 600 s start-up deadline


def test_a_worker_that_loses_its_lease_is_logged_with_that_cause(
    started: list[Launcher], tmp_path: Path
) -> None:
    launcher, port = _up(started, tmp_path)
    launcher.wait_ready()
    ns = str(launcher.info()["namespace"])
    etcd = Gateway.of_run(launcher.state_dir)  # etcd's own JSON gateway, not our client
    leases = {kv[2] for kv in etcd.dump(f"v1/instances/{ns}/")}
    assert len(leases) == 1  # one worker
    etcd.lease_revoke(leases.pop())
    poll_for(lambda: launcher.stderr_has("restart 1 in"), 60, "worker-0 to exit")
    line = next(x for x in launcher.err if "restart 1 in" in x)
    assert "worker-0" in line
    assert "exited with code 0 (it lost its etcd lease:" in line, line
    poll_for(lambda: chat_ok(port), 60, "the stack to serve again")
    assert launcher.stop() == 0
