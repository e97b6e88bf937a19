#!/usr/bin/env bash
# Real SGLang behind the real Dynamo frontend, launched by dynlaunch, on a GPU machine.
# Run on the GPU host after scripts/gpu_install.sh:  bash benchmarks/gpu/e2e.sh PHASE
#   serve   up sglang (tiny Llama, --page-size 16); streamed + non-streamed chat; bench prefix with the
#           radix cache, then the same with --disable-radix-cache (the baseline); stop.
#   faults  up sglang; SIGKILL the worker (fenced, restarted, serving again); SIGTERM the launcher:
#           no SGLang process left, no GPU memory held.
#   multi   2 workers x tp $TP (default 1) on 2*TP GPUs: each worker's processes on its own GPUs.
#   ttft    bench prefix on a 2.8 B random Llama (a 12k-token prefill takes a good part of TTFT
#           there), radix cache vs --disable-radix-cache.
#   router  bench prefix --compare-router with 2 SGLang workers sharing GPU 0 (models[].gpus, 0.3
#           of its memory each): round-robin, then reload to kv (each worker gets its
#           --kv-events-config); where each group went, KV events.
#   share   what --mem-fraction-static means on a shared GPU: worker A (0.3) ready, then B with 0.3,
#           then B with 0.65; the GPU's memory after each.
#   two     two models (alpha, beta) pinned to GPU 0, --mem-fraction-static 0.3 each: both listed,
#           each answers, one GPU holds both.
#   ops     2 workers sharing GPU 0 under load: `restart` (rolling; stop first: no free GPU),
#           then `restart --no-rolling`; failed requests, pids and GPUs each time.
# Results and logs go to $OUT (default /tmp/dynlaunch-gpu/out).
set -u
phase=${1:?usage: e2e.sh serve|faults|multi|ttft}
cd "$(dirname "$0")/../.."
site=${GPU_SITE:-/tmp/dynlaunch-gpu/site}
out=${OUT:-/tmp/dynlaunch-gpu/out}
mkdir -p "$out"
export PYTHONPATH="$site:$PWD" PATH="/tmp/dynlaunch-gpu/bin:$PATH" HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
export SGLANG_SKIP_SGL_KERNEL_VERSION_CHECK=1
py=python3
dl() { "$py" -m launcher "$@"; }
say() { echo "== $(date +%T) $*" | tee -a "$out/$phase.log"; }
model=/tmp/dynlaunch-gpu/tiny-llama
port=8000
url=http://127.0.0.1:$port
engine=(--attention-backend triton --sampling-backend pytorch --disable-cuda-graph
        --mem-fraction-static 0.3 --enable-metrics)

# etcd and nats-server: the Debian binaries (they need only libc), carried as gpu-infra/infra-bin.tar.xz
if [ ! -x /tmp/dynlaunch-gpu/bin/etcd ] && [ -f gpu-infra/infra-bin.tar.xz ]; then
  mkdir -p /tmp/dynlaunch-gpu/bin && tar -xJf gpu-infra/infra-bin.tar.xz -C /tmp/dynlaunch-gpu/bin
fi
[ -f "$model/config.json" ] || "$py" scripts/make_tiny_llama.py "$model" >/dev/null

up() {  # up NAME [dynlaunch args] [-- engine args]; waits for ready
  local name=$1; shift
  start "$name" --model-path "$model" --served-model-name tiny-llama --page-size 16 "$@"
}

start() {  # start NAME [dynlaunch args] [-- engine args]: up sglang, waits for ready
  local name=$1; shift
  "$py" -m launcher up sglang --namespace "gpu-$name" --http-port $port \
    --state-dir "/tmp/dynlaunch-gpu/state-$name" \
    --startup-timeout 420 "$@" >"$out/$name.stdout" 2>"$out/$name.stderr" &
  launcher=$!
  local t0=$SECONDS
  until grep -q "dynlaunch: ready" "$out/$name.stderr"; do
    if ! kill -0 $launcher 2>/dev/null; then say "$name: launcher exited before ready"; tail -30 "$out/$name.stderr"; return 1; fi
    if (( SECONDS - t0 > 440 )); then say "$name: not ready after 440s"; return 1; fi
    sleep 2
  done
  say "$name: ready after $((SECONDS - t0))s (launcher pid $launcher)"
}

down() {  # SIGTERM the launcher, wait, record what is left
  local name=$1 t0=$SECONDS
  kill -TERM $launcher; wait $launcher; local rc=$?
  say "$name: launcher exited $rc after $((SECONDS - t0))s"
  sleep 1
  pgrep -fa 'sglang|dynamo\.|etcd|nats-server' >"$out/$name-left.txt"
  say "$name: sglang/dynamo processes left: $(grep -c . "$out/$name-left.txt")"
  nvidia-smi --query-compute-apps=pid,process_name,used_memory --format=csv,noheader >"$out/$name-gpu-after.txt"
  say "$name: GPU compute processes after stop: $(grep -c . "$out/$name-gpu-after.txt" || true)"
}

chat() {  # chat STREAM(true|false) -> prints the response
  curl -s -m 60 "$url/v1/chat/completions" -H 'Content-Type: application/json' \
    -d "{\"model\":\"tiny-llama\",\"messages\":[{\"role\":\"user\",\"content\":\"Hello! Count to five.\"}],\"max_tokens\":16,\"stream\":$1}"
}

bench() {  # bench NAME [args]: one bench prefix run (fresh prompts) as JSON, and its table
  local name=$1; shift
  dl bench prefix "$@" --json >"$out/bench-$name.json"
  "$py" -c 'import json, sys; from launcher.bench import view as bench_view
print(bench_view.render(json.load(open(sys.argv[1]))["summary"], sys.argv[2], "tiny-llama"))' \
    "$out/bench-$name.json" "$url" >"$out/bench-$name.txt"
}

worker_metrics() {  # SGLang's prefix-cache metrics on the worker's system port
  local sys
  sys=$(dl status --state-dir "/tmp/dynlaunch-gpu/state-$1" --json | "$py" -c \
    'import json,sys; print([c for c in json.load(sys.stdin)["children"] if c["name"]=="worker-0"][0]["ports"]["system"])')
  curl -s "http://127.0.0.1:$sys/metrics" | grep -E '^sglang:(cache_hit_rate|prompt_tokens_total|cached_tokens_total|num_used_tokens)' || true
}

share_cfg() {  # share_cfg FILE: one model, 2 workers sharing GPU 0 (0.3 of its memory each)
  cat >"$1" <<YAML
models:
  - name: tiny
    served_name: tiny-llama
    path: $model
    workers: 2
    page_size: 16
    gpus: ["0"]
    extra_args: [--attention-backend, triton, --sampling-backend, pytorch, --disable-cuda-graph,
                 --mem-fraction-static, "0.3", --enable-metrics]
YAML
}

nvidia-smi --query-gpu=index,name,memory.used,memory.total --format=csv >"$out/$phase-gpus.txt"
case $phase in
serve)
  up radix -- "${engine[@]}" || exit 1
  chat false >"$out/chat-nonstream.json"; say "non-streamed: $(head -c 400 "$out/chat-nonstream.json")"
  chat true >"$out/chat-stream.txt"; say "streamed: $(grep -c '^data: ' "$out/chat-stream.txt") SSE events, last: $(tail -2 "$out/chat-stream.txt" | head -1)"
  bench radix --url "$url" --model tiny-llama --prefix-tokens 2048 --requests 32
  worker_metrics radix >"$out/metrics-radix.txt"
  down radix
  up noradix -- "${engine[@]}" --disable-radix-cache || exit 1
  bench noradix --url "$url" --model tiny-llama --prefix-tokens 2048 --requests 32
  worker_metrics noradix >"$out/metrics-noradix.txt"
  down noradix
  cat "$out/bench-radix.txt" "$out/bench-noradix.txt"
  ;;
faults)
  up faults -- "${engine[@]}" || exit 1
  dl status --state-dir /tmp/dynlaunch-gpu/state-faults >"$out/status-before.txt"
  pids=$(dl status --state-dir /tmp/dynlaunch-gpu/state-faults --json | "$py" -c \
    'import json,sys; print([c for c in json.load(sys.stdin)["children"] if c["name"]=="worker-0"][0]["pid"])')
  say "worker-0 pid $pids; its process tree: $(pstree -p "$pids" 2>/dev/null | head -3 | tr '\n' ' ')"
  ps -eo pid,pgid,sid,comm,args | grep -E 'sglang|dynamo' | grep -v grep >"$out/procs-before-kill.txt"
  t0=$SECONDS; kill -KILL "$pids"
  until [ "$(grep -c 'worker-0 pid=.*: started' "$out/faults.stderr")" -ge 2 ]; do sleep 1; (( SECONDS - t0 > 120 )) && break; done
  say "worker-0 restarted after $((SECONDS - t0))s"
  until dl health --url "$url" --model tiny-llama >/dev/null 2>&1; do sleep 2; (( SECONDS - t0 > 420 )) && break; done
  say "after SIGKILL of the worker: serving again after $((SECONDS - t0))s"
  grep -E "worker-0|fenced" "$out/faults.stderr" | tail -8 | tee -a "$out/$phase.log"
  dl status --state-dir /tmp/dynlaunch-gpu/state-faults >"$out/status-after.txt"; cat "$out/status-after.txt"
  chat false >"$out/chat-after-restart.json"; say "chat after restart: $(head -c 200 "$out/chat-after-restart.json")"
  nvidia-smi --query-compute-apps=pid,process_name,used_memory --format=csv,noheader >"$out/gpu-while-running.txt"
  down faults
  ;;
multi)
  tp=${TP:-1}; gpus=$(seq -s, 0 $((2 * tp - 1)))
  extra=(); (( tp > 1 )) && extra=(--disable-custom-all-reduce)  # NCCL all-reduce; the trimmed kernel wheel is not tested for custom AR
  up multi --workers 2 --tp "$tp" --gpus "$gpus" -- "${engine[@]}" "${extra[@]}" || exit 1
  for i in 1 2 3 4 5 6; do chat false >"$out/chat-multi-$i.json"; done
  say "chat: $(head -c 200 "$out/chat-multi-1.json")"
  dl status --state-dir /tmp/dynlaunch-gpu/state-multi >"$out/status-multi.txt"; cat "$out/status-multi.txt"
  dl status --state-dir /tmp/dynlaunch-gpu/state-multi --json >"$out/status-multi.json"
  nvidia-smi --query-compute-apps=pid,gpu_uuid,used_memory --format=csv,noheader >"$out/gpu-multi.txt"
  nvidia-smi --query-gpu=index,uuid --format=csv,noheader >"$out/gpu-uuids.txt"
  # which worker (by process group) holds which GPU, and how many requests each served
  "$py" - "$out" >"$out/gpu-placement.txt" <<'PY'
import json, os, sys, urllib.request
out = sys.argv[1]
index = {u.strip(): i.strip() for i, u in (l.split(",") for l in open(f"{out}/gpu-uuids.txt"))}
children = json.load(open(f"{out}/status-multi.json"))["children"]
group = {os.getpgid(c["pid"]): c for c in children if c["name"].startswith("worker-")}
for line in open(f"{out}/gpu-multi.txt"):
    pid, uuid, mem = (x.strip() for x in line.split(","))
    c = group.get(os.getpgid(int(pid)))
    env = dict(e.split("=", 1) for e in open(f"/proc/{pid}/environ").read().split("\0") if "=" in e)
    print(f"pid {pid} ({open(f'/proc/{pid}/comm').read().strip()}) on GPU {index[uuid]} ({mem}): "
          f"{c['name'] if c else 'NO WORKER'} CUDA_VISIBLE_DEVICES={env.get('CUDA_VISIBLE_DEVICES')}")
for c in children:
    if c["name"].startswith("worker-"):
        text = urllib.request.urlopen(f"http://127.0.0.1:{c['ports']['system']}/metrics").read().decode()
        hits = [l for l in text.splitlines() if l.startswith(("sglang:num_requests_total", "sglang:prompt_tokens_total"))]
        print(c["name"], " | ".join(hits))
PY
  cat "$out/gpu-placement.txt" | tee -a "$out/$phase.log"
  down multi
  ;;
ttft)
  model=/tmp/dynlaunch-gpu/llama-3b
  t0=$SECONDS
  [ -f "$model/config.json" ] || "$py" scripts/make_tiny_llama.py --shape 3b "$model" >/dev/null
  say "3b model: $(du -sh "$model" | cut -f1), made in $((SECONDS - t0))s"
  args=(--url "$url" --model tiny-llama --prefix-tokens 12000 --requests 24 --max-tokens 8)
  # room in the KV cache for every prefix of the run (33 x 12k tokens), so no group is evicted
  engine=("${engine[@]/0.3/0.7}")
  up ttft-radix -- "${engine[@]}" || exit 1
  bench 3b-radix "${args[@]}"
  worker_metrics ttft-radix >"$out/metrics-3b-radix.txt"
  down ttft-radix
  up ttft-noradix -- "${engine[@]}" --disable-radix-cache || exit 1
  bench 3b-noradix "${args[@]}"
  worker_metrics ttft-noradix >"$out/metrics-3b-noradix.txt"
  down ttft-noradix
  cat "$out/bench-3b-radix.txt" "$out/bench-3b-noradix.txt"
  ;;
router)
  share_cfg "$out/share.yaml"
  dl bench prefix --compare-router --backend sglang -c "$out/share.yaml" --prefix-tokens 2000 \
    --groups 6 --requests 36 --concurrency 1 --concurrency 2 --max-tokens 8 --seed 16 --json -- \
    --gpus 0 --startup-timeout 420 >"$out/router.json" 2>"$out/router.stderr"
  rc=$?; say "compare-router exited $rc"
  (( rc == 0 )) || { for f in /tmp/dynlaunch-compare-router-*/up.log; do grep -v ' | ' "$f" | tail -15; done; tail -5 "$out/router.stderr"; }
  "$py" -c 'import json, sys; from launcher.bench import view
r = json.load(open(sys.argv[1])); print(view.render_compare(r)); print("logs:", r["logs"])' \
    "$out/router.json" | tee "$out/router.txt"
  logs=$(sed -n 's/^logs: //p' "$out/router.txt")
  [ -n "$logs" ] && cp -r "$logs" "$out/router-logs" && grep -E "pid=[0-9]+: (started|stopped)|dynlaunch: " "$logs/up.log" | grep -v ' | ' >"$out/router-lifecycle.txt"
  grep -h -- "--kv-events-config" "$logs/up.log" | head -2 | cut -c1-400 >>"$out/router-lifecycle.txt"
  ;;
kvcheck)  # kv routing with 2 workers sharing GPU 0: does the frontend apply SGLang's KV events?
  share_cfg "$out/share.yaml"; printf 'frontend:\n  router_mode: kv\n' >>"$out/share.yaml"
  start kvcheck -c "$out/share.yaml" --gpus 0 || exit 1
  grep -h "connecting to" /tmp/dynlaunch-gpu/state-kvcheck/logs/tiny-*.log | cut -c1-200 | tee -a "$out/$phase.log"
  bench kv --url "$url" --model tiny-llama --prefix-tokens 2000 --requests 24
  cat "$out/bench-kv.txt" | tee -a "$out/$phase.log"
  curl -s "$url/metrics" | grep -E '^dynamo_component_(kv_cache_events_applied|router_kv_hit_rate)' | tee -a "$out/$phase.log"
  down kvcheck
  ;;
share)
  eng=(--attention-backend triton --sampling-backend pytorch --disable-cuda-graph --enable-metrics)
  one() {  # one NAME PORT FRACTION: a stack of its own (namespace, state, port); 0 when ready
    "$py" -m launcher up sglang --namespace "share-$1" --model-path "$model" --served-model-name "$1" \
      --page-size 16 --http-port "$2" --state-dir "/tmp/dynlaunch-gpu/state-share-$1" --gpus 0 \
      --startup-timeout 300 -- "${eng[@]}" --mem-fraction-static "$3" >"$out/share-$1.stdout" 2>"$out/share-$1.stderr" &
    local pid=$! t0=$SECONDS
    until grep -q "dynlaunch: ready" "$out/share-$1.stderr"; do
      kill -0 $pid 2>/dev/null || { say "share $1 ($3): exited: $(grep -h -o 'ValueError: .*' /tmp/dynlaunch-gpu/state-share-$1/logs/*.log | head -1)"; return 1; }
      (( SECONDS - t0 > 320 )) && { say "share $1: not ready"; return 1; }; sleep 2
    done
    say "share $1 ($3): ready after $((SECONDS - t0))s; GPU used: $(nvidia-smi --query-gpu=memory.used,memory.total --format=csv,noheader)"
  }
  one a 8000 0.3
  one b 8001 0.3
  one c 8002 0.65
  nvidia-smi --query-compute-apps=pid,used_memory --format=csv,noheader | tee -a "$out/$phase.log"
  for p in 8000 8002; do say "chat :$p: $(curl -s -m 30 http://127.0.0.1:$p/v1/models | head -c 120)"; done
  pkill -TERM -f "launcher up sglang --namespace share-" ; sleep 15
  ;;
two)
  cat >"$out/two.yaml" <<YAML
models:
  - {name: alpha, served_name: alpha, path: $model, workers: 1, page_size: 16, gpus: ["0"],
     extra_args: [--attention-backend, triton, --sampling-backend, pytorch, --disable-cuda-graph, --mem-fraction-static, "0.3", --enable-metrics]}
  - {name: beta, served_name: beta, path: $model, workers: 1, page_size: 16, gpus: ["0"],
     extra_args: [--attention-backend, triton, --sampling-backend, pytorch, --disable-cuda-graph, --mem-fraction-static, "0.3", --enable-metrics]}
YAML
  dl plan sglang -c "$out/two.yaml" --http-port $port >"$out/two-plan.txt" 2>&1; grep '^#' "$out/two-plan.txt" | tee -a "$out/$phase.log"
  "$py" -m launcher up sglang -c "$out/two.yaml" --namespace gpu-two --http-port $port \
    --state-dir /tmp/dynlaunch-gpu/state-two --startup-timeout 420 >"$out/two.stdout" 2>"$out/two.stderr" &
  launcher=$!; t0=$SECONDS
  until grep -q "dynlaunch: ready" "$out/two.stderr"; do
    kill -0 $launcher 2>/dev/null || { say "two: launcher exited before ready"; tail -30 "$out/two.stderr"; break; }
    (( SECONDS - t0 > 440 )) && { say "two: not ready"; break; }; sleep 2
  done
  say "two: ready after $((SECONDS - t0))s"
  curl -s "$url/v1/models" >"$out/two-models.json"; say "models: $(head -c 300 "$out/two-models.json")"
  for m in alpha beta; do
    curl -s -m 60 "$url/v1/chat/completions" -H 'Content-Type: application/json' \
      -d "{\"model\":\"$m\",\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}],\"max_tokens\":8}" >"$out/two-chat-$m.json"
    say "$m: $(head -c 200 "$out/two-chat-$m.json")"
  done
  dl status --state-dir /tmp/dynlaunch-gpu/state-two >"$out/two-status.txt"; cat "$out/two-status.txt"
  nvidia-smi --query-compute-apps=pid,gpu_uuid,used_memory --format=csv,noheader >"$out/two-gpu.txt"; cat "$out/two-gpu.txt"
  down two
  ;;
ops)
  share_cfg "$out/share.yaml"
  start ops -c "$out/share.yaml" --gpus 0 || exit 1
  gpu_of() { "$py" - <<'PY'
import json, subprocess, sys
st = json.loads(subprocess.run([sys.executable, "-m", "launcher", "status", "--state-dir",
    "/tmp/dynlaunch-gpu/state-ops", "--json"], capture_output=True, text=True).stdout)
for c in st["children"]:
    if c["role"] == "worker":
        env = dict(e.split("=", 1) for e in open(f"/proc/{c['pid']}/environ").read().split("\0") if "=" in e)
        print(c["name"], c["pid"], "CUDA_VISIBLE_DEVICES=" + env.get("CUDA_VISIBLE_DEVICES", "?"))
PY
  }
  say "before: $(gpu_of)"
  "$py" - "$out" <<'PY' &
import json, sys, threading, time, urllib.request
out, stop, res = sys.argv[1], time.time() + 400, []
def client():
    body = json.dumps({"model": "tiny-llama", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}).encode()
    while time.time() < stop:
        try:
            r = urllib.request.urlopen(urllib.request.Request("http://127.0.0.1:8000/v1/chat/completions", body, {"Content-Type": "application/json"}), timeout=60)
            res.append((time.time(), r.status == 200))
        except Exception as e:
            res.append((time.time(), False))
        if __import__("os").path.exists(out + "/load.stop"): break
ts = [threading.Thread(target=client) for _ in range(3)]; [t.start() for t in ts]; [t.join() for t in ts]
json.dump(res, open(out + "/load.json", "w"))
PY
  loader=$!; sleep 5
  t0=$SECONDS; dl restart --state-dir /tmp/dynlaunch-gpu/state-ops >"$out/restart.txt" 2>&1; say "restart exited $? after $((SECONDS - t0))s"
  cat "$out/restart.txt" | tee -a "$out/$phase.log"; say "after restart: $(gpu_of)"
  sleep 5; touch "$out/load.stop"; wait $loader
  "$py" -c 'import json,sys; r=json.load(open(sys.argv[1])); print("rolling restart under load:", sum(1 for _,ok in r if not ok), "failed of", len(r))' "$out/load.json" | tee -a "$out/$phase.log"
  t0=$SECONDS; dl restart --no-rolling --state-dir /tmp/dynlaunch-gpu/state-ops >"$out/restart-no-rolling.txt" 2>&1; say "restart --no-rolling exited $? after $((SECONDS - t0))s"
  cat "$out/restart-no-rolling.txt" | tee -a "$out/$phase.log"; say "after --no-rolling: $(gpu_of)"
  chat false >"$out/chat-after-ops.json"; say "chat after: $(head -c 200 "$out/chat-after-ops.json")"
  grep -E "tiny-[0-9][.a-z0-9]* pid=|dynlaunch: " "$out/ops.stderr" | tail -30 >"$out/ops-lifecycle.txt"
  down ops
  ;;
esac
# Only 8 files come back from a device call: pack the small logs into one.
tar -czf "$out/logs-$phase.tgz" -C "$out" --exclude='*.tgz' . 2>/dev/null || true
