"""`infra.tls: true` on Dynamo 1.6+ puts the embedded NATS on TLS too: nats-server gets a tls block
(the state dir's server certificate, `verify`: a client needs a certificate of the run's CA) next
to its user and password, Dynamo's processes get a tls:// NATS_SERVER and NATS_TLS_*_PATH (paths
under STATE/tls/), dynlaunch's own NATS clients (the lock's stream listing, `clear-namespace`,
`status`) the CA and their client certificate. Checked from outside dynlaunch: nats-server's own
/connz, raw sockets (plain and Python ssl), /proc, etcd. On 1.4.2 (and 0.5.0) nothing changes:
NATS stays plain, with one warning line."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import ssl
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml
from launcher_run import REPO, Launcher, chat_ok, up_env, up_mocker

from launcher import tlsfiles
from launcher.config import load_config
from launcher.credentials import for_run
from launcher.plan import Host, build_plan, port_slots
from testkit import procs
from testkit.dynamo import put_worker_1x
from testkit.etcd import Gateway, run_credentials, run_tls
from testkit.net import free_port, poll_for

TLS_PATHS = ("NATS_TLS_CA_CERT_PATH", "NATS_TLS_CLIENT_CERT_PATH", "NATS_TLS_CLIENT_KEY_PATH")
NATS_WARNING = "infra.tls: the embedded NATS stays without TLS"


def _config(tmp_path: Path, **infra: bool) -> Path:
    path = tmp_path / "tls.yaml"
    path.write_text(yaml.safe_dump({"infra": {"tls": True, **infra}}))
    return path


def _cli(
    home: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "launcher", *args], cwd=REPO,
                          env=up_env(home, env), capture_output=True, text=True, timeout=120,
                          check=False)  # fmt: skip


def _flag(pid: int, flag: str) -> str:
    argv = procs.cmdline(pid)
    return argv[argv.index(flag) + 1]


def _peer_ports(pid: int, server_port: int) -> set[int]:
    """The local ports of ``pid``'s TCP connections to 127.0.0.1:``server_port`` (/proc)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    ports = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        cols = line.split()
        remote_port = int(cols[2].split(":")[1], 16)
        if cols[9] in inodes and remote_port == server_port and cols[3] == "01":  # ESTABLISHED
            ports.add(int(cols[1].split(":")[1], 16))
    return ports


def _connz(monitor: int) -> list[dict[str, object]]:
    url = f"http://127.0.0.1:{monitor}/connz?auth=1"
    got = httpx.get(url, timeout=10, trust_env=False).json()
    return list(got.get("connections") or [])


def _raw(
    port: int, context: ssl.SSLContext | None, login: dict[str, str]
) -> tuple[dict[str, object], bytes]:
    """nats-server's INFO greeting, and what it answers a CONNECT with ``login`` and a PING sent
    in plain text (``context`` None) or after a TLS handshake with ``context``; b"" when it
    closed the connection without a word."""
    with socket.create_connection(("127.0.0.1", port), 10) as plain:
        plain.settimeout(10)
        info = json.loads(plain.recv(4096).split(b"\r\n", 1)[0][5:])
        connect = b"CONNECT " + json.dumps({"verbose": False, **login}).encode() + b"\r\nPING\r\n"
        try:
            if context is None:
                plain.sendall(connect)
                return info, plain.recv(4096).strip()
            with context.wrap_socket(plain, server_hostname="127.0.0.1") as tls:
                tls.sendall(connect)
                return info, _read_pong(tls)
        except (ssl.SSLError, OSError) as err:
            return info, f"{type(err).__name__}: {err}".encode()


def _read_pong(sock: ssl.SSLSocket) -> bytes:
    """Lines up to PONG or an -ERR (nats-server sends its INFO again after a TLS CONNECT)."""
    got = b""
    while b"PONG" not in got and b"-ERR" not in got:
        chunk = sock.recv(4096)
        if not chunk:
            break
        got += chunk
    return got.strip()


def _stale_keys(state: Path, etcd: str, ns: str) -> tuple[Gateway, list[str]]:
    login = run_credentials(state)["etcd"]
    gateway = Gateway(etcd, user=login["username"], password=login["password"],
                      verify=run_tls(state))  # fmt: skip
    return gateway, put_worker_1x(gateway, ns, gateway.lease_grant(60), free_port(), free_port())


@pytest.mark.integration
def test_up_with_tls_puts_the_embedded_nats_on_tls_on_1_6(
    started: list[Launcher], tmp_path: Path
) -> None:
    launcher, port = up_mocker(started, tmp_path, "--workers", "2", "-c", str(_config(tmp_path)),
                               tag="ntls")  # fmt: skip
    launcher.wait_ready(240)
    assert chat_ok(port)
    assert not launcher.stderr_has(NATS_WARNING), launcher.dump()
    info, state = launcher.info(), launcher.state_dir
    nats_url, ns = str(info["nats"]), str(info["namespace"])
    assert nats_url.startswith("tls://127.0.0.1:")
    nats_pid = launcher.child_pid("nats")
    client, monitor = int(_flag(nats_pid, "-p")), int(_flag(nats_pid, "-m"))
    assert nats_url == f"tls://127.0.0.1:{client}"
    # Dynamo's processes: a tls:// server and the three paths under STATE/tls/ (not PEM text).
    dynamo = {n: launcher.child_pid(n) for n in ("frontend", "worker-0", "worker-1")}
    for name, pid in dynamo.items():
        env = procs.environ(pid)
        assert env["NATS_SERVER"] == nats_url, name
        assert [env.get(v) for v in TLS_PATHS] == [
            str(state / "tls" / f) for f in ("ca.pem", "dynamo.pem", "dynamo.key")
        ], name
    # nats-server's own view: each of them holds a TLS connection as the run's NATS user, and
    # every connection it has is on TLS.
    user = run_credentials(state)["nats"]["username"]

    def on_tls() -> bool:
        conns = {int(str(c["port"])): c for c in _connz(monitor)}
        mine = {name: _peer_ports(pid, client) & set(conns) for name, pid in dynamo.items()}
        return all(mine.values()) and all(
            conns[p].get("tls_version") and conns[p].get("authorized_user") == user
            for ports in mine.values() for p in ports
        )  # fmt: skip

    poll_for(on_tls, 60, "the frontend and both workers on TLS in /connz")
    assert all(c.get("tls_version") for c in _connz(monitor))
    # Without TLS the server refuses (it says so in its INFO and on a plain CONNECT); with TLS
    # but no client certificate too; with the run's client certificate and login it answers.
    login = run_credentials(state)["nats"]
    login = {"user": login["username"], "pass": login["password"]}
    greeting, plain = _raw(client, None, login)
    assert greeting.get("tls_required") is True
    assert b"PONG" not in plain, plain
    ca_only = ssl.create_default_context(cafile=str(state / "tls" / "ca.pem"))
    assert b"PONG" not in _raw(client, ca_only, login)[1]
    assert b"PONG" in _raw(client, run_tls(state), login)[1]
    # `status` and `clear-namespace` (the run's state dir gives them the TLS files): a dead
    # worker's planted keys go, over etcd and NATS both on TLS.
    assert launcher.status()["registrations"]["instances"]
    gateway, stale = _stale_keys(state, str(info["etcd"]), ns)
    home = tmp_path / "cli"
    home.mkdir()
    done = _cli(home, "clear-namespace", "--namespace", ns, "--state-dir", str(state))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"NATS {nats_url}" in done.stdout
    assert all(gateway.get(key) is None for key in stale)
    # Fencing: a SIGKILLed worker's lease is revoked (dynlaunch's line; etcd says TTL -1), and
    # its restart reconnects over TLS and serves.
    fenced = launcher.kill_and_fenced_lease()
    assert gateway.lease_ttl(fenced) == -1
    poll_for(lambda: launcher.starts("worker-0") == 2, 90, "worker-0's restart")
    poll_for(lambda: chat_ok(port), 90, "a chat completion after the restart")
    assert launcher.stop() == 0, launcher.dump()


def test_plan_on_1_6_shows_the_nats_tls_wiring_without_key_material(tmp_path: Path) -> None:
    state = tmp_path / "state"
    args = ["plan", "mocker", "-c", str(_config(tmp_path)), "--state-dir", str(state), "--json"]
    done = _cli(tmp_path, *args)
    assert done.returncode == 0, done.stderr
    assert "warning" not in done.stderr, done.stderr
    plan = json.loads(done.stdout)
    nats = next(p for p in plan["processes"] if p["role"] == "nats")
    conf = nats["argv"][nats["argv"].index("-c") + 1]
    assert plan["files"][conf] == "*** (0600)"
    for proc in (p for p in plan["processes"] if p["role"] in ("frontend", "worker")):
        env = proc["env"]
        assert env["NATS_SERVER"] == f"tls://127.0.0.1:{nats['ports']['client']}"
        assert [env[v] for v in TLS_PATHS] == [
            str(state / "tls" / f) for f in ("ca.pem", "dynamo.pem", "dynamo.key")
        ]
    assert "-----BEGIN" not in done.stdout + done.stderr
    assert not state.exists()  # `plan` writes nothing


def test_plan_on_1_4_2_keeps_nats_plain_with_one_warning(tmp_path: Path) -> None:
    args = ["plan", "mocker", "-c", str(_config(tmp_path)), "--state-dir", str(tmp_path / "s"),
            "--json"]  # fmt: skip
    done = _cli(tmp_path, *args, env={"DYNLAUNCH_DYNAMO__VERSION": "1.4.2"})
    assert done.returncode == 0, done.stderr
    warnings = [line for line in done.stderr.splitlines() if "warning" in line]
    assert len(warnings) == 1, done.stderr
    assert NATS_WARNING in warnings[0]
    assert "Dynamo 1.4.2 cannot connect to NATS over TLS" in warnings[0]
    assert "1.6" not in warnings[0]
    plan = json.loads(done.stdout)
    assert plan["dynamo_version"] == "1.4.2"
    worker = next(p for p in plan["processes"] if p["role"] == "worker")
    assert worker["env"]["NATS_SERVER"].startswith("nats://127.0.0.1:")
    assert not set(TLS_PATHS) & set(worker["env"])
    assert worker["env"]["ETCD_ENDPOINTS"].startswith("https://")  # etcd's TLS stays


def _host(tmp_path: Path, version: str, auth: bool) -> Host:
    """What `up` gathers for `infra.tls` (certificates made in memory), for the pure planner."""
    cfg = load_config("mocker", path=None, environ={}, flags={}, flag_names={})
    state = str(tmp_path / "state")
    slots = port_slots(cfg, embedded_etcd=True, embedded_nats=True, backend="mocker",
                       dynamo_version=version)  # fmt: skip
    tls = tlsfiles.generate()
    creds, infra_env, generated, _ = for_run(
        {}, cfg.infra.etcd, cfg.infra.nats, state_dir=state, embedded_etcd=True,
        embedded_nats=True, generate_for_embedded=auth, tls=tls,
        nats_tls_env=version.startswith("1.6"),
    )  # fmt: skip
    return Host(dynamo_version=version, python="python3", gpus=(), gpu_source="mocker",
                ports={s.name: 20000 + i for i, s in enumerate(slots)}, state_dir=state,
                etcd_endpoints=None, nats_url=None, auth=creds, infra_env=infra_env,
                generated_auth=generated, tls=tls)  # fmt: skip


def _nats_conf(tmp_path: Path, host: Host) -> tuple[tuple[str, ...], str]:
    cfg = load_config("mocker", path=None, environ={}, flags={}, flag_names={})
    plan = build_plan(cfg, "mocker", host)
    files = dict(plan.secret_files)
    return plan.by_role("nats")[0].argv, files.get(str(tmp_path / "state/infra/nats.conf"), "")


@pytest.mark.parametrize("auth", [True, False])
def test_the_nats_config_gets_a_tls_block_on_1_6_only(tmp_path: Path, auth: bool) -> None:
    where = tlsfiles.paths(str(tmp_path / "state"))
    tls_block = (f'tls {{\n  cert_file: "{where.server_cert}"\n  key_file: "{where.server_key}"\n'
                 f'  ca_file: "{where.ca}"\n  verify: true\n')  # fmt: skip
    argv, conf = _nats_conf(tmp_path, _host(tmp_path, "1.6.1", auth))
    assert tls_block in conf
    assert ("authorization {" in conf) is auth  # the login stays with TLS, when there is one
    assert argv[argv.index("-c") + 1] == str(tmp_path / "state/infra/nats.conf")
    argv, conf = _nats_conf(tmp_path, _host(tmp_path, "1.4.2", auth))
    assert "tls {" not in conf
    assert ("-c" in argv) is auth


def test_dynlaunch_own_nats_login_carries_the_client_certificate(tmp_path: Path) -> None:
    host = _host(tmp_path, "1.6.1", auth=True)
    where = tlsfiles.paths(str(tmp_path / "state"))
    assert (host.auth.nats.ca, host.auth.nats.cert, host.auth.nats.key) == (
        where.ca, where.client_cert, where.client_key)  # fmt: skip
    assert host.auth.nats.password  # with the generated login
    assert not _host(tmp_path, "1.4.2", auth=True).auth.nats.tls


def test_an_external_etcd_leaves_the_embedded_nats_on_tls_on_1_6(tmp_path: Path) -> None:
    etcd = {"ETCD_ENDPOINTS": f"http://127.0.0.1:{free_port()}"}
    args = ["plan", "mocker", "-c", str(_config(tmp_path)), "--state-dir", str(tmp_path / "s"),
            "--json"]  # fmt: skip
    done = _cli(tmp_path, *args, env=etcd)
    assert done.returncode == 0, done.stderr
    assert NATS_WARNING not in done.stderr
    worker = next(p for p in json.loads(done.stdout)["processes"] if p["role"] == "worker")
    assert worker["env"]["NATS_SERVER"].startswith("tls://127.0.0.1:")
    assert worker["env"]["ETCD_ENDPOINTS"] == etcd["ETCD_ENDPOINTS"]
