"""The default `up mocker` stack: its embedded etcd and NATS refuse a client without the
generated credentials and accept one with them; its state dir, logs and credentials are private
(checked as the user `nobody`); no generated password or secret env value shows anywhere a run
writes or prints (logs, `plan --json`, `status --json`, `render k8s`, /proc/*/cmdline)."""

from __future__ import annotations

import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from launcher_run import REPO, Launcher, chat_ok, up_env, up_mocker

from testkit import procs
from testkit.etcd import Gateway, run_credentials
from testkit.natslogin import nats_login

pytestmark = pytest.mark.integration


@pytest.fixture
def public_tmp() -> Iterator[Path]:
    """A directory every user may enter (pytest's own tmp dirs are 0700 to root already, which
    would hide the state dir's own mode from `nobody`)."""
    path = Path(tempfile.mkdtemp(prefix="dynlaunch-sec-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    subprocess.run(["rm", "-rf", str(path)], check=False)


def test_embedded_etcd_and_nats_refuse_clients_without_the_generated_login(
    started: list[Launcher], tmp_path: Path
) -> None:
    launcher, port = up_mocker(started, tmp_path, tag="auth")
    launcher.wait_ready()
    assert chat_ok(port)
    info = launcher.info()
    ns, etcd = str(info["namespace"]), str(info["etcd"])
    nats_port = int(str(info["nats"]).rsplit(":", 1)[1])
    login = run_credentials(launcher.state_dir)
    # etcd: no token, no read (raw HTTP to its own gateway); a wrong password, no token.
    anonymous = httpx.post(f"{etcd}/v3/kv/range", json={"key": "dg=="}, trust_env=False)
    assert anonymous.status_code != 200
    assert "user name is empty" in anonymous.text
    wrong = httpx.post(f"{etcd}/v3/auth/authenticate", json={"name": "root", "password": "x"},
                       trust_env=False)  # fmt: skip
    assert "authentication failed" in wrong.text
    # With the generated login it sees the namespace's registrations.
    gateway = Gateway(etcd, user=login["etcd"]["username"], password=login["etcd"]["password"])
    assert gateway.dump(f"v1/instances/{ns}/")
    # NATS: refused without a login or with a wrong one, accepted with the generated one.
    assert b"Authorization Violation" in nats_login(nats_port)
    assert b"Authorization Violation" in nats_login(nats_port, user="dynlaunch", **{"pass": "x"})
    good = {"user": login["nats"]["username"], "pass": login["nats"]["password"]}
    assert nats_login(nats_port, **good) == b"PONG"
    # `status` reads the registrations with the run's login (None: it could not).
    counts = launcher.status()["registrations"]
    assert counts["instances"], counts
    assert launcher.stop() == 0, launcher.dump()


def test_state_dir_logs_and_credentials_are_private(
    started: list[Launcher], public_tmp: Path
) -> None:
    launcher, _ = up_mocker(started, public_tmp, tag="priv")
    launcher.wait_ready()
    state = launcher.state_dir
    private = [state / "credentials.json", state / "infra" / "nats.conf",
               *sorted((state / "logs").glob("*.log"))]  # fmt: skip
    assert len(private) >= 6, private  # the two secret files and four children's logs
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    for path in private:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    # As `nobody`: the state dir cannot be listed, nor the credentials or a log read.
    for argv in (["ls", str(state)], ["cat", str(private[0])], ["cat", str(private[-1])]):
        done = subprocess.run(["runuser", "-u", "nobody", "--", *argv], capture_output=True,
                              text=True, timeout=30, check=False)  # fmt: skip
        assert done.returncode != 0, argv
        assert "Permission denied" in done.stderr, done.stderr
    # Even with the state dir's mode loosened, the files themselves stay unreadable to nobody.
    state.chmod(0o755)
    try:
        for path in private[:2]:
            done = subprocess.run(["runuser", "-u", "nobody", "--", "cat", str(path)],
                                  capture_output=True, text=True, timeout=30,
                                  check=False)  # fmt: skip
            assert done.returncode != 0, path
            assert "Permission denied" in done.stderr, path
    finally:
        state.chmod(0o700)
    assert launcher.stop() == 0, launcher.dump()


CANARY = {"HF_TOKEN": "hf_canary_91f3", "MY_API_KEY": "canary-api-7c2e"}


def _cli(args: list[str], home: Path, env: dict[str, str]) -> str:
    done = subprocess.run([sys.executable, "-m", "launcher", *args], cwd=REPO,
                          env=up_env(home, env), capture_output=True, text=True, timeout=120,
                          check=False)  # fmt: skip
    return done.stdout + done.stderr


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def test_no_secret_in_any_output_of_a_run(started: list[Launcher], tmp_path: Path) -> None:
    config = tmp_path / "canary.yaml"
    config.write_text(yaml.safe_dump({"frontend": {"env": CANARY}, "workers": {"env": CANARY}}))
    launcher, _ = up_mocker(started, tmp_path, "-c", str(config), tag="canary")
    launcher.wait_ready()
    info = launcher.info()
    run_id, state = str(info["run_id"]), launcher.state_dir
    login = run_credentials(state)
    secrets = {**CANARY, "etcd password": login["etcd"]["password"],
               "nats password": login["nats"]["password"]}  # fmt: skip
    pids = procs.tagged_pids(run_id) | {launcher.proc.pid}
    assert len(pids) >= 5, pids  # etcd, nats, frontend, worker and the launcher at least
    cmdlines = "\n".join(_cmdline(pid) for pid in sorted(pids))
    assert "nats-server" in cmdlines
    assert "dynamo.frontend" in cmdlines
    # The children do get them, through their environment only.
    worker = launcher.child_pid("worker-0")
    environ = Path(f"/proc/{worker}/environ").read_bytes().decode(errors="replace")
    assert login["etcd"]["password"] in environ
    assert CANARY["HF_TOKEN"] in environ
    home = tmp_path / "cli"
    home.mkdir()
    ns = str(info["namespace"])
    common = ["-c", str(config), "--namespace", ns, "--state-dir", str(state)]
    shown = {
        "plan --json": _cli(["plan", "mocker", *common, "--json"], home, {}),
        "status --json": _cli(["status", "--state-dir", str(state), "--json"], home, {}),
        "render k8s": _cli(["render", "k8s", "-c", str(config), "--namespace", ns], home, {}),
    }
    assert '"processes"' in shown["plan --json"]
    assert '"children"' in shown["status --json"]
    assert launcher.stop() == 0, launcher.dump()
    shown["up's stdout and stderr"] = "\n".join([*launcher.err, *launcher.out])
    shown["/proc/*/cmdline"] = cmdlines
    secret_stores = {state / "credentials.json", state / "infra" / "nats.conf"}
    for path in sorted(p for p in state.rglob("*") if p.is_file()):
        if path not in secret_stores and "etcd" not in path.relative_to(state).parts[:2]:
            shown[str(path.relative_to(state))] = path.read_text(errors="replace")
    assert any(name.endswith(".log") for name in shown), sorted(shown)
    for where, text in shown.items():
        for name, value in secrets.items():
            assert value not in text, f"{name} shows in {where}"
