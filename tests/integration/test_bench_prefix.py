"""`dynlaunch bench prefix` against a real mocker stack: it runs, and its numbers are coherent."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from launcher_run import REPO, Launcher

from testkit.net import free_port

pytestmark = pytest.mark.integration


def test_bench_prefix_against_the_mocker(tmp_path: Path) -> None:
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
        assert len(samples) == 32
        for sample in samples:
            assert 0 < sample["ttft_s"] <= sample["latency_s"]
            assert sample["prompt_tokens"] > 4000  # the shared prompt came out near its size
        # The mocker simulates prefix caching: a warm first token comes sooner than a cold one.
        assert summary["cold_over_warm_ttft_ratio"] > 1
        assert summary["warm"]["ttft_p50_s"] < summary["control"]["ttft_p50_s"]
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        # The same seed again repeats every prompt: now the control prompts are in the cache
        # too (why the seed is random by default).
        again = [*argv[: argv.index("--plot")], "--seed", str(summary["seed"])]
        out = subprocess.run(again, capture_output=True, text=True, timeout=300, cwd=REPO)
        assert out.returncode == 0, out.stderr
        repeat = json.loads(out.stdout)["summary"]
        assert repeat["seed"] == summary["seed"]
        assert repeat["control"]["ttft_p50_s"] < summary["control"]["ttft_p50_s"]
    finally:
        assert launcher.stop() == 0
