"""`dynlaunch restart`, `scale`, `reload`: operations on a running `up`, through its control
socket."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer

from launcher.cli.control import StateDirOfRun, Target

RoleOpt = Annotated[
    str,
    typer.Option(
        "--role", help="worker: every worker, one at a time; frontend: the frontend; all: both."
    ),
]
Rolling = Annotated[
    bool,
    typer.Option(
        "--rolling/--no-rolling",
        help="One worker at a time, each replacement ready before its old one stops (default). "
        "--no-rolling: stop every worker at once, then start them all again: DOWNTIME until "
        "they are registered and answer (requests fail meanwhile).",
    ),
]


def restart(
    role: RoleOpt = "worker",
    rolling: Rolling = True,
    namespace: Target = None,
    state_dir: StateDirOfRun = None,
) -> None:
    """Restart the workers (or the frontend) of a running `up` without failing requests.

    Each worker's replacement starts first (a mocker always; an SGLang worker when enough GPUs
    are free, on them, else it is stopped first and its replacement takes its GPUs), is
    registered in etcd and healthy; then the old one is fenced, SIGTERMed and given
    restart.drain_s for its in-flight requests. The frontend is stopped and started again; the
    workers keep serving and are found again. A replacement that never becomes ready is rolled
    back (the old worker serves on): exit 3, naming the step.

    --no-rolling has a downtime by design: every worker is fenced and stopped at once (drained
    together, restart.drain_s), then all are started again and waited for; requests fail until
    they are back. In a worker pod (up --role worker) it restarts the pod's own workers.

    Examples:\n
      dynlaunch restart\n
      dynlaunch restart --role frontend --namespace sglang\n
      dynlaunch restart --no-rolling
    """
    _call(state_dir, namespace, {"op": "restart", "role": role, "rolling": rolling})


WorkersOpt = Annotated[int, typer.Option("--workers", help="How many workers the model has then.")]
ModelOpt = Annotated[
    str | None,
    typer.Option("--model", help="Which model (its name or served name); needed with several."),
]
ConfigOpt = Annotated[
    str | None,
    typer.Option("--config", "-c", help="The new config file (default: the one `up` was given)."),
]


def scale(
    workers: WorkersOpt,
    model: ModelOpt = None,
    namespace: Target = None,
    state_dir: StateDirOfRun = None,
) -> None:
    """Add or remove workers of a running `up` without failing requests.

    New workers get ports as at start (SGLang: free GPUs, else nothing changes, exit 2), are
    named after the model's highest index and reported once registered and healthy. Removed
    workers (highest index first) are fenced, SIGTERMed and given restart.drain_s.

    Examples:\n
      dynlaunch scale --workers 3\n
      dynlaunch scale --workers 1 --model alpha --namespace two
    """
    _call(state_dir, namespace, {"op": "scale", "workers": workers, "model": model})


def reload(
    config: ConfigOpt = None,
    namespace: Target = None,
    state_dir: StateDirOfRun = None,
) -> None:
    """Apply a changed config to a running `up`: print the plan of changes, then replace only the
    processes that change, one at a time (as `restart` does), add or remove workers.

    The config is resolved as `up` resolved it (its flags and environment). A change that cannot
    be made live (namespace, etcd or NATS, the frontend's address, the Dynamo version) is refused
    before anything changes: exit 2. SIGHUP to the launcher reloads the config file it runs.

    Examples:\n
      dynlaunch reload\n
      dynlaunch reload --config configs/mocker.yaml --namespace dynamo
    """
    path = os.path.abspath(config) if config else None
    _call(state_dir, namespace, {"op": "reload", "config": path})


def _call(state_dir: str | None, namespace: str | None, payload: dict[str, Any]) -> None:
    """Send ``payload`` to the run's launcher; its progress lines, then its reply."""
    from launcher import control
    from launcher.errors import ConfigError, StartupError
    from launcher.supervision import control_socket

    info = control.find(state_dir, namespace, os.environ)
    path = Path(str(info["state_dir"])) / control_socket.SOCKET_NAME
    reply = control_socket.call(path, payload, lambda line: typer.echo(f"dynlaunch: {line}"))
    if reply.get("ok"):
        typer.echo(f"dynlaunch: {reply.get('message', 'done')}")
        return
    error, code = str(reply.get("error")), control_socket.failed_reply_code(reply)
    if code == ConfigError.exit_code:
        raise ConfigError(error)
    if code == StartupError.exit_code:
        raise StartupError(error)
    typer.echo(f"dynlaunch: error: {error}", err=True)
    raise typer.Exit(code)
