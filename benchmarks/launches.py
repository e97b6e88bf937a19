"""One launch of one side: `dynlaunch up mocker` (DynlaunchLaunch) or reference_launch.sh
(ScriptLaunch), started in a session of its own, watched through /proc, torn down for sure."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx

from benchmarks.harness import (
    MODEL,
    POLL_S,
    REPO,
    START_TIMEOUT_S,
    STOP_TIMEOUT_S,
    BenchError,
    Ctx,
    exit_status,
    kill_pids,
    wait_gone,
)  # fmt: skip
from testkit.procs import alive, cmdline_pids, tagged_pids, tree_pids


class Launch:
    """One stack, started by `dynlaunch up` or by reference_launch.sh."""

    side = ""

    def __init__(self, ctx: Ctx, workers: int) -> None:
        self.ctx = ctx
        self.workers = workers
        self.dir = ctx.fresh_dir(self.side)
        self.port = ctx.ports.pick()
        self.url = f"http://127.0.0.1:{self.port}"
        self.ns = f"bench-{uuid.uuid4().hex[:8]}"
        self.started_at = 0.0
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def proc(self) -> subprocess.Popen[bytes]:
        if self._proc is None:
            raise BenchError("not started")
        return self._proc

    def argv(self) -> list[str]:
        raise NotImplementedError

    def run_pids(self) -> set[int]:
        raise NotImplementedError

    def worker_pid(self, index: int) -> int:
        raise NotImplementedError

    def launcher_pids(self) -> set[int]:
        """The launcher's own processes (dynlaunch and its dead-man switch; the bash script)."""
        raise NotImplementedError

    def start(self) -> None:
        with open(self.dir / "stdout.log", "wb") as out, open(self.dir / "stderr.log", "wb") as err:
            self.started_at = time.monotonic()
            self._proc = subprocess.Popen(
                self.argv(),
                cwd=REPO,
                env=self.ctx.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,
            )
        self.ctx.reaper.procs.append(self._proc)

    def check_running(self) -> None:
        code = exit_status(self.proc.pid) if self.proc.returncode is None else self.proc.returncode
        if code is not None:
            tail = (self.dir / "stderr.log").read_text(errors="replace").splitlines()[-5:]
            raise BenchError(f"{self.side} exited with code {code}: {' / '.join(tail)}")

    def wait_serving(self, timeout: float = START_TIMEOUT_S) -> float:
        """Seconds from the command to the first 200 of a max_tokens=1 chat completion."""
        body = {"model": MODEL, "messages": [{"role": "user", "content": "ping"}], "max_tokens": 1}
        deadline = self.started_at + timeout
        with httpx.Client(timeout=httpx.Timeout(5.0, connect=1.0)) as client:
            while time.monotonic() < deadline:
                self.check_running()
                with contextlib.suppress(httpx.HTTPError, ValueError):
                    resp = client.post(f"{self.url}/v1/chat/completions", json=body)
                    if resp.status_code == 200 and resp.json().get("choices"):
                        return time.monotonic() - self.started_at
                time.sleep(POLL_S)
        raise BenchError(f"{self.side}: no successful completion within {timeout:.0f}s")

    def wait_registered(self, count: int, timeout: float = 60.0) -> None:
        """Until the frontend lists ``count`` generate instances (every worker routable)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_running()
            with contextlib.suppress(httpx.HTTPError, ValueError):
                health = httpx.get(f"{self.url}/health", timeout=2.0).json()
                found = [i for i in health.get("instances", []) if i.get("endpoint") == "generate"]
                if len(found) >= count:
                    return
            time.sleep(0.1)
        raise BenchError(f"{self.side}: {count} workers not registered within {timeout:.0f}s")

    def sigterm(self) -> None:
        os.kill(self.proc.pid, signal.SIGTERM)

    def teardown(self) -> None:
        """SIGTERM (if still up), bounded wait, then SIGKILL what is left."""
        if self._proc is None:
            return
        if self._proc.returncode is None and alive(self._proc.pid):
            self.sigterm()
        if wait_gone(self.run_pids, STOP_TIMEOUT_S, 0.1) is None:
            left = self.run_pids()
            self.ctx.forced.append(f"{self.side} ({self.dir.name}): {len(left)} processes")
            kill_pids(left, signal.SIGKILL)
            wait_gone(self.run_pids, 10.0)
        if not self.run_pids():  # reap only once nothing of the run is left
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(5.0)


class DynlaunchLaunch(Launch):
    side = "dynlaunch"

    def __init__(self, ctx: Ctx, workers: int) -> None:
        super().__init__(ctx, workers)
        self.state_dir = self.dir / "state"
        self._run_id: str | None = None
        self.verbose = False  # `dynlaunch -v up`: per-phase timings on stderr (diagnostics only)

    def argv(self) -> list[str]:
        argv = [str(self.ctx.dynamo.dynlaunch), *(["-v"] if self.verbose else []), "up", "mocker"]
        argv += ["--namespace", self.ns]
        argv += ["--http-port", str(self.port), "--state-dir", str(self.state_dir)]
        return argv + (["--workers", str(self.workers)] if self.workers != 1 else [])

    def _read_run_id(self) -> str | None:
        """From STATE/launcher.json (written before any child starts, removed at exit)."""
        if self._run_id is None:
            with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
                info = json.loads((self.state_dir / "launcher.json").read_text())
                self._run_id = str(info["run_id"])
                self.ctx.reaper.run_ids.append(self._run_id)
        return self._run_id

    @property
    def run_id(self) -> str:
        deadline = time.monotonic() + 30.0
        while (found := self._read_run_id()) is None:
            self.check_running()
            if time.monotonic() > deadline:
                raise BenchError("dynlaunch: no launcher.json after 30s")
            time.sleep(0.05)
        return found

    def launcher_pids(self) -> set[int]:
        """dynlaunch (until reaped) and its dead-man switch (found by its argv, each time)."""
        own = {self.proc.pid} if self.proc.returncode is None and alive(self.proc.pid) else set()
        run_id = self._read_run_id()
        return own | (
            cmdline_pids("launcher.supervision.deadman", run_id) if run_id is not None else set()
        )

    def run_pids(self) -> set[int]:
        """Every process carrying the run's tag, plus dynlaunch and its dead-man switch (before
        the run id is known: dynlaunch's process tree, while its pid is still ours)."""
        run_id = self._read_run_id()
        if run_id is not None:
            return tagged_pids(run_id) | self.launcher_pids()
        return tree_pids(self.proc.pid) if self.proc.returncode is None else set()

    def wait_serving(self, timeout: float = START_TIMEOUT_S) -> float:
        took = super().wait_serving(timeout)
        _ = self.run_id
        self.launcher_pids()
        return took

    def status(self) -> dict[str, Any]:
        """`dynlaunch status --state-dir D --json`."""
        dynlaunch = str(self.ctx.dynamo.dynlaunch)
        out = subprocess.run(
            [dynlaunch, "status", "--state-dir", str(self.state_dir), "--json"],
            env=self.ctx.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if out.returncode != 0:
            raise BenchError(f"dynlaunch status exited {out.returncode}: {out.stderr.strip()}")
        data = json.loads(out.stdout)
        assert isinstance(data, dict)
        return data

    def child(self, name: str, status: dict[str, Any] | None = None) -> dict[str, Any]:
        data = status or self.status()
        for row in data.get("children", []):
            if row.get("name") == name:
                assert isinstance(row, dict)
                return row
        raise BenchError(f"dynlaunch status lists no {name}")

    def worker_pid(self, index: int) -> int:
        pid = self.child(f"worker-{index}").get("pid")
        if not isinstance(pid, int):
            raise BenchError(f"worker-{index} has no pid in status")
        return pid

    def status_file_row(self, name: str) -> dict[str, Any] | None:
        """The child's row of STATE/status.json (what `status` shows), read without a process."""
        with contextlib.suppress(OSError, ValueError):
            for row in json.loads((self.state_dir / "status.json").read_text())["children"]:
                if row.get("name") == name:
                    return dict(row)
        return None

    def stderr_lines(self, *words: str) -> list[str]:
        text = (self.dir / "stderr.log").read_text(errors="replace")
        return [line for line in text.splitlines() if all(w in line for w in words)]


class ScriptLaunch(Launch):
    side = "script"

    def argv(self) -> list[str]:
        p, dynamo = self.ctx.ports, self.ctx.dynamo
        if dynamo.line == "0.5":  # Dynamo's defaults: no system port (its server is off)
            per_worker = ["--workers", str(self.workers)]
        else:
            per_worker = ["--system-ports", ",".join(str(p.pick()) for _ in range(self.workers))]
        return [
            "bash",
            str(dynamo.script),
            "--namespace",
            self.ns,
            "--http-port",
            str(self.port),
            "--etcd-port",
            str(p.pick()),
            "--etcd-peer-port",
            str(p.pick()),
            "--nats-port",
            str(p.pick()),
            "--nats-monitor-port",
            str(p.pick()),
            *per_worker,
            "--model-path",
            str(self.ctx.model_dir),
            "--state-dir",
            str(self.dir / "state"),
            "--python",
            str(dynamo.python),
            "--ready-timeout",
            str(int(START_TIMEOUT_S)),
        ]

    def launcher_pids(self) -> set[int]:
        return {self.proc.pid} if self.proc.returncode is None and alive(self.proc.pid) else set()

    def run_pids(self) -> set[int]:
        """The script's session and process tree: bash, etcd, NATS, frontend, workers, curl.
        (We reap bash only once these are gone, so its pid, the session id, stays ours.)"""
        return tree_pids(self.proc.pid) if self.proc.returncode is None else set()

    def worker_pid(self, index: int) -> int:
        path = self.dir / "state" / f"worker-{index}.pid"
        try:
            return int(path.read_text().strip())
        except (OSError, ValueError) as err:
            raise BenchError(f"no pid in {path}") from err


def make_launch(ctx: Ctx, side: str, workers: int) -> Launch:
    return DynlaunchLaunch(ctx, workers) if side == "dynlaunch" else ScriptLaunch(ctx, workers)


@contextlib.contextmanager
def launched(ctx: Ctx, side: str, workers: int = 1) -> Iterator[Launch]:
    launch = make_launch(ctx, side, workers)
    launch.start()
    try:
        yield launch
    finally:
        launch.teardown()
