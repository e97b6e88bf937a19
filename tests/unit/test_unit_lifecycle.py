"""The restart decision and the state graph of a child, as tables: policy x exit status x uptime x
recent restarts -> next state, delay and backoff attempt; every `restart.*` key reaches the rules;
the backoff curve; the allowed transitions."""

from __future__ import annotations

import os
import signal

import pytest

from launcher.config import load_config
from launcher.stack import rules_for
from launcher.supervision.lifecycle import (
    TRANSITIONS,
    Policy,
    RestartRules,
    State,
    TransitionError,
    backoff_delay,
    check_transition,
    decide,
)

EXIT_0 = 0  # raw wait statuses, as os.waitpid gives them
EXIT_1 = 1 << 8
KILLED = signal.SIGKILL.value

RULES = {
    policy: RestartRules(
        policy, startsecs=10.0, max_restarts=3, window_s=60.0, backoff_base_s=1.0, backoff_cap_s=8.0
    )
    for policy in Policy
}
NOW = 1000.0
B = State.BACKOFF


@pytest.mark.parametrize(
    ("policy", "status", "uptime", "attempt", "recent", "want"),
    [
        # never: left down whatever happened
        (Policy.NEVER, EXIT_1, 1.0, 0, [], (State.EXITED, 0.0, 0)),
        (Policy.NEVER, KILLED, 50.0, 0, [], (State.EXITED, 0.0, 0)),
        (Policy.NEVER, EXIT_0, 50.0, 0, [], (State.EXITED, 0.0, 0)),
        # on-failure: a clean exit is left down, a failure restarted
        (Policy.ON_FAILURE, EXIT_0, 1.0, 0, [], (State.EXITED, 0.0, 0)),
        (Policy.ON_FAILURE, EXIT_1, 1.0, 0, [], (B, 1.0, 1)),
        (Policy.ON_FAILURE, KILLED, 1.0, 2, [], (B, 4.0, 3)),
        # always: an exit 0 is restarted too (Dynamo exits 0 when it loses its lease)
        (Policy.ALWAYS, EXIT_0, 1.0, 0, [], (B, 1.0, 1)),
        (Policy.ALWAYS, EXIT_1, 1.0, 1, [NOW - 5], (B, 2.0, 2)),
        # quick failures double the delay, up to the cap
        (Policy.ALWAYS, EXIT_1, 1.0, 3, [NOW - 5, NOW - 4], (B, 8.0, 4)),
        (Policy.ALWAYS, EXIT_1, 1.0, 9, [], (B, 8.0, 10)),
        # up for startsecs or more: it had started well, the backoff starts afresh
        (Policy.ALWAYS, EXIT_1, 10.0, 5, [], (B, 1.0, 1)),
        (Policy.ALWAYS, KILLED, 300.0, 7, [NOW - 100], (B, 1.0, 1)),
        (Policy.ALWAYS, EXIT_1, 9.9, 2, [], (B, 4.0, 3)),
        # max_restarts restarts within window_s: a crash loop
        (Policy.ALWAYS, EXIT_1, 1.0, 3, [NOW - 30, NOW - 20, NOW - 10], (State.FATAL, 0.0, 0)),
        (Policy.ON_FAILURE, KILLED, 1.0, 3, [NOW - 60, NOW - 2, NOW - 1], (State.FATAL, 0.0, 0)),
        # restarts older than the window do not count
        (Policy.ALWAYS, EXIT_1, 1.0, 3, [NOW - 61, NOW - 20, NOW - 10], (B, 8.0, 4)),
        (Policy.ALWAYS, EXIT_1, 50.0, 0, [NOW - 500, NOW - 400, NOW - 300], (B, 1.0, 1)),
        # a crash loop is judged before the startsecs reset
        (Policy.ALWAYS, EXIT_1, 50.0, 0, [NOW - 3, NOW - 2, NOW - 1], (State.FATAL, 0.0, 0)),
        # on-failure: a clean exit is never a crash loop
        (Policy.ON_FAILURE, EXIT_0, 1.0, 3, [NOW - 3, NOW - 2, NOW - 1], (State.EXITED, 0.0, 0)),
    ],
)
def test_decide(
    policy: Policy,
    status: int,
    uptime: float,
    attempt: int,
    recent: list[float],
    want: tuple[State, float, int],
) -> None:
    verdict = decide(RULES[policy], status=status, uptime_s=uptime, attempt=attempt,
                     recent_restarts=recent, now=NOW, jitter=0.0)  # fmt: skip
    assert (verdict.next, verdict.delay_s, verdict.attempt) == want
    assert verdict.restart is (want[0] is State.BACKOFF)
    assert verdict.crash_loop is (want[0] is State.FATAL)


def test_the_statuses_are_what_waitpid_gives() -> None:
    assert os.waitstatus_to_exitcode(EXIT_1) == 1
    assert os.waitstatus_to_exitcode(KILLED) == -signal.SIGKILL


def test_every_restart_key_reaches_the_rules() -> None:
    flags = {"restart": {"frontend": "never", "workers": "on-failure", "infra": "always",
                         "startsecs": 7.5, "max_restarts": 9, "window_s": 33.0,
                         "backoff_base_s": 0.25, "backoff_cap_s": 4.5}}  # fmt: skip
    cfg = load_config("mocker", path=None, environ={}, flags=flags, flag_names={})
    common = (7.5, 9, 33.0, 0.25, 4.5)
    assert rules_for(cfg, "frontend") == RestartRules(Policy.NEVER, *common)
    assert rules_for(cfg, "worker") == RestartRules(Policy.ON_FAILURE, *common)
    assert rules_for(cfg, "etcd") == RestartRules(Policy.ALWAYS, *common)
    assert rules_for(cfg, "nats") == RestartRules(Policy.ALWAYS, *common)


# -- the state graph -------------------------------------------------------------------------------
ALLOWED = {
    (State.PENDING, State.STARTING),
    (State.STARTING, State.RUNNING),
    (State.STARTING, State.EXITED),
    (State.STARTING, State.STOPPING),
    (State.RUNNING, State.HUNG),
    (State.RUNNING, State.EXITED),
    (State.RUNNING, State.STOPPING),
    (State.HUNG, State.EXITED),
    (State.HUNG, State.STOPPING),
    (State.EXITED, State.BACKOFF),
    (State.EXITED, State.FATAL),
    (State.BACKOFF, State.STARTING),
    (State.BACKOFF, State.RUNNING),
    (State.BACKOFF, State.STOPPED),
    (State.STOPPING, State.STOPPED),
}


@pytest.mark.parametrize("old", list(State))
@pytest.mark.parametrize("new", list(State))
def test_transitions(old: State, new: State) -> None:
    if (old, new) in ALLOWED:
        check_transition(old, new)
    else:
        with pytest.raises(TransitionError):
            check_transition(old, new)


def test_fatal_and_stopped_are_final() -> None:
    assert not TRANSITIONS[State.FATAL]
    assert not TRANSITIONS[State.STOPPED]


# -- the backoff curve -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("attempt", "cap", "want"),
    [
        (0, 30.0, 1.0),
        (1, 30.0, 2.0),
        (2, 30.0, 4.0),
        (4, 30.0, 16.0),
        (5, 30.0, 30.0),  # 32 capped
        (20, 30.0, 30.0),
        (3, 5.0, 5.0),
        (0, 0.5, 0.5),
    ],
)
def test_backoff_without_jitter(attempt: int, cap: float, want: float) -> None:
    assert backoff_delay(attempt, base_s=1.0, cap_s=cap, jitter=0.0) == want


@pytest.mark.parametrize("jitter", [0.0, 0.25, 0.5, 0.999])
def test_backoff_grows_and_is_capped(jitter: float) -> None:
    delays = [backoff_delay(a, base_s=1.0, cap_s=30.0, jitter=jitter) for a in range(40)]
    assert delays == sorted(delays)
    assert max(delays) <= 30.0
    assert delays[-1] == pytest.approx(30.0 * (1 - 0.2 * jitter))


@pytest.mark.parametrize("attempt", [0, 3, 10])
@pytest.mark.parametrize("jitter", [0.0, 0.1, 0.5, 0.9, 0.999999])
def test_backoff_jitter_takes_off_at_most_20_percent(attempt: int, jitter: float) -> None:
    plain = backoff_delay(attempt, base_s=1.0, cap_s=30.0, jitter=0.0)
    jittered = backoff_delay(attempt, base_s=1.0, cap_s=30.0, jitter=jitter)
    assert 0.8 * plain <= jittered <= plain


def test_backoff_never_overflows() -> None:
    assert backoff_delay(1024, base_s=1.0, cap_s=30.0, jitter=0.0) == 30.0
