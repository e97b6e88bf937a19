"""A state dir someone else could read or change is refused before anything starts (exit 2, one
line with the fix); a frontend bound beyond loopback gets one warning about its open endpoint."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import test_cli_errors as cli_errors

NOBODY = 65534


@pytest.fixture
def cache() -> dict[str, str]:
    return {"XDG_CACHE_HOME": os.environ["XDG_CACHE_HOME"]}  # the session's tiny model


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to hand a directory to nobody")
def test_a_state_dir_owned_by_another_user_is_refused(
    tmp_path: Path, cache: dict[str, str]
) -> None:
    state = tmp_path / "theirs"
    state.mkdir(mode=0o700)
    os.chown(state, NOBODY, NOBODY)
    done = cli_errors.run_cli(["up", "mocker", "--state-dir", str(state)], tmp_path, cache, 120)
    line = cli_errors.one_error_line(done, 2)
    assert f"owned by uid {NOBODY}, not by you" in line
    assert "--state-dir" in line
    assert list(state.iterdir()) == []  # nothing was created or started there


@pytest.mark.parametrize("mode", [0o770, 0o707, 0o777])
def test_a_group_or_world_writable_state_dir_is_refused(
    tmp_path: Path, cache: dict[str, str], mode: int
) -> None:
    state = tmp_path / "loose"
    state.mkdir()
    state.chmod(mode)
    done = cli_errors.run_cli(["plan", "mocker", "--state-dir", str(state)], tmp_path, cache)
    line = cli_errors.one_error_line(done, 2)
    assert f"writable by group or others (mode {mode:o})" in line
    assert f"chmod 700 {state}" in line


def test_a_readable_state_dir_of_ones_own_is_accepted(
    tmp_path: Path, cache: dict[str, str]
) -> None:
    state = tmp_path / "mine"
    state.mkdir(mode=0o755)  # readable by others, not writable: accepted, then tightened
    state.chmod(0o755)
    done = cli_errors.run_cli(["plan", "mocker", "--state-dir", str(state)], tmp_path, cache)
    assert done.returncode == 0, done.stderr
    assert (state.stat().st_mode & 0o777) == 0o755  # `plan` creates and changes nothing


@pytest.mark.parametrize("host", ["0.0.0.0", "::"])
def test_a_frontend_beyond_loopback_gets_one_warning(
    tmp_path: Path, cache: dict[str, str], host: str
) -> None:
    done = cli_errors.run_cli(["plan", "mocker", "--http-host", host], tmp_path, cache)
    assert done.returncode == 0, done.stderr
    warnings = [line for line in done.stderr.splitlines() if "warning" in line]
    assert len(warnings) == 1, done.stderr
    assert "no authentication" in warnings[0]
    assert "gateway" in warnings[0]


def test_a_loopback_frontend_gets_no_warning(tmp_path: Path, cache: dict[str, str]) -> None:
    done = cli_errors.run_cli(["plan", "mocker", "--http-host", "127.0.0.1"], tmp_path, cache)
    assert done.returncode == 0, done.stderr
    assert "warning" not in done.stderr
