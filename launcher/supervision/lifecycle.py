"""Pure decisions about a child that exited: restart (when), give up, or leave it down.

The shell passes in the facts (exit status, uptime, recent restart times, the clock); nothing here
reads the clock, spawns or signals.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum


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
    restart: bool
    delay_s: float = 0.0
    attempt: int = 0  # the backoff attempt after this decision
    crash_loop: bool = False


def exit_code(status: int) -> int:
    """Shell convention: the child's code, or 128+N when signal N ended it."""
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


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
    """What to do with a child that exited on its own (not one we stopped)."""
    if rules.policy is Policy.NEVER or (rules.policy is Policy.ON_FAILURE and not failed(status)):
        # RUNNING -> EXITED
        return Verdict(restart=False)
    in_window = [t for t in recent_restarts if now - t <= rules.window_s]
    if len(in_window) >= rules.max_restarts:
        # BACKOFF -> crash loop: the caller ends the run, or leaves a worker stopped (FATAL)
        return Verdict(restart=False, crash_loop=True)
    if uptime_s >= rules.startsecs:
        attempt = 0  # RUNNING -> BACKOFF, afresh
    delay = backoff_delay(attempt, base_s=rules.backoff_base_s, cap_s=rules.backoff_cap_s,
                          jitter=jitter)  # fmt: skip
    # STARTING/RUNNING -> BACKOFF
    return Verdict(restart=True, delay_s=delay, attempt=attempt + 1)


def keep_serving(role: str, crash_loop: str, *, others_left: int) -> bool:
    """After a crash loop: leave this child stopped and serve on (True), or end the run. Only a
    worker, only with ``restart.crash_loop: keep-serving``, and only while another worker of its
    model is still in the pool (running, starting or in backoff; not itself given up)."""
    return role == "worker" and crash_loop == "keep-serving" and others_left > 0


def run_exit_code(status: int) -> int:
    """The launcher's code when a child ends the run: never 0 for a failure (Dynamo exits 0
    when it loses its etcd lease)."""
    return exit_code(status) or 1


def signal_exit_code(signum: int) -> int:
    return 128 + int(signal.Signals(signum))
