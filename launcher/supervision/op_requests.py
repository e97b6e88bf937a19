"""What a control-socket request asks for, planned (`restart`, `scale`, `reload`): runs in the
operation's thread; what it reads of the children it gets from the serve loop (`in_loop`).

Reload resolves the new config the way `up` does (`Hooks.resolve`: the same flags and
environment, the config file given or the one the run uses), refuses what cannot change under a
running stack (operations.not_live) and replaces only the processes whose argv, env or GPUs
changed (operations.diff)."""

from __future__ import annotations

import dataclasses
import os
from functools import partial
from typing import TYPE_CHECKING, Any

from launcher import operations
from launcher.config import mask_userinfo
from launcher.errors import ConfigError
from launcher.supervision.lifecycle import State
from launcher.supervision.rolling import Prepared, describe

if TYPE_CHECKING:
    from launcher.config import Config
    from launcher.plan import Plan
    from launcher.stack import Stack

OPS = ("restart", "scale", "reload")


def _running(stack: Stack) -> list[operations.Running]:
    return [operations.Running(c.name, c.spec.role, c.spec.gpus, c.spec.model, c.spec)
            for c in stack.children if c.alive and c.state is State.RUNNING]  # fmt: skip


def _used_gpus(stack: Stack) -> set[str]:
    return {g for c in stack.children if c.state is not State.STOPPED for g in c.spec.gpus}


def _free_gpus(stack: Stack, used: set[str], also: tuple[str, ...] = ()) -> list[str]:
    """SGLang: the GPUs of the run's pool (and ``also``) that no child holds now."""
    if stack.plan.backend != "sglang":
        return []
    return [g for g in dict.fromkeys((*stack.hooks.gpu_pool(), *also)) if g not in used]


def prepare(stack: Stack, payload: dict[str, Any]) -> Prepared:
    op = payload.get("op")
    if op not in OPS:
        raise ConfigError(f"unknown operation {op!r}; this dynlaunch knows: {', '.join(OPS)}")
    why = operations.refusal(stack.plan.role, str(op), str(payload.get("role") or "worker"))
    if why is not None:
        raise ConfigError(f"{why}; nothing was changed")
    if op == "restart":
        return _restart(stack, payload)
    if op == "scale":
        return _scale(stack, payload)
    return _reload(stack, payload)


def _restart(stack: Stack, payload: dict[str, Any]) -> Prepared:
    role = str(payload.get("role") or "worker")
    running, used = stack.in_loop(lambda: (_running(stack), _used_gpus(stack)))
    if payload.get("rolling", True) is not True:
        steps = operations.restart_together_steps(role, running)
        return Prepared(steps, describe(steps, rolling=False))
    free = _free_gpus(stack, used)
    steps = operations.restart_steps(role, running, stack.plan.backend, free)
    return Prepared(steps, describe(steps))


def _scale(stack: Stack, payload: dict[str, Any]) -> Prepared:
    count = payload.get("workers")
    if not isinstance(count, int) or isinstance(count, bool):
        raise ConfigError(f"--workers {count!r}: not a number")
    running, used = stack.in_loop(lambda: (_running(stack), _used_gpus(stack)))
    names = {w.model: operations.slot_of(w.name).rsplit("-", 1)[0] for w in running
             if w.role == "worker"}  # fmt: skip
    model = operations.pick_model(payload.get("model"), names)
    free = _free_gpus(stack, used)
    steps = operations.scale_steps(model, count, running, stack.plan.backend, free)
    now = sum(1 for w in running if w.role == "worker" and w.model == model)
    return Prepared(steps, f"scale of {model!r} from {now} to {count} workers",
                    nothing=f"it has {count} worker(s) already")  # fmt: skip


def _facts(cfg: Config, plan: Plan) -> operations.Facts:
    infra = repr((cfg.infra.etcd.model_dump(), cfg.infra.nats.model_dump(), cfg.infra.auth))
    return operations.Facts(
        namespace=plan.namespace, dynamo_version=plan.dynamo_version, backend=plan.backend,
        url=plan.url, state_dir=plan.state_dir,
        etcd="embedded" if plan.by_role("etcd") else mask_userinfo(plan.etcd_endpoints),
        nats="embedded" if plan.by_role("nats") else mask_userinfo(plan.nats_url), infra=infra,
    )  # fmt: skip


def _reload(stack: Stack, payload: dict[str, Any]) -> Prepared:
    given = payload.get("config")
    path = str(given) if given else stack.config_path
    running, own = stack.in_loop(
        lambda: (_running(stack), {p for c in stack.children for p in c.spec.ports.values()})
    )
    cfg, plan = stack.hooks.resolve(path, frozenset(own))
    old = stack.plan
    facts = _facts(cfg, plan)  # before the embedded etcd and NATS URLs are kept below
    # Embedded etcd and NATS: the new plan picked ports of its own for them; they stay.
    moves = {plan.etcd_endpoints: old.etcd_endpoints} if old.by_role("etcd") else {}
    moves |= {plan.nats_url: old.nats_url} if old.by_role("nats") else {}
    plan = dataclasses.replace(
        plan, processes=tuple(operations.rebase(plan.processes, moves)),
        etcd_endpoints=old.etcd_endpoints if old.by_role("etcd") else plan.etcd_endpoints,
        nats_url=old.nats_url if old.by_role("nats") else plan.nats_url,
    )  # fmt: skip
    # etcd and NATS: their settings are compared as config (Facts.infra), not as processes
    dynamo = ("frontend", "worker")
    specs = [r.spec for r in running if r.spec is not None and r.role in dynamo]
    specs = operations.as_planned(specs, old.processes)  # GPUs as the running config gave them
    changes = operations.diff(specs, [p for p in plan.processes if p.role in dynamo])
    refused = operations.not_live(_facts(stack.cfg, old), facts, changes)
    source = path or "the command line and environment"
    if refused:
        raise ConfigError(
            f"reload of {source}: cannot change under a running stack: {'; '.join(refused)}; "
            "nothing was changed. To apply it: dynlaunch down, then dynlaunch up with the new "
            "config"
        )
    # SGLang: GPUs free now, of the run's pool and of those the new config gives its workers
    planned = tuple(g for p in plan.processes for g in p.gpus)
    free = _free_gpus(stack, stack.in_loop(partial(_used_gpus, stack)), also=planned)
    steps = operations.reload_steps(changes, running, plan.processes, plan.backend, free)
    intro = [f"{c.slot}: {c.what}" for c in changes] or ["no process changes"]
    intro = [f"plan: {len(steps)} step(s)", *intro]

    def take() -> None:  # on the loop: the new config is the run's from now on
        stack.cfg, stack.plan, stack.config_path = cfg, plan, path

    what = f"reload of {os.path.basename(path) if path else 'the config'}"
    return Prepared(steps, what, intro=intro, before=take,
                    nothing="nothing changed in the processes")  # fmt: skip
