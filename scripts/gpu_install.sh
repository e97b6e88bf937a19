#!/usr/bin/env bash
# On the GPU machine: unpack parts made by scripts/gpu_bundle.sh into one site dir and print the
# line that puts it on PYTHONPATH (stdout holds only that line; progress goes to stderr).
#
#   bash scripts/gpu_install.sh gpu-bundle/parts/part-1.tar.xz [gpu-bundle/parts/part-2.tar.xz ...]
#   eval "$(bash scripts/gpu_install.sh gpu-bundle/parts/part-*.tar.xz)"
#
# GPU_SITE overrides the site dir (default /tmp/dynlaunch-gpu/site). A part already unpacked
# (same sha256) is skipped, so parts can arrive one per call while the machine stays warm.
# For a clean reinstall: rm -rf "$GPU_SITE".
set -euo pipefail

site=${GPU_SITE:-/tmp/dynlaunch-gpu/site}
[ $# -gt 0 ] || { echo "usage: $0 PART.tar.xz..." >&2; exit 2; }
mkdir -p "$site/.dynlaunch-bundle/installed"
for part in "$@"; do
  [ -f "$part" ] || { echo "gpu_install: no such part: $part" >&2; exit 2; }
  sum=$(sha256sum "$part" | cut -d' ' -f1)
  stamp=$site/.dynlaunch-bundle/installed/$(basename "$part").sha256
  if [ "$(cat "$stamp" 2>/dev/null)" = "$sum" ]; then
    echo "gpu_install: $part already unpacked" >&2
    continue
  fi
  tar -xJf "$part" -C "$site" --no-same-owner
  echo "$sum" >"$stamp"
  echo "gpu_install: unpacked $part into $site" >&2
done

# Each part carries .dynlaunch-bundle/part-P-of-K.txt: say whether all K are there.
marks=$(ls "$site/.dynlaunch-bundle" | sed -n 's/^part-\([0-9]*\)-of-\([0-9]*\)\.txt$/\1 \2/p')
total=$(awk '{print $2}' <<<"$marks" | sort -n | tail -1)
got=$(awk 'NF {print $1}' <<<"$marks" | sort -n | paste -sd' ' -)
if [ -n "$total" ] && [ "$(wc -w <<<"$got")" -eq "$total" ]; then
  echo "gpu_install: complete: parts $got of $total" >&2
else
  echo "gpu_install: INCOMPLETE: parts ${got:-none} of ${total:-?}; unpack the others too" >&2
fi
echo "export PYTHONPATH=$site\${PYTHONPATH:+:\$PYTHONPATH}"
