"""Run the real `dynlaunch up` as a subprocess and watch it: its lines, its process tree."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx

from testkit import procs
from testkit.net import free_port, poll_for

REPO = Path(__file__).resolve().parents[2]
FENCE_LINE = "fenced: revoked its etcd lease"  # dynlaunch's line for a dead worker's lease


def chat(port: int, stream: bool, max_tokens: int = 8) -> httpx.Response:
    """One small chat completion of the model `tiny` through the frontend on ``port``."""
    body = {
        "model": "tiny",
        "messages": [{"role": "user", "content": "Hello there"}],
        "max_tokens": max_tokens,
        "stream": stream,
    }
    return httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=body, timeout=30)


def chat_ok(port: int) -> bool:
    """One small chat completion through the frontend on ``port`` succeeds."""
    try:
        return chat(port, stream=False, max_tokens=4).status_code == 200
    except httpx.HTTPError:
        return False


def up_env(home: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a dynlaunch a test starts: the caller's without DYNLAUNCH_*, the infra
    endpoints and XDG_STATE_HOME; HOME in the test's directory; XDG_CACHE_HOME the session's
    (tests/conftest.py: the tiny model is made there once, outside the source tree); ``extra``."""
    dropped = ("ETCD_ENDPOINTS", "NATS_SERVER", "XDG_STATE_HOME")
    env = {k: v for k, v in os.environ.items() if not k.startswith("DYNLAUNCH_")}
    env = {k: v for k, v in env.items() if k not in dropped}
    return env | {"HOME": str(home)} | dict(extra or {})


class Launcher:
    """`python -m launcher up ...` with stderr (lifecycle lines) and stdout (children) captured."""

    def __init__(
        self,
        args: list[str],
        tmp: Path,
        env: dict[str, str] | None = None,
        prefix: tuple[str, ...] = (),
    ) -> None:
        self.state_dir = tmp / "state"
        full_env = up_env(tmp, env)
        argv = [*prefix, sys.executable, "-m", "launcher", "up", *args]
        argv += ["--state-dir", str(self.state_dir)]
        self.proc = subprocess.Popen(
            argv,
            cwd=REPO,
            env=full_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # so that kill() takes a wrapper (unshare) and dynlaunch
        )
        self.err: list[str] = []
        self.out: list[str] = []
        self._threads = [
            threading.Thread(target=self._pump, args=(self.proc.stderr, self.err), daemon=True),
            threading.Thread(target=self._pump, args=(self.proc.stdout, self.out), daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    @staticmethod
    def _pump(stream: object, into: list[str]) -> None:
        for line in stream:  # type: ignore[attr-defined]
            into.append(line.rstrip("\n"))

    def stderr_has(self, text: str) -> bool:
        return any(text in line for line in list(self.err))

    def wait_ready(self, timeout: float = 120.0) -> None:
        def ready() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"launcher exited {self.proc.returncode}:\n" + self.dump())
            return self.stderr_has("dynlaunch: ready:")

        poll_for(ready, timeout, "the ready line")

    def info(self) -> dict[str, object]:
        data = json.loads((self.state_dir / "launcher.json").read_text())
        assert isinstance(data, dict)
        return data

    def child_pid(self, name: str, nth: int = 1) -> int:
        """The pid of the nth start of child ``name``, from the lifecycle lines."""
        starts = [
            line for line in list(self.err) if f" {name} pid=" in line and ": started" in line
        ]
        return int(starts[nth - 1].split(f" {name} pid=")[1].split(":")[0])

    def starts(self, name: str) -> int:
        """How many times child ``name`` was started, from the lifecycle lines."""
        return sum(1 for line in list(self.err) if f" {name} pid=" in line and ": started" in line)

    def kill_and_fenced_lease(self, name: str = "worker-0", timeout: float = 90.0) -> int:
        """SIGKILL child ``name`` and wait for dynlaunch's fence line: the etcd lease it revoked
        (the line's last word, in hex)."""
        os.kill(self.child_pid(name), signal.SIGKILL)
        poll_for(lambda: self.stderr_has(FENCE_LINE), timeout, "the fence")
        line = next(x for x in self.err if FENCE_LINE in x)
        return int(line.rsplit(" ", 1)[1], 16)

    def status(self) -> dict[str, Any]:
        """`dynlaunch status --json` of the run, from the real CLI."""
        done = subprocess.run(
            [sys.executable, "-m", "launcher", "status", "--state-dir", str(self.state_dir),
             "--json"], capture_output=True, text=True, check=True, cwd=REPO, timeout=60,
        )  # fmt: skip
        report = json.loads(done.stdout)
        assert isinstance(report, dict)
        return report

    def cli(self, tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
        """`dynlaunch ARGS --state-dir STATE` against this run (restart, scale, reload, ...),
        through the real CLI, with the test's own HOME under ``tmp``."""
        return subprocess.run(
            [sys.executable, "-m", "launcher", *args, "--state-dir", str(self.state_dir)],
            capture_output=True, text=True, cwd=REPO, env=up_env(tmp), timeout=300,
        )  # fmt: skip

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout: float = 60.0) -> int:
        self.proc.send_signal(sig)
        return self.wait(timeout)

    def wait(self, timeout: float) -> int:
        code = self.proc.wait(timeout)
        self._close()
        return code

    def kill(self) -> None:
        """The fallback of every test's `finally`, also after a clean stop: SIGKILL the launcher's
        process group and whatever still carries its run id."""
        run_id = None
        with contextlib.suppress(OSError, ValueError, KeyError):
            run_id = str(self.info()["run_id"])
        procs.kill_run(self.proc.pid if self.proc.returncode is None else None, run_id)
        self.proc.wait(10)
        self._close()

    def _close(self) -> None:
        for thread in self._threads:
            thread.join(5)
        if any(thread.is_alive() for thread in self._threads):
            return  # a reader still blocks: closing its stream would block too
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None and not stream.closed:
                stream.close()

    def dump(self) -> str:
        return "\n".join(["--- stderr", *self.err[-60:], "--- stdout", *self.out[-60:]])


CHILDREN = ("etcd", "nats", "frontend", "worker-0", "worker-1")  # of `up mocker --workers 2`


def make_model(path: Path) -> Path:
    """The tiny offline model at ``path``, made by scripts/make_tiny_model.py (a subprocess)."""
    subprocess.run([sys.executable, str(REPO / "scripts" / "make_tiny_model.py"), str(path)],
                   check=True, capture_output=True, timeout=120)  # fmt: skip
    return path


def up_mocker(
    started: list[Launcher], tmp: Path, *args: str, tag: str = "t",
    env: Mapping[str, str] | None = None, prefix: tuple[str, ...] = (),
) -> tuple[Launcher, int]:  # fmt: skip
    """`up mocker` in a fresh namespace (``tag``-xxxxxxxx) on a free HTTP port, added to the test's
    ``started`` (tests/conftest.py kills it at teardown); the launcher and its port."""
    port = free_port()
    ns = f"{tag}-{uuid.uuid4().hex[:8]}"
    argv = ["mocker", "--namespace", ns, "--http-port", str(port), *args]
    launcher = Launcher(argv, tmp, env=dict(env or {}), prefix=prefix)
    started.append(launcher)
    return launcher, port


class Load:
    """Client threads sending small chat completions to ``port`` until ``stop()``; each request
    recorded as (ok, seconds). ``timeout`` bounds one request (a hung worker holds one until it
    is killed and the request migrates)."""

    def __init__(
        self, port: int, clients: int = 3, timeout: float = 60.0, model: str = "tiny"
    ) -> None:
        self.url = f"http://127.0.0.1:{port}/v1/chat/completions"
        self.timeout = timeout
        self.model = model
        self.results: list[tuple[bool, float]] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._client, daemon=True) for _ in range(clients)]
        for thread in self._threads:
            thread.start()

    def _client(self) -> None:
        body = {"model": self.model, "messages": [{"role": "user", "content": "hi"}],
                "max_tokens": 8}  # fmt: skip
        with httpx.Client(timeout=self.timeout) as http:
            while not self._stop.is_set():
                began = time.monotonic()
                try:
                    ok = http.post(self.url, json=body).status_code == 200
                except httpx.HTTPError:
                    ok = False
                self.results.append((ok, time.monotonic() - began))

    def stop(self) -> list[tuple[bool, float]]:
        self._stop.set()
        for thread in self._threads:
            thread.join(self.timeout + 5)
        return list(self.results)

    @staticmethod
    def failed(results: list[tuple[bool, float]]) -> int:
        return sum(1 for ok, _ in results if not ok)


def sigkill_under_load(
    launcher: Launcher, port: int, victim: str = "worker-0", clients: int = 4, each: int = 40
) -> list[tuple[bool, float]]:
    """SIGKILL ``victim`` while ``clients`` loop on chat completions: ``each`` answers before the
    kill, its restart, ``each`` answers after; every request's result."""
    load = Load(port, clients=clients)
    try:
        poll_for(lambda: sum(ok for ok, _ in load.results) >= each, 120, f"{each} answers before")
        os.kill(launcher.child_pid(victim), signal.SIGKILL)
        poll_for(lambda: launcher.starts(victim) >= 2, 120, f"{victim} started again")
        served = len(load.results)
        poll_for(lambda: len(load.results) >= served + each, 120, f"{each} answers after")
        time.sleep(1)
    finally:
        results = load.stop()
    return results
