#!/usr/bin/env bash
# Runs LogPipe's tests: unit tests and integration tests that drive the real
# logpipe binary. Installs what is missing first (scripts/setup.sh). Extra
# arguments go to `swift test` (e.g. --filter RunCommandTests).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# Optimized: the integration tests push a million lines through the real
# binary, which a debug build makes the longest part of the run (the whole
# suite: 10 min debug, 4 min optimized, here). A scratch path of its own, so
# that this build (with -enable-testing) and scripts/build-release.sh's do not
# rebuild each other. `swift test` alone still runs the debug build.
flags=(-c release -Xswiftc -enable-testing --scratch-path .build-tests)
log="$(mktemp)"
if ! swift build "${flags[@]}" --build-tests >"$log" 2>&1; then
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
swift test "${flags[@]}" --skip-build "$@"
# The suites that talk to NATS again, against the current nats-server
# release (the first pass used Debian's 2.9). The 1,000,000-line reference
# test runs once: what it adds over the others is volume, not protocol.
if [ "$#" -eq 0 ]; then
  current="$(scripts/setup.sh current-nats)"
  echo "test: the NATS suites again with $("$current" --version)" >&2
  LOGPIPE_NATS_SERVER="$current" swift test "${flags[@]}" --skip-build \
    --filter 'NATSClientTests|NATSConnectionTests|NATSStageTests|JetStreamTests|FaultTests' \
    --skip 'shipAndConsumeEveryLineExactlyOnce|tenThousandFiles|fastRenameRotation'
fi
