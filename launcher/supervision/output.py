"""Children's output and dynlaunch's own log lines, written so that nothing ever blocks on them.

A `Relay` thread per child only reads the child's merged stdout/stderr pipe, so the child never
blocks on a full pipe. Each line goes to the child's tail (kept for a start-up failure report),
the fatal-line check, the console writer (`name | line` on fd 1) and the child's log-file writer.
Every writer is a thread behind a bounded queue: when its stream cannot keep up (a paused
terminal, `| less`, a full or failing disk), lines are dropped and counted, and one line reports
the count when writing works again. dynlaunch's own log lines go to fd 2 the same way
(`install_logging`). At exit, queued lines get at most `EXIT_DRAIN_S` to be written.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import logging
import os
import re
import select
import threading
import time
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import IO

log = logging.getLogger(__name__)

LOG_CAP_BYTES = 20 * 1024 * 1024  # then the file moves to NAME.log.1 and a new one starts
TAIL_LINES = 30
LINE_MAX = 64 * 1024  # a longer "line" is handed on in pieces
QUEUE_BYTES = 4 * 1024 * 1024  # per writer; beyond it lines are dropped
EXIT_DRAIN_S = 1.0  # at exit, the longest wait for queued lines to be written
RETRY_S = 1.0  # a failing log file is tried again after this long
REPORT_S = 5.0  # a stream that stays behind still reports its drops this often

# Lines that certainly mean the process cannot serve (checked on every line of every child), each
# with what it means for the user.
FATAL_LINES: dict[str, str] = {
    # The frontend cannot build a chat pipeline for the model (ai-dynamo 1.4.2: the model dir
    # has no tokenizer.json): "Error adding model from discovery ... error="chat pipeline
    # requires preprocessed routing"", again at every reconciliation retry.
    r"requires preprocessed routing": "the model dir has no tokenizer.json",
    # The same with a tokenizer.json but no tokenizer_config.json (no chat template):
    # "Error adding model from discovery ... error="prompt_formatter_from_mdc: MDC does not
    # contain a prompt formatter"".
    r"MDC does not contain a prompt formatter": "the model dir has no chat template "
    "(tokenizer_config.json)",
    # Dynamo 0.5's frontend binds its response stream on the host's first address of scope
    # global and panics when there is none: "called `Result::unwrap()` on an `Err` value:
    # LocalIpAddressNotFound" (seen with only `lo` in a network namespace).
    r"LocalIpAddressNotFound": "Dynamo 0.5 needs an address of scope global on this host; "
    "see README, Dynamo versions",
    # Not listed: the mocker without a tokenizer logs only WARN lines ("error loading tokenizer
    # from ModelDeploymentCard ... does not have a tokenizer") and registers and serves anyway.
}
FATAL_PATTERNS: tuple[re.Pattern[str], ...] = tuple(re.compile(p) for p in FATAL_LINES)


def fatal_meaning(line: str) -> str | None:
    """What a fatal line means for the user, when FATAL_LINES knows it."""
    return next((what for p, what in FATAL_LINES.items() if re.search(p, line)), None)


class _Pump:
    """A daemon thread that writes queued chunks; `put` never blocks: past `capacity` bytes of
    backlog, a chunk is dropped and counted."""

    def __init__(self, thread_name: str, capacity: int) -> None:
        self._items: collections.deque[bytes] = collections.deque()
        self._size = 0
        self._capacity = capacity
        self._cond = threading.Condition()
        self._busy = False
        self._closing = False
        self._put_seq = 0
        self._done_seq = 0
        self.dropped = 0  # chunks dropped in all (never reset)
        self._unreported = 0  # dropped since the last report
        self._first_unreported = 0.0
        self._thread = threading.Thread(target=self._run, name=thread_name, daemon=True)
        self._thread.start()

    def put(self, data: bytes, wait_s: float = 0.0) -> bool:
        """Queue ``data``; False when it was dropped. ``wait_s`` > 0: also wait up to that long
        for it to be written, and say whether it was."""
        with self._cond:
            if self._closing:
                return False
            if self._size + len(data) > self._capacity:
                self._count_drop_locked(1)
                return False
            self._items.append(data)
            self._size += len(data)
            self._put_seq += 1
            seq = self._put_seq
            self._cond.notify_all()
            if wait_s > 0:
                return self._cond.wait_for(lambda: self._done_seq >= seq, wait_s)
        return True

    def drain(self, timeout: float) -> bool:
        """Wait up to ``timeout`` for the queue to be written; True when it was."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._items and not self._busy, timeout)

    def close(self, timeout: float) -> bool:
        """Stop taking chunks; write what is queued (and `_finish`) within ``timeout``. True
        when all was written; a thread stuck on a stalled stream is left behind (a daemon)."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _count_drop_locked(self, count: int) -> None:
        self.dropped += count
        if not self._unreported:
            self._first_unreported = time.monotonic()
        self._unreported += count

    def _count_drop(self, count: int = 1) -> None:
        with self._cond:
            self._count_drop_locked(count)

    def _take_unreported(self, force: bool) -> int:
        """The drops to report now: when the backlog is written (or ``force``), or when the
        stream has stayed behind for `REPORT_S`."""
        with self._cond:
            due = force or not self._items
            if not due and time.monotonic() - self._first_unreported < REPORT_S:
                return 0
            count, self._unreported = self._unreported, 0
            return count

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: bool(self._items) or self._closing)
                if not self._items:
                    break
                data = self._items.popleft()
                self._size -= len(data)
                self._busy = True
            try:
                self._write(data)
            except Exception:  # noqa: BLE001 - a writer thread must outlive any surprise
                self._count_drop()
            finally:
                with self._cond:
                    self._busy = False
                    self._done_seq += 1
                    self._cond.notify_all()
        self._finish()

    def _write(self, data: bytes) -> None:
        raise NotImplementedError

    def _finish(self) -> None:
        """At close, once the queue is written."""


def _write_all(fd: int, data: bytes) -> None:
    """Write all of ``data`` to ``fd`` (raises OSError)."""
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view) :]
        except BlockingIOError:  # someone made the stream non-blocking: wait for room
            select.select([], [fd], [], 1.0)


class StreamWriter(_Pump):
    """Lines to a console stream (fd 1 or 2). A closed stream (EPIPE, EBADF, EIO) ends all
    writing silently (`| head`); a blocked one drops lines and then says how many."""

    def __init__(self, fd: int, what: str, capacity: int = QUEUE_BYTES) -> None:
        self.fd = fd
        self.what = what  # "{stream} was blocked; N {what} dropped"
        self.dead = False
        super().__init__(f"writer-fd{fd}", capacity)

    def put(self, data: bytes, wait_s: float = 0.0) -> bool:
        return False if self.dead else super().put(data, wait_s)

    def _write(self, data: bytes) -> None:
        self._out(data)
        dropped = self._take_unreported(force=False)
        if dropped:
            self._note(dropped)

    def _finish(self) -> None:
        dropped = self._take_unreported(force=True)
        if dropped:
            self._note(dropped)

    def _note(self, dropped: int) -> None:
        stream = {1: "console", 2: "stderr"}.get(self.fd, f"fd {self.fd}")
        self._out(f"dynlaunch: {stream} was blocked; {dropped} {self.what} dropped\n".encode())

    def _out(self, data: bytes) -> None:
        if self.dead:
            return
        try:
            _write_all(self.fd, data)
        except OSError:  # closed (`| head`), a hung-up terminal: nobody to tell
            self.dead = True


class LogFile(_Pump):
    """A child's log file, capped at ``cap`` bytes with one `.1` file. A write error (ENOSPC,
    EIO, EROFS...) drops the line and counts it, and the file is tried again `RETRY_S` later;
    one warning when that starts, one when writes work again (and a note in the file)."""

    def __init__(self, name: str, path: Path, cap: int = LOG_CAP_BYTES) -> None:
        self.name = name
        self.path = path
        self.cap = cap
        self._fd: int | None = None
        self._bytes = 0
        self._error: str | None = None  # why writes fail now
        self._retry_at = 0.0
        self._partial = False  # the last write stopped inside a line
        self._warned_behind = False
        super().__init__(f"log-{name}", QUEUE_BYTES)

    def _write(self, data: bytes) -> None:
        if self._error is not None and time.monotonic() < self._retry_at:
            self._count_drop()
            return
        dropped = self._take_unreported(force=True)
        note = b""
        if dropped:
            why = self._error or "writes fell behind"
            note = f"dynlaunch: {dropped} lines dropped here ({why})\n".encode()
        try:
            if self._fd is None:
                self._open()
            self._append((b"\n" if self._partial else b"") + note + data)
            if self._bytes > self.cap:
                self._rotate()
        except OSError as err:
            self._fail(err, dropped)
            return
        if self._error is not None:
            log.warning("%s: writing %s again; %d lines were dropped", self.name, self.path,
                        dropped)  # fmt: skip
            self._error = None
        elif dropped and not self._warned_behind:
            self._warned_behind = True
            log.warning("%s: %s fell behind; %d lines dropped (noted in the file)", self.name,
                        self.path, dropped)  # fmt: skip

    def _append(self, data: bytes) -> None:
        assert self._fd is not None
        view = memoryview(data)
        done = 0
        try:
            while done < len(view):
                done += os.write(self._fd, view[done:])
        finally:
            self._bytes += done
            if done:
                self._partial = done < len(view)

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
        self._fd = os.open(self.path, flags, 0o600)  # private, as the state dir (0700)
        self._bytes = os.fstat(self._fd).st_size

    def _rotate(self) -> None:
        self._close_fd()
        os.replace(self.path, self.path.with_name(self.path.name + ".1"))
        self._partial = False
        self._open()

    def _close_fd(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)

    def _fail(self, err: OSError, lost_before: int) -> None:
        self._count_drop(1)
        with self._cond:  # the taken count goes back, to be reported with the rest
            self._unreported += lost_before
        if self._error is None:
            self._error = err.strerror or str(err)
            log.warning("%s: cannot write %s (%s); dropping its log lines", self.name, self.path,
                        self._error)  # fmt: skip
        self._close_fd()  # reopened at the retry: a new file if it was removed
        self._retry_at = time.monotonic() + RETRY_S

    def _finish(self) -> None:
        self._close_fd()


class Relay:
    """Reads one child's merged stdout/stderr and hands each line on, never blocking."""

    def __init__(
        self,
        name: str,
        width: int,
        log_path: Path,
        cap: int = LOG_CAP_BYTES,
        *,
        console: StreamWriter | None = None,
        fatal_patterns: Sequence[re.Pattern[str]] = FATAL_PATTERNS,
    ) -> None:
        self.name = name
        self.width = width
        self.log_path = log_path
        self.cap = cap
        self.tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
        self.fatal: str | None = None  # the first line that matched a fatal pattern
        self.fatal_patterns = tuple(fatal_patterns)
        self._console = console
        self._log: LogFile | None = None
        self._thread: threading.Thread | None = None

    @property
    def log_dropped(self) -> int:
        return self._log.dropped if self._log is not None else 0

    def start(self, pipe: IO[bytes]) -> None:
        """Relay ``pipe`` (the child's stdout) until its end; called again at each restart."""
        if self._console is None:
            self._console = console()
        if self._log is None:
            self._log = LogFile(self.name, self.log_path, self.cap)
            _register(self._log)
        args = (pipe, self._console, self._log)
        self._thread = threading.Thread(
            target=self._run, args=args, name=f"relay-{self.name}", daemon=True
        )
        self._thread.start()

    def join(self, timeout: float) -> None:
        """Wait for the pipe's end, then for the log file's backlog, ``timeout`` in all."""
        deadline = time.monotonic() + timeout
        if self._thread is not None:
            self._thread.join(timeout)
        if self._log is not None:
            self._log.drain(max(0.0, deadline - time.monotonic()))

    def _run(self, pipe: IO[bytes], out: StreamWriter, logfile: LogFile) -> None:
        prefix = f"{self.name:<{self.width}} | "
        try:
            for raw in iter(partial(pipe.readline, LINE_MAX), b""):
                text = raw.decode("utf-8", errors="replace").rstrip("\r\n")
                self.tail.append(text)
                if self.fatal is None and any(p.search(text) for p in self.fatal_patterns):
                    self.fatal = text
                out.put(f"{prefix}{text}\n".encode("utf-8", errors="replace"))
                logfile.put(raw)
        except (OSError, ValueError):  # the pipe was closed under us
            pass
        finally:
            pipe.close()


_writers_lock = threading.Lock()
_streams: dict[int, StreamWriter] = {}  # fd -> the process's one writer to it
_pumps: list[_Pump] = []


def _register(pump: _Pump) -> None:
    with _writers_lock:
        _pumps.append(pump)


def _stream(fd: int, what: str) -> StreamWriter:
    with _writers_lock:
        if fd not in _streams:
            _streams[fd] = StreamWriter(fd, what)
            _pumps.append(_streams[fd])
        return _streams[fd]


def console() -> StreamWriter:
    """The process's one writer of children's lines to fd 1."""
    return _stream(1, "lines")


class NonBlockingHandler(logging.Handler):
    """A logging handler that queues lines for a `StreamWriter`, dropped when it is full.
    Each line waits up to ``wait_s`` to be written, so that the order with direct writes to
    the stream holds while it flows; a stalled stream costs that wait once, then none until
    it has caught up."""

    def __init__(self, writer: StreamWriter, wait_s: float = 0.2) -> None:
        super().__init__()
        self.writer = writer
        self.wait_s = wait_s
        self._stalled = False

    def emit(self, record: logging.LogRecord) -> None:
        try:
            data = (self.format(record) + "\n").encode("utf-8", errors="replace")
        except Exception:  # noqa: BLE001 - logging's own contract
            self.handleError(record)
            return
        if self._stalled and self.writer.drain(0.0):
            self._stalled = False
        written = self.writer.put(data, wait_s=0.0 if self._stalled else self.wait_s)
        if not self._stalled:
            self._stalled = not written

    def flush(self) -> None:
        self.writer.drain(0.0 if self._stalled else self.wait_s)


def install_logging(level: int, fmt: str, datefmt: str) -> None:
    """dynlaunch's own log lines to stderr through a non-blocking writer (unless the root
    logger has handlers already), and a bounded drain of every writer at exit."""
    root = logging.getLogger()
    if root.handlers:
        return
    handler = NonBlockingHandler(_stream(2, "log lines"))
    handler.setFormatter(logging.Formatter(fmt, datefmt))
    root.addHandler(handler)
    root.setLevel(level)
    atexit.register(shutdown)


def shutdown(timeout: float = EXIT_DRAIN_S) -> bool:
    """Write what is queued, within ``timeout`` for all writers; True when all was written.
    A writer stuck on a stalled stream is left behind (its thread is a daemon)."""
    deadline = time.monotonic() + timeout
    with _writers_lock:
        pumps = list(_pumps)
    done = True
    for pump in pumps:
        done = pump.close(max(0.0, deadline - time.monotonic())) and done
    return done
