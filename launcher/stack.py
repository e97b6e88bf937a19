"""`up`: bring the planned stack up in order behind readiness gates, keep it up, stop it cleanly.

Start: etcd, NATS (each healthy before the next), frontend (/health), then all workers at once;
ready only when /v1/models lists the served model AND a one-token chat completion succeeds.
Serve: a dead frontend or worker (even one that exits 0: Dynamo does that when it loses its
etcd lease) is restarted with capped exponential backoff. Stop: workers, frontend, NATS, etcd.
"""

from __future__ import annotations

import json
import logging
import random
import signal
import sys
import time
from collections.abc import Callable
from functools import partial
from types import FrameType

from launcher import probes
from launcher.errors import StartupError
from launcher.plan import ROLES_START_ORDER, Plan
from launcher.supervisor import Child, Supervisor, describe_status

log = logging.getLogger(__name__)
TICK_S = 0.1
STARTSECS = 10.0  # a child that stayed up this long starts its backoff afresh
PHASE_REPORT_S = 5.0


class StopRequestedError(Exception):
    """SIGINT or SIGTERM arrived."""


class Stack:
    def __init__(
        self,
        plan: Plan,
        supervisor: Supervisor,
        *,
        startup_timeout_s: float,
        stop_timeout_s: float,
        backoff_cap_s: float,
        infra_timeout_s: float,
    ) -> None:
        self.plan = plan
        self.sup = supervisor
        self.startup_timeout_s = startup_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self.backoff_cap_s = backoff_cap_s
        self.infra_timeout_s = infra_timeout_s
        self.signals: list[int] = []
        width = max(len(p.name) for p in plan.processes)
        self.children = [supervisor.add(spec, width) for spec in plan.processes]
        self.ready = False

    # -- signals: the handler only records; the loops act -------------------------------------
    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self.signals.append(signum)

    def _check_signals(self) -> None:
        if self.signals:
            raise StopRequestedError

    # -- the whole run -------------------------------------------------------------------------
    def run(self) -> int:
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            try:
                self._start()
                self._announce()
                self._serve()
            except StopRequestedError:
                name = signal.Signals(self.signals[0]).name
                log.info("dynlaunch: %s received, stopping", name)
                return 0
            return 0
        finally:
            self._shutdown()
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    # -- start -----------------------------------------------------------------------------------
    def _start(self) -> None:
        deadline = time.monotonic() + self.startup_timeout_s
        if self.plan.by_role("etcd") == []:
            self._wait_external("etcd", self.plan.etcd_endpoints, probes.etcd_ok)
        if self.plan.by_role("nats") == []:
            self._wait_external("NATS", self.plan.nats_url, probes.nats_ok)
        for role in ROLES_START_ORDER:
            group = [c for c in self.children if c.spec.role == role]
            for child in group:
                self.sup.spawn(child, time.monotonic())
            for child in group:
                url = child.spec.health_url
                if url is not None:
                    self._wait(
                        f"{child.name} health ({url})", partial(probes.http_ok, url), deadline
                    )
        base, model = self.plan.url, self.plan.served_model
        self._wait(f"model {model!r} listed in {base}/v1/models",
                   lambda: probes.model_listed(base, model), deadline)  # fmt: skip
        self._wait("a one-token chat completion", lambda: probes.one_token_completion(base, model),
                   deadline)  # fmt: skip
        self.ready = True

    def _wait_external(self, what: str, endpoint: str, ok: Callable[[str], bool]) -> None:
        deadline = time.monotonic() + self.infra_timeout_s
        while not ok(endpoint):
            self._check_signals()
            if time.monotonic() > deadline:
                raise StartupError(
                    f"{what} at {endpoint} is unreachable after {self.infra_timeout_s:.0f}s "
                    "(infra.connect_timeout_s); is it running?"
                )
            time.sleep(0.25)

    def _wait(self, phase: str, ready: Callable[[], bool], deadline: float) -> None:
        began = last_report = time.monotonic()
        while True:
            self._check_signals()
            for child in self.sup.reap():
                self._died_early(child)
            if ready():
                log.debug("ready: %s after %.1fs", phase, time.monotonic() - began)
                return
            now = time.monotonic()
            if now > deadline:
                raise StartupError(
                    f"not ready after {self.startup_timeout_s:.0f}s (startup_timeout_s): "
                    f"still waiting for {phase}; logs in {self.sup.log_dir}"
                )
            if sys.stderr.isatty() and now - last_report >= PHASE_REPORT_S:
                log.info("dynlaunch: waiting for %s (%.0fs)", phase, now - began)
                last_report = now
            time.sleep(0.25)

    def _died_early(self, child: Child) -> None:
        assert child.status is not None
        child.relay.join(1.0)
        tail = "\n".join(f"    {line}" for line in list(child.relay.tail)[-15:])
        log.error("%s pid=%s: %s before the stack was ready; its last lines:\n%s",
                  child.name, child.pid, describe_status(child.status), tail)  # fmt: skip
        raise StartupError(
            f"{child.name} {describe_status(child.status)} during startup; "
            f"full log: {child.relay.log_path}"
        )

    def _announce(self) -> None:
        base, model = self.plan.url, self.plan.served_model
        body = json.dumps(
            {"model": model, "messages": [{"role": "user", "content": "Hello!"}], "max_tokens": 32}
        )
        curl = f"curl -s {base}/v1/chat/completions -H 'Content-Type: application/json' -d '{body}'"
        log.info("dynlaunch: ready: %s serves %r; try: %s", base, model, curl)

    # -- serve: restart what dies ----------------------------------------------------------------
    def _serve(self) -> None:
        while True:
            self._check_signals()
            now = time.monotonic()
            for child in self.sup.reap():
                self._schedule_restart(child, now)
            for child in self.children:
                if child.next_start is not None and now >= child.next_start:
                    child.restarts += 1
                    self.sup.spawn(child, now)
            time.sleep(TICK_S)

    def _schedule_restart(self, child: Child, now: float) -> None:
        assert child.status is not None
        uptime = now - child.started_at
        if uptime >= STARTSECS:
            child.backoff_attempt = 0  # it ran long enough: the backoff starts afresh
        delay = backoff_delay(
            child.backoff_attempt, cap_s=self.backoff_cap_s, jitter=random.random()
        )
        child.backoff_attempt += 1
        child.next_start = now + delay
        log.error("%s pid=%s: %s after %.1fs; restart %d in %.1fs",
                  child.name, child.pid, describe_status(child.status), uptime,
                  child.restarts + 1, delay)  # fmt: skip

    # -- stop ------------------------------------------------------------------------------------
    def _shutdown(self) -> None:
        for role in reversed(ROLES_START_ORDER):
            group = [c for c in self.children if c.spec.role == role]
            for child in group:
                child.next_start = None
            self.sup.stop(group, self.stop_timeout_s, hurry=lambda: len(self.signals) > 1)
            for child in group:
                if child.status is not None and child.pid is not None:
                    log.info("%s pid=%d: stopped (%s)", child.name, child.pid,
                             describe_status(child.status))  # fmt: skip
        self.sup.sweep()


def backoff_delay(
    attempt: int, *, base_s: float = 1.0, cap_s: float = 30.0, jitter: float
) -> float:
    """Capped exponential backoff; ``jitter`` in [0, 1) takes off up to 20%."""
    return min(cap_s, base_s * 2.0**attempt) * (1.0 - 0.2 * jitter)
