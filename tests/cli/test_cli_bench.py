"""`bench prefix` flags that do not go together, and a `--compare-router` whose stack cannot
start: one line on stderr, exit 2, nothing left running."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_cli_errors import one_error_line, processes_mentioning, run_cli

CASES = {
    "compare-with-url": (["--compare-router", "--url", "http://127.0.0.1:9"], "drop --url"),
    "compare-with-plot": (["--compare-router", "--plot", "x.png"], "drop --url and --plot"),
    "levels-without-compare": (["--concurrency", "1", "--concurrency", "2"], "--concurrency"),
    "up-args-without-compare": (["--", "--tp", "2"], "--tp 2: only with --compare-router"),
    "config-without-compare": (["-c", "configs/mocker.yaml"], "--config: only with"),
    "bad-up-flag": (
        ["--compare-router", "--", "--tp", "0"],
        "router round-robin: dynlaunch up exited 2: --tp",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bench_prefix_bad_input(case: str, tmp_path: Path) -> None:
    args, needle = CASES[case]
    line = one_error_line(run_cli(["bench", "prefix", *args], tmp_path), 2)
    assert needle in line, line
    assert processes_mentioning(str(tmp_path)) == []
