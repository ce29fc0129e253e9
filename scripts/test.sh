#!/usr/bin/env bash
# Runs LogPipe's tests: unit tests and integration tests that drive the real
# logpipe binary. Installs what is missing first (scripts/setup.sh). Extra
# arguments go to `swift test` (e.g. --filter RunCommandTests).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
log="$(mktemp)"
if ! swift build --build-tests >"$log" 2>&1; then
  cat "$log"
  echo "test: the build failed" >&2
  exit 1
fi
if grep -q "warning:" "$log"; then
  grep -B2 -A6 "warning:" "$log"
  echo "test: the build has warnings (above); LogPipe builds with zero warnings" >&2
  exit 1
fi
tail -1 "$log"
swift test --skip-build "$@"
