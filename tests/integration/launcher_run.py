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
from pathlib import Path

import httpx

from testkit.net import poll_for

REPO = Path(__file__).resolve().parents[2]


def chat_ok(port: int) -> bool:
    """One small chat completion through the frontend on ``port`` succeeds."""
    body = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    try:
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        return httpx.post(url, json=body, timeout=30).status_code == 200
    except httpx.HTTPError:
        return False


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
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("DYNLAUNCH_")}
        full_env |= {"HOME": str(tmp), "XDG_CACHE_HOME": str(REPO / ".cache-test")}
        full_env.pop("ETCD_ENDPOINTS", None)
        full_env.pop("NATS_SERVER", None)
        full_env |= env or {}
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

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout: float = 60.0) -> int:
        self.proc.send_signal(sig)
        return self.wait(timeout)

    def wait(self, timeout: float) -> int:
        code = self.proc.wait(timeout)
        self._close()
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
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


class Load:
    """Client threads sending small chat completions to ``port`` until ``stop()``; each request
    recorded as (ok, seconds). ``timeout`` bounds one request (a hung worker holds one until it
    is killed and the request migrates)."""

    def __init__(self, port: int, clients: int = 3, timeout: float = 60.0) -> None:
        self.url = f"http://127.0.0.1:{port}/v1/chat/completions"
        self.timeout = timeout
        self.results: list[tuple[bool, float]] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._client, daemon=True) for _ in range(clients)]
        for thread in self._threads:
            thread.start()

    def _client(self) -> None:
        body = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}
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
