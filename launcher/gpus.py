"""GPU discovery (`detect`) and slicing (pure)."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Mapping, Sequence

from launcher.errors import ConfigError


def detect() -> tuple[str, ...]:
    """Indices of the GPUs `nvidia-smi` lists; empty when there is none or no driver."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return ()
    try:
        out = subprocess.run(
            [smi, "--query-gpu=index", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return ()
    return tuple(line.strip() for line in out.stdout.splitlines() if line.strip())


def available(
    asked: Sequence[str] | None, environ: Mapping[str, str], listed: Sequence[str]
) -> tuple[tuple[str, ...], str]:
    """The GPUs to use, and their source: `--gpus`, else the caller's mask, else nvidia-smi."""
    if asked is not None:
        # nvidia-smi lists indices: a UUID (GPU-..., MIG-...) is left to CUDA to check
        missing = [gpu for gpu in asked if listed and gpu.isdigit() and gpu not in listed]
        if missing:
            raise ConfigError(
                f"workers.gpus (--gpus) {','.join(asked)}: GPU {missing[0]} does not exist "
                f"(nvidia-smi lists {','.join(listed)})"
            )
        return tuple(asked), "workers.gpus (--gpus)"
    mask = environ.get("CUDA_VISIBLE_DEVICES")
    if mask is not None:
        return tuple(g.strip() for g in mask.split(",") if g.strip()), "CUDA_VISIBLE_DEVICES"
    return tuple(listed), "nvidia-smi"


def slices(gpus: Sequence[str], workers: int, tp: int, source: str) -> list[tuple[str, ...]]:
    """Worker i gets the i-th run of `tp` GPUs."""
    need = workers * tp
    if need > len(gpus):
        have = ",".join(gpus) if gpus else "none"
        raise ConfigError(
            f"--workers {workers} x --tp {tp} needs {need} GPU(s), {len(gpus)} available "
            f"({source}: {have}); choose them with --gpus or CUDA_VISIBLE_DEVICES"
        )
    return [tuple(gpus[i * tp : (i + 1) * tp]) for i in range(workers)]


def placeholders(count: int) -> tuple[str, ...]:
    """GPU ids that are clearly not real, for a plan made where the GPUs are missing."""
    return tuple(f"?{i}" for i in range(count))


def placeholder_warning(found: Sequence[str], need: int) -> str:
    have = ",".join(found) if found else "none"
    return (
        f"nvidia-smi lists {len(found)} GPU(s) ({have}), the plan needs {need}: it shows "
        f"placeholder ids ?0..?{need - 1}; `up` here would refuse (choose GPUs with --gpus or "
        "CUDA_VISIBLE_DEVICES)"
    )


def allocate(
    gpus: Sequence[str], models: Sequence[tuple[str, int, int, Sequence[str] | None]], source: str
) -> list[list[tuple[str, ...]]]:
    """GPUs for several models' workers: each (origin, workers, tp, pinned) gets its pinned GPUs,
    else the next ones of ``gpus`` that no model pinned, `tp` per worker. Only pinned GPUs are
    shared: by models pinned to the same GPU, and by the workers of a model pinned to fewer GPUs
    than they need (worker i on the (i mod n)-th run of `tp` of its n runs); launcher.coherence
    checks that their --mem-fraction-static add up to at most 1.0. One model: `slices`."""
    if len(models) == 1 and models[0][3] is None:
        return [slices(gpus, models[0][1], models[0][2], source)]
    pinned = {g for _, _, _, pin in models for g in pin or ()}
    free = [g for g in gpus if g not in pinned]
    out: list[list[tuple[str, ...]]] = []
    for origin, workers, tp, pin in models:
        need = workers * tp
        pool = list(pin) if pin is not None else free[:need]
        if pin is None:
            free = free[need:]
        runs = len(pool) // tp
        shares = pin is not None and runs >= 1 and len(pool) % tp == 0
        if len(pool) < need and not shares:
            have = ",".join(pool) if pool else "none"
            raise ConfigError(
                f"{origin}: {workers} worker(s) x tp {tp} needs {need} GPU(s), {len(pool)} "
                f"left for it ({source}: {have}); pin GPUs per model (models[].gpus; a multiple "
                "of tp, shared by its workers) or use fewer"
            )
        out.append([tuple(pool[(i % runs) * tp : (i % runs + 1) * tp]) for i in range(workers)])
    return out
