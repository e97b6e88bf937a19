"""Every exit code dynlaunch has, and every failure a user can see. The CLI maps these to exits in
one place (`launcher.cli.main`); nothing below it exits or picks a code of its own.

| code  | meaning                                                                             |
|-------|-------------------------------------------------------------------------------------|
| 0     | done; `up`: stopped by Ctrl-C or SIGTERM, every child stopped in time               |
| 1     | `status`/`down`/`health`: no such run, not stopped in time, not ready; `up`: a child |
|       | ended the run with a failure of its own (its code is passed on when it has one)     |
| 2     | bad input: nothing was started or deleted                                           |
| 3     | the stack could not be brought up, or infra (etcd, NATS) could not be reached        |
| 128+N | `up`: stopped by signal N, and a child had to be killed                             |
| 130   | interrupted (Ctrl-C) before a command ran                                           |
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1  # the generic failure of a DynlaunchError without a code of its own
EXIT_NOT_RUNNING = 1  # `status`, `down`, `health`: no live dynlaunch run found
EXIT_NOT_STOPPED = 1  # `down`: the run was still there after its stop budget
EXIT_NOT_READY = 1  # `health`: the model is not listed, or a completion failed
EXIT_USAGE = 2  # bad flag, config or environment value: nothing was started
EXIT_STARTUP = 3  # the stack could not be brought up (missing binary, infra unreachable, ...)
EXIT_SIGNAL_BASE = 128  # 128 + N: ended by signal N (the shell's convention)
EXIT_INTERRUPTED = EXIT_SIGNAL_BASE + 2  # SIGINT (Ctrl-C) at a prompt: typer.Abort


class DynlaunchError(Exception):
    """A one-line, user-facing error. ``str(err)`` is printed as is."""

    exit_code = EXIT_FAILED


class ConfigError(DynlaunchError):
    """Bad input: config file, DYNLAUNCH_* variable or flag."""

    exit_code = EXIT_USAGE


class StartupError(DynlaunchError):
    """The stack could not start: a binary is missing, infra is unreachable, a child died early."""

    exit_code = EXIT_STARTUP


class InfraUnreachableError(StartupError):
    """etcd or NATS did not answer (refused, timed out, closed): a transport failure, not a
    refusal by the server. `status` shows unknown counts for it instead of failing."""


class BenchError(StartupError):
    """A measurement could not be taken (`bench prefix`: the calibration request failed)."""


class NotRunningError(DynlaunchError):
    """`status`, `down`, `health`: no live dynlaunch run with that state dir or namespace."""

    exit_code = EXIT_NOT_RUNNING
