#!/usr/bin/env python3
"""Cost of a log shipper at the rates hosts really log (scripts/bench-rates.sh).

usage: rates.py --name NAME --corpus FILE --input FILE (--output FILE | --nats URL)
                --results FILE [--rates 100,1000,10000] [--seconds 20] [--idle 60]
                -- COMMAND [ARGS...]

Starts COMMAND (a daemon that tails --input), lets it settle, then for each
rate appends the corpus's lines to --input, one write() per line, evenly
spaced, for --seconds; waits until every line came out (lines in --output,
or messages seen on the NATS subjects `logs.>` at --nats), and records the
daemon's CPU time (user + system, all threads, from /proc) for that phase.
Then --idle seconds with no new lines. Appends one JSON object per phase to
--results: CPU seconds, lines, peak RSS, and with --nats the latency of each
line from its write to its arrival at a subscriber (each line then ends in
` t=<ns>`, its write time).
"""
import argparse, json, multiprocessing, os, signal, socket, subprocess, sys, time

parser = argparse.ArgumentParser()
parser.add_argument("--name", required=True)
parser.add_argument("--corpus", required=True)
parser.add_argument("--input", required=True)
parser.add_argument("--output")
parser.add_argument("--nats")
parser.add_argument("--results", required=True)
parser.add_argument("--rates", default="100,1000,10000")
parser.add_argument("--seconds", type=float, default=20)
parser.add_argument("--idle", type=float, default=60)
parser.add_argument("command", nargs=argparse.REMAINDER)
args = parser.parse_args()
command = args.command[1:] if args.command[:1] == ["--"] else args.command

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    """CPU time of every thread: the nanoseconds of each live thread's
    schedstat (the clock-tick counts of /proc/PID/stat are 10 ms coarse),
    plus what exited threads left in the process's tick counts."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = (int(fields[11]) + int(fields[12])) / TICKS
    live_ns, live_ticks = 0, 0.0
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/schedstat") as f:
                live_ns += int(f.read().split()[0])
            with open(f"/proc/{pid}/task/{task}/stat") as f:
                t = f.read().rsplit(")", 1)[1].split()
            live_ticks += (int(t[11]) + int(t[12])) / TICKS
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
    return live_ns / 1e9 + max(0.0, ticks - live_ticks)


def peak_rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


class FileCounter:
    """Counts the lines that reached the output file."""

    def __init__(self, path):
        self.path, self.offset, self.count = path, 0, 0

    def lines(self):
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                chunk = f.read()
        except FileNotFoundError:
            return self.count
        self.offset += len(chunk)
        self.count += chunk.count(b"\n")
        return self.count


class Subscriber:
    """A core NATS subscriber on logs.>, in a process of its own (sharing
    the writer's interpreter lock would delay the writes and the receipts by
    up to a GIL switch interval, 5 ms, and skew the latencies): counts
    messages and, from the ` t=<ns>` each line ends in, their latency."""

    def __init__(self, url):
        self.count = multiprocessing.Value("q", 0)
        self.requests, remote = multiprocessing.Pipe()
        self.process = multiprocessing.Process(target=Subscriber.serve, args=(url, self.count, remote), daemon=True)
        self.process.start()
        if not self.requests.poll(30):
            sys.exit("rates: the NATS subscriber did not start")
        self.requests.recv()  # subscribed

    def delivered(self):
        return self.count.value

    def take(self):
        """The latencies (ns) seen since the last call."""
        self.requests.send("take")
        return self.requests.recv()

    @staticmethod
    def serve(url, count, requests):
        host, port = url.replace("nats://", "").split(":")
        sock = socket.create_connection((host, int(port)))
        sock.sendall(b'CONNECT {"verbose":false,"pedantic":false}\r\nSUB logs.> 1\r\nPING\r\n')
        sock.settimeout(0.05)
        requests.send("ready")
        latencies = []
        buffer = b""
        while True:
            while requests.poll():
                requests.recv()
                requests.send(latencies)
                latencies = []
            try:
                data = sock.recv(1 << 20)
            except socket.timeout:
                continue
            if not data:
                return
            now = time.time_ns()
            buffer += data
            start = 0
            received = 0
            while True:
                end = buffer.find(b"\r\n", start)
                if end < 0:
                    break
                line = buffer[start:end]
                if line.startswith(b"MSG ") or line.startswith(b"HMSG "):
                    parts = line.split()
                    size = int(parts[-1])
                    header = int(parts[-2]) if line.startswith(b"HMSG ") else 0
                    if len(buffer) < end + 2 + size + 2:
                        break
                    payload = buffer[end + 2 + header : end + 2 + size]
                    start = end + 2 + size + 2
                    received += 1
                    mark = payload.rfind(b" t=")
                    if mark >= 0:
                        try:
                            latencies.append(now - int(payload[mark + 3 :]))
                        except ValueError:
                            pass
                    continue
                start = end + 2
                if line == b"PING":
                    sock.sendall(b"PONG\r\n")
            buffer = buffer[start:]
            with count.get_lock():
                count.value += received


corpus = [line for line in open(args.corpus, "rb").read().split(b"\n") if line]
open(args.input, "wb").close()
process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=open(args.input + ".stderr", "wb"))
subscriber = None
if args.nats:
    subscriber = Subscriber(args.nats)
counter = FileCounter(args.output) if args.output else None


def delivered():
    if subscriber:
        return subscriber.delivered()
    return counter.lines()


time.sleep(3)  # started, connected, watching its file
if process.poll() is not None:
    sys.exit(f"rates: {args.name} exited at start: {open(args.input + '.stderr').read()[-2000:]}")
results = open(args.results, "a")
written = 0
next_line = 0
fd = os.open(args.input, os.O_WRONLY | os.O_APPEND)
for rate in [int(r) for r in args.rates.split(",")]:
    if subscriber:
        subscriber.take()
    cpu_before = cpu_seconds(process.pid)
    start = time.monotonic()
    phase_lines = int(rate * args.seconds)
    sent = 0
    # One write() per line, evenly spaced: as an application logs.
    while sent < phase_lines:
        due = min(phase_lines, int((time.monotonic() - start) * rate) + 1)
        while sent < due:
            line = corpus[next_line % len(corpus)]
            next_line += 1
            if subscriber:
                line = line + b" t=" + str(time.time_ns()).encode()
            os.write(fd, line + b"\n")
            sent += 1
        pause = (sent / rate) - (time.monotonic() - start)
        if pause > 0:
            time.sleep(pause)
    written += phase_lines
    # Every line out (or nothing more for 30 s: counted as lost).
    last, last_change = delivered(), time.monotonic()
    while last < written and time.monotonic() - last_change < 30:
        time.sleep(0.05)
        now = delivered()
        if now != last:
            last, last_change = now, time.monotonic()
    elapsed = time.monotonic() - start
    cpu = cpu_seconds(process.pid) - cpu_before
    row = {"name": args.name, "rate": rate, "lines": phase_lines, "seconds": round(elapsed, 2),
           "cpu": round(cpu, 3), "lost": written - last, "rss_kib": peak_rss_kib(process.pid)}
    if subscriber:
        latencies = subscriber.take()
        latencies.sort()
        if latencies:
            def pick(q):
                return round(latencies[min(len(latencies) - 1, int(q * len(latencies)))] / 1e6, 2)
            row.update(p50_ms=pick(0.5), p99_ms=pick(0.99), p999_ms=pick(0.999), max_ms=round(latencies[-1] / 1e6, 2))
    print(json.dumps(row), file=results, flush=True)
    print(f"  {json.dumps(row)}", file=sys.stderr)
cpu_before = cpu_seconds(process.pid)
time.sleep(args.idle)
row = {"name": args.name, "rate": 0, "lines": 0, "seconds": args.idle,
       "cpu": round(cpu_seconds(process.pid) - cpu_before, 3), "lost": 0, "rss_kib": peak_rss_kib(process.pid)}
print(json.dumps(row), file=results, flush=True)
print(f"  {json.dumps(row)}", file=sys.stderr)
process.send_signal(signal.SIGTERM)
try:
    process.wait(timeout=30)
except subprocess.TimeoutExpired:
    process.kill()
