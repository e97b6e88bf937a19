#!/usr/bin/env bash
# The whole test suite: lint, types, then unit, CLI and integration tests (real etcd, NATS, Dynamo).
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
.venv/bin/python -m pytest "$@"
# The Dynamo 0.5 leg (made by `bash scripts/setup.sh --dynamo 0.5.0`): tests/dynamo05 against the
# real 0.5.0 runtime, in a private network namespace (testkit/netns.py; needs root).
# Dynamo 0.5.0's frontend now and then never listed a model its workers registered (2 of 8 CI runs,
# before 0644edb made 0.5 workers start first and the frontend once all registered; not seen since,
# too few runs to call it gone): one failed leg is run once more, and says so.
leg05() {
  DYNLAUNCH_DYNAMO05_VENV=.venv-dynamo-0.5.0 .venv/bin/python -m testkit.netns -- \
    .venv/bin/python -m pytest tests/dynamo05
}
if [ "$#" -eq 0 ] && [ -x .venv-dynamo-0.5.0/bin/python ]; then
  leg05 || { echo "test.sh: the Dynamo 0.5 leg FAILED once; running it again (see above)"; leg05; }
elif [ "$#" -eq 0 ]; then
  echo "test.sh: Dynamo 0.5 leg skipped: no .venv-dynamo-0.5.0 (bash scripts/setup.sh --dynamo 0.5.0)"
fi
# The Dynamo 1.4 leg (made by `bash scripts/setup.sh --dynamo 1.4.2`): tests/dynamo14 against the
# real 1.4.2 runtime, whose KV router fails a dead worker's requests (router_mode auto stays
# round-robin there); the main suite runs the default, 1.6.1.
if [ "$#" -eq 0 ] && [ -x .venv-dynamo-1.4.2/bin/python ]; then
  DYNLAUNCH_DYNAMO14_VENV=.venv-dynamo-1.4.2 .venv/bin/python -m pytest tests/dynamo14
elif [ "$#" -eq 0 ]; then
  echo "test.sh: Dynamo 1.4 leg skipped: no .venv-dynamo-1.4.2 (bash scripts/setup.sh --dynamo 1.4.2)"
fi
[ "$#" -gt 0 ] || .venv/bin/python scripts/mutants.py  # the whole suite only: every planted bug caught
