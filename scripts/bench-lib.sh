# Shared by the benchmark scripts (source it). Builds logpipe (release),
# makes the shared corpus, times commands with GNU time and prints a table.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/setup.sh bench
BENCH_WORK="${BENCH_DIR:-/tmp/logpipe-bench}"
mkdir -p "$BENCH_WORK"
BENCH_RESULTS="$BENCH_WORK/results-$$.txt"
: > "$BENCH_RESULTS"

# corpus LINES: prints the path of the shared corpus with LINES lines (seed 1).
corpus() {
  local lines="$1" path="$BENCH_WORK/corpus-$1.log" generator="../shared/bench/gen-corpus.py"
  if [ ! -f "$path" ]; then
    [ -f "$generator" ] || { echo "bench: $generator not found (the corpus generator lives in the shared bench folder)" >&2; exit 1; }
    python3 "$generator" --lines "$lines" --seed 1 "$path" 2>/dev/null
  fi
  cat "$path" > /dev/null  # warm the page cache
  echo "$path"
}

# logpipe_bin: builds the release binary (scripts/build-release.sh: the Swift
# runtime linked in statically) and prints its path; LOGPIPE_BIN=path uses
# that binary instead (to compare two builds).
logpipe_bin() {
  if [ -n "${LOGPIPE_BIN:-}" ]; then echo "$LOGPIPE_BIN"; return; fi
  scripts/build-release.sh
}

# measure NAME COMMAND...: runs COMMAND (through bash -c, which keeps the functions a script exports) once under GNU time
# (CPU seconds, peak RSS); the wall time is taken to the millisecond around
# it (GNU time's %e has 10 ms steps, 4 % of a 0.25 s run).
measure() {
  local name="$1" start end; shift
  start=$(date +%s%N)
  /usr/bin/time -f "%U %S %M" -o "$BENCH_WORK/time-$$.txt" bash -c "$*"
  end=$(date +%s%N)
  local ms=$(( (end - start) / 1000000 ))
  printf '%s %d.%03d %s\n' "$name" $((ms / 1000)) $((ms % 1000)) "$(tail -1 "$BENCH_WORK/time-$$.txt")" >> "$BENCH_RESULTS"
  echo "  $(tail -1 "$BENCH_RESULTS")" >&2
}

# report LINES BYTES BASELINE: a table of medians, with ratios to BASELINE.
report() {
  python3 - "$BENCH_RESULTS" "$1" "$2" "$3" <<'PY'
import statistics, sys
rows = {}
order = []
for line in open(sys.argv[1]):
    name, wall, user, sys_, rss = line.split()
    if name not in rows:
        order.append(name)
    rows.setdefault(name, []).append((float(wall), float(user) + float(sys_), int(rss)))
lines, size, baseline = int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
base = statistics.median(r[0] for r in rows[baseline])
print(f"{'case':<28} {'wall s':>7} {'lines/s':>12} {'MB/s':>8} {'cpu s':>6} {'peak RSS':>10} {'wall/' + baseline:>16}")
for name in order:
    wall = statistics.median(r[0] for r in rows[name])
    cpu = statistics.median(r[1] for r in rows[name])
    rss = max(r[2] for r in rows[name])
    print(f"{name:<28} {wall:>7.3f} {lines / wall:>12,.0f} {size / wall / 1e6:>8.1f} {cpu:>6.2f} {rss / 1024:>8.1f}MiB {wall / base:>15.2f}x")
PY
}

# build_natspub DIR: builds the Go reference publisher into DIR/natspub.
build_natspub() {
  command -v go >/dev/null || bash ../shared/bench/setup-tools.sh >&2
  (cd ../shared/bench/natspub && GOPATH=/usr/share/gocode GO111MODULE=off GOFLAGS= GOCACHE="$1/gocache" go build -o "$1/natspub" .)
}

# build_natsconsume DIR: builds the Go reference pull consumer into DIR/natsconsume.
build_natsconsume() {
  command -v go >/dev/null || bash ../shared/bench/setup-tools.sh >&2
  (cd ../shared/bench/natsconsume && GOPATH=/usr/share/gocode GO111MODULE=off GOFLAGS= GOCACHE="$1/gocache" go build -o "$1/natsconsume" .)
}

# start_nats_server DIR [ARGS...]: a private nats-server on free loopback
# ports (client and monitoring), logging to DIR/server.log, stopped on exit
# (every server started this way). Sets NATS_SERVER_URL, NATS_HTTP_PORT and
# NATS_SERVER_PID.
NATS_SERVER_PIDS=()
start_nats_server() {
  local dir="$1"; shift
  mkdir -p "$dir"
  nats-server -a 127.0.0.1 -p -1 -m -1 -l "$dir/server.log" "$@" &
  NATS_SERVER_PID=$!
  NATS_SERVER_PIDS+=("$NATS_SERVER_PID")
  trap 'for pid in "${NATS_SERVER_PIDS[@]}"; do kill $pid 2>/dev/null; wait $pid 2>/dev/null || true; done' EXIT
  for _ in $(seq 100); do grep -q "Server is ready" "$dir/server.log" 2>/dev/null && break; sleep 0.1; done
  NATS_SERVER_URL="nats://127.0.0.1:$(grep -o "client connections on 127.0.0.1:[0-9]*" "$dir/server.log" | grep -o "[0-9]*$")"
  NATS_HTTP_PORT=$(grep -o "http monitor on 127.0.0.1:[0-9]*" "$dir/server.log" | grep -o "[0-9]*$")
}

# syslog_tools: unpacks syslog-ng and rsyslog once (../shared/bench/setup-tools.sh)
# and sets the arrays SYSLOG_NG and RSYSLOGD to run them.
syslog_tools() {
  local tools="${BENCH_TOOLS:-/tmp/bench-tools}"
  if [ ! -x "$tools/rsyslog/usr/sbin/rsyslogd" ]; then
    bash ../shared/bench/setup-tools.sh >&2
  fi
  SYSLOG_NG=(env LD_LIBRARY_PATH="$tools/syslog-ng-core/usr/lib/syslog-ng" "$tools/syslog-ng-core/usr/sbin/syslog-ng"
    --module-path="$tools/syslog-ng-core/usr/lib/syslog-ng/3.38")
  RSYSLOGD=("$tools/rsyslog/usr/sbin/rsyslogd" -M "$tools/rsyslog/usr/lib/x86_64-linux-gnu/rsyslog")
}

# follow NAME EXPECTED OUT [ENV=VALUE...] -- COMMAND...: times a daemon until
# OUT holds EXPECTED lines (scripts/follow.py), one row in the results.
follow() {
  local name="$1" expected="$2" out="$3"; shift 3
  local environment=()
  while [ "$1" != "--" ]; do environment+=("$1"); shift; done
  shift
  env "${environment[@]}" python3 scripts/follow.py "$name" "$expected" "$out" "$BENCH_RESULTS" -- "$@"
  echo "  $(tail -1 "$BENCH_RESULTS")" >&2
}

# in_msgs HTTP_PORT: the server's count of messages received (/varz).
in_msgs() { curl -s "http://127.0.0.1:$1/varz" | python3 -c 'import json,sys; print(json.load(sys.stdin)["in_msgs"])'; }

# stream_messages HTTP_PORT: messages in the stream LOGS (/jsz).
stream_messages() {
  curl -s "http://127.0.0.1:$1/jsz?streams=true" | python3 -c '
import json, sys
data = json.load(sys.stdin)
print(sum(s["state"]["messages"] for a in data.get("account_details", []) for s in a.get("stream_detail", []) if s["name"] == "LOGS"))'
}

# publish_pipeline nats|jetstream|jetstream-noid URL: the pipeline the NATS
# benchmarks compare with natspub: stdin -> partition (host: line, 8
# partitions) -> nats, or -> jetstream (stream LOGS, file storage, window
# 4000; `-noid`: deduplicate: false, no Nats-Msg-Id, as natspub).
publish_pipeline() {
  printf 'sources:\n  in: { type: stdin }\ntransforms:\n  route: { type: partition, inputs: [in], partitions: 8, host: line }\nsinks:\n'
  case "$1" in
    nats) printf '  bus: { type: nats, inputs: [route], servers: ["%s"] }\n' "$2" ;;
    jetstream | jetstream-noid)
      printf '  store:\n    type: jetstream\n    inputs: [route]\n    servers: ["%s"]\n' "$2"
      printf '    stream: { name: LOGS, subjects: ["logs.>"], storage: file }\n    max_in_flight: 4000\n'
      if [ "$1" = jetstream-noid ]; then printf '    deduplicate: false\n'; fi ;;
  esac
}

# expect_stream HTTP_PORT LINES: fails unless the stream LOGS holds exactly LINES messages.
expect_stream() {
  local count
  count=$(stream_messages "$1")
  [ "$count" -eq "$2" ] || { echo "bench: the stream holds $count messages, expected $2" >&2; exit 1; }
}

# purge_stream NATSPUB URL DIR: deletes LOGS, so that the next case starts
# with an empty stream and no message ids remembered (a purge keeps the
# duplicate window's ids: run 2's ids, the same as run 1's, were all
# dropped as duplicates when the two came within 2 minutes). Whoever
# publishes next creates the stream again. NATSPUB and DIR are unused.
purge_stream() {
  python3 - "$2" <<'PY'
import socket, sys
host, port = sys.argv[1].removeprefix("nats://").split(":")
s = socket.create_connection((host, int(port)), timeout=30)
f = s.makefile("rb")
f.readline()  # INFO
s.sendall(b'CONNECT {"verbose":false}\r\nSUB _INBOX.bench.del 1\r\nPUB $JS.API.STREAM.DELETE.LOGS _INBOX.bench.del 0\r\n\r\nPING\r\n')
while True:
    line = f.readline()
    if not line:
        sys.exit("bench: no answer to the stream delete")
    if line.startswith(b"MSG"):
        reply = f.read(int(line.split()[-1]) + 2)
        # 10059: stream not found (nothing to delete).
        if b'"success":true' not in reply and b"10059" not in reply:
            sys.exit("bench: deleting LOGS failed: " + reply.decode(errors="replace"))
        break
    if line.startswith(b"-ERR"):
        sys.exit("bench: " + line.decode(errors="replace"))
s.close()
PY
}
