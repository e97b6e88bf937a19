"""`dynlaunch restart --no-rolling` against the real stack (etcd, NATS, frontend, two mockers),
through the real CLI: every worker stopped at once, all started again; checked independently of
dynlaunch: new pids (/proc), new registrations (etcd's own JSON gateway, and the instances the
frontend's /health lists), the model listed by raw /v1/models, and the stack serving again."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from launcher_run import REPO, Launcher, chat_ok, up_env, up_mocker
from test_restart import StatusFile

from testkit import procs
from testkit.etcd import Gateway
from testkit.net import poll_for

pytestmark = pytest.mark.integration


def _instance_keys(launcher: Launcher) -> set[str]:
    """The generate instances registered in etcd (their keys end in the lease id)."""
    ns = str(launcher.info()["namespace"])
    prefix = f"v1/instances/{ns}/backend/generate/"
    return {kv[0] for kv in Gateway.of_run(launcher.state_dir).dump(prefix)}


def _frontend_instances(port: int) -> set[int]:
    """The generate instances the frontend itself knows (its /health)."""
    body = httpx.get(f"http://127.0.0.1:{port}/health", timeout=10).json()
    return {int(i["instance_id"]) for i in body.get("instances", [])
            if i.get("endpoint") == "generate"}  # fmt: skip


def _listed(port: int) -> list[str]:
    data = httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=10).json()
    return [str(m["id"]) for m in data.get("data", [])]


def test_restart_no_rolling_replaces_every_worker_and_its_registration(
    started: list[Launcher], tmp_path: Path
) -> None:
    launcher, port = up_mocker(started, tmp_path, "--workers", "2", tag="nr")
    launcher.wait_ready()
    old = {n: launcher.child_pid(n) for n in ("worker-0", "worker-1")}
    frontend = launcher.child_pid("frontend")
    keys = _instance_keys(launcher)
    assert len(keys) == 2, keys
    poll_for(lambda: len(_frontend_instances(port)) == 2, 60, "the frontend to know 2 instances")
    seen = _frontend_instances(port)
    watch = StatusFile(launcher.state_dir / "status.json")
    done = subprocess.run(
        [sys.executable, "-m", "launcher", "restart", "--no-rolling", "--state-dir",
         str(launcher.state_dir)], capture_output=True, text=True, cwd=REPO,
        env=up_env(tmp_path), timeout=300,
    )  # fmt: skip
    steps = watch.stop()
    assert done.returncode == 0, done.stdout + done.stderr + launcher.dump()
    lines = done.stdout.splitlines()
    for i, words in ((1, "stop worker-0, worker-1"), (2, "start worker-0.g2, worker-1.g2"),
                     (3, "wait until worker-0.g2, worker-1.g2")):  # fmt: skip
        assert any(f"not rolling: step {i}/3: {words}" in line for line in lines), done.stdout
    assert any("step 1/3: stop" in s for s in steps), steps  # `status` showed it while it ran
    assert launcher.status()["operation"] is None
    # new processes, live children of the launcher; the old ones stopped and reaped
    for name, pid in old.items():
        new = launcher.child_pid(f"{name}.g2")
        assert new != pid
        assert procs.ppid(new) == launcher.proc.pid
        assert procs.state(new) not in (None, "Z")
        assert procs.state(pid) is None
        assert f"{name} pid={pid} -> {name}.g2 pid={new}" in done.stdout, done.stdout
    assert launcher.child_pid("frontend") == frontend  # only the workers
    # new registrations: etcd holds 2 generate instances, none of them the old ones
    after = _instance_keys(launcher)
    assert len(after) == 2, after
    assert not after & keys, (keys, after)
    # the frontend drops the old instances and finds the new ones, then serves again
    poll_for(lambda: _frontend_instances(port) == {int(k.rsplit("/", 1)[1], 16) for k in after},
             60, "the frontend to list exactly the new instances")  # fmt: skip
    assert not _frontend_instances(port) & seen
    assert _listed(port) == ["tiny"]
    poll_for(lambda: chat_ok(port), 60, "a chat completion after the restart")
    report = launcher.status()["models"][0]
    assert (report["workers"], report["running"], report["instances"]) == (2, 2, 2)
    assert json.loads((launcher.state_dir / "status.json").read_text())["operation"] is None
    assert launcher.stop() == 0
