"""Secrets through a running stack: `dynlaunch up mocker` with secret-named variables in the
frontend's and the workers' env (upper and lower case), then `status` and `status --json`. No
value shows on up's stderr or stdout, in status, or in any file of the state dir (its own log,
the children's logs, launcher.json, status.json); the children do get them (read from /proc)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml
from launcher_run import REPO, Launcher

from testkit import procs
from testkit.net import free_port

pytestmark = pytest.mark.integration

SECRETS = {
    "HF_TOKEN": "hf_upsecret_a1",
    "my_secret": "upsecret_b2",
    "NATS_PASSWORD": "upsecret_c3",
    "openai_api_key": "upsecret_d4",
    "Signing_Key": "upsecret_e5",
}


def _status(state_dir: Path, home: Path, *extra: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DYNLAUNCH_")}
    done = subprocess.run(
        [sys.executable, "-m", "launcher", "status", "--state-dir", str(state_dir), *extra],
        cwd=REPO, env=env | {"HOME": str(home)}, capture_output=True, text=True, timeout=60,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout + done.stderr


def test_up_and_status_never_show_a_secret(tmp_path: Path) -> None:
    config = tmp_path / "secrets.yaml"
    env = SECRETS | {"PLAIN_VAR": "plainvalue_up"}
    config.write_text(yaml.safe_dump({"frontend": {"env": env}, "workers": {"env": env}}))
    ns = f"sec-{uuid.uuid4().hex[:8]}"
    port = free_port()
    launcher = Launcher(
        ["mocker", "-c", str(config), "--namespace", ns, "--http-port", str(port)], tmp_path
    )
    try:
        launcher.wait_ready()
        worker = launcher.child_pid("worker-0")
        got = procs.environ(worker)
        assert {k: got.get(k) for k in env} == env  # the worker really has them
        shown = _status(launcher.state_dir, tmp_path) + _status(
            launcher.state_dir, tmp_path, "--json"
        )
        assert "worker-0" in shown
        assert launcher.stop(signal.SIGTERM, timeout=90) == 0, launcher.dump()
    finally:
        launcher.kill()
    said = "\n".join([*launcher.err, *launcher.out, shown])
    files = [p for p in launcher.state_dir.rglob("*") if p.is_file() and "infra" not in p.parts]
    assert any(p.suffix == ".log" for p in files), files
    written = "\n".join(p.read_text(errors="replace") for p in files)
    for name, value in SECRETS.items():
        assert value not in said, name
        assert value not in written, name
