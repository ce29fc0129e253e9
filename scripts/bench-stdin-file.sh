#!/usr/bin/env bash
# Benchmark: `logpipe run` of stdin -> file on the shared 1,000,000-line
# corpus, beside `cat` on the same file, alternating runs (median of N), and
# a check that the output is byte-identical to the input.
#
#   scripts/bench-stdin-file.sh [lines] [runs]     # default 1000000 3
source "$(dirname "$0")/bench-lib.sh"
lines="${1:-1000000}"
runs="${2:-3}"
input="$(corpus "$lines")"
bin="$(logpipe_bin)"
for run in $(seq 1 "$runs"); do
  echo "run $run" >&2
  measure cat "cat '$input' > '$BENCH_WORK/cat.out'"
  rm -f "$BENCH_WORK/logpipe.out"
  measure logpipe_stdin_file "OUT='$BENCH_WORK/logpipe.out' '$bin' run --quiet pipelines/stdin-to-file.yaml < '$input'"
  cmp -s "$input" "$BENCH_WORK/logpipe.out" || { echo "bench: logpipe output differs from the input" >&2; exit 1; }
done
report "$lines" "$(stat -c %s "$input")" cat
