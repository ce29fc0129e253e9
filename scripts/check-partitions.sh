#!/usr/bin/env bash
# Cross-check: LogPipe's partition stage (host: line) against the reference
# publisher natspub.py in ../shared/bench (the same host rule and CRC-32 as
# the Go natspub). Every line of the shared corpus is routed to a file named
# after its subject; each line must sit in the file of the subject the
# reference computes for it.
#
#   scripts/check-partitions.sh [lines]      # default 1000000
source "$(dirname "$0")/bench-lib.sh"
lines="${1:-1000000}"
input="$(corpus "$lines")"
bin="$(logpipe_bin)"
out="$BENCH_WORK/partitions"
rm -rf "$out"
cat > "$BENCH_WORK/partition.yaml" <<YAML
sources:
  in: { type: stdin }
transforms:
  route: { type: partition, inputs: [in], partitions: 8, host: line }
sinks:
  out: { type: file, inputs: [route], path: "$out/{subject}", max_open_files: 64 }
YAML
"$bin" run --quiet "$BENCH_WORK/partition.yaml" < "$input"
python3 - "$out" "$lines" <<'PY'
import importlib.util, os, sys, types, zlib
# natspub.py imports nats-py at the top; only its pure functions are needed.
for name in ("nats", "nats.js", "nats.js.errors"):
    sys.modules[name] = types.ModuleType(name)
sys.modules["nats.js.errors"].NotFoundError = Exception
spec = importlib.util.spec_from_file_location("natspub", "../shared/bench/natspub.py")
natspub = importlib.util.module_from_spec(spec)
spec.loader.exec_module(natspub)
out, expected_lines = sys.argv[1], int(sys.argv[2])
total = 0
for subject in sorted(os.listdir(out)):
    with open(os.path.join(out, subject), "rb") as f:
        for line in f:
            line = line.rstrip(b"\n")
            token = natspub.subject_token(natspub.host_of(line))
            want = f"logs.p{zlib.crc32(token.encode()) % 8}.{token}"
            if want != subject:
                sys.exit(f"mismatch: {line[:120]!r} went to {subject}, reference says {want}")
            total += 1
if total != expected_lines:
    sys.exit(f"{total} lines routed, expected {expected_lines}")
print(f"all {total} lines in the subject natspub.py computes ({len(os.listdir(out))} subjects)")
PY
