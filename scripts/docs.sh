#!/usr/bin/env bash
# Builds the DocC documentation of LogPipe and NATSClient into .build/docs
# (open .build/docs/<target>/index.html through a web server, or pass
# --transform-for-static-hosting options yourself). Fails on any DocC
# warning: a broken symbol link is a defect like a compiler warning.
set -euo pipefail
cd "$(dirname "$0")/.."
out=.build/docs
mkdir -p "$out"
for target in LogPipe NATSClient; do
  log="$(mktemp)"
  if ! swift package --allow-writing-to-directory "$out" generate-documentation --target "$target" \
    --output-path "$out/$target" --warnings-as-errors >"$log" 2>&1; then
    grep -E "error|warning" -A6 "$log" | head -80
    echo "docs: the documentation of $target has errors or warnings (above)" >&2
    exit 1
  fi
  echo "docs: $target -> $out/$target"
done
