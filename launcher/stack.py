"""`up`: bring the planned stack up behind readiness gates, keep it up, stop it cleanly.

Start: with embedded etcd and NATS, every process at once (a fresh etcd has nothing to lock or
clear, and Dynamo's start-up outlasts etcd's); otherwise etcd and NATS first (started, or waited
for when external), then the namespace lock and the stale-only clear, then the frontend and all
workers at once.
Each child with a health URL must answer it; the stack is ready only when /v1/models lists the
served model AND a one-token chat completion succeeds (a role pod: its own processes healthy).
Serve: a child that exits is restarted by its role's policy with capped exponential backoff (a
Dynamo process that exits 0 has failed too: it does that when it loses its etcd lease). A
frontend or worker that stops answering its liveness probe is fenced, stopped and restarted. A
worker that crash-loops is left stopped while another worker serves (restart.crash_loop); any
other crash loop ends the run with that child's code. Stop: workers, frontend, NATS, etcd.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import random
import select
import signal
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

from launcher import probes
from launcher.compat import for_version
from launcher.config import Config
from launcher.errors import EXIT_FAILED, ConfigError, StartupError
from launcher.plan import Plan, ProcessSpec, gpu_waves, start_tiers
from launcher.supervision import control_socket, lifecycle, liveness, output
from launcher.supervision.lifecycle import Policy, RestartRules, State
from launcher.supervision.supervisor import Child, Supervisor, become_subreaper, describe_status

log = logging.getLogger(__name__)
POLL_S = 0.05  # readiness probes while starting
IDLE_S = 1.0  # the serve loop's longest sleep; a signal or a due restart wakes it sooner
PHASE_REPORT_S = 5.0
FATAL_REPORT_S = 60.0  # how often a worker left stopped after a crash loop is reported
HANDLED_SIGNALS = (signal.SIGINT, signal.SIGTERM)  # stop; SIGHUP: reload (`dynlaunch reload`)
T = TypeVar("T")


def _nothing() -> None:
    pass


@dataclass
class Hooks:
    """What the stack's owner does at lifecycle points (the stack itself only runs processes)."""

    etcd_ready: Callable[[], None] = _nothing  # etcd answers; nothing of Dynamo runs yet
    before_dynamo: Callable[[], None] = _nothing  # external etcd: the stale-only clear
    workers_registered: Callable[[], bool] = lambda: True  # plan.frontend_after_registration
    after_registration: Callable[[], None] = _nothing  # e.g. the migration limit in the card
    on_change: Callable[[list[Child]], None] = lambda _children: None  # e.g. the status file
    on_exit: Callable[[Child], None] = lambda _child: None  # exited on its own, or hung: fence it
    # a live Dynamo 0.5 worker whose leases on_exit revoked: it finishes and exits on its own
    fenced_live: Callable[[Child], bool] = lambda _child: False
    # why a child that ended during start-up may have (what was checked), or None
    explain_exit: Callable[[Child], str | None] = lambda _child: None
    dynamo_stopped: Callable[[], None] = _nothing  # workers and frontend are down, infra is up
    # a replacement (or added) worker is in etcd; the int: how many other workers of its model
    # serve now (Dynamo 0.5 counts its model's entries against it)
    registered: Callable[[Child, int], bool] = lambda _child, _serving: True
    on_operation: Callable[[str | None], None] = lambda _text: None  # e.g. the status file
    # free ports for a replacement's slots (ports.allocate_more), by slot name
    allocate: Callable[[Any, str], dict[str, int]] = lambda _slots, _seed: {}
    gpu_pool: Callable[[], tuple[str, ...]] = tuple  # the GPUs this run may use (scale)
    # reload: (config, plan) of a config file (None: the flags and environment only), resolved
    # as `up` did; the run's own ports (a frozenset) do not count as taken
    resolve: Callable[[str | None, Any], tuple[Any, Any]] = lambda _path, _own: _no_reload()


def _no_reload() -> tuple[Any, Any]:
    raise ConfigError("this run cannot reload its config")


def _ignore(_signum: int, _frame: FrameType | None) -> None:
    """SIGCHLD's handler: its only job is the byte it makes Python write to the wakeup fd."""


class StopRequestedError(Exception):
    """SIGINT or SIGTERM arrived."""


class RunEndedError(Exception):
    """A child ended the run (crash loop, or a critical child that is not restarted)."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


def rules_for(cfg: Config, role: str) -> RestartRules:
    r = cfg.restart
    policy = {"frontend": r.frontend, "worker": r.workers}.get(role, r.infra)
    return RestartRules(Policy(policy), r.startsecs, r.max_restarts, r.window_s,
                        r.backoff_base_s, r.backoff_cap_s)  # fmt: skip


class Stack:
    def __init__(
        self,
        plan: Plan,
        supervisor: Supervisor,
        cfg: Config,
        hooks: Hooks | None = None,
        control_path: Path | None = None,
    ) -> None:
        self.plan = plan
        self.sup = supervisor
        self.cfg = cfg
        self.hooks = hooks or Hooks()
        self.signals: list[int] = []
        self._width = max(len(p.name) for p in plan.processes)
        self.children = [supervisor.add(spec, self._width) for spec in plan.processes]
        self.restart_times: dict[str, list[float]] = {c.name: [] for c in self.children}
        self._fatal_reported = 0.0
        # Operations (`dynlaunch restart`): requests from the control socket's thread, and the
        # calls an operation's thread asks the loop to make (every spawn and signal is the loop's).
        self.control_path = control_path
        self._requests: queue.Queue[control_socket.Request] = queue.Queue()
        self._calls: queue.Queue[tuple[Callable[[], Any], Future[Any]]] = queue.Queue()
        self._operation: threading.Thread | None = None
        self._trial: set[str] = set()  # replacements not yet ready: not restarted when they end
        self._watcher: liveness.Watcher | None = None
        self.stopping = threading.Event()
        self.config_path: str | None = None  # the config file `reload` and SIGHUP read again
        self._hups = 0

    # -- signals: the handler only records; the loops act -------------------------------------
    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self.signals.append(signum)

    def _on_hup(self, _signum: int, _frame: FrameType | None) -> None:
        self._hups += 1  # a reload, once the stack serves

    def _check_signals(self) -> None:
        if self.signals:
            raise StopRequestedError

    def _wake(self) -> None:
        """From another thread (the liveness watcher): make the loop look now."""
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self._wake_w, b"w")

    def _sleep(self, timeout: float) -> None:
        """Until ``timeout`` passes or any signal arrives (a child's exit, Ctrl-C)."""
        if timeout > 0:
            select.select([self._wake_r], [], [], timeout)
        with contextlib.suppress(BlockingIOError):
            os.read(self._wake_r, 512)

    # -- the whole run -------------------------------------------------------------------------
    def run(self) -> int:
        """Start, serve until told to stop, stop. Returns the launcher's exit code."""
        # Every signal (SIGCHLD included) writes a byte here, so the loops sleep until something
        # happens instead of polling.
        self._wake_r, wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(wake_w, False)
        self._wake_w = wake_w
        previous_fd = signal.set_wakeup_fd(wake_w)
        previous = {s: signal.signal(s, self._on_signal) for s in HANDLED_SIGNALS}
        previous[signal.SIGCHLD] = signal.signal(signal.SIGCHLD, _ignore)
        previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, self._on_hup)
        become_subreaper()
        code = 0
        try:
            try:
                self._start()
                self._serve()  # says ready once its control socket listens
            except StopRequestedError:
                log.info("dynlaunch: %s received, stopping", signal.Signals(self.signals[0]).name)
            except RunEndedError as ended:
                code = ended.code
        finally:
            self.stopping.set()  # an operation in flight ends where it is
            operation = self._operation
            if operation is not None:
                operation.join(5.0)
            killed = self._shutdown()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            signal.set_wakeup_fd(previous_fd)
            os.close(self._wake_r)
            os.close(wake_w)
        if self.signals and code == 0 and killed:
            code = lifecycle.signal_exit_code(self.signals[0])  # a stop that had to kill
        return code

    # -- start -----------------------------------------------------------------------------------
    def _start(self) -> None:
        deadline = time.monotonic() + self.cfg.startup_timeout_s
        # A role pod with Kubernetes discovery has no etcd or NATS at all (endpoint "").
        if not self.plan.by_role("etcd") and self.plan.etcd_endpoints:
            self._wait_external("etcd", self.plan.etcd_endpoints, probes.etcd_ok)
            self.hooks.etcd_ready()
        if not self.plan.by_role("nats") and self.plan.nats_url:
            self._wait_external("NATS", self.plan.nats_url, probes.nats_ok)
        # With external etcd: its lock and stale clear come first, so etcd and NATS start (or are
        # waited for) before any Dynamo process. With embedded infra there is nothing to lock or
        # clear in a fresh etcd: the first tier starts with them, and Dynamo's own start-up (about
        # a second of imports) outlasts etcd's. The tiers: plan.start_tiers.
        embedded = bool(self.plan.by_role("etcd")) and bool(self.plan.by_role("nats"))
        fresh = embedded and not self.plan.etcd_auth  # its auth is turned on in etcd_ready first
        # Their data is wiped at start (statedir): nothing stale to clear (about 0.1 s saved, a
        # NATS connection and an etcd scan, where Dynamo 1.6's whole start-up takes about 0.4 s).
        # Not on 0.5, whose workers keep model files in JetStream: with the clear skipped there,
        # the embedded nats-server 2.9.10 panicked once (jsMsgGetRequest, nil pointer) on the two
        # workers' first object-store calls, in 1 of 3 CI runs; the clear's JetStream calls came
        # first in every earlier run. Kept as a precaution: that it prevents it is not proven.
        cleared = embedded and for_version(self.plan.dynamo_version).layout != "0.5"
        for tier in start_tiers(self.plan):
            group = [c for c in self.children if c.spec.role in tier]
            dynamo = any(c.spec.role in ("frontend", "worker") for c in group)
            if dynamo and not cleared:
                self.hooks.before_dynamo()
                cleared = True
            if "frontend" in tier and group and self.plan.frontend_after_registration:
                workers = len(self.plan.by_role("worker"))
                self._wait(f"{workers} worker(s) registered in etcd",
                           self.hooks.workers_registered, deadline)  # fmt: skip
                self.hooks.after_registration()
            self._spawn_in_waves(group, deadline)
            self.hooks.on_change(self.children)
            for child in group:
                if child.spec.health_url is not None:
                    https = child.spec.health_url.startswith("https:")  # infra.tls's etcd
                    verify = probes.etcd_verify() if https else True
                    probe = partial(probes.http_ok, child.spec.health_url, verify)
                    self._wait(f"{child.name} health ({child.spec.health_url})", probe, deadline)
                if child.spec.role == "etcd" and not fresh:
                    self.hooks.etcd_ready()
        base = self.plan.url
        # A role pod is ready when its own processes are healthy; a whole stack when every model
        # is listed and answers.
        for model in self.plan.models if self.plan.role == "all" else ():
            self._wait(f"model {model!r} listed in {base}/v1/models",
                       partial(probes.model_listed, base, model), deadline)  # fmt: skip
            self._wait(f"a one-token chat completion of {model!r}",
                       partial(probes.one_token_completion, base, model), deadline)  # fmt: skip
        for child in self.children:
            child.to(State.RUNNING, "the stack is ready")
        self.hooks.on_change(self.children)

    def _spawn_in_waves(self, group: list[Child], deadline: float) -> None:
        """Spawn ``group``; workers that share a GPU one wave after another (plan.gpu_waves),
        each wave once the workers of the last one that share its GPUs are healthy."""
        waves = gpu_waves(self.plan)
        last = max((waves.get(c.name, 0) for c in group), default=0)
        for wave in range(last + 1):
            now = [c for c in group if waves.get(c.name, 0) == wave]
            if wave:
                gpus = {g for c in now for g in c.spec.gpus}
                for before in group:
                    if waves.get(before.name, 0) == wave - 1 and gpus & set(before.spec.gpus):
                        url = before.spec.health_url
                        if url is not None:
                            self._wait(f"{before.name} healthy before {len(now)} more on its "
                                       "GPU", partial(probes.http_ok, url), deadline)  # fmt: skip
            for child in now:
                self.sup.spawn(child, time.monotonic())

    def _wait_external(self, what: str, endpoint: str, ok: Callable[[str], bool]) -> None:
        timeout = self.cfg.infra.connect_timeout_s
        deadline = time.monotonic() + timeout
        while not ok(endpoint):
            self._check_signals()
            if time.monotonic() > deadline:
                raise StartupError(
                    f"{what} at {endpoint} is unreachable after {timeout:.0f}s "
                    "(infra.connect_timeout_s); is it running?"
                )
            time.sleep(0.25)

    def _wait(self, phase: str, ready: Callable[[], bool], deadline: float) -> None:
        began = last_report = time.monotonic()
        while True:
            self._check_signals()
            for child in self.sup.reap():
                self._died_early(child)
            self._check_fatal_lines()
            if ready():
                log.debug("dynlaunch: %s after %.1fs", phase, time.monotonic() - began)
                return
            now = time.monotonic()
            if now > deadline:
                raise StartupError(
                    f"not ready after {self.cfg.startup_timeout_s:.0f}s (startup_timeout_s): "
                    f"still waiting for {phase}; logs in {self.sup.log_dir}"
                )
            if sys.stderr.isatty() and now - last_report >= PHASE_REPORT_S:
                log.info("dynlaunch: waiting for %s (%.0fs)", phase, now - began)
                last_report = now
            self._sleep(POLL_S)

    def _check_fatal_lines(self) -> None:
        """A child that logged a line that means it can never serve (output.FATAL_PATTERNS):
        fail now, not at the start-up deadline."""
        for child in self.children:
            line = child.relay.fatal
            if line is not None:
                meaning = output.fatal_meaning(line)
                raise StartupError(
                    f"{child.name} pid={child.pid} cannot serve: {line.strip()[-200:]!r}"
                    f"{f' ({meaning})' if meaning else ''}; full log: {child.relay.log_path}"
                )

    def _died_early(self, child: Child) -> None:
        assert child.status is not None
        child.to(State.EXITED, "died before the stack was ready")
        child.relay.join(1.0)
        tail = "\n".join(f"    {line}" for line in list(child.relay.tail)[-15:])
        log.error("%s pid=%s: %s before the stack was ready; its last lines:\n%s",
                  child.name, child.pid, describe_status(child.status), tail)  # fmt: skip
        why = self.hooks.explain_exit(child)
        raise StartupError(
            f"{child.name} {describe_status(child.status)} during startup"
            f"{f': {why}' if why else ''}; full log: {child.relay.log_path}"
        )

    def _announce(self) -> None:
        base, model = self.plan.url, self.plan.served_model
        if self.plan.role == "frontend":
            log.info("dynlaunch: ready: frontend %s (namespace %r); workers register on their own",
                     base, self.plan.namespace)  # fmt: skip
            return
        if self.plan.role == "worker":
            log.info("dynlaunch: ready: %d worker(s) of %r healthy in namespace %r",
                     len(self.children), model, self.plan.namespace)  # fmt: skip
            return
        body = json.dumps(
            {"model": model, "messages": [{"role": "user", "content": "Hello!"}], "max_tokens": 32}
        )
        curl = f"curl -s {base}/v1/chat/completions -H 'Content-Type: application/json' -d '{body}'"
        served = ", ".join(repr(m) for m in self.plan.models)
        log.info("dynlaunch: ready: %s serves %s; try: %s", base, served, curl)

    # -- serve: restart what dies ----------------------------------------------------------------
    def _serve(self) -> None:
        watcher = liveness.Watcher(self.children, self.cfg.liveness, self._wake)
        if self.cfg.liveness.enabled:
            watcher.start()
            self._watcher = watcher
        server = None
        if self.control_path is not None:
            server = control_socket.Server(self.control_path, self._on_request)
            try:
                server.start()
            except OSError as err:  # the stack serves on; only restart/scale/reload cannot reach it
                log.warning("dynlaunch: no control socket at %s (%s): restart, scale and reload "
                            "cannot reach this run", self.control_path, err)  # fmt: skip
                server = None
        self._announce()  # after the control socket: a `restart` right after ready reaches it
        try:
            self._serve_loop()
        finally:
            if server is not None:
                server.stop()
            watcher.stop()

    def _serve_loop(self) -> None:
        seen = [c.health for c in self.children]
        while True:
            self._check_signals()
            now = time.monotonic()
            self._run_calls()
            if self._hups:
                self._hups = 0
                log.info("dynlaunch: SIGHUP received: reload of %s",
                         self.config_path or "the command line and environment")  # fmt: skip
                self._requests.put(control_socket.Request(None, {"op": "reload"}))
            self._take_requests()
            exited = self.sup.reap()
            for child in exited:
                # Its group may outlive it (SGLang's scheduler and detokenizer hold GPU memory).
                self.sup.signal_group(child, signal.SIGKILL)
                if self._ended_by_operation(child):
                    continue
                if child.state is not State.HUNG:  # a hung one was fenced when found hung
                    self.hooks.on_exit(child)
                self._after_exit(child, now)
            for child in self.children:
                self._enforce_liveness(child, now)
            due = [c for c in self.children if c.state is State.BACKOFF and c.next_start is not None
                   and now >= c.next_start]  # fmt: skip
            for child in due:
                child.restarts += 1
                self.restart_times[child.name].append(now)
                self.sup.spawn(child, now)
            health = [c.health for c in self.children]
            if exited or due or health != seen:
                seen = health
                self.hooks.on_change(self.children)
            self._report_fatal(now)
            pending = [t for c in self.children for t in (c.next_start, c.kill_at)
                       if t is not None and c.state in (State.BACKOFF, State.HUNG)]  # fmt: skip
            self._sleep(min([IDLE_S, *(t - time.monotonic() for t in pending)]))

    def _enforce_liveness(self, child: Child, now: float) -> None:
        """A child the watcher found hung: fence it, SIGTERM (and SIGCONT, so that a stopped
        process can act on it) its group, SIGKILL it after liveness.grace_s. Its exit is then
        handled like any other: restarted by its policy."""
        if not child.alive:
            return
        hung = child.health.hung and child.health.pid == child.pid
        if child.state is State.RUNNING and hung:
            rules = self.cfg.liveness
            log.error("%s pid=%d: hung: no answer from %s for %d probes in a row (%.0fs apart, "
                      "%.0fs timeout); fencing and stopping it (SIGKILL in %.0fs)", child.name,
                      child.pid, liveness.live_url(str(child.spec.health_url)),
                      child.health.failures, rules.interval_s, rules.timeout_s,
                      rules.grace_s)  # fmt: skip
            child.to(State.HUNG, f"{child.health.failures} liveness probes unanswered")
            child.kill_at = now + rules.grace_s
            self.hooks.on_exit(child)
            self.sup.signal_group(child, signal.SIGTERM)
            self.sup.signal_group(child, signal.SIGCONT)
            self.hooks.on_change(self.children)
        elif child.state is State.HUNG and child.kill_at is not None and now >= child.kill_at:
            log.error("%s pid=%d: still running %.0fs after SIGTERM, SIGKILL", child.name,
                      child.pid, self.cfg.liveness.grace_s)  # fmt: skip
            self.sup.signal_group(child, signal.SIGKILL)
            child.kill_at = now + IDLE_S  # again, should it still be there

    def _report_fatal(self, now: float) -> None:
        fatal = [c for c in self.children if c.state is State.FATAL]
        if not fatal or now - self._fatal_reported < FATAL_REPORT_S:
            return
        self._fatal_reported = now
        workers = [c for c in self.children if c.spec.role == "worker"]
        serving = sum(1 for c in workers if c.state is State.RUNNING)
        for child in fatal:
            log.warning("%s: left stopped after a crash loop; %d of %d workers serve; its log: %s",
                        child.name, serving, len(workers), child.relay.log_path)  # fmt: skip

    def _after_exit(self, child: Child, now: float) -> None:
        assert child.status is not None
        uptime = now - child.started_at
        verdict = lifecycle.decide(
            rules_for(self.cfg, child.spec.role),
            status=child.status,
            uptime_s=uptime,
            attempt=child.backoff_attempt,
            recent_restarts=self.restart_times[child.name],
            now=now,
            jitter=random.random(),
        )
        what = (f"{child.name} pid={child.pid}: {describe_status(child.status)}"
                f"{child.exit_cause()} after {uptime:.1f}s")  # fmt: skip
        child.to(State.EXITED, describe_status(child.status))
        if verdict.restart:
            child.to(State.BACKOFF, f"restart in {verdict.delay_s:.1f}s")
            child.backoff_attempt = verdict.attempt
            child.next_start = now + verdict.delay_s
            log.error("%s; restart %d in %.1fs", what, child.restarts + 1, verdict.delay_s)
            return
        if verdict.crash_loop:
            r = self.cfg.restart
            gave_up = (f"{what}; gave up: {r.max_restarts} restarts within {r.window_s:.0f}s "
                       "(restart.max_restarts, restart.window_s)")  # fmt: skip
            # Another worker of its model must be left to serve that model.
            others = [c for c in self.children if c.spec.role == "worker" and c is not child
                      and c.spec.model == child.spec.model]  # fmt: skip
            left = sum(c.state is not State.FATAL for c in others)
            if lifecycle.keep_serving(child.spec.role, r.crash_loop, others_left=left):
                child.to(State.FATAL, "crash loop; other workers serve")
                log.error("%s; left stopped while %d other worker(s) serve %r "
                          "(restart.crash_loop: keep-serving)", gave_up, left,
                          child.spec.model)  # fmt: skip
                self._fatal_reported = now
                return
            log.error("%s; stopping everything", gave_up)
            raise RunEndedError(lifecycle.run_exit_code(child.status))
        log.warning("%s; not restarted (restart policy)", what)
        if child.spec.role != "worker":
            raise RunEndedError(lifecycle.exit_code(child.status))

    # -- operations: the control socket's requests, run by an operation's thread -----------------
    def _on_request(self, request: control_socket.Request) -> None:
        """The control socket's thread: hand the request to the loop."""
        self._requests.put(request)
        self._wake()

    def _take_requests(self) -> None:
        while True:
            try:
                request = self._requests.get_nowait()
            except queue.Empty:
                return
            self._begin(request)

    def _begin(self, request: control_socket.Request) -> None:
        from launcher.supervision import rolling

        if self._operation is not None:
            log.warning("dynlaunch: %s refused: busy with %s", request.payload.get("op"),
                        self._operation_text or "an operation")  # fmt: skip
            request.reply(False, f"busy: {self._operation_text or 'an operation'}; try again "
                          "when it has ended", EXIT_FAILED)  # fmt: skip
            return
        from launcher.supervision import op_requests

        prepare = partial(op_requests.prepare, self, request.payload)
        runner = rolling.Runner(self, request, prepare, self.hooks.allocate)
        self._operation = threading.Thread(target=runner.run, name="operation", daemon=True)
        self._operation.start()

    def in_loop(self, fn: Callable[[], T]) -> T:
        """From an operation's thread: run ``fn`` on the serve loop and return what it returns.
        Raises rolling.AbortedError once the launcher is stopping."""
        from launcher.supervision.rolling import AbortedError

        future: Future[T] = Future()
        self._calls.put((fn, future))
        self._wake()
        while True:
            try:
                return future.result(timeout=0.2)
            except FutureTimeout:
                if self.stopping.is_set() and future.cancel():
                    raise AbortedError from None

    def _run_calls(self) -> None:
        while True:
            try:
                fn, future = self._calls.get_nowait()
            except queue.Empty:
                return
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn())
            except Exception as err:  # noqa: BLE001 (the operation's thread reports it)
                future.set_exception(err)

    _operation_text: str | None = None

    def set_operation(self, text: str | None) -> None:
        self._operation_text = text
        self.hooks.on_operation(text)

    def operation_ended(self) -> None:
        """The operation's thread, at its end."""
        from launcher.supervision.rolling import AbortedError

        with contextlib.suppress(AbortedError):
            self.in_loop(partial(self.set_operation, None))
        self._operation = None

    def child_named(self, name: str) -> Child | None:
        return next((c for c in self.children if c.name == name), None)

    def start_replacement(self, spec: ProcessSpec) -> Child:
        child = self.sup.add(spec, self._width)
        self.children.append(child)
        self.restart_times[child.name] = []
        self._trial.add(child.name)
        self.sup.spawn(child, time.monotonic())
        if self._watcher is not None:
            self._watcher.watch(child)
        self.hooks.on_change(self.children)
        return child

    def promote(self, child: Child) -> None:
        """A replacement is ready: from now on it is supervised as any child."""
        self._trial.discard(child.name)
        child.to(State.RUNNING, "the replacement is ready")
        self.hooks.on_change(self.children)

    def retire(self, child: Child, term: bool = True) -> None:
        """SIGTERM (and SIGCONT) a replaced child's group (``term``; else it is left to exit on
        its own, as a fenced Dynamo 0.5 worker does); its exit is not restarted."""
        if child.state is not State.STOPPING:
            child.to(State.STOPPING, "replaced")
        if term:
            self.sup.signal_group(child, signal.SIGTERM)
            self.sup.signal_group(child, signal.SIGCONT)
        self.hooks.on_change(self.children)

    def kill_group(self, child: Child) -> None:
        self.sup.signal_group(child, signal.SIGKILL)

    def discard(self, child: Child) -> None:
        """A replacement that failed: SIGKILL it (if it still runs) and forget it."""
        self._trial.discard(child.name)
        if child.alive:
            child.to(State.STOPPING, "rolled back")
            self.sup.signal_group(child, signal.SIGKILL)
        else:
            self._drop(child)
        self.hooks.on_change(self.children)

    def adopt(self, child: Child) -> None:
        """A replacement that failed where nothing else serves its slot: its restart policy
        takes it over (restarted at once if it ended; supervised as running if it runs)."""
        self._trial.discard(child.name)
        if child.state is State.EXITED:
            child.to(State.BACKOFF, "a failed replacement, restarted by its policy")
            child.next_start = time.monotonic()
        elif child.state is State.STARTING:
            child.to(State.RUNNING, "a replacement not ready in time, supervised as running")
        self.hooks.on_change(self.children)

    def _ended_by_operation(self, child: Child) -> bool:
        """A child that exited because of an operation (retired, rolled back), or a replacement
        that ended before it was ready: no restart. True when it was one of those."""
        assert child.status is not None
        if child.state is State.STOPPING:
            child.to(State.STOPPED, describe_status(child.status))
            log.info("%s pid=%s: stopped (%s)", child.name, child.pid,
                     describe_status(child.status))  # fmt: skip
            self._drop(child)
            return True
        if child.name not in self._trial:
            return False
        log.error("%s pid=%s: %s%s before it was ready (a replacement); not restarted",
                  child.name, child.pid, describe_status(child.status),
                  child.exit_cause())  # fmt: skip
        child.to(State.EXITED, "a replacement that ended before it was ready")
        self.hooks.on_exit(child)  # it may have registered: fence it
        return True

    def _drop(self, child: Child) -> None:
        if child in self.children:
            self.children.remove(child)
        self.sup.children.pop(child.name, None)
        self.restart_times.pop(child.name, None)
        self._trial.discard(child.name)
        self.hooks.on_change(self.children)

    # -- stop ------------------------------------------------------------------------------------
    def _shutdown(self) -> bool:
        """Stop everything in reverse order; True when something had to be SIGKILLed."""
        killed = False
        for tier in (("worker",), ("frontend",), ("nats", "etcd")):
            if "etcd" in tier:
                self.hooks.dynamo_stopped()
            group = [c for c in self.children if c.spec.role in tier]
            for child in group:
                if child.state is State.BACKOFF:
                    child.to(State.STOPPED, "stopped during its backoff")
            killed |= self.sup.stop(group, self.cfg.stop_timeout_s,
                                    hurry=lambda: len(self.signals) > 1)  # fmt: skip
            for child in group:
                if child.status is not None and child.pid is not None:
                    log.info("%s pid=%d: stopped (%s)", child.name, child.pid,
                             describe_status(child.status))  # fmt: skip
        killed |= self.sup.sweep() > 0
        self.hooks.on_change(self.children)
        return killed
