"""`dynlaunch bench prefix --compare-router`: where a router sends shared-prefix requests.

One workload, run once per router mode: ``groups`` groups of requests share one long system prompt
each; the first request of every group goes first (in group order), then the others in one
shuffled order (fixed by the seed: the same in every mode; a fixed order would let round-robin
pin a group by the parity of its slot), with prompts of its own per mode (the workers keep the last
mode's cache). Every request asks Dynamo which worker served it
(`nvext.extra_fields`). A *cache miss* is a request that landed on a worker that had not yet
finished a request of its group when it was sent: the worker cannot have had its prefix. The
summary is pure.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from statistics import fmean
from typing import Any

from launcher.bench.prefix import Bench, Request, Sample, words


def schedule(groups: int, per_group: int, seed: int | str) -> tuple[list[Request], list[Request]]:
    """Phase 1: each group's first ("cold") request. Phase 2: the rest ("warm"), shuffled."""
    cold = [Request("cold", g, f"Question {g}.0: what comes next?") for g in range(groups)]
    warm = [
        Request("warm", g, f"Question {g}.{i}: what comes next?")
        for g in range(groups)
        for i in range(1, per_group)
    ]
    random.Random(f"{seed}/order").shuffle(warm)
    return cold, warm


def run_level(
    bench: Bench,
    *,
    words_per_prompt: int,
    groups: int,
    per_group: int,
    concurrency: int,
    seed: int | str,
    text: int | str | None = None,
) -> list[Sample]:
    """The workload once at ``concurrency``; each sample with the time it was sent. ``seed``
    fixes the order, ``text`` (default: the seed) the prompts' words: the same order with other
    words finds nothing of an earlier run cached."""
    cold, warm = schedule(groups, per_group, seed)
    salt = seed if text is None else text
    # Untimed, as long as the others and sharing nothing with them (see prefix.run).
    bench.send(
        Request("warm-up", -1, "Warm-up: what comes next?"), words(words_per_prompt, f"{salt}/-1")
    )
    began = time.monotonic()

    def one(req: Request) -> Sample:
        sent = time.monotonic() - began
        return replace(
            bench.send(req, words(words_per_prompt, f"{salt}/{req.prefix}")), sent_s=sent
        )

    samples: list[Sample] = []
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        for phase in (cold, warm):
            samples += pool.map(one, phase)
    return samples


def misses(group: Sequence[Sample]) -> int:
    """Requests of one group sent to a worker that had not finished one of the group before."""
    done = [s for s in group if s.error is None and s.worker is not None and s.sent_s is not None]
    count = 0
    for s in done:
        had = any(
            t.worker == s.worker and (t.sent_s or 0.0) + t.latency_s <= (s.sent_s or 0.0)
            for t in done
            if t is not s
        )
        count += not had
    return count


def _mean(values: Sequence[float | None], scale: float = 1.0) -> float | None:
    known = [v * scale for v in values if v is not None]
    return fmean(known) if known else None


def summarize(samples: Sequence[Sample], names: Mapping[int, str]) -> dict[str, Any]:
    """Per group: requests per worker, misses, the router's hit rate and warm TTFT; totals."""

    def name(worker: int | None) -> str:
        return "?" if worker is None else names.get(worker, f"{worker:x}")

    ok = [s for s in samples if s.error is None]
    rows: list[dict[str, Any]] = []
    for g in sorted({s.prefix for s in samples}):
        group = [s for s in ok if s.prefix == g]
        warm = [s for s in group if s.kind == "warm"]
        rows.append({
            "group": g,
            "workers": dict(sorted(Counter(name(s.worker) for s in group).items())),
            "misses": misses(group),
            "kv_hit_rate_mean": _mean([s.kv_hit_rate for s in warm]),
            "warm_ttft_mean_ms": _mean([s.ttft_s for s in warm], 1000.0),
        })  # fmt: skip
    by_kind = {k: [s for s in ok if s.kind == k] for k in ("cold", "warm")}
    return {
        "requests": len(samples),
        "errors": len(samples) - len(ok),
        "unattributed": sum(1 for s in ok if s.worker is None),
        "groups": rows,
        "pinned": sum(1 for r in rows if len(r["workers"]) == 1),
        "misses": sum(r["misses"] for r in rows),
        "per_worker": dict(sorted(Counter(name(s.worker) for s in ok).items())),
        "ttft_mean_ms": {k: _mean([s.ttft_s for s in v], 1000.0) for k, v in by_kind.items()},
        "server_ttft_mean_ms": {
            k: _mean([s.server_ttft_ms for s in v]) for k, v in by_kind.items()
        },
        "kv_hit_rate_mean": {k: _mean([s.kv_hit_rate for s in v]) for k, v in by_kind.items()},
    }
