"""Every bad input through the real CLI, as a subprocess: one line on stderr, its exit code, and
nothing started. HOME (and TMPDIR) point into the test's own directory: no real state is touched.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from launcher import __version__
from testkit.net import held_port as kit_held_port

REPO = Path(__file__).resolve().parents[2]
# Variables of the caller's environment that would change what the CLI does.
STRIPPED = (
    "XDG_STATE_HOME",
    "XDG_CACHE_HOME",
    "ETCD_ENDPOINTS",
    "NATS_SERVER",
    "CUDA_VISIBLE_DEVICES",
)


def run_cli(
    args: list[str], home: Path, env: Mapping[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    base = {
        k: v for k, v in os.environ.items() if not k.startswith("DYNLAUNCH_") and k not in STRIPPED
    }
    base |= {"HOME": str(home), "TMPDIR": str(home)}
    return subprocess.run(
        [sys.executable, "-m", "launcher", *args],
        cwd=REPO,
        env=base | dict(env or {}),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def one_error_line(result: subprocess.CompletedProcess[str], code: int) -> str:
    """The single stderr line of a failed run (after checking the exit code)."""
    assert result.returncode == code, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("dynlaunch: error"), lines[0]
    assert result.stdout == ""
    return lines[0]


def processes_mentioning(text: str) -> list[str]:
    """Command lines of live processes whose argv contains ``text``."""
    found: list[str] = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in argv:
            found.append(f"{proc.name}: {argv}")
    return found


@pytest.fixture
def held_port() -> Iterator[int]:
    """A port this test process listens on (127.0.0.1)."""
    with kit_held_port() as port:
        yield port


@pytest.fixture
def closed_port() -> int:
    """A port nothing listens on (it was free a moment ago)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@dataclass(frozen=True)
class Case:
    """In args and needles, ``{tmp}`` is the test's directory, ``{config}`` the file made there."""

    args: tuple[str, ...]
    needles: tuple[str, ...]
    config: str | None = None  # YAML content of {config}
    env: Mapping[str, str] = field(default_factory=dict)
    code: int = 2


CASES = {
    "unknown-key-in-file": Case(
        ("-c", "{config}"),
        ("{config}: workers.bogus", "unknown config key"),
        config="workers:\n  bogus: 1\n",
    ),
    "wrong-type-in-file": Case(
        ("-c", "{config}"),
        ("{config}: workers.count", "'three'"),
        config="workers:\n  count: three\n",
    ),
    "missing-config-file": Case(("-c", "{tmp}/nope.yaml"), ("{tmp}/nope.yaml", "no such file")),
    "workers-0": Case(("--workers", "0"), ("--workers:", "(got 0)")),
    "tp-0": Case(("--tp", "0"), ("--tp:", "(got 0)")),
    "page-size-0": Case(("--page-size", "0"), ("--page-size:", "(got 0)")),
    "bad-namespace": Case(("--namespace", "bad/ns"), ("--namespace:", "'bad/ns'")),
    "http-port-70000": Case(("--http-port", "70000"), ("--http-port:", "65535", "70000")),
    "model-path": Case(("--model-path", "./no/such/dir/x"), ("model.path", "'./no/such/dir/x'")),
    "workers-abc": Case(("--workers", "abc"), ("--workers",)),
    "env-wrong-type": Case(
        (), ("DYNLAUNCH_WORKERS__COUNT:", "'abc'"), env={"DYNLAUNCH_WORKERS__COUNT": "abc"}
    ),
}


def _fill(text: str, tmp_path: Path) -> str:
    return text.replace("{tmp}", str(tmp_path)).replace("{config}", str(tmp_path / "bad.yaml"))


def _run_case(case: Case, command: list[str], tmp_path: Path, home: Path) -> str:
    if case.config is not None:
        (tmp_path / "bad.yaml").write_text(case.config, encoding="utf-8")
    args = [*command, *(_fill(a, tmp_path) for a in case.args)]
    line = one_error_line(run_cli(args, home, case.env), case.code)
    for needle in case.needles:
        assert _fill(needle, tmp_path) in line
    return line


@pytest.mark.parametrize("name", list(CASES))
def test_plan_bad_input(name: str, tmp_path: Path, home: Path) -> None:
    _run_case(CASES[name], ["plan", "mocker"], tmp_path, home)


UP_CASES = ["unknown-key-in-file", "workers-0", "bad-namespace", "model-path", "env-wrong-type"]


@pytest.mark.parametrize("name", UP_CASES)
def test_up_bad_input_starts_nothing(name: str, tmp_path: Path, home: Path) -> None:
    state = tmp_path / "state"
    _run_case(CASES[name], ["up", "mocker", "--state-dir", str(state)], tmp_path, home)
    assert not (state / "logs").exists()
    assert not state.exists()
    assert processes_mentioning(str(state)) == []


@pytest.mark.parametrize("command", ["plan", "up"])
def test_http_port_in_use_names_the_pid(
    command: str, tmp_path: Path, home: Path, held_port: int
) -> None:
    state = tmp_path / "state"
    args = [command, "mocker", "--http-port", str(held_port), "--state-dir", str(state)]
    line = one_error_line(run_cli(args, home), 2)
    assert "--http-port" in line
    assert f"port {held_port}" in line
    assert f"pid {os.getpid()}" in line
    assert not state.exists()


def test_more_gpus_than_available(home: Path) -> None:
    result = run_cli(
        ["plan", "sglang", "--workers", "2", "--tp", "2"], home, {"CUDA_VISIBLE_DEVICES": "0,1"}
    )
    line = one_error_line(result, 2)
    for needle in (
        "--workers 2 x --tp 2",
        "needs 4 GPU",
        "2 available",
        "CUDA_VISIBLE_DEVICES: 0,1",
    ):
        assert needle in line


def stand_in_nvidia_smi(where: Path, indices: str | None) -> dict[str, str]:
    """A PATH whose `nvidia-smi` (a real script, first on PATH) lists ``indices`` (one per line)
    or, for None, fails as it does without a driver: the host's own GPUs do not count."""
    where.mkdir()
    script = where / "nvidia-smi"
    body = "exit 9" if indices is None else f"printf '{indices}'"
    script.write_text(f"#!/bin/sh\n{body}\n")
    script.chmod(0o755)
    return {"PATH": f"{where}{os.pathsep}{os.environ.get('PATH', '')}"}


@pytest.mark.parametrize(
    ("listed", "needle"),
    [
        ("0\n1\n", "workers.gpus (--gpus) 3: GPU 3 does not exist (nvidia-smi lists 0,1)"),
        ("0\n1\n2\n3\n", "needs 2 GPU(s), 1 available (workers.gpus (--gpus): 3)"),
        (None, "needs 2 GPU(s), 1 available (workers.gpus (--gpus): 3)"),
    ],
    ids=["missing", "alone-for-tp-2", "no-driver"],
)
def test_asked_gpu_does_not_fit(home: Path, listed: str | None, needle: str) -> None:
    env = stand_in_nvidia_smi(home.parent / "bin", listed)
    result = run_cli(["plan", "sglang", "--gpus", "3", "--tp", "2"], home, env)
    assert needle in one_error_line(result, 2)


@pytest.mark.parametrize("command", ["plan", "up"])
def test_unknown_backend(command: str, home: Path) -> None:
    line = one_error_line(run_cli([command, "foo"], home), 2)
    assert "'foo'" in line
    assert "unknown backend" in line


def test_unreachable_external_etcd(tmp_path: Path, home: Path, closed_port: int) -> None:
    state = tmp_path / "state"
    endpoint = f"http://127.0.0.1:{closed_port}"
    env = {"ETCD_ENDPOINTS": endpoint, "DYNLAUNCH_INFRA__CONNECT_TIMEOUT_S": "1"}
    result = run_cli(["up", "mocker", "--state-dir", str(state)], home, env)
    line = one_error_line(result, 3)
    assert "etcd" in line
    assert endpoint in line
    assert processes_mentioning(str(state)) == []


# -- what works --------------------------------------------------------------------------------


def test_version(home: Path) -> None:
    result = run_cli(["--version"], home)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"dynlaunch {__version__}\n"


@pytest.mark.parametrize("command", ["plan", "up"])
def test_help_shows_examples(command: str, home: Path) -> None:
    result = run_cli([command, "--help"], home)
    assert result.returncode == 0, result.stderr
    assert "Examples" in result.stdout
    assert f"dynlaunch {command} mocker" in result.stdout


def test_plan_json(home: Path) -> None:
    result = run_cli(["plan", "mocker", "--workers", "2", "--json"], home)
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    assert plan["dynamo_version"]
    assert [p["name"] for p in plan["processes"]] == [
        "etcd",
        "nats",
        "frontend",
        "worker-0",
        "worker-1",
    ]
    for proc in plan["processes"]:
        assert {"name", "role", "argv", "env", "gpus", "ports"} <= proc.keys()
        assert proc["role"] in {"etcd", "nats", "frontend", "worker"}
        assert all(isinstance(a, str) for a in proc["argv"])
        assert all(isinstance(v, str) for v in proc["env"].values())
        assert all(isinstance(p, int) for p in proc["ports"].values())
    assert not (home / ".local").exists()  # plan writes no state


@pytest.mark.parametrize("as_json", [False, True])
def test_secrets_never_printed(as_json: bool, home: Path) -> None:
    args = ["plan", "mocker", *(["--json"] if as_json else []), "--", "--api-key", "sk-flag-123"]
    result = run_cli(args, home, {"DYNLAUNCH_WORKERS__ENV": "{HF_TOKEN: hf_abc}"})
    assert result.returncode == 0, result.stderr
    for secret in ("hf_abc", "sk-flag-123"):
        assert secret not in result.stdout
        assert secret not in result.stderr
    if as_json:
        worker = json.loads(result.stdout)["processes"][-1]
        assert worker["env"]["HF_TOKEN"] == "***"
        assert worker["argv"][-2:] == ["--api-key", "***"]
    else:
        assert "HF_TOKEN=***" in result.stdout
