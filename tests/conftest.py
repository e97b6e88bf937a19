"""Fixtures every test folder shares."""

from __future__ import annotations

import importlib.metadata
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from launcher import versions


def pytest_addoption(parser: pytest.Parser) -> None:
    # Here, not in tests/k8s/conftest.py: pytest takes options only from the conftest files on
    # the way to the paths it was given, and from the repository root that is this one.
    parser.addoption(
        "--update-golden",
        action="store_true",
        default=False,
        help="rewrite tests/k8s/golden/*.yaml from the renderer (those tests then fail or skip)",
    )


def pytest_configure(config: pytest.Config) -> None:
    """Hypothesis keeps its files (constants it found in the code, Unicode tables) in a temp dir
    of this run, not in .hypothesis/ of the source tree."""
    from hypothesis.configuration import set_hypothesis_home_dir

    home = tempfile.mkdtemp(prefix="dynlaunch-hypothesis-")
    config.add_cleanup(lambda: shutil.rmtree(home, ignore_errors=True))
    set_hypothesis_home_dir(home)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The random order's seed, also under -q (which hides pytest-randomly's header line): rerun
    a failed order with `-p randomly --randomly-seed=N`."""
    seed = terminalreporter.config.getoption("randomly_seed", default=None)
    if terminalreporter.config.pluginmanager.has_plugin("randomly") and seed is not None:
        terminalreporter.write_line(f"random order: --randomly-seed={seed}")


@pytest.fixture(scope="session", autouse=True)
def _cache_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """XDG_CACHE_HOME of this test process and every dynlaunch it starts: a session temp dir
    (the tiny model is made there once, in well under a second), never the source tree."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))
        yield


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    """An unrelated live process: what a dead launcher's pid may belong to after reuse."""
    proc = subprocess.Popen(["sleep", "300"])
    yield proc
    proc.kill()
    proc.wait(10)


@pytest.fixture
def started() -> Iterator[list[Any]]:
    """Stacks a test starts (a `launcher_run.Launcher` or anything with `kill()`): each is killed
    at teardown, its process group and its run's tagged processes, even after a clean stop."""
    stacks: list[Any] = []
    yield stacks
    for stack in stacks:
        stack.kill()


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """HOME (and TMPDIR) of a CLI run (tests/cli): a directory of the test's own; no real state is
    touched."""
    path = tmp_path / "home"
    path.mkdir()
    return path


@pytest.fixture(scope="session")
def dynamo16_python() -> Path:
    """dynlaunch's own interpreter, whose ai-dynamo must be 1.6+ (scripts/setup.sh installs
    1.6.1, the default): the tests that take it check what only 1.6 does (its KV router migrates
    a dead worker's requests; it speaks TLS to NATS)."""
    version = importlib.metadata.version("ai-dynamo")
    if versions.parse(version) < (1, 6):
        pytest.fail(f"ai-dynamo {version} in {sys.prefix}: needs 1.6+ (scripts/setup.sh)")
    return Path(sys.executable)
