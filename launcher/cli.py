"""The command line: flags -> overrides -> config -> plan -> run. Errors become exits here only."""

from __future__ import annotations

import json
import logging
import os
import sys
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from launcher import __version__
from launcher.cli_clear import clear_namespace
from launcher.cli_render import render_app
from launcher.errors import EXIT_USAGE, ConfigError, DynlaunchError, StartupError

if TYPE_CHECKING:
    from launcher.config import Config

# Each command imports what it uses in its body, so that one command does not pay for the
# others' modules: the config's pydantic models, httpx (probes), the planner and the supervisor
# took ~0.3 s to import, before any command ran.

log = logging.getLogger("launcher")

app = typer.Typer(
    help=(
        "Launch and supervise an NVIDIA Dynamo serving stack (etcd, NATS, the OpenAI-compatible "
        "frontend and SGLang or mocker workers) on one host.\n\n"
        "First run, on any CPU machine:  dynlaunch up mocker\n\n"
        "See what would run:             dynlaunch plan sglang --config configs/sglang.yaml"
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

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


def _version(value: bool) -> None:
    if value:
        typer.echo(f"dynlaunch {__version__}")
        raise typer.Exit


@app.callback()
def _main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
) -> None:
    """Launch and supervise a Dynamo serving stack."""
    from launcher import output

    output.install_logging(  # to stderr through a queue: a paused terminal never blocks us
        level=logging.DEBUG if verbose else logging.INFO,
        fmt="%(asctime)s %(message)s",
        datefmt="%H:%M:%S",
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)


@app.command()
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
    cfg = for_role(_config(backend, config, given), role, os.environ)
    the_plan = resolve_plan(backend, cfg, os.environ, reserve_for=None, role=role, dry_run=True)
    for warning in the_plan.warnings:
        typer.echo(f"dynlaunch: warning: {warning}", err=True)
    if as_json:
        typer.echo(json.dumps(the_plan.to_json(), indent=2))
        return
    head = (
        f"# dynlaunch {backend}: Dynamo {the_plan.dynamo_version}, namespace {the_plan.namespace}"
    )
    typer.echo(f"{head}, serving {the_plan.served_model!r} at {the_plan.url}")
    for proc in the_plan.to_json()["processes"]:
        env = " ".join(f"{k}={v}" for k, v in proc["env"].items())
        typer.echo(f"\n{proc['name']} ({proc['role']}) ports={proc['ports']} gpus={proc['gpus']}")
        typer.echo(f"  env:  {env or '(inherited only)'}")
        typer.echo(f"  argv: {' '.join(proc['argv'])}")


@app.command()
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
    extra: Extra = None,
) -> None:
    """Start the stack, wait until it serves, keep it up; Ctrl-C or SIGTERM stops it (exit 0).

    Starts etcd and NATS unless ETCD_ENDPOINTS / NATS_SERVER point at running ones, then the
    frontend, then the workers; ready when the model is listed AND a chat completion works.

    Examples:\n
      dynlaunch up mocker\n
      dynlaunch up mocker --workers 2 --http-port 8080\n
      dynlaunch up sglang -c configs/sglang.yaml -- --max-total-tokens 32768\n
      dynlaunch up sglang --role worker -c /etc/dynlaunch/config.yaml   (in a worker pod)
    """
    from launcher import ports
    from launcher.coordination import Coordination
    from launcher.resolve import check_binaries, ensure_tiny_model, for_role, resolve_plan
    from launcher.stack import Hooks, Stack
    from launcher.statedir import StateDir
    from launcher.supervisor import Supervisor

    given = {k: v for k, v in locals().items() if k in FLAG_KEYS}
    cfg = for_role(_config(backend, config, given), role, os.environ)
    ensure_tiny_model(cfg, backend, os.environ)
    me = os.getpid()
    try:
        # Everything that checks input runs before the state dir is created or anything deleted.
        the_plan = resolve_plan(backend, cfg, os.environ, reserve_for=me, role=role)
        check_binaries(the_plan)
        run_id = uuid.uuid4().hex
        ports.tag(me, run_id)
        embedded = [p.role for p in the_plan.processes if p.role in ("etcd", "nats")]
        with StateDir(Path(the_plan.state_dir), the_plan.namespace, run_id, embedded) as state:
            state.record(run_id, the_plan, cfg.stop_timeout_s)
            sup = Supervisor(run_id, state.logs, os.environ)
            deadman = sup.start_deadman()  # kills the run's processes if we are SIGKILLed
            rpc_host = "127.0.0.1" if role == "all" else os.environ.get("DYN_TCP_RPC_HOST", "")
            etcd = Coordination(the_plan, rpc_host, run_id)
            hooks = Hooks(
                etcd_ready=etcd.etcd_ready if role == "all" else lambda: None,
                before_frontend=etcd.before_frontend,
                on_change=state.write_status,
                on_exit=etcd.fence,
                dynamo_stopped=etcd.release,
            )
            stack = Stack(the_plan, sup, cfg, hooks)
            code = stack.run()
            assert deadman.stdin is not None
            deadman.stdin.close()
    finally:
        ports.release(me)
    raise typer.Exit(code)


Target = Annotated[
    str | None, typer.Option("--namespace", help="The run's namespace (default: the only run).")
]
StateDirOfRun = Annotated[str | None, typer.Option("--state-dir", help="The run's state dir.")]


@app.command()
def status(
    namespace: Target = None,
    state_dir: StateDirOfRun = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Show a running `up`: children (pid, state, restarts, uptime, ports, GPUs), the frontend's
    health and models, and the namespace's registrations in etcd.

    Examples:\n
      dynlaunch status\n
      dynlaunch status --namespace sglang --json
    """
    from launcher import control
    from launcher.status_view import render_status

    report = control.status(control.find(state_dir, namespace, os.environ))
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    typer.echo(render_status(report))


@app.command()
def down(
    namespace: Target = None,
    state_dir: StateDirOfRun = None,
    timeout: Annotated[
        float | None, typer.Option(help="Seconds to wait (default: the run's stop budget).")
    ] = None,
) -> None:
    """Stop a running `up` gracefully (SIGTERM) and wait until it has exited.

    Examples:\n
      dynlaunch down\n
      dynlaunch down --namespace sglang
    """
    from launcher import control

    info = control.find(state_dir, namespace, os.environ)
    budget = timeout if timeout is not None else float(info.get("stop_budget_s", 60.0))
    if not control.stop(info, budget):
        typer.echo(f"dynlaunch: pid {info['pid']} still running after {budget:.0f}s", err=True)
        raise typer.Exit(1)
    typer.echo(f"dynlaunch: stopped pid {info['pid']} ({info['namespace']})")


@app.command()
def health(
    namespace: Target = None,
    state_dir: StateDirOfRun = None,
    url: Annotated[str | None, typer.Option(help="Frontend URL (instead of a local run).")] = None,
    model: Annotated[str | None, typer.Option(help="Model to check (with --url).")] = None,
) -> None:
    """Exit 0 when the stack is ready (the served model is listed AND a one-token completion
    works), 1 otherwise. Usable as a container readiness probe.

    Examples:\n
      dynlaunch health\n
      dynlaunch health --url http://127.0.0.1:8000 --model tiny
    """
    from launcher import control, probes

    if url is None or model is None:
        info = control.find(state_dir, namespace, os.environ)
        url, model = url or str(info["url"]), model or str(info["model"])
    if probes.model_listed(url, model) and probes.one_token_completion(url, model):
        typer.echo(f"ready: {url} serves {model!r}")
        return
    typer.echo(f"not ready: {url} does not serve {model!r} yet", err=True)
    raise typer.Exit(1)


def _message(err: Exception) -> str:
    format_message = getattr(err, "format_message", None)
    text = format_message() if callable(format_message) else str(err)
    return " ".join(str(text).split())


def main() -> None:
    """Entry point: run the Typer app; print every error as one line with its own exit code."""
    command = typer.main.get_command(app)
    try:
        code = command.main(prog_name="dynlaunch", standalone_mode=False)
    except typer.Exit as done:
        code = done.exit_code
    except typer.Abort:
        code = 130
    except typer.TyperException as err:  # a usage error: bad flag value, missing argument
        ctx = getattr(err, "ctx", None)
        where = f" ({ctx.command_path})" if ctx is not None else ""
        typer.echo(f"dynlaunch: error{where}: {_message(err)}", err=True)
        code = int(getattr(err, "exit_code", EXIT_USAGE))
    except DynlaunchError as err:
        logging.getLogger("launcher").debug("error", exc_info=True)
        typer.echo(f"dynlaunch: error: {err}", err=True)
        code = err.exit_code
    sys.exit(code if isinstance(code, int) else 0)


app.command("clear-namespace")(clear_namespace)
app.add_typer(render_app, name="render")


bench_app = typer.Typer(help="Measure a running stack.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")


@bench_app.command("prefix")
def bench_prefix(
    url: Annotated[str, typer.Option(help="The frontend's base URL.")] = "http://127.0.0.1:8000",
    model: Annotated[str | None, typer.Option(help="Model (default: the only one listed).")] = None,
    prefix_tokens: Annotated[int, typer.Option(min=16, help="Shared system prompt size.")] = 2048,
    requests: Annotated[
        int, typer.Option(min=2, help="Shared-prefix requests (as many control).")
    ] = 32,
    concurrency: Annotated[int, typer.Option(min=1, help="Requests in flight at once.")] = 1,
    max_tokens: Annotated[int, typer.Option(min=1, help="Tokens to generate per request.")] = 32,
    seed: Annotated[
        int | None,
        typer.Option(
            min=0,
            help="Salt of the prompts (default: random, so that a repeated run does not find "
            "its prompts cached by the last one; the same seed repeats a run's prompts).",
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Raw samples and summary as JSON.")
    ] = False,
    plot_file: Annotated[
        str | None, typer.Option("--plot", help="Draw TTFT per kind to this PNG (matplotlib).")
    ] = None,
) -> None:
    """Prefix-cache effect: TTFT of cold (first of a shared prefix), warm (shared prefix) and
    control (nothing shared) requests, cached tokens, and the server's own counters.

    Examples:\n
      dynlaunch bench prefix\n
      dynlaunch bench prefix --url http://127.0.0.1:8000 --prefix-tokens 3500 --json > out.json
    """
    import random

    from launcher import bench, bench_view

    if plot_file is not None:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise ConfigError("--plot needs matplotlib: pip install matplotlib") from None
    chosen = model or _only_model(url)
    runner = bench.Bench(url, chosen, max_tokens)
    try:
        salt = seed if seed is not None else random.SystemRandom().randrange(1 << 31)
        samples, summary = bench.run(
            runner,
            prefix_tokens=prefix_tokens,
            requests=requests,
            concurrency=concurrency,
            seed=salt,
        )
    except RuntimeError as err:
        raise StartupError(f"{url}: {err}") from None
    finally:
        runner.close()
    typer.echo(
        bench.as_json(samples, summary) if as_json else bench_view.render(summary, url, chosen)
    )
    if plot_file is not None:
        bench_view.plot(samples, plot_file)


def _only_model(url: str) -> str:
    from launcher import probes

    listed = probes.models(url.rstrip("/"))
    if len(listed) != 1:
        found = ", ".join(listed) or "none (is the stack up?)"
        raise ConfigError(f"--model: choose one; {url}/v1/models lists {found}")
    return listed[0]
