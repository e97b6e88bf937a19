"""natsjs.service_subjects against a real nats-server and real NATS micro services (child
processes shaped like Dynamo 0.5 workers): which subjects live instances advertise."""

from __future__ import annotations

import signal
import uuid
from collections.abc import Iterator

import pytest
from clearkit import NatsServices

from launcher.registrations import natsjs


@pytest.fixture
def services(nats_url: str) -> Iterator[NatsServices]:
    kit = NatsServices(nats_url)
    yield kit
    kit.stop()


def subjects(service: str, lease: str) -> set[str]:
    return {f"{service}.generate-{lease}", f"{service}.load_metrics-{lease}"}


def test_live_instances_answer_and_a_killed_one_does_not(
    nats_url: str, services: NatsServices
) -> None:
    svc = f"t{uuid.uuid4().hex[:6]}_backend"
    other = f"u{uuid.uuid4().hex[:6]}_backend"
    first = services.start(svc, "1a")
    second = services.start(svc, "2b")
    services.start(other, "3c")
    assert natsjs.service_subjects(nats_url, [svc]) == subjects(svc, "1a") | subjects(svc, "2b")
    both = natsjs.service_subjects(nats_url, [svc, other])
    assert both == subjects(svc, "1a") | subjects(svc, "2b") | subjects(other, "3c")

    first.send_signal(signal.SIGKILL)
    first.wait(10)
    assert natsjs.service_subjects(nats_url, [svc]) == subjects(svc, "2b")
    second.send_signal(signal.SIGKILL)
    second.wait(10)
    assert natsjs.service_subjects(nats_url, [svc]) == set()  # "no responders"
    assert natsjs.service_subjects(nats_url, [other]) == subjects(other, "3c")


def test_nothing_asked_nothing_live(nats_url: str) -> None:
    assert natsjs.service_subjects(nats_url, []) == set()
    assert natsjs.service_subjects(nats_url, [f"none{uuid.uuid4().hex[:6]}_backend"]) == set()
