"""Output faults against the real stack under load: a stdout that nobody reads, a full disk
under the state dir. Either froze every child (and so every request) before; now both stacks
keep serving with 0 failed requests and stop cleanly."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest
from launcher_run import REPO, chat_ok, up_env

from testkit import procs
from testkit.fs import fill, tmpfs
from testkit.net import free_port, poll_for
from testkit.procs import tagged_pids

pytestmark = pytest.mark.integration

LOAD_S = 12.0
MIN_REQUESTS = 10  # proves that traffic flowed; how much is the benchmarks' business
CLIENTS = 3
STOP_BUDGET_S = 60.0


class Up:
    """`dynlaunch up mocker --workers 2` with stdout sent where the test says, and stderr read
    unless it is sent somewhere too."""

    def __init__(self, tmp: Path, state_dir: Path, stdout: int, stderr: int | None = None) -> None:
        self.port = free_port()
        self.state_dir = state_dir
        env = up_env(tmp)
        argv = [sys.executable, "-m", "launcher", "up", "mocker", "--workers", "2",
                "--namespace", f"of-{uuid.uuid4().hex[:8]}", "--http-port", str(self.port),
                "--state-dir", str(state_dir)]  # fmt: skip
        self.proc = subprocess.Popen(argv, cwd=REPO, env=env, stdin=subprocess.DEVNULL,
                                     stdout=stdout, stderr=stderr or subprocess.PIPE, text=True,
                                     start_new_session=True)  # fmt: skip
        self.err: list[str] = []
        self._reader: threading.Thread | None = None
        if stderr is None:
            self._reader = threading.Thread(target=self._pump, daemon=True)
            self._reader.start()
        self.run_id = ""

    def _pump(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.err.append(line.rstrip("\n"))

    def wait_ready(self, timeout: float = 180.0) -> None:
        def ready() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"launcher exited {self.proc.returncode}:\n{self.dump()}")
            if self._reader is None:  # nothing to read the ready line from
                return (self.state_dir / "launcher.json").exists() and chat_ok(self.port)
            return any("dynlaunch: ready:" in line for line in list(self.err))

        poll_for(ready, timeout, "the stack to be ready")
        self.run_id = str(json.loads((self.state_dir / "launcher.json").read_text())["run_id"])

    def stop(self) -> tuple[int, float]:
        began = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(STOP_BUDGET_S + 30)
        took = time.monotonic() - began
        self._close()
        return code, took

    def _close(self) -> None:
        if self._reader is None:
            return
        self._reader.join(10)
        if self.proc.stderr is not None and not self._reader.is_alive():
            self.proc.stderr.close()

    def kill(self) -> None:
        procs.kill_run(self.proc.pid if self.proc.returncode is None else None, self.run_id)
        self.proc.wait(10)
        self._close()

    def dump(self) -> str:
        return "\n".join(["--- stderr", *self.err[-60:]])


def _load(port: int, seconds: float) -> list[bool]:
    """``CLIENTS`` threads sending small chat completions for ``seconds``; each result."""
    results: list[bool] = []
    stop_at = time.monotonic() + seconds
    body = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}
    url = f"http://127.0.0.1:{port}/v1/chat/completions"

    def client() -> None:
        with httpx.Client(timeout=30) as http:
            while time.monotonic() < stop_at:
                try:
                    results.append(http.post(url, json=body).status_code == 200)
                except httpx.HTTPError:
                    results.append(False)

    threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def _log_sizes(logs: Path) -> dict[str, int]:
    return {p.name: p.stat().st_size for p in logs.glob("*.log")}


@pytest.mark.parametrize("stalled", ["stdout", "stdout and stderr"])
def test_an_output_nobody_reads_never_stops_the_stack(
    started: list[Up], tmp_path: Path, stalled: str
) -> None:
    """`dynlaunch up | less`, a stuck log collector; or a terminal paused with Ctrl-S."""
    read_end, write_end = os.pipe()  # the read end stays open and unread: writes block
    try:
        stderr = write_end if stalled == "stdout and stderr" else None
        up = Up(tmp_path, tmp_path / "state", stdout=write_end, stderr=stderr)
        started.append(up)
        os.close(write_end)
        write_end = -1
        up.wait_ready()
        logs = up.state_dir / "logs"
        before = _log_sizes(logs)
        results = _load(up.port, LOAD_S)
        assert len(results) >= MIN_REQUESTS, up.dump()
        assert all(results), f"{results.count(False)} of {len(results)} requests failed"
        print(f"{len(results)} requests, all good")
        after = _log_sizes(logs)
        assert after["frontend.log"] > before["frontend.log"]  # the logs kept growing
        code, took = up.stop()
        print(f"stopped in {took:.1f}s with exit code {code}")
        assert code == 0, up.dump()
        assert took < STOP_BUDGET_S
        assert not tagged_pids(up.run_id)
    finally:
        os.close(read_end)
        if write_end >= 0:
            os.close(write_end)


@pytest.mark.parametrize(
    "full",
    [
        "logs",  # a separate, full volume for the logs
        "state",  # the whole state dir (the case)
    ],
)
def test_a_full_disk_never_stops_the_stack(started: list[Up], tmp_path: Path, full: str) -> None:
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    where = state_dir / "logs" if full == "logs" else tmp_path / "fs"
    with tmpfs(where, "320m") as fs:
        up = Up(tmp_path, state_dir if full == "logs" else fs / "state", stdout=subprocess.DEVNULL)
        started.append(up)
        up.wait_ready()
        fill(fs)
        assert os.statvfs(fs).f_bavail == 0
        results = _load(up.port, LOAD_S)
        assert len(results) >= MIN_REQUESTS, up.dump()
        assert all(results), f"{results.count(False)} of {len(results)} requests failed"
        print(f"{len(results)} requests, all good")
        warnings = [line for line in up.err if "cannot write" in line and "status.json" not in line]
        per_child = [re.search(r" (\S+): cannot write ", line) for line in warnings]
        names = [m.group(1) for m in per_child if m]
        assert "frontend" in names, up.dump()  # it logs every request
        assert len(names) == len(set(names)), warnings  # one warning per child, not per line
        assert all("(No space left on device); dropping its log lines" in w for w in warnings)
        status_warnings = [line for line in up.err if "status.json" in line]
        assert len(status_warnings) <= 1, status_warnings  # once, not at every change
        code, took = up.stop()
        print(f"stopped in {took:.1f}s with exit code {code}")
        assert code == 0, up.dump()
        assert took < STOP_BUDGET_S
        assert not tagged_pids(up.run_id)
