"""`dynlaunch status` as a table for people."""

from __future__ import annotations

from typing import Any


def _uptime(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def _yes_no(value: bool | None) -> str:
    return "-" if value is None else "yes" if value else "no"


def _live(child: dict[str, Any]) -> str:
    """Liveness: '-' not probed (infra, or not yet), 'yes', or 'no(N)' after N misses in a row."""
    live = child.get("live")
    return f"no({child.get('liveness_failures', 0)})" if live is False else _yes_no(live)


def render_status(report: dict[str, Any]) -> str:
    launcher, frontend = report["launcher"], report["frontend"]
    width = max([10, *(len(c["name"]) for c in report["children"])])  # worker-0.g2 (a restart)
    lines = [
        f"dynlaunch pid {launcher['pid']}, namespace {launcher['namespace']}, "
        f"state {launcher['state_dir']}",
        *([f"discovery: {launcher['discovery']}"] if launcher.get("discovery") else []),
        "",
        f"{'NAME':<{width}} {'ROLE':<9} {'PID':>7} {'STATE':<9} {'LIVE':<6} {'READY':<5} "
        f"{'RESTARTS':>8} {'UPTIME':>8}  PORTS  GPUS",
    ]
    for c in report["children"]:
        ports = ",".join(f"{k}={v}" for k, v in c["ports"].items())
        lines.append(
            f"{c['name']:<{width}} {c['role']:<9} {c['pid'] or '-':>7} {c['state']:<9} "
            f"{_live(c):<6} {_yes_no(c.get('ready')):<5} "
            f"{c['restarts']:>8} {_uptime(c['uptime_s']):>8}  {ports}  {','.join(c['gpus']) or '-'}"
        )
    op = report.get("operation")
    if op:
        lines += ["", f"operation: {op['step']}"]
    health = "healthy" if frontend["healthy"] else "not answering"
    ready = "ready" if frontend["ready"] else "NOT ready"
    lines += [
        "",
        f"frontend {frontend['url']}: {health}, {ready}; "
        f"models: {', '.join(frontend['models']) or '-'}",
        "registrations: "
        + ", ".join(f"{k}={'?' if v is None else v}" for k, v in report["registrations"].items()),
    ]
    for m in report.get("models", []):
        found = "?" if m["instances"] is None else m["instances"]
        lines.append(
            f"model {m['model']!r} (dyn://{launcher['namespace']}.{m['component']}.generate): "
            f"workers {m['running']}/{m['workers']} running, instances={found}, "
            f"{'listed' if m['listed'] else 'NOT listed'}"
        )
    return "\n".join(lines)
