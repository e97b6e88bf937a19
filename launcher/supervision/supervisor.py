"""The only code that spawns, signals and reaps processes.

Every child runs in its own session (so its process group is its own), with the run's tag
``DYNLAUNCH_RUN_ID`` in its environment. Stopping a child signals its whole group; a final sweep
finds descendants that left the group (SGLang's scheduler may call setsid) by that tag.
Reaping is ``waitpid(-1)``: it also collects the orphans handed to us, as PID 1 or as the
subreaper `dynlaunch up` makes itself (`become_subreaper`).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from launcher.plan import ProcessSpec, mask_argv
from launcher.supervision.deadman import RUN_TAG, kill_all, tagged_pids
from launcher.supervision.lifecycle import State, check_transition
from launcher.supervision.liveness import Health
from launcher.supervision.output import Relay

log = logging.getLogger(__name__)


PR_SET_CHILD_SUBREAPER = 36  # linux/prctl.h


def become_subreaper() -> bool:
    """Adopt our orphaned descendants (Linux): when a worker's main process dies first (SGLang
    ends its own tree with SIGKILL), its scheduler and detokenizer are re-parented to us instead
    of PID 1, so we reap them and no zombie of the run outlives it. True when it took effect."""
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    return int(libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)) == 0


def describe_status(status: int) -> str:
    """A wait status in words: 'exited with code 1', 'killed by SIGKILL'."""
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        name = signal.Signals(sig).name if sig in signal.Signals.__members__.values() else str(sig)
        return f"killed by {name}"
    return f"exited with code {os.waitstatus_to_exitcode(status)}"


def oom_kills() -> int | None:
    """The kernel's count of OOM kills on this host (/proc/vmstat oom_kill, cgroup ones too)."""
    try:
        for line in Path("/proc/vmstat").read_text().splitlines():
            if line.startswith("oom_kill "):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


# A Dynamo process that loses its etcd lease logs this, then exits 0.
LEASE_LOST = re.compile(r"lease.{0,40}(expired|revoked)|unable to maintain lease", re.I)


@dataclass
class Child:
    spec: ProcessSpec
    relay: Relay
    pid: int | None = None
    started_at: float = 0.0
    status: int | None = None  # raw wait status once reaped
    restarts: int = 0
    backoff_attempt: int = 0  # consecutive quick failures, for the backoff
    state: State = State.PENDING  # changed only through `to`
    next_start: float | None = None  # BACKOFF: when the restart is due
    started_wall: float = 0.0  # time.time() of the last start, for `status`
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    health: Health = field(default_factory=Health)  # what the liveness watcher last saw
    kill_at: float | None = None  # HUNG: SIGTERMed by us, SIGKILL due then
    oom_kills_at_start: int | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def alive(self) -> bool:
        return self.pid is not None and self.status is None

    def to(self, new: State, why: str) -> None:
        """The one way a child's state changes; refuses a move `lifecycle.TRANSITIONS` lacks."""
        check_transition(self.state, new)
        log.debug("%s pid=%s: %s -> %s (%s)", self.name, self.pid, self.state.value, new.value, why)
        self.state = new

    def exit_cause(self) -> str:
        """Why it exited (call before its state moves on from the one it died in): '' or ' (...)'
        to add to describe_status."""
        assert self.status is not None
        if self.state is State.STOPPING:
            return ""
        if self.state is State.HUNG:
            return " (dynlaunch stopped it: it failed liveness)"
        if os.WIFSIGNALED(self.status) and os.WTERMSIG(self.status) == signal.SIGKILL:
            now = oom_kills()
            if now is not None and self.oom_kills_at_start is not None:
                if now > self.oom_kills_at_start:
                    return (f" (the kernel's OOM killer ran {now - self.oom_kills_at_start} "
                            "time(s) on this host meanwhile: out of memory?)")  # fmt: skip
                return " (not by dynlaunch, and no OOM kill on this host meanwhile)"
            return " (not by dynlaunch)"
        lines = list(self.relay.tail)
        lost = next((m for line in reversed(lines) if (m := LEASE_LOST.search(line))), None)
        if lost is not None:  # from the match on: the message, not the timestamp and module
            return f" (it lost its etcd lease: {lost.string[lost.start() :].strip()[:160]!r})"
        return f" (last line: {lines[-1].strip()[-160:]!r})" if lines else " (it printed nothing)"


class Supervisor:
    def __init__(self, run_id: str, log_dir: Path, base_env: Mapping[str, str]) -> None:
        self.run_id = run_id
        self.log_dir = log_dir
        self.base_env = dict(base_env)
        self.children: dict[str, Child] = {}
        self._by_pid: dict[int, Child] = {}

    def add(self, spec: ProcessSpec, width: int) -> Child:
        child = Child(spec, Relay(spec.name, width, self.log_dir / f"{spec.name}.log"))
        self.children[spec.name] = child
        return child

    def spawn(self, child: Child, now: float) -> None:
        env = {**self.base_env, **child.spec.env, RUN_TAG: self.run_id}
        proc = subprocess.Popen(
            child.spec.argv,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        assert proc.stdout is not None
        child.proc, child.pid, child.status = proc, proc.pid, None
        # A restart (from BACKOFF) happens only once the stack was ready: it runs at once.
        child.to(State.RUNNING if child.state is State.BACKOFF else State.STARTING, "spawned")
        child.started_at, child.next_start = now, None
        child.kill_at, child.oom_kills_at_start = None, oom_kills()
        child.health = Health()  # a new process: liveness starts afresh
        child.started_wall = time.time()
        self._by_pid[proc.pid] = child
        child.relay.start(proc.stdout)
        shown = " ".join(mask_argv(child.spec.argv)[:4])  # a secret flag there shows as ***
        log.info("%s pid=%d: started: %s", child.name, proc.pid, shown)

    def reap(self) -> list[Child]:
        """Collect every exited child (and any orphan); return the known children that exited."""
        exited: list[Child] = []
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            child = self._by_pid.pop(pid, None)
            if child is None:
                log.debug("reaped orphan pid=%d: %s", pid, describe_status(status))
                continue
            child.status = status
            if child.proc is not None:  # keep Popen from waiting on a pid we reaped
                child.proc.returncode = os.waitstatus_to_exitcode(status)
            exited.append(child)
        return exited

    def signal_group(self, child: Child, sig: signal.Signals) -> None:
        if child.pid is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(child.pid, sig)

    def stop(
        self, children: Iterable[Child], timeout: float, hurry: Callable[[], bool] = lambda: False
    ) -> bool:
        """SIGTERM each group, wait up to ``timeout`` for all to exit, then SIGKILL what is left.

        ``hurry()`` turning true (a second Ctrl-C) skips the rest of the wait. Returns True when
        a child had to be SIGKILLed.
        """
        group = [c for c in children if c.pid is not None]
        for child in group:
            if child.alive and child.state is not State.STOPPING:  # (an operation's retiree)
                child.to(State.STOPPING, "asked to stop")
                log.info("%s pid=%d: stopping (SIGTERM)", child.name, child.pid)
                self.signal_group(child, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while any(c.alive for c in group) and time.monotonic() < deadline and not hurry():
            self.reap()
            time.sleep(0.05)
        killed = False
        for child in group:
            if child.alive:
                killed = True
                log.error("%s pid=%d: still running after %.1fs, SIGKILL", child.name, child.pid,
                          time.monotonic() - deadline + timeout)  # fmt: skip
            # The group may hold stragglers even when its leader is gone.
            self.signal_group(child, signal.SIGKILL)
        while any(c.alive for c in group):
            self.reap()
            time.sleep(0.02)
        for child in group:
            if child.state is State.STOPPING:
                child.to(State.STOPPED, describe_status(child.status or 0))
            child.relay.join(1.0)
        return killed

    def sweep(self) -> int:
        """SIGKILL every process that still carries this run's tag; return how many there were."""
        strays = tagged_pids(self.run_id)
        for pid in strays:
            log.warning("pid=%d: escaped its group; killed by the final sweep", pid)
        kill_all(strays, signal.SIGKILL)
        if strays:
            time.sleep(0.1)
        self.reap()  # and the zombies of group members killed earlier, adopted as a subreaper
        return len(strays)

    def start_deadman(self) -> subprocess.Popen[bytes]:
        """The dead-man switch: kills this run's processes if we die without stopping them.
        Keep the returned process's stdin open for as long as the children may live."""
        return subprocess.Popen(
            [sys.executable, "-m", "launcher.supervision.deadman", self.run_id],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            start_new_session=True,
        )
