"""`dynlaunch restart`: operations on a running `up`, through its control socket."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

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
        help="One worker at a time, each replacement ready before its old one stops (default).",
    ),
]


def restart(
    role: RoleOpt = "worker",
    rolling: Rolling = True,
    namespace: Target = None,
    state_dir: StateDirOfRun = None,
) -> None:
    """Restart the workers (or the frontend) of a running `up` without failing requests.

    Each worker's replacement starts first (a mocker always; an SGLang worker is stopped first,
    its GPUs being its replacement's), is registered in etcd and healthy; then the old one is
    fenced, SIGTERMed and given restart.drain_s for its in-flight requests. The frontend is
    stopped and started again; the workers keep serving and are found again. A replacement that
    never becomes ready is rolled back (the old worker serves on): exit 3, naming the step.

    Examples:\n
      dynlaunch restart\n
      dynlaunch restart --role frontend --namespace sglang
    """
    from launcher import control
    from launcher.errors import ConfigError, StartupError
    from launcher.supervision import control_socket

    info = control.find(state_dir, namespace, os.environ)
    path = Path(str(info["state_dir"])) / control_socket.SOCKET_NAME
    payload = {"op": "restart", "role": role, "rolling": rolling}
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
