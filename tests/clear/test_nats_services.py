"""natsjs.service_subjects against a real nats-server and real NATS micro services (child
processes shaped like Dynamo 0.5 workers): which subjects live instances advertise."""

from __future__ import annotations

import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from launcher.registrations import natsjs

CHILD = Path(__file__).resolve().parents[1] / "children" / "nats_service.py"


@pytest.fixture
def services(nats_url: str) -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:
        proc.kill()
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()


def start(started: list[subprocess.Popen[str]], url: str, service: str, lease: str) -> None:
    proc = subprocess.Popen(
        [sys.executable, str(CHILD), url, service, lease], stdout=subprocess.PIPE, text=True
    )
    started.append(proc)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"


def subjects(service: str, lease: str) -> set[str]:
    return {f"{service}.generate-{lease}", f"{service}.load_metrics-{lease}"}


def test_live_instances_answer_and_a_killed_one_does_not(
    nats_url: str, services: list[subprocess.Popen[str]]
) -> None:
    svc = f"t{uuid.uuid4().hex[:6]}_backend"
    other = f"u{uuid.uuid4().hex[:6]}_backend"
    start(services, nats_url, svc, "1a")
    start(services, nats_url, svc, "2b")
    start(services, nats_url, other, "3c")
    assert natsjs.service_subjects(nats_url, [svc]) == subjects(svc, "1a") | subjects(svc, "2b")
    both = natsjs.service_subjects(nats_url, [svc, other])
    assert both == subjects(svc, "1a") | subjects(svc, "2b") | subjects(other, "3c")

    services[0].send_signal(signal.SIGKILL)
    services[0].wait(10)
    assert natsjs.service_subjects(nats_url, [svc]) == subjects(svc, "2b")
    services[1].send_signal(signal.SIGKILL)
    services[1].wait(10)
    assert natsjs.service_subjects(nats_url, [svc]) == set()  # "no responders"
    assert natsjs.service_subjects(nats_url, [other]) == subjects(other, "3c")


def test_nothing_asked_nothing_live(nats_url: str) -> None:
    assert natsjs.service_subjects(nats_url, []) == set()
    assert natsjs.service_subjects(nats_url, [f"none{uuid.uuid4().hex[:6]}_backend"]) == set()
