#!/usr/bin/env python3
"""Benchmarks: `dynlaunch up mocker` against the reference-script way (reference_launch.sh).

    .venv/bin/python benchmarks/run.py [--reps N] [--only NAME ...] [--out FILE]
    .venv/bin/python benchmarks/run.py --dynamo 0.5.0 [--only NAME ...]   # both sides on 0.5

Each comparison is a module of benchmarks/comparisons/ with a ``run(ctx: Ctx) -> Row``: it runs
both sides in this same run, ``--reps`` times (alternating which side goes first), and returns one
summary row (medians, ratio, target) with its per-repetition details. ``COMPARISONS`` below lists
them in report order; to add one, write the module and append a ``Comparison`` to that list
(``--only NAME`` then runs just it; repeat it for several). The harness (launches, ports, reaper)
is in harness.py and launches.py, the report in report.py; generic helpers come from testkit/.

``--dynamo 0.5.0`` runs both sides on Dynamo 0.5.0 from .venv-dynamo-0.5.0 (`bash scripts/setup.sh
--dynamo 0.5.0`): dynlaunch installed there, and reference_launch_05.sh (the 0.5 scripts' way) with
that venv's python. 0.5 needs a routable address, so the run re-executes itself inside
`python -m testkit.netns` (a private network namespace: lo with 127.0.0.2; needs root). It runs
FAILOVER_05 unless --only says otherwise, into benchmarks/RESULTS-dynamo-0.5.md.

Every process started here runs in its own session and is stopped at the end of its repetition,
with a backstop sweep at exit (also on Ctrl-C/SIGTERM); every wait has a deadline; everything binds
127.0.0.1, on ports picked free at run time.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/ and testkit/

from benchmarks.comparisons import (
    clear_namespace,
    failover,
    idle,
    rolling,
    stack_idle,
    startup,
    stop,
)
from benchmarks.harness import COMMAND_VAR, DYNAMO_05, PYTHON, REPO, Ctx, base_env
from benchmarks.report import (
    Comparison,
    Row,
    RunInfo,
    code_fingerprint,
    foreign_processes,
    loadavg,
    write_report,
)  # fmt: skip
from testkit import netns

COMPARISONS = [
    Comparison("startup", "Time from command to first successful chat completion", startup.run),
    Comparison(
        "failover",
        "Worker SIGKILLed under load: failed requests, time to full capacity",
        failover.run,
    ),
    Comparison("stop", "Stop time: SIGTERM to no process of the run left", stop.run),
    Comparison("idle", "dynlaunch's own RSS and CPU at idle", idle.run),
    Comparison(
        "stack-idle",
        "CPU and RSS of every process of an idle 1-worker stack, each side alone",
        stack_idle.run,
    ),
    Comparison(
        "clear-namespace",
        "clear-namespace on 10,000 stale keys vs `etcdctl del --prefix`",
        clear_namespace.run,
    ),
    Comparison(
        "rolling",
        "Rolling restart under load: failed requests, p99 vs steady, restart vs stop-and-start",
        rolling.run,
    ),
]
FAILOVER_05 = ["failover", "stack-idle"]  # what --dynamo 0.5.0 runs by default
NOT_ON_05 = {"clear-namespace"}  # seeds and clears the 1.x layout


def parse_args(argv: list[str]) -> argparse.Namespace:
    names = [c.name for c in COMPARISONS]
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--reps", type=int, default=5, help="repetitions per side (default 5)")
    parser.add_argument(
        "--only", choices=names, action="append", help="run this comparison (repeatable)"
    )
    parser.add_argument(
        "--dynamo",
        choices=["venv", "0.5.0"],
        default="venv",
        help="the Dynamo both sides run: .venv's (the default, 1.6.1 since 2026-11-29; 1.4.2 "
        "before) or .venv-dynamo-0.5.0's (in a netns)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        help="report (default benchmarks/RESULTS.md, benchmarks/RESULTS-NAME.md with --only, "
        "benchmarks/RESULTS-dynamo-0.5.md with --dynamo 0.5.0)",
    )
    parser.add_argument("--idle-seconds", type=float, default=60.0)
    parser.add_argument("--load-seconds", type=float, default=20.0)
    parser.add_argument("--kill-after", type=float, default=6.0)
    parser.add_argument("--keep-work", action="store_true", help="keep the logs' temporary dir")
    args = parser.parse_args(argv)
    if args.reps < 1:
        parser.error("--reps must be at least 1")
    if args.dynamo == "0.5.0":
        args.only = args.only or FAILOVER_05
        if refused := sorted(NOT_ON_05 & set(args.only)):
            parser.error(f"--dynamo 0.5.0: {', '.join(refused)} measures the 1.x layout only")
        if not DYNAMO_05.dynlaunch.is_file():
            parser.error(f"--dynamo 0.5.0: no {DYNAMO_05.dynlaunch}; run "
                         "bash scripts/setup.sh --dynamo 0.5.0")  # fmt: skip
    return args


def in_netns(argv: list[str]) -> int | None:
    """Outside a testkit.netns namespace: run this same command inside one, return its status.
    Inside one (or when no namespace can be made: the run then fails on its own): None."""
    if netns.inside():
        return None
    if (why := netns.available()) is not None:
        sys.stderr.write(f"run.py: --dynamo 0.5.0 runs in a network namespace, which {why}\n")
        return 2
    inner = [sys.executable, "-m", "testkit.netns", "--", sys.executable, __file__, *argv]
    # the report shows the command the user typed, not the re-executed one
    os.environ[COMMAND_VAR] = shlex.join(getattr(sys, "orig_argv", [sys.executable, *sys.argv]))
    return subprocess.run(inner, cwd=REPO, check=False).returncode


def run_all(ctx: Ctx, chosen: list[Comparison]) -> tuple[list[tuple[Comparison, Row]], bool]:
    """The tiny model, then each comparison; the rows, and whether a repetition failed."""
    subprocess.run(
        [str(PYTHON), str(REPO / "scripts" / "make_tiny_model.py"), str(ctx.model_dir)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    results: list[tuple[Comparison, Row]] = []
    failed = False
    for comp in chosen:
        print(f"== {comp.name}: {comp.title}", flush=True)
        row = comp.run(ctx)
        results.append((comp, row))
        ctx.code.append((f"after {comp.name}", code_fingerprint()))
        print(
            f"   dynlaunch: {row.dynlaunch}\n   script:    {row.script}\n"
            f"   ratio {row.ratio}, target {row.target}: {row.verdict}",
            flush=True,
        )
        failed |= any("failed (not counted)" in line for line in row.details)
    return results, failed


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    on_05 = args.dynamo == "0.5.0"
    if on_05 and (status := in_netns(argv)) is not None:
        return status
    default = "RESULTS-" + "-".join(args.only) + ".md" if args.only else "RESULTS.md"
    out: Path = args.out or REPO / "benchmarks" / ("RESULTS-dynamo-0.5.md" if on_05 else default)
    chosen = [c for c in COMPARISONS if args.only is None or c.name in args.only]
    signal.signal(signal.SIGTERM, lambda _s, _f: sys.exit(143))  # unwind: the finally cleans up
    work = Path(tempfile.mkdtemp(prefix="dynlaunch-bench-"))
    ctx = Ctx(args.reps, work, args.idle_seconds, args.load_seconds, args.kill_after)
    ctx.env = base_env(ctx.home)
    if on_05:
        ctx.dynamo = DYNAMO_05
    ctx.code.append(("start", code_fingerprint()))
    started, t0 = dt.datetime.now(dt.timezone.utc), time.monotonic()
    foreign, load_start = foreign_processes(), loadavg()
    results: list[tuple[Comparison, Row]] = []
    keep = args.keep_work
    try:
        results, failed = run_all(ctx, chosen)
        keep |= failed
    finally:
        swept = ctx.reaper.sweep()
        left = len(ctx.reaper.leftovers())
        if swept:
            print(f"backstop sweep stopped {swept} leftover processes", flush=True)
        if keep:
            print(f"logs kept in {work}", flush=True)
        else:
            shutil.rmtree(work, ignore_errors=True)
    run = RunInfo(started, time.monotonic() - t0, (foreign, foreign_processes()),
                  (load_start, loadavg()), left)  # fmt: skip
    write_report(out, ctx, results, run)
    print(f"wrote {out}", flush=True)
    return 0 if left == 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
