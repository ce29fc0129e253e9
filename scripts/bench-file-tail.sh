#!/usr/bin/env bash
# Benchmark: read a file to its end and write its lines to another file.
# `logpipe run` with the file source in `once` mode -> file sink, beside
# `cat`, syslog-ng and rsyslog (file -> file, flow control) on the shared
# corpus, alternating, median of N, with peak RSS. logpipe's output must be
# byte-identical to the input; the daemons' outputs are compared and reported.
#
#   scripts/bench-file-tail.sh [lines] [runs]     # default 1000000 3
#
# syslog-ng and rsyslog come from ../shared/bench/setup-tools.sh (unpacked
# under /tmp/bench-tools; run once, needs the Debian mirror).
source "$(dirname "$0")/bench-lib.sh"
lines="${1:-1000000}"
runs="${2:-3}"
input="$(corpus "$lines")"
bin="$(logpipe_bin)"
syslog_tools
work="$BENCH_WORK/file-tail"
cat > "$BENCH_WORK/file-once.yaml" <<YAML
data_dir: $work/data
sources:
  in: { type: file, include: ['$input'], once: true }
sinks:
  out: { type: file, inputs: [in], path: '$work/logpipe.out' }
YAML
same() { if cmp -s "$input" "$1"; then echo identical; else echo "differs ($(wc -l < "$1") lines)"; fi; }
for run in $(seq 1 "$runs"); do
  echo "run $run" >&2
  rm -rf "$work" && mkdir -p "$work/sng" "$work/rsl"
  measure cat "cat '$input' > '$work/cat.out'"
  measure logpipe_file_once_file "'$bin' run --quiet '$BENCH_WORK/file-once.yaml'"
  [ "$(same "$work/logpipe.out")" = identical ] || { echo "bench: logpipe output differs from the input" >&2; exit 1; }
  follow syslog-ng "$lines" "$work/sng.out" CORPUS="$input" OUT="$work/sng.out" -- \
    "${SYSLOG_NG[@]}" -F --no-caps -f bench/syslog-ng-copy.conf -R "$work/sng/persist" -p "$work/sng/pid" -c "$work/sng/ctl"
  follow rsyslog "$lines" "$work/rsl.out" CORPUS="$input" OUT="$work/rsl.out" WORKDIR="$work/rsl" -- \
    "${RSYSLOGD[@]}" -n -f bench/rsyslog-copy.conf -i "$work/rsl/pid"
done
echo "outputs: logpipe $(same "$work/logpipe.out"), syslog-ng $(same "$work/sng.out"), rsyslog $(same "$work/rsl.out")" >&2
report "$lines" "$(stat -c %s "$input")" cat
