"""`dynlaunch up`'s hold on its namespace in etcd: the lease-backed lock (one launcher per
namespace, taken over from a dead launcher of this host), the stale-only clear before the frontend
starts, and the fencing helpers (find a worker's lease by its RPC port, revoke it)."""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable

from launcher import procid
from launcher.errors import ConfigError
from launcher.registrations import layouts
from launcher.registrations.decide import LOCK_PREFIX
from launcher.registrations.etcd import Etcd
from launcher.registrations.layouts import check_namespace
from launcher.registrations.runner import Endpoints, run

log = logging.getLogger(__name__)


def clear_stale(
    etcd_url: str, namespace: str, nats_url: str | None = None
) -> dict[str, dict[str, int]]:
    """Remove the namespace's stale registrations (the default mode); counts per kind."""
    return run(namespace, Endpoints("etcd", etcd=etcd_url, nats=nats_url)).counts()


def lease_of_rpc_port(
    etcd_url: str, namespace: str, port: int, host: str = "127.0.0.1"
) -> int | None:
    """The lease of the instance in v1/instances/NS/ whose transport is <host>:<port>/...;
    the newest when there are several; None when there is none."""
    check_namespace(namespace)
    with Etcd(etcd_url) as etcd:
        found = [
            kv
            for kv in etcd.get_prefix(f"v1/instances/{namespace}/")
            if kv.lease and f"{host}:{port}" in layouts.addresses(layouts.load(kv.value))[0]
        ]
    return max(found, key=lambda kv: kv.create_revision).lease if found else None


def subjects_by_lease(etcd_url: str, namespace: str) -> dict[int, list[str]]:
    """Dynamo 0.5: the NATS subjects the instances in instances/NS/ advertise, per lease."""
    check_namespace(namespace)
    with Etcd(etcd_url) as etcd:
        found = etcd.get_prefix(f"instances/{namespace}/")
    subjects: dict[int, list[str]] = {}
    for kv in found:
        if kv.lease:
            subjects.setdefault(kv.lease, []).extend(layouts.nats_subjects(layouts.load(kv.value)))
    return subjects


def leases_without_subscriber(
    by_lease: dict[int, list[str]], subscribed: Callable[[str], bool | None]
) -> list[int]:
    """The leases none of whose NATS subjects has a subscriber any more (the worker's connection
    is gone: it died); an unknown answer is alive."""
    return [
        lease
        for lease, names in by_lease.items()
        if names and all(subscribed(name) is False for name in names)
    ]


def revoke(etcd_url: str, lease: int) -> bool:
    """Revoke one lease (its keys go with it); False when it was already gone."""
    with Etcd(etcd_url) as etcd:
        return etcd.lease_revoke(lease)


def lock_holder(run_id: str) -> str:
    """This launcher as its namespace lock names it: host, pid, start time, pid namespace, run."""
    me = procid.me()
    return (
        f"{socket.gethostname()} pid {me['pid']} start {me['start']} "
        f"pidns {procid.pid_namespace()} run {run_id}"
    )


def holder_is_dead(holder: str) -> bool:
    """True only for a holder on this host (and pid namespace) whose process is gone or whose
    pid now belongs to another process; a holder elsewhere, or one we cannot read, is alive."""
    host, *rest = holder.split() or [""]
    fields = dict(zip(rest[::2], rest[1::2], strict=False))
    pid = fields.get("pid", "")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    if fields.get("pidns", procid.pid_namespace()) != procid.pid_namespace():
        return False  # a container sharing the hostname: its pids are not ours to look up
    start = fields.get("start")
    if start is None or not start.isdigit():  # a lock written before start times: pid only
        return procid.start_time(int(pid)) is None
    return not procid.same_process(int(pid), int(start))


def acquire_lock(etcd_url: str, namespace: str, holder: str, ttl: int) -> int:
    """Claim ``dynlaunch/locks/<namespace>`` on a fresh lease (put-if-absent) and return the
    lease; refresh it with `keep_lock` well within ``ttl``, end it with `release_lock`. A lock
    left by a dead launcher of this host (SIGKILLed: its lease lives on for ``ttl``) is taken
    over at once; a live holder's is refused (exit 2, naming it)."""
    check_namespace(namespace)
    key = LOCK_PREFIX + namespace
    with Etcd(etcd_url) as etcd:
        lease = etcd.lease_grant(ttl)
        existing = etcd.put_if_absent(key, holder, lease)
        if existing is not None and holder_is_dead(
            other := existing.value.decode(errors="replace")
        ):
            if existing.lease:
                etcd.lease_revoke(existing.lease)
            else:
                etcd.delete_if_unchanged(key, existing.mod_revision)
            log.warning(
                "dynlaunch: took over namespace %s from a dead launcher (%s)", namespace, other
            )
            existing = etcd.put_if_absent(key, holder, lease)
        if existing is None:
            return lease
        etcd.lease_revoke(lease)
    other = existing.value.decode(errors="replace")
    raise ConfigError(f"namespace {namespace} is already run by dynlaunch on {other}")


def keep_lock(etcd_url: str, lease: int) -> bool:
    """Refresh the lock's lease; False when it is gone (the lock was lost)."""
    with Etcd(etcd_url) as etcd:
        return etcd.lease_keepalive(lease) is not None


def release_lock(etcd_url: str, lease: int) -> None:
    with Etcd(etcd_url) as etcd:
        etcd.lease_revoke(lease)
