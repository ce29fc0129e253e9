#!/usr/bin/env bash
# Builds the release logpipe binary and prints its path (the demo and the
# benchmarks use this). On Linux the Swift runtime is linked in statically
# (--static-swift-stdlib): the binary runs on hosts without a Swift toolchain,
# as a shipper deployed to a fleet must, and starts in ~11 ms instead of
# ~18 ms (no dynamic loading of the Swift and Foundation libraries).
#
#   scripts/build-release.sh        # prints .build/release/logpipe
set -euo pipefail
cd "$(dirname "$0")/.."
flags=(-c release --product logpipe)
if [ "$(uname -s)" = Linux ]; then flags+=(--static-swift-stdlib); fi
log="$(mktemp)"
if ! swift build "${flags[@]}" >"$log" 2>&1; then
  cat "$log" >&2
  echo "build-release: the build failed" >&2
  exit 1
fi
# The static Foundation archive makes the linker warn about its own use of
# mktemp; that one is the toolchain's, not LogPipe's.
grep -E "warning:" "$log" | grep -v "use of \`mktemp' is dangerous" >&2 || true
rm -f "$log"
echo "$(swift build "${flags[@]}" --show-bin-path)/logpipe"
