"""Talk to a running `dynlaunch up` through its state dir: find it, read its status, stop it."""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from launcher import procid
from launcher.errors import NotRunningError, StartupError
from launcher.statedir import states_root


def read_info(state_dir: Path) -> dict[str, Any] | None:
    """The running launcher's launcher.json, or None when no live launcher owns ``state_dir``."""
    try:
        info = json.loads((state_dir / "launcher.json").read_text())
    except (OSError, ValueError):
        return None
    # The pid alone is not the launcher: after a crash it may belong to any later process. A record
    # without a start time (written before dynlaunch recorded one) cannot be verified: not running.
    if not isinstance(info, dict) or not procid.same_process(info.get("pid"), info.get("start")):
        return None
    info["state_dir"] = str(state_dir)
    return info


def find(
    state_dir: str | None, namespace: str | None, environ: Mapping[str, str]
) -> dict[str, Any]:
    """The launcher named by --state-dir or --namespace, else the only one running."""
    if state_dir is not None or namespace is not None:
        where = Path(state_dir) if state_dir else states_root(environ) / str(namespace)
        info = read_info(where)
        if info is None:
            raise NotRunningError(f"no running dynlaunch with state dir {where}")
        return info
    running = [i for d in sorted(states_root(environ).glob("*")) if (i := read_info(d))]
    if not running:
        raise NotRunningError(f"no running dynlaunch found under {states_root(environ)}")
    if len(running) > 1:
        names = ", ".join(str(i["namespace"]) for i in running)
        raise NotRunningError(f"several dynlaunch runs ({names}): pick one with --namespace")
    return running[0]


def status(info: Mapping[str, Any]) -> dict[str, Any]:
    """Children (status.json), the frontend's health and models, the namespace's registrations."""
    # httpx (probes): imported here, `clear-namespace` only calls read_info
    from launcher import credentials, probes

    etcd, nats = str(info.get("etcd") or ""), str(info.get("nats") or "")
    credentials.activate(credentials.for_run_record(info, etcd, nats, os.environ))

    try:
        data = json.loads((Path(info["state_dir"]) / "status.json").read_text())
    except (OSError, ValueError):
        data = {"children": []}
    now = time.time()
    children = []
    for row in data.get("children", []):
        started = row.pop("started", None)
        row["uptime_s"] = round(now - started, 1) if started else None
        children.append(row)
    url, model = str(info["url"]), str(info["model"])
    listed = probes.models(url)
    frontend = {
        "url": url,
        "healthy": probes.http_ok(f"{url}/health"),
        "models": listed,
        "ready": all(m in listed for m in info.get("models") or [model]),
    }
    return {
        "launcher": {
            "pid": info["pid"],
            "namespace": info["namespace"],
            "state_dir": info["state_dir"],
            "discovery": info.get("discovery"),  # None: recorded by a dynlaunch before it
        },
        "children": children,
        "operation": data.get("operation"),  # `dynlaunch restart` in flight, or None
        "frontend": frontend,
        "registrations": registrations(
            str(info.get("etcd") or ""), str(info["namespace"]), str(info.get("layout") or "v1")
        ),
        "models": per_model(info, children, listed),
    }


def per_model(
    info: Mapping[str, Any], children: list[dict[str, Any]], listed: list[str]
) -> list[dict[str, Any]]:
    """Each model: its workers (running / planned), its instances in etcd (None: unknown) and
    whether the frontend lists it."""
    models = info.get("models") or {str(info["model"]): {"component": "backend", "workers": []}}
    etcd, ns = str(info.get("etcd") or ""), str(info["namespace"])
    layout = str(info.get("layout") or "v1")
    out = []
    for name, about in models.items():
        workers = [c for c in children if c.get("model", info["model"]) == name
                   and c.get("role") == "worker"]  # fmt: skip
        component = str(about.get("component") or "backend")
        out.append({
            "model": name,
            "component": component,
            "workers": len(workers),
            "running": sum(c.get("state") == "running" for c in workers),
            "instances": instances(etcd, ns, component, layout),
            "listed": name in listed,
        })  # fmt: skip
    return out


def instances(etcd: str, namespace: str, component: str, layout: str) -> int | None:
    """How many generate instances of ``component`` are registered; None: etcd unreachable."""
    from launcher.registrations.etcd import Etcd, Timeout

    prefix = (
        f"v1/instances/{namespace}/{component}/generate/"
        if layout == "v1"
        else f"instances/{namespace}/{component}/generate:"
    )
    try:
        with Etcd(etcd, Timeout(connect=1.0, read=2.0)) as client:
            return client.count_prefix(prefix)
    except StartupError:
        return None


def registrations(etcd: str, namespace: str, layout: str = "v1") -> dict[str, int | None]:
    """How many keys of each kind the namespace has in etcd, in the run's Dynamo layout ("v1" or
    "0.5", as `up` recorded it); None: etcd unreachable."""
    from launcher.registrations import layouts
    from launcher.registrations.etcd import Etcd, Timeout

    prefixes = layouts.registration_prefixes(namespace)
    kinds = list(prefixes) if layout == "v1" else ["instances", "models", "model_cards", "routers"]
    try:
        with Etcd(etcd, Timeout(connect=1.0, read=2.0)) as client:  # a probe's short timeouts
            if layout == "v1":
                return {kind: client.count_prefix(prefix) for kind, prefix in prefixes.items()}
            entries = [
                layouts.Entry(kv.key, kv.value, kv.lease)
                for prefix in layouts.prefixes_05(namespace)
                for kv in client.get_prefix(prefix)
            ]
            return dict(layouts.counts_05(entries, namespace))
    except StartupError:
        return dict.fromkeys(kinds)


def stop(info: Mapping[str, Any], timeout: float) -> bool:
    """SIGTERM the launcher and wait for it to exit; True when it did within ``timeout``.

    The signal goes through a pidfd opened before the start time is checked, so it reaches the
    launcher of ``info`` or nobody, never a process that got its pid later."""
    pid, start = info.get("pid"), info.get("start")
    try:
        pidfd = os.pidfd_open(int(str(pid)))
    except (ProcessLookupError, ValueError):
        raise NotRunningError(f"dynlaunch pid {pid} is not running") from None
    try:
        if not procid.same_process(pid, start):
            raise NotRunningError(f"pid {pid} is no longer dynlaunch (not running); not signalled")
        with contextlib.suppress(ProcessLookupError):
            signal.pidfd_send_signal(pidfd, signal.SIGTERM)
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)  # readable once the process has exited
        return bool(poller.poll(max(timeout, 0.0) * 1000))
    finally:
        os.close(pidfd)
