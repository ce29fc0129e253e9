#!/usr/bin/env bash
# Whole-pipeline benchmarks beside their baselines, in one run, one table.
# Every case runs `logpipe run` on the shared corpus (../shared/bench/
# gen-corpus.py, seed 1) alternately with its baselines, RUNS times, and
# reports medians of wall and CPU time, peak RSS, and each baseline's wall
# time divided by logpipe's (> 1: logpipe moves more lines per second).
#
#   regex      stdin -> regex -> file       pcre2grep; syslog-ng and rsyslog (file -> filter -> file, ../shared/bench configs)
#   copy       file (once) -> file          cat; syslog-ng and rsyslog (file -> file, bench/*-copy.conf)
#   nats       stdin -> partition -> nats   Go natspub -mode core (nats.go)
#   jetstream  stdin -> partition -> jetstream (acked, window 4000)
#                                           Go natspub -mode js, same window, without ids and with -msgid
#                                           (host:offset); logpipe with its default Nats-Msg-Id and with
#                                           deduplicate: false
#   central    the central side of the reference scenario on what the jetstream case stored (8 partitions):
#              one process per partition, all at once, each draining its partition into one file per host
#              with an fsync per batch before the ack: pipelines/central.yaml (exactly_once, in_order)
#                                           Go natsconsume (nats.go pull, fetch 1000, fsync, then ack)
#              both stop 1 s after their partition ran dry (included in both times); the outputs must be
#              byte-identical
#
# Every output is checked: the regex output is byte-identical to pcre2grep's,
# the copy to the input, in_msgs grows by the line count, the stream holds
# exactly the line count, logpipe's per-host files equal Go's.
#
#   scripts/bench-pipelines.sh [lines] [runs]     # default 1000000 3
source "$(dirname "$0")/bench-lib.sh"
lines="${1:-1000000}"
runs="${2:-3}"
input="$(corpus "$lines")"
bin="$(logpipe_bin)"
work="$BENCH_WORK/pipelines"
rm -rf "$work" && mkdir -p "$work"
syslog_tools
build_natspub "$work"
pattern='\b(ERROR|FATAL|CRIT(ICAL)?|WARN(ING)?)\b'
# Core NATS on a server without streams (a stream on logs.> would store the
# core publishes too); JetStream on a second one.
start_nats_server "$work/core"
core_url="$NATS_SERVER_URL"
core_http="$NATS_HTTP_PORT"
start_nats_server "$work/js" -js -sd "$work/js/store"
js_url="$NATS_SERVER_URL"
js_http="$NATS_HTTP_PORT"

cat > "$work/regex.yaml" <<YAML
sources:
  in: { type: stdin }
transforms:
  important: { type: regex, inputs: [in], include: '$pattern' }
sinks:
  out: { type: file, inputs: [important], path: '$work/regex.out' }
YAML
cat > "$work/copy.yaml" <<YAML
data_dir: $work/copy-data
sources:
  in: { type: file, include: ['$input'], once: true }
sinks:
  out: { type: file, inputs: [in], path: '$work/copy.out' }
YAML
publish_pipeline nats "$core_url" > "$work/nats.yaml"
publish_pipeline jetstream "$js_url" > "$work/jetstream.yaml"
publish_pipeline jetstream-noid "$js_url" > "$work/jetstream-noid.yaml"
# The central case reads what the jetstream case stored, each tool with new
# durable consumers per run.
partitions=8
build_natsconsume "$work"
central_go() { # run
  local pids="" p
  for p in $(seq 0 $((partitions - 1))); do
    "$work/natsconsume" -url "$js_url" -partition "$p" -durable "go$1-p$p" -idle 1s -out "$work/central-go" > /dev/null &
    pids="$pids $!"
  done
  wait $pids
}
central_logpipe() { # run
  local pids="" p
  for p in $(seq 0 $((partitions - 1))); do
    PARTITION=$p CONSUMER="lp$1" OUT="$work/central-lp" LOGPIPE_DATA="$work/central-data" NATS_URL="$js_url" \
      STOP_AFTER_IDLE=1s "$bin" run --quiet pipelines/central.yaml &
    pids="$pids $!"
  done
  wait $pids
}
export -f central_go central_logpipe
export work js_url bin partitions

fail() { echo "bench: $*" >&2; exit 1; }
check_stream() { expect_stream "$js_http" "$lines"; }
purge() { purge_stream "$work/natspub" "$js_url" "$work"; }

pcre2grep "$pattern" "$input" > "$work/pcre2grep.out" || true
selected=$(wc -l < "$work/pcre2grep.out")
for run in $(seq 1 "$runs"); do
  echo "run $run" >&2
  # regex
  measure regex/pcre2grep "pcre2grep '$pattern' '$input' > '$work/pcre2grep.out'"
  rm -f "$work/regex.out"
  measure regex/logpipe "'$bin' run --quiet '$work/regex.yaml' < '$input'"
  cmp -s "$work/pcre2grep.out" "$work/regex.out" || fail "logpipe's regex output differs from pcre2grep's"
  rm -rf "$work/sng" "$work/rsl" "$work/sng.out" "$work/rsl.out" && mkdir -p "$work/sng" "$work/rsl"
  follow regex/syslog-ng "$selected" "$work/sng.out" CORPUS="$input" OUT="$work/sng.out" -- \
    "${SYSLOG_NG[@]}" -F --no-caps -f ../shared/bench/syslog-ng-filter.conf -R "$work/sng/persist" -p "$work/sng/pid" -c "$work/sng/ctl"
  follow regex/rsyslog "$selected" "$work/rsl.out" CORPUS="$input" OUT="$work/rsl.out" WORKDIR="$work/rsl" RS_WORKERS=1 -- \
    "${RSYSLOGD[@]}" -n -f ../shared/bench/rsyslog-filter.conf -i "$work/rsl/pid"
  # copy
  measure copy/cat "cat '$input' > '$work/cat.out'"
  rm -rf "$work/copy-data" "$work/copy.out"
  measure copy/logpipe "'$bin' run --quiet '$work/copy.yaml'"
  cmp -s "$input" "$work/copy.out" || fail "logpipe's copy differs from the input"
  rm -rf "$work/sng" "$work/rsl" "$work/sng.out" "$work/rsl.out" && mkdir -p "$work/sng" "$work/rsl"
  follow copy/syslog-ng "$lines" "$work/sng.out" CORPUS="$input" OUT="$work/sng.out" -- \
    "${SYSLOG_NG[@]}" -F --no-caps -f bench/syslog-ng-copy.conf -R "$work/sng/persist" -p "$work/sng/pid" -c "$work/sng/ctl"
  follow copy/rsyslog "$lines" "$work/rsl.out" CORPUS="$input" OUT="$work/rsl.out" WORKDIR="$work/rsl" -- \
    "${RSYSLOGD[@]}" -n -f bench/rsyslog-copy.conf -i "$work/rsl/pid"
  # nats
  before=$(in_msgs "$core_http")
  measure nats/go_natspub "'$work/natspub' -url '$core_url' -mode core '$input' > /dev/null"
  [ $(($(in_msgs "$core_http") - before)) -eq "$lines" ] || fail "natspub: in_msgs did not grow by $lines"
  before=$(in_msgs "$core_http")
  measure nats/logpipe "'$bin' run --quiet '$work/nats.yaml' < '$input'"
  [ $(($(in_msgs "$core_http") - before)) -eq "$lines" ] || fail "logpipe: in_msgs did not grow by $lines"
  # jetstream, then pull what logpipe stored
  measure jetstream/go_natspub "'$work/natspub' -url '$js_url' -mode js -maxpending 4000 '$input' > /dev/null"
  check_stream
  purge
  measure jetstream/go_natspub_msgid "'$work/natspub' -url '$js_url' -mode js -maxpending 4000 -msgid '$input' > /dev/null"
  check_stream
  purge
  measure jetstream/logpipe_noid "'$bin' run --quiet '$work/jetstream-noid.yaml' < '$input'"
  check_stream
  purge
  measure jetstream/logpipe "'$bin' run --quiet '$work/jetstream.yaml' < '$input'"
  check_stream
  rm -rf "$work/central-go" "$work/central-lp" "$work/central-data" && mkdir -p "$work/central-go" "$work/central-lp"
  measure central/go_natsconsume "bash -c 'central_go $run'"
  measure central/logpipe "bash -c 'central_logpipe $run'"
  [ "$(cat "$work"/central-go/*.log | wc -l)" -eq "$lines" ] || fail "natsconsume's files do not hold $lines lines"
  diff -r -q "$work/central-go" "$work/central-lp" > /dev/null || fail "logpipe's central files differ from natsconsume's"
  purge
done
echo "all outputs checked: regex = pcre2grep ($selected lines), copy = input, in_msgs +$lines, stream = $lines, central files = natsconsume's" >&2

python3 - "$BENCH_RESULTS" "$lines" "$(stat -c %s "$input")" <<'PY'
import statistics, sys
rows, order = {}, []
for line in open(sys.argv[1]):
    name, wall, user, sys_, rss = line.split()
    if name not in rows:
        order.append(name)
    rows.setdefault(name, []).append((float(wall), float(user) + float(sys_), int(rss)))
lines, size = int(sys.argv[2]), int(sys.argv[3])
med = {n: (max(0.001, statistics.median(r[0] for r in rs)), statistics.median(r[1] for r in rs), max(r[2] for r in rs)) for n, rs in rows.items()}
print(f"{'case':<10} {'tool':<17} {'wall s':>7} {'lines/s':>11} {'MB/s':>6} {'cpu s':>6} {'peak RSS':>9}  logpipe lines/s / this")
for name in order:
    case, tool = name.split("/")
    wall, cpu, rss = med[name]
    subjects = [n for n in order if n.startswith(case + "/logpipe")]
    ratio = "" if tool.startswith("logpipe") else ", ".join(
        f"{n.split('/')[1]} {wall / med[n][0]:.2f}x" for n in subjects)
    print(f"{case:<10} {tool:<17} {wall:>7.3f} {lines / wall:>11,.0f} {size / wall / 1e6:>6.1f} {cpu:>6.2f} {rss / 1024:>7.1f}Mi  {ratio}")
PY
