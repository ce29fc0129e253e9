#!/usr/bin/env bash
# The main job: the reference scenario end to end, on this machine.
#  1. builds logpipe (release);
#  2. makes sample logs for six fake hosts (logpipe's demo_logs source);
#  3. starts a private nats-server with JetStream on a free loopback port;
#  4. ships the logs with pipelines/ship-logs.yaml (file tail -> severity ->
#     partition -> jetstream stream LOGS, one message per line);
#  5. runs pipelines/central.yaml once per partition (pull consumer -> one file
#     per host, acked after fsync), until the stream is drained;
#  6. shows what went where, and checks every host's file against its input.
#
#   scripts/demo.sh [lines]        # default 100000 lines in all
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
lines="${1:-100000}"
work="${LOGPIPE_DEMO:-/tmp/logpipe-demo}"
partitions=4
rm -rf "$work"
mkdir -p "$work/hosts" "$work/central"

echo "== building logpipe (release)" >&2
bin="$(scripts/build-release.sh)"

echo "== sample logs: $lines lines from 6 fake hosts in $work/hosts" >&2
cat > "$work/generate.yaml" <<YAML
sources:
  demo: { type: demo_logs, count: $lines, hosts: 6, format: syslog }
sinks:
  files: { type: file, inputs: [demo], path: "$work/hosts/{host}.log" }
YAML
"$bin" run --quiet "$work/generate.yaml"

echo "== nats-server with JetStream (store in $work/nats)" >&2
nats-server -js -a 127.0.0.1 -p -1 -m -1 -sd "$work/nats" -l "$work/nats-server.log" &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null || true' EXIT
for _ in $(seq 100); do grep -q "Server is ready" "$work/nats-server.log" 2>/dev/null && break; sleep 0.1; done
port=$(grep -o "client connections on 127.0.0.1:[0-9]*" "$work/nats-server.log" | grep -o "[0-9]*$")
http=$(grep -o "http monitor on 127.0.0.1:[0-9]*" "$work/nats-server.log" | grep -o "[0-9]*$")
export NATS_URL="nats://127.0.0.1:$port"
echo "   $NATS_URL" >&2
stream_messages() {
  python3 -c "
import json, urllib.request
data = json.load(urllib.request.urlopen('http://127.0.0.1:$http/jsz?streams=true'))
print(sum(s['state']['messages'] for a in data.get('account_details', []) for s in a.get('stream_detail', []) if s['name'] == 'LOGS'))" 2>/dev/null || echo "?"
}

echo "== shipping (pipelines/ship-logs.yaml)" >&2
ONCE=true LOG_FILES="$work/hosts/*.log" PARTITIONS=$partitions LOGPIPE_DATA="$work/ship" \
  "$bin" run pipelines/ship-logs.yaml

echo "   stream LOGS holds $(stream_messages) messages" >&2

echo "== central consumers, one per partition (pipelines/central.yaml)" >&2
pids=()
for partition in $(seq 0 $((partitions - 1))); do
  PARTITION=$partition STOP_AFTER_IDLE=2s OUT="$work/central" LOGPIPE_DATA="$work/central-state" \
    "$bin" run pipelines/central.yaml 2> "$work/central-p$partition.log" &
  pids+=($!)
done
for pid in "${pids[@]}"; do wait "$pid"; done
grep -h "finished in" "$work"/central-p*.log | sed 's/^/   /' >&2

echo "== what went where"
printf '%-28s %10s %10s  %s\n' host "shipped" "central" "identical"
total=0
for input in "$work"/hosts/*.log; do
  host=$(basename "$input" .log)
  output="$work/central/$host.log"
  shipped=$(wc -l < "$input")
  received=$(wc -l < "$output" 2>/dev/null || echo 0)
  same=no; cmp -s "$input" "$output" && same=yes
  printf '%-28s %10d %10d  %s\n' "$host" "$shipped" "$received" "$same"
  total=$((total + received))
done
echo "$total lines in $work/central"
