#!/usr/bin/env bash
# The whole test suite: lint, types, then unit, CLI and integration tests (real etcd, NATS, Dynamo).
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
.venv/bin/python -m pytest "$@"
