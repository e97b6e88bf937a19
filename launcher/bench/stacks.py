"""One `dynlaunch up` for `bench prefix --compare-router`, whose frontend changes router mode.

The stack starts from a config file of the bench's own (the user's config, or none, with
``frontend.router_mode`` set) and moves to the next mode by `dynlaunch reload` of the same file
with the next mode (`switch`): reload replaces only what changed, the frontend (and SGLang workers,
whose KV-event endpoints kv adds), so the mocker's workers keep running and only the frontend's
start-up is paid per mode. The workers keep what they cached: each mode sends prompts of its own.

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
import yaml

from launcher import control
from launcher.errors import EXIT_USAGE, BenchError, ConfigError
from launcher.supervision import control_socket

READY = "dynlaunch: ready:"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def up_argv(backend: str, state_dir: Path, up_args: list[str]) -> list[str]:
    """`up`'s argv: ``up_args`` with a state dir and a free HTTP port of the bench's own, put
    before a ``--`` (what follows it is the engine's)."""
    cut = up_args.index("--") if "--" in up_args else len(up_args)
    args, engine = list(up_args[:cut]), up_args[cut:]
    if "--http-port" not in args:
        args += ["--http-port", str(free_port())]  # never the default 8000 of a running stack
    args += ["--state-dir", str(state_dir)]
    return [sys.executable, "-m", "launcher", "up", backend, *args, *engine]


def mode_config(workdir: Path, user_config: str | None, mode: str) -> Path:
    """``workdir``/router-MODE.yaml: the user's config (or nothing) with frontend.router_mode."""
    data: dict[str, object] = {}
    if user_config is not None:
        try:
            loaded = yaml.safe_load(Path(user_config).read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as err:
            raise ConfigError(f"--config {user_config}: cannot read it: {err}") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"--config {user_config}: not a mapping of settings")
        data = dict(loaded or {})
    frontend = data.get("frontend")
    data["frontend"] = {**(frontend if isinstance(frontend, dict) else {}), "router_mode": mode}
    path = workdir / f"router-{mode}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    os.chmod(path, 0o600)
    return path


@contextlib.contextmanager
def stack(
    backend: str, config: Path, up_args: list[str], workdir: Path, environ: Mapping[str, str]
) -> Iterator[dict[str, object]]:
    """A ready `dynlaunch up -c config`; its launcher.json record. Stopped (SIGTERM, the
    launcher's own stop) on the way out."""
    state = workdir / "stack"
    log_path = workdir / "up.log"
    # The router mode comes from the config file alone: reload resolves the file again with the
    # run's environment, where a variable would win over it.
    env = {k: v for k, v in environ.items() if k != "DYNLAUNCH_FRONTEND__ROUTER_MODE"}
    with open(log_path, "w", encoding="utf-8") as log:
        os.chmod(log_path, 0o600)
        proc = subprocess.Popen(
            up_argv(backend, state, ["--config", str(config), *up_args]),
            env=env,
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
        )
        try:
            yield _wait_ready(proc, state, log_path, config.stem.replace("router-", "router ", 1))
        finally:
            _stop(proc, state)


def switch(info: Mapping[str, object], config: Path, model: str) -> None:
    """`dynlaunch reload --config config` on the running stack, then wait until its (new)
    frontend lists ``model`` again."""
    sock = Path(str(info["state_dir"])) / control_socket.SOCKET_NAME
    reply = control_socket.call(sock, {"op": "reload", "config": str(config)}, lambda _l: None)
    if not reply.get("ok"):
        raise BenchError(f"{config.stem}: reload failed: {reply.get('error', reply)}")
    url = str(info["url"]).rstrip("/")
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            listed = httpx.get(f"{url}/v1/models", timeout=5).json().get("data") or []
            if any(m.get("id") == model for m in listed):
                return
        except (httpx.HTTPError, ValueError):
            pass
        time.sleep(0.5)
    raise BenchError(f"{config.stem}: the new frontend did not list {model!r} within 300 s")


def _wait_ready(
    proc: subprocess.Popen[bytes], state: Path, log_path: Path, what: str
) -> dict[str, object]:
    """`up` says when every model answers (or gives up after its own start-up timeout)."""
    while True:
        if proc.poll() is not None:
            text = log_path.read_text(encoding="utf-8", errors="replace")
            said = [line for line in text.splitlines() if line.startswith("dynlaunch: error")]
            why = said[-1].removeprefix("dynlaunch: error: ") if said else f"its log: {log_path}"
            error = ConfigError if proc.returncode == EXIT_USAGE else BenchError
            raise error(f"{what}: dynlaunch up exited {proc.returncode}: {why}")
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
