"""2. A worker SIGKILLed under load: failed requests, and the time until full capacity."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable

import httpx

from benchmarks.harness import MODEL, POLL_S, SIDES, BenchError, Ctx, sides_for
from benchmarks.launches import DynlaunchLaunch, Launch, launched
from benchmarks.report import Row, failed_reps, fmt_s, md_table, median
from testkit.procs import alive, start_time

NOTE = (
    "* Without a restart, the script's dead worker stays routable until its etcd lease "
    "expires (TTL 10 s with ai-dynamo 1.4.2, read with `etcdctl lease timetolive` on this "
    "machine), and its frontend runs with Dynamo's default `--migration-limit 0`; dynlaunch "
    'revokes the dead worker\'s lease at once ("fenced"), runs the frontend with '
    "`--migration-limit 3` and restarts the worker after a backoff (its delay is in the notes "
    "column)."
)
NOTE_05 = (
    "* Without a restart, the script's dead worker stays registered until its etcd lease "
    "expires (TTL 10 s; ai-dynamo 0.5.0 revokes it on no signal), and the model card (`mdc/tiny`, "
    "written by the first mocker; 0.5's frontend reads the migration limit from it and 0.5's "
    "mocker has no flag for it) says `migration_limit: 0`: a request in flight on the killed "
    "worker fails, and one routed to it before the frontend stops choosing it gets `no "
    "responders`. dynlaunch revokes the dead worker's lease at once, finding its registrations "
    'by the NATS subject it serves ("fenced"), sets `migration_limit: 3` in the card before '
    "its frontend starts, and restarts the worker after a backoff (its delay is in the notes "
    "column)."
)
HEADERS = ["rep", "side", "requests", "failed", "failures by code",
           "failures from … to (vs kill)", "time to full capacity",
           "ok req/s before / after kill", "notes"]  # fmt: skip


@dataclasses.dataclass
class Request:
    start: float  # seconds since the load began
    end: float
    code: int | None  # HTTP status, None for an exception
    error: str = ""  # the exception, or the body of a failed response (shortened)
    message: str = ""  # the failure's message: JSON "error"/"message", first line; or the error

    @property
    def ok(self) -> bool:
        return self.code == 200

    @property
    def kind(self) -> str:
        """Code and message, e.g. `500 no responders: no responders`."""
        return f"{self.code if self.code is not None else 'no response'} {self.message}"


def message_of(body: str) -> str:
    """The first line of a failed response's JSON "error" (0.5) or "message" (1.x), or of the
    body; at most 100 characters."""
    try:
        data = json.loads(body)
        found = data.get("error") or data.get("message") if isinstance(data, dict) else None
    except ValueError:
        found = None
    text = str(found) if found else body
    return (text.strip().splitlines() or [""])[0][:100]


def run_load(
    url: str, seconds: float, kill_after: float, kill: Callable[[], None], clients: int = 4
) -> tuple[list[Request], float]:
    """``clients`` threads sending max_tokens=8 chat requests for ``seconds``; ``kill()`` runs
    after ``kill_after``. Returns the requests and when the kill happened (since the load began)."""
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}
    began = time.monotonic()
    stop_at = began + seconds
    done: list[Request] = []
    lock = threading.Lock()

    def client() -> None:
        with httpx.Client(timeout=httpx.Timeout(30.0, connect=2.0)) as http:
            while time.monotonic() < stop_at:
                t0 = time.monotonic() - began
                try:
                    resp = http.post(f"{url}/v1/chat/completions", json=body)
                    req = Request(t0, time.monotonic() - began, resp.status_code)
                    if resp.status_code != 200:
                        req.error = " ".join(resp.text.split())[:200]
                        req.message = message_of(resp.text)
                except httpx.HTTPError as err:
                    text = f"{type(err).__name__}: {err}"
                    req = Request(t0, time.monotonic() - began, None, text, text[:100])
                with lock:
                    done.append(req)

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for thread in threads:
        thread.start()
    time.sleep(max(0.0, began + kill_after - time.monotonic()))
    killed_at = time.monotonic() - began
    kill()
    for thread in threads:
        thread.join(max(1.0, stop_at + 35.0 - time.monotonic()))
    with lock:
        return sorted(done, key=lambda r: r.start), killed_at


def wait_recovered(launch: DynlaunchLaunch, old_pid: int, deadline: float) -> float | None:
    """When status shows worker-0 running again (restarts=1, a new pid) and its /health says 200."""
    while time.monotonic() < deadline:
        row = launch.status_file_row("worker-0")
        pid = row.get("pid") if row else None
        if row and row.get("state") == "running" and row.get("restarts") == 1 and pid != old_pid:
            port = row.get("ports", {}).get("system")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1.0).status_code == 200:
                    return time.monotonic()
        time.sleep(POLL_S)
    return None


@dataclasses.dataclass
class FailoverRep:
    total: int
    failed: int
    codes: str
    first_fail: float | None  # seconds after the kill
    last_fail: float | None
    back_s: float | None  # time to full capacity (dynlaunch); None = never
    rate_before: float  # successful requests per second before the kill
    rate_after: float  # ... from the kill to the end of the load
    notes: str
    sample: str
    kinds: dict[str, list[float]]  # failures by code and message: when each ended (vs the kill)


def _watch_recovery(
    ctx: Ctx, launch: DynlaunchLaunch, victim: int, killed: threading.Event
) -> tuple[threading.Thread, list[float | None]]:
    """A thread that, once ``killed`` is set, waits for worker-0's recovery into the list."""
    back: list[float | None] = []
    deadline = time.monotonic() + ctx.load_s + 30.0
    monitor = threading.Thread(
        target=lambda: back.append(
            wait_recovered(launch, victim, deadline) if killed.wait(ctx.load_s) else None
        ),
        daemon=True,
    )
    monitor.start()
    return monitor, back


def _dynlaunch_notes(launch: DynlaunchLaunch, victim: int) -> str:
    row = launch.child("worker-0")  # confirm with the CLI itself
    restarts = launch.stderr_lines("worker-0", "; restart 1 in ")
    fenced = launch.stderr_lines("worker-0", "fenced")
    return (
        f"`dynlaunch status`: worker-0 {row.get('state')}, restarts={row.get('restarts')}, "
        f"pid {victim} → {row.get('pid')}; "
        + ("restart delay " + restarts[0].rsplit(" in ", 1)[1] if restarts else "no restart line")
        + ("; lease fenced" if fenced else "; NOT fenced")
    )


def _summarise(
    ctx: Ctx, requests: list[Request], killed_at: float, back_s: float | None, notes: str
) -> FailoverRep:
    fails = [r for r in requests if not r.ok]
    after = [r.end - killed_at for r in fails]
    codes = Counter(str(r.code) if r.code is not None else r.error.split(":")[0] for r in fails)
    ok_before = sum(1 for r in requests if r.ok and r.end < killed_at)
    ok_after = sum(1 for r in requests if r.ok and r.end >= killed_at)
    return FailoverRep(
        total=len(requests),
        failed=len(fails),
        codes=", ".join(f"{k}×{v}" for k, v in sorted(codes.items())) or "—",
        first_fail=min(after) if after else None,
        last_fail=max(after) if after else None,
        back_s=back_s,
        rate_before=ok_before / killed_at,
        rate_after=ok_after / max(1e-9, ctx.load_s - killed_at),
        notes=notes,
        sample=fails[0].error if fails else "",
        kinds={
            k: [r.end - killed_at for r in fails if r.kind == k] for k in {r.kind for r in fails}
        },
    )


def _kill_under_load(ctx: Ctx, launch: Launch) -> FailoverRep:
    victim = launch.worker_pid(0)
    victim_start = start_time(victim)
    killed = threading.Event()
    kill_time: list[float] = []

    def kill() -> None:
        kill_time.append(time.monotonic())
        os.kill(victim, signal.SIGKILL)
        killed.set()

    watched = None
    if isinstance(launch, DynlaunchLaunch):
        watched = _watch_recovery(ctx, launch, victim, killed)
    requests, killed_at = run_load(launch.url, ctx.load_s, ctx.kill_after_s, kill)
    if watched is not None and isinstance(launch, DynlaunchLaunch):
        monitor, back = watched
        monitor.join(ctx.load_s + 35.0)
        notes = _dynlaunch_notes(launch, victim)
        back_s = back[0] - kill_time[0] if back and back[0] is not None and kill_time else None
        return _summarise(ctx, requests, killed_at, back_s, notes)
    notes = (
        f"worker-0 (pid {victim}) alive afterwards: "
        f"{alive(victim) and start_time(victim) == victim_start} (nothing restarts it)"
    )
    return _summarise(ctx, requests, killed_at, None, notes)


def failover_once(ctx: Ctx, side: str) -> FailoverRep:
    with launched(ctx, side, workers=2) as launch:
        launch.wait_serving()
        launch.wait_registered(2)
        return _kill_under_load(ctx, launch)


def _table_row(rep: int, side: str, res: FailoverRep) -> list[object]:
    back = "never (not restarted)" if side == "script" else fmt_s(res.back_s)
    window = "—" if res.first_fail is None else f"{res.first_fail:+.2f} s … {res.last_fail:+.2f} s"
    rates = f"{res.rate_before:.1f} / {res.rate_after:.1f}"
    return [rep + 1, side, res.total, res.failed, res.codes, window, back, rates, res.notes]


def _summary(side: str, got: list[FailoverRep]) -> str:
    if not got:
        return "n/a"
    failed = median([r.failed for r in got])
    total = median([r.total for r in got])
    text = f"{failed:g} failed of {total:g} (median); {sum(r.failed for r in got)} in all"
    if side == "script":
        return text + "; full capacity: never (not restarted)"
    backs = [r.back_s for r in got if r.back_s is not None]
    never = len(got) - len(backs)
    back = fmt_s(median(backs)) + (f" ({never} reps never)" if never else "")
    return f"{text}; full capacity after {back}"


def _details(
    ctx: Ctx, reps: dict[str, list[FailoverRep]], rows: list[list[object]], errors: list[str]
) -> list[str]:
    details = md_table(HEADERS, rows) + failed_reps(errors)
    for side in SIDES:
        ends: dict[str, list[float]] = {}
        for rep in reps[side]:
            for kind, when in rep.kinds.items():
                ends.setdefault(kind, []).extend(when)
        by_kind = [
            f"{len(when)}× `{kind}` (ended {min(when):+.2f} s … {max(when):+.2f} s vs the kill)"
            for kind, when in sorted(ends.items(), key=lambda kv: -len(kv[1]))
        ]
        details.append(
            f"* {side}: failures by code and message, all repetitions: "
            + ("; ".join(by_kind) or "none")
            + "."
        )
    for side in SIDES:
        samples = sorted({r.sample for r in reps[side] if r.sample})
        for sample in samples[:3]:
            details.append(f"* {side}: a failed request's response: `{sample}`")
    for side in SIDES:
        before = median([r.rate_before for r in reps[side]])
        after = median([r.rate_after for r in reps[side]])
        if before is not None and after is not None:
            details.append(
                f"* {side}: successful requests per second, median: {before:.1f} before the "
                f"kill, {after:.1f} after it (the request counts differ mostly because failed "
                "requests return fast)."
            )
    return [*details, NOTE_05 if ctx.dynamo.line == "0.5" else NOTE, ""]


def run(ctx: Ctx) -> Row:
    reps: dict[str, list[FailoverRep]] = {s: [] for s in SIDES}
    rows: list[list[object]] = []
    errors: list[str] = []
    for rep in range(ctx.reps):
        for side in sides_for(rep):
            try:
                res = failover_once(ctx, side)
            except BenchError as err:
                errors.append(f"rep {rep + 1} {side}: {err}")
                continue
            reps[side].append(res)
            rows.append(_table_row(rep, side, res))
    dl_failed = sum(r.failed for r in reps["dynlaunch"])
    return Row(
        metric=f"worker SIGKILLed at {ctx.kill_after_s:g} s of {ctx.load_s:g} s load "
        "(2 workers, 4 clients): failed requests; time to full capacity",
        dynlaunch=_summary("dynlaunch", reps["dynlaunch"]),
        script=_summary("script", reps["script"]),
        verdict="no failed request"
        if reps["dynlaunch"] and not dl_failed
        else f"{dl_failed} failed requests",
        details=_details(ctx, reps, rows, errors),
    )
