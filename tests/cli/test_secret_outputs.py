"""Secrets never shown, over every name README calls secret (upper and lower case) and every path
that prints: `plan` text and `--json` (env values, secret flags in argv), config errors (the
"(got ...)" part), `render k8s` (refused, the value not echoed), and the supervisor's `started:`
line. `up` and `status` against a running stack are in tests/integration/test_secret_up.py.

Every table carries controls: names and flags that are not secret are shown, so a test cannot
pass by hiding everything, or by printing nothing.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_cli_errors import one_error_line, run_cli

from launcher.config import load_config
from launcher.errors import ConfigError
from launcher.k8s.render import dump_yaml, render
from launcher.plan import ProcessSpec
from launcher.supervision.supervisor import Supervisor

# README: `*TOKEN*`, `*SECRET*`, `*PASSWORD*`, `*API_KEY*`; launcher/names.py adds their kin.
SECRET_BASES = (
    "HF_TOKEN",
    "TOKEN",
    "CLIENT_SECRET",
    "SECRET_ACCESS",
    "NATS_PASSWORD",
    "DB_PASSWD",
    "GCP_CREDENTIALS",
    "OPENAI_API_KEY",
    "SIGNING_KEY",
    "KEY",
)
SECRET_NAMES = tuple(n for base in SECRET_BASES for n in (base, base.lower(), base.title()))
# Look alike, are not secret: shown as they are.
PLAIN_NAMES = ("MODEL_HOME", "MONKEY", "KEYRING_DIR", "model_dir")
# Engine args: (flag as given, how its value is passed).
SECRET_FLAGS = (
    "--api-key",
    "--hf-token",
    "--NATS-PASSWORD",
    "--client_secret",
    "--passwd",
    "--aws-credentials",
    "--apikey",
    "--Secret",
)
PLAIN_FLAGS = ("--max-total-tokens", "--tokenizer-path", "--key-size")


def _value(name: str) -> str:
    return f"s3cr3t-{name.lower().replace('_', '')}-{len(name)}{name[:1]}q"


def _plain(name: str) -> str:
    return f"shown-{name.lower()}-ok"


def _engine_args() -> tuple[list[str], list[str], list[str]]:
    """Engine args (half as `--flag value`, half as `--flag=value`), their secret values, and
    the plain flags' values."""
    args: list[str] = []
    secrets, plain = [], []
    for n, flag in enumerate(SECRET_FLAGS):
        value = f"flagsecret{n}x{flag.strip('-').lower()}"
        args += [f"{flag}={value}"] if n % 2 else [flag, value]
        secrets.append(value)
    for n, flag in enumerate(PLAIN_FLAGS):
        value = f"plainflag{n}"
        args += [flag, value]
        plain.append(value)
    return args, secrets, plain


def _config(tmp_path: Path) -> Path:
    env = {n: _value(n) for n in SECRET_NAMES} | {n: _plain(n) for n in PLAIN_NAMES}
    path = tmp_path / "secrets.yaml"
    path.write_text(yaml.safe_dump({"frontend": {"env": env}, "workers": {"env": env}}))
    return path


def _plan(tmp_path: Path, *extra: str) -> tuple[str, list[str], list[str]]:
    args, secrets, plain = _engine_args()
    home = tmp_path / "home"
    home.mkdir()
    done = run_cli(["plan", "mocker", "-c", str(_config(tmp_path)), *extra, "--", *args], home)
    assert done.returncode == 0, done.stderr
    return done.stdout + done.stderr, secrets, plain


def test_plan_text_hides_every_secret_name_and_flag(tmp_path: Path) -> None:
    out, flag_secrets, flag_plain = _plan(tmp_path)
    for name in SECRET_NAMES:
        assert _value(name) not in out, name
        assert f"{name}=***" in out, name
    for name in PLAIN_NAMES:
        assert f"{name}={_plain(name)}" in out, name
    for value in flag_secrets:
        assert value not in out
    for value in flag_plain:
        assert value in out


def test_plan_json_hides_every_secret_name_and_flag(tmp_path: Path) -> None:
    out, flag_secrets, flag_plain = _plan(tmp_path, "--json")
    for value in [*map(_value, SECRET_NAMES), *flag_secrets]:
        assert value not in out
    plan = json.loads(out)
    procs = {p["role"]: p for p in plan["processes"]}
    for role in ("frontend", "worker"):
        env = procs[role]["env"]
        assert {n: env[n] for n in SECRET_NAMES} == dict.fromkeys(SECRET_NAMES, "***"), role
        assert {n: env[n] for n in PLAIN_NAMES} == {n: _plain(n) for n in PLAIN_NAMES}, role
    argv = procs["worker"]["argv"]
    for n, flag in enumerate(SECRET_FLAGS):
        if n % 2:
            assert f"{flag}=***" in argv, flag
        else:
            assert argv[argv.index(flag) + 1] == "***", flag
    for flag, value in zip(PLAIN_FLAGS, flag_plain, strict=True):
        assert argv[argv.index(flag) + 1] == value


# -- config errors: the "(got ...)" part -------------------------------------------------------


def _load(data: dict[str, Any], tmp_path: Path) -> None:
    path = tmp_path / f"bad-{uuid.uuid4().hex[:6]}.yaml"
    path.write_text(yaml.safe_dump(data))
    load_config("mocker", path=str(path), environ={}, flags={}, flag_names={})


@pytest.mark.parametrize("name", SECRET_NAMES)
def test_a_config_error_never_echoes_a_secret_value(name: str, tmp_path: Path) -> None:
    value = _value(name)
    with pytest.raises(ConfigError) as err:
        _load({"workers": {"env": {name: [value]}}}, tmp_path)
    assert f"workers.env.{name}" in str(err.value)
    assert value not in str(err.value)
    assert "(got" not in str(err.value)


@pytest.mark.parametrize("name", PLAIN_NAMES)
def test_a_config_error_echoes_a_plain_value(name: str, tmp_path: Path) -> None:
    """The control: the same error on a name that is not secret shows what it got."""
    with pytest.raises(ConfigError, match=re.escape(f"(got ['{_plain(name)}'])")):
        _load({"workers": {"env": {name: [_plain(name)]}}}, tmp_path)


def test_a_config_error_on_a_secret_config_key_hides_its_value(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=re.escape("k8s.hf_secret")) as err:
        _load({"k8s": {"hf_secret": ["hf_abc123xyz"]}}, tmp_path)
    assert "hf_abc123xyz" not in str(err.value)


def test_config_errors_through_the_cli(tmp_path: Path) -> None:
    """The real CLI, from a YAML file, from a DYNLAUNCH_ variable, and with credentials in an
    endpoint's URL: one line, exit 2, no secret."""
    home = tmp_path / "home"
    home.mkdir()
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"workers": {"env": {"nats_password": ["pw123secret"]}}}))
    line = one_error_line(run_cli(["plan", "mocker", "-c", str(path)], home), 2)
    assert "workers.env.nats_password" in line
    assert "pw123secret" not in line
    env = {"DYNLAUNCH_WORKERS__ENV__HF_TOKEN": "[hf_secret123]"}
    line = one_error_line(run_cli(["plan", "mocker"], home, env), 2)
    assert "HF_TOKEN" in line
    assert "hf_secret123" not in line
    env = {"DYNLAUNCH_INFRA__NATS__URL": "nats://admin:hunter2pw@127.0.0.1:notaport"}
    line = one_error_line(run_cli(["plan", "mocker"], home, env), 2)
    assert "hunter2pw" not in line
    assert "admin" not in line


# -- render k8s: refused, the value never echoed ------------------------------------------------


def _k8s_config(tmp_path: Path, section: str, body: dict[str, Any]) -> Path:
    path = tmp_path / f"k8s-{uuid.uuid4().hex[:6]}.yaml"
    path.write_text(yaml.safe_dump({section: body}))
    return path


@pytest.mark.parametrize("name", SECRET_NAMES)
def test_render_k8s_refuses_a_secret_env_and_never_echoes_it(name: str, tmp_path: Path) -> None:
    path = _k8s_config(tmp_path, "workers", {"env": {name: _value(name)}})
    cfg = load_config("sglang", path=str(path), environ={}, flags={}, flag_names={})
    with pytest.raises(ConfigError, match=re.escape(f"workers.env.{name}: a secret")) as err:
        render(cfg, plain=False)
    assert _value(name) not in str(err.value)


@pytest.mark.parametrize("flag", SECRET_FLAGS)
def test_render_k8s_refuses_a_secret_flag_and_never_echoes_it(flag: str, tmp_path: Path) -> None:
    path = _k8s_config(tmp_path, "frontend", {"extra_args": [f"{flag}=zz9secretval"]})
    cfg = load_config("sglang", path=str(path), environ={}, flags={}, flag_names={})
    words = re.escape(f"frontend.extra_args {flag}: a secret")
    with pytest.raises(ConfigError, match=words) as err:
        render(cfg, plain=True)
    assert "zz9secretval" not in str(err.value)


def test_render_k8s_renders_plain_env(tmp_path: Path) -> None:
    """The control: names that only look like secrets are rendered."""
    path = _k8s_config(tmp_path, "workers", {"env": {n: _plain(n) for n in PLAIN_NAMES}})
    cfg = load_config("sglang", path=str(path), environ={}, flags={}, flag_names={})
    text = dump_yaml(render(cfg, plain=True))
    for name in PLAIN_NAMES:
        assert _plain(name) in text


def test_render_k8s_through_the_cli(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    path = _k8s_config(tmp_path, "workers", {"env": {"Openai_Api_Key": "sk-live-abc123"}})
    line = one_error_line(run_cli(["render", "k8s", "-c", str(path)], home), 2)
    assert "workers.env.Openai_Api_Key" in line
    assert "sk-live-abc123" not in line


# -- up's log lines: the supervisor's `started:` line ---------------------------------------------


def test_the_started_line_never_shows_a_secret_flag(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The worker argv `plan` builds, with secret engine args right after the program, run by the
    real supervisor (a sleeping python stands in for the engine; extra argv is ignored)."""
    out, _, _ = _plan(tmp_path, "--json")
    worker = next(p for p in json.loads(out)["processes"] if p["role"] == "worker")
    argv = worker["argv"]  # masked, but its shape is the real one: program, then flags
    secret = "hf_live_zz81secret"
    argv = [sys.executable, "-c", "import time; time.sleep(60)", "--hf-token", secret, *argv[3:]]
    sup = Supervisor(uuid.uuid4().hex, tmp_path / "logs", os.environ)
    child = sup.add(ProcessSpec("worker-0", "worker", tuple(argv), {}), 20)
    with caplog.at_level(logging.INFO):
        sup.spawn(child, time.monotonic())
    try:
        started = [r.getMessage() for r in caplog.records if "started:" in r.getMessage()]
        assert len(started) == 1
        assert sys.executable in started[0]  # the line is there, with the program
        assert secret not in started[0]
        assert secret not in caplog.text
    finally:
        sup.stop([child], timeout=10)
