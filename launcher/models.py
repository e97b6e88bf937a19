"""The models a config serves, resolved (pure): one `ModelSpec` per model, whether the config
has the single `model:` + `workers:` form or a `models:` list.

Every model's workers register on their own Dynamo endpoint, `dyn://NS.<component>.generate`:
Dynamo refuses a second model on an endpoint (and its mocker exits 0 without saying so), and a
frontend routes each model only to the workers of its endpoint. The single-model form keeps
Dynamo's default component `backend` and worker names `worker-0`, `worker-1`, ...; in a list each
model has a short `name` (default: from its served name) that is its component and the prefix of
its workers' names (`alpha-0`, `alpha-1`, ...).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from launcher.config import Config, ModelEntry, RouterMode
from launcher.errors import ConfigError

RESERVED = ("etcd", "nats", "frontend")  # process names of the stack
NAME_MAX = 24


@dataclass(frozen=True)
class ModelSpec:
    served: str  # the name clients ask for
    path: str
    component: str  # Dynamo component of its endpoint
    prefix: str  # its workers' names: f"{prefix}-{i}"
    count: int
    tp: int
    page_size: int
    gpus: tuple[str, ...] | None  # pinned GPUs; None: allocated from the host's
    extra_args: tuple[str, ...]
    env: tuple[tuple[str, str], ...]
    structured_output: bool
    router_mode: RouterMode | None  # as the config asked (None: not said)
    origin: str  # where it is configured, for messages: "model" or "models[1] (beta)"
    slot: int = 0  # its position: the engine-args file of a 0.5 mocker is per model

    @property
    def endpoint(self) -> str:
        return f"{self.component}.generate"

    def worker_names(self) -> list[str]:
        return [f"{self.prefix}-{i}" for i in range(self.count)]


def default_name(served: str) -> str:
    """`deepseek-ai/DeepSeek-R1-Distill-Llama-8B` -> `deepseek-r1-distill-llam`: the last path
    part, lower case, runs of anything else than a-z0-9 as one '-', at most NAME_MAX."""
    tail = served.rstrip("/").rsplit("/", 1)[-1].lower()
    name = re.sub(r"[^a-z0-9]+", "-", tail).strip("-")[:NAME_MAX].strip("-")
    return name or "model"


def model_specs(cfg: Config) -> tuple[ModelSpec, ...]:
    """The config's models; a `models:` list is checked for names that clash."""
    wk = cfg.workers
    if cfg.models is None:
        return (
            ModelSpec(
                served=cfg.served_model_name, path=cfg.model.path, component="backend",
                prefix="worker", count=wk.count, tp=wk.tp, page_size=wk.page_size,
                gpus=None,  # workers.gpus is the host's pool (resolve): nothing pinned
                extra_args=tuple(wk.extra_args), env=tuple(sorted(wk.env.items())),
                structured_output=cfg.model.structured_output, router_mode=None, origin="model",
            ),
        )  # fmt: skip
    specs = tuple(_entry(cfg, i, entry) for i, entry in enumerate(cfg.models))
    _check_names(specs)
    return specs


def _entry(cfg: Config, i: int, e: ModelEntry) -> ModelSpec:
    wk = cfg.workers
    path = e.path or cfg.model.path
    served = e.served_name or e.path or e.name or cfg.served_model_name
    name = e.name or default_name(served)
    return ModelSpec(
        served=served, path=path, component=name, prefix=name,
        count=e.workers if e.workers is not None else wk.count,
        tp=e.tp if e.tp is not None else wk.tp,
        page_size=e.page_size if e.page_size is not None else wk.page_size,
        gpus=tuple(e.gpus) if e.gpus is not None else None,
        extra_args=tuple(e.extra_args if e.extra_args is not None else wk.extra_args),
        env=tuple(sorted((wk.env | e.env).items())),
        structured_output=e.structured_output, router_mode=e.router_mode,
        origin=f"models[{i}] ({name})", slot=i,
    )  # fmt: skip


def _check_names(specs: tuple[ModelSpec, ...]) -> None:
    seen: dict[str, ModelSpec] = {}
    served: dict[str, ModelSpec] = {}
    for spec in specs:
        if spec.component in RESERVED:
            raise ConfigError(
                f"{spec.origin}: name {spec.component!r} is a process of the stack; "
                f"choose another (not {', '.join(RESERVED)})"
            )
        if spec.component in seen:
            raise ConfigError(
                f"{spec.origin}: one endpoint dyn://NS.{spec.endpoint} for two models (also "
                f"{seen[spec.component].origin}); Dynamo serves one model per endpoint: give "
                "each entry its own name"
            )
        if spec.served in served:
            raise ConfigError(
                f"{spec.origin}: served name {spec.served!r} also used by "
                f"{served[spec.served].origin}; clients could not tell them apart"
            )
        seen[spec.component] = spec
        served[spec.served] = spec


def router_mode(
    cfg: Config, specs: tuple[ModelSpec, ...], *, kv_migrates: bool = False
) -> RouterMode:
    """The frontend's one router mode: `frontend.router_mode`, or the models' (they must agree);
    auto: kv when a model has 2+ workers and the Dynamo line's KV router still migrates the
    requests of a worker that dies (``kv_migrates``, launcher.compat), else round-robin."""
    asked = {s.router_mode for s in specs if s.router_mode is not None}
    fe = cfg.frontend.router_mode
    if fe != "auto":
        asked.add(fe)
    if len(asked) > 1:
        said = ", ".join(
            [f"{s.origin}: {s.router_mode}" for s in specs if s.router_mode is not None]
            + ([f"frontend.router_mode: {fe}"] if fe != "auto" else [])
        )
        raise ConfigError(
            f"router modes disagree ({said}): one frontend routes every model one way "
            "(Dynamo's --router-mode); set frontend.router_mode"
        )
    if asked:
        return asked.pop()
    return "kv" if kv_migrates and any(s.count >= 2 for s in specs) else "round-robin"
