"""One whole `dynlaunch up` per router mode, for `bench prefix --compare-router`.

Why a whole stack and not only a new frontend: one launcher holds a namespace (its lock), the
frontend's argv (its `--router-mode`) is fixed by the plan the launcher supervises, and fresh
workers give each mode the same empty caches (nothing of the last mode's prompts left in them).
The price is the workers' start-up time: seconds with the mocker, minutes with SGLang.

The stack is a real `dynlaunch up` (a child of this process, in its process group, so that a
Ctrl-C reaches it too); its supervisor starts and stops etcd, NATS, the frontend and the workers.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import httpx

from launcher import control
from launcher.errors import EXIT_USAGE, BenchError, ConfigError

READY = "dynlaunch: ready:"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def up_argv(backend: str, state_dir: Path, up_args: list[str]) -> list[str]:
    args = list(up_args)
    if "--http-port" not in args:
        args += ["--http-port", str(free_port())]  # never the default 8000 of a running stack
    return [sys.executable, "-m", "launcher", "up", backend, *args, "--state-dir", str(state_dir)]


@contextlib.contextmanager
def stack(
    backend: str, mode: str, up_args: list[str], workdir: Path, environ: Mapping[str, str]
) -> Iterator[dict[str, object]]:
    """A ready `dynlaunch up` with ``frontend.router_mode`` = ``mode``; its launcher.json record.
    Stopped (SIGTERM, the launcher's own stop) on the way out."""
    state = workdir / mode
    log_path = workdir / f"{mode}.log"
    env = dict(environ) | {"DYNLAUNCH_FRONTEND__ROUTER_MODE": mode}
    with open(log_path, "w", encoding="utf-8") as log:
        os.chmod(log_path, 0o600)
        proc = subprocess.Popen(
            up_argv(backend, state, up_args),
            env=env,
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
        )
        try:
            yield _wait_ready(proc, state, log_path, mode)
        finally:
            _stop(proc, state)


def _wait_ready(
    proc: subprocess.Popen[bytes], state: Path, log_path: Path, mode: str
) -> dict[str, object]:
    """`up` says when every model answers (or gives up after its own start-up timeout)."""
    while True:
        if proc.poll() is not None:
            text = log_path.read_text(encoding="utf-8", errors="replace")
            said = [line for line in text.splitlines() if line.startswith("dynlaunch: error")]
            why = said[-1].removeprefix("dynlaunch: error: ") if said else f"its log: {log_path}"
            error = ConfigError if proc.returncode == EXIT_USAGE else BenchError
            raise error(f"router {mode}: dynlaunch up exited {proc.returncode}: {why}")
        if READY in log_path.read_text(encoding="utf-8", errors="replace"):
            info = control.read_info(state)
            if info is not None:
                return info
        time.sleep(0.5)


def _stop(proc: subprocess.Popen[bytes], state: Path) -> None:
    if proc.poll() is not None:
        return
    info = control.read_info(state) or {}
    budget = float(str(info.get("stop_budget_s", 60.0))) + 30.0
    proc.terminate()
    try:
        proc.wait(budget)
    except subprocess.TimeoutExpired:
        proc.kill()  # its dead-man switch takes the children down with it
        proc.wait()


def worker_names(info: Mapping[str, object]) -> dict[int, str]:
    """Instance id -> child name, from each worker's own /metrics on its system port (the
    `worker_id` label of its `generate` endpoint's counters)."""
    names: dict[int, str] = {}
    for child in control.status(info).get("children", []):
        port = (child.get("ports") or {}).get("system")
        if child.get("role") != "worker" or not port:
            continue
        try:
            text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        except httpx.HTTPError:
            continue
        for line in text.splitlines():
            if 'dynamo_endpoint="generate"' in line and 'worker_id="' in line:
                names[int(line.split('worker_id="', 1)[1].split('"', 1)[0], 16)] = child["name"]
                break
    return names
