"""`--update-golden` (the option is registered in tests/conftest.py, so that it works from the
repository root as well as from here): rewrite tests/k8s/golden/*.yaml from the current renderer,
then review the diff. A rewriting run compares nothing: its golden tests fail or skip."""

from __future__ import annotations

import pytest


@pytest.fixture
def update_golden(request: pytest.FixtureRequest) -> bool:
    return bool(request.config.getoption("--update-golden"))
