#!/usr/bin/env bash
# What a shipper costs at the rates hosts really log. A writer appends the
# shared corpus's lines to a tailed file, one write() per line, at 100, 1,000
# and 10,000 lines/s (RATE_SECONDS each, default 20), then nothing for
# IDLE_SECONDS (default 60). Measured one after the other in one run:
#
#   logpipe_tail_file   file (tail) -> file
#   rsyslog             imfile (inotify) -> omfile, one worker (bench/rsyslog-copy.conf)
#   syslog-ng           file() -> file(), flow control (bench/syslog-ng-copy.conf)
#   logpipe_shipper     pipelines/ship-logs.yaml: tail -> severity -> partition -> jetstream
#                       (each line ends in its write time; a subscriber on logs.> records arrival)
#
# One table: CPU seconds per 1,000 lines (user + system, every thread), the
# ratio to rsyslog's, peak RSS, lines lost, and for the shipper the latency
# from write() to the message on the stream's subject.
#
#   scripts/bench-rates.sh                      # RATES=100,1000,10000 RATE_SECONDS=20 IDLE_SECONDS=60
#   CASES=logpipe_shipper scripts/bench-rates.sh  # only some cases (comma-separated names)
source "$(dirname "$0")/bench-lib.sh"
rates="${RATES:-100,1000,10000}"
seconds="${RATE_SECONDS:-20}"
idle="${IDLE_SECONDS:-60}"
input="$(corpus 200000)"
bin="$(logpipe_bin)"
syslog_tools
work="$BENCH_WORK/rates"
rm -rf "$work" && mkdir -p "$work"
results="$work/results.jsonl"
rates_run() { # NAME [rates.py options...] -- COMMAND...
  local name="$1"; shift
  if [ -n "${CASES:-}" ] && [[ ",$CASES," != *",$name,"* ]]; then return; fi
  echo "$name" >&2
  python3 scripts/rates.py --name "$name" --corpus "$input" --results "$results" --rates "$rates" \
    --seconds "$seconds" --idle "$idle" "$@"
}

# Every tool writes to a directory other than the one it tails (as on a
# host: /var/log/app -> elsewhere): its own writes are no wake-ups.
mkdir -p "$work/lp/out"
cat > "$work/lp/tail.yaml" <<YAML
data_dir: $work/lp/data
sources:
  in: { type: file, include: ['$work/lp/in.log'] }
sinks:
  out: { type: file, inputs: [in], path: '$work/lp/out/out.log' }
YAML
rates_run logpipe_tail_file --input "$work/lp/in.log" --output "$work/lp/out/out.log" -- \
  "$bin" run --quiet "$work/lp/tail.yaml"

mkdir -p "$work/rsl/out"
CORPUS="$work/rsl/in.log" OUT="$work/rsl/out/out.log" WORKDIR="$work/rsl" \
  rates_run rsyslog --input "$work/rsl/in.log" --output "$work/rsl/out/out.log" -- \
  "${RSYSLOGD[@]}" -n -f bench/rsyslog-copy.conf -i "$work/rsl/pid"

mkdir -p "$work/sng/out"
CORPUS="$work/sng/in.log" OUT="$work/sng/out/out.log" \
  rates_run syslog-ng --input "$work/sng/in.log" --output "$work/sng/out/out.log" -- \
  "${SYSLOG_NG[@]}" -F --no-caps -f bench/syslog-ng-copy.conf -R "$work/sng/persist" -p "$work/sng/pid" \
  -c "$work/sng/ctl"

start_nats_server "$work/nats" -js -sd "$work/nats/store"
mkdir -p "$work/ship"
LOG_FILES="$work/ship/in.log" LOGPIPE_DATA="$work/ship/data" NATS_URL="$NATS_SERVER_URL" \
  rates_run logpipe_shipper --input "$work/ship/in.log" --nats "$NATS_SERVER_URL" -- \
  "$bin" run --quiet pipelines/ship-logs.yaml

python3 - "$results" <<'PY'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
base = {r["rate"]: r for r in rows if r["name"] == "rsyslog"}
print(f"{'rate/s':>7} {'case':<18} {'cpu s/1k lines':>14} {'x rsyslog':>9} {'peak RSS':>9} {'lost':>5}  latency ms p50/p99/p99.9/max")
for rate in sorted({r["rate"] for r in rows}, key=lambda r: (r == 0, r)):
    for r in (r for r in rows if r["rate"] == rate):
        if rate == 0:
            cost = f"{r['cpu'] / r['seconds'] * 100:>12.3f} %"
            ratio = r["cpu"] / base[0]["cpu"] if base.get(0) and base[0]["cpu"] > 0 else float("nan")
        else:
            cost = f"{r['cpu'] / r['lines'] * 1000:>14.4f}"
            ratio = r["cpu"] / base[rate]["cpu"] if base.get(rate) and base[rate]["cpu"] > 0 else float("nan")
        latency = "/".join(str(r[k]) for k in ("p50_ms", "p99_ms", "p999_ms", "max_ms")) if "p50_ms" in r else ""
        label = "idle" if rate == 0 else str(rate)
        print(f"{label:>7} {r['name']:<18} {cost} {ratio:>9.2f} {r['rss_kib'] / 1024:>7.1f}Mi {r['lost']:>5}  {latency}")
print("idle: CPU as % of one core over the idle period; x rsyslog compares CPU seconds in the same phase")
PY
