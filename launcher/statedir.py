"""The state dir of one running launcher: its lock and pid, children's logs, embedded infra data."""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import stat
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING

from launcher import credentials, procid
from launcher.compat import for_version
from launcher.errors import ConfigError, DynlaunchError, StartupError

if TYPE_CHECKING:  # `status` and `clear-namespace` read states_root without the planner
    from launcher.plan import Plan
    from launcher.supervision.supervisor import Child

log = logging.getLogger(__name__)


def check_private(path: Path, origin: str) -> None:
    """A state dir holds credentials and logs: it must be the user's own and writable by nobody
    else; otherwise exit 2 with the fix. A path that does not exist yet passes (it is made 0700)."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return
    except OSError as err:
        raise ConfigError(f"{origin} {path}: cannot read it ({err.strerror})") from None
    if st.st_uid != os.geteuid():
        raise ConfigError(
            f"{origin} {path}: owned by uid {st.st_uid}, not by you (uid {os.geteuid()}); "
            "another user could read or change its credentials and logs: pick a directory of "
            "your own with --state-dir"
        )
    if st.st_mode & 0o022:
        raise ConfigError(
            f"{origin} {path}: writable by group or others (mode {stat.S_IMODE(st.st_mode):o}); "
            f"run `chmod 700 {path}` or pick another --state-dir"
        )


def states_root(environ: Mapping[str, str]) -> Path:
    """Where every run's state dir lives by default: $XDG_STATE_HOME/dynlaunch."""
    base = environ.get("XDG_STATE_HOME") or os.path.join(
        environ.get("HOME", "/tmp"), ".local", "state"
    )
    return Path(base) / "dynlaunch"


def _write_atomic(path: Path, data: object) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data) + "\n")
    tmp.replace(path)


STOP_MARGIN_S = 5.0  # the sweep of what is left after the last tier


def stop_budget(tiers: int, stop_timeout_s: float) -> float:
    """Worst case of a stop: every tier waits its timeout, plus a margin for the sweep. `down`
    waits this long; a pod's terminationGracePeriodSeconds is at least this."""
    return tiers * stop_timeout_s + STOP_MARGIN_S


def plan_stop_budget(plan: Plan, stop_timeout_s: float) -> float:
    """The stop budget of a run: one tier per role it starts."""
    return stop_budget(len({p.role for p in plan.processes}), stop_timeout_s)


INFRA_DIR = "infra"  # embedded etcd's and NATS's data: plan.py puts them under STATE/infra/
MARKER = "DYNLAUNCH-OWNED.json"  # written when dynlaunch creates STATE/infra; nothing else is wiped


class StateDir:
    """Held for the launcher's lifetime; a second launcher on the same dir is refused (exit 2).

    ``embedded`` names the infra this run starts itself ("etcd", "nats"): only their data dirs
    under the marked STATE/infra are wiped, so that no registration survives from an earlier run.
    External infra's data, logs and anything dynlaunch did not create are never deleted.
    """

    def __init__(
        self, root: Path, namespace: str, run_id: str = "", embedded: Sequence[str] = ()
    ) -> None:
        self.root = root
        self.namespace = namespace
        self.run_id = run_id
        self.embedded = tuple(embedded)
        self.logs = root / "logs"
        self._lock: IO[str] | None = None
        self._status_failing = False  # status.json could not be written (disk full): warned
        self._children: list[Child] = []  # as last written
        self.operation: dict[str, object] | None = None  # `dynlaunch restart` in flight
        self._info: dict[str, object] | None = None  # launcher.json as last written

    @property
    def control_socket(self) -> Path:
        """Where `dynlaunch restart` reaches this run (launcher/supervision/control_socket.py)."""
        return self.root / "control.sock"

    def set_operation(self, text: str | None) -> None:
        """The operation in flight and its current step (None: none), shown by `status`."""
        began = self.operation["started"] if self.operation else time.time()
        self.operation = None if text is None else {"step": text, "started": began}
        self.write_status(self._children)

    def __enter__(self) -> StateDir:
        try:
            self.root.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            self.root.mkdir(mode=0o700, exist_ok=True)
            check_private(self.root, "--state-dir")
            self.root.chmod(0o700)  # ours: logs, credentials and infra data are nobody else's
            lock = open(self.root / "launcher.lock", "a+")
        except OSError as err:
            raise ConfigError(
                f"--state-dir {self.root}: cannot write there ({err.strerror})"
            ) from None
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
        try:
            self.pid_file.write_text(f"{os.getpid()}\n")
            self.logs.mkdir(exist_ok=True)
            self._prepare_infra()
        except OSError as err:
            self.__exit__(None, None, None)
            raise ConfigError(
                f"--state-dir {self.root}: cannot write there ({err.strerror})"
            ) from None
        except DynlaunchError:
            self.__exit__(None, None, None)
            raise
        return self

    @property
    def infra(self) -> Path:
        return self.root / INFRA_DIR

    def _prepare_infra(self) -> None:
        """Create and mark STATE/infra, or wipe the embedded infra's data in our marked one."""
        if not self.embedded:
            return  # external etcd and NATS: nothing of theirs is ours to touch
        if not self.infra.exists() and not self.infra.is_symlink():
            self.infra.mkdir()
            mark = {"created_by": "dynlaunch", "run_id": self.run_id, "created": time.time()}
            _write_atomic(self.infra / MARKER, mark)
            return
        if not (self.infra / MARKER).is_file() or self.infra.is_symlink():
            raise ConfigError(
                f"--state-dir {self.root}: {self.infra} was not created by dynlaunch (no {MARKER} "
                "in it); move it away or pick another --state-dir"
            )
        for name in self.embedded:
            data = self.infra / name
            try:
                if data.is_symlink() or data.is_file():
                    data.unlink()
                elif data.exists():
                    shutil.rmtree(data)
            except OSError as err:
                raise StartupError(
                    f"cannot clear the embedded {name} data in {data}: {err.strerror}"
                ) from None

    def record(
        self, run_id: str, plan: Plan, stop_timeout_s: float, discovery: str = "etcd"
    ) -> None:
        """What `status`, `down`, `health` and `clear-namespace` need to find this run;
        ``discovery``: which discovery its Dynamo processes use (launcher.k8s.podenv)."""
        info = {
            **procid.me(),  # pid and start time: a reused pid is not this launcher
            "run_id": run_id,
            "namespace": self.namespace,
            "url": plan.url,
            "model": plan.served_model,
            # every model: its Dynamo component (where its workers register) and its workers
            "models": {
                m: {
                    "component": plan.component_of(m),
                    "workers": [p.name for p in plan.workers_of(m)],
                }
                for m in plan.models
            },
            "etcd": plan.etcd_endpoints,
            "nats": plan.nats_url,
            "stop_budget_s": plan_stop_budget(plan, stop_timeout_s),
            "dynamo_version": plan.dynamo_version,
            "layout": for_version(plan.dynamo_version).layout,  # how `status` counts
            "discovery": discovery,
            # whose logins are in STATE/credentials.json (`status`, `clear-namespace` use them)
            "generated_credentials": [
                p.role for p in plan.processes if plan.secret_files and p.role in ("etcd", "nats")
            ],
        }
        _write_atomic(self.root / "launcher.json", info)
        self._info = info
        for path, text in plan.secret_files:  # credentials, nats-server's config: 0600
            credentials.write_private(Path(path), text)
        for path, text in plan.files:  # the plan's files (0.5's mocker engine args), before a start
            tmp = Path(path + ".tmp")
            tmp.write_text(text, encoding="utf-8")
            tmp.replace(path)

    def write_status(self, children: list[Child]) -> None:
        """The children as `dynlaunch status` shows them; rewritten on every lifecycle change."""
        self._children = list(children)
        rows = [
            {
                "name": c.name,
                "role": c.spec.role,
                "pid": c.pid if c.alive else None,
                "state": c.state,
                "restarts": c.restarts,
                "live": c.health.live,  # liveness: answers at all (None: not probed yet)
                "ready": c.health.ready,  # its health URL says 200
                "liveness_failures": c.health.failures,
                "started": c.started_wall if c.alive else None,
                "ports": dict(c.spec.ports),
                "gpus": list(c.spec.gpus),
                **({"model": c.spec.model} if c.spec.model else {}),
            }
            for c in children
        ]
        try:
            data = {"updated": time.time(), "children": rows, "operation": self.operation}
            _write_atomic(self.root / "status.json", data)
        except OSError as err:  # a full disk must not end the run: `status` is only stale
            if not self._status_failing:
                log.warning("dynlaunch: cannot write %s (%s); `dynlaunch status` may be stale",
                            self.root / "status.json", err.strerror)  # fmt: skip
            self._status_failing = True
            return
        if self._status_failing:
            log.warning("dynlaunch: writing %s again", self.root / "status.json")
        self._status_failing = False
        self._record_workers(children)

    def _record_workers(self, children: list[Child]) -> None:
        """launcher.json's workers of each model as they are now: `scale` adds and removes them,
        `restart` renames them (worker-0.g2); rewritten only when they changed."""
        models = self._info.get("models") if self._info is not None else None
        if self._info is None or not isinstance(models, dict):
            return
        now = {
            model: about | {"workers": [c.name for c in children
                                        if c.spec.role == "worker" and c.spec.model == model]}
            for model, about in models.items()
        }  # fmt: skip
        if now == models:
            return
        info = self._info | {"models": now}
        with contextlib.suppress(OSError):  # a full disk: status.json's warning says it
            _write_atomic(self.root / "launcher.json", info)
            self._info = info

    @property
    def pid_file(self) -> Path:
        return self.root / "launcher.pid"

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for name in ("launcher.pid", "launcher.json", "status.json", "control.sock"):
            with contextlib.suppress(OSError):
                (self.root / name).unlink()
        if self._lock is not None:
            self._lock.close()
