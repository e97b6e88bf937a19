"""The benchmarks' harness: constants, the run's context (ports, reaper, work dir), and the
benchmark-specific /proc tools (exit status without reaping, RSS, CPU ticks); the generic ones
(/proc scans, waiting, ports) come from `testkit`."""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import os
import random
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from testkit.procs import alive, cmdline_pids, stat_fields, tagged_pids, tree_pids

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
CLEAR_KEYS = 10_000  # stale keys of the namespace the clear-namespace comparison clears
COMMAND_VAR = "DYNLAUNCH_BENCH_COMMAND"  # the command typed, when run.py re-executed itself


@dataclasses.dataclass(frozen=True)
class Dynamo:
    """The Dynamo runtime both sides run: its interpreter, the dynlaunch that runs it, and the
    reference script of its line ("1.x", or "0.5": run inside testkit.netns, see run.py)."""

    line: str
    python: Path  # runs dynamo.frontend / dynamo.mocker (and the script's clear step)
    dynlaunch: Path  # installed in the same venv: `dynamo.python` defaults to its interpreter
    script: Path

    @property
    def version(self) -> str:
        """ai-dynamo's version in that venv (what the report names)."""
        out = subprocess.run(
            [str(self.python), "-c", "import importlib.metadata as m; "
             "print(m.version('ai-dynamo'))"],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        return out.stdout.strip() or "?"


DYNAMO_1X = Dynamo("1.x", PYTHON, DYNLAUNCH, SCRIPT)
DYNAMO_05_VENV = REPO / ".venv-dynamo-0.5.0"  # bash scripts/setup.sh --dynamo 0.5.0
DYNAMO_05 = Dynamo(
    "0.5",
    DYNAMO_05_VENV / "bin" / "python",
    DYNAMO_05_VENV / "bin" / "dynlaunch",
    REPO / "benchmarks" / "reference_launch_05.sh",
)


class BenchError(Exception):
    """A repetition could not be measured (the reason goes into the report)."""


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


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise BenchError(f"pid {pid}: no VmRSS")


def cpu_ticks(pid: int) -> int:
    fields = stat_fields(pid)
    if fields is None:
        raise BenchError(f"pid {pid} is gone")
    return int(fields[11]) + int(fields[12])  # utime + stime


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
    dynamo: Dynamo = DYNAMO_1X

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
    # dynlaunch (an editable install) imports the launcher/ next to these benchmarks: a clean
    # clone of the repository (run.py from there) measures its own code, not the shared tree's
    return env | {"HOME": str(home), "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}


def sides_for(rep: int) -> tuple[str, ...]:
    """Alternate which side goes first, so drift on a shared machine hits both alike."""
    return SIDES if rep % 2 == 0 else SIDES[::-1]
