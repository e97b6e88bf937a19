"""`infra.tls: true`: the embedded etcd serves TLS only and wants a client certificate of the
CA made for the state dir (STATE/tls/, 0600, reused by the next `up`); Dynamo's processes reach it
with ETCD_AUTH_CA/CLIENT_CERT/CLIENT_KEY, dynlaunch's own clients (lock, fencing, `status`,
`clear-namespace`) with their certificate and root's password. Checked from outside dynlaunch:
raw `http.client`/`ssl`, etcdctl, /proc, the files' modes. On Dynamo 1.6+ (the default) the
embedded NATS is on TLS too, with no warning (tests/security/test_embedded_nats_tls.py); on older
lines it stays without TLS, said in one warning line. No private key's PEM text shows in any
output."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import ssl
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from launcher_run import REPO, Launcher, chat_ok, up_env, up_mocker

from testkit import procs, tls
from testkit.dynamo import put_worker_1x
from testkit.etcd import Gateway, run_credentials, run_tls
from testkit.net import free_port, poll_for

pytestmark = pytest.mark.integration

FILES = ("ca.pem", "etcd.pem", "etcd.key", "dynamo.pem", "dynamo.key", "client.pem", "client.key")
KEY_MARK = "PRIVATE KEY"  # "-----BEGIN PRIVATE KEY-----" (PKCS#8), any key's PEM header
NATS_WARNING = "infra.tls: the embedded NATS stays without TLS"


def _config(tmp_path: Path) -> Path:
    path = tmp_path / "tls.yaml"
    path.write_text(yaml.safe_dump({"infra": {"tls": True}}))
    return path


def _host_port(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("https://").rsplit(":", 1)
    return host, int(port)


def _get(url: str, path: str, context: ssl.SSLContext | None) -> tuple[int, str]:
    """GET ``path`` from etcd at ``url`` with Python's own http.client: over TLS with
    ``context``, or plain HTTP without one."""
    host, port = _host_port(url)
    conn = (
        http.client.HTTPSConnection(host, port, timeout=10, context=context)
        if context is not None
        else http.client.HTTPConnection(host, port, timeout=10)
    )
    try:
        conn.request("GET", path)
        answer = conn.getresponse()
        return answer.status, answer.read().decode(errors="replace")
    finally:
        conn.close()


def _refused(url: str, context: ssl.SSLContext | None) -> str:
    """The error a TLS client with ``context`` (None: plain HTTP) gets from etcd's /health
    (TLS 1.3: a refused client certificate shows on the first read, after the handshake)."""
    try:
        status, body = _get(url, "/health", context)
    except (ssl.SSLError, OSError) as err:
        return f"{type(err).__name__}: {err}"
    raise AssertionError(f"answered {status} {body[:80]!r}")


def _etcdctl(url: str, state: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """etcdctl with Dynamo's certificate (common name root: etcd's user; no password)."""
    where = state / "tls"
    env = {"ETCDCTL_API": "3", "ETCDCTL_ENDPOINTS": url, "ETCDCTL_CACERT": str(where / "ca.pem"),
           "ETCDCTL_CERT": str(where / "dynamo.pem"), "ETCDCTL_KEY": str(where / "dynamo.key"),
           "PATH": os.environ.get("PATH", "/usr/bin")}  # fmt: skip
    return subprocess.run(["etcdctl", *args], env=env, capture_output=True, text=True,
                          timeout=60, check=False)  # fmt: skip


def _fingerprints(state: Path) -> dict[str, str]:
    return {name: hashlib.sha256((state / "tls" / name).read_bytes()).hexdigest() for name in FILES}


def _cli(
    home: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "launcher", *args], cwd=REPO,
                          env=up_env(home, env), capture_output=True, text=True, timeout=120,
                          check=False)  # fmt: skip


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _output(done: subprocess.CompletedProcess[str]) -> str:
    return done.stdout + done.stderr


def test_up_with_tls_serves_and_its_etcd_wants_the_generated_client_certificate(
    started: list[Launcher], tmp_path: Path
) -> None:
    launcher, port = up_mocker(started, tmp_path, "-c", str(_config(tmp_path)), tag="tls")
    launcher.wait_ready(180)
    assert chat_ok(port)
    assert not launcher.stderr_has(NATS_WARNING), launcher.dump()  # 1.6.1: NATS is on TLS
    info = launcher.info()
    state, etcd, ns = launcher.state_dir, str(info["etcd"]), str(info["namespace"])
    assert etcd.startswith("https://127.0.0.1:")
    # The files: 0600 in a 0700 directory.
    assert stat.S_IMODE((state / "tls").stat().st_mode) == 0o700
    for name in FILES:
        assert stat.S_IMODE((state / "tls" / name).stat().st_mode) == 0o600, name
    # Plain HTTP is refused (etcd closes the connection unanswered), so is a TLS client that
    # trusts the CA but has no certificate, and one whose certificate another CA signed.
    assert "closed" in _refused(etcd, None)
    no_cert = ssl.create_default_context(cafile=str(state / "tls" / "ca.pem"))
    _refused(etcd, no_cert)  # a bad-certificate alert, or (under load) the connection closed
    other = tls.make_ca(tmp_path / "other", "another CA")
    stranger = tls.issue(other, tmp_path / "other", "stranger")
    foreign = ssl.create_default_context(cafile=str(state / "tls" / "ca.pem"))
    foreign.load_cert_chain(stranger.cert, stranger.key)
    _refused(etcd, foreign)
    # The generated client certificate is taken (the server's certificate names 127.0.0.1:
    # default hostname checking passes), and etcdctl with Dynamo's sees the registrations.
    assert _get(etcd, "/health", run_tls(state)) == (200, '{"health":"true"}')
    listed = _etcdctl(etcd, state, "get", "--prefix", "--keys-only", f"v1/instances/{ns}/")
    assert listed.returncode == 0, listed.stderr
    assert f"v1/instances/{ns}/" in listed.stdout
    # Dynamo's processes got the PEM trio and no username (its TLS needs exactly that).
    environ = Path(f"/proc/{launcher.child_pid('worker-0')}/environ").read_bytes().split(b"\0")
    names = {item.split(b"=", 1)[0].decode() for item in environ}
    assert {"ETCD_AUTH_CA", "ETCD_AUTH_CLIENT_CERT", "ETCD_AUTH_CLIENT_KEY"} <= names
    assert "ETCD_AUTH_USERNAME" not in names
    # `status` reads the registrations through TLS with the run's login (None: it could not).
    assert launcher.status()["registrations"]["instances"]
    # `clear-namespace` (the run's state dir gives it the TLS files and the login): a dead
    # worker's keys go, the live worker's stay.
    login = run_credentials(state)["etcd"]
    gateway = Gateway(etcd, user=login["username"], password=login["password"],
                      verify=run_tls(state))  # fmt: skip
    lease = gateway.lease_grant(60)
    stale = put_worker_1x(gateway, ns, lease, free_port(), free_port())
    home = tmp_path / "cli"
    home.mkdir()
    done = _cli(home, "clear-namespace", "--namespace", ns, "--state-dir", str(state))
    assert done.returncode == 0, done.stdout + done.stderr
    assert all(gateway.get(key) is None for key in stale)
    # Fencing: a SIGKILLed worker's lease is revoked by dynlaunch over TLS (gone in etcd).
    assert gateway.get(f"dynlaunch/locks/{ns}") is not None  # the lock, taken over TLS
    fenced = launcher.kill_and_fenced_lease(timeout=60)
    assert gateway.lease_ttl(fenced) == -1
    poll_for(lambda: chat_ok(port), 60, "a chat completion from the restarted worker")
    # `down`: the launcher stops and releases its lock over TLS without a complaint.
    down = _cli(home, "down", "--state-dir", str(state))
    assert down.returncode == 0, _output(down)
    assert launcher.wait(60) == 0, launcher.dump()
    assert not any("could not release" in line for line in launcher.err), launcher.dump()


def test_a_second_up_reuses_the_certificates_and_no_key_shows_anywhere(
    started: list[Launcher], tmp_path: Path
) -> None:
    config = _config(tmp_path)
    first, port = up_mocker(started, tmp_path, "-c", str(config), tag="tlsre")
    first.wait_ready(180)
    state = first.state_dir
    made = _fingerprints(state)
    ns = str(first.info()["namespace"])
    assert first.stop() == 0, first.dump()
    second = Launcher(["mocker", "--namespace", ns, "--http-port", str(port), "-c", str(config)],
                      tmp_path)  # fmt: skip
    started.append(second)
    second.wait_ready(180)
    assert chat_ok(port)
    assert _fingerprints(state) == made  # the same CA, certificates and keys
    info = second.info()
    pids = procs.tagged_pids(str(info["run_id"])) | {second.proc.pid}
    assert len(pids) >= 5, pids
    cmdlines = "\n".join(_cmdline(pid) for pid in sorted(pids))
    assert "--client-cert-auth" in cmdlines  # the wiring shows, by path
    home = tmp_path / "cli"
    home.mkdir()
    common = ["-c", str(config), "--namespace", ns, "--state-dir", str(state)]
    plan = _cli(home, "plan", "mocker", *common, "--json")
    shown = {
        "plan --json": _output(plan),
        "plan": _output(_cli(home, "plan", "mocker", *common)),
        "status --json": _cli(home, "status", "--state-dir", str(state), "--json").stdout,
    }
    assert '"--client-cert-auth"' in shown["plan --json"]
    assert NATS_WARNING not in plan.stderr  # 1.6.1: NATS is on TLS
    assert '"children"' in shown["status --json"]
    assert second.stop() == 0, second.dump()
    shown["up's stdout and stderr"] = "\n".join([*first.err, *first.out, *second.err,
                                                 *second.out])  # fmt: skip
    shown["/proc/*/cmdline"] = cmdlines
    for path in sorted(p for p in state.rglob("*") if p.is_file()):
        inside = path.relative_to(state).parts
        if inside[0] != "tls" and inside[:2] != ("infra", "etcd"):
            shown[str(path.relative_to(state))] = path.read_text(errors="replace")
    assert any(name.endswith(".log") for name in shown), sorted(shown)
    keys = [(state / "tls" / n).read_text().strip().splitlines()[1] for n in FILES if ".key" in n]
    for where, text in shown.items():
        assert KEY_MARK not in text, f"a private key's PEM shows in {where}"
        for line in keys:
            assert line not in text, f"a line of a key shows in {where}"


def test_plan_shows_the_tls_wiring_without_key_material(tmp_path: Path) -> None:
    state = tmp_path / "state"
    args = ["plan", "mocker", "-c", str(_config(tmp_path)), "--state-dir", str(state), "--json"]
    done = _cli(tmp_path, *args)
    assert done.returncode == 0, done.stderr
    assert "warning" not in done.stderr, done.stderr  # 1.6.1: the embedded NATS is on TLS too
    plan = json.loads(done.stdout)
    etcd = next(p for p in plan["processes"] if p["role"] == "etcd")
    argv = etcd["argv"]
    assert "--client-cert-auth" in argv
    assert argv[argv.index("--trusted-ca-file") + 1] == str(state / "tls" / "ca.pem")
    assert argv[argv.index("--listen-client-urls") + 1].startswith("https://127.0.0.1:")
    worker = next(p for p in plan["processes"] if p["role"] == "worker")
    assert worker["env"]["ETCD_ENDPOINTS"].startswith("https://127.0.0.1:")
    assert worker["env"]["ETCD_AUTH_CLIENT_KEY"] == "***"
    assert "ETCD_AUTH_USERNAME" not in worker["env"]
    assert plan["files"][str(state / "tls" / "client.key")] == "*** (0600)"
    assert "-----BEGIN" not in done.stdout + done.stderr
    assert not state.exists()  # `plan` writes nothing: no state dir, no certificates


def test_tls_with_an_external_etcd_says_it_does_not_apply(tmp_path: Path) -> None:
    etcd = {"ETCD_ENDPOINTS": f"http://127.0.0.1:{free_port()}"}
    args = ["plan", "mocker", "-c", str(_config(tmp_path)), "--state-dir", str(tmp_path / "s")]
    done = subprocess.run([sys.executable, "-m", "launcher", *args], cwd=REPO,
                          env=up_env(tmp_path, etcd), capture_output=True, text=True,
                          timeout=120, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    warnings = [line for line in done.stderr.splitlines() if "warning" in line]
    assert len(warnings) == 1, done.stderr  # 1.6.1: the embedded NATS is on TLS (no warning)
    assert "applies to the embedded etcd and NATS only" in warnings[0]
    assert "--client-cert-auth" not in done.stdout


def test_tls_without_auth_says_nats_has_no_login(tmp_path: Path) -> None:
    """On 1.4.2, whose NATS stays without TLS (1.6+: tests/security/test_embedded_nats_tls.py)."""
    config = tmp_path / "noauth.yaml"
    config.write_text(yaml.safe_dump({"infra": {"tls": True, "auth": False}}))
    state = tmp_path / "state"
    args = ["plan", "mocker", "-c", str(config), "--state-dir", str(state), "--json"]
    done = _cli(tmp_path, *args, env={"DYNLAUNCH_DYNAMO__VERSION": "1.4.2"})
    assert done.returncode == 0, done.stderr
    warnings = [line for line in done.stderr.splitlines() if "warning" in line]
    assert len(warnings) == 1, done.stderr
    assert "no login: infra.auth is false" in warnings[0]
    plan = json.loads(done.stdout)
    assert "--client-cert-auth" in next(p for p in plan["processes"] if p["role"] == "etcd")["argv"]
    assert str(state / "credentials.json") not in plan["files"]  # the certificate is the login
