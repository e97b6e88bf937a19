"""The command line: flags -> overrides -> config -> plan -> run. Errors become exits here only.

One module per command family: `up` (plan, up), `control` (status, down, health), `ops` (restart,
scale, reload), `clear` (clear-namespace), `render` (render k8s), `bench` (bench prefix). Each
command imports what it uses in its body, so that one command does not pay for the others' modules:
the config's pydantic models, httpx (probes), the planner and the supervisor took ~0.3 s to import,
before any command ran.
"""

from __future__ import annotations

import logging
import sys
from typing import Annotated

import typer

from launcher import __version__
from launcher.cli import bench, control, ops, up
from launcher.cli.clear import clear_namespace
from launcher.cli.render import render_app
from launcher.errors import EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, DynlaunchError

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
    from launcher.supervision import output

    output.install_logging(  # to stderr through a queue: a paused terminal never blocks us
        level=logging.DEBUG if verbose else logging.INFO,
        fmt="%(asctime)s %(message)s",
        datefmt="%H:%M:%S",
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)


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
        code = EXIT_INTERRUPTED
    except typer.TyperException as err:  # a usage error: bad flag value, missing argument
        ctx = getattr(err, "ctx", None)
        where = f" ({ctx.command_path})" if ctx is not None else ""
        typer.echo(f"dynlaunch: error{where}: {_message(err)}", err=True)
        code = int(getattr(err, "exit_code", EXIT_USAGE))
    except DynlaunchError as err:
        logging.getLogger("launcher").debug("error", exc_info=True)
        typer.echo(f"dynlaunch: error: {err}", err=True)
        code = err.exit_code
    sys.exit(code if isinstance(code, int) else EXIT_OK)


app.command()(up.plan)
app.command()(up.up)
app.command()(control.status)
app.command()(control.down)
app.command()(control.health)
app.command()(ops.restart)
app.command()(ops.scale)
app.command()(ops.reload)
app.command("clear-namespace")(clear_namespace)
app.add_typer(render_app, name="render")
app.add_typer(bench.bench_app, name="bench")
