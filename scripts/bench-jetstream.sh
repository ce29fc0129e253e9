#!/usr/bin/env bash
# Benchmark: store every corpus line in the JetStream stream LOGS (logs.>, file
# storage) with an acknowledgement per message. `logpipe run` stdin ->
# partition (host: line) -> jetstream (max_in_flight 4000) beside the Go
# reference publisher ../shared/bench/natspub -mode js (PublishAsync, max
# pending 4000), against a private nats-server on free loopback ports,
# alternating, median of N. Before each run the stream is purged; after it,
# the stream must hold exactly the corpus' line count. logpipe runs twice:
# with its default Nats-Msg-Id per line (idempotent; the server keeps every id
# for the duplicate window) and with `deduplicate: false`, like the Go
# reference, which sets no id. A fourth case, bench/jetstream-floor.c, is the
# cheapest client possible (frames built before the clock starts, same window):
# it shows how fast the server alone stores and acknowledges on this machine.
# A fifth runs two of them at once, each with half the corpus and half the
# window: if the server's per-connection work were the limit, two connections
# would be faster.
#
#   scripts/bench-jetstream.sh [lines] [runs]     # default 1000000 3
source "$(dirname "$0")/bench-lib.sh"
lines="${1:-1000000}"
runs="${2:-3}"
input="$(corpus "$lines")"
bin="$(logpipe_bin)"
work="$BENCH_WORK/jetstream"
rm -rf "$work" && mkdir -p "$work"
build_natspub "$work"
cc -O2 -pthread -o "$work/jetstream-floor" bench/jetstream-floor.c
half=$(( (lines + 1) / 2 ))
head -n "$half" "$input" > "$work/first-half.log"
tail -n +"$((half + 1))" "$input" > "$work/second-half.log"
start_nats_server "$work" -js -sd "$work/store"
url="$NATS_SERVER_URL"
http="$NATS_HTTP_PORT"
publish_pipeline jetstream "$url" > "$work/publish.yaml"
publish_pipeline jetstream-noid "$url" > "$work/publish-noid.yaml"
# Each case leaves exactly the corpus in LOGS, checked, then purged.
js_case() {
  measure "$@"
  expect_stream "$http" "$lines"
  purge_stream "$work/natspub" "$url" "$work"
}
for run in $(seq 1 "$runs"); do
  echo "run $run" >&2
  js_case go_natspub_js "'$work/natspub' -url '$url' -mode js -maxpending 4000 '$input' > /dev/null"
  js_case logpipe_partition_jetstream "'$bin' run --quiet '$work/publish.yaml' < '$input'"
  js_case logpipe_partition_jetstream_noid "'$bin' run --quiet '$work/publish-noid.yaml' < '$input'"
  js_case c_floor_client "'$work/jetstream-floor' '${url##*:}' '$input' 4000"
  js_case c_floor_two_connections "'$work/jetstream-floor' '${url##*:}' '$work/first-half.log' 2000 & '$work/jetstream-floor' '${url##*:}' '$work/second-half.log' 2000; wait"
done
echo "every run left exactly $lines messages in LOGS" >&2
report "$lines" "$(stat -c %s "$input")" go_natspub_js
