"""`dynlaunch bench prefix`: the prefix-cache effect on a running stack."""

from __future__ import annotations

from typing import Annotated

import typer

from launcher.errors import BenchError, ConfigError

bench_app = typer.Typer(help="Measure a running stack.", no_args_is_help=True)


@bench_app.command("prefix")
def bench_prefix(
    url: Annotated[str, typer.Option(help="The frontend's base URL.")] = "http://127.0.0.1:8000",
    model: Annotated[str | None, typer.Option(help="Model (default: the only one listed).")] = None,
    prefix_tokens: Annotated[int, typer.Option(min=16, help="Shared system prompt size.")] = 2048,
    requests: Annotated[
        int, typer.Option(min=2, help="Shared-prefix requests (as many control).")
    ] = 32,
    concurrency: Annotated[int, typer.Option(min=1, help="Requests in flight at once.")] = 1,
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
) -> None:
    """Prefix-cache effect: TTFT of cold (first of a shared prefix), warm (shared prefix) and
    control (nothing shared) requests, cached tokens, and the server's own counters.

    Examples:\n
      dynlaunch bench prefix\n
      dynlaunch bench prefix --url http://127.0.0.1:8000 --prefix-tokens 3500 --json > out.json
    """
    import random

    from launcher.bench import prefix as bench
    from launcher.bench import view as bench_view

    if plot_file is not None:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise ConfigError("--plot needs matplotlib: pip install matplotlib") from None
    chosen = model or _only_model(url)
    runner = bench.Bench(url, chosen, max_tokens)
    try:
        salt = seed if seed is not None else random.SystemRandom().randrange(1 << 31)
        samples, summary = bench.run(
            runner,
            prefix_tokens=prefix_tokens,
            requests=requests,
            concurrency=concurrency,
            seed=salt,
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


def _only_model(url: str) -> str:
    from launcher import probes

    listed = probes.models(url.rstrip("/"))
    if len(listed) != 1:
        found = ", ".join(listed) or "none (is the stack up?)"
        raise ConfigError(f"--model: choose one; {url}/v1/models lists {found}")
    return listed[0]
