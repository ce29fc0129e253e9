#!/usr/bin/env python3
"""usage: follow.py NAME EXPECTED_LINES OUTFILE RESULTS -- CMD [ARGS...]

Times a daemon that never exits by itself (syslog-ng, rsyslogd): starts CMD,
waits until OUTFILE holds EXPECTED_LINES lines (or stops growing for 30 s),
then appends "NAME wall user sys peak_rss_kib" to RESULTS (the format GNU
time writes for the other cases) and stops the daemon.
"""
import os, signal, subprocess, sys, time

name, expected, outfile, results = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
command = sys.argv[sys.argv.index("--") + 1:]
start = time.monotonic()
process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
lines, offset, last_growth = 0, 0, start
while lines < expected and time.monotonic() - last_growth < 30:
    time.sleep(0.02)
    try:
        with open(outfile, "rb") as f:
            f.seek(offset)
            chunk = f.read()
    except FileNotFoundError:
        continue
    if chunk:
        lines += chunk.count(b"\n")
        offset += len(chunk)
        last_growth = time.monotonic()
wall = time.monotonic() - start
with open(f"/proc/{process.pid}/stat") as f:
    fields = f.read().rsplit(")", 1)[1].split()
ticks = os.sysconf("SC_CLK_TCK")
user, system = int(fields[11]) / ticks, int(fields[12]) / ticks
rss = 0
with open(f"/proc/{process.pid}/status") as f:
    for line in f:
        if line.startswith("VmHWM:"):
            rss = int(line.split()[1])
process.send_signal(signal.SIGTERM)
try:
    process.wait(10)
except subprocess.TimeoutExpired:
    process.kill()
with open(results, "a") as f:
    f.write(f"{name} {wall:.2f} {user:.2f} {system:.2f} {rss}\n")
if lines < expected:
    sys.exit(f"{name}: only {lines} of {expected} lines arrived")
