"""A child's states and the pure decisions about them: restart (when), give up, or leave it down.

    PENDING -> STARTING -> RUNNING -> HUNG          (failed liveness: we SIGTERM, then SIGKILL)
    STARTING, RUNNING, HUNG -> EXITED               (it ended on its own, or we killed it as hung)
    EXITED -> BACKOFF -> STARTING or RUNNING        (`decide`: restart after a delay)
    EXITED -> FATAL                                 (a worker's crash loop, others serve on)
    STARTING, RUNNING, HUNG -> STOPPING -> STOPPED  (we stop it); BACKOFF -> STOPPED

`TRANSITIONS` is the whole graph; `Child.to` (supervisor.py) refuses any other move. The shell
passes in the facts (exit status, uptime, recent restart times, the clock); nothing here reads the
clock, spawns or signals.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

from launcher.errors import EXIT_FAILED, EXIT_SIGNAL_BASE


class State(str, Enum):
    PENDING = "pending"  # not started yet
    STARTING = "starting"  # spawned; the stack is not ready yet
    RUNNING = "running"
    HUNG = "hung"  # failed liveness: fenced and SIGTERMed by us, SIGKILL due
    EXITED = "exited"  # ended on its own; not restarted (its policy), or the run ends
    BACKOFF = "backoff"  # ended on its own; a restart is due
    FATAL = "fatal"  # crash-looped and left stopped while other workers serve
    STOPPING = "stopping"  # we asked it to stop
    STOPPED = "stopped"  # stopped by us


TRANSITIONS: dict[State, frozenset[State]] = {
    State.PENDING: frozenset({State.STARTING}),
    State.STARTING: frozenset({State.RUNNING, State.EXITED, State.STOPPING}),
    State.RUNNING: frozenset({State.HUNG, State.EXITED, State.STOPPING}),
    State.HUNG: frozenset({State.EXITED, State.STOPPING}),
    State.EXITED: frozenset({State.BACKOFF, State.FATAL}),
    State.BACKOFF: frozenset({State.STARTING, State.RUNNING, State.STOPPED}),
    State.FATAL: frozenset(),
    State.STOPPING: frozenset({State.STOPPED}),
    State.STOPPED: frozenset(),
}


class TransitionError(Exception):
    """A move the state graph does not have: a bug in dynlaunch, never a user's error."""


def check_transition(old: State, new: State) -> None:
    if new not in TRANSITIONS[old]:
        raise TransitionError(f"{old.value} -> {new.value} is not a transition of a child")


class Policy(str, Enum):
    ALWAYS = "always"
    ON_FAILURE = "on-failure"
    NEVER = "never"


@dataclass(frozen=True)
class RestartRules:
    policy: Policy
    startsecs: float  # a child up this long has started well: its backoff starts afresh
    max_restarts: int  # more restarts than this within window_s is a crash loop
    window_s: float
    backoff_base_s: float
    backoff_cap_s: float


@dataclass(frozen=True)
class Verdict:
    next: State  # BACKOFF (restart after delay_s), EXITED (left down), FATAL (crash loop)
    delay_s: float = 0.0
    attempt: int = 0  # the backoff attempt after this decision

    @property
    def restart(self) -> bool:
        return self.next is State.BACKOFF

    @property
    def crash_loop(self) -> bool:
        return self.next is State.FATAL


def exit_code(status: int) -> int:
    """Shell convention: the child's code, or 128+N when signal N ended it."""
    code = os.waitstatus_to_exitcode(status)
    return EXIT_SIGNAL_BASE - code if code < 0 else code


def failed(status: int) -> bool:
    return exit_code(status) != 0


def backoff_delay(attempt: int, *, base_s: float, cap_s: float, jitter: float) -> float:
    """Capped exponential backoff; ``jitter`` in [0, 1) takes off up to 20%."""
    return min(cap_s, base_s * 2.0 ** min(attempt, 60)) * (1.0 - 0.2 * jitter)


def decide(
    rules: RestartRules,
    *,
    status: int,
    uptime_s: float,
    attempt: int,
    recent_restarts: Sequence[float],
    now: float,
    jitter: float,
) -> Verdict:
    """What comes after EXITED for a child that ended on its own (not one we stopped)."""
    if rules.policy is Policy.NEVER or (rules.policy is Policy.ON_FAILURE and not failed(status)):
        return Verdict(State.EXITED)  # its policy leaves it down
    in_window = [t for t in recent_restarts if now - t <= rules.window_s]
    if len(in_window) >= rules.max_restarts:
        # A crash loop: the caller leaves a worker FATAL, or ends the run.
        return Verdict(State.FATAL)
    if uptime_s >= rules.startsecs:
        attempt = 0  # it had started well: the backoff starts afresh
    delay = backoff_delay(attempt, base_s=rules.backoff_base_s, cap_s=rules.backoff_cap_s,
                          jitter=jitter)  # fmt: skip
    return Verdict(State.BACKOFF, delay_s=delay, attempt=attempt + 1)


def keep_serving(role: str, crash_loop: str, *, others_left: int) -> bool:
    """After a crash loop: leave this child stopped and serve on (True), or end the run. Only a
    worker, only with ``restart.crash_loop: keep-serving``, and only while another worker of its
    model is still in the pool (running, starting or in backoff; not itself given up)."""
    return role == "worker" and crash_loop == "keep-serving" and others_left > 0


def run_exit_code(status: int) -> int:
    """The launcher's code when a child ends the run: never 0 for a failure (Dynamo exits 0
    when it loses its etcd lease)."""
    return exit_code(status) or EXIT_FAILED


def signal_exit_code(signum: int) -> int:
    return EXIT_SIGNAL_BASE + int(signal.Signals(signum))
