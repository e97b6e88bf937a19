"""`bench prefix --compare-router`'s own `up`: argv and the per-mode config files (pure or
files only; the stack itself runs in tests/integration/test_bench_router.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

from launcher.bench import stacks
from launcher.errors import ConfigError


def test_up_flags_go_before_the_engine_args() -> None:
    argv = stacks.up_argv("sglang", Path("/s"), ["--workers", "2", "--", "--mem-fraction-static",
                                                  "0.3"])  # fmt: skip
    assert argv[:5] == [sys.executable, "-m", "launcher", "up", "sglang"]
    cut = argv.index("--")
    assert argv[cut:] == ["--", "--mem-fraction-static", "0.3"]
    assert {"--workers", "--http-port", "--state-dir"} <= set(argv[:cut])
    assert argv[argv.index("--state-dir") + 1] == "/s"


def test_a_given_http_port_is_kept() -> None:
    argv = stacks.up_argv("mocker", Path("/s"), ["--http-port", "9100"])
    assert argv.count("--http-port") == 1
    assert argv[argv.index("--http-port") + 1] == "9100"


def test_mode_config_keeps_the_users_settings(tmp_path: Path) -> None:
    user = tmp_path / "user.yaml"
    user.write_text("namespace: mine\nfrontend:\n  http_port: 9000\n  router_mode: random\n")
    made = stacks.mode_config(tmp_path, str(user), "kv")
    assert yaml.safe_load(made.read_text()) == {
        "namespace": "mine", "frontend": {"http_port": 9000, "router_mode": "kv"},
    }  # fmt: skip
    assert made.stat().st_mode & 0o777 == 0o600
    alone = stacks.mode_config(tmp_path, None, "round-robin")
    assert yaml.safe_load(alone.read_text()) == {"frontend": {"router_mode": "round-robin"}}


def test_mode_config_of_a_list_is_refused(tmp_path: Path) -> None:
    user = tmp_path / "list.yaml"
    user.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match=r"list\.yaml: not a mapping"):
        stacks.mode_config(tmp_path, str(user), "kv")
