"""Operations on a running stack (`dynlaunch restart`): the pure part. Which steps, in which
order, and what a replacement process looks like. No I/O: the serve loop and the operation
runner (launcher/supervision/ops_runner.py) act on it.

A replacement is a new child: a new generation of the same slot, named ``worker-0.g2`` (then
``worker-0.g3``; the first generation keeps its plain name), with ports of its own, so that it
can start while the old one still serves.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from launcher.errors import ConfigError
from launcher.plan import PortSlot, ProcessSpec

ROLES = ("worker", "frontend", "all")
_GENERATION = re.compile(r"^(?P<slot>.+)\.g(?P<n>\d+)$")
# Environment variables that carry one of a worker's ports (plan._worker)
_PORT_ENV = {
    "system": "DYN_SYSTEM_PORT",
    "rpc": "DYN_TCP_RPC_PORT",
    "response": "DYN_TCP_RESPONSE_STREAM_PORT",
}


@dataclass(frozen=True)
class Step:
    """``action`` "replace": replace child ``name``, its replacement started first
    (``start_first``) or after it stopped; ``spec``: what the replacement runs (reload), else
    the old one's. "add": start a new worker ``name`` from ``spec`` (scale up). "remove": fence,
    drain and stop child ``name`` (scale down)."""

    name: str
    role: str
    start_first: bool = True
    action: str = "replace"
    spec: ProcessSpec | None = field(default=None, compare=False, repr=False)
    gpus: tuple[str, ...] | None = None  # the replacement's GPUs (None: those of its spec)
    names: tuple[str, ...] = ()  # "stop-all", "start-all", "ready-all": the workers (--no-rolling)

    def words(self) -> str:
        if self.action == "add":
            return f"add {self.name}"
        listed = ", ".join(self.names)
        if self.action == "stop-all":
            return f"stop {listed} together (fenced, drained; no worker serves until they are back)"
        if self.action == "start-all":
            return f"start {', '.join(next_name(n) for n in self.names)} in their places"
        if self.action == "ready-all":
            new = ", ".join(next_name(n) for n in self.names)
            return f"wait until {new} are registered and answer"
        if self.action == "remove":
            return f"remove {self.name} (drained first)"
        order = "new one first" if self.start_first else "stopped first"
        on = f", GPUs {','.join(self.gpus)}" if self.gpus else ""
        return f"replace {self.name} ({order}{on})"


@dataclass(frozen=True)
class Running:
    """What the planner needs to know of one running child."""

    name: str
    role: str
    gpus: tuple[str, ...] = ()
    model: str = ""
    spec: ProcessSpec | None = field(default=None, compare=False, repr=False)


def slot_of(name: str) -> str:
    """``worker-0.g3`` -> ``worker-0``."""
    m = _GENERATION.match(name)
    return m.group("slot") if m else name


def generation(name: str) -> int:
    m = _GENERATION.match(name)
    return int(m.group("n")) if m else 1


def next_name(name: str) -> str:
    """The replacement's name: ``worker-0`` -> ``worker-0.g2`` -> ``worker-0.g3``."""
    return f"{slot_of(name)}.g{generation(name) + 1}"


def place(
    old: Sequence[str], free: Sequence[str], want: Sequence[str] | None = None
) -> tuple[bool, tuple[str, ...], list[str]]:
    """Where an SGLang worker's replacement runs, and the GPUs free after its step: (start first,
    its GPUs, free GPUs then). ``old``: the old worker's GPUs; ``free``: those no process holds
    now; ``want``: the GPUs its new config asks for (reload), else the old ones' count.

    Start first when its GPUs are free now: the wanted ones if all are free, else the first free
    ones (as many as it needs). Otherwise stop first: the wanted GPUs if the old worker's and
    the free ones cover them, else the old worker's own. Once the step is done the old worker's
    GPUs are free and the replacement's are not: the next step of the operation (steps run one at
    a time, each old worker stopped and reaped before the next begins) may use them."""
    need = len(want) if want is not None else len(old)
    free = list(free)
    if want is not None and need and all(g in free for g in want):
        gpus, first = tuple(want), True
    elif need and len(free) >= need:
        gpus, first = tuple(free[:need]), True
    elif want is not None and all(g in free or g in old for g in want):
        gpus, first = tuple(want), False
    elif len(old) == need:
        gpus, first = tuple(old), False
    else:
        have = ", ".join(free) or "none"
        raise ConfigError(
            f"the replacement needs {need} GPU(s) and only {len(old)} (its old ones) and "
            f"{len(free)} free ({have}) can be had; nothing was changed"
        )
    after = [g for g in [*free, *old] if g not in gpus]
    return first, gpus, list(dict.fromkeys(after))


def restart_steps(
    role: str, running: Sequence[Running], backend: str, free_gpus: Sequence[str] = ()
) -> list[Step]:
    """The steps of `restart --role ROLE`: workers one at a time, then the frontend.

    A mocker worker's replacement always starts first; an SGLang worker's when enough GPUs are
    free for it at its step (it then runs on them; the GPUs its old worker frees are free for
    the next steps), else it is stopped first and its replacement takes its GPUs (`place`). The
    frontend is always stopped first: its HTTP port is one."""
    if role not in ROLES:
        raise ConfigError(f"--role {role!r}: pick one of {', '.join(ROLES)}")
    steps: list[Step] = []
    free = list(free_gpus)
    if role in ("worker", "all"):
        for child in (c for c in running if c.role == "worker"):
            if backend != "sglang":
                steps.append(Step(child.name, "worker"))
                continue
            first, gpus, free = place(child.gpus, free)
            steps.append(Step(child.name, "worker", start_first=first, gpus=gpus))
    if role in ("frontend", "all"):
        steps += [Step(c.name, "frontend", False) for c in running if c.role == "frontend"]
    if not steps:
        raise ConfigError(f"--role {role}: this run has no such process to restart")
    return steps


def restart_together_steps(role: str, running: Sequence[Running]) -> list[Step]:
    """`restart --no-rolling`: every worker stopped at once (fenced, then drained together), all
    started again in their places (same ports and GPUs), then waited for until each is
    registered and answers; the frontend (--role all, frontend) after them, stopped first. The
    workers' downtime is by design: from the first step until the last is done."""
    if role not in ROLES:
        raise ConfigError(f"--role {role!r}: pick one of {', '.join(ROLES)}")
    steps: list[Step] = []
    workers = tuple(c.name for c in running if c.role == "worker")
    if role in ("worker", "all") and workers:
        steps += [Step("workers", "worker", False, action=a, names=workers)
                  for a in ("stop-all", "start-all", "ready-all")]  # fmt: skip
    if role in ("frontend", "all"):
        steps += [Step(c.name, "frontend", False) for c in running if c.role == "frontend"]
    if not steps:
        raise ConfigError(f"--role {role}: this run has no such process to restart")
    return steps


def refusal(pod_role: str, op: str, role: str = "") -> str | None:
    """Why operation ``op`` (restart: of ``role``) makes no sense in a pod of ``pod_role`` (`up
    --role frontend|worker`), or None. A worker pod restarts, scales and reloads its own workers;
    a frontend pod restarts and reloads its frontend; neither reaches the other pod's processes."""
    if pod_role == "worker" and op == "restart" and role == "frontend":
        return ("restart --role frontend: this is a worker pod (up --role worker): it runs no "
                "frontend; restart it where the frontend runs (its pod's dynlaunch)")  # fmt: skip
    if pod_role == "frontend" and op == "scale":
        return ("scale: this is a frontend pod (up --role frontend): it runs no workers; "
                "scale them where they run (dynlaunch scale in a worker pod)")  # fmt: skip
    if pod_role == "frontend" and op == "restart" and role == "worker":
        return ("restart --role worker: this is a frontend pod (up --role frontend): it runs "
                "no workers; restart them where they run (the worker pod's dynlaunch), or "
                "this pod's frontend with --role frontend")  # fmt: skip
    return None


def port_slots(spec: ProcessSpec, name: str, start_first: bool) -> list[PortSlot]:
    """The ports a replacement of ``spec`` needs: new ones when it starts beside the old process.
    The frontend keeps its ports (its HTTP port is the stack's address)."""
    if spec.role == "frontend" or not start_first:
        return []
    return [PortSlot(f"{name}.{kind}", None, "restart") for kind in spec.ports]


def respec(
    spec: ProcessSpec, name: str, ports: Mapping[str, int], gpus: tuple[str, ...] | None = None
) -> ProcessSpec:
    """``spec`` as its replacement ``name``: the new ports (by kind; a kind not given keeps its
    port) in its env, argv and health URL, and ``gpus`` when they change."""
    new = {kind: ports.get(f"{name}.{kind}", port) for kind, port in spec.ports.items()}
    env = dict(spec.env)
    for kind, var in _PORT_ENV.items():
        if var in env and kind in new:
            env[var] = str(new[kind])
    if gpus is not None and "CUDA_VISIBLE_DEVICES" in env:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(gpus)
    argv = list(spec.argv)
    for i, arg in enumerate(argv[:-1]):
        if arg == "--nccl-port" and "nccl" in new:
            argv[i + 1] = str(new["nccl"])
        elif arg == "--kv-events-config" and "kv_events" in new:
            # Only the port changes: the plan's address stays (SGLang binds only a wildcard
            # endpoint; a loopback one makes it connect, and no KV event reaches the router).
            kv = json.loads(argv[i + 1])
            kv["endpoint"] = f"{kv['endpoint'].rsplit(':', 1)[0]}:{new['kv_events']}"
            argv[i + 1] = json.dumps(kv, separators=(",", ":"))
    health = spec.health_url
    if health is not None and "system" in new and spec.role == "worker":
        health = f"http://127.0.0.1:{new['system']}/health"
    return replace(
        spec, name=name, argv=tuple(argv), env=env, ports=new, health_url=health,
        gpus=spec.gpus if gpus is None else gpus,
    )  # fmt: skip


# -- scale ---------------------------------------------------------------------------------------
def index_of(name: str) -> int:
    """A worker's index in its model's numbering: ``worker-3.g2`` -> 3 (-1: none)."""
    tail = slot_of(name).rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() else -1


def pick_model(given: str | None, models: Mapping[str, str]) -> str:
    """The served name of the model ``--model`` names (its served name or its short name);
    ``models``: served name -> short name. Without --model, the run's only model."""
    listed = ", ".join(sorted(models))
    if given is None:
        if len(models) == 1:
            return next(iter(models))
        raise ConfigError(f"this run serves several models ({listed}): say which with --model")
    for served, name in models.items():
        if given in (served, name):
            return served
    raise ConfigError(f"--model {given!r}: this run serves {listed or 'no model'}")


def scale_steps(
    model: str, count: int, running: Sequence[Running], backend: str, free_gpus: Sequence[str]
) -> list[Step]:
    """`scale --workers COUNT` of ``model``: add workers named after the model's highest index
    (SGLang: each with free GPUs, else refused before anything changes), or remove the highest
    indexes first. No steps: it has COUNT workers already."""
    if count < 1:
        raise ConfigError(f"--workers {count}: at least 1 (to stop the run: dynlaunch down)")
    workers = sorted((c for c in running if c.role == "worker" and c.model == model),
                     key=lambda c: index_of(c.name))  # fmt: skip
    if not workers or workers[0].spec is None:
        raise ConfigError(f"model {model!r}: none of its workers runs now; nothing to scale from")
    if count <= len(workers):
        gone = workers[count:][::-1]
        return [Step(c.name, "worker", action="remove") for c in gone]
    template = workers[0].spec
    prefix = slot_of(workers[0].name).rsplit("-", 1)[0]
    first = max(index_of(c.name) for c in workers) + 1
    add = count - len(workers)
    need = len(template.gpus)
    if backend == "sglang" and len(free_gpus) < add * need:
        free = ", ".join(free_gpus) or "none"
        raise ConfigError(
            f"--workers {count}: {add} more worker(s) of {model!r} need {add * need} free GPU(s) "
            f"({need} each); free now: {free}"
        )
    steps = []
    for i in range(add):
        gpus = tuple(free_gpus[i * need : (i + 1) * need]) if backend == "sglang" else ()
        spec = replace(template, gpus=gpus) if backend == "sglang" else template
        steps.append(Step(f"{prefix}-{first + i}", "worker", action="add", spec=spec))
    return steps


# -- reload --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Change:
    """How one process of the new config differs from the running one."""

    slot: str
    role: str
    what: str  # "added", "removed", or what changed: "argv: --speedup-ratio 1 -> 5; env: X"


def _masked(spec: ProcessSpec) -> tuple[tuple[str, ...], dict[str, str]]:
    """Its argv and env with its port numbers as <kind>: ports differ between any two plans."""
    subs = sorted(((str(p), k) for k, p in spec.ports.items()), key=lambda x: -len(x[0]))

    def mask(text: str) -> str:
        for port, kind in subs:
            text = re.sub(rf"(?<!\d){port}(?!\d)", f"<{kind}>", text)
        return text

    return tuple(mask(a) for a in spec.argv), {k: mask(v) for k, v in spec.env.items()}


def _argv_change(old: Sequence[str], new: Sequence[str]) -> str:
    parts = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, old, new).get_opcodes():
        if op == "equal":
            continue
        flag = old[i1 - 1] if i1 and not (old[i1:i2] or new[j1:j2])[0].startswith("-") else ""
        before, after = " ".join(old[i1:i2]) or "(nothing)", " ".join(new[j1:j2]) or "(nothing)"
        parts.append(f"{flag + ' ' if flag else ''}{before} -> {after}")
    return "argv: " + ", ".join(parts)


def diff(running: Sequence[ProcessSpec], new: Sequence[ProcessSpec]) -> list[Change]:
    """What a reload changes: each process (by slot: ``worker-0.g2`` is ``worker-0``) whose argv,
    env (only the variables' names are told: values may be secrets) or GPUs differ, ports aside;
    the processes the new config adds or no longer has."""
    old = {slot_of(s.name): s for s in running}
    changes: list[Change] = []
    for spec in new:
        before = old.get(spec.name)
        if before is None:
            changes.append(Change(spec.name, spec.role, "added"))
            continue
        (argv0, env0), (argv1, env1) = _masked(before), _masked(spec)
        what = [_argv_change(argv0, argv1)] if argv0 != argv1 else []
        names = sorted(k for k in {*env0, *env1} if env0.get(k) != env1.get(k))
        what += [f"env: {', '.join(names)}"] if names else []
        what += [f"gpus: {','.join(before.gpus)} -> {','.join(spec.gpus)}"] * (
            before.gpus != spec.gpus
        )
        if what:
            changes.append(Change(spec.name, spec.role, "; ".join(what)))
    planned = {s.name for s in new}
    changes += [Change(slot, s.role, "removed") for slot, s in old.items() if slot not in planned]
    return changes


def as_planned(running: Sequence[ProcessSpec], planned: Sequence[ProcessSpec]) -> list[ProcessSpec]:
    """The running workers with the GPUs their plan gave them (GPU ids and CUDA_VISIBLE_DEVICES):
    a restart may have moved a replacement onto free GPUs, which is no change of the config; a
    reload compares GPUs as the configs give them."""
    by_slot = {p.name: p for p in planned}
    out = []
    for spec in running:
        plan = by_slot.get(slot_of(spec.name))
        if spec.role != "worker" or plan is None or len(plan.gpus) != len(spec.gpus):
            out.append(spec)
            continue
        env = dict(spec.env)
        if "CUDA_VISIBLE_DEVICES" in env and "CUDA_VISIBLE_DEVICES" in plan.env:
            env["CUDA_VISIBLE_DEVICES"] = plan.env["CUDA_VISIBLE_DEVICES"]
        out.append(replace(spec, gpus=plan.gpus, env=env))
    return out


@dataclass(frozen=True)
class Facts:
    """What of a config cannot change under a running stack."""

    namespace: str
    dynamo_version: str
    backend: str
    url: str
    etcd: str  # "embedded" or the external endpoints (userinfo masked)
    nats: str
    infra: str  # infra.etcd / infra.nats / infra.auth settings, as one comparable text
    state_dir: str


def not_live(old: Facts, new: Facts, changes: Sequence[Change]) -> list[str]:
    """Each change a reload cannot make live, with its key."""
    found = []
    for key, name in (("namespace", "namespace"), ("dynamo_version", "the Dynamo version"),
                      ("backend", "the backend"), ("url", "the frontend's address "
                      "(frontend.http_host, frontend.http_port)"), ("etcd", "the etcd endpoints "
                      "(infra.etcd, ETCD_ENDPOINTS)"), ("nats", "the NATS server (infra.nats, "
                      "NATS_SERVER)"), ("state_dir", "the state dir")):  # fmt: skip
        a, b = getattr(old, key), getattr(new, key)
        if a != b:
            found.append(f"{name}: {a} -> {b}")
    if old.infra != new.infra and not found:
        found.append("the settings of etcd or NATS (infra.etcd, infra.nats, infra.auth)")
    found += [f"{c.slot}: {c.what}" for c in changes if c.role in ("etcd", "nats")]
    return found


def reload_steps(
    changes: Sequence[Change],
    running: Sequence[Running],
    new: Sequence[ProcessSpec],
    backend: str,
    free_gpus: Sequence[str] = (),
) -> list[Step]:
    """Changed workers replaced one at a time (new one first; SGLang: on the GPUs its new config
    gives it, or on other free ones, when free, else stopped first: `place`), added ones
    started, removed ones drained (highest index first), then the frontend (stopped first)."""
    by_slot = {slot_of(c.name): c for c in running}
    specs = {s.name: s for s in new}
    steps: list[Step] = []
    free = list(free_gpus)
    for c in (c for c in changes if c.role == "worker" and c.what not in ("added", "removed")):
        old, spec = by_slot[c.slot], specs[c.slot]
        if backend != "sglang":
            steps.append(Step(old.name, "worker", spec=spec))
            continue
        try:
            first, gpus, free = place(old.gpus, free, want=spec.gpus)
        except ConfigError as err:
            raise ConfigError(f"{c.slot}: {err}") from None
        steps.append(Step(old.name, "worker", first, spec=spec, gpus=gpus))
    steps += [Step(c.slot, "worker", action="add", spec=specs[c.slot])
              for c in changes if c.role == "worker" and c.what == "added"]  # fmt: skip
    gone = [by_slot[c.slot] for c in changes if c.role == "worker" and c.what == "removed"]
    steps += [Step(r.name, "worker", action="remove")
              for r in sorted(gone, key=lambda r: index_of(r.name), reverse=True)]  # fmt: skip
    steps += [Step(by_slot[c.slot].name, "frontend", False, spec=specs[c.slot])
              for c in changes if c.role == "frontend" and c.what != "added"]  # fmt: skip
    return steps


def rebase(specs: Sequence[ProcessSpec], moves: Mapping[str, str]) -> list[ProcessSpec]:
    """``specs`` with each text of ``moves`` (a new plan's embedded etcd and NATS URLs) replaced
    by the running stack's in argv and env: a reload keeps the etcd and NATS that run."""

    def move(text: str) -> str:
        for old, new in moves.items():
            text = text.replace(old, new)
        return text

    return [
        replace(s, argv=tuple(move(a) for a in s.argv), env={k: move(v) for k, v in s.env.items()})
        for s in specs
    ]
