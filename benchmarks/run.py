#!/usr/bin/env python3
"""Benchmarks: `dynlaunch up mocker` against the reference-script way (reference_launch.sh).

    .venv/bin/python benchmarks/run.py [--reps N] [--only NAME] [--out FILE]

Each comparison is one function ``(ctx: Ctx) -> Row``: it runs both sides in this same run,
``--reps`` times (alternating which side goes first), and returns one summary row (medians, ratio,
target) with its per-repetition details. ``COMPARISONS`` lists them in report order; to add one,
write the function and append a ``Comparison`` to that list (``--only NAME`` then runs just it).

Every process started here runs in its own session and is stopped at the end of its repetition,
with a backstop sweep at exit (also on Ctrl-C/SIGTERM); every wait has a deadline; everything binds
127.0.0.1, on ports picked free at run time.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import dataclasses
import datetime as dt
import hashlib
import importlib.metadata
import ipaddress
import json
import os
import platform
import random
import re
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
BIN = REPO / ".venv" / "bin"
DYNLAUNCH = BIN / "dynlaunch"
PYTHON = BIN / "python"
SCRIPT = REPO / "benchmarks" / "reference_launch.sh"
MODEL = "tiny"
SIDES = ("dynlaunch", "script")
POLL_S = 0.05  # the first-completion poll, and the recovery poll
START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 60.0
PORT_RANGE = (10000, 19999)  # below dynlaunch's own 20000-32767 and valid as DYN_SYSTEM_PORT
CLK_TCK = os.sysconf("SC_CLK_TCK")


class BenchError(Exception):
    """A repetition could not be measured (the reason goes into the report)."""


# -- /proc -----------------------------------------------------------------------------------------
def _stat(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name: [state, ppid, pgrp, session, ...]."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def alive(pid: int) -> bool:
    fields = _stat(pid)
    return fields is not None and fields[0] != "Z"


def start_time(pid: int) -> int | None:
    """The process's start time (clock ticks since boot): with the pid, its identity."""
    fields = _stat(pid)
    return int(fields[19]) if fields is not None else None


def exit_status(pid: int) -> int | None:
    """A child's exit code (negative: killed by that signal) WITHOUT reaping it: while we do
    not reap it, its pid (and so its session id) cannot be reused by another process."""
    try:
        info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return None
    if info is None:
        return None
    return info.si_status if info.si_code == os.CLD_EXITED else -info.si_status


def all_pids() -> list[int]:
    return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]


def tagged_pids(run_id: str) -> set[int]:
    """Live processes whose environment carries DYNLAUNCH_RUN_ID=run_id."""
    needle = f"DYNLAUNCH_RUN_ID={run_id}".encode()
    found = set()
    for pid in all_pids():
        with contextlib.suppress(OSError):
            if needle in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0") and alive(pid):
                found.add(pid)
    return found


def tree_pids(root: int) -> set[int]:
    """Live processes in ``root``'s session or below it in the process tree."""
    parent: dict[int, int] = {}
    found = set()
    for pid in all_pids():
        fields = _stat(pid)
        if fields is None or fields[0] == "Z":
            continue
        parent[pid] = int(fields[1])
        if int(fields[3]) == root:
            found.add(pid)
    for pid in parent:
        cur, hops = pid, 0
        while cur > 1 and hops < 64:
            if cur == root:
                found.add(pid)
                break
            cur, hops = parent.get(cur, 0), hops + 1
    return found


def cmdline_pids(*words: str) -> set[int]:
    found = set()
    for pid in all_pids():
        with contextlib.suppress(OSError):
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
            if all(w in argv for w in words) and alive(pid):
                found.add(pid)
    return found


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise BenchError(f"pid {pid}: no VmRSS")


def cpu_ticks(pid: int) -> int:
    fields = _stat(pid)
    if fields is None:
        raise BenchError(f"pid {pid} is gone")
    return int(fields[11]) + int(fields[12])  # utime + stime


def _listen_table() -> dict[str, str]:
    """Socket inode -> 'addr:port' of every listening TCP socket."""
    table: dict[str, str] = {}
    for name in ("tcp", "tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/net/{name}").read_text().splitlines()[1:]:
                cols = line.split()
                if len(cols) < 10 or cols[3] != "0A":
                    continue
                hexaddr, hexport = cols[1].split(":")
                raw = bytes.fromhex(hexaddr)
                raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
                addr = ipaddress.ip_address(raw)
                table[cols[9]] = f"{addr}:{int(hexport, 16)}"
    return table


def listeners(pids: set[int]) -> list[str]:
    """'addr:port (comm)' of every TCP socket these processes listen on."""
    table = _listen_table()
    found = []
    for pid in sorted(pids):
        with contextlib.suppress(OSError):
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                with contextlib.suppress(OSError):
                    target = os.readlink(fd)
                    if target.startswith("socket:[") and target[8:-1] in table:
                        found.append(f"{table[target[8:-1]]} ({comm})")
    return sorted(set(found))


def is_loopback(listener: str) -> bool:
    addr = ipaddress.ip_address(listener.rsplit(":", 1)[0].split(" ")[0])
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr.is_loopback


def kill_pids(pids: set[int], sig: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def wait_gone(pids_now: Callable[[], set[int]], timeout: float, tick: float = 0.02) -> float | None:
    """Seconds until ``pids_now()`` is empty, or None after ``timeout``."""
    began = time.monotonic()
    while pids_now():
        if time.monotonic() - began > timeout:
            return None
        time.sleep(tick)
    return time.monotonic() - began


# -- ports, processes ------------------------------------------------------------------------------
class Ports:
    """Free loopback ports, never the same twice in one run."""

    def __init__(self) -> None:
        self.given: set[int] = set()
        self.rng = random.Random()

    def pick(self) -> int:
        low, high = PORT_RANGE
        for _ in range(2000):
            port = self.rng.randint(low, high)
            if port in self.given:
                continue
            with socket.socket() as sock:
                try:
                    sock.bind(("127.0.0.1", port))
                except OSError:
                    continue
            self.given.add(port)
            return port
        raise BenchError(f"no free port in {low}-{high}")


class Reaper:
    """Everything this run started, so that nothing outlives it."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []
        self.run_ids: list[str] = []

    def leftovers(self) -> set[int]:
        pids: set[int] = set()
        for proc in self.procs:
            if proc.returncode is None:  # not reaped: the pid and its session are still ours
                pids |= tree_pids(proc.pid)
        for run_id in self.run_ids:
            pids |= tagged_pids(run_id) | cmdline_pids("launcher.supervision.deadman", run_id)
        pids.discard(os.getpid())
        return pids

    def sweep(self) -> int:
        """SIGTERM, then SIGKILL, whatever is left; returns how many processes there were."""
        left = self.leftovers()
        if left:
            kill_pids(left, signal.SIGTERM)
            wait_gone(self.leftovers, 5.0)
            kill_pids(self.leftovers(), signal.SIGKILL)
            wait_gone(self.leftovers, 5.0)
        for proc in self.procs:
            if alive(proc.pid) and proc.returncode is None:
                continue  # survived SIGKILL (uninterruptible): leave its pid unreaped, ours
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(1.0)
        return len(left)


# -- the run's context -----------------------------------------------------------------------------
@dataclasses.dataclass
class Ctx:
    reps: int
    work: Path
    idle_s: float
    load_s: float
    kill_after_s: float
    ports: Ports = dataclasses.field(default_factory=Ports)
    reaper: Reaper = dataclasses.field(default_factory=Reaper)
    env: dict[str, str] = dataclasses.field(default_factory=dict)
    counter: int = 0
    code: list[tuple[str, str]] = dataclasses.field(default_factory=list)  # (when, fingerprint)
    forced: list[str] = dataclasses.field(default_factory=list)  # SIGKILLed at teardown

    @property
    def home(self) -> Path:
        return self.work / "home"

    @property
    def model_dir(self) -> Path:
        return self.home / ".cache" / "dynlaunch" / "tiny-model"  # where `up mocker` looks

    def fresh_dir(self, label: str) -> Path:
        self.counter += 1
        path = self.work / f"{self.counter:03d}-{label}"
        path.mkdir(parents=True)
        return path


def base_env(home: Path) -> dict[str, str]:
    """The caller's environment without Dynamo/dynlaunch settings, HOME in the work dir (the
    frontend's model-card cache and dynlaunch's tiny model live there)."""
    drop = ("DYNLAUNCH_", "DYN_", "ETCD", "NATS_", "XDG_CACHE_HOME", "XDG_STATE_HOME")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    return env | {"HOME": str(home), "HF_HUB_OFFLINE": "1"}


# -- one launch of one side ------------------------------------------------------------------------
class Launch:
    """One stack, started by `dynlaunch up` or by reference_launch.sh."""

    side = ""

    def __init__(self, ctx: Ctx, workers: int) -> None:
        self.ctx = ctx
        self.workers = workers
        self.dir = ctx.fresh_dir(self.side)
        self.port = ctx.ports.pick()
        self.url = f"http://127.0.0.1:{self.port}"
        self.ns = f"bench-{uuid.uuid4().hex[:8]}"
        self.started_at = 0.0
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def proc(self) -> subprocess.Popen[bytes]:
        if self._proc is None:
            raise BenchError("not started")
        return self._proc

    def argv(self) -> list[str]:
        raise NotImplementedError

    def run_pids(self) -> set[int]:
        raise NotImplementedError

    def worker_pid(self, index: int) -> int:
        raise NotImplementedError

    def launcher_pids(self) -> set[int]:
        """The launcher's own processes (dynlaunch and its dead-man switch; the bash script)."""
        raise NotImplementedError

    def start(self) -> None:
        with open(self.dir / "stdout.log", "wb") as out, open(self.dir / "stderr.log", "wb") as err:
            self.started_at = time.monotonic()
            self._proc = subprocess.Popen(
                self.argv(),
                cwd=REPO,
                env=self.ctx.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,
            )
        self.ctx.reaper.procs.append(self._proc)

    def check_running(self) -> None:
        code = exit_status(self.proc.pid) if self.proc.returncode is None else self.proc.returncode
        if code is not None:
            tail = (self.dir / "stderr.log").read_text(errors="replace").splitlines()[-5:]
            raise BenchError(f"{self.side} exited with code {code}: {' / '.join(tail)}")

    def wait_serving(self, timeout: float = START_TIMEOUT_S) -> float:
        """Seconds from the command to the first 200 of a max_tokens=1 chat completion."""
        body = {"model": MODEL, "messages": [{"role": "user", "content": "ping"}], "max_tokens": 1}
        deadline = self.started_at + timeout
        with httpx.Client(timeout=httpx.Timeout(5.0, connect=1.0)) as client:
            while time.monotonic() < deadline:
                self.check_running()
                with contextlib.suppress(httpx.HTTPError, ValueError):
                    resp = client.post(f"{self.url}/v1/chat/completions", json=body)
                    if resp.status_code == 200 and resp.json().get("choices"):
                        return time.monotonic() - self.started_at
                time.sleep(POLL_S)
        raise BenchError(f"{self.side}: no successful completion within {timeout:.0f}s")

    def wait_registered(self, count: int, timeout: float = 60.0) -> None:
        """Until the frontend lists ``count`` generate instances (every worker routable)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_running()
            with contextlib.suppress(httpx.HTTPError, ValueError):
                health = httpx.get(f"{self.url}/health", timeout=2.0).json()
                found = [i for i in health.get("instances", []) if i.get("endpoint") == "generate"]
                if len(found) >= count:
                    return
            time.sleep(0.1)
        raise BenchError(f"{self.side}: {count} workers not registered within {timeout:.0f}s")

    def sigterm(self) -> None:
        os.kill(self.proc.pid, signal.SIGTERM)

    def teardown(self) -> None:
        """SIGTERM (if still up), bounded wait, then SIGKILL what is left."""
        if self._proc is None:
            return
        if self._proc.returncode is None and alive(self._proc.pid):
            self.sigterm()
        if wait_gone(self.run_pids, STOP_TIMEOUT_S, 0.1) is None:
            left = self.run_pids()
            self.ctx.forced.append(f"{self.side} ({self.dir.name}): {len(left)} processes")
            kill_pids(left, signal.SIGKILL)
            wait_gone(self.run_pids, 10.0)
        if not self.run_pids():  # reap only once nothing of the run is left
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(5.0)


class DynlaunchLaunch(Launch):
    side = "dynlaunch"

    def __init__(self, ctx: Ctx, workers: int) -> None:
        super().__init__(ctx, workers)
        self.state_dir = self.dir / "state"
        self._run_id: str | None = None
        self.verbose = False  # `dynlaunch -v up`: per-phase timings on stderr (diagnostics only)

    def argv(self) -> list[str]:
        argv = [str(DYNLAUNCH), *(["-v"] if self.verbose else []), "up", "mocker"]
        argv += ["--namespace", self.ns]
        argv += ["--http-port", str(self.port), "--state-dir", str(self.state_dir)]
        return argv + (["--workers", str(self.workers)] if self.workers != 1 else [])

    def _read_run_id(self) -> str | None:
        """From STATE/launcher.json (written before any child starts, removed at exit)."""
        if self._run_id is None:
            with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
                info = json.loads((self.state_dir / "launcher.json").read_text())
                self._run_id = str(info["run_id"])
                self.ctx.reaper.run_ids.append(self._run_id)
        return self._run_id

    @property
    def run_id(self) -> str:
        deadline = time.monotonic() + 30.0
        while (found := self._read_run_id()) is None:
            self.check_running()
            if time.monotonic() > deadline:
                raise BenchError("dynlaunch: no launcher.json after 30s")
            time.sleep(0.05)
        return found

    def launcher_pids(self) -> set[int]:
        """dynlaunch (until reaped) and its dead-man switch (found by its argv, each time)."""
        own = {self.proc.pid} if self.proc.returncode is None and alive(self.proc.pid) else set()
        run_id = self._read_run_id()
        return own | (
            cmdline_pids("launcher.supervision.deadman", run_id) if run_id is not None else set()
        )

    def run_pids(self) -> set[int]:
        """Every process carrying the run's tag, plus dynlaunch and its dead-man switch (before
        the run id is known: dynlaunch's process tree, while its pid is still ours)."""
        run_id = self._read_run_id()
        if run_id is not None:
            return tagged_pids(run_id) | self.launcher_pids()
        return tree_pids(self.proc.pid) if self.proc.returncode is None else set()

    def wait_serving(self, timeout: float = START_TIMEOUT_S) -> float:
        took = super().wait_serving(timeout)
        _ = self.run_id
        self.launcher_pids()
        return took

    def status(self) -> dict[str, Any]:
        """`dynlaunch status --state-dir D --json`."""
        out = subprocess.run(
            [str(DYNLAUNCH), "status", "--state-dir", str(self.state_dir), "--json"],
            env=self.ctx.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if out.returncode != 0:
            raise BenchError(f"dynlaunch status exited {out.returncode}: {out.stderr.strip()}")
        data = json.loads(out.stdout)
        assert isinstance(data, dict)
        return data

    def child(self, name: str, status: dict[str, Any] | None = None) -> dict[str, Any]:
        data = status or self.status()
        for row in data.get("children", []):
            if row.get("name") == name:
                assert isinstance(row, dict)
                return row
        raise BenchError(f"dynlaunch status lists no {name}")

    def worker_pid(self, index: int) -> int:
        pid = self.child(f"worker-{index}").get("pid")
        if not isinstance(pid, int):
            raise BenchError(f"worker-{index} has no pid in status")
        return pid

    def status_file_row(self, name: str) -> dict[str, Any] | None:
        """The child's row of STATE/status.json (what `status` shows), read without a process."""
        with contextlib.suppress(OSError, ValueError):
            for row in json.loads((self.state_dir / "status.json").read_text())["children"]:
                if row.get("name") == name:
                    return dict(row)
        return None

    def stderr_lines(self, *words: str) -> list[str]:
        text = (self.dir / "stderr.log").read_text(errors="replace")
        return [line for line in text.splitlines() if all(w in line for w in words)]


class ScriptLaunch(Launch):
    side = "script"

    def argv(self) -> list[str]:
        p = self.ctx.ports
        system = ",".join(str(p.pick()) for _ in range(self.workers))
        return [
            "bash",
            str(SCRIPT),
            "--namespace",
            self.ns,
            "--http-port",
            str(self.port),
            "--etcd-port",
            str(p.pick()),
            "--etcd-peer-port",
            str(p.pick()),
            "--nats-port",
            str(p.pick()),
            "--nats-monitor-port",
            str(p.pick()),
            "--system-ports",
            system,
            "--model-path",
            str(self.ctx.model_dir),
            "--state-dir",
            str(self.dir / "state"),
            "--python",
            str(PYTHON),
            "--ready-timeout",
            str(int(START_TIMEOUT_S)),
        ]

    def launcher_pids(self) -> set[int]:
        return {self.proc.pid} if self.proc.returncode is None and alive(self.proc.pid) else set()

    def run_pids(self) -> set[int]:
        """The script's session and process tree: bash, etcd, NATS, frontend, workers, curl.
        (We reap bash only once these are gone, so its pid, the session id, stays ours.)"""
        return tree_pids(self.proc.pid) if self.proc.returncode is None else set()

    def worker_pid(self, index: int) -> int:
        path = self.dir / "state" / f"worker-{index}.pid"
        try:
            return int(path.read_text().strip())
        except (OSError, ValueError) as err:
            raise BenchError(f"no pid in {path}") from err


def make_launch(ctx: Ctx, side: str, workers: int) -> Launch:
    return DynlaunchLaunch(ctx, workers) if side == "dynlaunch" else ScriptLaunch(ctx, workers)


@contextlib.contextmanager
def launched(ctx: Ctx, side: str, workers: int = 1) -> Iterator[Launch]:
    launch = make_launch(ctx, side, workers)
    launch.start()
    try:
        yield launch
    finally:
        launch.teardown()


def sides_for(rep: int) -> tuple[str, ...]:
    """Alternate which side goes first, so drift on a shared machine hits both alike."""
    return SIDES if rep % 2 == 0 else SIDES[::-1]


# -- report rows -----------------------------------------------------------------------------------
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


def plan_time(ctx: Ctx) -> float | None:
    """Seconds `dynlaunch plan mocker` takes: the CLI's own start-up cost, no processes."""
    began = time.monotonic()
    try:
        subprocess.run(
            [str(DYNLAUNCH), "plan", "mocker", "--namespace", "bench-plan"],
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


# -- 1. startup ------------------------------------------------------------------------------------
def startup(ctx: Ctx) -> Row:
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
    dl, sc = median(took["dynlaunch"]), median(took["script"])
    r = ratio(dl, sc)
    details = md_table(["rep", "side", "seconds to first completion"], rows)
    details += failed_reps(errors)
    for side, found in listen.items():
        bad = [x for x in found if not is_loopback(x)]
        where = "; ".join(found) or "none found"
        verdict = "all loopback" if not bad else f"NOT loopback: {', '.join(bad)}"
        details.append(
            f"* Listening sockets of the {side} run (first repetition): {verdict}. {where}"
        )
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
    return Row(
        metric="command → first successful chat completion (median)",
        dynlaunch=fmt_s(dl),
        script=fmt_s(sc),
        ratio="n/a" if r is None else f"{r:.2f}x",
        target="≤ 1.10x the script",
        verdict="n/a" if r is None else ("met" if r <= 1.10 else "NOT met"),
        details=details,
    )


# -- 2. worker SIGKILL under load ------------------------------------------------------------------
@dataclasses.dataclass
class Request:
    start: float  # seconds since the load began
    end: float
    code: int | None  # HTTP status, None for an exception
    error: str = ""  # the exception, or the body of a failed response (shortened)

    @property
    def ok(self) -> bool:
        return self.code == 200


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
                except httpx.HTTPError as err:
                    req = Request(
                        t0, time.monotonic() - began, None, f"{type(err).__name__}: {err}"
                    )
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


def failover_once(ctx: Ctx, side: str) -> FailoverRep:
    with launched(ctx, side, workers=2) as launch:
        launch.wait_serving()
        launch.wait_registered(2)
        victim = launch.worker_pid(0)
        victim_start = start_time(victim)
        killed = threading.Event()
        kill_time: list[float] = []
        back: list[float | None] = []

        def kill() -> None:
            kill_time.append(time.monotonic())
            os.kill(victim, signal.SIGKILL)
            killed.set()

        monitor: threading.Thread | None = None
        if isinstance(launch, DynlaunchLaunch):
            deadline = time.monotonic() + ctx.load_s + 30.0
            monitor = threading.Thread(
                target=lambda: back.append(
                    wait_recovered(launch, victim, deadline) if killed.wait(ctx.load_s) else None
                ),
                daemon=True,
            )
            monitor.start()
        requests, killed_at = run_load(launch.url, ctx.load_s, ctx.kill_after_s, kill)
        notes = ""
        if monitor is not None and isinstance(launch, DynlaunchLaunch):
            monitor.join(ctx.load_s + 35.0)
            row = launch.child("worker-0")  # confirm with the CLI itself
            restarts = launch.stderr_lines("worker-0", "; restart 1 in ")
            fenced = launch.stderr_lines("worker-0", "fenced")
            notes = (
                f"`dynlaunch status`: worker-0 {row.get('state')}, restarts={row.get('restarts')}, "
                f"pid {victim} → {row.get('pid')}; "
                + (
                    "restart delay " + restarts[0].rsplit(" in ", 1)[1]
                    if restarts
                    else "no restart line"
                )
                + ("; lease fenced" if fenced else "; NOT fenced")
            )
        else:
            notes = (
                f"worker-0 (pid {victim}) alive afterwards: "
                f"{alive(victim) and start_time(victim) == victim_start} (nothing restarts it)"
            )
        fails = [r for r in requests if not r.ok]
        after = [r.end - killed_at for r in fails]
        codes = Counter(str(r.code) if r.code is not None else r.error.split(":")[0] for r in fails)
        back_s = back[0] - kill_time[0] if back and back[0] is not None and kill_time else None
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
        )


def failover(ctx: Ctx) -> Row:
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
            back = "never (not restarted)" if side == "script" else fmt_s(res.back_s)
            window = (
                "—"
                if res.first_fail is None
                else f"{res.first_fail:+.2f} s … {res.last_fail:+.2f} s"
            )
            rates = f"{res.rate_before:.1f} / {res.rate_after:.1f}"
            rows.append(
                [rep + 1, side, res.total, res.failed, res.codes, window, back, rates, res.notes]
            )

    def summary(side: str) -> str:
        got = reps[side]
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

    details = md_table(
        [
            "rep",
            "side",
            "requests",
            "failed",
            "failures by code",
            "failures from … to (vs kill)",
            "time to full capacity",
            "ok req/s before / after kill",
            "notes",
        ],
        rows,
    )
    details += failed_reps(errors)
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
    details.append(
        "* Without a restart, the script's dead worker stays routable until its etcd lease "
        "expires (TTL 10 s with ai-dynamo 1.4.2, read with `etcdctl lease timetolive` on this "
        "machine), and its frontend runs with Dynamo's default `--migration-limit 0`; dynlaunch "
        'revokes the dead worker\'s lease at once ("fenced"), runs the frontend with '
        "`--migration-limit 3` and restarts the worker after a backoff (its delay is in the notes "
        "column)."
    )
    details.append("")
    dl_failed = sum(r.failed for r in reps["dynlaunch"])
    return Row(
        metric=f"worker SIGKILLed at {ctx.kill_after_s:g} s of {ctx.load_s:g} s load "
        "(2 workers, 4 clients): failed requests; time to full capacity",
        dynlaunch=summary("dynlaunch"),
        script=summary("script"),
        verdict="no failed request"
        if reps["dynlaunch"] and not dl_failed
        else f"{dl_failed} failed requests",
        details=details,
    )


# -- 3. stop ---------------------------------------------------------------------------------------
def stop_time(ctx: Ctx) -> Row:
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


# -- 4. idle footprint -----------------------------------------------------------------------------
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


def idle(ctx: Ctx) -> Row:
    got: dict[str, list[Usage]] = {}
    rows: list[list[object]] = []
    errors: list[str] = []
    for rep in range(ctx.reps):
        try:
            with launched(ctx, "dynlaunch") as dl, launched(ctx, "script") as sc:
                dl.wait_serving()
                sc.wait_serving()
                time.sleep(2.0)
                deadman = sorted(dl.launcher_pids() - {dl.proc.pid})
                groups = {
                    "dynlaunch": [dl.proc.pid],
                    "dynlaunch + dead-man switch": [dl.proc.pid, *deadman],
                    "script (bash)": [sc.proc.pid],
                }
                for name, use in measure_idle(groups, ctx.idle_s).items():
                    got.setdefault(name, []).append(use)
                    rows.append([rep + 1, name, f"{use.start_mb:.1f}", f"{use.rss_mb:.1f}",
                                 f"{use.peak_mb:.1f}", f"{use.cpu_pct:.3f}"])  # fmt: skip
        except BenchError as err:
            errors.append(f"rep {rep + 1}: {err}")

    def med(name: str) -> tuple[float, float] | None:
        uses = got.get(name, [])
        rss, cpu = median([u.rss_mb for u in uses]), median([u.cpu_pct for u in uses])
        return None if rss is None or cpu is None else (rss, cpu)

    dl_m, both, sc_m = med("dynlaunch"), med("dynlaunch + dead-man switch"), med("script (bash)")
    met = dl_m is not None and dl_m[0] < 80 and dl_m[1] < 1
    details = md_table(
        [
            "rep",
            "process(es)",
            "RSS at start (MB)",
            "RSS at end (MB)",
            "peak RSS (MB)",
            "CPU (% of one core)",
        ],
        rows,
    )
    details += failed_reps(errors)
    details.append(
        "* `dynlaunch` is the `dynlaunch up` process (its output-relay threads included); its "
        "dead-man switch (`python -m launcher.supervision.deadman RUN_ID`) is a second process of "
        "its own. MB = 10^6 bytes of VmRSS; CPU = Δ(utime+stime) over the window. Both stacks "
        "(1 worker each) idled side by side during the same window."
    )
    details.append("")
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
        details=details,
    )  # fmt: skip


# -- 5. clear-namespace on 10,000 stale keys -------------------------------------------------------
ETCD = shutil.which("etcd", path="/usr/bin:" + os.environ.get("PATH", "")) or "etcd"
ETCDCTL = shutil.which("etcdctl", path="/usr/bin:" + os.environ.get("PATH", "")) or "etcdctl"
CLEAR_KEYS = 10_000  # stale keys of the namespace cleared
NEIGHBOUR_KEYS = 100  # of namespace NS2: must stay byte for byte
TXN_OPS = 128  # etcd's default --max-txn-ops: the most puts one seeding transaction may carry
CLEAR_TIMEOUT_S = 300.0


def prefixes_1x(ns: str) -> list[str]:
    """The etcd prefixes of a Dynamo 1.x namespace, each ending with "/" (NS2 stays out)."""
    return [
        f"v1/instances/{ns}/",
        f"v1/mdc/{ns}/",
        f"v1/event_channels/namespace/{ns}/",
        f"v1/event_sources/namespace/{ns}/",
    ]


def prefix_end(prefix: str) -> str:
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def worker_keys_1x(ns: str, instance: int, rpc_port: int, system_port: int) -> dict[str, str]:
    """The five keys one Dynamo 1.4.2 worker registers (generate and kv-query instances, its
    model card, its KV-event channel and source), values as it writes them."""
    hexid, pub = f"{instance:x}", instance & 0xFFFFFFFFFFFF
    tcp = f"127.0.0.1:{rpc_port}/{hexid}"
    base = f"http://127.0.0.1:{system_port}/v1/metadata/{ns}/backend/generate/tiny/_base"
    scope = {
        "kind": "endpoint",
        "endpoint": {"namespace": ns, "component": "backend", "name": "generate"},
    }
    topic = f"namespace/{ns}/component/backend/endpoint/generate/topic/kv-events/{pub:x}"
    query = f"worker_kv_query_source_{pub:x}"
    values: dict[str, Any] = {
        f"v1/instances/{ns}/backend/generate/{hexid}": {
            "type": "Endpoint", "component": "backend", "endpoint": "generate", "namespace": ns,
            "instance_id": instance, "transport": {"tcp": f"{tcp}/generate"},
        },
        f"v1/instances/{ns}/backend/{query}/{hexid}": {
            "type": "Endpoint", "component": "backend", "endpoint": query, "namespace": ns,
            "instance_id": instance, "transport": {"tcp": f"{tcp}/{query}"},
        },
        f"v1/mdc/{ns}/backend/generate/{hexid}": {
            "type": "Model", "namespace": ns, "instance_id": instance,
            "card_json": {"display_name": MODEL, "slug": MODEL, "context_length": 2048,
                          "model_info": {"hf_config_json": {"path": f"{base}/config.json"}}},
        },
        f"v1/event_channels/{topic}": {
            "type": "EventChannel", "scope": scope, "topic": "kv-events", "instance_id": pub,
            "transport": {"kind": "Nats", "config": {"subject_prefix": f"namespace.{ns}"}},
        },
        f"v1/event_sources/{topic}": {
            "type": "EventSource", "scope": scope, "topic": "kv-events", "publisher_id": pub,
            "metadata": {"worker": {"worker_id": instance, "dp_rank": 0}},
        },
    }  # fmt: skip
    return {key: json.dumps(value) for key, value in values.items()}


def stale_keys_1x(ns: str, count: int, rpc_port: int, system_port: int) -> dict[str, str]:
    """``count`` keys of ``count`` / 5 dead workers, without a lease: nothing but a clear
    removes them (their transports and system ports refuse connections)."""
    keys: dict[str, str] = {}
    worker = 0
    while len(keys) < count:
        worker += 1
        keys |= worker_keys_1x(ns, 0x694D7A0000000000 + worker, rpc_port, system_port)
    return dict(list(keys.items())[:count])


class PrivateEtcd:
    """An etcd for this comparison alone: loopback, free ports, its own data dir."""

    def __init__(self, ctx: Ctx) -> None:
        self.dir = ctx.fresh_dir("etcd")
        client, peer = ctx.ports.pick(), ctx.ports.pick()
        self.url, peer_url = f"http://127.0.0.1:{client}", f"http://127.0.0.1:{peer}"
        argv = [
            ETCD, "--name", "bench", "--data-dir", str(self.dir / "data"),
            "--listen-client-urls", self.url, "--advertise-client-urls", self.url,
            "--listen-peer-urls", peer_url, "--initial-advertise-peer-urls", peer_url,
            "--initial-cluster", f"bench={peer_url}", "--log-level", "warn",
        ]  # fmt: skip
        with open(self.dir / "etcd.log", "wb") as log:
            self.proc = subprocess.Popen(
                argv, env=ctx.env, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                start_new_session=True,
            )  # fmt: skip
        ctx.reaper.procs.append(self.proc)
        self.client = httpx.Client(timeout=httpx.Timeout(30.0, connect=2.0), trust_env=False)
        deadline = time.monotonic() + 30.0
        while True:
            if self.proc.poll() is not None:
                raise BenchError(f"etcd exited with code {self.proc.returncode}")
            with contextlib.suppress(httpx.HTTPError, BenchError):
                self.revision()
                break
            if time.monotonic() > deadline:
                raise BenchError("etcd did not answer within 30 s")
            time.sleep(0.1)

    def call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        resp = self.client.post(self.url + path, json=body)
        if resp.status_code != 200:
            raise BenchError(f"etcd {path}: HTTP {resp.status_code} {resp.text[:200]}")
        data = resp.json()
        return data if isinstance(data, dict) else {}

    def revision(self) -> int:
        data = self.call("/v3/kv/range", {"key": b64("bench/none")})
        return int(data["header"]["revision"])

    def put_many(self, keys: dict[str, str]) -> int:
        """In transactions of TXN_OPS puts each; the number of requests."""
        items, sent = list(keys.items()), 0
        for start in range(0, len(items), TXN_OPS):
            ops = [{"request_put": {"key": b64(k), "value": b64(v)}}
                   for k, v in items[start : start + TXN_OPS]]  # fmt: skip
            if not self.call("/v3/kv/txn", {"success": ops}).get("succeeded"):
                raise BenchError("seeding transaction failed")
            sent += 1
        return sent

    def dump(self, prefixes: Sequence[str]) -> list[tuple[Any, ...]]:
        """Every key under the prefixes with value, lease and revisions: equal means untouched."""
        found = []
        for prefix in prefixes:
            body = {"key": b64(prefix), "range_end": b64(prefix_end(prefix))}
            for kv in self.call("/v3/kv/range", body).get("kvs", []):
                found.append(
                    tuple(
                        kv.get(f, "")
                        for f in ("key", "value", "lease", "mod_revision", "create_revision")
                    )
                )
        return found

    def count(self, prefixes: Sequence[str]) -> int:
        total = 0
        for prefix in prefixes:
            body = {"key": b64(prefix), "range_end": b64(prefix_end(prefix)), "count_only": True}
            total += int(self.call("/v3/kv/range", body).get("count", 0))
        return total

    def compact(self) -> None:
        """Drop the history the last repetition left (10,000 puts and deletes), so that every
        repetition starts from a store of the same shape."""
        self.call("/v3/kv/compaction", {"revision": str(self.revision()), "physical": True})

    def stop(self) -> None:
        self.client.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def refuses(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return False
    except ConnectionRefusedError:
        return True
    except OSError:
        return False


@dataclasses.dataclass
class ClearRep:
    seconds: float
    revisions: int  # how far the store's revision moved: one per transaction or delete
    left: int  # keys of NS left afterwards
    neighbours_intact: bool
    code: int
    note: str = ""


def clear_once(
    ctx: Ctx, etcd: PrivateEtcd, side: str, ns: str, ports: tuple[int, int], seeded: list[int],
    before: list[tuple[Any, ...]],
) -> ClearRep:  # fmt: skip
    """Seed NS's stale keys afresh, clear them one way, check that NS is empty and that NS2 is
    still ``before`` (as seeded at the start), byte for byte."""
    if not all(refuses(p) for p in ports):
        raise BenchError(f"something listens on {ports}: the seeded owners would look alive")
    seeded.append(etcd.put_many(stale_keys_1x(ns, CLEAR_KEYS, *ports)))
    if (found := etcd.count(prefixes_1x(ns))) != CLEAR_KEYS:
        raise BenchError(f"seeded {found} keys, not {CLEAR_KEYS}")
    log = ctx.fresh_dir(f"clear-{side}")
    start_rev = etcd.revision()
    with open(log / "stdout.log", "wb") as out, open(log / "stderr.log", "wb") as err:
        if side == "dynlaunch":
            argv = [str(DYNLAUNCH), "clear-namespace", "--namespace", ns, "--etcd", etcd.url]
            began = time.monotonic()
            done = subprocess.run(argv, env=ctx.env, stdout=out, stderr=err,
                                  timeout=CLEAR_TIMEOUT_S, check=False)  # fmt: skip
            seconds, code, note = time.monotonic() - began, done.returncode, ""
        else:
            deleted, code = 0, 0
            began = time.monotonic()
            for prefix in prefixes_1x(ns):  # one etcdctl per prefix, as a user types them
                done = subprocess.run(
                    [ETCDCTL, "--endpoints", etcd.url, "del", "--prefix", prefix],
                    env=ctx.env, capture_output=True, timeout=60, check=False,
                )  # fmt: skip
                code = code or done.returncode
                out.write(done.stdout)
                err.write(done.stderr)
                with contextlib.suppress(ValueError):
                    deleted += int(done.stdout.split()[0])
            seconds, note = time.monotonic() - began, f"{deleted} deleted"
    if code != 0:
        tail = (log / "stderr.log").read_text(errors="replace").strip().splitlines()[-3:]
        raise BenchError(f"{side} exited with code {code}: {' / '.join(tail)}")
    rep = ClearRep(
        seconds=seconds,
        revisions=etcd.revision() - start_rev,
        left=etcd.count([*prefixes_1x(ns), f"instances/{ns}/", f"kv_routers/{ns}/"]),
        neighbours_intact=etcd.dump(prefixes_1x(f"{ns}2")) == before,
        code=code,
        note=note,
    )
    etcd.compact()
    if rep.left or not rep.neighbours_intact:
        raise BenchError(
            f"{side}: {rep.left} keys of {ns} left, {ns}2 intact: {rep.neighbours_intact}"
        )
    return rep


def empty_run(ctx: Ctx, etcd: PrivateEtcd, ns: str) -> float | None:
    """`dynlaunch clear-namespace` with nothing to clear: its start-up and reads alone."""
    argv = [str(DYNLAUNCH), "clear-namespace", "--namespace", ns, "--etcd", etcd.url]
    began = time.monotonic()
    done = subprocess.run(argv, env=ctx.env, capture_output=True, timeout=60, check=False)
    return time.monotonic() - began if done.returncode == 0 else None


def clear_namespace_stale_keys(ctx: Ctx) -> Row:
    took: dict[str, list[float]] = {s: [] for s in SIDES}
    rows: list[list[object]] = []
    errors: list[str] = []
    empty: list[float] = []
    seeded: list[int] = []
    ns = f"bench-{uuid.uuid4().hex[:8]}"
    ports = (ctx.ports.pick(), ctx.ports.pick())  # picked free: nothing listens there
    etcd = PrivateEtcd(ctx)
    try:
        etcd.put_many(stale_keys_1x(f"{ns}2", NEIGHBOUR_KEYS, *ports))
        before = etcd.dump(prefixes_1x(f"{ns}2"))
        if len(before) != NEIGHBOUR_KEYS:
            raise BenchError(f"seeded {len(before)} keys of {ns}2, not {NEIGHBOUR_KEYS}")
        for rep in range(ctx.reps):
            for side in sides_for(rep):
                try:
                    got = clear_once(ctx, etcd, side, ns, ports, seeded, before)
                except (BenchError, subprocess.TimeoutExpired, httpx.HTTPError) as err:
                    errors.append(f"rep {rep + 1} {side}: {err}")
                    continue
                took[side].append(got.seconds)
                rows.append([rep + 1, "dynlaunch" if side == "dynlaunch" else "etcdctl",
                             f"{got.seconds:.3f}", got.revisions, got.left,
                             "yes" if got.neighbours_intact else "NO", got.note])  # fmt: skip
            if (seconds := empty_run(ctx, etcd, ns)) is not None:
                empty.append(seconds)
    finally:
        etcd.stop()
    dl, sc = median(took["dynlaunch"]), median(took["script"])
    r = ratio(dl, sc)
    details = md_table(
        ["rep", "side", "seconds", "store revisions used", "keys of NS left",
         "NS2 intact (100 keys, byte for byte)", "notes"],
        rows,
    )  # fmt: skip
    details += failed_reps(errors)
    floor = median(empty)
    details += [
        f"* Seeded before each run (not timed): {CLEAR_KEYS:,} lease-less keys of one namespace "
        f"NS in the Dynamo 1.4.2 layout, {CLEAR_KEYS // 5:,} dead workers × 5 keys "
        "(`v1/instances/NS/backend/generate/<hex>`, `v1/instances/NS/backend/"
        "worker_kv_query_source_<pub>/<hex>`, `v1/mdc/NS/backend/generate/<hex>`, "
        "`v1/event_channels/namespace/NS/...` and `v1/event_sources/namespace/NS/...`), every "
        "transport address and system port on two loopback ports nothing listens on; in "
        f"transactions of {TXN_OPS} puts (etcd's default --max-txn-ops; "
        f'{median(seeded) or 0:.0f} requests a seeding). Namespace NS2 (NS plus a "2", the '
        f"prefix a delete without the trailing / would also take) holds {NEIGHBOUR_KEYS} such "
        "keys throughout and is checked byte for byte (value, lease, revisions) after each run.",
        f"* `dynlaunch` = `.venv/bin/dynlaunch clear-namespace --namespace NS --etcd URL` (the "
        "whole command: Python start-up, reads of the namespace's prefixes, the liveness "
        "probes, the decision, the deletes, its table on stdout). `etcdctl` = "
        "`etcdctl --endpoints URL del --prefix P` once per prefix P of "
        f"{', '.join(f'`{p}`' for p in prefixes_1x('NS'))}, timed together (four processes "
        "one after the other, no shell). Both against the same private etcd "
        f"({_first_line([ETCD, '--version'])}, default settings, data dir in the run's "
        "temporary directory), history compacted after each run.",
        "* Store revisions used: how far etcd's revision moved during the run; each write "
        "transaction (or delete request) takes one. dynlaunch deleting key by key would take "
        f"{CLEAR_KEYS:,}; its guarded range delete takes one per prefix.",
        f"* For reference, `dynlaunch clear-namespace` with nothing left to clear (start-up, "
        f"eight empty reads, nothing to delete) took {fmt_s(floor, 3)} (median of "
        f"{len(empty)}): its floor, against etcdctl's whole job.",
        "",
    ]
    verdict = "n/a" if r is None else ("met" if r <= 1.5 else "NOT met")
    return Row(
        metric=f"wall time to clear {CLEAR_KEYS:,} stale keys of one namespace (median)",
        dynlaunch=fmt_s(dl, 3),
        script="n/a" if sc is None else f"{sc:.3f} s (`etcdctl del --prefix` ×4)",
        ratio="n/a" if r is None else f"{r:.2f}x",
        target="≤ 1.5x etcdctl",
        verdict=verdict,
        details=details,
    )


COMPARISONS = [
    Comparison("startup", "Time from command to first successful chat completion", startup),
    Comparison(
        "failover", "Worker SIGKILLed under load: failed requests, time to full capacity", failover
    ),
    Comparison("stop", "Stop time: SIGTERM to no process of the run left", stop_time),
    Comparison("idle", "dynlaunch's own RSS and CPU at idle", idle),
    Comparison(
        "clear-namespace",
        "clear-namespace on 10,000 stale keys vs `etcdctl del --prefix`",
        clear_namespace_stale_keys,
    ),
]


# -- the machine, the report -----------------------------------------------------------------------
def _first_line(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.SubprocessError):
        return "?"
    return (out.stdout or out.stderr).strip().splitlines()[0] if (out.stdout or out.stderr) else "?"


def machine() -> list[tuple[str, str]]:
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
    commit = _first_line(["git", "-C", str(REPO), "describe", "--always", "--dirty"])
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
        ("ai-dynamo", importlib.metadata.version("ai-dynamo")),
        ("etcd", _first_line(["etcd", "--version"])),
        ("nats-server", _first_line([nats or "nats-server", "--version"])),
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
            f"same working tree; dynlaunch is an editable install, so a process started after the "
            f"change runs the new code): {changes}.{moved}"
        ]
    return [
        f"* dynlaunch code measured (an editable install of the working tree): "
        f"{ctx.code[0][1]}, unchanged from start to end.{moved}"
    ]


def write_report(
    path: Path,
    ctx: Ctx,
    results: list[tuple[Comparison, Row]],
    started: dt.datetime,
    wall: float,
    foreign: tuple[list[str], list[str]],
    load: tuple[str, str],
    left: int,
) -> None:
    command = shlex.join(getattr(sys, "orig_argv", [sys.executable, *sys.argv]))
    lines = [
        "# dynlaunch benchmarks: `dynlaunch up mocker` vs the reference-script way",
        "",
        f"* Date: {started.astimezone().strftime('%Y-%m-%d %H:%M:%S %Z')} "
        f"({started.astimezone(dt.timezone.utc).isoformat(timespec='seconds')}); "
        f"the run took {wall / 60:.1f} min.",
        f"* Command (from the repository root): `{command}`",
        f"* Repetitions: {ctx.reps} per side per comparison (medians below; sides alternate "
        "which goes first).",
        "* **Shared, small machine:** 2 cores, and other work ran at the same time (load average "
        f"at start {load[0]}, at end {load[1]}; other people's processes at start: "
        f"{', '.join(foreign[0]) or 'none'}; at end: {', '.join(foreign[1]) or 'none'}). "
        "Timings are noisy; compare the two sides within this run only.",
        *code_lines(ctx),
        "",
        "## Machine",
        "",
        *md_table(["", ""], machine()),
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
        "namespace (see its section).",
        "",
    ]
    for i, (comp, row) in enumerate(results):
        lines += [f"## {i + 1}. {comp.title}", "", *row.details]
    lines += [
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
        "* Clear-namespace: a private etcd (loopback, free ports) for the comparison; before "
        f"each run {CLEAR_KEYS:,} stale lease-less keys of the namespace are seeded afresh (not "
        "timed); the clock runs from just before the first process is spawned until the last "
        "one has exited; afterwards the namespace must have no key left and its neighbour NS2 "
        "must be unchanged byte for byte, or the repetition fails. History is compacted "
        "after each run.",
        f"* Cleanup: processes of this run left at the end (after the backstop sweep): {left}. "
        "Stacks that outlived a teardown's SIGTERM by 60 s and were SIGKILLed: "
        f"{'; '.join(ctx.forced) or 'none'}.",
        "",
    ]
    path.write_text("\n".join(lines))


def code_fingerprint() -> str:
    """git HEAD plus a hash of the code `dynlaunch` runs (an editable install: the working tree)."""
    digest = hashlib.sha256()
    for path in sorted([*(REPO / "launcher").rglob("*.py"), REPO / "pyproject.toml"]):
        with contextlib.suppress(OSError):
            digest.update(path.name.encode() + path.read_bytes())
    head = _first_line(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"])
    return f"HEAD {head}, launcher/ sha256 {digest.hexdigest()[:12]}"


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


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
        subprocess.run(
            [str(PYTHON), str(REPO / "scripts" / "make_tiny_model.py"), str(ctx.model_dir)],
            check=True,
            capture_output=True,
            timeout=120,
        )
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
            keep |= any("failed (not counted)" in line for line in row.details)
    finally:
        swept = ctx.reaper.sweep()
        left = len(ctx.reaper.leftovers())
        if swept:
            print(f"backstop sweep stopped {swept} leftover processes", flush=True)
        if keep:
            print(f"logs kept in {work}", flush=True)
        else:
            shutil.rmtree(work, ignore_errors=True)
    others = (foreign, foreign_processes())
    write_report(
        out, ctx, results, started, time.monotonic() - t0, others, (load_start, loadavg()), left
    )
    print(f"wrote {out}", flush=True)
    return 0 if left == 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
