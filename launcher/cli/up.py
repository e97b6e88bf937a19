"""`dynlaunch plan` and `dynlaunch up`: flags -> overrides -> config -> plan (-> run)."""

from __future__ import annotations

import json
import os
import uuid
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from launcher.config import Config
    from launcher.plan import Plan, PortSlot


# Flag -> dotted config key. Also names the flag in error messages.
FLAG_KEYS = {
    "namespace": ("namespace", "--namespace"),
    "workers": ("workers.count", "--workers"),
    "tp": ("workers.tp", "--tp"),
    "gpus": ("workers.gpus", "--gpus"),
    "http_host": ("frontend.http_host", "--http-host"),
    "http_port": ("frontend.http_port", "--http-port"),
    "model_path": ("model.path", "--model-path"),
    "served_model_name": ("model.served_name", "--served-model-name"),
    "page_size": ("workers.page_size", "--page-size"),
    "state_dir": ("state_dir", "--state-dir"),
    "startup_timeout": ("startup_timeout_s", "--startup-timeout"),
    "extra": ("workers.extra_args", "-- EXTRA"),
}

Backend = Annotated[
    str,
    typer.Argument(metavar="BACKEND", help="sglang (real GPUs) or mocker (Dynamo's mock engine)."),
]
ConfigPath = Annotated[
    str | None, typer.Option("--config", "-c", help="YAML config file (see configs/).")
]
Namespace = Annotated[str | None, typer.Option(help="Dynamo namespace (letters, digits, - and _).")]
Workers = Annotated[int | None, typer.Option(help="Number of workers.")]
Tp = Annotated[int | None, typer.Option(help="GPUs per worker (tensor parallel size).")]
Gpus = Annotated[
    str | None,
    typer.Option(help="GPUs to use, e.g. 0,1,2,3 (default: CUDA_VISIBLE_DEVICES, else all)."),
]
HttpHost = Annotated[str | None, typer.Option(help="Frontend bind address (default 127.0.0.1).")]
HttpPort = Annotated[int | None, typer.Option(help="Frontend HTTP port (default 8000).")]
ModelPath = Annotated[str | None, typer.Option(help="Model directory or Hugging Face id.")]
ServedName = Annotated[str | None, typer.Option(help="Model name clients ask for.")]
PageSize = Annotated[int | None, typer.Option(help="KV-cache page size (RadixAttention).")]
StateDirOpt = Annotated[
    str | None, typer.Option(help="Logs, pid and infra data (default ~/.local/state/dynlaunch/NS).")
]
StartupTimeout = Annotated[
    float | None,
    typer.Option(help="Seconds to wait for readiness (large models load for minutes)."),
]
Role = Annotated[
    str,
    typer.Option(
        help="all: the whole stack on this host. frontend or worker: one pod of a multi-host "
        "deployment (uses ETCD_ENDPOINTS, NATS_SERVER, DYN_NAMESPACE, DYN_SYSTEM_PORT from the "
        "environment; never starts etcd or NATS)."
    ),
]
ModelName = Annotated[
    str | None,
    typer.Option(
        "--model",
        help="With --role worker and a models: list: run the worker of this model only (its "
        "name), as a worker pod of `render k8s` does.",
    ),
]
Extra = Annotated[
    list[str] | None,
    typer.Argument(metavar="ENGINE_ARGS", help="Engine args after --, passed through verbatim."),
]


def _overrides(given: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """Only the flags the user gave, as a nested dict, and which flag set each key."""
    data: dict[str, Any] = {}
    names: dict[str, str] = {}
    for param, value in given.items():
        if value is None or (param == "extra" and not value):
            continue
        key, flag = FLAG_KEYS[param]
        if param == "gpus":
            value = [g.strip() for g in str(value).split(",") if g.strip()]
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
        names[key] = flag
    return data, names


def _config(backend: str, config: str | None, given: dict[str, Any]) -> Config:
    from launcher.config import load_config

    flags, names = _overrides(given)
    return load_config(backend, path=config, environ=os.environ, flags=flags, flag_names=names)


def _role_config(
    backend: str, config: str | None, given: dict[str, Any], role: str, model: str | None
) -> Config:
    """The config of this run; ``model`` (--model) keeps one entry of `models:` (a worker pod)."""
    from launcher.model_select import select_model

    cfg = _config(backend, config, given)
    return cfg if model is None else select_model(cfg, model, role)


def plan(
    backend: Backend,
    config: ConfigPath = None,
    namespace: Namespace = None,
    workers: Workers = None,
    tp: Tp = None,
    gpus: Gpus = None,
    http_host: HttpHost = None,
    http_port: HttpPort = None,
    model_path: ModelPath = None,
    served_model_name: ServedName = None,
    page_size: PageSize = None,
    state_dir: StateDirOpt = None,
    startup_timeout: StartupTimeout = None,
    role: Role = "all",
    model: ModelName = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    extra: Extra = None,
) -> None:
    """Print the processes `up` would start (argv, env, GPUs, ports); start nothing. Where
    nvidia-smi finds too few GPUs, the plan shows placeholder ids (?0, ?1, ...) and a warning.

    Examples:\n
      dynlaunch plan mocker --workers 2 --json\n
      dynlaunch plan sglang -c configs/sglang.yaml --gpus 0,1,2,3 --workers 2 --tp 2
    """
    from launcher.resolve import for_role, resolve_plan

    given = {k: v for k, v in locals().items() if k in FLAG_KEYS}
    cfg = for_role(_role_config(backend, config, given, role, model), role, os.environ)
    the_plan = resolve_plan(backend, cfg, os.environ, reserve_for=None, role=role, dry_run=True)
    for warning in the_plan.warnings:
        typer.echo(f"dynlaunch: warning: {warning}", err=True)
    if as_json:
        typer.echo(json.dumps(the_plan.to_json(), indent=2))
        return
    head = (
        f"# dynlaunch {backend}: Dynamo {the_plan.dynamo_version}, namespace {the_plan.namespace}"
    )
    served = ", ".join(repr(m) for m in the_plan.models)
    typer.echo(f"{head}, serving {served} at {the_plan.url}")
    for model in the_plan.models if the_plan.role != "frontend" else ():
        names = ", ".join(p.name for p in the_plan.workers_of(model))
        endpoint = f"dyn://{the_plan.namespace}.{the_plan.component_of(model)}.generate"
        typer.echo(f"# model {model!r}: workers {names or '-'} on {endpoint}")
    if the_plan.router_mode:
        typer.echo(f"# routing: {_routing(the_plan)}")
    for proc in the_plan.to_json()["processes"]:
        env = " ".join(f"{k}={v}" for k, v in proc["env"].items())
        typer.echo(f"\n{proc['name']} ({proc['role']}) ports={proc['ports']} gpus={proc['gpus']}")
        typer.echo(f"  env:  {env or '(inherited only)'}")
        typer.echo(f"  argv: {' '.join(proc['argv'])}")


def _routing(the_plan: Plan) -> str:
    """How the frontend routes, and what kv routing is wired with (plan's one line)."""
    if the_plan.router_mode != "kv":
        several = any(len(the_plan.workers_of(m)) >= 2 for m in the_plan.models)
        why = (
            f"; auto: not kv, because Dynamo {the_plan.dynamo_version}'s KV router fails the "
            "requests of a worker that dies instead of migrating them (set frontend.router_mode: "
            "kv to prefer prefix-cache hits)"
            if several and the_plan.router_mode == "round-robin"
            else ""
        )
        return f"{the_plan.router_mode} (the frontend's --router-mode){why}"
    sizes = ", ".join(
        f"{m} block size {_block_size(the_plan, p.argv)}"
        for m in the_plan.models
        for p in the_plan.workers_of(m)[:1]
    )
    events = "each SGLang worker's --kv-events-config" if the_plan.backend == "sglang" else "NATS"
    return f"kv (KV-cache aware); events over {events}; {sizes or 'block size from the cards'}"


def _block_size(the_plan: Plan, argv: tuple[str, ...]) -> str:
    """A worker's KV block size: its --page-size / --block-size, or its engine-args file's."""
    for flag in ("--page-size", "--block-size"):
        if flag in argv:
            return argv[argv.index(flag) + 1]
    if "--extra-engine-args" in argv:
        text = dict(the_plan.files).get(argv[argv.index("--extra-engine-args") + 1], "{}")
        return str(json.loads(text).get("block_size", "?"))
    return "?"


def up(
    backend: Backend,
    config: ConfigPath = None,
    namespace: Namespace = None,
    workers: Workers = None,
    tp: Tp = None,
    gpus: Gpus = None,
    http_host: HttpHost = None,
    http_port: HttpPort = None,
    model_path: ModelPath = None,
    served_model_name: ServedName = None,
    page_size: PageSize = None,
    state_dir: StateDirOpt = None,
    startup_timeout: StartupTimeout = None,
    role: Role = "all",
    model: ModelName = None,
    extra: Extra = None,
) -> None:
    """Start the stack, wait until it serves, keep it up; Ctrl-C or SIGTERM stops it (exit 0).

    Starts etcd and NATS unless ETCD_ENDPOINTS / NATS_SERVER point at running ones, the frontend
    and the workers (with external etcd: after its namespace lock and a stale-only clear); ready
    when the model is listed AND a chat completion works.

    Examples:\n
      dynlaunch up mocker\n
      dynlaunch up mocker --workers 2 --http-port 8080\n
      dynlaunch up sglang -c configs/sglang.yaml -- --max-total-tokens 32768\n
      dynlaunch up sglang --role worker -c /etc/dynlaunch/config.yaml   (in a worker pod)\n
      dynlaunch up mocker --role worker --model alpha -c configs/two-models.yaml
    """
    import logging

    from launcher import credentials, ports
    from launcher.k8s import podenv
    from launcher.registrations.coordination import Coordination
    from launcher.resolve import check_binaries, ensure_tiny_model, for_role, resolve_plan
    from launcher.stack import Hooks, Stack
    from launcher.statedir import StateDir
    from launcher.supervision.supervisor import Supervisor

    given = {k: v for k, v in locals().items() if k in FLAG_KEYS}
    cfg = for_role(_role_config(backend, config, given, role, model), role, os.environ)
    ensure_tiny_model(cfg, backend, os.environ)
    me = os.getpid()
    try:
        # Everything that checks input runs before the state dir is created or anything deleted.
        the_plan = resolve_plan(backend, cfg, os.environ, reserve_for=me, role=role)
        credentials.activate(the_plan.auth)  # dynlaunch's own etcd and NATS clients log in so
        check_binaries(the_plan)
        for warning in the_plan.warnings:
            typer.echo(f"dynlaunch: warning: {warning}", err=True)
        run_id = uuid.uuid4().hex
        ports.tag(me, run_id)
        embedded = [p.role for p in the_plan.processes if p.role in ("etcd", "nats")]
        with StateDir(Path(the_plan.state_dir), the_plan.namespace, run_id, embedded) as state:
            found = podenv.discovery(role, os.environ)  # `status` shows it
            state.record(run_id, the_plan, cfg.stop_timeout_s, discovery=found)
            sup = Supervisor(run_id, state.logs, os.environ)
            deadman = sup.start_deadman()  # kills the run's processes if we are SIGKILLed
            rpc_host = "127.0.0.1" if role == "all" else os.environ.get("DYN_TCP_RPC_HOST", "")
            etcd = Coordination(the_plan, rpc_host, run_id)
            hooks = Hooks(
                etcd_ready=_with_etcd_auth(the_plan, etcd.etcd_ready) if role == "all" else _none,
                before_dynamo=etcd.before_dynamo,
                workers_registered=etcd.workers_registered,
                after_registration=etcd.after_registration,
                on_change=state.write_status,
                on_exit=etcd.fence,
                fenced_live=etcd.fenced_live,
                explain_exit=etcd.explain_exit,
                dynamo_stopped=etcd.release,
                registered=etcd.registered,
                on_operation=state.set_operation,
                allocate=partial(_allocate_more, me),
                gpu_pool=partial(_gpu_pool, cfg, backend),
                resolve=partial(_resolve_again, backend, given, role, model),
            )
            if role != "all":  # a pod: say which discovery the operator gave it
                pod = podenv.read(os.environ)
                logging.getLogger("launcher").info("dynlaunch: discovery: %s", found)
                if not pod.uses_etcd:  # fencing and the clear act on etcd discovery only
                    hooks = Hooks(on_change=state.write_status, on_operation=state.set_operation,
                                  allocate=partial(_allocate_more, me))  # fmt: skip
            stack = Stack(the_plan, sup, cfg, hooks, control_path=state.control_socket)
            stack.config_path = os.path.abspath(config) if config else None  # SIGHUP: reload
            code = stack.run()
            assert deadman.stdin is not None
            deadman.stdin.close()
    finally:
        ports.release(me)
    raise typer.Exit(code)


def _none() -> None:
    pass


def _allocate_more(me: int, slots: Sequence[PortSlot], seed: str) -> dict[str, int]:
    """Ports for a replacement child (`dynlaunch restart`), added to this run's reservation."""
    from launcher import ports

    return ports.allocate_more(slots, seed=seed, reserve_for=me) if slots else {}


def _gpu_pool(cfg: Config, backend: str) -> tuple[str, ...]:
    """The GPUs this run may use (`scale` takes free ones of them), found as `up` found them."""
    from launcher import gpus

    if backend != "sglang":
        return ()
    return tuple(gpus.available(cfg.workers.gpus, os.environ, gpus.detect())[0])


def _resolve_again(
    backend: str,
    given: dict[str, Any],
    role: str,
    model: str | None,
    config: str | None,
    own: frozenset[int],
) -> tuple[Config, Plan]:
    """`reload`: the config file ``config`` with `up`'s flags and environment, resolved as `up`
    did; the run's own ports ``own`` are not taken (nothing is reserved: a replacement gets its
    ports as `restart` does)."""
    from launcher.resolve import ensure_tiny_model, for_role, resolve_plan

    cfg = for_role(_role_config(backend, config, given, role, model), role, os.environ)
    ensure_tiny_model(cfg, backend, os.environ)
    the_plan = resolve_plan(backend, cfg, os.environ, reserve_for=None, role=role, own_ports=own)
    return cfg, the_plan


def _with_etcd_auth(plan: Plan, then: Callable[[], None]) -> Callable[[], None]:
    """Embedded etcd with generated credentials: turn its auth on (user root, the state dir's
    password) before anything else talks to it; then ``then``."""

    def ready() -> None:
        if plan.etcd_auth and plan.auth.etcd.username and plan.auth.etcd.password:
            from dataclasses import replace

            from launcher.registrations.etcd import Etcd

            no_login = replace(plan.auth.etcd, username=None, password=None)  # TLS files only
            with Etcd(plan.etcd_endpoints, auth=no_login) as etcd:  # no auth yet: no login
                etcd.enable_auth(plan.auth.etcd.username, plan.auth.etcd.password)
        then()

    return ready
