"""The venv of another Dynamo line, for a test leg (tests/dynamo05, tests/dynamo14): the
interpreter of the venv that an environment variable names, relative to the repository."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def leg_python(var: str, version: str, folder: str) -> Path:
    """``$var``'s venv interpreter; skips the test without the variable, fails without the venv
    (made by `bash scripts/setup.sh --dynamo VERSION`)."""
    venv = os.environ.get(var)
    if not venv:
        pytest.skip(f"the Dynamo {version[:3]} leg runs with {var} set (see {folder}/conftest.py)")
    python = (REPO / venv / "bin" / "python").absolute()
    if not python.is_file():
        pytest.fail(f"{var}={venv}: no {python}; run bash scripts/setup.sh --dynamo {version}")
    return python
