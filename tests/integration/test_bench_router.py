"""`dynlaunch bench prefix --compare-router` against a real stack (etcd, NATS, frontend, 2 mockers)
whose frontend is restarted from round-robin to kv: KV-aware routing keeps a shared prefix on one
worker, round-robin scatters it."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from launcher_run import REPO, up_env

from testkit import procs

pytestmark = pytest.mark.integration

ARGV = [sys.executable, "-m", "launcher", "bench", "prefix", "--compare-router", "--workers", "2",
        "--groups", "6", "--requests", "30", "--prefix-tokens", "2000", "--max-tokens", "4",
        "--concurrency", "1", "--seed", "3", "--json"]  # fmt: skip


def selections(frontend_log: Path, mode: str) -> list[int]:
    """The workers the frontend itself logged choosing, in order (its `Selected worker` lines)."""
    mark = f'Selected worker router_mode="{mode}" '
    lines = [line for line in frontend_log.read_text().splitlines() if mark in line]
    return [int(line.split(" worker_id=", 1)[1].split()[0]) for line in lines]


def spread(samples: list[dict[str, Any]]) -> dict[int, set[int]]:
    """Group -> the workers its requests went to, from the raw samples."""
    groups: dict[int, set[int]] = {}
    for s in samples:
        groups.setdefault(s["prefix"], set()).add(s["worker"])
    return groups


def test_kv_pins_each_group_and_misses_less_than_round_robin(tmp_path: Path) -> None:
    """At concurrency 1, the same workload: kv sends every group to one worker, and has strictly
    fewer cache misses (a request on a worker that had not served its group) than round-robin."""
    env = up_env(tmp_path, {"TMPDIR": str(tmp_path)})  # the bench's stacks and logs land here
    proc = subprocess.Popen(ARGV, cwd=REPO, env=env, text=True, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    try:
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-3000:]
        report = json.loads(out)
        runs = {r["router_mode"]: r for r in report["runs"]}
        assert [(r["router_mode"], r["concurrency"]) for r in report["runs"]] == [
            ("round-robin", 1),
            ("kv", 1),
        ]
        for run in runs.values():
            assert len(run["samples"]) == 30
            assert all(s["error"] is None and s["worker"] is not None for s in run["samples"])
        rr, kv = spread(runs["round-robin"]["samples"]), spread(runs["kv"]["samples"])
        assert all(len(workers) == 1 for workers in kv.values()), kv
        # At concurrency 1 a group's misses are the workers it touched.
        misses = {mode: sum(len(w) for w in g.values()) for mode, g in (("rr", rr), ("kv", kv))}
        assert misses["kv"] < misses["rr"], misses
        assert runs["kv"]["summary"]["misses"] == misses["kv"]
        assert runs["round-robin"]["summary"]["misses"] == misses["rr"]
        assert runs["kv"]["summary"]["pinned"] == 6
        # Only the frontend was restarted between the modes (the launcher's lifecycle lines):
        # one start of each worker, a second frontend (frontend.g2) for kv.
        work = Path(report["logs"])
        up_log = (work / "up.log").read_text()
        starts = re.findall(r"^\S+ (\S+) pid=\d+: started", up_log, re.M)
        assert sorted(starts) == sorted(["etcd", "nats", "frontend", "worker-0", "worker-1",
                                         "frontend.g2"]), starts  # fmt: skip
        # Independently of the responses' nvext: each frontend logged choosing exactly these
        # workers, in this order, in its own router mode; both workers served in both modes.
        logs = {"round-robin": "frontend.log", "kv": "frontend.g2.log"}
        for mode, run in runs.items():
            chosen = selections(work / "stack" / "logs" / logs[mode], mode)
            assert chosen[-30:] == [s["worker"] for s in run["samples"]], mode
            assert len({s["worker"] for s in run["samples"]}) == 2, mode
            assert sorted(run["workers"]) == ["worker-0", "worker-1"]
        # The KV router applied the workers' cache events; round-robin has no KV router.
        assert runs["kv"]["server"]["dynamo_component_kv_cache_events_applied"] > 0
        assert (
            runs["round-robin"]["server"].get("dynamo_component_router_kv_hit_rate_count", 0) == 0
        )
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        for record in tmp_path.glob("dynlaunch-compare-router-*/stack/launcher.json"):
            with contextlib.suppress(OSError, ValueError, KeyError):
                procs.kill_run(None, str(json.loads(record.read_text())["run_id"]))
