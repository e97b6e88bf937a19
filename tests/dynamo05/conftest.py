"""The Dynamo 0.5 leg: tests against the real ai-dynamo 0.5.0 runtime in the venv that
DYNLAUNCH_DYNAMO05_VENV names (`bash scripts/setup.sh --dynamo 0.5.0` makes .venv-dynamo-0.5.0),
run inside testkit.netns (0.5 needs a routable address; the namespace gives it 127.0.0.2 on lo):

    DYNLAUNCH_DYNAMO05_VENV=.venv-dynamo-0.5.0 \\
        .venv/bin/python -m testkit.netns -- .venv/bin/python -m pytest tests/dynamo05

Without the variable the runtime tests are skipped (the 1.x leg collects this folder too)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from testkit import netns
from testkit.legs import leg_python

REPO = Path(__file__).resolve().parents[2]
VENV_VAR = "DYNLAUNCH_DYNAMO05_VENV"
sys.path.insert(0, str(REPO / "tests" / "integration"))  # launcher_run, shared with the 1.x leg


@pytest.fixture(scope="session")
def dynamo05_python() -> Path:
    """The 0.5 venv's interpreter; skips without the variable, fails outside the namespace."""
    python = leg_python(VENV_VAR, "0.5.0", "tests/dynamo05")
    if not netns.inside():
        pytest.fail("the Dynamo 0.5 leg runs inside python -m testkit.netns -- ... (see conftest)")
    return python
