"""Liveness: is the frontend, is each worker, still answering at all?

Liveness is not readiness. A worker busy with a long prefill or a full batch is slow and may say
"not ready" (Dynamo 1.4.2 serves a worker's /live with its readiness handler: 503 while an
endpoint is not ready), yet it is alive. So *any* HTTP answer from its /live URL within the
timeout counts as alive; only silence (a stopped or wedged process: the connection is accepted
by the kernel, nothing answers) counts as a miss. Misses count only once the process has
answered at least once since it started (start-up is the readiness gate's business).

`observe` is the pure rule; `Watcher` is the shell: one thread per child, so that one hung child
never delays the others' probes. It only records what it saw and wakes the serve loop; the
supervisor alone signals.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from launcher import probes
from launcher.supervision.lifecycle import State

if TYPE_CHECKING:
    from launcher.config import LivenessConfig
    from launcher.supervision.supervisor import Child

PROBED_ROLES = ("frontend", "worker")


@dataclass(frozen=True)
class Health:
    """What was last seen of one process (``pid``)."""

    pid: int | None = None
    answered: bool = False  # this pid has answered once: from now on a miss counts
    failures: int = 0  # misses in a row
    live: bool | None = None  # None: not probed yet, or still starting
    ready: bool | None = None  # its health URL said 200
    hung: bool = False  # failures reached the threshold

    def words(self) -> str:
        return "-" if self.live is None else "yes" if self.live else f"NO ({self.failures})"


def observe(prev: Health, pid: int, answer: int | None, ready: bool, threshold: int) -> Health:
    """The next state after one probe of ``pid`` (``answer``: its HTTP status, None: silence)."""
    if pid != prev.pid:
        prev = Health(pid=pid)  # a new process: nothing it did before counts
    if answer is not None:
        return Health(pid=pid, answered=True, failures=0, live=True, ready=ready)
    if not prev.answered:
        return replace(prev, ready=False)  # still starting: not a miss
    failures = prev.failures + 1
    return replace(prev, failures=failures, live=False, ready=False, hung=failures >= threshold)


def live_url(health_url: str) -> str:
    """Dynamo's /live beside the /health URL the plan names (frontend and worker system port)."""
    return health_url.removesuffix("/health") + "/live"


class Watcher:
    """Probes each running frontend/worker every ``interval_s``; records into ``child.health``."""

    def __init__(
        self, children: Sequence[Child], rules: LivenessConfig, wake: Callable[[], None]
    ) -> None:
        self.rules = rules
        self.wake = wake
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._watch, args=(c,), name=f"live-{c.name}", daemon=True)
            for c in children
            if c.spec.role in PROBED_ROLES and c.spec.health_url
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def watch(self, child: Child) -> None:
        """Probe a child added while serving (a replacement), from now until it is stopped."""
        if child.spec.role in PROBED_ROLES and child.spec.health_url:
            thread = threading.Thread(target=self._watch, args=(child,), name=f"live-{child.name}",
                                      daemon=True)  # fmt: skip
            self._threads.append(thread)
            thread.start()

    def stop(self) -> None:
        self._stop.set()  # a probe in flight ends within timeout_s; nobody waits for it

    def _watch(self, child: Child) -> None:
        assert child.spec.health_url is not None
        health_url = child.spec.health_url
        url = live_url(health_url)
        timeout = self.rules.timeout_s
        began = time.monotonic()
        # One probe every interval_s, however long the last one took (a miss takes timeout_s).
        while not self._stop.wait(max(0.0, began + self.rules.interval_s - time.monotonic())):
            began = time.monotonic()
            if child.state is State.STOPPED:
                return  # replaced by an operation: it never runs again
            pid = child.pid
            if pid is None or not child.alive or child.state is not State.RUNNING:
                continue
            answer = probes.http_status(url, timeout)
            ready = answer is not None and probes.http_status(health_url, timeout) == 200
            seen = observe(child.health, pid, answer, ready, self.rules.failure_threshold)
            if pid != child.pid or self._stop.is_set():
                continue  # it was restarted (or we are stopping) while we probed
            if seen != child.health:
                child.health = seen
                self.wake()
