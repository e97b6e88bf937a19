"""Bad input and a hostile environment through the real CLI (issue 11, points 7, 10, 11, 12): each
is one line on stderr with exit 2 (bad input) or 3 (runtime), and `up` creates and starts nothing
first: no state dir, no process carrying it, no port reservation. HOME and TMPDIR are the test's.
"""

from __future__ import annotations

import http.server
import json
import os
import shutil
import socket
import subprocess
import tarfile
import threading
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
from test_cli_errors import REPO, one_error_line, processes_mentioning, run_cli


def shared_cache() -> dict[str, str]:
    """The session's cache (tests/conftest.py), where the tiny model is made once."""
    return {"XDG_CACHE_HOME": os.environ["XDG_CACHE_HOME"]}


def reservations(home: Path) -> list[Path]:
    """Port reservation files under the test's TMPDIR (launcher.ports.reservation_dir)."""
    return sorted(home.glob("dynlaunch-ports-*/*.json"))


def assert_nothing_made(state: Path, home: Path) -> None:
    assert not state.exists()
    assert processes_mentioning(str(state)) == []
    assert reservations(home) == []


# name: (args, env, config file text or None, needles in the one line). {tmp}: the test's dir.
CASES: dict[str, tuple[tuple[str, ...], Mapping[str, str], str | None, tuple[str, ...]]] = {
    "nats-port-out-of-range": (
        (),
        {"NATS_SERVER": "nats://127.0.0.1:99999"},
        None,
        ("NATS_SERVER", "99999", "65535"),
    ),
    "nats-port-not-a-number": ((), {"NATS_SERVER": "nats://127.0.0.1:abc"}, None, ("NATS_SERVER",)),
    "nats-wrong-scheme": ((), {"NATS_SERVER": "http://127.0.0.1:4222"}, None, ("nats://",)),
    "etcd-not-a-url": ((), {"ETCD_ENDPOINTS": "not a url"}, None, ("ETCD_ENDPOINTS", "http://")),
    "etcd-only-a-comma": ((), {"ETCD_ENDPOINTS": ","}, None, ("ETCD_ENDPOINTS", "empty")),
    "etcd-in-file": (
        ("-c", "{tmp}/bad.yaml"),
        {},
        "infra:\n  etcd:\n    endpoints: http://127.0.0.1:0\n",
        ("{tmp}/bad.yaml: infra.etcd.endpoints", "port"),
    ),
    "nats-in-env-layer": (
        (),
        {"DYNLAUNCH_INFRA__NATS__URL": "nats://127.0.0.1:4222/x"},
        None,
        ("DYNLAUNCH_INFRA__NATS__URL", "path"),
    ),
    "http-host-unresolvable": (("--http-host", "bogus.invalid"), {}, None, ("--http-host",)),
    "http-host-not-ours": (("--http-host", "192.0.2.1"), {}, None, ("--http-host", "bind")),
    "http-host-with-space": (("--http-host", "a b"), {}, None, ("--http-host", "'a b'")),
    "state-dir-proc": (
        ("--state-dir", "/proc/self"),
        {},
        None,
        ("--state-dir", "/proc/self", "cannot write"),
    ),
    "state-dir-under-a-file": (
        ("--state-dir", "{tmp}/afile/state"),
        {},
        None,
        ("--state-dir", "{tmp}/afile", "a file"),
    ),
    "namespace-300": (("--namespace", "n" * 300), {}, None, ("--namespace", "63")),
    "namespace-64-in-file": (
        ("-c", "{tmp}/bad.yaml"),
        {},
        f"namespace: {'n' * 64}\n",
        ("{tmp}/bad.yaml: namespace",),
    ),
    "workers-100000": (("--workers", "100000"), {}, None, ("--workers", "256")),
    "workers-env-100000": (
        (),
        {"DYNLAUNCH_WORKERS__COUNT": "100000"},
        None,
        ("DYNLAUNCH_WORKERS__COUNT", "256"),
    ),
    "config-is-a-directory": (("-c", "{tmp}"), {}, None, ("--config {tmp}", "directory")),
    "config-not-utf8": (("-c", "{tmp}/bad.yaml"), {}, "namespace: \udcff\n", ("UTF-8",)),
    "http-port-0": (("--http-port", "0"), {}, None, ("--http-port",)),
    "http-port-70000": (("--http-port", "70000"), {}, None, ("--http-port", "65535")),
    "tp-0": (("--tp", "0"), {}, None, ("--tp",)),
    "page-size-minus-1": (("--page-size", "-1"), {}, None, ("--page-size",)),
    "gpus-not-ids": (("--gpus", "a,b"), {}, None, ("--gpus", "'a'")),
    "gpus-twice": (("--gpus", "0,0"), {}, None, ("--gpus", "twice")),
}


def _fill(text: str, tmp_path: Path) -> str:
    return text.replace("{tmp}", str(tmp_path))


@pytest.mark.parametrize("command", ["plan", "up"])
@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_one_line(command: str, name: str, tmp_path: Path, home: Path) -> None:
    args, env, config, needles = CASES[name]
    if config is not None:
        (tmp_path / "bad.yaml").write_bytes(config.encode("utf-8", "surrogateescape"))
    (tmp_path / "afile").write_text("not a directory\n")
    state = tmp_path / "state"
    state_args = [] if "--state-dir" in args else ["--state-dir", str(state)]
    argv = [command, "mocker", *state_args, *(_fill(a, tmp_path) for a in args)]
    result = run_cli(argv, home, {**shared_cache(), **env})
    line = one_error_line(result, 2)
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert _fill(needle, tmp_path) in line
    assert_nothing_made(state, home)


def test_credentials_in_a_bad_url_are_not_printed(home: Path, tmp_path: Path) -> None:
    env = {**shared_cache(), "NATS_SERVER": "nats://alice:s3cret-pw@127.0.0.1:abc"}
    result = run_cli(["up", "mocker", "--state-dir", str(tmp_path / "state")], home, env)
    line = one_error_line(result, 2)
    assert "NATS_SERVER" in line
    assert "s3cret-pw" not in result.stderr + result.stdout


@pytest.fixture
def read_only_dir(tmp_path: Path) -> Iterator[Path]:
    """An existing directory on a read-only tmpfs (needs mount rights: root, or skipped)."""
    path = tmp_path / "ro"
    path.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(path)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a read-only tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True)


@pytest.mark.parametrize("command", ["plan", "up"])
@pytest.mark.parametrize("below", ["", "state"])
def test_read_only_state_dir(
    command: str, below: str, read_only_dir: Path, tmp_path: Path, home: Path
) -> None:
    state = read_only_dir / below if below else read_only_dir
    result = run_cli([command, "mocker", "--state-dir", str(state)], home, shared_cache())
    line = one_error_line(result, 2)
    assert "--state-dir" in line
    assert "Read-only file system" in line
    assert list(read_only_dir.iterdir()) == []
    assert processes_mentioning(str(state)) == []
    assert reservations(home) == []


def test_state_dir_tilde_is_home(tmp_path: Path, home: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("state_dir: ~/dl-state\n")
    result = run_cli(["plan", "mocker", "-c", str(config), "--json"], home, shared_cache())
    assert result.returncode == 0, result.stderr
    assert f'"state_dir": "{home}/dl-state"' in result.stdout
    assert not (REPO / "~").exists()


# -- external endpoints that answer, but as something else ----------------------------------


class _NotEtcd(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"<html>hello</html>" if self.path == "/" else b"not found"
        self.send_response(200 if self.path == "/" else 404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def http_server() -> Iterator[str]:
    """A real HTTP server on 127.0.0.1 that is not etcd."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _NotEtcd)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def silent_listener() -> Iterator[str]:
    """A TCP port that accepts connections (the kernel's backlog) and never says a word."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield f"nats://127.0.0.1:{sock.getsockname()[1]}"


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_http_server_that_is_not_etcd(tmp_path: Path, home: Path, http_server: str) -> None:
    state = tmp_path / "state"
    # A wait for "unreachable" would last 120 s and outlive run_cli's 60 s timeout.
    env = {
        **shared_cache(),
        "ETCD_ENDPOINTS": http_server,
        "DYNLAUNCH_INFRA__CONNECT_TIMEOUT_S": "120",
    }
    result = run_cli(["up", "mocker", "--state-dir", str(state)], home, env, timeout=60)
    line = one_error_line(result, 3)
    for needle in ("ETCD_ENDPOINTS", http_server, "answers HTTP but is not etcd", "/version"):
        assert needle in line
    assert_nothing_made(state, home)


def test_listener_that_is_not_nats(tmp_path: Path, home: Path, silent_listener: str) -> None:
    state = tmp_path / "state"
    env = {
        **shared_cache(),
        "ETCD_ENDPOINTS": f"http://127.0.0.1:{closed_port()}",  # not there (yet): waited for
        "NATS_SERVER": silent_listener,
        "DYNLAUNCH_INFRA__CONNECT_TIMEOUT_S": "120",
    }
    result = run_cli(["up", "mocker", "--state-dir", str(state)], home, env, timeout=60)
    line = one_error_line(result, 3)
    for needle in ("NATS_SERVER", silent_listener, "not NATS", "INFO"):
        assert needle in line
    assert_nothing_made(state, home)


# -- the environment lacks a package ---------------------------------------------------------


def test_up_mocker_without_tokenizers(tmp_path: Path, home: Path) -> None:
    """A `tokenizers` that cannot be imported, first on PYTHONPATH; a cache without the model."""
    fake = tmp_path / "pypath" / "tokenizers"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text('raise ImportError("tokenizers is not installed (test)")\n')
    state = tmp_path / "state"
    env = {"PYTHONPATH": str(fake.parent), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    result = run_cli(["up", "mocker", "--state-dir", str(state)], home, env)
    line = one_error_line(result, 3)
    assert "tokenizers" in line
    assert "pip install tokenizers" in line
    assert "Traceback" not in result.stderr
    assert_nothing_made(state, home)


# -- plan without GPUs -------------------------------------------------------------------------

GPU_ARGS = ["--workers", "3", "--tp", "8"]  # 24 GPUs: more than any one host here has


def test_plan_without_enough_gpus_shows_placeholders(home: Path) -> None:
    result = run_cli(["plan", "sglang", *GPU_ARGS, "--json"], home)
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()  # warnings only; one about the GPUs
    assert all(x.startswith("dynlaunch: warning: ") for x in lines), result.stderr
    gpus = [x for x in lines if "placeholder" in x]
    assert len(gpus) == 1, result.stderr
    assert "needs 24" in gpus[0]
    plan = json.loads(result.stdout)
    workers = [p for p in plan["processes"] if p["role"] == "worker"]
    want = [[f"?{i * 8 + j}" for j in range(8)] for i in range(3)]
    assert [w["gpus"] for w in workers] == want
    assert [w["env"]["CUDA_VISIBLE_DEVICES"] for w in workers] == [",".join(g) for g in want]
    assert plan["warnings"] == [x.removeprefix("dynlaunch: warning: ") for x in lines]


def test_up_without_enough_gpus_still_refuses(tmp_path: Path, home: Path) -> None:
    state = tmp_path / "state"
    result = run_cli(["up", "sglang", *GPU_ARGS, "--state-dir", str(state)], home)
    line = one_error_line(result, 2)
    assert "needs 24 GPU(s)" in line
    assert_nothing_made(state, home)


@pytest.mark.parametrize(
    ("args", "env"),
    [(["--gpus", "0"], {}), ([], {"CUDA_VISIBLE_DEVICES": "0"})],
    ids=["--gpus", "CUDA_VISIBLE_DEVICES"],
)
def test_plan_with_chosen_gpus_still_refuses(
    args: list[str], env: dict[str, str], home: Path
) -> None:
    """Placeholders stand in only for GPUs nvidia-smi did not find, not for a user's choice."""
    result = run_cli(["plan", "sglang", *GPU_ARGS, *args], home, env)
    line = one_error_line(result, 2)
    assert "needs 24 GPU(s)" in line


# -- the GPU host's etcd and nats-server -------------------------------------------------------


def test_gpu_bundle_infra_packs_runnable_binaries(tmp_path: Path) -> None:
    search = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
    found = {name: shutil.which(name, path=search) for name in ("etcd", "nats-server", "etcdctl")}
    if not (found["etcd"] and found["nats-server"]):
        pytest.skip("etcd or nats-server is not installed here")
    out = tmp_path / f"infra-{uuid.uuid4().hex[:6]}"
    result = subprocess.run(
        ["bash", "scripts/gpu_bundle.sh", "--infra"],
        cwd=REPO,
        env=os.environ | {"GPU_INFRA_DIR": str(out)},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    archive = out / "infra-bin.tar.xz"
    with tarfile.open(archive) as tar:
        names = sorted(tar.getnames())
    assert names == sorted(name for name, path in found.items() if path)
    assert list(out.iterdir()) == [archive]  # no staging left behind
    # Unpacked as benchmarks/gpu/e2e.sh does; the binaries run and are the ones of this machine.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    subprocess.run(["tar", "-xJf", str(archive), "-C", str(bin_dir)], check=True)
    for name in names:
        path = found[name]
        assert path is not None
        assert (bin_dir / name).read_bytes() == Path(path).read_bytes()
        assert os.access(bin_dir / name, os.X_OK)
    etcd = subprocess.run(
        [str(bin_dir / "etcd"), "--version"], capture_output=True, text=True, check=True
    )
    assert "etcd Version" in etcd.stdout
    nats = subprocess.run(
        [str(bin_dir / "nats-server"), "--version"], capture_output=True, text=True, check=True
    )
    assert "nats-server" in nats.stdout
