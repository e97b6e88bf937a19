"""`--model NAME` of `plan`/`up --role worker`: the worker pod of one model of a `models:` list
(what `render k8s` runs in each model's worker service). Pure."""

from __future__ import annotations

from launcher.config import Config
from launcher.errors import ConfigError
from launcher.models import model_specs


def select_model(cfg: Config, name: str, role: str) -> Config:
    """The config with only the `models:` entry named ``name``. Its router mode is the config's
    (`render k8s` ships the whole deployment's resolved mode, so every pod agrees)."""
    if role != "worker":
        raise ConfigError(f"--model {name}: selects the model of a worker pod; use --role worker")
    names = [s.component for s in model_specs(cfg)]
    if cfg.models is None or name not in names:
        have = f"models: has {', '.join(names)}" if cfg.models is not None else "no models: list"
        raise ConfigError(f"--model {name}: not a model of this config ({have})")
    entry = cfg.models[names.index(name)].model_dump() | {"name": name}
    return Config.model_validate(cfg.model_dump() | {"models": [entry]})
