"""3. Stop time: SIGTERM to the launcher until no process of the run is left."""

from __future__ import annotations

import subprocess
import time

from benchmarks.harness import (
    SIDES,
    STOP_TIMEOUT_S,
    BenchError,
    Ctx,
    exit_status,
    sides_for,
    wait_gone,
)
from benchmarks.launches import launched
from benchmarks.report import Row, failed_reps, fmt_s, md_table, median, ratio


def run(ctx: Ctx) -> Row:
    took: dict[str, list[float]] = {s: [] for s in SIDES}
    rows: list[list[object]] = []
    errors: list[str] = []
    for rep in range(ctx.reps):
        for side in sides_for(rep):
            try:
                with launched(ctx, side) as launch:
                    launch.wait_serving()
                    time.sleep(1.0)
                    count = len(launch.run_pids())
                    launch.sigterm()
                    gone = wait_gone(launch.run_pids, STOP_TIMEOUT_S)
                    if gone is None:
                        raise BenchError(
                            f"{side}: processes left {STOP_TIMEOUT_S:.0f}s after SIGTERM"
                        )
                    code = exit_status(launch.proc.pid)
                    took[side].append(gone)
                    rows.append([rep + 1, side, count, f"{gone:.2f}", code])
            except (BenchError, subprocess.TimeoutExpired) as err:
                errors.append(f"rep {rep + 1} {side}: {err}")
    dl, sc = median(took["dynlaunch"]), median(took["script"])
    r = ratio(dl, sc)
    details = md_table(
        ["rep", "side", "processes at SIGTERM", "seconds until none left", "exit code"], rows
    )
    details += failed_reps(errors)
    details += [
        "* dynlaunch stops in tiers, each waited for: workers, then the frontend, then the "
        "infrastructure (so workers deregister while etcd is still up); then its dead-man switch "
        "exits. The "
        "script's EXIT trap sends SIGTERM to its whole process group at once (`kill -TERM 0`, as "
        "in Dynamo's launch_utils.sh), etcd included.",
        "",
    ]
    return Row(
        metric="SIGTERM → no process of the run left (median)",
        dynlaunch=fmt_s(dl),
        script=fmt_s(sc),
        ratio="n/a" if r is None else f"{r:.2f}x",
        details=details,
    )
