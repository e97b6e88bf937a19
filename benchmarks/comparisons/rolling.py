"""7. Rolling restart under load: failed requests and p99 latency, `dynlaunch restart` vs
stop-and-start of the same workers (each SIGTERMed, restarted by the supervisor, one at a time)."""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import signal
import subprocess
import threading
import time
from collections import Counter

import httpx

from benchmarks.comparisons.failover import Request, message_of
from benchmarks.harness import MODEL, POLL_S, BenchError, Ctx
from benchmarks.launches import DynlaunchLaunch, launched
from benchmarks.report import Row, failed_reps, fmt_s, md_table, median

SIDES = ("rolling", "stop-and-start")
WORKERS = 2
CLIENTS = 4
WARMUP_S = 1.0  # requests started before this are not in the steady window
STEADY_S = 8.0  # the steady-state window before the operation
TAIL_S = 3.0  # load kept after the operation ends (counted as "during")
OP_TIMEOUT_S = 120.0
HEADERS = ["rep", "side", "requests", "failed", "failures by code and message", "steady p99",
           "p99 during the operation", "ratio", "operation took", "notes"]  # fmt: skip


@dataclasses.dataclass
class RollingRep:
    total: int
    failed: int
    kinds: dict[str, int]  # failures by code and message
    steady_p99: float | None
    op_p99: float | None
    op_s: float
    notes: str

    @property
    def ratio(self) -> float | None:
        if self.steady_p99 is None or self.op_p99 is None or self.steady_p99 == 0:
            return None
        return self.op_p99 / self.steady_p99


def p99(values: list[float]) -> float | None:
    """Nearest-rank 99th percentile."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.99 * len(ordered)) - 1)]


class Load:
    """``CLIENTS`` threads sending max_tokens=8 chat requests until ``stop()``."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.began = time.monotonic()
        self.done: list[Request] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._client, daemon=True) for _ in range(CLIENTS)]
        for thread in self._threads:
            thread.start()

    def now(self) -> float:
        return time.monotonic() - self.began

    def _client(self) -> None:
        body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}
        with httpx.Client(timeout=httpx.Timeout(30.0, connect=2.0)) as http:
            while not self._stop.is_set():
                t0 = self.now()
                try:
                    resp = http.post(f"{self.url}/v1/chat/completions", json=body)
                    req = Request(t0, self.now(), resp.status_code)
                    if resp.status_code != 200:
                        req.error = " ".join(resp.text.split())[:200]
                        req.message = message_of(resp.text)
                except httpx.HTTPError as err:
                    text = f"{type(err).__name__}: {err}"
                    req = Request(t0, self.now(), None, text, text[:100])
                with self._lock:
                    self.done.append(req)

    def stop(self) -> list[Request]:
        self._stop.set()
        for thread in self._threads:
            thread.join(35.0)
        with self._lock:
            return sorted(self.done, key=lambda r: r.start)


def _worker_rows(launch: DynlaunchLaunch) -> list[dict[str, object]]:
    rows = launch.status().get("children", [])
    return [r for r in rows if isinstance(r, dict) and str(r.get("name", "")).startswith("worker")]


def _healthy(row: dict[str, object] | None) -> bool:
    if not row or row.get("state") != "running":
        return False
    ports = row.get("ports")
    port = ports.get("system") if isinstance(ports, dict) else None
    with contextlib.suppress(httpx.HTTPError):
        return httpx.get(f"http://127.0.0.1:{port}/health", timeout=1.0).status_code == 200
    return False


def _rolling(launch: DynlaunchLaunch, ctx: Ctx) -> str:
    """`dynlaunch restart` (workers, rolling); the notes."""
    before = {str(r.get("name")): r.get("pid") for r in _worker_rows(launch)}
    out = subprocess.run(
        [str(ctx.dynamo.dynlaunch), "restart", "--state-dir", str(launch.state_dir)],
        env=ctx.env, capture_output=True, text=True, timeout=OP_TIMEOUT_S, check=False,
    )  # fmt: skip
    if out.returncode != 0:
        raise BenchError(f"dynlaunch restart exited {out.returncode}: {out.stderr.strip()[-300:]}")
    after = {str(r.get("name")): r.get("pid") for r in _worker_rows(launch)}
    kept = set(before.values()) & set(after.values())
    return (
        f"`dynlaunch restart` rc 0; workers {sorted(before)} → {sorted(after)}; "
        f"old pids still serving: {len(kept)}"
    )


def _stop_and_start(launch: DynlaunchLaunch) -> str:
    """Each worker SIGTERMed, then waited for until dynlaunch restarted it and it answers."""
    notes = []
    for index in range(WORKERS):
        name = f"worker-{index}"
        old = launch.worker_pid(index)
        os.kill(old, signal.SIGTERM)
        t0 = time.monotonic()
        deadline = t0 + OP_TIMEOUT_S
        while True:
            row = launch.status_file_row(name)
            if row and row.get("pid") not in (None, old) and _healthy(row):
                break
            if time.monotonic() > deadline:
                raise BenchError(f"{name} (pid {old}) not restarted within {OP_TIMEOUT_S:g}s")
            time.sleep(POLL_S)
        notes.append(f"{name} pid {old} → {row.get('pid')} in {time.monotonic() - t0:.1f} s")
    return "; ".join(notes)


def rolling_once(ctx: Ctx, side: str) -> RollingRep:
    with launched(ctx, "dynlaunch", workers=WORKERS) as launch:
        assert isinstance(launch, DynlaunchLaunch)
        launch.wait_serving()
        launch.wait_registered(WORKERS)
        load = Load(launch.url)
        try:
            time.sleep(WARMUP_S + STEADY_S)
            op_start = load.now()
            notes = _rolling(launch, ctx) if side == "rolling" else _stop_and_start(launch)
            op_end = load.now()
            time.sleep(TAIL_S)
        finally:
            requests = load.stop()
    fails = [r for r in requests if not r.ok]
    steady = [
        r.end - r.start for r in requests if r.ok and r.start >= WARMUP_S and r.end < op_start
    ]
    during = [r.end - r.start for r in requests if r.ok and r.end >= op_start and r.start <= op_end]
    return RollingRep(
        total=len(requests),
        failed=len(fails),
        kinds=dict(Counter(r.kind for r in fails)),
        steady_p99=p99(steady),
        op_p99=p99(during),
        op_s=op_end - op_start,
        notes=notes,
    )


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 1000:.1f} ms"


def _table_row(rep: int, side: str, res: RollingRep) -> list[object]:
    kinds = ", ".join(f"{n}× `{k}`" for k, n in sorted(res.kinds.items(), key=lambda kv: -kv[1]))
    ratio = "n/a" if res.ratio is None else f"{res.ratio:.2f}x"
    return [rep + 1, side, res.total, res.failed, kinds or "—", _ms(res.steady_p99),
            _ms(res.op_p99), ratio, fmt_s(res.op_s), res.notes]  # fmt: skip


def _summary(got: list[RollingRep]) -> str:
    if not got:
        return "n/a"
    ratios = [r.ratio for r in got if r.ratio is not None]
    worst = f"{max(ratios):.2f}x" if ratios else "n/a"
    mid = median(ratios)
    return (
        f"{sum(r.failed for r in got)} failed of {sum(r.total for r in got)} in all; "
        f"p99 during / steady: median {'n/a' if mid is None else f'{mid:.2f}x'}, worst {worst} "
        f"(steady p99 median {_ms(median([r.steady_p99 for r in got if r.steady_p99]))}, "
        f"during {_ms(median([r.op_p99 for r in got if r.op_p99]))})"
    )


def _verdict(got: list[RollingRep]) -> str:
    if not got:
        return "not measured"
    failed = sum(r.failed for r in got)
    worst = max((r.ratio for r in got if r.ratio is not None), default=None)
    p99_ok = worst is not None and worst <= 2.0
    if not failed and p99_ok:
        return "met"
    why = [f"{failed} failed requests"] if failed else []
    why += [] if p99_ok else [f"worst p99 ratio {'n/a' if worst is None else f'{worst:.2f}x'}"]
    return "NOT met (" + "; ".join(why) + ")"


def sides_for(rep: int) -> tuple[str, ...]:
    return SIDES if rep % 2 == 0 else SIDES[::-1]


def run(ctx: Ctx) -> Row:
    reps: dict[str, list[RollingRep]] = {s: [] for s in SIDES}
    rows: list[list[object]] = []
    errors: list[str] = []
    for rep in range(ctx.reps):
        for side in sides_for(rep):
            try:
                res = rolling_once(ctx, side)
            except BenchError as err:
                errors.append(f"rep {rep + 1} {side}: {err}")
                continue
            reps[side].append(res)
            rows.append(_table_row(rep, side, res))
    details = md_table(HEADERS, rows) + failed_reps(errors)
    details += [
        f"* Both sides: `dynlaunch up mocker --workers {WORKERS}`, {CLIENTS} clients sending "
        f"max_tokens=8 chat completions back to back; steady p99 over {STEADY_S:g} s (after "
        f'{WARMUP_S:g} s of warm-up), then the operation, then {TAIL_S:g} s more. "p99 during" '
        "is over the successful requests that overlap the operation (ended after it began and "
        "began before it ended); failed requests count over the whole load.",
        "* `rolling` = `dynlaunch restart` (workers, rolling: replacement first, then the old "
        "worker fenced, SIGTERMed and drained). `stop-and-start` = each worker `kill -TERM`ed in "
        "turn, waiting until dynlaunch has restarted it (new pid, running, /health 200) before "
        "the next: what a user does without a rolling restart.",
        "* Target: 0 failed requests and p99 during the operation within 2x of the steady p99 "
        "(the verdict is for `rolling`, judged on its worst repetition).",
        "",
    ]
    return Row(
        metric=f"rolling restart of {WORKERS} workers under load ({CLIENTS} clients): failed "
        "requests; p99 latency during the operation vs steady state",
        dynlaunch=_summary(reps["rolling"]),
        script="stop-and-start: " + _summary(reps["stop-and-start"]),
        target="0 failed, p99 ≤ 2x steady",
        verdict=_verdict(reps["rolling"]),
        details=details,
    )
