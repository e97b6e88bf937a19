"""Config -> plan: every process `up` would start, with argv, env, GPUs and ports. Pure: no I/O.

The shell gathers the facts of the host (`Host`: Dynamo version, GPUs, allocated ports, state dir,
external endpoints) and passes them in, so the same inputs always give the same plan.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from launcher import gpus as gpu_slicing
from launcher.compat import MOCKER_ENGINE_ARGS_FILE, Compat, for_version
from launcher.config import Config, check_endpoints, mask_userinfo
from launcher.credentials import FILE as CREDENTIALS_FILE
from launcher.credentials import InfraAuth, to_text
from launcher.errors import ConfigError
from launcher.models import ModelSpec, model_specs, router_mode
from launcher.names import is_secret_flag, is_secret_name

if TYPE_CHECKING:
    from launcher.tlsfiles import TlsMaterial

SYSTEM_PORT_MAX = 32767  # Dynamo parses DYN_SYSTEM_PORT as a signed 16-bit number
ETCD_HEARTBEAT_MS, ETCD_ELECTION_MS = 25, 250  # the embedded etcd's raft timers (_etcd)
NATS_TLS_TIMEOUT_S = 5  # nats-server's TLS handshake limit (its default, 2 s, is tight under load)


@dataclass(frozen=True)
class PortSlot:
    """A port the plan needs. ``fixed`` ports come from config; the others are picked free."""

    name: str  # "worker-0.system"
    fixed: int | None
    origin: str  # the config key that sets it, for error messages
    maximum: int = 65535


@dataclass(frozen=True)
class Host:
    """Facts about the host, gathered by the shell."""

    dynamo_version: str
    python: str
    gpus: tuple[str, ...]
    gpu_source: str
    ports: Mapping[str, int]
    state_dir: str
    etcd_endpoints: str | None  # external etcd, or None for an embedded one
    nats_url: str | None
    etcd_binary: str = "etcd"  # resolved from infra.etcd.binary
    nats_binary: str = "nats-server"
    # Credentials: generated for embedded infra (when infra.auth), the user's for external infra;
    # ``infra_env`` is what Dynamo's processes get of them (credentials.child_env).
    auth: InfraAuth = field(default_factory=InfraAuth)
    infra_env: Mapping[str, str] = field(default_factory=dict)
    generated_auth: bool = False  # ``auth`` holds the state dir's generated credentials
    # infra.tls: the CA and certificates of the embedded etcd, and of the embedded NATS on 1.6+
    # (embedded_nats_tls); the shell writes them under STATE/tls/
    tls: TlsMaterial | None = field(default=None, repr=False)


@dataclass(frozen=True)
class ProcessSpec:
    name: str
    role: str  # etcd | nats | frontend | worker
    argv: tuple[str, ...]
    env: Mapping[str, str]  # only what dynlaunch sets; the rest is inherited
    gpus: tuple[str, ...] = ()
    ports: Mapping[str, int] = field(default_factory=dict)
    health_url: str | None = None  # answers 200 once the process is up
    model: str = ""  # a worker's served model name
    component: str = ""  # a worker's Dynamo component: its endpoint is NS.component.generate

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "role": self.role,
            "argv": mask_argv(self.argv),
            "env": {k: _shown_env(k, v) for k, v in self.env.items()},
            "gpus": list(self.gpus),
            "ports": dict(self.ports),
            **({"model": self.model} if self.model else {}),
        }


def _shown_env(name: str, value: str) -> str:
    """A secret's value as ***; PEM text (infra.tls: a certificate, or a key) as its kind only."""
    if is_secret_name(name):
        return "***"
    if value.lstrip().startswith("-----BEGIN"):
        return "*** (PEM text)"
    return mask_userinfo(value)


@dataclass(frozen=True)
class Plan:
    backend: str
    dynamo_version: str
    namespace: str
    served_model: str
    url: str  # the frontend's base URL, as a client on this host reaches it
    state_dir: str
    etcd_endpoints: str
    nats_url: str
    processes: tuple[ProcessSpec, ...]
    role: str = "all"  # all | frontend | worker
    warnings: tuple[str, ...] = ()  # e.g. placeholder GPU ids in a dry run
    files: tuple[tuple[str, str], ...] = ()  # (path, text) the shell writes before any start
    # (path, text) written 0600 and never shown: the generated credentials, nats-server's config
    secret_files: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    auth: InfraAuth = field(default_factory=InfraAuth)  # what dynlaunch's own clients use
    etcd_auth: bool = False  # embedded etcd: enable auth (user root) once it answers
    # Set in the model card once the workers registered, before the frontend starts (0.5).
    card_migration_limit: int | None = None
    served_models: tuple[str, ...] = ()  # every model, served_model first; () : served_model only
    router_mode: str = ""  # the frontend's (auto resolved)

    @property
    def models(self) -> tuple[str, ...]:
        return self.served_models or (self.served_model,)

    def workers_of(self, model: str) -> list[ProcessSpec]:
        return [p for p in self.by_role("worker") if p.model == model]

    def component_of(self, model: str) -> str:
        """The Dynamo component ``model``'s workers register under (from their endpoint)."""
        return next((p.component for p in self.workers_of(model)), "backend")

    def by_role(self, role: str) -> list[ProcessSpec]:
        return [p for p in self.processes if p.role == role]

    def to_json(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "role": self.role,
            "dynamo_version": self.dynamo_version,
            "namespace": self.namespace,
            "served_model": self.served_model,
            "url": self.url,
            "state_dir": self.state_dir,
            "processes": [p.to_json() for p in self.processes],
            "files": dict(self.files) | {path: "*** (0600)" for path, _ in self.secret_files},
            "start_order": [list(tier) for tier in start_tiers(self)],
            **({"gpu_waves": waves} if any((waves := gpu_waves(self)).values()) else {}),
            "models": {m: [p.name for p in self.workers_of(m)] for m in self.models},
            **({"router_mode": self.router_mode} if self.router_mode else {}),
            **({} if self.card_migration_limit is None
               else {"model_card": {"migration_limit": self.card_migration_limit}}),
            "warnings": list(self.warnings),
        }  # fmt: skip

    @property
    def frontend_after_registration(self) -> bool:
        """The frontend starts once every worker has registered (see `start_tiers`)."""
        return self.card_migration_limit is not None


def gpu_waves(plan: Plan) -> dict[str, int]:
    """Worker name -> the wave it starts in: 0, or one more than the last earlier worker it shares
    a GPU with. SGLang sizes its memory from what is free on the GPU when it starts (measured
    with 0.5.16: `--mem-fraction-static` x the free memory), so workers sharing a GPU that start
    together race: one finds its KV cache space taken and exits ("Loaded weights leave no GPU
    memory for the KV cache"). `up` starts a wave once the one before it is healthy."""
    waves: dict[str, int] = {}
    holders: dict[str, int] = {}  # GPU -> the latest wave that holds it
    for worker in plan.by_role("worker"):
        wave = max((holders[g] + 1 for g in worker.gpus if g in holders), default=0)
        waves[worker.name] = wave
        holders.update(dict.fromkeys(worker.gpus, wave))
    return waves


def start_tiers(plan: Plan) -> tuple[tuple[str, ...], ...]:
    """The roles `up` starts together, tier after tier. Embedded etcd and NATS start with the
    first Dynamo tier (a fresh etcd has nothing to lock or clear), unless etcd's auth must be
    turned on before any Dynamo process connects (`etcd_auth`); external ones are waited for
    first. Dynamo 1.x: frontend and workers at once. Dynamo 0.5: workers, then the frontend, once
    every worker has registered and the model card holds the migration limit (0.5's frontend
    reads it from the card when it first sees the model)."""
    dynamo = (
        (("worker",), ("frontend",))
        if plan.frontend_after_registration
        else (("frontend", "worker"),)
    )
    if plan.by_role("etcd") and plan.by_role("nats") and not plan.etcd_auth:
        return (("etcd", "nats", *dynamo[0]), *dynamo[1:])
    return (("etcd", "nats"), *dynamo)


def mask_argv(argv: tuple[str, ...]) -> list[str]:
    """The argv with the value of every secret-looking flag shown as ***."""
    out: list[str] = []
    hide_next = False
    for arg in argv:
        if hide_next and not arg.startswith("-"):
            out.append("***")
            hide_next = False
            continue
        flag, eq, _ = arg.partition("=")
        hide_next = is_secret_flag(flag) and not eq
        out.append(f"{flag}=***" if eq and is_secret_flag(flag) else arg)
    return out


def external_infra(cfg: Config, environ: Mapping[str, str]) -> tuple[str | None, str | None]:
    """Endpoints of infra the user runs: Dynamo's own variables (checked here; the config's are
    checked when it loads), else the config."""
    for name, kind in (("ETCD_ENDPOINTS", "etcd"), ("NATS_SERVER", "nats")):
        value = environ.get(name)
        if value:
            try:
                check_endpoints(value, "etcd" if kind == "etcd" else "nats")
            except ValueError as err:
                raise ConfigError(f"{name}: {err}") from None
    etcd = environ.get("ETCD_ENDPOINTS") or cfg.infra.etcd.endpoints
    nats = environ.get("NATS_SERVER") or cfg.infra.nats.url
    return etcd, nats


def port_slots(
    cfg: Config,
    *,
    embedded_etcd: bool,
    embedded_nats: bool,
    role: str = "all",
    system_port0: int | None = None,
    nccl: bool = False,
    dynamo_version: str = "1.4.2",
    backend: str,
) -> list[PortSlot]:
    """The ports the plan needs: only those the Dynamo line honours (0.5 picks its response port
    itself and has no TCP request plane). ``system_port0``: worker-0's DYN_SYSTEM_PORT from a
    pod's env.
    ``nccl``: one torch.distributed rendezvous port per SGLang worker (``--nccl-port``); left to
    SGLang, two workers on one host each pick a random port near 30000 and can collide."""
    compat = for_version(dynamo_version)
    slots: list[PortSlot] = []
    if embedded_etcd:
        slots.append(PortSlot("etcd.client", cfg.infra.etcd.port, "infra.etcd.port"))
        slots.append(PortSlot("etcd.peer", None, "infra.etcd.port"))
    if embedded_nats:
        slots.append(PortSlot("nats.client", cfg.infra.nats.port, "infra.nats.port"))
        slots.append(PortSlot("nats.monitor", None, "infra.nats.port"))
    if role in ("all", "frontend"):
        http = cfg.frontend.http_port
        slots.append(PortSlot("frontend.http", http, "--http-port (frontend.http_port)"))
        if compat.response_stream_env:
            slots.append(PortSlot("frontend.response", None, "frontend"))
    if role not in ("all", "worker"):
        return slots
    kinds = ["system"] + (["rpc"] if compat.tcp_rpc else [])
    kinds += ["kv_events"] if uses_kv_events(cfg, backend, compat) else []
    kinds += ["nccl"] if nccl else []
    base = cfg.workers.port_base
    names = [name for spec in model_specs(cfg) for name in spec.worker_names()]
    for i, name in enumerate(names):
        for j, kind in enumerate(kinds):
            fixed = None if base is None else base + i * len(kinds) + j
            if (i, kind) == (0, "system") and system_port0 is not None:
                slots.append(PortSlot(f"{name}.system", system_port0, "DYN_SYSTEM_PORT"))
                continue
            slots.append(PortSlot(f"{name}.{kind}", fixed, "workers.port_base", SYSTEM_PORT_MAX))
    return slots


def uses_kv_events(cfg: Config, backend: str, compat: Compat) -> bool:
    """KV-aware routing needs each SGLang worker's own KV-event endpoint (--kv-events-config);
    Dynamo's mocker publishes its events itself."""
    routing = router_mode(cfg, model_specs(cfg), kv_migrates=compat.kv_router_migrates)
    return backend == "sglang" and routing == "kv"


def build_plan(cfg: Config, backend: str, host: Host, role: str = "all") -> Plan:
    """Role `all`: the whole stack on one host, every socket on loopback. Role `frontend` or
    `worker` (a pod of a multi-host deployment): only those processes, with the etcd/NATS the
    environment gives, and Dynamo's own address choices (the pod's IP) left alone."""
    scheme = "https" if host.tls is not None else "http"
    etcd = host.etcd_endpoints or f"{scheme}://127.0.0.1:{host.ports['etcd.client']}"
    nats_scheme = "tls" if embedded_nats_tls(host) else "nats"
    nats = host.nats_url or f"{nats_scheme}://127.0.0.1:{host.ports['nats.client']}"
    procs: list[ProcessSpec] = []
    if host.etcd_endpoints is None:
        procs.append(_etcd(cfg, host))
    if host.nats_url is None:
        procs.append(_nats(cfg, host))
    compat = for_version(host.dynamo_version)
    common = _dynamo_env(compat, etcd, nats) | dict(host.infra_env)
    loopback = role == "all"
    specs = model_specs(cfg)
    routing = router_mode(cfg, specs, kv_migrates=compat.kv_router_migrates)
    if role in ("all", "frontend"):
        procs.append(_frontend(cfg, host, compat, common, loopback, routing))
    if role in ("all", "worker"):
        asks = [(s.origin, s.count, s.tp, s.gpus) for s in specs]
        per_model: list[list[tuple[str, ...]]] = (
            gpu_slicing.allocate(host.gpus, asks, host.gpu_source)
            if backend == "sglang"
            else [[() for _ in range(s.count)] for s in specs]
        )
        for spec, slices in zip(specs, per_model, strict=True):
            for i, gpus in enumerate(slices):
                procs.append(_worker(cfg, spec, backend, host, compat, common, i, gpus, loopback))
    http_host = cfg.frontend.http_host
    client_host = "127.0.0.1" if http_host in ("0.0.0.0", "::", "") else http_host
    return Plan(
        backend=backend,
        dynamo_version=host.dynamo_version,
        namespace=cfg.namespace,
        served_model=specs[0].served,
        url=f"http://{_bracket(client_host)}:{cfg.frontend.http_port}",
        state_dir=host.state_dir,
        etcd_endpoints=etcd,
        nats_url=nats,
        processes=tuple(procs),
        role=role,
        files=_files(specs, backend, host, compat, role),
        secret_files=_secret_files(host),
        auth=host.auth,
        etcd_auth=host.generated_auth and host.etcd_endpoints is None,
        card_migration_limit=(
            cfg.frontend.migration_limit if compat.migration_in_card and role == "all" else None
        ),
        served_models=tuple(s.served for s in specs) if len(specs) > 1 else (),
        router_mode=routing if role in ("all", "frontend") else "",
    )


def _files(
    specs: tuple[ModelSpec, ...], backend: str, host: Host, compat: Compat, role: str
) -> tuple[tuple[str, str], ...]:
    """0.5's mocker takes its engine settings from a JSON file (one per model), not flags."""
    if backend != "mocker" or compat.mocker_flags or role == "frontend":
        return ()
    return tuple(
        (mocker_engine_args(host, s), json.dumps({"block_size": s.page_size}) + "\n") for s in specs
    )


def nats_config(host: Host) -> str:
    return os.path.join(host.state_dir, "infra", "nats.conf")  # statedir.INFRA_DIR


def embedded_nats_tls(host: Host) -> bool:
    """`infra.tls` puts the embedded NATS on TLS where Dynamo speaks it (1.6+: compat's
    nats_tls_env); older lines keep it plain on loopback (launcher.credentials.tls_warnings)."""
    return (
        host.tls is not None
        and host.nats_url is None
        and for_version(host.dynamo_version).nats_tls_env
    )


def _nats_config_text(host: Host) -> str:
    """nats-server's config: its user and password (generated), and with `infra.tls` on 1.6+ a
    tls block (the state dir's server certificate; `verify`: a client needs a certificate of the
    run's CA). "" when it needs none. Its monitoring port stays plain HTTP on loopback."""
    text = ""
    nats = host.auth.nats
    if host.generated_auth and nats.username and nats.password:
        users = f'  user: "{nats.username}"\n  password: "{nats.password}"\n'
        text += f"authorization {{\n{users}}}\n"
    if embedded_nats_tls(host):
        from launcher.tlsfiles import paths

        where = paths(host.state_dir)
        text += (
            f'tls {{\n  cert_file: "{where.server_cert}"\n  key_file: "{where.server_key}"\n'
            f'  ca_file: "{where.ca}"\n  verify: true\n  timeout: {NATS_TLS_TIMEOUT_S}\n}}\n'
        )
    return text


def _secret_files(host: Host) -> tuple[tuple[str, str], ...]:
    """The generated credentials (reused by the next `up` of this state dir), nats-server's
    config, which holds its user and password (never on its command line), and the `infra.tls`
    CA, certificates and keys."""
    files: list[tuple[str, str]] = []
    if host.generated_auth:
        files.append((os.path.join(host.state_dir, CREDENTIALS_FILE), to_text(host.auth)))
    conf = _nats_config_text(host) if host.nats_url is None else ""
    if conf:
        files.append((nats_config(host), conf))
    if host.tls is not None:
        from launcher.tlsfiles import files as tls_files

        files += tls_files(host.state_dir, host.tls)
    return tuple(files)


def mocker_engine_args(host: Host, spec: ModelSpec | None = None) -> str:
    """The 0.5 mocker's engine-args file of ``spec``'s model (the first: the historic name)."""
    name = MOCKER_ENGINE_ARGS_FILE
    if spec is not None and spec.slot:
        name = name.replace(".json", f"-{spec.component}.json")
    return os.path.join(host.state_dir, name)


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _etcd(cfg: Config, host: Host) -> ProcessSpec:
    client, peer = host.ports["etcd.client"], host.ports["etcd.peer"]
    name = f"dynlaunch-{cfg.namespace}"
    scheme = "https" if host.tls is not None else "http"
    client_url, peer_url = f"{scheme}://127.0.0.1:{client}", f"{scheme}://127.0.0.1:{peer}"
    argv: tuple[str, ...] = (
        host.etcd_binary,
        "--name", name,
        "--data-dir", os.path.join(host.state_dir, "infra", "etcd"),  # statedir.INFRA_DIR
        "--listen-client-urls", client_url,
        "--advertise-client-urls", client_url,
        "--listen-peer-urls", peer_url,
        "--initial-advertise-peer-urls", peer_url,
        "--initial-cluster", f"{name}={peer_url}",
        "--log-level", "warn",
        # One member on loopback: no peer to lose, so short raft timers cost nothing, and the
        # first election (what /health waits for) comes sooner. Measured, etcd 3.4.23, spawn to
        # /health ok, 8 starts each: defaults (100/1000 ms) 0.12-0.92 s; 25/250 ms 0.04-0.24 s.
        "--heartbeat-interval", str(ETCD_HEARTBEAT_MS),
        "--election-timeout", str(ETCD_ELECTION_MS),
    )  # fmt: skip
    if host.tls is not None:  # paths only: the files are 0600 under STATE/tls/
        from launcher.tlsfiles import paths

        where = paths(host.state_dir)
        for side in ("", "peer-"):  # the peer port too: it takes only this CA's certificates
            argv += (f"--{side}cert-file", where.server_cert, f"--{side}key-file",
                     where.server_key, f"--{side}client-cert-auth",
                     f"--{side}trusted-ca-file", where.ca)  # fmt: skip
    return ProcessSpec(
        "etcd", "etcd", argv, {}, ports={"client": client, "peer": peer},
        health_url=f"{client_url}/health",
    )  # fmt: skip


def _nats(cfg: Config, host: Host) -> ProcessSpec:
    client, monitor = host.ports["nats.client"], host.ports["nats.monitor"]
    argv: tuple[str, ...] = (
        host.nats_binary,
        "-a", "127.0.0.1", "-p", str(client), "-m", str(monitor),
        "-js", "-sd", os.path.join(host.state_dir, "infra", "nats"),  # statedir.INFRA_DIR
    )  # fmt: skip
    if _nats_config_text(host):
        argv += ("-c", nats_config(host))
    return ProcessSpec(
        "nats", "nats", argv, {}, ports={"client": client, "monitor": monitor},
        health_url=f"http://127.0.0.1:{monitor}/healthz",
    )  # fmt: skip


def _dynamo_env(compat: Compat, etcd: str, nats: str) -> dict[str, str]:
    env = {
        "ETCD_ENDPOINTS": etcd,
        "NATS_SERVER": nats,
        "DYN_SDK_DISABLE_ANSI_LOGGING": "1",
        "PYTHONUNBUFFERED": "1",
    }
    if compat.event_plane_env:
        # Keep the event plane on NATS: the ZMQ default binds every worker's publisher on 0.0.0.0.
        env |= {"DYN_DISCOVERY_BACKEND": "etcd", "DYN_EVENT_PLANE": "nats"}
    return env


def _frontend(
    cfg: Config,
    host: Host,
    compat: Compat,
    common: Mapping[str, str],
    loopback: bool,
    routing: str,
) -> ProcessSpec:
    fe = cfg.frontend
    ports = {"http": fe.http_port}
    argv = [
        host.python, "-m", "dynamo.frontend",
        "--http-host", fe.http_host, "--http-port", str(fe.http_port),
        "--namespace", cfg.namespace, "--router-mode", routing,
    ]  # fmt: skip
    env = dict(common)
    if compat.frontend_migration_limit:
        argv += ["--migration-limit", str(fe.migration_limit)]
    if compat.response_stream_env:
        ports["response"] = host.ports["frontend.response"]
    if compat.response_stream_env and loopback:
        # An interface name, not an address: '127.0.0.1' makes 1.4.2 fail to add the model.
        env |= {
            "DYN_TCP_RESPONSE_STREAM_HOST": "lo",
            "DYN_TCP_RESPONSE_STREAM_PORT": str(ports["response"]),
        }
    env |= fe.env
    probe_host = "127.0.0.1" if fe.http_host in ("0.0.0.0", "::", "") else fe.http_host
    return ProcessSpec(
        "frontend", "frontend", (*argv, *fe.extra_args), env,
        ports=ports,
        health_url=f"http://{_bracket(probe_host)}:{fe.http_port}/health",
    )  # fmt: skip


def _worker(
    cfg: Config,
    spec: ModelSpec,
    backend: str,
    host: Host,
    compat: Compat,
    common: Mapping[str, str],
    index: int,
    gpus: tuple[str, ...],
    loopback: bool = True,
) -> ProcessSpec:
    name = f"{spec.prefix}-{index}"
    kinds = (
        ("system", "rpc", "kv_events", "nccl")
        if compat.tcp_rpc
        else ("system", "kv_events", "nccl")
    )
    ports = {kind: host.ports[f"{name}.{kind}"] for kind in kinds if f"{name}.{kind}" in host.ports}
    wk = cfg.workers
    endpoint = f"dyn://{cfg.namespace}.{spec.endpoint}"
    if backend == "sglang":
        argv = [
            host.python, "-m", compat.worker_module(host.dynamo_version, wk.legacy_module),
            "--model-path", spec.path, "--served-model-name", spec.served,
            "--page-size", str(spec.page_size), "--tp", str(spec.tp),
        ]  # fmt: skip
        argv += ["--endpoint", endpoint] if spec.component != "backend" else []
        argv += ["--trust-remote-code"] if wk.trust_remote_code else []
        argv += ["--skip-tokenizer-init"] if wk.skip_tokenizer_init else []
        argv += ["--nccl-port", str(ports["nccl"])] if "nccl" in ports else []
        if compat.migration_in_card:  # the card a first worker writes: 1.x's frontend flag
            argv += ["--migration-limit", str(cfg.frontend.migration_limit)]
        if "kv_events" in ports:
            # SGLang binds only a wildcard endpoint; given 127.0.0.1 it *connects*, as Dynamo's
            # subscriber does, and no event ever flows (measured: 0 applied). So it binds all
            # interfaces; Dynamo connects on loopback (SGLANG_HOST_IP below).
            endpoint = f"tcp://*:{ports['kv_events']}"
            kv = {"publisher": "zmq", "topic": "kv-events", "endpoint": endpoint}
            argv += ["--kv-events-config", json.dumps(kv, separators=(",", ":"))]
    else:
        argv = [
            host.python, "-m", "dynamo.mocker",
            "--model-path", spec.path, "--model-name", spec.served,
        ]  # fmt: skip
        if compat.mocker_flags:
            argv += ["--block-size", str(spec.page_size)]
        else:
            argv += ["--extra-engine-args", mocker_engine_args(host, spec)]
        argv += ["--endpoint", endpoint]
    env = dict(common) | {"DYN_NAMESPACE": cfg.namespace, "DYN_SYSTEM_PORT": str(ports["system"])}
    if compat.tcp_rpc:
        env["DYN_TCP_RPC_PORT"] = str(ports["rpc"])
    if loopback:
        env["DYN_SYSTEM_HOST"] = "127.0.0.1"
    if loopback and compat.tcp_rpc:
        env["DYN_TCP_RPC_HOST"] = "127.0.0.1"
    if loopback and compat.event_plane_env:
        env["DYN_EVENT_PLANE_HOST"] = "127.0.0.1"
    if compat.endpoint_health_env:
        env["DYN_SYSTEM_USE_ENDPOINT_HEALTH_STATUS"] = '["generate"]'
    else:
        env |= {"DYN_SYSTEM_ENABLED": "true", "DYN_SYSTEM_STARTING_HEALTH_STATUS": "ready"}
    if backend == "sglang":
        env["CUDA_VISIBLE_DEVICES"] = ",".join(gpus)
    if "kv_events" in ports:
        # Dynamo's SGLang wrapper subscribes to the KV-event endpoint's port on SGLang's "local
        # IP" (get_local_ip_auto: the routable address), whatever host the endpoint names
        # (measured on an H200, Dynamo 1.4.2, SGLang 0.5.16: "connecting to
        # tcp://192.0.2.2:PORT"). This variable is that local IP: it connects on loopback to the
        # wildcard-bound publisher above.
        env["SGLANG_HOST_IP"] = "127.0.0.1"
    env |= dict(spec.env)
    return ProcessSpec(
        name, "worker", (*argv, *spec.extra_args), env, gpus=gpus, ports=ports,
        health_url=f"http://127.0.0.1:{ports['system']}/health", model=spec.served,
        component=spec.component,
    )  # fmt: skip
