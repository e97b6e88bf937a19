"""One module per comparison; each exports a ``run(ctx) -> Row`` that `benchmarks/run.py` lists."""
