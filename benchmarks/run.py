#!/usr/bin/env python3
"""Benchmarks: `dynlaunch up mocker` against the reference-script way (reference_launch.sh).

    .venv/bin/python benchmarks/run.py [--reps N] [--only NAME] [--out FILE]

Each comparison is a module of benchmarks/comparisons/ with a ``run(ctx: Ctx) -> Row``: it runs
both sides in this same run, ``--reps`` times (alternating which side goes first), and returns one
summary row (medians, ratio, target) with its per-repetition details. ``COMPARISONS`` below lists
them in report order; to add one, write the module and append a ``Comparison`` to that list
(``--only NAME`` then runs just it). The harness (launches, ports, reaper) is in harness.py and
launches.py, the report in report.py; generic helpers come from testkit/.

Every process started here runs in its own session and is stopped at the end of its repetition,
with a backstop sweep at exit (also on Ctrl-C/SIGTERM); every wait has a deadline; everything binds
127.0.0.1, on ports picked free at run time.
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/ and testkit/

from benchmarks.comparisons import clear_namespace, failover, idle, startup, stop
from benchmarks.harness import PYTHON, REPO, Ctx, base_env
from benchmarks.report import (
    Comparison,
    Row,
    RunInfo,
    code_fingerprint,
    foreign_processes,
    loadavg,
    write_report,
)  # fmt: skip

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
        "clear-namespace",
        "clear-namespace on 10,000 stale keys vs `etcdctl del --prefix`",
        clear_namespace.run,
    ),
]


def parse_args(argv: list[str]) -> argparse.Namespace:
    names = [c.name for c in COMPARISONS]
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--reps", type=int, default=5, help="repetitions per side (default 5)")
    parser.add_argument("--only", choices=names, help="run one comparison")
    parser.add_argument(
        "--out",
        type=Path,
        help="report (default benchmarks/RESULTS.md, or benchmarks/RESULTS-NAME.md with --only)",
    )
    parser.add_argument("--idle-seconds", type=float, default=60.0)
    parser.add_argument("--load-seconds", type=float, default=20.0)
    parser.add_argument("--kill-after", type=float, default=6.0)
    parser.add_argument("--keep-work", action="store_true", help="keep the logs' temporary dir")
    args = parser.parse_args(argv)
    if args.reps < 1:
        parser.error("--reps must be at least 1")
    return args


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
    out: Path = args.out or REPO / "benchmarks" / (
        f"RESULTS-{args.only}.md" if args.only else "RESULTS.md"
    )
    chosen = [c for c in COMPARISONS if args.only in (None, c.name)]
    signal.signal(signal.SIGTERM, lambda _s, _f: sys.exit(143))  # unwind: the finally cleans up
    work = Path(tempfile.mkdtemp(prefix="dynlaunch-bench-"))
    ctx = Ctx(args.reps, work, args.idle_seconds, args.load_seconds, args.kill_after)
    ctx.env = base_env(ctx.home)
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
