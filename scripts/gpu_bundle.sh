#!/usr/bin/env bash
# Build the offline bundle that runs Dynamo 1.4.2 + the real SGLang 0.5.16 on the borrowed H100
# (Python 3.12, torch 2.11.0+cu130, triton 3.6.0, transformers 5.17.0, nvcc 13.0; no network).
#
#   bash scripts/gpu_bundle.sh [--no-pack]
#   bash scripts/gpu_bundle.sh --infra     (only: this machine's etcd, etcdctl, nats-server)
#
# --infra packs this machine's etcd and nats-server (and etcdctl when there is one) into
# gpu-infra/infra-bin.tar.xz (GPU_INFRA_DIR overrides the folder), flat, as benchmarks/gpu/e2e.sh
# unpacks it into /tmp/dynlaunch-gpu/bin. They must need nothing but libc (Debian's Go builds do).
# 1. Downloads (PyPI only, --no-deps, cp312 manylinux x86_64) the pinned wheels below into
#    gpu-bundle/wheels/; a wheel already there is not fetched again.
# 2. Unpacks them into gpu-bundle/site/ (what `pip install --no-deps --target` makes, without
#    console scripts), trimming sglang-kernel to sm90: only sgl_kernel/sm90/common_ops.abi3.so
#    (+ the 85 KB spatial_ops.abi3.so), the .py files and the dist-info stay.
# 3. Packs site/ by top-level entry into as few gpu-bundle/parts/part-N.tar.xz of at most 60 MiB
#    as fit (balanced), reproducibly, and prints their sizes. Unchanged wheels: nothing is repacked.
# On the device: bash scripts/gpu_install.sh gpu-bundle/parts/part-*.tar.xz (one part per call).
#
# Left out on purpose: what the image has (torch, triton, torchvision, torchaudio, numpy, nvidia-*
# and cuda-bindings, aiohttp, uvloop, prometheus-client, scipy, numba, pillow, psutil, requests,
# sentencepiece, tiktoken, jinja2, ...), and what the Llama + triton-attention path never imports:
# kubernetes (planner only), zstandard (nvext metadata_upload only), nixl (disaggregation), IPython's
# shell deps (sglang imports only IPython.display), FA3/FA4, deep-gemm, tilelang, cutlass-dsl,
# flashinfer cubins, outlines, llguidance, datasets, torchao, modelscope...
# transformers 5.12.1 + tokenizers 0.22.2 (sglang's pins) shadow the image's 5.17.0: sglang 0.5.16
# registers the qwen3_asr config, which 5.17.0 already has, so `import sglang.srt.server_args` fails.
# xgrammar 0.2.7 instead of the pinned 0.2.1 (1.2 MiB vs 42.6 MiB; unused with --skip-tokenizer-init);
# fastapi 0.141.1: the newest without the opentelemetry-api requirement.
set -euo pipefail
export LC_ALL=C # file order in sort, ls and tar
cd "$(dirname "$0")/.."

ROOT=${GPU_BUNDLE_DIR:-gpu-bundle}
case $ROOT in /*) ;; *) ROOT=$PWD/$ROOT ;; esac
WHEELS=$ROOT/wheels
SITE=$ROOT/site
PARTS=$ROOT/parts
LIMIT=$((60 * 1024 * 1024))   # bytes per part (a device call carries 64 MiB in all)
MARGIN=$((1024 * 1024))       # headroom under LIMIT for the per-entry estimates
EPOCH=1767225600              # 2026-01-01: every file's mtime in the parts
INDEX=${GPU_BUNDLE_INDEX:-https://pypi.org/simple}

PKGS=(
  # Dynamo frontend + worker
  ai-dynamo==1.4.2 ai-dynamo-runtime==1.4.2
  pydantic==2.13.0 pydantic-core==2.46.0 annotated-types==0.8.0 typing-inspection==0.4.5
  pyzmq==27.3.0 msgspec==0.22.0 blake3==1.0.11
  # SGLang (ai-dynamo[sglang] pins sglang==0.5.16, which pins torch==2.11.0)
  sglang==0.5.16 sglang-kernel==0.4.5 flashinfer-python==0.6.14 apache-tvm-ffi==0.1.11
  xgrammar==0.2.7 transformers==5.12.1 tokenizers==0.22.2
  fastapi==0.141.1 starlette==1.10.0 uvicorn==0.54.0 python-multipart==0.0.34
  orjson==3.13.0 pybase64==1.5.1 setproctitle==1.3.8 dill==0.4.1
  openai==2.6.1 jiter==0.19.0 distro==1.9.0 sniffio==1.3.1 partial-json-parser==0.2.1.1.post7
  gguf==0.19.0 compressed-tensors==0.20.0 loguru==0.7.3 ipython==9.18.1 traitlets==5.16.1
  jsonschema==4.26.0 referencing==0.37.0 rpds-py==2026.9.1 jsonschema-specifications==2025.9.1
  # dynlaunch's own (pyproject dependencies the image lacks): NATS client, infra.tls certificates
  nats-py==2.16.0 cryptography==50.0.2
  # only for a plain `python3 -m sglang.launch_server` baseline (http_server imports soundfile)
  soundfile==0.13.1 cffi==2.1.1 pycparser==3.12
)
# sglang-kernel members left out (FA3 1.07 GB, sm100, FlashMLA, InfLLM)
KERNEL_DROP=('sgl_kernel/flash_ops.abi3.so' 'sgl_kernel/sm100/*' 'sgl_kernel/flashmla_ops.abi3.so'
  'sgl_kernel/infllm_ops.*')

log() { echo "gpu_bundle: $*" >&2; }

wheel_of() { # NAME VERSION -> the wheel file in $WHEELS, or nothing
  local stem=${1//-/_}
  shopt -s nocaseglob nullglob
  local found=("$WHEELS/$stem-$2-"*.whl)
  shopt -u nocaseglob nullglob
  [ ${#found[@]} -gt 0 ] && echo "${found[0]}"
  return 0
}

download() {
  mkdir -p "$WHEELS"
  local spec name ver
  for spec in "${PKGS[@]}"; do
    name=${spec%%==*} ver=${spec#*==}
    [ -n "$(wheel_of "$name" "$ver")" ] && continue
    log "downloading $spec"
    env -u PIP_FIND_LINKS -u PIP_EXTRA_INDEX_URL PIP_CONFIG_FILE=/dev/null \
      python3 -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
      --index-url "$INDEX" --python-version 3.12 --implementation cp \
      --abi cp312 --abi abi3 --abi none \
      --platform manylinux_2_34_x86_64 --platform manylinux_2_28_x86_64 \
      --platform manylinux_2_27_x86_64 --platform manylinux_2_26_x86_64 \
      --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
      --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
      -d "$WHEELS" "$spec"
    [ -n "$(wheel_of "$name" "$ver")" ] || { log "no wheel for $spec in $WHEELS"; exit 1; }
  done
}

unpack_wheel() { # WHEEL DEST: what pip does for a --target install, minus scripts and .pyc
  local whl=$1 dest=$2 excl=() d
  case $(basename "$whl") in sglang_kernel-*) excl=(-x "${KERNEL_DROP[@]}") ;; esac
  unzip -q -o "$whl" -d "$dest" "${excl[@]}"
  for d in "$dest"/*.data; do
    [ -d "$d" ] || continue
    for sub in purelib platlib; do
      [ -d "$d/$sub" ] && cp -a "$d/$sub/." "$dest/"
    done
    rm -rf "$d"   # scripts/, headers/, data/: not needed on PYTHONPATH
  done
}

build_site() {
  local tmp=$SITE.tmp spec name ver
  rm -rf "$tmp" && mkdir -p "$tmp"
  : >"$tmp/DYNLAUNCH_BUNDLE.txt"
  for spec in "${PKGS[@]}"; do
    name=${spec%%==*} ver=${spec#*==}
    local whl
    whl=$(wheel_of "$name" "$ver")
    unpack_wheel "$whl" "$tmp"
    printf '%s  %s\n' "$(sha256sum "$whl" | cut -d' ' -f1)" "$(basename "$whl")" \
      >>"$tmp/DYNLAUNCH_BUNDLE.txt"
  done
  [ -f "$tmp/sgl_kernel/sm90/common_ops.abi3.so" ] || { log "trim lost sm90/common_ops"; exit 1; }
  local extra
  extra=$(cd "$tmp" && find sgl_kernel -name '*.so' ! -path 'sgl_kernel/sm90/common_ops.abi3.so' \
    ! -name spatial_ops.abi3.so)
  [ -z "$extra" ] || { log "sglang-kernel not trimmed: $extra"; exit 1; }
  chmod -R u+rwX,go+rX,go-w "$tmp"
  rm -rf "$SITE" && mv "$tmp" "$SITE"
  log "site: $(du -sm "$SITE" | cut -f1) MiB unpacked, $(ls "$SITE" | wc -l) top-level entries"
}

xz_tar() { # OUT TAR-ARGS...: a reproducible tar (names sorted, fixed mtime/owner), xz -9, into OUT
  local out=$1
  shift
  tar --sort=name --format=posix --mtime="@$EPOCH" --owner=0 --group=0 --numeric-owner \
    --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime -cf - "$@" |
    xz -9 -T1 -c >"$out"
}
export -f xz_tar
export EPOCH SITE LC_ALL

estimate() { # xz size of each top-level entry, cached by (entry, bytes, files): estimates.tsv
  local cache=$ROOT/estimates.tsv keys=$ROOT/estimates.keys todo=$ROOT/estimates.todo e
  touch "$cache"
  for e in $(ls -A "$SITE"); do
    printf '%s\t%s\t%s\n' "$e" "$(du -sb "$SITE/$e" | cut -f1)" "$(find "$SITE/$e" | wc -l)"
  done >"$keys"
  # keys without a cached estimate
  awk -F'\t' 'FILENAME == ARGV[1] { seen[$1 FS $2 FS $3] = 1; next } !seen[$0]' "$cache" "$keys" >"$todo"
  if [ -s "$todo" ]; then
    log "estimating $(wc -l <"$todo") entries (xz -9; dynamo/_core.abi3.so alone takes ~2 min)"
    cut -f1 "$todo" | xargs -d '\n' -P "$(nproc)" -I{} bash -c \
      'set -eo pipefail; xz_tar /dev/stdout -C "$SITE" "$1" | wc -c | sed "s|^|$1\t|"' _ {} \
      >"$todo.sizes"
    join -t $'\t' <(sort "$todo") <(sort "$todo.sizes") >>"$cache"
  fi
  # keep the estimates of the current entries only; every entry must have one
  awk -F'\t' 'FILENAME == ARGV[1] { want[$1 FS $2 FS $3] = 1; next } want[$1 FS $2 FS $3]' "$keys" "$cache" |
    sort -u >"$cache.new"
  mv "$cache.new" "$cache"
  [ "$(wc -l <"$cache")" -eq "$(wc -l <"$keys")" ] || { log "missing size estimates"; exit 1; }
  rm -f "$keys" "$todo" "$todo.sizes"
}

assign() { # -> lines "PART<TAB>ENTRY": fewest parts, largest-first onto the lightest part
  awk -F'\t' -v cap=$((LIMIT - MARGIN)) '
    { name[NR] = $1; size[NR] = $4; total += $4; if ($4 > cap) { print "entry " $1 " alone is over the limit" > "/dev/stderr"; exit 1 } }
    END {
      n = NR
      for (i = 1; i <= n; i++) order[i] = i
      for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++)
        if (size[order[j]] > size[order[i]] || (size[order[j]] == size[order[i]] && name[order[j]] < name[order[i]])) { t = order[i]; order[i] = order[j]; order[j] = t }
      for (k = int((total + cap - 1) / cap); k <= n; k++) {
        for (p = 1; p <= k; p++) load[p] = 0
        ok = 1
        for (i = 1; i <= n; i++) {
          best = 1
          for (p = 2; p <= k; p++) if (load[p] < load[best]) best = p
          load[best] += size[order[i]]; part[order[i]] = best
          if (load[best] > cap) ok = 0
        }
        if (ok) { for (i = 1; i <= n; i++) print part[i] "\t" name[i]; exit 0 }
      }
      exit 1
    }' "$ROOT/estimates.tsv"
}

pack() {
  local stamp
  stamp=$(printf '%s\n' "$(cat "$SITE/DYNLAUNCH_BUNDLE.txt")" "${KERNEL_DROP[*]}" \
    "limit=$LIMIT margin=$MARGIN epoch=$EPOCH xz-9-T1 pack-v2" | sha256sum | cut -d' ' -f1)
  if [ -f "$PARTS/STAMP" ] && [ "$(cat "$PARTS/STAMP")" = "$stamp" ]; then
    log "parts are up to date"
    return
  fi
  estimate
  local plan k p marks=$ROOT/marks
  plan=$(assign)
  k=$(cut -f1 <<<"$plan" | sort -n | tail -1)
  rm -rf "$PARTS" "$marks" && mkdir -p "$PARTS"
  for p in $(seq 1 "$k"); do # each part carries .dynlaunch-bundle/part-P-of-K.txt: its entries
    mkdir -p "$marks/$p/.dynlaunch-bundle"
    awk -F'\t' -v p="$p" '$1 == p {print $2}' <<<"$plan" | sort >"$marks/$p/.dynlaunch-bundle/part-$p-of-$k.txt"
  done
  log "packing $k parts (xz -9, one per core)"
  export PARTS MARKS=$marks K=$k
  seq 1 "$k" | xargs -P "$(nproc)" -I{} bash -c 'set -eo pipefail
    mapfile -t entries <"$MARKS/$1/.dynlaunch-bundle/part-$1-of-$K.txt"
    xz_tar "$PARTS/part-$1.tar.xz" -C "$MARKS/$1" .dynlaunch-bundle -C "$SITE" "${entries[@]}"' _ {}
  for p in $(seq 1 "$k"); do
    local size
    size=$(stat -c %s "$PARTS/part-$p.tar.xz")
    ((size <= LIMIT)) || { log "part-$p.tar.xz is $size bytes, over $LIMIT"; exit 1; }
    printf 'part-%s.tar.xz\t%s\n' "$p" "$(tr '\n' ' ' <"$marks/$p/.dynlaunch-bundle/part-$p-of-$k.txt")"
  done >"$PARTS/MANIFEST.tsv"
  rm -rf "$marks"
  (cd "$PARTS" && sha256sum part-*.tar.xz >SHA256SUMS)
  echo "$stamp" >"$PARTS/STAMP"
}

report() {
  local name entries
  while IFS=$'\t' read -r name entries; do
    awk -v n="$name" -v s="$(stat -c %s "$PARTS/$name")" -v e="$entries" \
      'BEGIN { printf "%s  %6.2f MiB  %s\n", n, s / 1048576, e }'
  done <"$PARTS/MANIFEST.tsv"
}

infra_bin() { # this machine's etcd, etcdctl (if any), nats-server -> $INFRA/infra-bin.tar.xz
  local infra=${GPU_INFRA_DIR:-gpu-infra} search="$PATH:/usr/sbin:/sbin" name path lib
  local stage=$infra/.stage
  rm -rf "$stage" && mkdir -p "$stage"
  for name in etcd nats-server etcdctl; do
    path=$(PATH=$search command -v "$name" || true)
    if [ -z "$path" ]; then
      [ "$name" = etcdctl ] && { log "no etcdctl here: packing etcd and nats-server only"; continue; }
      log "$name not found (PATH, /usr/sbin, /sbin): apt-get install etcd-server nats-server"
      return 1
    fi
    # a binary that loads more than libc may not run on the GPU host's image
    lib=$(ldd "$path" 2>/dev/null | awk '$1 !~ /^(linux-vdso|libc\.so|\/lib64\/ld-linux)/ && NF' || true)
    [ -z "$lib" ] || { log "$path needs more than libc: $lib"; return 1; }
    install -m 0755 "$path" "$stage/$name"
  done
  local names
  mapfile -t names < <(ls "$stage")
  xz_tar "$infra/infra-bin.tar.xz.tmp" -C "$stage" "${names[@]}"
  mv "$infra/infra-bin.tar.xz.tmp" "$infra/infra-bin.tar.xz"
  rm -rf "$stage"
  log "$infra/infra-bin.tar.xz: $(stat -c %s "$infra/infra-bin.tar.xz") bytes: ${names[*]}"
}

if [ "${1:-}" = "--infra" ]; then
  infra_bin
  exit
fi
download
build_site
[ "${1:-}" = "--no-pack" ] && exit 0
pack
report
