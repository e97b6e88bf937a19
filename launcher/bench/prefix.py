"""`dynlaunch bench prefix`: does the server's prefix cache make shared-prefix requests faster?

Groups of requests share one long system prompt (the first of a group is "cold", the rest "warm");
as many "control" requests share nothing; one untimed warm-up request of the same length goes
first. Every request streams; we record time to first token,
end-to-end latency and the cached prompt tokens the server reports. The summary is pure.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any

import httpx

from launcher.errors import BenchError

KINDS = ("cold", "warm", "control")
SYLLABLES = ("ka", "lo", "mi", "ne", "ru", "ti", "so", "va", "pe", "zu", "dor", "lin", "mar", "tes")
METRICS = (  # server-side counters, when /metrics has them
    "dynamo_frontend_cached_tokens_sum",
    "dynamo_frontend_cached_tokens_count",
    "dynamo_component_router_kv_hit_rate_sum",
    "dynamo_component_router_kv_hit_rate_count",
    "sglang:cache_hit_rate",
)


@dataclass(frozen=True)
class Request:
    kind: str  # cold | warm | control
    prefix: int  # which system prompt
    question: str


@dataclass(frozen=True)
class Sample:
    kind: str
    prefix: int
    ttft_s: float | None
    latency_s: float
    prompt_tokens: int | None
    cached_tokens: int | None
    error: str | None = None
    # Asked for with `nvext.extra_fields` (Dynamo; `--compare-router`): the worker that served it
    # (its instance id), the frontend's own TTFT and the KV router's predicted hit rate.
    worker: int | None = None
    server_ttft_ms: float | None = None
    kv_hit_rate: float | None = None
    sent_s: float | None = None  # when it was sent, seconds after its run began


def words(count: int, seed: int | str) -> str:
    rng = random.Random(seed)
    return " ".join("".join(rng.choice(SYLLABLES) for _ in range(3)) for _ in range(count))


def schedule(requests: int, groups: int) -> tuple[list[Request], list[Request]]:
    """Phase 1: the cold request of each group. Phase 2: warm and control requests, mixed."""
    per_group = max(2, requests // groups)
    cold = [Request("cold", g, f"Question {g}.0: what comes next?") for g in range(groups)]
    warm = [
        Request("warm", g, f"Question {g}.{i}: what comes next?")
        for g in range(groups)
        for i in range(1, per_group)
    ]
    control = [
        Request("control", 1000 + i, f"Question c.{i}: what comes next?")
        for i in range(len(cold) + len(warm))
    ]
    mixed = [r for pair in zip(warm, control[: len(warm)], strict=True) for r in pair]
    return cold, mixed + control[len(warm) :]


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def summarize(samples: Iterable[Sample]) -> dict[str, Any]:
    done = [s for s in samples if s.error is None and s.ttft_s is not None]
    out: dict[str, Any] = {"errors": sum(1 for s in samples if s.error is not None)}
    for kind in KINDS:
        group = [s for s in done if s.kind == kind]
        ttft = [s.ttft_s for s in group if s.ttft_s is not None]
        out[kind] = {
            "n": len(group),
            "ttft_p50_s": percentile(ttft, 50),
            "ttft_p95_s": percentile(ttft, 95),
            "latency_p50_s": percentile([s.latency_s for s in group], 50),
            "latency_p95_s": percentile([s.latency_s for s in group], 95),
        }
    warm = [s for s in done if s.kind == "warm"]
    cached = [s.cached_tokens for s in warm if s.cached_tokens is not None]
    prompt = sum(s.prompt_tokens or 0 for s in warm if s.cached_tokens is not None)
    out["cached_tokens_mean"] = sum(cached) / len(cached) if cached else None
    out["cached_share"] = sum(cached) / prompt if cached and prompt else None
    out["cold_over_warm_ttft_ratio"] = _ratio(out["cold"]["ttft_p50_s"], out["warm"]["ttft_p50_s"])
    out["control_over_warm_ttft_ratio"] = _ratio(
        out["control"]["ttft_p50_s"], out["warm"]["ttft_p50_s"]
    )
    return out


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


class Bench:
    def __init__(
        self, url: str, model: str, max_tokens: int, timeout_s: float = 120.0, nvext: bool = False
    ) -> None:
        self.url = url.rstrip("/")
        self.model = model
        self.max_tokens = max_tokens
        self.nvext = nvext  # ask Dynamo for the worker and its timing of each request
        self.client = httpx.Client(timeout=httpx.Timeout(timeout_s, connect=5.0))

    def close(self) -> None:
        self.client.close()

    def prompt_tokens(self, system: str) -> int:
        """The server's token count of a system prompt (one request, max_tokens 1)."""
        sample = self.send(Request("calibrate", -1, "hi"), system, max_tokens=1)
        if sample.error is not None or not sample.prompt_tokens:
            raise BenchError(f"calibration request failed: {sample.error}")
        return sample.prompt_tokens

    def send(self, req: Request, system: str, max_tokens: int | None = None) -> Sample:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [
                {"role": "system", "content": system},
                {"role": "user", "content": req.question},
            ],
            "max_tokens": max_tokens or self.max_tokens,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if self.nvext:
            body["nvext"] = {"extra_fields": ["worker_id", "timing"]}
        began = time.monotonic()
        first: float | None = None
        usage: dict[str, Any] = {}
        ext: dict[str, Any] = {}
        try:
            with self.client.stream("POST", f"{self.url}/v1/chat/completions", json=body) as resp:
                if resp.status_code != 200:
                    resp.read()
                    return Sample(req.kind, req.prefix, None, time.monotonic() - began, None, None,
                                  f"HTTP {resp.status_code}: {resp.text[:200]}")  # fmt: skip
                for line in resp.iter_lines():
                    if not line.startswith("data: ") or line == "data: [DONE]":
                        continue
                    chunk = json.loads(line[6:])
                    if first is None and chunk.get("choices"):
                        first = time.monotonic() - began
                    usage = chunk.get("usage") or usage
                    ext |= chunk.get("nvext") or {}  # timing comes with the last chunk
        except (httpx.HTTPError, ValueError) as err:
            return Sample(
                req.kind, req.prefix, None, time.monotonic() - began, None, None, str(err)
            )
        details = usage.get("prompt_tokens_details") or {}
        cached = details.get("cached_tokens") if isinstance(details, dict) else None
        worker = (ext.get("worker_id") or {}).get("decode_worker_id")
        timing = ext.get("timing") or {}
        return Sample(req.kind, req.prefix, first, time.monotonic() - began,
                      usage.get("prompt_tokens"), cached, None, worker, timing.get("ttft_ms"),
                      timing.get("kv_hit_rate"))  # fmt: skip

    def metrics(self, names: Sequence[str] = METRICS) -> dict[str, float]:
        """Sum of each of ``names`` over its label sets, from the server's /metrics (of a
        counter with a status label, the "ok" ones only)."""
        try:
            text = self.client.get(f"{self.url}/metrics").text
        except httpx.HTTPError:
            return {}
        found: dict[str, float] = {}
        for line in text.splitlines():
            name = line.split("{", 1)[0].split(" ", 1)[0]
            if 'status="' in line and 'status="ok"' not in line:
                continue
            if name in names:
                try:
                    found[name] = found.get(name, 0.0) + float(line.rsplit(" ", 1)[1])
                except ValueError:
                    continue
        return found


def run(
    bench: Bench,
    *,
    prefix_tokens: int,
    requests: int,
    concurrency: int,
    seed: int,
    groups: int | None = None,
) -> tuple[list[Sample], dict[str, Any]]:
    """All samples and the summary, with the server counters' change over the run. ``seed``
    salts every prompt: a second run with another seed finds nothing of the first in the cache
    (with the same seed, every request of a repeat is a cache hit, cold and control included)."""
    per_word = bench.prompt_tokens(words(200, seed=7)) / 200
    count = max(1, round(prefix_tokens / per_word))
    groups = groups or max(2, requests // 8)
    cold, rest = schedule(requests, groups)
    # One untimed request as long as the others, sharing nothing with them: the first long
    # prompt a server sees pays one-time costs (kernel builds for new shapes) that would
    # otherwise land on the first "cold" sample.
    bench.send(Request("warm-up", -1, "Warm-up: what comes next?"), words(count, f"{seed}/-1"))
    before = bench.metrics()
    samples: list[Sample] = []
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        for phase in (cold, rest):
            samples += pool.map(lambda r: bench.send(r, words(count, f"{seed}/{r.prefix}")), phase)
    after = bench.metrics()
    summary = summarize(samples)
    summary["server"] = {k: after[k] - before.get(k, 0.0) for k in after}
    summary["prefix_words"] = count
    summary["seed"] = seed
    return samples, summary


def as_json(samples: list[Sample], summary: dict[str, Any]) -> str:
    return json.dumps({"summary": summary, "samples": [asdict(s) for s in samples]}, indent=2)
