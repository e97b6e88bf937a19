"""CPU and RSS of every process of an idle 1-worker stack, per kind of process, each side alone
(Dynamo 0.5's mocker spins at idle; two stacks side by side would share that machine's cores)."""

from __future__ import annotations

import contextlib
import os
import time
from collections import defaultdict
from pathlib import Path

from benchmarks.harness import (
    CLK_TCK,
    SIDES,
    BenchError,
    Ctx,
    cpu_ticks,
    is_loopback,
    rss_kb,
    sides_for,
)  # fmt: skip
from benchmarks.launches import launched
from benchmarks.report import Row, failed_reps, md_table, median
from testkit.procs import listeners

STACK = "whole stack"


def kind(pid: int) -> str:
    """What a process of a stack is, from its argv."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return "?"
    argv = raw.decode(errors="replace").split("\0")
    words = [os.path.basename(a) for a in argv if a]
    named = {
        "dynamo.frontend": "frontend",
        "dynamo.mocker": "worker (mocker)",
        "launcher.supervision.deadman": "dead-man switch",
    }
    for word, name in named.items():
        if word in argv:
            return name
    if words and words[0] in ("etcd", "nats-server", "bash"):
        return words[0]
    if "dynlaunch" in words[:2]:
        return "dynlaunch"
    return words[0] if words else "?"


def measure(pids: set[int], seconds: float) -> tuple[dict[str, tuple[int, float, float]], int]:
    """Per kind: (processes, VmRSS MB at the end, Δ(utime+stime) as % of one core) over the
    window; and how many processes went away during it (not counted)."""
    kinds = {pid: kind(pid) for pid in pids}
    start: dict[int, int] = {}
    for pid in pids:
        with contextlib.suppress(BenchError):
            start[pid] = cpu_ticks(pid)
    t0 = time.monotonic()
    time.sleep(seconds)
    wall = time.monotonic() - t0
    got: dict[str, list[float]] = defaultdict(lambda: [0, 0.0, 0.0])
    gone = 0
    for pid, ticks in start.items():
        try:
            used, rss = cpu_ticks(pid) - ticks, rss_kb(pid)
        except (BenchError, OSError):
            gone += 1
            continue
        for name in (kinds[pid], STACK):
            got[name][0] += 1
            got[name][1] += rss * 1024 / 1e6
            got[name][2] += used / CLK_TCK / wall * 100
    return {k: (int(v[0]), v[1], v[2]) for k, v in got.items()}, gone


def _listen_line(side: str, found: list[str]) -> str:
    bad = [x for x in found if not is_loopback(x)]
    verdict = "all loopback" if not bad else f"NOT loopback: {', '.join(bad)}"
    return f"* Listening sockets of the {side} stack (first repetition): {verdict}. " + (
        "; ".join(found) or "none found"
    )


def run(ctx: Ctx) -> Row:
    cpu: dict[str, dict[str, list[float]]] = {s: defaultdict(list) for s in SIDES}
    rows: list[list[object]] = []
    errors: list[str] = []
    listen: dict[str, list[str]] = {}
    for rep in range(ctx.reps):
        for side in sides_for(rep):
            try:
                with launched(ctx, side) as launch:
                    launch.wait_serving()
                    time.sleep(2.0)
                    pids = launch.run_pids()
                    if side not in listen:
                        listen[side] = listeners(pids)
                    usage, gone = measure(pids, ctx.idle_s)
            except BenchError as err:
                errors.append(f"rep {rep + 1} {side}: {err}")
                continue
            for name, (count, rss, pct) in sorted(usage.items(), key=lambda kv: kv[0] == STACK):
                cpu[side][name].append(pct)
                note = f"{gone} exited during the window" if gone and name == STACK else ""
                rows.append([rep + 1, side, name, count, f"{rss:.1f}", f"{pct:.1f}", note])

    def text(side: str) -> str:
        meds = {k: median(v) for k, v in cpu[side].items()}
        if meds.get(STACK) is None:
            return "n/a"
        parts = [f"{k} {v:.1f}%" for k, v in sorted(meds.items()) if k != STACK and v is not None]
        return f"{meds[STACK]:.1f}% of a core ({', '.join(parts)})"

    headers = ["rep", "side", "process(es)", "count", "RSS at end (MB)", "CPU (% of one core)",
               "notes"]  # fmt: skip
    details = [
        *md_table(headers, rows),
        *failed_reps(errors),
        *(_listen_line(side, found) for side, found in listen.items()),
        "* Each side's stack (1 worker) idled alone: the other side was not running. MB = 10^6 "
        "bytes of VmRSS at the end of the window; CPU = Δ(utime+stime) over the window, summed "
        "per kind of process (100% = one full core; the machine has 2).",
        "",
    ]
    return Row(
        metric=f"CPU at idle over {ctx.idle_s:g} s, whole 1-worker stack and per process (median)",
        dynlaunch=text("dynlaunch"),
        script=text("script"),
        details=details,
    )
