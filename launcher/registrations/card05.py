"""Dynamo 0.5's model card, from the launcher's side: how many workers of a model registered, and
the migration limit the frontend reads from the card.

A 0.5 worker writes the card `mdc/<slug>` only if it is absent (no lease: it outlives every run)
and then one `models/<uuid>` entry on its own lease. The frontend reads the card once, when it
first sees the model, and takes the card's `migration_limit` (0.5's frontend has no flag for it,
and its mocker none either). So `up` sets the limit in the card after the workers registered and
before the frontend starts; a card left by an older run with another limit is corrected the same
way. Only that one field of the card is written, and only if nobody wrote the card in between.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from launcher.errors import StartupError
from launcher.registrations import layouts
from launcher.registrations.etcd import Etcd, KeyValue
from launcher.registrations.layouts import Entry, check_namespace


def registered(entries: Sequence[Entry], namespace: str, model: str) -> int:
    """How many workers registered ``model`` in ``namespace``: its models/ entries (one per
    worker, each on the worker's lease)."""
    return sum(
        1 for _, ns, name in layouts.models(tuple(entries)) if (ns, name) == (namespace, model)
    )


def with_migration_limit(raw: bytes, limit: int) -> bytes | None:
    """The card with ``migration_limit`` set to ``limit``; None when it already is (or the card
    is not a JSON object: it is left alone)."""
    card = layouts.load(raw)
    if not isinstance(card, dict) or card.get("migration_limit") == limit:
        return None
    return json.dumps({**card, "migration_limit": limit}, separators=(",", ":")).encode()


def count_registered(etcd_url: str, namespace: str, model: str) -> int:
    check_namespace(namespace)
    with Etcd(etcd_url) as etcd:
        found = etcd.get_prefix("models/")
    return registered([_entry(kv) for kv in found], namespace, model)


def set_migration_limit(etcd_url: str, model: str, limit: int) -> int | None:
    """Set the card's migration limit: the limit it had before (equal to ``limit`` when nothing
    was written), or None when there is no card. Raises StartupError when the card keeps
    changing under us."""
    key = f"mdc/{layouts.slugify(model)}"
    with Etcd(etcd_url) as etcd:
        for _ in range(5):
            kv = etcd.get(key)
            if kv is None:
                return None
            before = layouts.load(kv.value)
            old = before.get("migration_limit") if isinstance(before, dict) else None
            new = with_migration_limit(kv.value, limit)
            if new is None or etcd.put_if_unchanged(kv, new):
                return old if isinstance(old, int) else limit
    raise StartupError(
        f"etcd {key}: the model card kept changing while setting its migration limit"
    )


def _entry(kv: KeyValue) -> Entry:
    return Entry(kv.key, kv.value, kv.lease, kv.mod_revision)
