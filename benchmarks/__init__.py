"""dynlaunch benchmarks: a runner (run.py), its harness, the report, one module per comparison."""
