"""`dynlaunch bench prefix`: the prefix-cache effect on a running stack."""

from __future__ import annotations

from typing import Annotated

import typer

from launcher.errors import BenchError, ConfigError

bench_app = typer.Typer(help="Measure a running stack.", no_args_is_help=True)


@bench_app.command("prefix")
def bench_prefix(
    url: Annotated[
        str | None, typer.Option(help="The frontend's base URL [default: http://127.0.0.1:8000].")
    ] = None,
    model: Annotated[str | None, typer.Option(help="Model (default: the only one listed).")] = None,
    prefix_tokens: Annotated[
        int | None,
        typer.Option(min=16, help="Shared system prompt size [default: 2048; 3000 to compare]."),
    ] = None,
    requests: Annotated[
        int | None,
        typer.Option(
            min=2,
            help="Shared-prefix requests (as many control) [default: 32; to compare: 6 a group].",
        ),
    ] = None,
    concurrency: Annotated[
        list[int] | None,
        typer.Option(
            min=1,
            help="Requests in flight at once [default: 1; to compare: 1 and 2, repeat the flag].",
        ),
    ] = None,
    max_tokens: Annotated[int, typer.Option(min=1, help="Tokens to generate per request.")] = 32,
    seed: Annotated[
        int | None,
        typer.Option(
            min=0,
            help="Salt of the prompts (default: random, so that a repeated run does not find "
            "its prompts cached by the last one; the same seed repeats a run's prompts).",
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Raw samples and summary as JSON.")
    ] = False,
    plot_file: Annotated[
        str | None, typer.Option("--plot", help="Draw TTFT per kind to this PNG (matplotlib).")
    ] = None,
    compare_router: Annotated[
        bool,
        typer.Option(
            "--compare-router",
            help="Start a stack (`dynlaunch up`) with round-robin routing, run a shared-prefix "
            "workload, reload it with kv (only the frontend restarts), run it again: where each "
            "group went, cache misses, the router's hit rate, TTFT.",
        ),
    ] = False,
    backend: Annotated[str, typer.Option(help="With --compare-router: up's backend.")] = "mocker",
    config: Annotated[
        str | None, typer.Option("--config", "-c", help="With --compare-router: up's config.")
    ] = None,
    workers: Annotated[int, typer.Option(min=2, help="With --compare-router: workers.")] = 2,
    groups: Annotated[
        int | None,
        typer.Option(min=1, help="Shared prefixes [default: requests/8; to compare: 8]."),
    ] = None,
    up_args: Annotated[
        list[str] | None,
        typer.Argument(metavar="UP_ARGS", help="With --compare-router: more `up` flags, after --."),
    ] = None,
) -> None:
    """Prefix-cache effect: TTFT of cold (first of a shared prefix), warm (shared prefix) and
    control (nothing shared) requests, cached tokens, and the server's own counters. With
    --compare-router: KV-aware against round-robin routing on one stack of its own, whose
    frontend is restarted in between.

    Examples:\n
      dynlaunch bench prefix\n
      dynlaunch bench prefix --url http://127.0.0.1:8000 --prefix-tokens 3500 --json > out.json\n
      dynlaunch bench prefix --compare-router\n
      dynlaunch bench prefix --compare-router --backend sglang -c configs/sglang.yaml --json
    """
    import random

    from launcher.bench import prefix as bench
    from launcher.bench import view as bench_view

    salt = seed if seed is not None else random.SystemRandom().randrange(1 << 31)
    if compare_router:
        if url is not None or plot_file is not None:
            raise ConfigError("--compare-router starts its own stacks: drop --url and --plot")
        _compare(backend, config, workers, model, prefix_tokens or 3000, groups or 8,
                 requests, tuple(concurrency or (1, 2)), max_tokens, salt, up_args or [],
                 as_json)  # fmt: skip
        return
    if up_args or config is not None:
        raise ConfigError(f"{' '.join(up_args or ['--config'])}: only with --compare-router")
    if concurrency is not None and len(concurrency) > 1:
        raise ConfigError("--concurrency: one value (several only with --compare-router)")
    url = url or "http://127.0.0.1:8000"
    if plot_file is not None:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise ConfigError("--plot needs matplotlib: pip install matplotlib") from None
    chosen = model or _only_model(url)
    runner = bench.Bench(url, chosen, max_tokens)
    try:
        samples, summary = bench.run(
            runner,
            prefix_tokens=prefix_tokens or 2048,
            requests=requests or 32,
            concurrency=concurrency[0] if concurrency else 1,
            seed=salt,
            groups=groups,
        )
    except BenchError as err:
        raise BenchError(f"{url}: {err}") from None
    finally:
        runner.close()
    typer.echo(
        bench.as_json(samples, summary) if as_json else bench_view.render(summary, url, chosen)
    )
    if plot_file is not None:
        bench_view.plot(samples, plot_file)


def _compare(
    backend: str, config: str | None, workers: int, model: str | None, prefix_tokens: int,
    groups: int, requests: int | None, levels: tuple[int, ...], max_tokens: int, seed: int,
    up_args: list[str], as_json: bool,
) -> None:  # fmt: skip
    import json
    import os

    from launcher.bench import compare, view

    per_group = max(2, (requests or groups * 6) // groups)
    argv = ["--workers", str(workers), *up_args]
    work = compare.Workload(prefix_tokens, groups, per_group, levels, max_tokens, seed)
    report = compare.compare(backend, config, argv, model, work, os.environ)
    typer.echo(json.dumps(report, indent=2) if as_json else view.render_compare(report))


def _only_model(url: str) -> str:
    from launcher import probes

    listed = probes.models(url.rstrip("/"))
    if len(listed) != 1:
        found = ", ".join(listed) or "none (is the stack up?)"
        raise ConfigError(f"--model: choose one; {url}/v1/models lists {found}")
    return listed[0]
