"""What Dynamo's processes get of an external NATS's TLS settings, per Dynamo line (pure: no
process is started). 1.6+ (compat.nats_tls_env) reads NATS_TLS_CA_CERT_PATH,
NATS_TLS_CLIENT_CERT_PATH and NATS_TLS_CLIENT_KEY_PATH as paths and needs a tls:// NATS_SERVER;
1.4.2 and 0.5.0 read none of them, so they get nothing and a warning. The run-level check
(tests/security/test_nats_tls_16.py) starts the real thing."""

from __future__ import annotations

from pathlib import Path

import pytest

from launcher import compat, credentials
from launcher.config import EtcdConfig, NatsConfig
from launcher.errors import ConfigError

TLS_VARS = ("NATS_TLS_CA_CERT_PATH", "NATS_TLS_CLIENT_CERT_PATH", "NATS_TLS_CLIENT_KEY_PATH")
KEY_TEXT = "-----BEGIN PRIVATE KEY-----\nnot-a-real-key-7f3a\n-----END PRIVATE KEY-----\n"


@pytest.mark.parametrize(
    ("version", "speaks"), [("0.5.0", False), ("1.4.2", False), ("1.5.3", False),
                            ("1.6.0", True), ("1.6.1", True), ("2.0.0", True)],
)  # fmt: skip
def test_only_1_6_and_later_speak_tls_to_nats(version: str, speaks: bool) -> None:
    assert compat.for_version(version).nats_tls_env is speaks


def _run_env(
    environ: dict[str, str], version: str, tmp_path: Path
) -> tuple[dict[str, str], list[str]]:
    _, env, _, warnings = credentials.for_run(
        environ, EtcdConfig(), NatsConfig(), state_dir=str(tmp_path / "state"),
        embedded_etcd=True, embedded_nats=False, generate_for_embedded=False,
        nats_url=environ["NATS_SERVER"], nats_tls_env=compat.for_version(version).nats_tls_env,
    )  # fmt: skip
    return env, warnings


ENV = {
    "NATS_SERVER": "nats://127.0.0.1:4222,nats://127.0.0.1:4223",
    "NATS_AUTH_USERNAME": "dynamo",
    "NATS_AUTH_PASSWORD": "pw-9c1e",
    "NATS_TLS_CA": "/etc/pki/ca.pem",
    "NATS_TLS_CERT": "/etc/pki/client.pem",
    "NATS_TLS_KEY": "/etc/pki/client.key",
}


def test_1_6_gets_the_paths_and_a_tls_server(tmp_path: Path) -> None:
    env, warnings = _run_env(ENV, "1.6.1", tmp_path)
    assert env["NATS_SERVER"] == "tls://127.0.0.1:4222,tls://127.0.0.1:4223"
    assert [env[v] for v in TLS_VARS] == ["/etc/pki/ca.pem", "/etc/pki/client.pem",
                                          "/etc/pki/client.key"]  # fmt: skip
    assert env["NATS_AUTH_USERNAME"] == "dynamo"
    assert warnings == []


def test_1_6_with_a_ca_only_and_a_tls_url_already(tmp_path: Path) -> None:
    environ = {"NATS_SERVER": "tls://127.0.0.1:4222", "NATS_TLS_CA": "/etc/pki/ca.pem"}
    env, _ = _run_env(environ, "1.6.1", tmp_path)
    assert env["NATS_SERVER"] == "tls://127.0.0.1:4222"
    assert env["NATS_TLS_CA_CERT_PATH"] == "/etc/pki/ca.pem"
    assert "NATS_TLS_CLIENT_KEY_PATH" not in env


@pytest.mark.parametrize("version", ["1.4.2", "0.5.0"])
def test_older_lines_get_no_tls_and_one_warning(tmp_path: Path, version: str) -> None:
    env, warnings = _run_env(ENV, version, tmp_path)
    assert not set(TLS_VARS) & set(env)
    assert "NATS_SERVER" not in env  # the plan's nats:// stays
    assert len(warnings) == 1
    assert "cannot connect to NATS over TLS" in warnings[0]


def test_no_tls_settings_no_tls_on_1_6(tmp_path: Path) -> None:
    environ = {"NATS_SERVER": "nats://127.0.0.1:4222", "NATS_AUTH_TOKEN": "tok-1"}
    env, warnings = _run_env(environ, "1.6.1", tmp_path)
    assert "NATS_SERVER" not in env
    assert not set(TLS_VARS) & set(env)
    assert warnings == []


def test_config_keys_are_wired_too(tmp_path: Path) -> None:
    nats = NatsConfig(ca="rel/ca.pem", client_cert="/p/c.pem", client_key="/p/c.key")
    _, env, _, _ = credentials.for_run(
        {}, EtcdConfig(), nats, state_dir=str(tmp_path / "s"), embedded_etcd=True,
        embedded_nats=False, generate_for_embedded=False, nats_url="nats://10.0.0.5:4222",
        nats_tls_env=True,
    )  # fmt: skip
    assert env["NATS_SERVER"] == "tls://10.0.0.5:4222"
    assert env["NATS_TLS_CA_CERT_PATH"] == str(Path("rel/ca.pem").absolute())


def test_pem_text_is_refused_without_showing_it(tmp_path: Path) -> None:
    """Dynamo 1.6.1 reads the variables as paths ("reading CA cert: <the text>" otherwise)."""
    environ = ENV | {"NATS_TLS_KEY": KEY_TEXT}
    with pytest.raises(ConfigError) as err:
        _run_env(environ, "1.6.1", tmp_path)
    assert "NATS_TLS_KEY" in str(err.value)
    assert "file path" in str(err.value)
    assert "not-a-real-key" not in str(err.value)
