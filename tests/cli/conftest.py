"""Fixtures of the CLI tests."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """HOME (and TMPDIR) of a CLI run: a directory of the test's own; no real state is touched."""
    path = tmp_path / "home"
    path.mkdir()
    return path
