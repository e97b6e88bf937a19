"""The keys and values Dynamo 1.4.2 writes to etcd, as fixtures: one worker's five keys
(generate and kv-query instances, its model card, its KV-event channel and source)."""

from __future__ import annotations

import json
from typing import Any

from testkit.etcd import Gateway, HasEndpoints


def prefixes_1x(ns: str) -> list[str]:
    """The etcd prefixes of a Dynamo 1.x namespace, each ending with "/"."""
    return [
        f"v1/instances/{ns}/",
        f"v1/mdc/{ns}/",
        f"v1/event_channels/namespace/{ns}/",
        f"v1/event_sources/namespace/{ns}/",
    ]


def worker_1x(
    ns: str, lease: int, rpc_port: int, system_port: int | None, pub: int = 0,
    context_length: int | None = None,
) -> dict[str, dict[str, Any]]:  # fmt: skip
    """The keys and values one 1.x mocker registers (all on its lease in etcd)."""
    hexid = f"{lease:x}"
    pub = pub or (lease & 0xFFFFFFFFFFFF)
    pubhex = f"{pub:x}"
    tcp = f"127.0.0.1:{rpc_port}/{hexid}"
    card: dict[str, Any] = {"display_name": "tiny", "slug": "tiny"}
    if context_length is not None:
        card["context_length"] = context_length
    if system_port is not None:
        base = f"http://127.0.0.1:{system_port}/v1/metadata/{ns}/backend/generate/tiny/_base"
        card["model_info"] = {"hf_config_json": {"path": f"{base}/config.json"}}
    scope = {
        "kind": "endpoint",
        "endpoint": {"namespace": ns, "component": "backend", "name": "generate"},
    }
    topic = f"namespace/{ns}/component/backend/endpoint/generate/topic/kv-events/{pubhex}"
    return {
        f"v1/instances/{ns}/backend/generate/{hexid}": {
            "type": "Endpoint", "component": "backend", "endpoint": "generate", "namespace": ns,
            "instance_id": lease, "transport": {"tcp": f"{tcp}/generate"},
        },
        f"v1/instances/{ns}/backend/worker_kv_query_source_{pubhex}/{hexid}": {
            "type": "Endpoint", "component": "backend", "namespace": ns, "instance_id": lease,
            "endpoint": f"worker_kv_query_source_{pubhex}",
            "transport": {"tcp": f"{tcp}/worker_kv_query_source_{pubhex}"},
        },
        f"v1/mdc/{ns}/backend/generate/{hexid}": {
            "type": "Model", "namespace": ns, "instance_id": lease, "card_json": card,
        },
        f"v1/event_channels/{topic}": {
            "type": "EventChannel", "scope": scope, "topic": "kv-events", "instance_id": pub,
            "transport": {"kind": "Nats", "config": {"subject_prefix": f"namespace.{ns}"}},
        },
        f"v1/event_sources/{topic}": {
            "type": "EventSource", "scope": scope, "topic": "kv-events", "publisher_id": pub,
            "metadata": {"worker": {"worker_id": lease, "dp_rank": 0}},
        },
    }  # fmt: skip


def stale_workers_1x(
    ns: str, count: int, rpc_port: int, system_port: int, first: int = 0x7A000000,
    context_length: int | None = None,
) -> dict[str, dict[str, Any]]:  # fmt: skip
    """``count`` dead 1.x workers' keys (ids from ``first``), to be written without a lease."""
    out: dict[str, dict[str, Any]] = {}
    for n in range(count):
        out |= worker_1x(ns, first + n, rpc_port, system_port, context_length=context_length)
    return out


def put_worker_1x(
    target: str | HasEndpoints | Gateway, ns: str, lease: int, rpc_port: int,
    system_port: int | None, pub: int = 0,
) -> list[str]:  # fmt: skip
    """Write `worker_1x`'s keys on ``lease`` through etcd's gateway (``target``'s, or a
    Gateway given with its login); their names."""
    gateway = target if isinstance(target, Gateway) else Gateway(target)
    values = worker_1x(ns, lease, rpc_port, system_port, pub)
    for key, value in values.items():
        gateway.put(key, json.dumps(value), lease)
    return sorted(values)
