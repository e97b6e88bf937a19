"""Run one operation (`dynlaunch restart`) on a serving stack, step by step, in its own thread.

The thread only waits and probes: every spawn, signal and change of the children runs on the
serve loop (`Stack.in_loop`), which goes on reaping and probing liveness meanwhile.

Replace one worker, start first (mocker; SGLang with free GPUs): start its replacement with ports
of its own; wait until it is registered in etcd and its /health says 200; fence the old one
(revoke its lease: the frontend stops routing to it), SIGTERM it (in-flight requests finish),
SIGKILL after restart.drain_s. A replacement that exits or is not ready in time is stopped: the
old worker never stopped serving (rolled back), and the operation fails naming the step.
Stop first (SGLang without free GPUs; the frontend, whose HTTP port is the stack's address): fence
and stop the old one, then start the replacement in its place.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING

from launcher import operations, probes
from launcher.errors import EXIT_STARTUP, DynlaunchError
from launcher.operations import Step
from launcher.supervision.control_socket import Request
from launcher.supervision.lifecycle import State
from launcher.supervision.supervisor import describe_status

if TYPE_CHECKING:
    from launcher.plan import PortSlot, ProcessSpec
    from launcher.stack import Stack
    from launcher.supervision.supervisor import Child

log = logging.getLogger(__name__)
POLL_S = 0.2


class AbortedError(Exception):
    """The launcher is stopping: the operation ends where it is."""


class StepFailedError(Exception):
    pass


Allocate = Callable[["Sequence[PortSlot]", str], dict[str, int]]


@dataclass
class Prepared:
    """An operation, planned: its steps, its name in every line ("restart of the workers"),
    lines said before the steps (reload: the plan of changes), what to do on the loop before
    the steps (reload: take the new config), and the reply when there is nothing to do."""

    steps: list[Step]
    what: str
    intro: list[str] = field(default_factory=list)
    before: Callable[[], None] | None = None
    nothing: str = "nothing to do"


class Runner:
    def __init__(
        self, stack: Stack, request: Request, prepare: Callable[[], Prepared], allocate: Allocate
    ) -> None:
        self.stack = stack
        self.request = request
        self.prepare = prepare  # runs in the operation's thread (reload resolves a config)
        self.steps: list[Step] = []
        self.what = "operation"  # "restart of the workers"
        self.allocate = allocate
        self.replaced: list[str] = []
        self._stopped: list[Child] = []  # --no-rolling: the workers stopped, then started again
        self._started: list[Child] = []

    def _say(self, text: str) -> None:
        """One log line per step, also streamed to the client and shown by `status`."""
        log.info("dynlaunch: %s", text)
        self.request.progress(text)
        self.stack.in_loop(partial(self.stack.set_operation, text))

    def run(self) -> None:
        began = time.monotonic()
        try:
            try:
                prepared = self.prepare()
            except DynlaunchError as err:  # refused: nothing was touched
                log.error("dynlaunch: refused: %s", err)
                self.request.reply(False, str(err), err.exit_code)
                return
            self.steps, self.what = prepared.steps, prepared.what
            for line in prepared.intro:
                self._say(f"{self.what}: {line}")
            if prepared.before is not None:
                self.stack.in_loop(prepared.before)
            if not self.steps:
                log.info("dynlaunch: %s: %s", self.what, prepared.nothing)
                self.request.reply(True, f"{self.what}: {prepared.nothing}")
                return
            for i, step in enumerate(self.steps, 1):
                self._step(i, step)
        except StepFailedError as err:
            log.error("dynlaunch: %s failed: %s", self.what, err)
            self.request.reply(False, f"{self.what} failed: {err}", EXIT_STARTUP)
        except AbortedError:
            self.request.reply(False, f"{self.what}: the launcher is stopping", EXIT_STARTUP)
        except Exception as err:  # a bug: the run goes on; the client hears of it
            log.exception("dynlaunch: %s: unexpected error", self.what)
            self.request.reply(False, f"{self.what}: internal error: {err!r}", EXIT_STARTUP)
        else:
            done = f"{self.what} done in {time.monotonic() - began:.1f}s: " + ", ".join(
                self.replaced
            )
            log.info("dynlaunch: %s", done)
            self.request.reply(True, done)
        finally:
            self.stack.operation_ended()

    # -- one step --------------------------------------------------------------------------------
    def _step(self, i: int, step: Step) -> None:
        where = f"step {i}/{len(self.steps)}: {step.words()}"
        if step.action == "add":
            self._add(step, where)
            return
        if step.action in ("stop-all", "start-all", "ready-all"):
            self._together(step, where)
            return
        old = self.stack.child_named(step.name)
        if old is None or not old.alive:
            raise StepFailedError(f"{where}: {step.name} is not running now; nothing changed")
        if step.action == "remove":
            self._say(f"{self.what}: {where}")
            self._stop(old, where=where)
            self.replaced.append(f"{old.name} pid={old.pid} removed")
            return
        name = operations.next_name(old.name)
        base = step.spec or old.spec
        try:
            ports = self.allocate(operations.port_slots(base, name, step.start_first), name)
        except DynlaunchError as err:
            raise StepFailedError(f"{where}: {err}") from None
        if not step.start_first:  # in the old one's place: its ports
            ports = {f"{name}.{kind}": port for kind, port in old.spec.ports.items()}
        spec = operations.respec(base, name, ports, gpus=step.gpus)
        self._say(f"{self.what}: {where}")
        if step.start_first:
            new = self._start(spec, where)
            self._wait_ready(new, where, rollback=old)
            self._stop(old, where=where)
        else:
            self._stop(old, where=where)
            new = self._start(spec, where)
            self._wait_ready(new, where, rollback=None)
        self.stack.in_loop(partial(self.stack.promote, new))
        self.replaced.append(f"{old.name} pid={old.pid} -> {new.name} pid={new.pid}")

    def _add(self, step: Step, where: str) -> None:
        """A new worker (scale up): started, registered and healthy, or stopped again."""
        assert step.spec is not None
        if self.stack.child_named(step.name) is not None:
            raise StepFailedError(f"{where}: a child named {step.name} exists; nothing changed")
        try:
            ports = self.allocate(operations.port_slots(step.spec, step.name, True), step.name)
        except DynlaunchError as err:
            raise StepFailedError(f"{where}: {err}") from None
        spec = operations.respec(step.spec, step.name, ports, gpus=step.spec.gpus)
        self._say(f"{self.what}: {where}")
        new = self._start(spec, where)
        self._wait_ready(new, where, rollback=None, added=True)
        self.stack.in_loop(partial(self.stack.promote, new))
        self.replaced.append(f"{new.name} pid={new.pid} added")

    # -- restart --no-rolling: all workers stopped together, then started again ----------------
    def _together(self, step: Step, where: str) -> None:
        self._say(f"{self.what}: {where}")
        if step.action == "stop-all":
            olds = [self.stack.child_named(n) for n in step.names]
            gone = [n for n, c in zip(step.names, olds, strict=True) if c is None or not c.alive]
            if gone:
                raise StepFailedError(f"{where}: {', '.join(gone)} not running now; nothing "
                                      "changed")  # fmt: skip
            self._stopped = [c for c in olds if c is not None]
            self._stop(*self._stopped, where=where)
        elif step.action == "start-all":  # in the old ones' places: their ports and GPUs
            holders: dict[str, Child] = {}  # GPU -> the last replacement started on it
            for old in self._stopped:
                # Workers sharing a GPU start one after another, as at `up` (plan.gpu_waves):
                # SGLang sizes its memory from what is free when it starts.
                for before in {holders[g].name: holders[g] for g in old.spec.gpus
                               if g in holders}.values():  # fmt: skip
                    try:
                        self._wait_ready(before, where, rollback=None)
                    except StepFailedError:  # the others started: left to their policy too
                        for new in self._started:
                            if new is not before:
                                self.stack.in_loop(partial(self.stack.adopt, new))
                        raise
                name = operations.next_name(old.name)
                ports = {f"{name}.{kind}": port for kind, port in old.spec.ports.items()}
                new = self._start(operations.respec(old.spec, name, ports), where)
                self._started.append(new)
                holders.update(dict.fromkeys(new.spec.gpus, new))
        else:
            waiting = list(self._started)
            try:
                while waiting:
                    self._wait_ready(waiting[0], where, rollback=None)
                    self.stack.in_loop(partial(self.stack.promote, waiting.pop(0)))
            finally:  # one never became ready: the others are left to their restart policy too
                for new in waiting[1:]:
                    self.stack.in_loop(partial(self.stack.adopt, new))
            pairs = zip(self._stopped, self._started, strict=True)
            self.replaced += [f"{o.name} pid={o.pid} -> {n.name} pid={n.pid}" for o, n in pairs]

    def _start(self, spec: ProcessSpec, where: str) -> Child:
        new = self.stack.in_loop(partial(self.stack.start_replacement, spec))
        self._say(f"{self.what}: {where}: {new.name} pid={new.pid} started; waiting until ready")
        return new

    def _wait_ready(
        self, new: Child, where: str, rollback: Child | None, added: bool = False
    ) -> None:
        deadline = time.monotonic() + self.stack.cfg.startup_timeout_s
        while not self._ready(new):
            self._check_stopping()
            why = None
            if new.status is not None:
                why = f"{new.name} {describe_status(new.status)} before it was ready"
            elif new.relay.fatal is not None:  # a line that means it can never serve
                why = f"{new.name} cannot serve: {new.relay.fatal.strip()[-200:]!r}"
            elif time.monotonic() > deadline:
                why = (f"{new.name} not ready after {self.stack.cfg.startup_timeout_s:.0f}s "
                       "(startup_timeout_s)")  # fmt: skip
            if why is None:
                time.sleep(POLL_S)
                continue
            why += f"; its log: {new.relay.log_path}"
            if added:  # nothing else changed: it goes
                self.stack.in_loop(partial(self.stack.discard, new))
                self._wait_gone(new)
                raise StepFailedError(f"{where}: {why}; it was stopped again")
            if rollback is not None:
                self.stack.in_loop(partial(self.stack.discard, new))
                self._wait_gone(new)
                raise StepFailedError(
                    f"{where}: {why}; rolled back: {rollback.name} pid={rollback.pid} serves on"
                )
            # Stopped first: the slot must not stay empty; its restart policy takes it over.
            self.stack.in_loop(partial(self.stack.adopt, new))
            raise StepFailedError(f"{where}: {why}; left to its restart policy")
        ready = "lists the models" if new.spec.role == "frontend" else "is registered in etcd"
        self._say(f"{self.what}: {where}: {new.name} pid={new.pid} is healthy and {ready}")

    def _ready(self, child: Child) -> bool:
        if child.status is not None or child.spec.health_url is None:
            return False
        if not probes.http_ok(child.spec.health_url):
            return False
        if child.spec.role == "frontend":
            base = self.stack.plan.url
            return all(probes.model_listed(base, m) for m in self.stack.plan.models)
        serving = self.stack.in_loop(partial(_serving, self.stack, child))
        return self.stack.hooks.registered(child, serving)

    def _stop(self, *olds: Child, where: str) -> None:
        """Fence, SIGTERM, SIGKILL after the drain time; wait until the loop has reaped them.
        Several (--no-rolling): all fenced and signalled first, drained together. A worker is
        fenced again once it is gone: a no-op where the first fence worked; Dynamo 0.5 with an
        external NATS cannot tell a live worker's lease from the others', and a SIGTERMed 0.5
        worker leaves it to its TTL."""
        for old in olds:
            if old.spec.role == "worker":
                self.stack.hooks.on_exit(old)  # fence: revoke its lease, nothing new is routed
        drain = max(self._drain_s(old) for old in olds)
        # A 0.5 worker fenced while it ran finishes what it serves and exits on its own
        # (SIGTERM would cut its streams: 0.5 exits at once): it gets the drain time for that.
        leaving = [o for o in olds if self.stack.hooks.fenced_live(o)]
        for old in leaving:
            self.stack.in_loop(partial(self.stack.retire, old, term=False))
            self._say(f"{self.what}: {where}: {old.name} pid={old.pid} fenced; it finishes its "
                      f"requests and exits (up to {drain:.0f}s, then SIGTERM)")  # fmt: skip
        deadline = time.monotonic() + drain
        while any(o.alive for o in leaving) and time.monotonic() < deadline:
            self._check_stopping()
            time.sleep(POLL_S)
        for old in olds:
            if old in leaving and not old.alive:
                continue
            self.stack.in_loop(partial(self.stack.retire, old))
            fenced = "fenced, " if old.spec.role == "worker" else ""
            self._say(f"{self.what}: {where}: {old.name} pid={old.pid} {fenced}SIGTERM; draining "
                      f"(up to {drain:.0f}s)")  # fmt: skip
        deadline = time.monotonic() + drain
        while any(o.state is not State.STOPPED for o in olds) and time.monotonic() < deadline:
            self._check_stopping()
            time.sleep(POLL_S)
        for old in (o for o in olds if o.state is not State.STOPPED):
            log.warning("%s pid=%s: still running %.0fs after SIGTERM, SIGKILL", old.name,
                        old.pid, drain)  # fmt: skip
            self.stack.in_loop(partial(self.stack.kill_group, old))
        for old in olds:
            self._wait_gone(old)
        for old in olds:
            if old.spec.role == "worker":
                self.stack.hooks.on_exit(old)  # 0.5: its subjects lost their subscriber

    def _drain_s(self, old: Child) -> float:
        drain = self.stack.cfg.restart.drain_s if old.spec.role == "worker" else None
        return self.stack.cfg.stop_timeout_s if drain is None else drain

    def _wait_gone(self, child: Child) -> None:
        while child.state not in (State.STOPPED, State.EXITED) or child.alive:
            self._check_stopping()
            time.sleep(POLL_S)

    def _check_stopping(self) -> None:
        if self.stack.stopping.is_set():
            raise AbortedError


def _serving(stack: Stack, child: Child) -> int:
    """How many other workers of ``child``'s model serve now (running, not being replaced)."""
    return sum(1 for c in stack.children if c is not child and c.spec.role == "worker"
               and c.spec.model == child.spec.model and c.state is State.RUNNING)  # fmt: skip


def describe(steps: Sequence[Step], rolling: bool = True) -> str:
    roles = sorted({s.role for s in steps}, reverse=True)  # worker, frontend
    what = f"restart of the {' and '.join(roles)}{'s' if roles == ['worker'] else ''}"
    return what if rolling or "worker" not in roles else f"{what}, not rolling"
