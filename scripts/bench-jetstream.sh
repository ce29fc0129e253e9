#!/usr/bin/env bash
# Benchmark: store every corpus line in the JetStream stream LOGS (logs.>, file
# storage) with an acknowledgement per message. `logpipe run` stdin ->
# partition (host: line) -> jetstream (max_in_flight 4000) beside the Go
# reference publisher ../shared/bench/natspub -mode js (PublishAsync, max
# pending 4000), against a private nats-server on free loopback ports,
# alternating, median of N. Before each run the stream is purged; after it,
# the stream must hold exactly the corpus' line count.
#
#   scripts/bench-jetstream.sh [lines] [runs]     # default 1000000 3
source "$(dirname "$0")/bench-lib.sh"
lines="${1:-1000000}"
runs="${2:-3}"
input="$(corpus "$lines")"
bin="$(logpipe_bin)"
work="$BENCH_WORK/jetstream"
rm -rf "$work" && mkdir -p "$work"
command -v go >/dev/null || bash ../shared/bench/setup-tools.sh >&2
(cd ../shared/bench/natspub && GOPATH=/usr/share/gocode GO111MODULE=off GOFLAGS= GOCACHE="$work/gocache" go build -o "$work/natspub" .)

nats-server -js -a 127.0.0.1 -p -1 -m -1 -sd "$work/store" -l "$work/server.log" &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null || true; rm -rf "$work/store"' EXIT
for _ in $(seq 100); do grep -q "Server is ready" "$work/server.log" 2>/dev/null && break; sleep 0.1; done
port=$(grep -o "client connections on 127.0.0.1:[0-9]*" "$work/server.log" | grep -o "[0-9]*$")
http=$(grep -o "http monitor on 127.0.0.1:[0-9]*" "$work/server.log" | grep -o "[0-9]*$")
url="nats://127.0.0.1:$port"
stream_messages() {
  curl -s "http://127.0.0.1:$http/jsz?streams=true" | python3 -c '
import json, sys
data = json.load(sys.stdin)
print(sum(s["state"]["messages"] for a in data.get("account_details", []) for s in a.get("stream_detail", []) if s["name"] == "LOGS"))'
}
purge() { curl -s "http://127.0.0.1:$http/healthz" > /dev/null; "$bin" run --quiet "$work/purge.yaml" 2>/dev/null || true; }
cat > "$work/publish.yaml" <<YAML
sources:
  in: { type: stdin }
transforms:
  route: { type: partition, inputs: [in], partitions: 8, host: line }
sinks:
  store:
    type: jetstream
    inputs: [route]
    servers: ["$url"]
    stream: { name: LOGS, subjects: ["logs.>"], storage: file }
    max_in_flight: 4000
YAML
check() {
  local count
  count=$(stream_messages)
  [ "$count" -eq "$lines" ] || { echo "bench: the stream holds $count messages, expected $lines" >&2; exit 1; }
}
# natspub purges the stream itself before publishing; logpipe's runs purge
# through natspub's own call on an empty file.
: > "$work/empty.log"
for run in $(seq 1 "$runs"); do
  echo "run $run" >&2
  measure go_natspub_js "'$work/natspub' -url '$url' -mode js -maxpending 4000 '$input' > /dev/null"
  check
  "$work/natspub" -url "$url" -mode js "$work/empty.log" > /dev/null  # purge
  measure logpipe_partition_jetstream "'$bin' run --quiet '$work/publish.yaml' < '$input'"
  check
  "$work/natspub" -url "$url" -mode js "$work/empty.log" > /dev/null  # purge
done
echo "every run left exactly $lines messages in LOGS" >&2
report "$lines" "$(stat -c %s "$input")" go_natspub_js
