#!/usr/bin/env bash
# The reference-script way, as a baseline for benchmarks/run.py: what Dynamo's SGLang launch scripts
# (agg.sh and friends) do, with the mocker instead of SGLang and every socket on 127.0.0.1.
#
#   1. start etcd and nats-server (-js) in the background (the reference scripts assume
#      `docker compose -f deploy/docker-compose.yml up -d` ran first; starting them here puts the
#      infra start inside the timing, so both sides start the same processes);
#   2. the clear step: `etcdctl del --prefix v1/instances/<ns>/` once etcd answers (the scripts ran
#      `python3 -m dynamo.sglang.utils.clear_namespace` there);
#   3. `python -m dynamo.frontend ... &`, then the worker(s) `python -m dynamo.mocker ... &`;
#   4. poll until a one-token chat completion succeeds, print `ready:`, then wait on the children.
#
# Nothing is restarted. Teardown follows examples/common/launch_utils.sh: on SIGTERM/SIGINT or exit,
# `kill -TERM 0` (the whole process group), reap, exit. Unlike its `wait_any_exit`, a child that
# dies does not end the script: it waits for all of them, like the older foreground-worker scripts,
# so a killed worker leaves the rest of the stack serving (and nobody restarts the worker).
#
# Usage (all ports are required: the caller picks free ones; system ports must be <= 32767):
#   reference_launch.sh --namespace NS --http-port P --etcd-port P --etcd-peer-port P \
#       --nats-port P --nats-monitor-port P --system-ports P[,P...] --model-path DIR \
#       --state-dir DIR [--model-name tiny] [--python PY] [--ready-timeout S]
# One worker per --system-ports entry. Worker N's pid is written to STATE/worker-N.pid.
set -uo pipefail

NS="" HTTP_PORT="" ETCD_PORT="" ETCD_PEER_PORT="" NATS_PORT="" NATS_MONITOR_PORT=""
SYSTEM_PORTS="" MODEL_PATH="" MODEL_NAME="tiny" STATE="" PYTHON="python3" READY_TIMEOUT=120
while (($#)); do
    case "$1" in
        --namespace) NS="$2" ;;
        --http-port) HTTP_PORT="$2" ;;
        --etcd-port) ETCD_PORT="$2" ;;
        --etcd-peer-port) ETCD_PEER_PORT="$2" ;;
        --nats-port) NATS_PORT="$2" ;;
        --nats-monitor-port) NATS_MONITOR_PORT="$2" ;;
        --system-ports) SYSTEM_PORTS="$2" ;;
        --model-path) MODEL_PATH="$2" ;;
        --model-name) MODEL_NAME="$2" ;;
        --state-dir) STATE="$2" ;;
        --python) PYTHON="$2" ;;
        --ready-timeout) READY_TIMEOUT="$2" ;;
        *) echo "reference_launch.sh: unknown argument $1" >&2; exit 2 ;;
    esac
    shift 2 || { echo "reference_launch.sh: $1 needs a value" >&2; exit 2; }
done
for var in NS HTTP_PORT ETCD_PORT ETCD_PEER_PORT NATS_PORT NATS_MONITOR_PORT SYSTEM_PORTS \
    MODEL_PATH STATE; do
    [[ -n "${!var}" ]] || { echo "reference_launch.sh: missing ${var}" >&2; exit 2; }
done

ETCD_BIN=$(command -v etcd || echo /usr/bin/etcd)
ETCDCTL_BIN=$(command -v etcdctl || echo /usr/bin/etcdctl)
NATS_BIN=$(command -v nats-server || echo /usr/sbin/nats-server)
ETCD_URL="http://127.0.0.1:${ETCD_PORT}"
PEER_URL="http://127.0.0.1:${ETCD_PEER_PORT}"

teardown() {
    local rc=$?
    trap '' TERM INT   # shield bash from its own group's SIGTERM
    kill -TERM 0 2>/dev/null || true
    wait 2>/dev/null || true
    exit "$rc"
}
trap teardown EXIT
trap 'exit 0' TERM INT  # an external SIGTERM is a clean stop; the EXIT trap tears down

mkdir -p "$STATE/logs"
rm -rf "$STATE/etcd" "$STATE/nats"

# -- 1. infra (docker-compose's job in the reference setup), loopback only ----------------------
"$ETCD_BIN" --name "ref-${NS}" --data-dir "$STATE/etcd" \
    --listen-client-urls "$ETCD_URL" --advertise-client-urls "$ETCD_URL" \
    --listen-peer-urls "$PEER_URL" --initial-advertise-peer-urls "$PEER_URL" \
    --initial-cluster "ref-${NS}=${PEER_URL}" --log-level warn >"$STATE/logs/etcd.log" 2>&1 &
"$NATS_BIN" -a 127.0.0.1 -p "$NATS_PORT" -m "$NATS_MONITOR_PORT" -js -sd "$STATE/nats" \
    >"$STATE/logs/nats.log" 2>&1 &

# -- 2. the clear step, once etcd answers -------------------------------------------------------
for ((i = 0; ; i++)); do
    curl -sf --max-time 1 "$ETCD_URL/health" >/dev/null 2>&1 && break
    ((i < 300)) || { echo "reference_launch.sh: etcd not up after 30s" >&2; exit 3; }
    sleep 0.1
done
ETCDCTL_API=3 "$ETCDCTL_BIN" --endpoints "$ETCD_URL" --command-timeout=5s \
    del --prefix "v1/instances/${NS}/" >/dev/null || exit 3

# -- 3. frontend, then the workers, in the background -------------------------------------------
export ETCD_ENDPOINTS="$ETCD_URL" NATS_SERVER="nats://127.0.0.1:${NATS_PORT}"
export DYN_NAMESPACE="$NS" DYN_EVENT_PLANE=nats DYN_TCP_RPC_HOST=127.0.0.1 \
    DYN_TCP_RESPONSE_STREAM_HOST=lo DYN_SYSTEM_HOST=127.0.0.1 DYN_EVENT_PLANE_HOST=127.0.0.1 \
    HF_HUB_OFFLINE=1
"$PYTHON" -m dynamo.frontend --http-host 127.0.0.1 --http-port "$HTTP_PORT" \
    >"$STATE/logs/frontend.log" 2>&1 &

IFS=, read -r -a ports <<<"$SYSTEM_PORTS"
for i in "${!ports[@]}"; do
    DYN_SYSTEM_PORT="${ports[$i]}" "$PYTHON" -m dynamo.mocker --model-path "$MODEL_PATH" \
        --model-name "$MODEL_NAME" --block-size 16 --endpoint "dyn://${NS}.backend.generate" \
        >"$STATE/logs/worker-${i}.log" 2>&1 &
    echo $! >"$STATE/worker-${i}.pid"
done

# -- 4. poll until a completion succeeds, then wait on the children -----------------------------
BODY="{\"model\": \"${MODEL_NAME}\", \"messages\": [{\"role\": \"user\", \"content\": \"ping\"}], \"max_tokens\": 1}"
URL="http://127.0.0.1:${HTTP_PORT}"
start=$SECONDS
until curl -sf --max-time 5 "$URL/v1/chat/completions" -H 'Content-Type: application/json' \
    -d "$BODY" >/dev/null 2>&1; do
    ((SECONDS - start < READY_TIMEOUT)) || {
        echo "reference_launch.sh: not ready after ${READY_TIMEOUT}s" >&2
        exit 3
    }
    sleep 0.25
done
echo "ready: $URL serves '${MODEL_NAME}'"
wait
