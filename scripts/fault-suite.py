#!/usr/bin/env python3
"""The faults operators meet on day one, against the release binary and real
nats-servers (Debian's 2.9 and the current release): one table of scenario,
server, records in, records out, lost, duplicated, exit status, and whether
the outcome is the expected one. Run through scripts/fault-suite.sh.

    fault-suite.py LOGPIPE_BIN WORK_DIR NATS_SERVER [NATS_SERVER ...]
"""
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

BIN, WORK = sys.argv[1], sys.argv[2]
SERVERS = sys.argv[3:]
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
rows = []


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class NATS:
    """A private nats-server with JetStream on a free loopback port."""

    def __init__(self, binary, directory, conf=""):
        self.binary, self.directory = binary, directory
        os.makedirs(directory, exist_ok=True)
        self.port = free_port()
        self.conf = os.path.join(directory, "server.conf")
        with open(self.conf, "w") as f:
            f.write(conf + "\n")
        self.start()

    def start(self):
        log = os.path.join(self.directory, "server.log")
        open(log, "w").close()
        conf = ["-c", self.conf] if os.path.getsize(self.conf) > 1 else []
        self.process = subprocess.Popen(
            [self.binary, "-a", "127.0.0.1", "-p", str(self.port), "-js", "-sd", self.directory + "/store", "-l", log]
            + conf)
        deadline = time.time() + 120
        while "Server is ready" not in open(log).read():
            if time.time() > deadline or self.process.poll() is not None:
                raise RuntimeError(f"{self.binary} did not start: {open(log).read()[-500:]}")
            time.sleep(0.05)

    @property
    def url(self):
        return f"nats://127.0.0.1:{self.port}"

    def stop(self):
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def version(binary):
    out = subprocess.run([binary, "--version"], capture_output=True, text=True).stdout.strip()
    return out.split()[-1] if out else binary


def logpipe(args, stdin=None, env=None, timeout=600, prefix=()):
    """Runs logpipe to its end; returns (status, stderr). A prefix ending in
    a logpipe path (a copy) runs that binary instead of BIN."""
    environment = dict(os.environ, **(env or {}))
    input_file = open(stdin, "rb") if stdin else subprocess.DEVNULL
    try:
        binary = [] if prefix and prefix[-1].endswith("/logpipe") else [BIN]
        result = subprocess.run(list(prefix) + binary + args, stdin=input_file, env=environment, cwd=ROOT,
                                capture_output=True, timeout=timeout)
    finally:
        if stdin:
            input_file.close()
    return result.returncode, result.stderr.decode(errors="replace")


def start(args, env=None, stdin=subprocess.DEVNULL, prefix=()):
    environment = dict(os.environ, **(env or {}))
    err = open(os.path.join(WORK, f"stderr-{time.time_ns()}"), "w+")
    process = subprocess.Popen(list(prefix) + [BIN] + args, env=environment, cwd=ROOT, stdin=stdin,
                               stdout=subprocess.DEVNULL, stderr=err)
    process.err = err
    return process


def stderr_of(process):
    process.err.seek(0)
    return process.err.read()


def wait_for(condition, timeout=300):
    deadline = time.time() + timeout
    while not condition():
        if time.time() > deadline:
            return False
        time.sleep(0.05)
    return True


def lines(path):
    try:
        with open(path, "rb") as f:
            return f.read().split(b"\n")[:-1]
    except FileNotFoundError:
        return []


def compare(expected, got):
    """(lost, duplicated): expected lines missing, and lines seen more than once."""
    counts = {}
    for line in got:
        counts[line] = counts.get(line, 0) + 1
    lost = sum(1 for line in set(expected) if line not in counts)
    duplicated = sum(n - 1 for n in counts.values() if n > 1)
    return lost, duplicated


def row(scenario, server, records_in, records_out, lost, duplicated, status, ok, note=""):
    rows.append((scenario, server, records_in, records_out, lost, duplicated, status, ok, note))
    print(f"  {'ok  ' if ok else 'FAIL'} {scenario} [{server}] in={records_in} out={records_out} lost={lost} "
          f"dup={duplicated} exit={status} {note}", file=sys.stderr, flush=True)


def scenario_dir(name):
    path = os.path.join(WORK, name)
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path)
    return path


def write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


def host_logs(directory, hosts=6, per_host=5000):
    expected = []
    for h in range(hosts):
        host = f"web-{h:02d}"
        text = "".join(f"{host} line {i} {'x' * (i % 40)}\n" for i in range(per_host))
        write(f"{directory}/hosts/{host}.log", text)
        expected += [l.encode() for l in text.splitlines()]
    return expected


# --- scenarios against a nats-server ----------------------------------------------------------------

def shared_data_dir(nats_binary, label):
    d = scenario_dir(f"shared-{label}")
    with NATS(nats_binary, d + "/nats") as server:
        expected = host_logs(d)
        status, err = logpipe(["run", "--quiet", "pipelines/ship-logs.yaml"], env={
            "NATS_URL": server.url, "LOG_FILES": d + "/hosts/*.log", "ONCE": "true", "LOGPIPE_DATA": d + "/ship"})
        env = {"NATS_URL": server.url, "OUT": d + "/central", "LOGPIPE_DATA": d + "/state", "STOP_AFTER_IDLE": "1s"}
        # The README recipe: one run per partition, all with the same LOGPIPE_DATA, at once.
        runs = [start(["run", "--quiet", "pipelines/central.yaml"], env=dict(env, PARTITION=str(p))) for p in range(4)]
        statuses = [r.wait() for r in runs]
        got = [l for f in sorted(os.listdir(d + "/central")) for l in lines(f"{d}/central/{f}")]
        lost, dup = compare(expected, got)
        worst = max([status] + statuses)
        row("4 partitions, one LOGPIPE_DATA (README recipe)", label, len(expected), len(got), lost, dup, worst,
            worst == 0 and lost == 0 and dup == 0)
        # The same partition twice: the second is refused, naming the first.
        first = start(["run", "--quiet", "pipelines/central.yaml"], env=dict(env, PARTITION="0", STOP_AFTER_IDLE="0"))
        wait_for(lambda: os.path.exists(d + "/state/central-p0/files/lock") and
                 str(first.pid) in open(d + "/state/central-p0/files/lock").read())
        second, err = logpipe(["run", "pipelines/central.yaml"], env=dict(env, PARTITION="0"))
        first.send_signal(signal.SIGTERM)
        first_status = first.wait()
        refused = second == 1 and f"pid {first.pid}" in err
        row("same partition started twice", label, "-", "-", 0, 0, f"{first_status}/{second}",
            refused and first_status == 0, "second refused, names pid" if refused else err[-200:])


def oversize_line(nats_binary, label):
    d = scenario_dir(f"oversize-{label}")
    with NATS(nats_binary, d + "/nats") as server:
        big = "y" * (1024 * 1024 - 10)
        expected = [b"before", big.encode(), b"after"]
        write(d + "/in.log", "before\n" + big + "\nafter\n")
        for policy in ["split", "drop"]:
            stream = policy.upper()
            write(d + f"/{policy}.yaml", f"""
sources:
  in: {{ type: stdin }}
sinks:
  store:
    type: jetstream
    inputs: [in]
    servers: ["{server.url}"]
    subject: {policy}.web
    stream: {{ name: {stream}, subjects: ["{policy}.>"] }}
    on_oversize: {policy}
    {"dead_letter_file: " + d + "/dead.log" if policy == "drop" else ""}
""")
            status, err = logpipe(["run", "--quiet", d + f"/{policy}.yaml"], stdin=d + "/in.log")
            write(d + f"/back-{policy}.yaml", f"""
sources:
  back: {{ type: jetstream, servers: ["{server.url}"], stream: {stream}, consumer: {{ durable: check }}, stop_after_idle: 1s }}
sinks:
  out: {{ type: file, inputs: [back], path: "{d}/back-{policy}.log" }}
""")
            logpipe(["run", "--quiet", d + f"/back-{policy}.yaml"])
            pieces = lines(f"{d}/back-{policy}.log")
            if policy == "split":
                got = [pieces[0], b"".join(pieces[1:-1]), pieces[-1]] if len(pieces) >= 3 else pieces
                lost, dup = compare(expected, got)
                row("line of 1 MiB - 10 bytes, default on_oversize (split)", label, 3, len(got), lost, dup, status,
                    status == 0 and lost == 0 and dup == 0, f"{len(pieces)} messages")
            else:
                got = pieces + lines(d + "/dead.log")
                lost, dup = compare(expected, got)
                row("same line, on_oversize: drop + dead_letter_file", label, 3, len(got), lost, dup, status,
                    status == 0 and lost == 0 and dup == 0, "big line in dead.log")


def stuck_jetstream_sink(nats_binary, label):
    d = scenario_dir(f"stuck-{label}")
    with NATS(nats_binary, d + "/nats") as server:
        write(d + "/p.yaml", f"""
shutdown_timeout: 2s
sources:
  in: {{ type: stdin }}
sinks:
  store: {{ type: jetstream, inputs: [in], servers: ["{server.url}"], subject: logs.web, stream: {{ name: LOGS, subjects: ["logs.>"] }}, ack_timeout: 500ms }}
""")
        for signals, expected_status, name in [(1, 3, "SIGTERM while the jetstream sink retries (server gone)"),
                                              (2, 4, "second SIGTERM while it retries")]:
            if server.process.poll() is not None:
                server.start()
            r, w = os.pipe()
            process = start(["run", d + "/p.yaml"], stdin=r)
            os.close(r)
            wait_for(lambda: "ready" in stderr_of(process), 60)
            server.stop()
            os.write(w, b"one\ntwo\n")
            wait_for(lambda: "disconnected" in stderr_of(process), 60)
            began = time.time()
            process.send_signal(signal.SIGTERM)
            if signals == 2:
                wait_for(lambda: "stopping" in stderr_of(process), 30)
                process.send_signal(signal.SIGTERM)
            try:
                status = process.wait(timeout=120)
            except subprocess.TimeoutExpired:
                process.kill()
                status = "hung"
            os.close(w)
            took = time.time() - began
            row(name, label, 2, 0, 0, 0, status, status == expected_status,
                f"ended {took:.1f} s after the signal (shutdown_timeout 2s); 2 left unacknowledged, read again")


def unknown_subject(nats_binary, label):
    d = scenario_dir(f"subject-{label}")
    with NATS(nats_binary, d + "/nats") as server:
        write(d + "/in.log", "one\n")
        write(d + "/p.yaml", f"""
sources:
  in: {{ type: stdin }}
sinks:
  store: {{ type: jetstream, inputs: [in], servers: ["{server.url}"], subject: other.web, stream: {{ name: LOGS, subjects: ["logs.>"] }} }}
""")
        began = time.time()
        status, err = logpipe(["run", d + "/p.yaml"], stdin=d + "/in.log", timeout=120)
        named = "no stream stores subject 'other.web'" in err
        row("subject no stream stores", label, 1, 0, 0, 0, status, status == 2 and named,
            f"error names subject and stream after {time.time() - began:.1f} s")


# --- scenarios without a server ---------------------------------------------------------------------

def tail_to_file(d, include, extra=", checkpoint_interval: 100ms", exactly_once=False, once=False):
    write(d + "/p.yaml", f"""
data_dir: {d}/data
sources:
  tail: {{ type: file, include: ['{include}'], once: {str(once).lower()} {extra} }}
sinks:
  out: {{ type: file, inputs: [tail], path: "{d}/out/all.log", exactly_once: {str(exactly_once).lower()} }}
""")
    return d + "/p.yaml"


def hand_edited_output():
    d = scenario_dir("hand-edited")
    pipeline = tail_to_file(d, d + "/in/*.log", exactly_once=True, once=True)
    write(d + "/in/a.log", "one\ntwo\n")
    logpipe(["run", "--quiet", pipeline])
    with open(d + "/out/all.log", "a") as f:
        f.write("added by hand\n")
    write(d + "/in/a.log", "one\ntwo\nthree\n")
    status, err = logpipe(["run", "--quiet", pipeline])
    kept = b"added by hand" in lines(d + "/out/all.log")
    row("line appended by hand to an exactly_once output", "-", 3, len(lines(d + "/out/all.log")), 0, 0, status,
        status == 2 and kept and "truncate -s" in err, "refused, nothing cut, says how to go on")


def fast_rotation(naming):
    d = scenario_dir(f"rotation-{naming}")
    os.makedirs(d + "/logs")
    log = d + "/logs/app.log"
    process = start(["run", tail_to_file(d, log, ", rotate_wait: 1s, checkpoint_interval: 100ms")])
    wait_for(lambda: "matches no file" in stderr_of(process), 60)
    expected = []
    generations, per = 100, 500
    for g in range(generations):
        text = "".join(f"gen {g} line {i}\n" for i in range(per))
        with open(log, "a") as f:
            f.write(text)
        expected += [l.encode() for l in text.splitlines()]
        if naming == "numbered":
            for older in range(g, 0, -1):
                if os.path.exists(f"{log}.{older}"):
                    os.rename(f"{log}.{older}", f"{log}.{older + 1}")
            os.rename(log, log + ".1")
        else:
            os.rename(log, f"{log}-2026112918{g:04d}")
        time.sleep(0.01)
    wait_for(lambda: len(lines(d + "/out/all.log")) >= len(expected), 120)
    time.sleep(0.5)
    process.send_signal(signal.SIGTERM)
    status = process.wait()
    got = lines(d + "/out/all.log")
    lost, dup = compare(expected, got)
    row(f"rename rotation every 10 ms ({naming}, 100 generations)", "-", len(expected), len(got), lost, dup, status,
        status == 0 and lost == 0 and dup == 0)


def long_file_name():
    d = scenario_dir("long-name")
    write(d + "/in.log", "one\ntwo\n")
    write(d + "/p.yaml", f"""
sources:
  in: {{ type: stdin, host: "{'h' * 300}" }}
sinks:
  out: {{ type: file, inputs: [in], path: "{d}/out/{{host}}.log" }}
""")
    status, err = logpipe(["run", "--quiet", d + "/p.yaml"], stdin=d + "/in.log", timeout=60)
    got = [l for f in os.listdir(d + "/out") for l in lines(f"{d}/out/{f}")] if os.path.isdir(d + "/out") else []
    lost, dup = compare([b"one", b"two"], got)
    row("record whose file name is 300 bytes", "-", 2, len(got), lost, dup, status, status == 0 and lost == 0,
        "name shortened with a hash")


def unwritable_data_dir():
    d = scenario_dir("unwritable")
    pipeline = tail_to_file(d, d + "/in/*.log", once=True)
    write(d + "/in/a.log", "one\n")
    write(d + "/data", "a file where the data_dir should be\n")
    status, err = logpipe(["run", "--quiet", pipeline])
    row("data_dir not writable", "-", 1, len(lines(d + "/out/all.log")), 0, 0, status,
        status == 1 and "nothing was started" in err, "refused at start, nothing read")


def full_data_dir():
    """A data_dir on a 64 KiB tmpfs that fills up while the run goes on."""
    d = scenario_dir("full")
    mount = d + "/data"
    os.makedirs(mount)
    if os.getuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", mount]).returncode:
        row("data_dir fills up while running", "-", "-", "-", "-", "-", "-", True, "skipped: needs root for a tmpfs")
        return
    try:
        pipeline = tail_to_file(d, d + "/in/*.log", ", checkpoint_interval: 100ms")
        write(d + "/in/a.log", "one\n")
        process = start(["run", pipeline])
        wait_for(lambda: len(lines(d + "/out/all.log")) == 1, 60)
        subprocess.run(["dd", "if=/dev/zero", f"of={mount}/filler", "bs=4k", "count=64"], capture_output=True)
        with open(d + "/in/a.log", "a") as f:
            f.write("two\n")
        wait_for(lambda: "cannot save checkpoints" in stderr_of(process), 60)
        process.send_signal(signal.SIGTERM)
        status = process.wait()
        err = stderr_of(process)
        got = lines(d + "/out/all.log")
        lost, dup = compare([b"one", b"two"], got)
        row("data_dir fills up while running", "-", 2, len(got), lost, dup, status,
            status == 2 and "checkpoint_errors" in err and "final checkpoint could not be saved" in err,
            "errors logged and counted; the last save fails the run")
    finally:
        subprocess.run(["umount", mount])


def sighup():
    d = scenario_dir("sighup")
    pipeline = tail_to_file(d, d + "/in/*.log")
    write(d + "/in/a.log", "one\n")
    process = start(["run", pipeline])
    wait_for(lambda: len(lines(d + "/out/all.log")) == 1, 60)
    process.send_signal(signal.SIGHUP)
    with open(d + "/in/a.log", "a") as f:
        f.write("two\n")
    wait_for(lambda: len(lines(d + "/out/all.log")) == 2, 60)
    alive = process.poll() is None
    process.send_signal(signal.SIGTERM)
    status = process.wait()
    got = lines(d + "/out/all.log")
    lost, dup = compare([b"one", b"two"], got)
    row("SIGHUP", "-", 2, len(got), lost, dup, status, alive and status == 0 and lost == 0, "kept running")


def unreadable_file():
    d = scenario_dir("unreadable")
    pipeline = tail_to_file(d, d + "/in/*.log", once=True)
    write(d + "/in/a.log", "one\n")
    write(d + "/in/b.log", "two\n")
    os.chmod(d + "/in/b.log", 0)
    prefix = ()
    if os.getuid() == 0:  # root reads any file: run as nobody
        for path in [WORK, d, d + "/in"]:
            os.chmod(path, 0o777)
        # A copy nobody can reach: the build folder may lie in root's home.
        shutil.copy(BIN, d + "/logpipe")
        prefix = ("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", d + "/logpipe")
    status, err = logpipe(["run", "--quiet", pipeline], prefix=prefix)
    row("unreadable file in a once run", "-", 2, len(lines(d + "/out/all.log")), 1, 0, status,
        status == 2 and "Permission denied" in err, "its line cannot be read: warned, counted, exit 2")


def many_files():
    d = scenario_dir("many-files")
    os.makedirs(d + "/in")
    count = 10_000
    for i in range(count):
        with open(f"{d}/in/f{i}.log", "w") as f:
            f.write(f"file {i} line 0\n")
    pipeline = tail_to_file(d, d + "/in/*.log", extra="")  # checkpoints every 1 s, the default
    began = time.time()
    process = start(["run", pipeline], prefix=("prlimit", "--nofile=1024"))
    done = wait_for(lambda: len(lines(d + "/out/all.log")) >= count, 300)
    took = time.time() - began
    status_file = open(f"/proc/{process.pid}/status").read()
    peak = int(re.search(r"VmHWM:\s+(\d+)", status_file).group(1)) // 1024
    descriptors = len(os.listdir(f"/proc/{process.pid}/fd"))
    process.send_signal(signal.SIGTERM)
    status = process.wait()
    got = lines(d + "/out/all.log")
    lost, dup = compare([f"file {i} line 0".encode() for i in range(count)], got)
    row("10,000 files, ulimit -n 1024", "-", count, len(got), lost, dup, status,
        done and status == 0 and lost == 0 and peak < 128 and descriptors < 1024,
        f"peak RSS {peak} MiB, {descriptors} fds, all in {took:.1f} s")


def billion_laughs():
    d = scenario_dir("laughs")
    yaml = "a0: &a0 [x, x, x, x, x, x, x, x, x]\n"
    for level in range(1, 10):
        yaml += f"a{level}: &a{level} [" + ", ".join([f"*a{level - 1}"] * 9) + "]\n"
    write(d + "/laughs.yaml", yaml + "sources:\n  in: { type: stdin }\nsinks:\n  out: { type: stdout, inputs: [in] }\n")
    began = time.time()
    status, err = logpipe(["validate", d + "/laughs.yaml"], timeout=60, prefix=("/usr/bin/time", "-f", "%M"))
    peak = int(err.strip().split("\n")[-1]) // 1024
    row("billion laughs (9x9 aliases) to validate", "-", "-", "-", 0, 0, status, status == 1 and peak < 256,
        f"refused in {time.time() - began:.2f} s, peak RSS {peak} MiB")


def password_in_url():
    d = scenario_dir("secrets")
    write(d + "/p.yaml", """
sources:
  in: { type: stdin }
sinks:
  bus: { type: nats, inputs: [in], servers: ["nats://alice:s3cret@host:notaport"] }
""")
    statuses, leaked = [], False
    for command in ["validate", "run"]:
        status, err = logpipe([command, d + "/p.yaml"], timeout=60)
        statuses.append(status)
        leaked = leaked or "s3cret" in err
    row("password in a malformed server URL", "-", "-", "-", 0, 0, "/".join(map(str, statuses)),
        statuses == [1, 1] and not leaked, "redacted, port checked by validate")


def whole_multiple_line():
    d = scenario_dir("multiple")
    data = b"a" * (3 * 1024) + b"\n" + b"b" * 1024 + b"\n" + b"end\n"
    with open(d + "/in.log", "wb") as f:
        f.write(data)
    write(d + "/p.yaml", f"""
sources:
  in: {{ type: stdin, max_line_bytes: 1KiB }}
sinks:
  out: {{ type: file, inputs: [in], path: "{d}/out.log" }}
""")
    status, err = logpipe(["run", d + "/p.yaml"], stdin=d + "/in.log", timeout=60)
    got = lines(d + "/out.log")
    ok = status == 0 and got == [b"a" * 1024] * 3 + [b"b" * 1024, b"end"] and "in.oversize_lines=1" in err
    row("line of exactly 3 x max_line_bytes", "-", 3, len(got), 0, 0, status, ok, "3 pieces, no empty record")


def main():
    os.makedirs(WORK, exist_ok=True)
    # FAULT_ONLY=name,name runs only the scenarios whose function names contain one of them.
    only = [name for name in os.environ.get("FAULT_ONLY", "").split(",") if name]
    def wanted(function):
        return not only or any(name in function.__name__ for name in only)
    for binary in SERVERS:
        label = "nats-server " + version(binary)
        for scenario in [shared_data_dir, oversize_line, stuck_jetstream_sink, unknown_subject]:
            if wanted(scenario):
                scenario(binary, label)
    for scenario in [hand_edited_output, lambda: fast_rotation("numbered"), lambda: fast_rotation("dateext"),
                     long_file_name, unwritable_data_dir, full_data_dir, sighup, unreadable_file, many_files, billion_laughs,
                     password_in_url, whole_multiple_line]:
        if wanted(scenario if scenario.__name__ != "<lambda>" else fast_rotation):
            scenario()
    print()
    print(f"| {'scenario':<55} | {'server':<19} | {'in':>6} | {'out':>6} | {'lost':>4} | {'dup':>4} | {'exit':>5} | "
          f"{'as expected':<11} | note")
    print(f"|{'-' * 57}|{'-' * 21}|{'-' * 8}|{'-' * 8}|{'-' * 6}|{'-' * 6}|{'-' * 7}|{'-' * 13}|------")
    for scenario, server, rin, rout, lost, dup, status, ok, note in rows:
        print(f"| {scenario:<55} | {server:<19} | {rin!s:>6} | {rout!s:>6} | {lost!s:>4} | {dup!s:>4} | {status!s:>5} | "
              f"{'yes' if ok else 'NO':<11} | {note}")
    failed = [r for r in rows if not r[7]]
    print(f"\n{len(rows) - len(failed)} passed, {len(failed)} failed")
    sys.exit(1 if failed else 0)


main()
