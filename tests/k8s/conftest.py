"""`--update-golden`: rewrite tests/k8s/golden/*.yaml from the current renderer (then review the
diff). Registered when pytest starts from this directory: `pytest tests/k8s --update-golden`."""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-golden",
        action="store_true",
        default=False,
        help="rewrite the Kubernetes golden files instead of comparing with them",
    )


@pytest.fixture
def update_golden(request: pytest.FixtureRequest) -> bool:
    # default=False: a run from the repository root may not have loaded this option.
    return bool(request.config.getoption("--update-golden", default=False))
