"""1. Time from the command to the first successful chat completion (and, for reference, how long
`dynlaunch plan` alone takes and where `up`'s time goes)."""

from __future__ import annotations

import re
import subprocess
import time

from benchmarks.harness import SIDES, BenchError, Ctx, is_loopback, sides_for
from benchmarks.launches import DynlaunchLaunch, launched
from benchmarks.report import Row, failed_reps, fmt_s, md_table, median, ratio
from testkit.procs import listeners


def plan_time(ctx: Ctx) -> float | None:
    """Seconds `dynlaunch plan mocker` takes: the CLI's own start-up cost, no processes."""
    began = time.monotonic()
    try:
        subprocess.run(
            [str(ctx.dynamo.dynlaunch), "plan", "mocker", "--namespace", "bench-plan"],
            env=ctx.env, capture_output=True, timeout=60, check=True,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return time.monotonic() - began


def phase_breakdown(ctx: Ctx) -> list[str]:
    """One extra `dynlaunch -v up mocker` (not counted): how long each readiness gate took."""
    launch = DynlaunchLaunch(ctx, 1)
    launch.verbose = True
    launch.start()
    try:
        total = launch.wait_serving()
        time.sleep(0.5)  # the ready line
    finally:
        launch.teardown()
    gates = []
    for line in launch.stderr_lines("dynlaunch: ", " after "):
        found = re.search(
            r"dynlaunch: (.+?)(?: \(http[^)]*\)| in http\S+)? after ([0-9.]+)s$", line
        )
        if found:
            gates.append((found.group(1), float(found.group(2))))
    steps = ", ".join(f"{name} {secs:.1f} s" for name, secs in gates)
    return [
        f"* Where dynlaunch's time goes (one extra `dynlaunch -v up mocker`, not counted above; "
        f"first completion after {total:.2f} s): its readiness waits, which follow one another: "
        f"{steps}; sum {sum(s for _, s in gates):.1f} s. The rest is dynlaunch's own start-up and "
        "its steps between waits (state dir, ports, namespace lock and clear in etcd, spawning)."
    ]


def _listen_lines(listen: dict[str, list[str]]) -> list[str]:
    lines = []
    for side, found in listen.items():
        bad = [x for x in found if not is_loopback(x)]
        where = "; ".join(found) or "none found"
        verdict = "all loopback" if not bad else f"NOT loopback: {', '.join(bad)}"
        lines.append(
            f"* Listening sockets of the {side} run (first repetition): {verdict}. {where}"
        )
    return lines


def run(ctx: Ctx) -> Row:
    took: dict[str, list[float]] = {s: [] for s in SIDES}
    rows: list[list[object]] = []
    errors: list[str] = []
    listen: dict[str, list[str]] = {}
    plan_s: list[float] = []
    for rep in range(ctx.reps):
        if (planned := plan_time(ctx)) is not None:
            plan_s.append(planned)
        for side in sides_for(rep):
            try:
                with launched(ctx, side) as launch:
                    seconds = launch.wait_serving()
                    took[side].append(seconds)
                    rows.append([rep + 1, side, f"{seconds:.2f}"])
                    if side not in listen:
                        time.sleep(0.5)
                        listen[side] = listeners(launch.run_pids())
            except BenchError as err:
                errors.append(f"rep {rep + 1} {side}: {err}")
    details = md_table(["rep", "side", "seconds to first completion"], rows)
    details += failed_reps(errors) + _listen_lines(listen)
    details.append(
        f"* For reference, `dynlaunch plan mocker` alone (dynlaunch's own start-up: Python, "
        f"imports, config, plan; it starts nothing) took {fmt_s(median(plan_s))} (median of "
        f"{len(plan_s)}: {', '.join(f'{x:.2f}' for x in plan_s)})."
    )
    try:
        details += phase_breakdown(ctx)
    except BenchError as err:
        details.append(f"* The phase breakdown run failed: {err}")
    details.append("")
    dl, sc = median(took["dynlaunch"]), median(took["script"])
    r = ratio(dl, sc)
    return Row(
        metric="command → first successful chat completion (median)",
        dynlaunch=fmt_s(dl),
        script=fmt_s(sc),
        ratio="n/a" if r is None else f"{r:.2f}x",
        target="≤ 1.10x the script",
        verdict="n/a" if r is None else ("met" if r <= 1.10 else "NOT met"),
        details=details,
    )
