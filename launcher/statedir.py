"""The state dir of one running launcher: its lock and pid, children's logs, embedded infra data."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import time
from pathlib import Path
from types import TracebackType
from typing import IO

from launcher.errors import ConfigError
from launcher.plan import Plan
from launcher.supervisor import Child


def _write_atomic(path: Path, data: object) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data) + "\n")
    tmp.replace(path)


def plan_stop_budget(plan: Plan, stop_timeout_s: float) -> float:
    """Worst case of a stop: every tier waits its timeout, plus a margin for the sweep."""
    tiers = {p.role for p in plan.processes}
    return len(tiers) * stop_timeout_s + 5.0


class StateDir:
    """Held for the launcher's lifetime; a second launcher on the same dir is refused (exit 2)."""

    def __init__(self, root: Path, namespace: str) -> None:
        self.root = root
        self.namespace = namespace
        self.logs = root / "logs"
        self._lock: IO[str] | None = None

    def __enter__(self) -> StateDir:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise ConfigError(
                f"--state-dir {self.root}: cannot create it ({err.strerror})"
            ) from None
        lock = open(self.root / "launcher.lock", "a+")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            holder = (
                (self.root / "launcher.pid").read_text().strip() if self.pid_file.exists() else "?"
            )
            raise ConfigError(
                f"--state-dir {self.root}: in use by dynlaunch pid {holder} "
                f"(namespace {self.namespace!r}); stop it first or pick another --state-dir"
            ) from None
        self._lock = lock
        self.pid_file.write_text(f"{os.getpid()}\n")
        # Embedded etcd and NATS start empty: no registration survives from an earlier run.
        for data in ("etcd", "nats"):
            shutil.rmtree(self.root / data, ignore_errors=True)
        self.logs.mkdir(exist_ok=True)
        return self

    def record(self, run_id: str, plan: Plan, stop_timeout_s: float) -> None:
        """What `status`, `down`, `health` and `clear-namespace` need to find this run."""
        info = {
            "pid": os.getpid(),
            "run_id": run_id,
            "namespace": self.namespace,
            "url": plan.url,
            "model": plan.served_model,
            "etcd": plan.etcd_endpoints,
            "nats": plan.nats_url,
            "stop_budget_s": plan_stop_budget(plan, stop_timeout_s),
        }
        _write_atomic(self.root / "launcher.json", info)

    def write_status(self, children: list[Child]) -> None:
        """The children as `dynlaunch status` shows them; rewritten on every lifecycle change."""
        rows = [
            {
                "name": c.name,
                "role": c.spec.role,
                "pid": c.pid if c.alive else None,
                "state": c.state,
                "restarts": c.restarts,
                "started": c.started_wall if c.alive else None,
                "ports": dict(c.spec.ports),
                "gpus": list(c.spec.gpus),
            }
            for c in children
        ]
        _write_atomic(self.root / "status.json", {"updated": time.time(), "children": rows})

    @property
    def pid_file(self) -> Path:
        return self.root / "launcher.pid"

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for name in ("launcher.pid", "launcher.json", "status.json"):
            with contextlib.suppress(OSError):
                (self.root / name).unlink()
        if self._lock is not None:
            self._lock.close()
