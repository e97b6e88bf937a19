"""Dynamo's registration layouts: which etcd keys, store files and JetStream streams belong to a
namespace, who owns each, and which addresses it advertises. Pure: strings and bytes in, facts out.

1.x etcd:  v1/instances/NS/COMP/EP/LEASEHEX, v1/mdc/NS/COMP/EP/LEASEHEX[/LORA],
           v1/event_channels/namespace/NS/..., v1/event_sources/namespace/NS/... (all on the
           owner's lease; instance id == lease id)
1.x files: $DYN_FILE_KV/v1/BUCKET/<percent-encoded key>, the same keys less "v1/BUCKET/"
0.5 etcd:  instances/NS/COMP/EP:LEASEHEX, models/<uuid> (the value names NS), kv_routers/NS/...
           (a frontend's), mdc/<slug> (no lease, shared by every namespace)
0.5 NATS:  object store OBJ_<slug>, streams namespace-NS-component-*, OBJ_namespace-NS-component-*
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from launcher.errors import ConfigError
from launcher.names import is_namespace

NATS_SUBJECT = "nats:"  # an address that is a NATS subject (0.5's request plane), not host:port
SYSTEM_URL_RE = re.compile(r"^https?://([^/]+)/v1/metadata/")


def check_namespace(namespace: str) -> str:
    if not is_namespace(namespace):
        raise ConfigError(
            f"--namespace {namespace!r}: a Dynamo namespace is letters, digits, - and _ only"
        )
    return namespace


def registration_prefixes(ns: str) -> dict[str, str]:
    """Dynamo 1.x's etcd prefix of each kind of registration of namespace ``ns`` (what `status`
    counts): the namespace is a whole path segment, and the trailing / keeps `ns2` out."""
    return {
        "instances": f"v1/instances/{ns}/",
        "model_cards": f"v1/mdc/{ns}/",
        "event_channels": f"v1/event_channels/namespace/{ns}/",
        "event_sources": f"v1/event_sources/namespace/{ns}/",
    }


def counts_05(entries: Sequence[Entry], ns: str) -> dict[str, int]:
    """0.5's registrations of namespace ``ns`` per kind (what `status` counts), from the entries
    under instances/NS/, models/, mdc/ and kv_routers/NS/: a card counts when a model of the
    namespace uses its name."""
    mine = [name for _, model_ns, name in models(tuple(entries)) if model_ns == ns]
    return {
        "instances": sum(e.key.startswith(f"instances/{ns}/") for e in entries),
        "models": len(mine),
        "model_cards": sum(name in mine for _, name in cards(tuple(entries)).values()),
        "routers": sum(e.key.startswith(f"kv_routers/{ns}/") for e in entries),
    }


def prefixes_05(ns: str) -> tuple[str, ...]:
    """The etcd prefixes `counts_05` reads."""
    return (f"instances/{ns}/", "models/", "mdc/", f"kv_routers/{ns}/")


def nats_subjects(value: Any) -> tuple[str, ...]:
    """0.5's request-plane subjects an instance advertises ({"transport": {"nats_tcp": S}})."""
    transport = value.get("transport") if isinstance(value, dict) else None
    subject = transport.get("nats_tcp") if isinstance(transport, dict) else None
    return (subject,) if isinstance(subject, str) and subject else ()


def own_prefixes(ns: str) -> tuple[str, ...]:
    """The etcd prefixes that hold namespace ``ns``'s keys and nothing else: 1.x's registrations,
    then 0.5's; the trailing / keeps `ns2`, `ns-agg` and `ns_x` out."""
    check_namespace(ns)
    return (
        *registration_prefixes(ns).values(),
        f"instances/{ns}/",
        f"kv_routers/{ns}/",
    )


def etcd_prefixes(ns: str) -> tuple[str, ...]:
    """Every etcd prefix to read for namespace ``ns``: its own, then 0.5's shared ones."""
    return (
        *own_prefixes(ns),
        "models/",  # 0.5: the value names the namespace
        "mdc/",  # 0.5: lease-less cards, shared by every namespace
    )


@dataclass(frozen=True)
class Entry:
    """One registration as stored: an etcd key, or a store file (key relative to its root)."""

    key: str
    value: bytes
    lease: int = 0  # etcd lease; 0: none
    revision: int = 0  # etcd mod_revision
    mtime: float | None = None  # files only


@dataclass(frozen=True)
class Reg:
    """An entry of the namespace, read."""

    entry: Entry
    kind: str  # instances, model cards, event channels, routers, files
    owner: int  # lease (etcd) or instance id (files); 0: unknown
    instance: bool  # an instance key: what makes its lease a worker's
    rpc: tuple[str, ...]  # advertised transport addresses, "host:port"
    system: tuple[str, ...]  # system ports its model card names, "host:port"


def load(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return None


def addresses(value: Any) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Transport addresses ({"tcp": "host:port/..."}, or 0.5's {"nats_tcp": SUBJECT} as
    "nats:SUBJECT") and system ports (.../v1/metadata/ URLs): string members of objects at any
    depth (not the strings in arrays)."""
    rpc: set[str] = set()
    system: set[str] = set()
    todo = [value]
    while todo:  # a loop, not a recursive generator: half the time (10,000 values: ~20 ms)
        node = todo.pop()
        if isinstance(node, list):
            todo.extend(node)
        elif isinstance(node, dict):
            for key, item in node.items():
                if isinstance(item, str):
                    if key == "tcp" and ":" in item:
                        rpc.add(item.split("/", 1)[0])
                    elif key == "nats_tcp" and item:
                        rpc.add(NATS_SUBJECT + item)
                    elif "/v1/metadata/" in item and (match := SYSTEM_URL_RE.match(item)):
                        system.add(match.group(1))
                elif isinstance(item, (dict, list)):
                    todo.append(item)
    return tuple(sorted(rpc)), tuple(sorted(system))


def _hex(text: str) -> int:
    try:
        return int(text, 16)
    except ValueError:
        return 0


def _int_at(value: Any, *path: str) -> int:
    for step in path:
        value = value.get(step) if isinstance(value, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def model_namespace(value: Any) -> str | None:
    """The namespace a 0.5 models/<uuid> value names."""
    endpoint = value.get("endpoint") if isinstance(value, dict) else None
    ns = endpoint.get("namespace") if isinstance(endpoint, dict) else None
    return ns if isinstance(ns, str) else None


def parse_key(entry: Entry, ns: str, publishers: dict[int, int] | None = None) -> Reg | None:
    """The registration, if ``entry`` is an etcd key of namespace ``ns`` (exact segment match).
    ``publishers`` maps event publisher ids to their worker (from the event sources)."""
    parts = entry.key.split("/")
    value = load(entry.value)
    owner, instance = entry.lease, False
    if parts[:3] == ["v1", "instances", ns] and len(parts) >= 6:
        kind, instance, owner = "instances", True, owner or _hex(parts[5])
    elif parts[:3] == ["v1", "mdc", ns] and len(parts) >= 6:
        kind, owner = "model cards", owner or _hex(parts[5])
    elif (
        parts[1:2] in (["event_channels"], ["event_sources"])
        and parts[0] == "v1"
        and (parts[2:4] == ["namespace", ns])
    ):
        kind = "event channels"
        owner = owner or _int_at(value, "metadata", "worker", "worker_id")
        owner = owner or (publishers or {}).get(_int_at(value, "instance_id"), 0)
    elif parts[:2] == ["instances", ns] and len(parts) >= 4:
        kind, instance = "instances", True
        owner = owner or _hex(parts[-1].rpartition(":")[2])
    elif parts[:2] == ["kv_routers", ns] and len(parts) >= 3:
        kind = "routers"
    elif parts[0] == "models" and len(parts) == 2 and model_namespace(value) == ns:
        kind = "model cards"
    else:
        return None
    rpc, system = addresses(value)
    return Reg(entry, kind, owner, instance, rpc, system)


def parse_keys(entries: Sequence[Entry], ns: str) -> tuple[Reg, ...]:
    """Every registration of namespace ``ns`` among etcd ``entries``, in their order."""
    pubs = publishers(entries)
    return tuple(r for e in entries if (r := parse_key(e, ns, pubs)) is not None)


def parse_file(entry: Entry, ns: str, publishers: dict[int, int] | None = None) -> Reg | None:
    """The registration, if ``entry`` is a file-store entry of namespace ``ns``. ``publishers``
    maps event publisher ids to their worker (from the event_sources files)."""
    parts = entry.key.split("/")
    if len(parts) != 3 or parts[0] != "v1":
        return None
    bucket, name = parts[1], unquote(parts[2]).split("/")
    value = load(entry.value)
    if bucket in ("instances", "mdc") and name[0] == ns and len(name) >= 4:
        owner = _hex(name[3])
    elif bucket in ("event_channels", "event_sources") and name[:2] == ["namespace", ns]:
        owner = _int_at(value, "metadata", "worker", "worker_id")
        owner = owner or (publishers or {}).get(_int_at(value, "instance_id"), 0)
    else:
        return None
    rpc, system = addresses(value)
    return Reg(entry, "files", owner, bucket == "instances", rpc, system)


def publishers(entries: Iterable[Entry]) -> dict[int, int]:
    """Event publisher id -> worker instance id, from the event sources (keys or files)."""
    out: dict[int, int] = {}
    for entry in entries:
        if entry.key.startswith("v1/event_sources/"):
            value = load(entry.value)
            pub = _int_at(value, "publisher_id")
            worker = _int_at(value, "metadata", "worker", "worker_id")
            if pub and worker:
                out[pub] = worker
    return out


def slugify(name: str) -> str:
    """Dynamo 0.5's card slug: lowercase; anything but a-z, 0-9, - and _ becomes _."""
    out = "".join(c if c.isascii() and (c.isalnum() or c in "-_") else "_" for c in name.lower())
    return out.lstrip("_")


def cards(entries: tuple[Entry, ...]) -> dict[str, tuple[Entry, str]]:
    """0.5's mdc/<slug> cards: slug -> (entry, the model name it shows)."""
    found: dict[str, tuple[Entry, str]] = {}
    for entry in entries:
        parts = entry.key.split("/")
        if len(parts) == 2 and parts[0] == "mdc" and parts[1]:
            value = load(entry.value)
            name = value.get("display_name") if isinstance(value, dict) else None
            found[parts[1]] = (entry, name if isinstance(name, str) else "")
    return found


def models(entries: tuple[Entry, ...]) -> Iterator[tuple[Entry, str, str]]:
    """0.5's models/<uuid> entries of every namespace: (entry, namespace, model name)."""
    for entry in entries:
        parts = entry.key.split("/")
        if len(parts) != 2 or parts[0] != "models":
            continue
        value = load(entry.value)
        ns = model_namespace(value)
        name = value.get("name") if isinstance(value, dict) else None
        if ns is not None and isinstance(name, str):
            yield entry, ns, name


def namespace_stream(name: str, ns: str) -> bool:
    """Is this JetStream stream one of namespace ``ns``? One whose rest holds another
    "-component-" may be a longer namespace's (ns "a-component-b") and is never taken."""
    for prefix in (f"namespace-{ns}-component-", f"OBJ_namespace-{ns}-component-"):
        if name.startswith(prefix):
            rest = name[len(prefix) :]
            return bool(rest) and "-component-" not in rest
    return False
