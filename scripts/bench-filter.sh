#!/usr/bin/env bash
# Benchmark: "keep the lines matching FILTER_RE and write them to a file" on
# the shared corpus: `logpipe run pipelines/filter-errors.yaml` (stdin ->
# regex -> file) beside pcre2grep and grep -E (C locale) on the same file,
# alternating runs, median of N. Every logpipe output must be byte-identical
# to pcre2grep's. Also times stdin -> regex -> blackhole (the filter without
# the file write) and stdin -> blackhole (reading and splitting alone).
#
#   scripts/bench-filter.sh [lines] [runs]     # default 1000000 3
source "$(dirname "$0")/bench-lib.sh"
lines="${1:-1000000}"
runs="${2:-3}"
input="$(corpus "$lines")"
bin="$(logpipe_bin)"
pattern='\b(ERROR|FATAL|CRIT(ICAL)?|WARN(ING)?)\b'
cat > "$BENCH_WORK/regex-blackhole.yaml" <<YAML
sources:
  in: { type: stdin }
transforms:
  important: { type: regex, inputs: [in], include: '$pattern' }
sinks:
  out: { type: blackhole, inputs: [important] }
YAML
cat > "$BENCH_WORK/blackhole.yaml" <<YAML
sources:
  in: { type: stdin }
sinks:
  out: { type: blackhole, inputs: [in] }
YAML
for run in $(seq 1 "$runs"); do
  echo "run $run" >&2
  measure pcre2grep "pcre2grep '$pattern' '$input' > '$BENCH_WORK/pcre2grep.out'"
  measure grep-E_C "LC_ALL=C grep -E '$pattern' '$input' > '$BENCH_WORK/grep.out'"
  rm -f "$BENCH_WORK/logpipe.out"
  measure logpipe_regex_file "OUT='$BENCH_WORK/logpipe.out' '$bin' run --quiet pipelines/filter-errors.yaml < '$input'"
  measure logpipe_regex_blackhole "'$bin' run --quiet '$BENCH_WORK/regex-blackhole.yaml' < '$input'"
  measure logpipe_blackhole "'$bin' run --quiet '$BENCH_WORK/blackhole.yaml' < '$input'"
  cmp -s "$BENCH_WORK/pcre2grep.out" "$BENCH_WORK/logpipe.out" || { echo "bench: logpipe's selection differs from pcre2grep's" >&2; exit 1; }
done
echo "selected $(wc -l < "$BENCH_WORK/pcre2grep.out") of $lines lines; logpipe output identical to pcre2grep's" >&2
report "$lines" "$(stat -c %s "$input")" pcre2grep
