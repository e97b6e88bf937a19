"""Liveness: the pure rule (`observe`), the crash-loop choice (`keep_serving`), and the
watcher against real HTTP children that answer 503 (busy), go silent (SIGSTOP) or start late."""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from launcher.config import LivenessConfig
from launcher.plan import ProcessSpec
from launcher.supervision.lifecycle import State, keep_serving
from launcher.supervision.liveness import Health, Watcher, live_url, observe
from launcher.supervision.supervisor import Child, Supervisor

CHILDREN = Path(__file__).resolve().parents[1] / "children"


# -- the pure rule ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("answers", "live", "failures", "hung"),
    [
        ([200], True, 0, False),
        ([503], True, 0, False),  # busy, not ready: alive all the same
        ([500, 404], True, 0, False),  # any answer shows the process is alive
        ([None, None, None, None], None, 0, False),  # never answered: starting, not a miss
        ([200, None], False, 1, False),
        ([200, None, None], False, 2, False),
        ([200, None, None, None], False, 3, True),  # threshold 3
        ([200, None, None, 503, None, None], False, 2, False),  # an answer resets the count
    ],
)
def test_observe_counts_only_silence_after_a_first_answer(
    answers: list[int | None], live: bool | None, failures: int, hung: bool
) -> None:
    health = Health()
    for answer in answers:
        health = observe(health, 42, answer, answer == 200, threshold=3)
    assert (health.live, health.failures, health.hung) == (live, failures, hung)


def test_observe_starts_afresh_for_a_new_process() -> None:
    hung = Health(pid=1, answered=True, failures=3, live=False, ready=False, hung=True)
    after = observe(hung, 2, None, False, threshold=3)  # the restarted one, still starting
    assert (after.pid, after.failures, after.hung, after.answered) == (2, 0, False, False)


def test_ready_is_reported_apart_from_live() -> None:
    busy = observe(Health(), 7, 503, False, threshold=3)
    assert (busy.live, busy.ready) == (True, False)


def test_live_url_is_beside_the_health_url() -> None:
    assert live_url("http://127.0.0.1:9/health") == "http://127.0.0.1:9/live"


@pytest.mark.parametrize(
    ("role", "policy", "others", "keep"),
    [
        ("worker", "keep-serving", 1, True),
        ("worker", "keep-serving", 0, False),  # no worker of the model left: stop
        ("worker", "stop-all", 3, False),
        ("frontend", "keep-serving", 2, False),  # only workers are left stopped
        ("etcd", "keep-serving", 2, False),
    ],
)
def test_keep_serving_after_a_crash_loop(role: str, policy: str, others: int, keep: bool) -> None:
    assert keep_serving(role, policy, others_left=others) is keep


# -- the watcher against real children -------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


RULES = LivenessConfig(interval_s=0.2, timeout_s=0.5, failure_threshold=2, grace_s=1)


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[..., Child]]:
    sup = Supervisor(uuid.uuid4().hex, tmp_path / "logs", os.environ)
    children: list[Child] = []

    def start(status: int, delay: float = 0.0) -> Child:
        port = _free_port()
        argv = (sys.executable, str(CHILDREN / "status_server.py"), str(port), str(status),
                str(delay))  # fmt: skip
        spec = ProcessSpec(f"w{len(children)}", "worker", argv, {},
                           health_url=f"http://127.0.0.1:{port}/health")  # fmt: skip
        child = sup.add(spec, 4)
        sup.spawn(child, time.monotonic())
        child.to(State.RUNNING, "the test says it is ready")
        children.append(child)
        return child

    yield start
    for child in children:
        sup.signal_group(child, signal.SIGCONT)
    sup.stop(children, timeout=2)


def _until(check: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return check()


def test_watcher_finds_a_stopped_child_hung_and_leaves_a_busy_one_alone(
    spawn: Callable[..., Child],
) -> None:
    busy, stuck = spawn(503), spawn(200)
    wakes: list[int] = []
    watcher = Watcher([busy, stuck], RULES, lambda: wakes.append(1))
    watcher.start()
    try:
        assert _until(lambda: busy.health.live is True and stuck.health.live is True, 15)
        assert stuck.pid is not None
        os.kill(stuck.pid, signal.SIGSTOP)
        assert _until(lambda: stuck.health.hung, 15), stuck.health
        assert stuck.health.pid == stuck.pid
        time.sleep(1.5)  # the busy one, answering 503 all along, is never a miss
        assert busy.health.live is True
        assert busy.health.failures == 0
        assert busy.health.ready is False
        assert wakes
    finally:
        watcher.stop()


def test_watcher_counts_no_miss_while_a_child_starts(spawn: Callable[..., Child]) -> None:
    late = spawn(200, delay=2.0)  # refuses connections for 2 s, then answers
    watcher = Watcher([late], RULES, lambda: None)
    watcher.start()
    try:
        time.sleep(1.5)
        assert late.health.failures == 0
        assert not late.health.hung
        assert _until(lambda: late.health.live is True, 15)
    finally:
        watcher.stop()
