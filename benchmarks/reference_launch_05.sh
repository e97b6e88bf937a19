#!/usr/bin/env bash
# The reference-script way on Dynamo 0.5.x, as a baseline for `benchmarks/run.py --dynamo 0.5.0`:
# what the 0.5-era launch scripts do (components/backends/sglang/launch/agg.sh @42289874, the shape
# sglang-runtime:0.5.0 runs), with the mocker instead of SGLang and the HTTP port on 127.0.0.1.
# Run it inside testkit.netns: 0.5's frontend needs a routable address (there: 127.0.0.2 on lo).
#
#   1. start etcd and nats-server (-js) in the background (the reference scripts assume
#      `docker compose -f deploy/docker-compose.yml up -d` ran first; both sides start the same
#      processes here);
#   2. the clear step of the 0.5 scripts: `python3 -m dynamo.sglang.utils.clear_namespace
#      --namespace NS` once etcd and NATS answer (it deletes only the prefix `/NS/`, which 0.5 does
#      not use, and sometimes segfaults; like agg.sh, which has no `set -e`, its status is ignored);
#   3. `python -m dynamo.frontend ... &`, then the worker(s) `python -m dynamo.mocker
#      --extra-engine-args FILE ... &` (0.5's mocker has no --block-size: FILE is {"block_size": 16});
#   4. poll until a one-token chat completion succeeds, print `ready:`, then wait on the children.
#
# Dynamo's defaults otherwise: no DYN_* settings but the namespace (0.5 reads no DYN_TCP_* /
# DYN_EVENT_PLANE* variables), no system port (0.5's system server is off by default), the model
# card's migration limit 0 (the mocker writes it), nothing restarts a dead worker. Teardown as in
# reference_launch.sh: on SIGTERM/SIGINT or exit, `kill -TERM 0`, reap, exit; a dead child does not
# end the script.
#
# Usage (all ports are required: the caller picks free ones):
#   reference_launch_05.sh --namespace NS --http-port P --etcd-port P --etcd-peer-port P \
#       --nats-port P --nats-monitor-port P --workers N --model-path DIR --state-dir DIR \
#       [--model-name tiny] [--python PY] [--ready-timeout S]
# Worker N's pid is written to STATE/worker-N.pid.
set -uo pipefail

NS="" HTTP_PORT="" ETCD_PORT="" ETCD_PEER_PORT="" NATS_PORT="" NATS_MONITOR_PORT=""
WORKERS="" MODEL_PATH="" MODEL_NAME="tiny" STATE="" PYTHON="python3" READY_TIMEOUT=120
while (($#)); do
    case "$1" in
        --namespace) NS="$2" ;;
        --http-port) HTTP_PORT="$2" ;;
        --etcd-port) ETCD_PORT="$2" ;;
        --etcd-peer-port) ETCD_PEER_PORT="$2" ;;
        --nats-port) NATS_PORT="$2" ;;
        --nats-monitor-port) NATS_MONITOR_PORT="$2" ;;
        --workers) WORKERS="$2" ;;
        --model-path) MODEL_PATH="$2" ;;
        --model-name) MODEL_NAME="$2" ;;
        --state-dir) STATE="$2" ;;
        --python) PYTHON="$2" ;;
        --ready-timeout) READY_TIMEOUT="$2" ;;
        *) echo "reference_launch_05.sh: unknown argument $1" >&2; exit 2 ;;
    esac
    shift 2 || { echo "reference_launch_05.sh: $1 needs a value" >&2; exit 2; }
done
for var in NS HTTP_PORT ETCD_PORT ETCD_PEER_PORT NATS_PORT NATS_MONITOR_PORT WORKERS \
    MODEL_PATH STATE; do
    [[ -n "${!var}" ]] || { echo "reference_launch_05.sh: missing ${var}" >&2; exit 2; }
done

ETCD_BIN=$(command -v etcd || echo /usr/bin/etcd)
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

# -- 2. the 0.5 scripts' clear step, once etcd and NATS answer ----------------------------------
for ((i = 0; ; i++)); do
    curl -sf --max-time 1 "$ETCD_URL/health" >/dev/null 2>&1 &&
        curl -sf --max-time 1 "http://127.0.0.1:${NATS_MONITOR_PORT}/healthz" >/dev/null 2>&1 &&
        break
    ((i < 300)) || { echo "reference_launch_05.sh: etcd/NATS not up after 30s" >&2; exit 3; }
    sleep 0.1
done
export ETCD_ENDPOINTS="$ETCD_URL" NATS_SERVER="nats://127.0.0.1:${NATS_PORT}"
export DYN_NAMESPACE="$NS" HF_HUB_OFFLINE=1
timeout 60 "$PYTHON" -m dynamo.sglang.utils.clear_namespace --namespace "$NS" \
    >"$STATE/logs/clear_namespace.log" 2>&1
echo "clear_namespace exited $?" >>"$STATE/logs/clear_namespace.log"

# -- 3. frontend, then the workers, in the background -------------------------------------------
"$PYTHON" -m dynamo.frontend --http-host 127.0.0.1 --http-port "$HTTP_PORT" \
    >"$STATE/logs/frontend.log" 2>&1 &

echo '{"block_size": 16}' >"$STATE/mocker-args.json"
for ((i = 0; i < WORKERS; i++)); do
    "$PYTHON" -m dynamo.mocker --model-path "$MODEL_PATH" --model-name "$MODEL_NAME" \
        --extra-engine-args "$STATE/mocker-args.json" --endpoint "dyn://${NS}.backend.generate" \
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
        echo "reference_launch_05.sh: not ready after ${READY_TIMEOUT}s" >&2
        exit 3
    }
    sleep 0.25
done
echo "ready: $URL serves '${MODEL_NAME}'"
wait
