#!/usr/bin/env bash
# Memory under a stalled sink: `logpipe run` tails a log file (file source ->
# partition -> nats) while the nats-server is frozen (SIGSTOP), and the file
# grows by LINES lines (the shared corpus, appended again and again). logpipe's
# resident memory is sampled every 0.2 s: it must stay flat (the source reads
# only as fast as the sink takes, the rest waits on disk). Then the server is
# thawed and every line must arrive (in_msgs >= lines written; core NATS may
# deliver a line twice when a batch's PONG timed out during the freeze).
#
#   scripts/bench-stalled-sink.sh [lines]      # default 10000000
source "$(dirname "$0")/bench-lib.sh"
lines="${1:-10000000}"
input="$(corpus 1000000)"
bin="$(logpipe_bin)"
work="$BENCH_WORK/stalled"
rm -rf "$work" && mkdir -p "$work"
start_nats_server "$work"
url="$NATS_SERVER_URL"
http="$NATS_HTTP_PORT"
server_pid="$NATS_SERVER_PID"
cat > "$work/tail.yaml" <<YAML
data_dir: $work/data
sources:
  app: { type: file, include: ['$work/app.log'], read_from: beginning }
transforms:
  route: { type: partition, inputs: [app], partitions: 8, host: line }
sinks:
  bus: { type: nats, inputs: [route], servers: ["$url"] }
YAML
head -n 100000 "$input" > "$work/app.log"
written=100000
"$bin" run --quiet "$work/tail.yaml" 2> "$work/logpipe.log" &
logpipe=$!
rss() { awk '/VmRSS/ {print $2}' "/proc/$logpipe/status"; }
for _ in $(seq 100); do [ "$(in_msgs "$http")" -ge "$written" ] && break; sleep 0.1; done
[ "$(in_msgs "$http")" -ge "$written" ] || { echo "bench: the first $written lines did not arrive" >&2; exit 1; }
kill -STOP "$server_pid"
echo "server frozen after $written lines; appending $lines more" >&2
sleep 1
start_rss=$(rss)
samples="$work/rss.txt"
: > "$samples"
(while kill -0 "$logpipe" 2>/dev/null; do rss >> "$samples"; sleep 0.2; done) &
sampler=$!
size=$(wc -l < "$input")
while [ $((written - 100000)) -lt "$lines" ]; do
  left=$((lines - (written - 100000)))
  if [ "$left" -ge "$size" ]; then cat "$input" >> "$work/app.log"; written=$((written + size))
  else head -n "$left" "$input" >> "$work/app.log"; written=$((written + left)); fi
done
sleep 2
end_rss=$(rss)
kill "$sampler" 2>/dev/null || true
peak_rss=$(sort -n "$samples" | tail -1)
echo "file now $(du -h "$work/app.log" | cut -f1), $written lines; thawing the server" >&2
kill -CONT "$server_pid"
for _ in $(seq 1200); do [ "$(in_msgs "$http")" -ge "$written" ] && break; sleep 0.5; done
delivered=$(in_msgs "$http")
kill -TERM "$logpipe"; wait "$logpipe" || true
printf '%-34s %s\n' "RSS when the sink stalled" "$((start_rss / 1024)) MiB" \
  "RSS after +$lines lines" "$((end_rss / 1024)) MiB" \
  "peak RSS while stalled" "$((peak_rss / 1024)) MiB" \
  "lines written / published" "$written / $delivered"
[ "$delivered" -ge "$written" ] || { echo "bench: only $delivered of $written lines arrived" >&2; exit 1; }
[ $((peak_rss - start_rss)) -lt 16384 ] || { echo "bench: RSS grew by $(((peak_rss - start_rss) / 1024)) MiB while the sink stalled" >&2; exit 1; }
rm -f "$work/app.log"
