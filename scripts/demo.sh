#!/usr/bin/env bash
# The main job, end to end: builds logpipe (release) and runs the demo
# pipeline (pipelines/demo.yaml): generated logs from eight fake hosts are
# written to one file per host. Then shows what went where.
#
#   scripts/demo.sh [lines]        # default 100000 lines
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
lines="${1:-100000}"
out="${LOGPIPE_OUT:-/tmp/logpipe-demo/out}"
rm -rf "$out"
mkdir -p "$out"

echo "== building logpipe (release)" >&2
swift build -c release --product logpipe 2>&1 | grep -E "error|warning|Compiling logpipe|Build" || true
bin="$(swift build -c release --show-bin-path)/logpipe"

echo "== logpipe validate pipelines/demo.yaml" >&2
"$bin" validate pipelines/demo.yaml

echo "== logpipe run pipelines/demo.yaml ($lines lines)" >&2
DEMO_LINES="$lines" LOGPIPE_OUT="$out" "$bin" run pipelines/demo.yaml

echo "== what went where ($out)"
total=0
for file in "$out"/*.log; do
  count=$(wc -l < "$file")
  total=$((total + count))
  printf '%8d  %s\n' "$count" "$file"
done
printf '%8d  total\n' "$total"
echo "== a few lines of $(ls "$out" | head -1)"
head -3 "$out/$(ls "$out" | head -1)"
