"""`dynlaunch restart` against the real stack (etcd, NATS, frontend, mockers), through the real CLI
and the launcher's control socket: a rolling restart of the workers under load fails no request
and replaces both (new pids, seen in /proc); a frontend restart keeps the workers; a replacement
that cannot serve is rolled back (exit 3, the step named, the old worker untouched); the socket
is 0600 and refuses a client of another uid."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from launcher_run import REPO, Launcher, Load, chat_ok, make_model, up_env, up_mocker

from testkit import procs
from testkit.net import poll_for

pytestmark = pytest.mark.integration
NOBODY = 65534


def _up(
    started: list[Launcher], tmp_path: Path, *args: str, env: dict[str, str] | None = None
) -> tuple[Launcher, int]:
    return up_mocker(started, tmp_path, *args, tag="rs", env=env)


def _restart(launcher: Launcher, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "launcher", "restart", "--state-dir", str(launcher.state_dir),
         *args], capture_output=True, text=True, cwd=REPO, env=up_env(tmp_path), timeout=300,
    )  # fmt: skip


def _children(launcher: Launcher) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in launcher.status()["children"]}


def _alive_child_of(pid: int, launcher: Launcher) -> bool:
    return procs.state(pid) not in (None, "Z") and procs.ppid(pid) == launcher.proc.pid


class StatusFile:
    """Every operation step status.json showed (the file `dynlaunch status` reads), polled."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.seen: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._stop.wait(0.02):
            try:
                op = json.loads(self.path.read_text()).get("operation")
            except (OSError, ValueError):
                continue
            if op and (not self.seen or self.seen[-1] != op["step"]):
                self.seen.append(str(op["step"]))

    def stop(self) -> list[str]:
        self._stop.set()
        self._thread.join(5)
        return self.seen


def test_a_rolling_restart_under_load_replaces_both_workers_and_fails_no_request(
    started: list[Launcher], tmp_path: Path
) -> None:
    launcher, port = _up(started, tmp_path, "--workers", "2")
    launcher.wait_ready()
    old = {n: launcher.child_pid(n) for n in ("worker-0", "worker-1")}
    load = Load(port, clients=3)
    poll_for(lambda: len(load.results) >= 10, 120, "10 requests before the restart")
    watch = StatusFile(launcher.state_dir / "status.json")
    done = _restart(launcher, tmp_path)
    steps = watch.stop()
    after = len(load.results)
    poll_for(lambda: len(load.results) >= after + 10, 120, "10 requests after the restart")
    results = load.stop()
    assert done.returncode == 0, done.stdout + done.stderr + launcher.dump()
    assert Load.failed(results) == 0, f"{Load.failed(results)} of {len(results)} failed"
    children = _children(launcher)
    assert "worker-0" not in children
    assert "worker-1" not in children
    for name, pid in old.items():
        new = children[f"{name}.g2"]
        assert new["state"] == "running"
        assert new["pid"] != pid
        assert _alive_child_of(new["pid"], launcher)  # /proc: a live child of the launcher
        assert procs.state(pid) is None  # the old one is gone (stopped and reaped)
        assert f"{name} pid={pid} -> {name}.g2 pid={new['pid']}" in done.stdout
    # `status` showed the operation while it ran, step by step; nothing once it ended
    assert any("step 1/2: replace worker-0" in s for s in steps), steps
    assert any("step 2/2: replace worker-1" in s for s in steps), steps
    assert launcher.status()["operation"] is None
    report = launcher.status()["models"][0]
    assert (report["workers"], report["running"], report["instances"]) == (2, 2, 2)
    assert launcher.stop() == 0


def test_a_frontend_restart_keeps_the_workers_which_serve_through_the_new_frontend(
    started: list[Launcher], tmp_path: Path
) -> None:
    launcher, port = _up(started, tmp_path, "--workers", "2")
    launcher.wait_ready()
    workers = {n: launcher.child_pid(n) for n in ("worker-0", "worker-1")}
    frontend = launcher.child_pid("frontend")
    done = _restart(launcher, tmp_path, "--role", "frontend")
    assert done.returncode == 0, done.stdout + done.stderr + launcher.dump()
    new = launcher.child_pid("frontend.g2")
    assert new != frontend
    assert _alive_child_of(new, launcher)
    assert procs.state(frontend) is None
    poll_for(lambda: chat_ok(port), 60, "a chat completion through the new frontend")
    for pid in workers.values():
        assert _alive_child_of(pid, launcher)  # the same worker processes, never restarted
    children = _children(launcher)
    assert {n: children[n]["pid"] for n in workers} == workers
    assert launcher.starts("worker-0") == launcher.starts("worker-1") == 1
    assert launcher.stop() == 0


def test_a_replacement_that_cannot_serve_is_rolled_back_and_the_step_named(
    started: list[Launcher], tmp_path: Path
) -> None:
    model = make_model(tmp_path / "model")
    # A new model revision that is broken: the running worker loaded the model; a new process
    # finds no model there (offline: no download either) and exits.
    launcher, port = _up(started, tmp_path, "--model-path", str(model), "--served-model-name",
                         "tiny", env={"HF_HUB_OFFLINE": "1"})  # fmt: skip
    launcher.wait_ready()
    old = launcher.child_pid("worker-0")
    model.rename(tmp_path / "moved-away")
    done = _restart(launcher, tmp_path)
    errors = [x for x in done.stderr.splitlines() if x.startswith("dynlaunch: error:")]
    assert done.returncode == 3, done.stdout + done.stderr + launcher.dump()
    assert len(errors) == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert "step 1/1: replace worker-0" in errors[0], errors[0]
    assert f"rolled back: worker-0 pid={old} serves on" in errors[0], errors[0]
    assert _alive_child_of(old, launcher)
    replacement = launcher.child_pid("worker-0.g2")
    poll_for(lambda: procs.state(replacement) is None, 30, "the failed replacement to be gone")
    children = _children(launcher)
    assert set(children) == {"etcd", "nats", "frontend", "worker-0"}
    assert children["worker-0"]["pid"] == old
    assert children["worker-0"]["state"] == "running"
    assert launcher.status()["operation"] is None
    assert chat_ok(port)
    assert launcher.stop() == 0


CLIENT = """
import json, socket, sys
s = socket.socket(socket.AF_UNIX)
try:
    s.connect(sys.argv[1])
except OSError as err:
    print(json.dumps({"connect": err.errno})); sys.exit()
s.sendall(b'{"op": "restart", "role": "worker"}\\n')
print(s.makefile().readline().strip())
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as nobody")
def test_the_control_socket_is_0600_and_refuses_another_uid(
    started: list[Launcher], tmp_path: Path
) -> None:
    launcher, port = _up(started, tmp_path)
    launcher.wait_ready()
    sock = launcher.state_dir / "control.sock"
    st = sock.stat()
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o600
    assert st.st_uid == os.geteuid()
    worker = launcher.child_pid("worker-0")
    as_nobody = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
                 "/usr/bin/python3", "-c", CLIENT]  # fmt: skip
    # As it is, nobody cannot even connect (the file's mode)
    denied = subprocess.run([*as_nobody, str(sock)], capture_output=True, text=True, timeout=30)
    assert json.loads(denied.stdout) == {"connect": 13}, denied.stdout + denied.stderr  # EACCES
    # With the modes loosened (as a careless admin might), the launcher still refuses the uid:
    # the client connects from inside the state dir, so no directory above it is searched.
    launcher.state_dir.chmod(0o711)
    sock.chmod(0o666)
    refused = subprocess.run([*as_nobody, "control.sock"], capture_output=True, text=True,
                             timeout=30, cwd=launcher.state_dir)  # fmt: skip
    reply = json.loads(refused.stdout)
    assert reply["ok"] is False, reply
    assert reply["code"] == 2, reply
    assert f"refused: uid {NOBODY}" in reply["error"], reply
    assert launcher.stderr_has(f"control socket: refused a client of uid {NOBODY}")
    assert _alive_child_of(worker, launcher)
    assert launcher.starts("worker-0.g2") == 0
    launcher.state_dir.chmod(0o700)
    assert chat_ok(port)
    assert launcher.stop() == 0
    assert not sock.exists()  # removed at stop
