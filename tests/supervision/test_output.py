"""Output never blocks a child: the relay against real children, a console pipe nobody reads,
a log file on a full or read-only file system, a closed console, and the fatal-line check."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from launcher.supervision.output import FATAL_PATTERNS, NonBlockingHandler, Relay, StreamWriter
from testkit.fs import fill, tmpfs

LINES = 20_000  # ~2 MB: far more than a pipe (64 KiB) and the writer's queue below hold
QUEUE = 64 * 1024


def _printer(count: int, delay: float = 0.0, text: str = "line") -> list[str]:
    code = (
        "import sys, time\n"
        f"for i in range({count}):\n"
        f"    print(f'{text} {{i:06d}} ' + 'x' * 80, flush={delay > 0})\n"
        f"    time.sleep({delay})\n"
    )
    return [sys.executable, "-c", code]


@pytest.fixture
def quiet() -> Iterator[StreamWriter]:
    """A console writer to /dev/null."""
    fd = os.open(os.devnull, os.O_WRONLY)
    writer = StreamWriter(fd, "lines")
    yield writer
    writer.close(5)
    os.close(fd)


def _run_child(relay: Relay, argv: list[str]) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)  # fmt: skip
    assert proc.stdout is not None
    relay.start(proc.stdout)
    return proc


def _finishes(proc: subprocess.Popen[bytes], timeout: float = 60.0) -> bool:
    """The child ran to its end: it was never left blocked on a full pipe."""
    try:
        return proc.wait(timeout) == 0
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return False


def _poll(predicate: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out after {timeout}s waiting for {what}"
        time.sleep(0.05)


def _read_all(fd: int, until: bytes, timeout: float) -> bytes:
    """Read ``fd`` until ``until`` shows up (or the time is over)."""
    got = bytearray()
    deadline = time.monotonic() + timeout
    os.set_blocking(fd, False)
    while until not in got and time.monotonic() < deadline:
        try:
            chunk = os.read(fd, 1 << 16)
        except BlockingIOError:
            time.sleep(0.02)
            continue
        if not chunk:
            break
        got += chunk
    return bytes(got)


def test_a_console_nobody_reads_never_blocks_the_child(tmp_path: Path) -> None:
    read_end, write_end = os.pipe()
    try:
        out = StreamWriter(write_end, "lines", capacity=QUEUE)
        relay = Relay("talker", 8, tmp_path / "talker.log", console=out)
        proc = _run_child(relay, _printer(LINES))
        assert _finishes(proc), "the child blocked on its output"
        relay.join(30)
        assert out.dropped > 0
        logged = (tmp_path / "talker.log").read_text().splitlines()
        assert len(logged) == LINES  # the log file got every line, the console could not
        assert logged[-1].startswith(f"line {LINES - 1:06d}")

        shown = _read_all(read_end, b"lines dropped\n", 60).decode()  # the console flows again
        notes = re.findall(r"dynlaunch: fd \d+ was blocked; (\d+) lines dropped", shown)
        assert notes, shown[-500:]
        relayed = [ln for ln in shown.splitlines() if ln.startswith("talker   | line ")]
        assert sum(map(int, notes)) == out.dropped
        assert len(relayed) + out.dropped == LINES
    finally:
        os.close(read_end)
        with contextlib.suppress(OSError):
            os.close(write_end)


def test_a_closed_console_is_ignored_and_the_child_runs_on(tmp_path: Path) -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)  # `dynlaunch up | head` after head has exited: EPIPE
    try:
        out = StreamWriter(write_end, "lines", capacity=QUEUE)
        relay = Relay("talker", 8, tmp_path / "talker.log", console=out)
        assert _finishes(_run_child(relay, _printer(2000)))
        relay.join(30)
        _poll(lambda: out.dead, 10, "the writer to notice the closed pipe")
        assert len((tmp_path / "talker.log").read_text().splitlines()) == 2000
    finally:
        os.close(write_end)


def test_the_log_rotates_at_its_cap(tmp_path: Path, quiet: StreamWriter) -> None:
    relay = Relay("talker", 8, tmp_path / "talker.log", cap=20_000, console=quiet)
    assert _finishes(_run_child(relay, _printer(1000)))  # ~90 kB
    relay.join(30)
    current = tmp_path / "talker.log"
    older = tmp_path / "talker.log.1"
    assert older.exists()
    assert 20_000 < older.stat().st_size < 21_000
    assert current.stat().st_size <= 21_000
    assert current.read_text().splitlines()[-1].startswith("line 000999")


@pytest.mark.parametrize("fault", ["full", "read-only"])
def test_a_log_file_that_cannot_be_written_never_blocks_the_child(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, fault: str, quiet: StreamWriter
) -> None:
    caplog.set_level(logging.WARNING, logger="launcher.supervision.output")
    name = f"w{uuid.uuid4().hex[:6]}"
    with tmpfs(tmp_path / "fs", "1m") as fs:
        log_path = fs / "logs" / f"{name}.log"
        log_path.parent.mkdir()
        if fault == "full":
            filler = fill(fs, chunk=65536)
        else:
            subprocess.run(["mount", "-o", "remount,ro", str(fs)], check=True)
        relay = Relay(name, 8, log_path, console=quiet)
        assert _finishes(_run_child(relay, _printer(LINES))), "the child blocked"
        relay.join(30)
        assert relay.tail[-1].startswith(f"line {LINES - 1:06d}")  # the relay read it all
        _poll(lambda: relay.log_dropped >= LINES // 2, 30, "the log lines to be dropped")
        warned = [r.getMessage() for r in caplog.records if name in r.getMessage()]
        reason = "No space left on device" if fault == "full" else "Read-only file system"
        assert warned == [f"{name}: cannot write {log_path} ({reason}); dropping its log lines"]

        # Writable again: the next start of the child is logged, and the gap is told.
        if fault == "full":
            filler.unlink()
        else:
            subprocess.run(["mount", "-o", "remount,rw", str(fs)], check=True)
        assert _finishes(_run_child(relay, _printer(30, delay=0.1, text="again")))
        relay.join(30)
        _poll(lambda: "again 000029" in log_path.read_text(), 30, "the log to be written again")
        text = log_path.read_text()
        found = re.search(rf"dynlaunch: (\d+) lines dropped here \({reason}\)", text)
        assert found, text[-300:]
        assert int(found.group(1)) == relay.log_dropped
        again = [r.getMessage() for r in caplog.records if name in r.getMessage()][1:]
        assert again == [
            f"{name}: writing {log_path} again; {relay.log_dropped} lines were dropped"
        ]


def test_log_lines_to_a_stalled_stderr_never_block_the_caller() -> None:
    read_end, write_end = os.pipe()
    logger = logging.getLogger(f"test.output.{uuid.uuid4().hex}")
    logger.propagate = False
    handler = NonBlockingHandler(StreamWriter(write_end, "log lines", capacity=QUEUE))
    logger.addHandler(handler)
    try:
        done = threading.Event()

        def chatter() -> None:
            for i in range(LINES):
                logger.warning("lifecycle line %06d %s", i, "y" * 80)
            done.set()

        threading.Thread(target=chatter, daemon=True).start()
        assert done.wait(60), "logging blocked on a stderr nobody reads"
        shown = _read_all(read_end, b"log lines dropped\n", 60).decode()
        notes = re.findall(r"dynlaunch: fd \d+ was blocked; (\d+) log lines dropped", shown)
        assert notes
        lines = [ln for ln in shown.splitlines() if ln.startswith("lifecycle line ")]
        assert len(lines) + sum(map(int, notes)) == LINES
    finally:
        logger.removeHandler(handler)
        os.close(read_end)
        os.close(write_end)


FRONTEND_NO_TOKENIZER = (
    "2026-11-28T21:32:55.255245Z ERROR dynamo_llm::discovery::watcher: Error adding model from "
    'discovery model_name="tiny" namespace="ntok" error="chat pipeline requires preprocessed '
    'routing"'
)
FRONTEND_NO_TOKENIZER_CONFIG = (
    "2026-11-28T21:33:46.470779Z ERROR dynamo_llm::discovery::watcher: Error adding model from "
    'discovery model_name="tiny" namespace="ntok2" error="prompt_formatter_from_mdc: MDC does '
    'not contain a prompt formatter"'
)
MOCKER_NO_TOKENIZER_WARNING = (  # the mocker itself goes on serving: not fatal
    "2026-11-28T21:32:55.236536Z  WARN dynamo_llm::backend: error loading tokenizer from "
    "ModelDeploymentCard err=ModelDeploymentCard for 'tiny' does not have a tokenizer."
)


def _say(lines: list[str]) -> list[str]:
    code = "import sys\nfor line in sys.argv[1:]:\n    print(line, flush=True)\n"
    return [sys.executable, "-c", code, *lines]


@pytest.mark.parametrize("fatal", [FRONTEND_NO_TOKENIZER, FRONTEND_NO_TOKENIZER_CONFIG])
def test_the_first_fatal_line_is_recorded(tmp_path: Path, fatal: str, quiet: StreamWriter) -> None:
    relay = Relay("frontend", 8, tmp_path / "frontend.log", console=quiet)
    lines = ["INFO starting", MOCKER_NO_TOKENIZER_WARNING, fatal, fatal.replace("21:3", "22:3")]
    assert _finishes(_run_child(relay, _say(lines)))
    relay.join(30)
    assert relay.fatal == fatal


def test_warnings_are_not_fatal_and_patterns_can_be_given(
    tmp_path: Path, quiet: StreamWriter
) -> None:
    plain = Relay("worker-0", 8, tmp_path / "a.log", console=quiet)
    assert _finishes(_run_child(plain, _say(["INFO up", MOCKER_NO_TOKENIZER_WARNING])))
    plain.join(30)
    assert plain.fatal is None
    assert FATAL_PATTERNS  # the default list is in use above

    custom = Relay("worker-0", 8, tmp_path / "b.log", console=quiet,
                   fatal_patterns=[re.compile(r"does not have a tokenizer")])  # fmt: skip
    assert _finishes(_run_child(custom, _say(["INFO up", MOCKER_NO_TOKENIZER_WARNING])))
    custom.join(30)
    assert custom.fatal == MOCKER_NO_TOKENIZER_WARNING
