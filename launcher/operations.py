"""Operations on a running stack (`dynlaunch restart`): the pure part. Which steps, in which
order, and what a replacement process looks like. No I/O: the serve loop and the operation
runner (launcher/supervision/ops_runner.py) act on it.

A replacement is a new child: a new generation of the same slot, named ``worker-0.g2`` (then
``worker-0.g3``; the first generation keeps its plain name), with ports of its own, so that it
can start while the old one still serves.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from launcher.errors import ConfigError
from launcher.plan import PortSlot, ProcessSpec

ROLES = ("worker", "frontend", "all")
_GENERATION = re.compile(r"^(?P<slot>.+)\.g(?P<n>\d+)$")
# Environment variables that carry one of a worker's ports (plan._worker)
_PORT_ENV = {"system": "DYN_SYSTEM_PORT", "rpc": "DYN_TCP_RPC_PORT"}


@dataclass(frozen=True)
class Step:
    """Replace child ``name``: start its replacement first (``start_first``) or stop it first."""

    name: str
    role: str
    start_first: bool

    def words(self) -> str:
        order = "new one first" if self.start_first else "stopped first"
        return f"replace {self.name} ({order})"


@dataclass(frozen=True)
class Running:
    """What the planner needs to know of one running child."""

    name: str
    role: str
    gpus: tuple[str, ...] = ()


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


def restart_steps(
    role: str, running: Sequence[Running], backend: str, free_gpus: Sequence[str] = ()
) -> list[Step]:
    """The steps of `restart --role ROLE`: workers one at a time, then the frontend.

    A mocker worker's replacement always starts first; an SGLang worker's only when enough GPUs
    are free for it (else it is stopped first, and its replacement takes its GPUs). The frontend
    is always stopped first: its HTTP port is one."""
    if role not in ROLES:
        raise ConfigError(f"--role {role!r}: pick one of {', '.join(ROLES)}")
    steps: list[Step] = []
    if role in ("worker", "all"):
        for child in (c for c in running if c.role == "worker"):
            first = backend != "sglang" or len(free_gpus) >= len(child.gpus)
            steps.append(Step(child.name, "worker", start_first=first))
    if role in ("frontend", "all"):
        steps += [Step(c.name, "frontend", False) for c in running if c.role == "frontend"]
    if not steps:
        raise ConfigError(f"--role {role}: this run has no such process to restart")
    return steps


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
            kv = json.loads(argv[i + 1])
            kv["endpoint"] = f"tcp://127.0.0.1:{new['kv_events']}"
            argv[i + 1] = json.dumps(kv, separators=(",", ":"))
    health = spec.health_url
    if health is not None and "system" in new and spec.role == "worker":
        health = f"http://127.0.0.1:{new['system']}/health"
    return replace(
        spec, name=name, argv=tuple(argv), env=env, ports=new, health_url=health,
        gpus=spec.gpus if gpus is None else gpus,
    )  # fmt: skip
