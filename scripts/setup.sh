#!/usr/bin/env bash
# One-time, idempotent set-up on a fresh Debian/Ubuntu machine:
#   etcd and nats-server (Debian packages) if missing; .venv with dynlaunch, the dev tools and the
#   default ai-dynamo (1.6.1, installed without `aisimulate`, see install_dynamo); the tiny offline model.
# `--dynamo VERSION` (e.g. 0.5.0, 1.4.2) instead creates .venv-dynamo-VERSION: dynlaunch (editable)
#   and ai-dynamo==VERSION, for the tests of another Dynamo line (scripts/test.sh runs them when it
#   exists).
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
DEFAULT_DYNAMO=1.6.1  # the line whose KV router migrates a dead worker's requests (launcher/compat.py)

# install_dynamo VENV VERSION [PACKAGE ...]: ai-dynamo==VERSION and the packages into VENV.
install_dynamo() {
  local venv=$1 version=$2
  shift 2
  local pip=("$venv/bin/python" -m pip install -q --disable-pip-version-check)
  case "$version" in
    0.*|1.[0-4].*) "${pip[@]}" "$@" "ai-dynamo==$version" ;;
    *)  # 1.5+ requires aisimulate, a PyPI stub that downloads from pypi.nvidia.com (no network
        # there in CI); only the planner and profiler import it. Its other requirements, then it.
      local wheels
      wheels=$(mktemp -d)
      "$venv/bin/python" -m pip download -q --disable-pip-version-check --no-deps -d "$wheels" "ai-dynamo==$version"
      mapfile -t reqs < <("$venv/bin/python" scripts/wheel_requires.py "$wheels"/ai_dynamo-*.whl aisimulate)
      "${pip[@]}" "$@" "${reqs[@]}"
      "${pip[@]}" --no-deps "$wheels"/ai_dynamo-*.whl
      rm -rf "$wheels" ;;
  esac
}

if [ -n "$dynamo" ]; then
  venv=".venv-dynamo-$dynamo"
  [ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
  install_dynamo "$venv" "$dynamo" -e . tokenizers  # tokenizers: the tiny model
  "$venv/bin/python" scripts/make_tiny_model.py
  echo "setup: done; $venv has dynlaunch and ai-dynamo==$dynamo"
  exit 0
fi
[ -x .venv/bin/python ] || "$python" -m venv .venv
install_dynamo .venv "$DEFAULT_DYNAMO" -e '.[dev]'
.venv/bin/python scripts/make_tiny_model.py
echo "setup: done; run: .venv/bin/dynlaunch up mocker"
