#!/usr/bin/env bash
# Runs LogPipe's tests: unit tests and integration tests that drive the real
# logpipe binary. Installs what is missing first (scripts/setup.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
swift build --build-tests 2>&1 | tee /tmp/logpipe-build.log | grep -E "warning:|error:|Compiling|Build" | grep -v "^\[" || true
if grep -q "warning:" /tmp/logpipe-build.log; then
  echo "test: the build has warnings (see above); LogPipe builds with zero warnings" >&2
  exit 1
fi
swift test --skip-build "$@"
