"""The frontend readiness probes as rendered, run for real against a stand-in frontend (a real HTTP
server on loopback answering like Dynamo frontends do): ready only when a worker is registered
and the model is served, never on the HTTP code of /health alone."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from .k8skit import REF_MODEL, SGLANG, as_kubectl_reads, dgd_of, load, probes

INSTANCE = {"component": "backend", "endpoint": "generate", "namespace": "sglang"}
ENDPOINT = "dyn://sglang.backend.generate"
HEALTHY = {"status": "healthy", "endpoints": [ENDPOINT], "instances": [INSTANCE]}
NO_WORKER = {"status": "healthy", "endpoints": [], "instances": []}  # 0.5 and 1.x, no worker yet
# Older frontends: HTTP 200 with an unhealthy status (here even with an instance listed).
UNHEALTHY = HEALTHY | {"status": "unhealthy"}
CHAT = {"choices": [{"index": 0, "message": {"role": "assistant", "content": "p"}}]}


class FakeFrontend(ThreadingHTTPServer):
    health: tuple[int, dict[str, Any]] = (200, HEALTHY)
    models: list[str] = [REF_MODEL]  # noqa: RUF012
    chat_status = 200


class Handler(BaseHTTPRequestHandler):
    server: FakeFrontend

    def do_GET(self) -> None:
        if self.path == "/health":
            self._answer(*self.server.health)
        elif self.path == "/v1/models":
            data = [{"id": m, "object": "model"} for m in self.server.models]
            self._answer(200, {"object": "list", "data": data})
        else:
            self._answer(404, {"error": "not found"})

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        ok = self.path == "/v1/chat/completions" and self.server.chat_status == 200
        self._answer(200 if ok else self.server.chat_status, CHAT if ok else {"error": "x"})

    def _answer(self, code: int, body: dict[str, Any]) -> None:
        raw = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def frontend() -> Iterator[FakeFrontend]:
    server = FakeFrontend(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(5)


def readiness(plain: bool) -> list[str]:
    dgd = dgd_of(as_kubectl_reads(load(SGLANG), plain=plain))
    command: list[str] = probes(dgd, "Frontend")["readiness"]["exec"]["command"]
    return command


def run_probe(command: list[str], url: str) -> int:
    """The probe command as kubelet runs it, with this machine's interpreters and the fake URL."""
    local = {"python3": sys.executable, "dynlaunch": str(Path(sys.executable).parent / "dynlaunch")}
    argv = [local.get(command[0], command[0]), *command[1:]]
    argv = [url if arg == "http://127.0.0.1:8000" else arg for arg in argv]
    return subprocess.run(argv, capture_output=True, timeout=60, check=False).returncode


def url_of(server: FakeFrontend) -> str:
    host, port = server.server_address[:2]
    return f"http://{host!s}:{port}"


@pytest.mark.parametrize(
    ("health", "models", "code"),
    [
        ((200, UNHEALTHY), [REF_MODEL], 1),
        ((200, NO_WORKER), [REF_MODEL], 1),
        ((503, {"status": "notready"}), [REF_MODEL], 1),
        ((200, HEALTHY), ["another-model"], 1),
        ((200, HEALTHY), [REF_MODEL], 0),
    ],
    ids=["200-unhealthy", "no-worker", "503", "model-missing", "ready"],
)
def test_plain_readiness(
    frontend: FakeFrontend, health: tuple[int, dict[str, Any]], models: list[str], code: int
) -> None:
    frontend.health, frontend.models = health, models
    assert run_probe(readiness(plain=True), url_of(frontend)) == code


def test_plain_readiness_fails_when_nothing_listens(frontend: FakeFrontend) -> None:
    url = url_of(frontend)
    frontend.shutdown()
    frontend.server_close()
    assert run_probe(readiness(plain=True), url) == 1


@pytest.mark.parametrize(("chat_status", "code"), [(200, 0), (500, 1)], ids=["ready", "no-answer"])
def test_role_readiness_is_dynlaunch_health(
    frontend: FakeFrontend, chat_status: int, code: int
) -> None:
    frontend.chat_status = chat_status
    assert run_probe(readiness(plain=False), url_of(frontend)) == code
