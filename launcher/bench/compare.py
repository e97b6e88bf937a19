"""`bench prefix --compare-router`: the routing workload under each router mode on one stack (the
frontend is restarted between modes, by reload), at each concurrency level, and the frontend's
router counters over each run."""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from launcher.bench import routing, stacks
from launcher.bench.prefix import Bench, words

MODES = ("round-robin", "kv")
ROUTER_METRICS = (  # the frontend's, summed over workers
    "dynamo_component_router_kv_hit_rate_sum",
    "dynamo_component_router_kv_hit_rate_count",
    "dynamo_component_kv_cache_events_applied",  # status="ok" only (Bench.metrics)
)


@dataclass(frozen=True)
class Workload:
    prefix_tokens: int
    groups: int
    per_group: int
    levels: tuple[int, ...]
    max_tokens: int
    seed: int


def compare(
    backend: str,
    config: str | None,
    up_args: list[str],
    model: str | None,
    work: Workload,
    environ: Mapping[str, str],
    modes: Sequence[str] = MODES,
) -> dict[str, Any]:
    """Every (mode, level) run: its summary, its samples and the router counters' change. One
    order of requests in every mode (one seed); prompts of their own per mode and level, so that
    a run finds nothing of an earlier one cached (the workers keep theirs across modes)."""
    runs: list[dict[str, Any]] = []
    report: dict[str, Any] = {"backend": backend, "workload": asdict(work), "runs": runs}
    workdir = Path(tempfile.mkdtemp(prefix="dynlaunch-compare-router-"))
    configs = [stacks.mode_config(workdir, config, mode) for mode in modes]
    with stacks.stack(backend, configs[0], up_args, workdir, environ) as info:
        chosen = model or str(info["model"])
        report["model"] = chosen
        for mode, mode_config in zip(modes, configs, strict=True):
            if mode_config is not configs[0]:
                stacks.switch(info, mode_config, chosen)
            names = stacks.worker_names(info)  # SGLang workers are new under kv
            bench = Bench(str(info["url"]), chosen, work.max_tokens, nvext=True)
            try:
                per_word = bench.prompt_tokens(words(200, seed=7)) / 200
                count = max(1, round(work.prefix_tokens / per_word))
                report["prefix_words"] = count
                for level in work.levels:
                    before = bench.metrics(ROUTER_METRICS)
                    samples = routing.run_level(
                        bench, words_per_prompt=count, groups=work.groups,
                        per_group=work.per_group, concurrency=level, seed=f"{work.seed}.{level}",
                        text=f"{work.seed}.{level}.{mode}",
                    )  # fmt: skip
                    after = bench.metrics(ROUTER_METRICS)
                    runs.append({
                        "router_mode": mode,
                        "concurrency": level,
                        "workers": sorted(names.values()),
                        "summary": routing.summarize(samples, names),
                        "server": {k: after[k] - before.get(k, 0.0) for k in after},
                        "samples": [asdict(s) for s in samples],
                    })  # fmt: skip
            finally:
                bench.close()
    report["logs"] = str(workdir)
    return report
