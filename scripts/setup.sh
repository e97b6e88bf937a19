#!/usr/bin/env bash
# One-time, idempotent set-up on a fresh Debian/Ubuntu machine:
#   etcd and nats-server (Debian packages) if missing; .venv with dynlaunch, the pinned ai-dynamo
#   (1.4.2: installs offline from PyPI, no `aisimulate`) and the dev tools; the tiny offline model.
# `--dynamo VERSION` (e.g. 0.5.0) instead creates .venv-dynamo-VERSION: dynlaunch (editable) and
#   ai-dynamo==VERSION, for the tests of another Dynamo line (scripts/test.sh runs them when it exists).
set -euo pipefail
cd "$(dirname "$0")/.."

dynamo=""
if [ "${1:-}" = "--dynamo" ]; then
  dynamo=${2:?setup: --dynamo needs a version, e.g. --dynamo 0.5.0}
fi

missing=()
command -v etcd >/dev/null 2>&1 || [ -x /usr/bin/etcd ] || missing+=(etcd-server)
command -v nats-server >/dev/null 2>&1 || [ -x /usr/sbin/nats-server ] || missing+=(nats-server)
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "setup: installing ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

python=${PYTHON:-python3}
if [ -n "$dynamo" ]; then
  venv=".venv-dynamo-$dynamo"
  [ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check -e . "ai-dynamo==$dynamo" tokenizers  # tokenizers: the tiny model
  "$venv/bin/python" scripts/make_tiny_model.py
  echo "setup: done; $venv has dynlaunch and ai-dynamo==$dynamo"
  exit 0
fi
[ -x .venv/bin/python ] || "$python" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[dev,dynamo]'
.venv/bin/python scripts/make_tiny_model.py
echo "setup: done; run: .venv/bin/dynlaunch up mocker"
