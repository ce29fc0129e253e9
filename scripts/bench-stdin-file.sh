#!/usr/bin/env bash
# Benchmark: `logpipe run` of stdin -> file on the shared 1,000,000-line
# corpus, beside `cat` on the same file, alternating runs (median of N).
# Reports wall time, lines/s, CPU seconds and peak RSS, and checks that the
# output is byte-identical to the input.
#
#   scripts/bench-stdin-file.sh [lines] [runs]     # default 1000000 3
#
# Needs ../shared/bench/gen-corpus.py (the corpus generator) and GNU time.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh bench
lines="${1:-1000000}"
runs="${2:-3}"
work="${BENCH_DIR:-/tmp/logpipe-bench}"
mkdir -p "$work"
corpus="$work/corpus-$lines.log"
generator="../shared/bench/gen-corpus.py"
if [ ! -f "$corpus" ]; then
  [ -f "$generator" ] || { echo "bench: $generator not found (the corpus generator lives in the shared bench folder)" >&2; exit 1; }
  python3 "$generator" --lines "$lines" --seed 1 "$corpus" 2>/dev/null
fi
swift build -c release --product logpipe 2>&1 | grep -E "error|warning" || true
bin="$(swift build -c release --show-bin-path)/logpipe"
cat "$corpus" > /dev/null  # warm the page cache

results="$work/results.txt"
: > "$results"
for run in $(seq 1 "$runs"); do
  rm -f "$work/cat.out" "$work/logpipe.out"
  /usr/bin/time -f "cat %e %U %S %M" -a -o "$results" sh -c "cat '$corpus' > '$work/cat.out'"
  OUT="$work/logpipe.out" /usr/bin/time -f "logpipe %e %U %S %M" -a -o "$results" \
    "$bin" run --quiet pipelines/stdin-to-file.yaml < "$corpus"
  cmp -s "$corpus" "$work/logpipe.out" || { echo "bench: run $run: logpipe output differs from the input" >&2; exit 1; }
  echo "run $run: $(tail -2 "$results" | tr '\n' ' ')" >&2
done

python3 - "$results" "$lines" <<'PY'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    name, wall, user, sys_, rss = line.split()
    rows.setdefault(name, []).append((float(wall), float(user) + float(sys_), int(rss)))
lines = int(sys.argv[2])
base = statistics.median(r[0] for r in rows["cat"])
print(f"{'tool':<10} {'wall s':>8} {'lines/s':>12} {'cpu s':>7} {'peak RSS':>10} {'wall / cat':>10}")
for name in ("cat", "logpipe"):
    wall = statistics.median(r[0] for r in rows[name])
    cpu = statistics.median(r[1] for r in rows[name])
    rss = max(r[2] for r in rows[name])
    print(f"{name:<10} {wall:>8.2f} {lines / wall:>12,.0f} {cpu:>7.2f} {rss / 1024:>8.1f}MiB {wall / base:>9.1f}x")
PY
