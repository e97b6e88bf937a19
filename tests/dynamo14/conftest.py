"""The Dynamo 1.4 leg: tests against the real ai-dynamo 1.4.2 runtime (the last line before 1.6,
whose KV router fails a dead worker's requests) in the venv that DYNLAUNCH_DYNAMO14_VENV names
(`bash scripts/setup.sh --dynamo 1.4.2` makes .venv-dynamo-1.4.2; dynlaunch runs from .venv,
Dynamo's processes from that venv through `dynamo.python`):

    DYNLAUNCH_DYNAMO14_VENV=.venv-dynamo-1.4.2 .venv/bin/python -m pytest tests/dynamo14

Without the variable these tests are skipped (the main suite collects this folder too)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from testkit.legs import leg_python

REPO = Path(__file__).resolve().parents[2]
VENV_VAR = "DYNLAUNCH_DYNAMO14_VENV"
sys.path.insert(0, str(REPO / "tests" / "integration"))  # launcher_run, shared with the main suite


@pytest.fixture(scope="session")
def dynamo14_python() -> Path:
    """The 1.4 venv's interpreter; skips without the variable."""
    return leg_python(VENV_VAR, "1.4.2", "tests/dynamo14")
