"""The report: summary rows, markdown helpers, the machine and the code measured, and
RESULTS.md itself (header, summary table, one section per comparison, method)."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import hashlib
import importlib.metadata
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

from benchmarks.harness import CLEAR_KEYS, COMMAND_VAR, REPO, Ctx
from testkit.procs import all_pids


@dataclasses.dataclass
class Row:
    """One comparison's summary line, and what its section of RESULTS.md says."""

    metric: str
    dynlaunch: str
    script: str
    ratio: str = "—"
    target: str = "—"
    verdict: str = "—"
    details: list[str] = dataclasses.field(default_factory=list)  # markdown lines


@dataclasses.dataclass(frozen=True)
class Comparison:
    name: str  # for --only
    title: str
    run: Callable[[Ctx], Row]


def md_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> list[str]:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return [*lines, ""]


def median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def fmt_s(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f} s"


def ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def failed_reps(errors: list[str]) -> list[str]:
    return [f"* Repetition failed (not counted): {e}" for e in errors] + ([""] if errors else [])


@dataclasses.dataclass(frozen=True)
class RunInfo:
    """What the report says about the run as a whole."""

    started: dt.datetime
    wall: float
    foreign: tuple[list[str], list[str]]  # other people's processes at start, at end
    load: tuple[str, str]  # load average at start, at end
    left: int  # processes of this run left after the backstop sweep


def first_line(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.SubprocessError):
        return "?"
    return (out.stdout or out.stderr).strip().splitlines()[0] if (out.stdout or out.stderr) else "?"


def machine(ctx: Ctx) -> list[tuple[str, str]]:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = next(
        (ln.split(":", 1)[1].strip() for ln in cpuinfo.splitlines() if ln.startswith("model name")),
        "?",
    )
    mem_kb = int(
        next(
            ln.split()[1]
            for ln in Path("/proc/meminfo").read_text().splitlines()
            if ln.startswith("MemTotal:")
        )
    )
    nats = shutil.which("nats-server", path="/usr/sbin:/usr/bin:" + os.environ.get("PATH", ""))
    commit = first_line(["git", "-C", str(REPO), "describe", "--always", "--dirty"])
    untracked = subprocess.run(
        ["git", "-C", str(REPO), "status", "--porcelain"],
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    ).stdout.count("\n")
    return [
        ("nproc", str(os.cpu_count())),
        ("memory", f"{mem_kb / 1024 / 1024:.1f} GiB (MemTotal)"),
        ("CPU model (/proc/cpuinfo)", model),
        ("kernel", platform.release()),
        ("Python", f"{platform.python_version()} ({sys.executable})"),
        ("ai-dynamo", f"{ctx.dynamo.version} ({ctx.dynamo.python})"),
        ("etcd", first_line(["etcd", "--version"])),
        ("nats-server", first_line([nats or "nats-server", "--version"])),
        (
            "dynlaunch",
            f"{importlib.metadata.version('dynlaunch')}, git {commit} "
            f"({untracked} changed/untracked paths in the working tree)",
        ),
    ]


def foreign_processes() -> list[str]:
    """Other stacks and test runs on this machine (they share its cores with us)."""
    kinds = {"etcd", "nats-server", "dynamo.frontend", "dynamo.mocker", "pytest", "dynlaunch",
             "launcher"}  # fmt: skip
    found = []
    for pid in all_pids():
        with contextlib.suppress(OSError):
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
            words = {os.path.basename(a) for a in argv[:4]}
            hit = sorted(kinds & words)
            if hit and pid != os.getpid():
                found.append(hit[0])
    return [f"{n}×{c}" for n, c in sorted(Counter(found).items())]


def code_lines(ctx: Ctx) -> list[str]:
    """The dynlaunch code measured; loud if the working tree changed while the run went on."""
    codes = {fp.split(", ", 1)[1] for _, fp in ctx.code}
    heads = [fp.split(", ", 1)[0].removeprefix("HEAD ") for _, fp in ctx.code]
    moved = ""
    if heads[0] != heads[-1]:
        log = subprocess.run(
            ["git", "-C", str(REPO), "log", "--format=%h %s", f"{heads[0]}..{heads[-1]}"],
            capture_output=True, text=True, timeout=20, check=False,
        ).stdout.strip().splitlines()  # fmt: skip
        moved = f" Commits made during the run: {'; '.join(log) or '?'}."
    if len(codes) > 1:
        changes = "; ".join(f"{when}: {fp}" for when, fp in ctx.code)
        return [
            "* **WARNING: the dynlaunch code changed while this run went on** (others work in the "
            f"same working tree; dynlaunch imports {REPO}/launcher, so a process started after the "
            f"change runs the new code): {changes}.{moved}"
        ]
    return [
        f"* dynlaunch code measured ({REPO}/launcher, imported through PYTHONPATH): "
        f"{ctx.code[0][1]}, unchanged from start to end.{moved}"
    ]


def _header(ctx: Ctx, run: RunInfo) -> list[str]:
    command = os.environ.get(COMMAND_VAR) or shlex.join(
        getattr(sys, "orig_argv", [sys.executable, *sys.argv])
    )
    return [
        "# dynlaunch benchmarks: `dynlaunch up mocker` vs the reference-script way"
        + ("" if ctx.dynamo.line == "1.x" else f", on Dynamo {ctx.dynamo.version}"),
        "",
        f"* Date: {run.started.astimezone().strftime('%Y-%m-%d %H:%M:%S %Z')} "
        f"({run.started.astimezone(dt.timezone.utc).isoformat(timespec='seconds')}); "
        f"the run took {run.wall / 60:.1f} min.",
        f"* Command (from the repository root): `{command}`",
        f"* Repetitions: {ctx.reps} per side per comparison (medians below; sides alternate "
        "which goes first).",
        "* **Shared, small machine:** 2 cores, and other work ran at the same time (load average "
        f"at start {run.load[0]}, at end {run.load[1]}; other people's processes at start: "
        f"{', '.join(run.foreign[0]) or 'none'}; at end: {', '.join(run.foreign[1]) or 'none'}). "
        "Timings are noisy; compare the two sides within this run only.",
        *code_lines(ctx),
        *_netns_line(ctx),
        *_see_also(),
        "",
        "## Machine",
        "",
        *md_table(["", ""], machine(ctx)),
    ]


def _netns_line(ctx: Ctx) -> list[str]:
    if ctx.dynamo.line == "1.x":
        return []
    return [
        "* Both sides ran inside a private network namespace (`python -m testkit.netns`: only "
        "`lo`, with `127.0.0.2/32 scope global` and a default route via `lo`), because Dynamo "
        "0.5's "
        "frontend binds its response stream on a routable address (there 127.0.0.2) and panics "
        "without one. Everything else binds 127.0.0.1."
    ]


def _see_also() -> list[str]:
    """Links to the other reports (RESULTS-*.md: one comparison, or another Dynamo version)."""
    others = sorted(p.name for p in (REPO / "benchmarks").glob("RESULTS*.md"))
    return [f"* Other reports: {', '.join(f'[{n}]({n})' for n in others)}."] if others else []


_SIDES_1X = (
    "`dynlaunch` = `.venv/bin/dynlaunch up mocker --namespace bench-<rand> --http-port P "
    "--state-dir <tmp>` (plus `--workers 2` for the failover comparison). `script` = "
    "`benchmarks/reference_launch.sh` (etcd + nats-server -js in the background, "
    "`etcdctl del --prefix v1/instances/<ns>/` as the clear step, frontend and mocker "
    "worker(s) in the background, then a poll until a completion succeeds; nothing restarts "
    "a worker, the frontend has Dynamo's default migration limit 0). Both sides run the same "
    "ai-dynamo, the same tiny model and the same loopback settings (`DYN_EVENT_PLANE=nats`, "
    "`DYN_TCP_RPC_HOST=127.0.0.1`, `DYN_TCP_RESPONSE_STREAM_HOST=lo`, "
    "`DYN_SYSTEM_HOST=127.0.0.1`, `DYN_EVENT_PLANE_HOST=127.0.0.1`), with HOME in a "
    "temporary directory. In the clear-namespace row, `dynlaunch` is `dynlaunch "
    "clear-namespace` and `script` is `etcdctl del --prefix`, once per prefix of the "
    "namespace (see its section). In the rolling-restart row, both columns are dynlaunch "
    "stacks: `dynlaunch` is `dynlaunch restart` and `script` is stop-and-start of the same "
    "workers (see its section)."
)


_SIDES_05 = (
    "`dynlaunch` = `.venv-dynamo-0.5.0/bin/dynlaunch up mocker --namespace bench-<rand> "
    "--http-port P --state-dir <tmp>` (plus `--workers 2` for the failover comparison; "
    "dynlaunch installed in the 0.5 venv runs Dynamo with that venv's python). `script` = "
    "`benchmarks/reference_launch_05.sh`, the 0.5 launch scripts' way (agg.sh @42289874): "
    "etcd + nats-server -js in the background, their clear step `python -m "
    "dynamo.sglang.utils.clear_namespace --namespace <ns>` (its exit status ignored, as "
    "agg.sh has no `set -e`), `python -m dynamo.frontend --http-host 127.0.0.1` and "
    '`python -m dynamo.mocker --extra-engine-args FILE` workers (FILE: `{"block_size": '
    "16}`) in the background, then a poll until a completion succeeds. Dynamo's defaults "
    "otherwise: `DYN_NAMESPACE` only, no system port, the model card's migration limit 0 "
    "(written by the first mocker), nothing restarts a worker. Both sides run the same "
    "ai-dynamo 0.5.0 venv and the same tiny model, with HOME in a temporary directory."
)


def _summary(ctx: Ctx, results: list[tuple[Comparison, Row]]) -> list[str]:
    sides = _SIDES_05 if ctx.dynamo.line == "0.5" else _SIDES_1X
    return [
        "## Summary",
        "",
        *md_table(
            [
                "#",
                "comparison",
                "metric",
                "dynlaunch",
                "script",
                "ratio dynlaunch/script",
                "target",
                "verdict",
            ],
            [
                [i + 1, c.title, r.metric, r.dynlaunch, r.script, r.ratio, r.target, r.verdict]
                for i, (c, r) in enumerate(results)
            ],
        ),
        sides,
        "",
    ]


def _method(ctx: Ctx, left: int) -> list[str]:
    return [
        "## Method",
        "",
        "* Startup: the clock starts just before the command is spawned; a client POSTs "
        "`/v1/chat/completions` with `max_tokens=1` every 50 ms until one returns 200 with "
        "choices.",
        f"* Failover: after both workers are registered (frontend `/health` lists 2 `generate` "
        f"instances), 4 client threads send `max_tokens=8` chat requests for {ctx.load_s:g} s; "
        f"worker-0 gets SIGKILL at {ctx.kill_after_s:g} s (dynlaunch: its pid from "
        "`dynlaunch status --state-dir D --json`; script: the pid it recorded). A request fails "
        "on a non-200 or an exception. Time to full capacity (dynlaunch): from the SIGKILL until "
        "the status file that `dynlaunch status` reads shows worker-0 `running` with restarts=1 "
        "and a new pid, and its system port's `/health` answers 200 (polled every 50 ms; "
        "confirmed with `dynlaunch status --json` after the load).",
        "* Stop: SIGTERM to the launcher (dynlaunch, or the bash script); the clock stops when "
        "no process of the run is left: dynlaunch = every process whose /proc/PID/environ has "
        "`DYNLAUNCH_RUN_ID=<run_id from launcher.json>`, plus dynlaunch itself and its dead-man "
        "switch; script = its session and process tree. Polled every 20 ms.",
        "* Idle: after both stacks serve and 2 s settle, VmRSS and utime+stime of the launcher "
        f"process, read at the start and end of a {ctx.idle_s:g} s window with no requests.",
        "* Stack idle: each side's 1-worker stack alone (the other side not running), after it "
        "serves and 2 s settle: VmRSS and utime+stime of every process of the run (dynlaunch: "
        "the processes tagged with its run id, itself and its dead-man switch; script: its "
        f"process tree), read at the start and end of a {ctx.idle_s:g} s window with no "
        "requests, summed per kind of process (named from /proc/PID/cmdline).",
        "* Clear-namespace: a private etcd (loopback, free ports) for the comparison; before "
        f"each run {CLEAR_KEYS:,} stale lease-less keys of the namespace are seeded afresh (not "
        "timed); the clock runs from just before the first process is spawned until the last "
        "one has exited; afterwards the namespace must have no key left and its neighbour NS2 "
        "must be unchanged byte for byte, or the repetition fails. History is compacted "
        "after each run.",
        "* Rolling: both sides are the same `dynlaunch up mocker --workers 2` stack under 4 "
        "clients (`max_tokens=8`); steady p99 over 8 s, then the operation: `dynlaunch restart` "
        "(rolling) or each worker SIGTERMed in turn and waited for until dynlaunch has restarted "
        "it (new pid in the status file, `running`, `/health` 200); p99 of the successful "
        "requests that overlap the operation vs the steady p99; a request fails on a non-200 or "
        "an exception, counted over the whole load.",
        f"* Cleanup: processes of this run left at the end (after the backstop sweep): {left}. "
        "Stacks that outlived a teardown's SIGTERM by 60 s and were SIGKILLed: "
        f"{'; '.join(ctx.forced) or 'none'}.",
        "",
    ]


def write_report(path: Path, ctx: Ctx, results: list[tuple[Comparison, Row]], run: RunInfo) -> None:
    lines = [*_header(ctx, run), *_summary(ctx, results)]
    for i, (comp, row) in enumerate(results):
        lines += [f"## {i + 1}. {comp.title}", "", *row.details]
    lines += _method(ctx, run.left)
    path.write_text("\n".join(lines))


def code_fingerprint() -> str:
    """git HEAD plus a hash of the code `dynlaunch` runs (an editable install: the working tree)."""
    digest = hashlib.sha256()
    for path in sorted([*(REPO / "launcher").rglob("*.py"), REPO / "pyproject.toml"]):
        with contextlib.suppress(OSError):
            digest.update(path.name.encode() + path.read_bytes())
    head = first_line(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"])
    return f"HEAD {head}, launcher/ sha256 {digest.hexdigest()[:12]}"


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])
