"""The run's tag, and a dead-man switch that kills the run's processes if dynlaunch dies.

`python -m launcher.supervision.deadman RUN_ID` reads its stdin, a pipe whose other end only
dynlaunch holds. When dynlaunch is gone (even by SIGKILL) the read returns, and every process that
still carries ``DYNLAUNCH_RUN_ID=RUN_ID`` gets SIGTERM, then SIGKILL 3 s later. Stdlib only: it
starts fast.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from pathlib import Path

RUN_TAG = "DYNLAUNCH_RUN_ID"
GRACE_S = 3.0


def tagged_pids(run_id: str) -> list[int]:
    """Live (non-zombie) processes whose environment carries this run's tag."""
    needle = f"{RUN_TAG}={run_id}".encode()
    found: list[int] = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            tagged = needle in (proc / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if tagged and alive(int(proc.name)):
            found.append(int(proc.name))
    return found


def alive(pid: int) -> bool:
    """True for a live process; a zombie (exited, not yet reaped by its parent) is not."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def kill_all(pids: list[int], sig: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def main(argv: list[str]) -> int:
    run_id = argv[1]
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # only the pipe's end tells us to act
    while sys.stdin.buffer.read(4096):
        pass
    kill_all(tagged_pids(run_id), signal.SIGTERM)
    deadline = time.monotonic() + GRACE_S
    while tagged_pids(run_id) and time.monotonic() < deadline:
        time.sleep(0.1)
    kill_all(tagged_pids(run_id), signal.SIGKILL)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
