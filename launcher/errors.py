"""Every failure a user can see, with its exit code. The CLI maps these to exits in one place."""

from __future__ import annotations

EXIT_OK = 0
EXIT_USAGE = 2  # bad flag, config or environment value: nothing was started
EXIT_STARTUP = (
    3  # the stack could not be brought up (missing binary, unreachable infra, child died)
)


class DynlaunchError(Exception):
    """A one-line, user-facing error. ``str(err)`` is printed as is."""

    exit_code = 1


class ConfigError(DynlaunchError):
    """Bad input: config file, DYNLAUNCH_* variable or flag."""

    exit_code = EXIT_USAGE


class StartupError(DynlaunchError):
    """The stack could not start: a binary is missing, infra is unreachable, a child died early."""

    exit_code = EXIT_STARTUP
