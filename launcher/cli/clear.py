"""`dynlaunch clear-namespace`: flags -> endpoints -> runner.run -> a table, or JSON."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from launcher.errors import ConfigError

if TYPE_CHECKING:
    from launcher.registrations.decide import Decision
    from launcher.registrations.runner import Endpoints

NamespaceOpt = Annotated[
    str, typer.Option("--namespace", help="The Dynamo namespace (letters, digits, - and _).")
]
EtcdOpt = Annotated[
    str | None,
    typer.Option("--etcd", help="etcd URL(s), comma-separated (default: ETCD_ENDPOINTS)."),
]
NatsOpt = Annotated[
    str | None, typer.Option("--nats", help="NATS URL (default: NATS_SERVER); streams, 0.5 stores.")
]


class Discovery(str, Enum):
    etcd = "etcd"
    file = "file"


DiscoveryOpt = Annotated[
    Discovery | None,
    typer.Option("--discovery", help="etcd or file (default: DYN_DISCOVERY_BACKEND, else etcd)."),
]
FileKvOpt = Annotated[
    str | None,
    typer.Option(
        "--file-kv", help="File store root (default: DYN_FILE_KV, else $TMPDIR/dynamo_store_kv)."
    ),
]
StateDirOpt = Annotated[
    str | None,
    typer.Option(
        "--state-dir",
        help="A running `dynlaunch up`'s state dir (default ~/.local/state/dynlaunch/NS).",
    ),
]


def endpoints(
    namespace: str,
    environ: Mapping[str, str],
    *,
    etcd: str | None,
    nats: str | None,
    discovery: str | None,
    file_kv: str | None,
    state_dir: str | None,
) -> Endpoints:
    """Flags, then Dynamo's variables, then a running `dynlaunch up` of this namespace."""
    from launcher.control import read_info
    from launcher.registrations.runner import Endpoints, default_file_kv
    from launcher.statedir import states_root

    info = read_info(Path(state_dir) if state_dir else states_root(environ) / namespace) or {}
    kind = discovery or environ.get("DYN_DISCOVERY_BACKEND") or "etcd"
    if kind not in ("etcd", "file"):
        raise ConfigError(f"DYN_DISCOVERY_BACKEND={kind!r}: clear-namespace knows etcd and file")
    etcd_url = etcd or environ.get("ETCD_ENDPOINTS") or _str(info.get("etcd"))
    nats_url = nats or environ.get("NATS_SERVER") or _str(info.get("nats"))
    if kind == "etcd" and not etcd_url:
        raise ConfigError(
            "no etcd to clear: pass --etcd URL or set ETCD_ENDPOINTS (or run it while "
            f"`dynlaunch up --namespace {namespace}` is up)"
        )
    from launcher import credentials

    credentials.activate(credentials.for_run_record(info, etcd_url, nats_url, environ))
    return Endpoints(
        discovery=kind,
        etcd=etcd_url if kind == "etcd" else None,
        nats=nats_url,
        file_kv=(file_kv or default_file_kv(environ)) if kind == "file" else None,
    )


def _str(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def render(decision: Decision, where: Endpoints, dry_run: bool) -> str:
    from launcher.registrations.decide import KINDS

    store = where.etcd if where.discovery == "etcd" else f"file store {where.file_kv}"
    head = f"namespace {decision.namespace} ({store}{', NATS ' + where.nats if where.nats else ''})"
    verb = "would remove" if dry_run else "removed"
    lines = [head + (": dry run, nothing deleted" if dry_run else "")]
    counts = decision.counts()
    lines.append(f"{'kind':<16}{verb:>13}{'kept':>7}")
    for kind in KINDS:
        lines.append(f"{kind:<16}{counts[kind]['removed']:>13}{counts[kind]['kept']:>7}")
    for item in decision.removed:
        lines.append(f"{verb:<12} {item.kind:<15} {item.key}  ({item.reason})")
    lines += [f"note: {note}" for note in decision.notes]
    if not decision.removed:
        lines.append("nothing stale" if not decision.everything else "nothing to remove")
    return "\n".join(lines)


def clear_namespace(
    namespace: NamespaceOpt,
    etcd: EtcdOpt = None,
    nats: NatsOpt = None,
    discovery: DiscoveryOpt = None,
    file_kv: FileKvOpt = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="List what would go and why; delete nothing.")
    ] = False,
    everything: Annotated[
        bool, typer.Option("--all", help="Remove everything of the namespace (cold start).")
    ] = False,
    yes: Annotated[
        bool, typer.Option("--yes", help="With --all: go on although instances look alive.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    state_dir: StateDirOpt = None,
) -> None:
    """Remove a Dynamo namespace's stale registrations: those whose owner is gone.

    Covers Dynamo 1.x in etcd (v1/instances, v1/mdc, v1/event_channels, v1/event_sources of
    NS), 1.x file discovery (files under $DYN_FILE_KV/v1/), and 0.5 (instances/NS, models/*
    naming NS, kv_routers/NS, the shared mdc/<slug> card and NATS object store OBJ_<slug> once
    no live model entry uses the slug, streams namespace-NS-component-*). Nothing of another
    namespace is touched: clearing sglang leaves sglang2, sglang-agg and sglang_x alone.

    Liveness rule. An owner is a lease (etcd) or an instance id (file store). It is DEAD when
    its lease is gone or expired (file store: none of its files refreshed within 10 s), or when
    its lease is alive but every transport address it advertises (transport.tcp host:port of
    its instances) refuses TCP connections AND so does every system port its model card names
    (http://host:port/v1/metadata/...). Anything else is alive and kept; an address that is not
    on this host, or does not answer in time, counts as alive. A dead owner's lease is revoked
    (all its keys go at once) only when it holds an instance key of NS and nothing outside NS;
    otherwise its keys are deleted one by one. A frontend's lease is never touched. Keys
    without a lease go when no live owner claims them; when every key under one of NS's
    prefixes goes, that prefix is removed in one transaction guarded on nothing in it having
    changed since it was read. Streams of NS go when no instance of NS is alive.

    --all removes everything of NS, for a cold start; when instances look alive it stops and
    asks for --yes. Endpoints: flags, else ETCD_ENDPOINTS / NATS_SERVER / DYN_FILE_KV, else
    those of a `dynlaunch up` running for NS. Exit 0: done (counts per kind); 2: bad input;
    3: etcd or NATS unreachable (nothing is deleted before both answered; a run cut short
    is finished by the next).

    Examples:

    \b
      dynlaunch clear-namespace --namespace sglang --dry-run
      dynlaunch clear-namespace --namespace sglang --etcd http://127.0.0.1:2379 --nats nats://127.0.0.1:4222
      dynlaunch clear-namespace --namespace dynamo --discovery file --file-kv /tmp/dynamo_store_kv
      dynlaunch clear-namespace --namespace sglang --all --yes --json
    """
    from launcher.registrations.layouts import check_namespace
    from launcher.registrations.runner import run

    check_namespace(namespace)
    where = endpoints(
        namespace, os.environ, etcd=etcd, nats=nats, file_kv=file_kv, state_dir=state_dir,
        discovery=discovery.value if discovery is not None else None,
    )  # fmt: skip
    decision = run(namespace, where, everything=everything, dry_run=dry_run, confirm=yes)
    if as_json:
        typer.echo(json.dumps(decision.to_json(dry_run), indent=2))
    else:
        typer.echo(render(decision, where, dry_run))
