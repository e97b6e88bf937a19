"""Which Dynamo is installed, and what that means for module names (pure except `installed`)."""

from __future__ import annotations

import re
import subprocess
from importlib import metadata

from launcher.errors import ConfigError


def parse(version: str) -> tuple[int, int]:
    """'1.4.2' -> (1, 4); '0.5.0rc1' -> (0, 5)."""
    match = re.match(r"^\s*(\d+)\.(\d+)", version)
    if not match:
        raise ConfigError(f"dynamo.version {version!r}: expected a version like 1.4.2 or 0.5.0")
    return int(match.group(1)), int(match.group(2))


def installed(python: str, own_python: str) -> str | None:
    """The `ai-dynamo` version importable by ``python`` (None when it is not installed)."""
    if python == own_python:
        try:
            return metadata.version("ai-dynamo")
        except metadata.PackageNotFoundError:
            return None
    code = "from importlib import metadata; print(metadata.version('ai-dynamo'))"
    try:
        out = subprocess.run(
            [python, "-c", code], capture_output=True, text=True, timeout=30, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def is_1x(version: str) -> bool:
    return parse(version) >= (1, 0)
