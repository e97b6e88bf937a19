"""Settings that each look fine but do not work together: checked on the plan before anything
starts (pure). An error is a ConfigError (exit 2) naming the model and what to change; a
warning is a line that `plan` and `up` print.

Each of these fails silently at run time otherwise: Dynamo's KV router takes the block size
from a model's card, so workers of one model with another page size send events it never
applies; SGLang with --skip-tokenizer-init has no grammar backend, so JSON-schema outputs are
not enforced; a tp that does not divide the attention heads fails at load; two SGLang workers
on one GPU that ask for more than all of its memory fail at load, one after the other.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence

from launcher.compat import for_version
from launcher.errors import ConfigError
from launcher.models import ModelSpec
from launcher.plan import Plan

PAGE_FLAGS = {"sglang": "--page-size", "mocker": "--block-size"}
SGLANG_MEM_FLAG = "--mem-fraction-static"


def flag(argv: Sequence[str], name: str) -> str | None:
    """The value of ``name`` in ``argv`` (`--x V` or `--x=V`; the last one wins)."""
    value = None
    for i, arg in enumerate(argv):
        if arg == name and i + 1 < len(argv):
            value = argv[i + 1]
        elif arg.startswith(name + "="):
            value = arg.split("=", 1)[1]
    return value


def check(
    plan: Plan,
    specs: Sequence[ModelSpec],
    skip_tokenizer_init: bool,
    heads: Mapping[str, int] | None = None,
) -> list[str]:
    """Raise ConfigError for the first incoherence; return the warnings. ``heads``: attention
    heads per model path, where its config.json could be read."""
    warnings: list[str] = []
    for spec in specs:
        _page_size(plan.backend, spec, warnings)
        if plan.backend == "sglang":
            _structured_output(spec, skip_tokenizer_init)
            _tp(spec, (heads or {}).get(spec.path))
    if plan.backend == "sglang":
        _gpu_memory(plan)
    kv_ports = [str(w.ports["kv_events"]) for w in plan.by_role("worker") if "kv_events" in w.ports]
    if kv_ports:
        warnings.append(
            f"router_mode kv: each SGLang worker's KV-event publisher binds all interfaces (port "
            f"{', '.join(kv_ports)}): SGLang binds only a wildcard endpoint (given 127.0.0.1 it "
            "connects, and no event reaches the router); Dynamo subscribes on 127.0.0.1. On a "
            "shared network, firewall these ports (they carry KV block hashes)"
        )
    compat = for_version(plan.dynamo_version)
    if plan.router_mode == "kv" and not compat.kv_router_migrates:
        warnings.append(
            f"router_mode kv on Dynamo {plan.dynamo_version}: a request in flight on a worker "
            "that dies fails instead of migrating (measured; README, Routing); round-robin "
            "loses prefix-cache hits but no request"
        )
    return warnings


def _page_size(backend: str, spec: ModelSpec, warnings: list[str]) -> None:
    name = PAGE_FLAGS[backend]
    given = flag(spec.extra_args, name)
    if given is not None and given != str(spec.page_size):
        raise ConfigError(
            f"{spec.origin}: extra_args has {name} {given} but its page_size is "
            f"{spec.page_size}; Dynamo's KV router takes one block size per model from its "
            f"card: set page_size: {given} and drop {name} from extra_args"
        )
    size = spec.page_size
    if size & (size - 1):
        warnings.append(
            f"{spec.origin}: page_size {size} is not a power of two; KV-cache blocks of "
            "16, 32 or 64 tokens are what engines and the KV router are tuned for"
        )


def _structured_output(spec: ModelSpec, skip_tokenizer_init: bool) -> None:
    skipped = skip_tokenizer_init or "--skip-tokenizer-init" in spec.extra_args
    if spec.structured_output and skipped:
        raise ConfigError(
            f"{spec.origin}: structured_output: true with --skip-tokenizer-init: SGLang then has "
            "no grammar backend and JSON-schema/regex outputs are not enforced; drop "
            "workers.skip_tokenizer_init (set it false) or structured_output"
        )


def _tp(spec: ModelSpec, heads: int | None) -> None:
    if heads is not None and heads % spec.tp:
        raise ConfigError(
            f"{spec.origin}: tp {spec.tp} does not divide the model's {heads} attention heads "
            f"({spec.path}/config.json); use a tp that divides {heads}"
        )


def _gpu_memory(plan: Plan) -> None:
    """Workers that share a GPU (models pinned to one GPU) must ask for at most all of it."""
    sharing: dict[str, list[tuple[str, float | None]]] = defaultdict(list)
    for worker in plan.by_role("worker"):
        raw = flag(worker.argv, SGLANG_MEM_FLAG)
        try:
            fraction = float(raw) if raw is not None else None
        except ValueError:
            raise ConfigError(
                f"{worker.name}: {SGLANG_MEM_FLAG} {raw!r} is not a number (a fraction like 0.4)"
            ) from None
        for gpu in worker.gpus:
            sharing[gpu].append((worker.name, fraction))
    for gpu, users in sorted(sharing.items()):
        if len(users) < 2:
            continue
        names = ", ".join(name for name, _ in users)
        unset = [name for name, fraction in users if fraction is None]
        if unset:
            raise ConfigError(
                f"GPU {gpu} is shared by {names}: give each model {SGLANG_MEM_FLAG} in its "
                f"extra_args (SGLang's default takes most of the GPU; not set for "
                f"{', '.join(unset)})"
            )
        total = sum(fraction or 0.0 for _, fraction in users)
        if total > 1.0:
            raise ConfigError(
                f"GPU {gpu} is shared by {names}, whose {SGLANG_MEM_FLAG} add up to "
                f"{total:.2f} (> 1.0 of its memory); lower them"
            )
