"""clear-namespace test helpers: a server process, the real CLI, JetStream fixtures. The generic
ones (waiting, ports, etcd's gateway, Dynamo's keys) are in `testkit`."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import nats

REPO = Path(__file__).resolve().parents[2]


class Server:
    """A child process in its own session; stopped by its pid (SIGTERM, then SIGKILL)."""

    def __init__(self, argv: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.log = log
        self._out = open(log, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            argv, stdout=self._out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: the way a worker dies without cleaning up."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL to its whole process group (its session): what it forked goes
        too, even when it exited cleanly and left a child behind."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout)
        if self.proc.returncode is None:  # not reaped yet: its pid is still its group's
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        self._out.close()

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """The real `dynlaunch` command line, in a subprocess."""
    unset = ("ETCD_ENDPOINTS", "NATS_SERVER", "DYN_FILE_KV", "DYN_DISCOVERY_BACKEND")
    full = {k: v for k, v in os.environ.items() if k not in unset}
    full["XDG_STATE_HOME"] = "/nonexistent/dynlaunch-test-state"  # no running `up` to fall back on
    full |= env or {}
    return subprocess.run(
        [sys.executable, "-m", "launcher", *args],
        cwd=REPO, env=full, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def cli_json(*args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    done = cli(*args, "--json", env=env)
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert isinstance(data, dict)
    return data


def removed_keys(report: dict[str, Any]) -> set[str]:
    return {item["key"] for item in report["removed"]}


# -- NATS JetStream fixtures -----------------------------------------------------------------------


def make_streams(url: str, object_stores: list[str], streams: list[str]) -> None:
    """Object stores (each holding a config.json) and plain streams, as Dynamo 0.5 leaves them."""

    async def work() -> None:
        nc = await nats.connect(url, connect_timeout=5)
        try:
            js = nc.jetstream()
            for bucket in object_stores:
                store = await js.create_object_store(bucket)
                await store.put("config.json", b'{"model_type": "llama"}')
            for name in streams:
                await js.add_stream(name=name, subjects=[f"{name}.*"])
                await js.publish(f"{name}.x", b"event")
        finally:
            await nc.close()

    asyncio.run(work())


class NatsServices:
    """Real NATS micro services shaped like Dynamo 0.5 workers, each a child process
    (tests/children/nats_service.py: service SERVICE, subjects SERVICE.generate-LEASE and
    SERVICE.load_metrics-LEASE); `stop` kills them all."""

    CHILD = Path(__file__).resolve().parents[1] / "children" / "nats_service.py"

    def __init__(self, url: str) -> None:
        self.url = url
        self.procs: list[subprocess.Popen[str]] = []

    def start(self, service: str, lease: str) -> subprocess.Popen[str]:
        """Start one and wait until it is registered with NATS."""
        argv = [sys.executable, str(self.CHILD), self.url, service, lease]
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
        self.procs.append(proc)
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        return proc

    def stop(self) -> None:
        for proc in self.procs:
            proc.kill()
            proc.wait(10)
            if proc.stdout is not None:
                proc.stdout.close()
