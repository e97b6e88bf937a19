"""Children's output: each line to the terminal as `name | line`, and to a capped log file."""

from __future__ import annotations

import collections
import sys
import threading
from pathlib import Path
from typing import IO, TextIO

LOG_CAP_BYTES = 20 * 1024 * 1024  # then the file moves to NAME.log.1 and a new one starts
TAIL_LINES = 30

_console_lock = threading.Lock()


def console_line(name: str, width: int, text: str, stream: TextIO | None = None) -> None:
    out = stream or sys.stdout
    with _console_lock:
        try:
            out.write(f"{name:<{width}} | {text}\n")
            out.flush()
        except (OSError, ValueError):  # a closed terminal must not kill the launcher
            pass


class Relay:
    """Copies one child's merged stdout/stderr to the console and its log file, in a thread."""

    def __init__(self, name: str, width: int, log_path: Path, cap: int = LOG_CAP_BYTES) -> None:
        self.name = name
        self.width = width
        self.log_path = log_path
        self.cap = cap
        self.tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
        self._thread: threading.Thread | None = None

    def start(self, pipe: IO[bytes]) -> None:
        self._thread = threading.Thread(
            target=self._run, args=(pipe,), name=f"relay-{self.name}", daemon=True
        )
        self._thread.start()

    def join(self, timeout: float) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self, pipe: IO[bytes]) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - reopened on rotation
        try:
            for raw in iter(pipe.readline, b""):
                text = raw.decode("utf-8", errors="replace").rstrip("\r\n")
                self.tail.append(text)
                console_line(self.name, self.width, text)
                log.write(raw)
                log.flush()
                if log.tell() > self.cap:
                    log.close()
                    self.log_path.replace(self.log_path.with_name(self.log_path.name + ".1"))
                    log = open(self.log_path, "ab")  # noqa: SIM115
        finally:
            log.close()
            pipe.close()
