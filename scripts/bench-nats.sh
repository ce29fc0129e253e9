#!/usr/bin/env bash
# Benchmark: publish every corpus line to core NATS on logs.p<crc32(host)%8>.<host>.
# `logpipe run` stdin -> partition (host: line) -> nats, beside the Go reference
# publisher ../shared/bench/natspub (nats.go, built here), against a private
# nats-server on free loopback ports, alternating, median of N. Each run must
# raise the server's in_msgs by exactly the corpus' line count.
#
#   scripts/bench-nats.sh [lines] [runs]     # default 1000000 3
#
# Needs Go and nats.go from Debian (../shared/bench/setup-tools.sh installs them).
source "$(dirname "$0")/bench-lib.sh"
lines="${1:-1000000}"
runs="${2:-3}"
input="$(corpus "$lines")"
bin="$(logpipe_bin)"
work="$BENCH_WORK/nats"
rm -rf "$work" && mkdir -p "$work"
build_natspub "$work"
start_nats_server "$work"
url="$NATS_SERVER_URL"
http="$NATS_HTTP_PORT"
publish_pipeline nats "$url" > "$work/publish.yaml"
check() {
  local before=$1 after
  after=$(in_msgs "$http")
  [ $((after - before)) -eq "$lines" ] || { echo "bench: in_msgs grew by $((after - before)), expected $lines" >&2; exit 1; }
}
for run in $(seq 1 "$runs"); do
  echo "run $run" >&2
  before=$(in_msgs "$http")
  measure go_natspub_core "'$work/natspub' -url '$url' -mode core '$input' > /dev/null"
  check "$before"
  before=$(in_msgs "$http")
  measure logpipe_partition_nats "'$bin' run --quiet '$work/publish.yaml' < '$input'"
  check "$before"
done
echo "every run raised in_msgs by exactly $lines" >&2
report "$lines" "$(stat -c %s "$input")" go_natspub_core
