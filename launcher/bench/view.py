"""`dynlaunch bench prefix` for people: the table, and the TTFT plot (matplotlib, optional)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from launcher.bench.prefix import KINDS, Sample


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.1f}"


def _x(ratio: float | None) -> str:
    return "-" if ratio is None else f"{ratio:.2f}x"


def render(summary: dict[str, Any], url: str, model: str) -> str:
    lines = [
        f"prefix-cache benchmark: {url} model {model!r}, "
        f"system prompt ~{summary['prefix_words']} words, seed {summary.get('seed', '-')}",
        "",
        f"{'kind':<8} {'n':>4} {'TTFT p50 ms':>12} {'TTFT p95 ms':>12} "
        f"{'latency p50 ms':>15} {'latency p95 ms':>15}",
    ]
    for kind in KINDS:
        row = summary[kind]
        lines.append(
            f"{kind:<8} {row['n']:>4} {_ms(row['ttft_p50_s']):>12} {_ms(row['ttft_p95_s']):>12} "
            f"{_ms(row['latency_p50_s']):>15} {_ms(row['latency_p95_s']):>15}"
        )
    share = summary["cached_share"]
    mean = summary["cached_tokens_mean"]
    lines += [
        "",
        f"speed-up of p50 TTFT: cold/warm {_x(summary['cold_over_warm_ttft_ratio'])}, "
        f"control/warm {_x(summary['control_over_warm_ttft_ratio'])}",
        "cached prompt tokens (warm, as the server reports them): "
        + ("not reported" if mean is None else f"mean {mean:.0f}, share {share or 0:.0%}"),
    ]
    if summary["errors"]:
        lines.append(f"failed requests: {summary['errors']}")
    server = summary.get("server") or {}
    if server:
        lines.append("server counters over the run: "
                     + ", ".join(f"{k} +{v:g}" for k, v in sorted(server.items())))  # fmt: skip
    return "\n".join(lines)


def plot(samples: Sequence[Sample], path: str) -> None:
    """TTFT distribution per kind, one box each, with the points on top."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = [
        [s.ttft_s * 1000 for s in samples if s.kind == k and s.ttft_s is not None] for k in KINDS
    ]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.boxplot(data, tick_labels=list(KINDS))
    for i, values in enumerate(data, start=1):
        ax.scatter([i] * len(values), values, s=10, alpha=0.5)
    ax.set_ylabel("time to first token (ms)")
    ax.set_title("TTFT by request kind (cold: first of a shared prefix)")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _num(value: float | None, fmt: str = ".1f") -> str:
    return "-" if value is None else format(value, fmt)


def _cell(row: dict[str, Any]) -> str:
    spread = " ".join(f"{w.removeprefix('worker-')}:{n}" for w, n in row["workers"].items())
    return f"{spread} m{row['misses']}"


def render_compare(report: dict[str, Any]) -> str:
    """`bench prefix --compare-router`: one line per (router, concurrency), then each group."""
    work, runs = report["workload"], report["runs"]
    lines = [
        f"router comparison: {report['backend']}, model {report.get('model', '-')!r}, "
        f"{work['groups']} groups x {work['per_group']} requests, system prompt "
        f"~{report.get('prefix_words', '-')} words, seed {work['seed']}",
        "misses: requests sent to a worker that had not yet served their group's prefix",
        "",
        f"{'router':<12} {'conc':>4} {'pinned':>7} {'misses':>6} {'hit rate':>8} "
        f"{'TTFT cold ms':>12} {'TTFT warm ms':>12} {'errors':>6}  requests per worker",
    ]
    for run in runs:
        s = run["summary"]
        per_worker = ", ".join(f"{w} {n}" for w, n in s["per_worker"].items())
        lines.append(
            f"{run['router_mode']:<12} {run['concurrency']:>4} "
            f"{s['pinned']:>3}/{len(s['groups']):<3} {s['misses']:>6} "
            f"{_num(s['kv_hit_rate_mean']['warm'], '.2f'):>8} "
            f"{_num(s['ttft_mean_ms']['cold']):>12} {_num(s['ttft_mean_ms']['warm']):>12} "
            f"{s['errors']:>6}  {per_worker}"
        )
    lines += ["", "per group (w:n = n requests on worker-w, mK = K misses):"]
    heads = [f"{r['router_mode']} c{r['concurrency']}" for r in runs]
    width = max([len(h) for h in heads] + [14])
    lines.append(f"{'group':<6}" + "".join(f" {h:<{width}}" for h in heads))
    for i, row in enumerate(runs[0]["summary"]["groups"] if runs else []):
        cells = [_cell(r["summary"]["groups"][i]) for r in runs]
        lines.append(f"{row['group']:<6}" + "".join(f" {c:<{width}}" for c in cells))
    lines.append("")
    for run in runs:
        server = run["server"]
        count = server.get("dynamo_component_router_kv_hit_rate_count", 0.0)
        rate = server.get("dynamo_component_router_kv_hit_rate_sum", 0.0) / count if count else None
        lines.append(
            f"frontend counters, {run['router_mode']} c{run['concurrency']}: KV events applied "
            f"+{server.get('dynamo_component_kv_cache_events_applied', 0.0):g}, router hit rate "
            f"{_num(rate, '.2f')} over {count:g} routings"
        )
    return "\n".join(lines)
