"""A state dir deep in a tree: the control socket's path is longer than a Unix socket address
holds (107 bytes). `up` must still serve it and `restart` reach it (before: up died with a
traceback right after it was ready, `OSError: AF_UNIX path too long`)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from launcher_run import REPO, Launcher, chat_ok, up_env

from testkit.net import free_port

pytestmark = pytest.mark.integration


def test_restart_reaches_a_run_whose_socket_path_is_long(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    port = free_port()
    launcher = Launcher(["mocker", "--http-port", str(port)], deep)
    try:
        launcher.wait_ready()
        sock = launcher.state_dir / "control.sock"
        assert len(str(sock).encode()) > 107
        assert sock.is_socket()
        done = subprocess.run(
            [sys.executable, "-m", "launcher", "restart", "--role", "frontend",
             "--state-dir", str(launcher.state_dir)],
            cwd=REPO, env=up_env(deep), capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert chat_ok(port)
        assert launcher.proc.poll() is None, launcher.dump()
    finally:
        launcher.kill()
