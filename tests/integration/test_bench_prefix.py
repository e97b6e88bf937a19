"""`dynlaunch bench prefix` against a real mocker stack: it runs, and its numbers are coherent."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections import Counter
from pathlib import Path

import pytest
from launcher_run import REPO, Launcher

from testkit.net import free_port

pytestmark = pytest.mark.integration


def test_bench_prefix_against_the_mocker(tmp_path: Path) -> None:
    """What it reports, not how fast: the speed of prefix caching is benchmarks/' business."""
    port = free_port()
    launcher = Launcher(
        ["mocker", "--namespace", f"bp-{uuid.uuid4().hex[:6]}", "--http-port", str(port)], tmp_path
    )
    try:
        launcher.wait_ready()
        png = tmp_path / "ttft.png"
        argv = [sys.executable, "-m", "launcher", "bench", "prefix", "--url",
                f"http://127.0.0.1:{port}", "--prefix-tokens", "6000", "--requests", "16",
                "--max-tokens", "8", "--json", "--plot", str(png)]  # fmt: skip
        out = subprocess.run(argv, capture_output=True, text=True, timeout=300, cwd=REPO)
        assert out.returncode == 0, out.stderr
        report = json.loads(out.stdout)
        summary, samples = report["summary"], report["samples"]
        assert summary["errors"] == 0
        assert [summary[k]["n"] for k in ("cold", "warm", "control")] == [2, 14, 16]
        assert Counter(s["kind"] for s in samples) == {"cold": 2, "warm": 14, "control": 16}
        for sample in samples:
            assert 0 < sample["ttft_s"] <= sample["latency_s"]
            assert sample["prompt_tokens"] > 4000  # the shared prompt came out near its size
        warm = [s for s in samples if s["kind"] == "warm"]  # cached: never more than the prompt
        assert all(s["cached_tokens"] is None or 0 <= s["cached_tokens"] <= s["prompt_tokens"]
                   for s in warm), warm  # fmt: skip
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        # The same seed again: the same prompts, so the same sizes (how fast a repeat is, with
        # every prompt cached, is for benchmarks/).
        again = [*argv[: argv.index("--plot")], "--seed", str(summary["seed"])]
        out = subprocess.run(again, capture_output=True, text=True, timeout=300, cwd=REPO)
        assert out.returncode == 0, out.stderr
        repeat = json.loads(out.stdout)
        assert repeat["summary"]["seed"] == summary["seed"]
        assert repeat["summary"]["prefix_words"] == summary["prefix_words"]
        assert [s["prompt_tokens"] for s in repeat["samples"]] == [
            s["prompt_tokens"] for s in samples
        ]
        assert launcher.stop() == 0
    finally:
        launcher.kill()  # after a clean stop too: the group and the run's tagged processes
