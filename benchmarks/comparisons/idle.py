"""4. dynlaunch's own RSS and CPU at idle, next to the bash script's."""

from __future__ import annotations

import dataclasses
import time

from benchmarks.harness import CLK_TCK, BenchError, Ctx, cpu_ticks, rss_kb
from benchmarks.launches import launched
from benchmarks.report import Row, failed_reps, md_table, median

GROUPS = ("dynlaunch", "dynlaunch + dead-man switch", "script (bash)")


@dataclasses.dataclass
class Usage:
    """RSS (MB) and CPU (% of one core) of some processes over a window."""

    start_mb: float
    rss_mb: float
    peak_mb: float
    cpu_pct: float


def measure_idle(groups: dict[str, list[int]], seconds: float) -> dict[str, Usage]:
    """Sum of VmRSS (at the end, and its peak sampled every second) and Δ(utime+stime) of each
    group of processes over a ``seconds`` window."""
    t0 = time.monotonic()
    ticks0 = {k: sum(cpu_ticks(p) for p in pids) for k, pids in groups.items()}
    first = {k: sum(rss_kb(p) for p in pids) for k, pids in groups.items()}
    peak = dict(first)
    while (left := seconds - (time.monotonic() - t0)) > 0:
        time.sleep(min(1.0, left))
        for k, pids in groups.items():
            peak[k] = max(peak[k], sum(rss_kb(p) for p in pids))
    wall = time.monotonic() - t0
    return {
        k: Usage(
            start_mb=first[k] * 1024 / 1e6,
            rss_mb=sum(rss_kb(p) for p in pids) * 1024 / 1e6,
            peak_mb=peak[k] * 1024 / 1e6,
            cpu_pct=(sum(cpu_ticks(p) for p in pids) - ticks0[k]) / CLK_TCK / wall * 100,
        )
        for k, pids in groups.items()
    }


def _measure(ctx: Ctx, got: dict[str, list[Usage]], rows: list[list[object]], rep: int) -> None:
    """Both stacks side by side, idle for the window; one row per group of processes."""
    with launched(ctx, "dynlaunch") as dl, launched(ctx, "script") as sc:
        dl.wait_serving()
        sc.wait_serving()
        time.sleep(2.0)
        deadman = sorted(dl.launcher_pids() - {dl.proc.pid})
        pids = ([dl.proc.pid], [dl.proc.pid, *deadman], [sc.proc.pid])
        groups = dict(zip(GROUPS, pids, strict=True))
        for name, use in measure_idle(groups, ctx.idle_s).items():
            got.setdefault(name, []).append(use)
            rows.append([rep + 1, name, f"{use.start_mb:.1f}", f"{use.rss_mb:.1f}",
                         f"{use.peak_mb:.1f}", f"{use.cpu_pct:.3f}"])  # fmt: skip


def _details(rows: list[list[object]], errors: list[str]) -> list[str]:
    headers = ["rep", "process(es)", "RSS at start (MB)", "RSS at end (MB)", "peak RSS (MB)",
               "CPU (% of one core)"]  # fmt: skip
    return [
        *md_table(headers, rows),
        *failed_reps(errors),
        "* `dynlaunch` is the `dynlaunch up` process (its output-relay threads included); its "
        "dead-man switch (`python -m launcher.supervision.deadman RUN_ID`) is a second process of "
        "its own. MB = 10^6 bytes of VmRSS; CPU = Δ(utime+stime) over the window. Both stacks "
        "(1 worker each) idled side by side during the same window.",
        "",
    ]


def run(ctx: Ctx) -> Row:
    got: dict[str, list[Usage]] = {}
    rows: list[list[object]] = []
    errors: list[str] = []
    for rep in range(ctx.reps):
        try:
            _measure(ctx, got, rows, rep)
        except BenchError as err:
            errors.append(f"rep {rep + 1}: {err}")

    def med(name: str) -> tuple[float, float] | None:
        uses = got.get(name, [])
        rss, cpu = median([u.rss_mb for u in uses]), median([u.cpu_pct for u in uses])
        return None if rss is None or cpu is None else (rss, cpu)

    dl_m, both, sc_m = (med(name) for name in GROUPS)
    met = dl_m is not None and dl_m[0] < 80 and dl_m[1] < 1
    with_deadman = "" if both is None else f"; with its dead-man switch {both[0]:.1f} MB"
    return Row(
        metric=f"launcher RSS and CPU at idle over {ctx.idle_s:g} s (median)",
        dynlaunch="n/a" if dl_m is None
        else f"{dl_m[0]:.1f} MB, {dl_m[1]:.3f}% of a core{with_deadman}",
        script="n/a" if sc_m is None else f"{sc_m[0]:.1f} MB, {sc_m[1]:.3f}% of a core (bash)",
        target="< 80 MB and < 1% of a core (the dynlaunch process)",
        verdict=("met" if met else "NOT met") + (
            f" (launcher process alone; with its dead-man switch {both[0]:.1f} MB)"
            if both is not None else ""
        ),
        details=_details(rows, errors),
    )  # fmt: skip
