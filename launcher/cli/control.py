"""`dynlaunch status`, `down` and `health`: talk to a running `up` through its state dir."""

from __future__ import annotations

import json
import os
from typing import Annotated

import typer

from launcher.errors import EXIT_NOT_READY, EXIT_NOT_STOPPED

Target = Annotated[
    str | None, typer.Option("--namespace", help="The run's namespace (default: the only run).")
]
StateDirOfRun = Annotated[str | None, typer.Option("--state-dir", help="The run's state dir.")]


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
        raise typer.Exit(EXIT_NOT_STOPPED)
    typer.echo(f"dynlaunch: stopped pid {info['pid']} ({info['namespace']})")


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
    raise typer.Exit(EXIT_NOT_READY)
