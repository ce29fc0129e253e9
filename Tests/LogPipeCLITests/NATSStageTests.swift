import Foundation
import NATSClient
import NATSTestSupport
import NIOCore
import Synchronization
import Testing

/// The `nats` sink and source through the real binary and a real nats-server.
@Suite(.serialized) struct NATSStageTests {
    /// Counts messages per subject and remembers every payload.
    final class Counter: @unchecked Sendable {
        // Only touched by the collecting task, then read after it ended.
        var perSubject: [String: Int] = [:]
        var payloads: [String: [String]] = [:]
        var total = 0
    }

    /// Collects messages until `expected` arrived or `timeout` passed. One
    /// task reads the subscription (a read that is cancelled half-way could
    /// take a message and drop it); the subscription is ended to stop it.
    static func collect(_ subscription: NATSSubscription, into counter: Counter, until expected: Int, timeout: Duration)
        async
    {
        let done = Mutex(false)
        let reader = Task {
            while let batch = await subscription.nextBatch(max: 10_000) {
                for message in batch {
                    counter.perSubject[message.subject, default: 0] += 1
                    counter.payloads[message.subject, default: []].append(
                        String(decoding: message.payload.readableBytesView, as: UTF8.self))
                    counter.total += 1
                }
                if counter.total >= expected {
                    done.withLock { $0 = true }
                    return
                }
            }
        }
        let deadline = ContinuousClock.now + timeout
        while !done.withLock({ $0 }), ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(20))
        }
        subscription.unsubscribe()
        await reader.value
    }

    /// stdin → partition → nats: every line arrives once, on
    /// `logs.p<crc32(host) % 8>.<host>`.
    @Test func stdinPartitionNatsDeliversEveryLineOnItsSubject() async throws {
        let server = try await NATSServer(jetstream: false)
        defer { server.stop() }
        let directory = try makeTemporaryDirectory()
        let hosts = ["web-01", "db-01.prod.example.com", "api-02", "we b*1"]
        var lines: [String] = []
        for index in 0..<100_000 {
            let host = hosts[index % hosts.count]
            switch index % 3 {
            case 0: lines.append("<13>Nov 26 10:00:00 \(host) app[1]: line \(index)")
            case 1: lines.append(#"{"level":"info","host":"\#(host)","msg":"line \#(index)"}"#)
            default: lines.append("ts=1 host=\(host.replacingOccurrences(of: " ", with: "_")) msg=\"line \(index)\"")
            }
        }
        try (lines.joined(separator: "\n") + "\n").write(
            toFile: directory + "/input.log", atomically: true, encoding: .utf8)
        try write(
            """
            sources:
              in: { type: stdin }
            transforms:
              route: { type: partition, inputs: [in], host: line }
            sinks:
              bus: { type: nats, inputs: [route], servers: ["\(server.url)"] }
            """,
            to: directory + "/p.yaml"
        )
        let subscriber = try await NATSConnection.connect(NATSOptions.forTests(server.url))
        let subscription = try await subscriber.subscribe("logs.>", capacity: 1_000_000)
        try await subscriber.flush()
        let counter = Counter()
        let expected = lines.count
        let collecting = Task {
            await Self.collect(subscription, into: counter, until: expected, timeout: .seconds(120))
        }
        let result = try await CLI.run(["run", directory + "/p.yaml"], stdinPath: directory + "/input.log")
        #expect(result.status == 0, "\(result.stderr)")
        await collecting.value
        await subscriber.close()
        #expect(
            counter.total == lines.count,
            "stderr: \(result.stderr)\nserver: \(server.log.split(separator: "\n").filter { $0.contains("[WRN]") || $0.contains("[ERR]") }.joined(separator: "\n"))"
        )
        // From Python: zlib.crc32(host) % 8 for the sanitized hosts. In the
        // syslog lines "we b*1" ends at the space: the host field is "we".
        #expect(
            counter.perSubject == [
                "logs.p5.web-01": 25_000, "logs.p5.db-01.prod.example.com": 25_000, "logs.p2.api-02": 25_000,
                "logs.p4.we_b_1": 16_666, "logs.p1.we": 8_334,
            ])
        #expect(counter.payloads["logs.p5.web-01"]?.first == lines[0])
        #expect(subscription.droppedCount == 0)
    }

    /// Lines larger than the server's max_payload: dropped and counted by
    /// default (the others arrive, in order), or the pipeline fails with
    /// `on_oversize: fail`. Both with a subject template and with the
    /// record's own subject (none here: `unknown`), which is encoded on a
    /// path of its own.
    @Test func oversizeMessagesAreDroppedAndCountedOrFail() async throws {
        let server = try await NATSServer(configuration: "max_payload: 1024", jetstream: false)
        defer { server.stop() }
        let directory = try makeTemporaryDirectory()
        let lines = (0..<10).map { $0 % 4 == 3 ? String(repeating: "x", count: 2000) + " \($0)" : "line \($0)" }
        try (lines.joined(separator: "\n") + "\n").write(
            toFile: directory + "/input.log", atomically: true, encoding: .utf8)
        for policy in ["drop", "fail"] {
            for (option, subject) in [("subject: out, ", "out"), ("", "unknown")] {
                try write(
                    """
                    sources:
                      in: { type: stdin }
                    sinks:
                      bus: { type: nats, inputs: [in], servers: ["\(server.url)"], \(option)on_oversize: \(policy) }
                    """,
                    to: directory + "/p.yaml")
                let subscriber = try await NATSConnection.connect(NATSOptions.forTests(server.url))
                let subscription = try await subscriber.subscribe(subject)
                try await subscriber.flush()
                let counter = Counter()
                // With `fail` nothing arrives: waiting a second shows it.
                let wait: Duration = .seconds(policy == "drop" ? 5 : 1)
                let collecting = Task { await Self.collect(subscription, into: counter, until: 8, timeout: wait) }
                let result = try await CLI.run(["run", directory + "/p.yaml"], stdinPath: directory + "/input.log")
                await collecting.value
                await subscriber.close()
                if policy == "drop" {
                    #expect(result.status == 0, "\(result.stderr)")
                    #expect(counter.payloads[subject] == lines.filter { $0.hasPrefix("line") })
                    #expect(result.stderr.contains("bus.oversize_messages=2"), "\(result.stderr)")
                    #expect(result.stderr.contains("acknowledged=10 unacknowledged=0"), "\(result.stderr)")
                } else {
                    #expect(result.status != 0)
                    #expect(result.stderr.contains("max_payload"), "\(result.stderr)")
                    #expect(counter.total == 0, "a failed batch is not published")
                }
            }
        }
    }

    /// `--quiet` leaves out the summary and info logs (the sink's
    /// "connected to"), keeps warnings; `--log-level` wins over it.
    @Test func quietLogsOnlyWarningsUnlessALogLevelIsGiven() async throws {
        let server = try await NATSServer(jetstream: false)
        defer { server.stop() }
        let directory = try makeTemporaryDirectory()
        try write("0123456789012345\nshort\n", to: directory + "/input.log")
        try write(
            """
            sources:
              in: { type: stdin, max_line_bytes: 10 }
            sinks:
              bus: { type: nats, inputs: [in], servers: ["\(server.url)"], subject: out }
            """,
            to: directory + "/p.yaml")
        let oversize = "longer than max_line_bytes"
        for (arguments, connected, summary) in [
            ([String](), true, true), (["--quiet"], false, false), (["--quiet", "--log-level", "info"], true, false),
        ] {
            let result = try await CLI.run(
                ["run"] + arguments + [directory + "/p.yaml"], stdinPath: directory + "/input.log")
            #expect(result.status == 0, "\(result.stderr)")
            #expect(result.stderr.contains("connected to") == connected, "\(arguments): \(result.stderr)")
            #expect(result.stderr.contains("acknowledged=3") == summary, "\(arguments): \(result.stderr)")
            #expect(result.stderr.contains(oversize), "\(arguments): \(result.stderr)")
        }
    }

    /// A record subject that is not a safe subject (here from a partition
    /// subject template with a space and an empty token) is made safe by
    /// the sink, as a subject template's inserted values are.
    @Test func unsafeRecordSubjectsArePublishedMadeSafe() async throws {
        let server = try await NATSServer(jetstream: false)
        defer { server.stop() }
        let directory = try makeTemporaryDirectory()
        let lines = (0..<1000).map { "host=web-0\($0 % 2) msg=\($0)" }
        try (lines.joined(separator: "\n") + "\n").write(
            toFile: directory + "/input.log", atomically: true, encoding: .utf8)
        try write(
            """
            sources:
              in: { type: stdin }
            transforms:
              route: { type: partition, inputs: [in], host: line, subject: "odd subject..{host}" }
            sinks:
              bus: { type: nats, inputs: [route], servers: ["\(server.url)"] }
            """,
            to: directory + "/p.yaml")
        let subscriber = try await NATSConnection.connect(NATSOptions.forTests(server.url))
        let subscription = try await subscriber.subscribe(">")
        try await subscriber.flush()
        let counter = Counter()
        let collecting = Task { await Self.collect(subscription, into: counter, until: 1000, timeout: .seconds(120)) }
        let result = try await CLI.run(["run", directory + "/p.yaml"], stdinPath: directory + "/input.log")
        #expect(result.status == 0, "\(result.stderr)")
        await collecting.value
        await subscriber.close()
        #expect(counter.perSubject == ["odd_subject.web-00": 500, "odd_subject.web-01": 500])
        #expect(counter.payloads["odd_subject.web-01"]?.first == lines[1])
    }

    /// The server restarts while the sink publishes: the sink reconnects by
    /// itself and goes on; nothing it was given is left unacknowledged.
    /// Core NATS stores nothing: lines published while no subscriber was
    /// connected are gone for that subscriber, and a batch that was not
    /// confirmed before the break is published again (it may arrive twice).
    @Test func sinkReconnectsAfterAServerRestart() async throws {
        let server = try await NATSServer(jetstream: false)
        defer { server.stop() }
        let port = server.port
        let directory = try makeTemporaryDirectory()
        try write(
            """
            sources:
              demo: { type: demo_logs, count: 0, rate: 2000, hosts: 2 }
            sinks:
              bus: { type: nats, inputs: [demo], servers: ["\(server.url)"], subject: "demo.{host}" }
            """,
            to: directory + "/p.yaml"
        )
        let running = try CLI.Running(["run", directory + "/p.yaml"])
        try await eventually { running.stderr.contains("connected to") }
        try await Task.sleep(for: .milliseconds(500))
        server.kill()
        try await eventually { running.stderr.contains("disconnected") }
        try await Task.sleep(for: .milliseconds(500))
        try await server.start(port: port)
        try await eventually { running.stderr.contains("reconnected to nats://127.0.0.1:\(port)") }
        let subscriber = try await NATSConnection.connect(NATSOptions.forTests(server.url))
        let subscription = try await subscriber.subscribe("demo.>")
        try await subscriber.flush()
        let counter = Counter()
        await Self.collect(subscription, into: counter, until: 500, timeout: .seconds(120))
        #expect(counter.total >= 500, "after the restart, publishing goes on")
        running.signal(SIGTERM)
        let result = try await running.wait()
        await subscriber.close()
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stderr.contains("unacknowledged=0"))
    }

    /// nats source → file: a queue group, and host and partition read back
    /// from the subject into the path.
    @Test func sourceReadsHostAndPartitionFromTheSubject() async throws {
        let server = try await NATSServer(jetstream: false)
        defer { server.stop() }
        let directory = try makeTemporaryDirectory()
        try write(
            """
            sources:
              bus:
                type: nats
                servers: ["\(server.url)"]
                subjects: ["logs.p3.>"]
                queue_group: central-p3
                subject_pattern: "logs.p{partition}.{host}"
            sinks:
              out: { type: file, inputs: [bus], path: "\(directory)/out/p{partition}/{host}.log" }
            """,
            to: directory + "/p.yaml"
        )
        let running = try CLI.Running(["run", directory + "/p.yaml"])
        try await eventually { running.stderr.contains("connected to") }
        let publisher = try await NATSConnection.connect(NATSOptions.forTests(server.url))
        // Core NATS drops what nobody subscribes to yet: probe until a probe
        // line comes out, so the subscription is known to the server.
        let probing = ContinuousClock.now + .seconds(120)
        while !FileManager.default.fileExists(atPath: directory + "/out/p3/probe.log") {
            if ContinuousClock.now > probing {
                Issue.record("no probe line came out within 120 s")
                break
            }
            try await publisher.publish([.init(subject: "logs.p3.probe", payload: ByteBuffer(string: "probe"))])
            try await publisher.flush()
            try await Task.sleep(for: .milliseconds(50))
        }
        var messages: [NATSConnection.OutgoingMessage] = []
        for index in 0..<3000 {
            let host = ["web1.example.net", "db-2"][index % 2]
            messages.append(.init(subject: "logs.p3.\(host)", payload: ByteBuffer(string: "line \(index)")))
        }
        messages.append(.init(subject: "logs.p4.elsewhere", payload: ByteBuffer(string: "not ours")))
        try await publisher.publish(messages)
        try await publisher.flush()
        try await eventually {
            let a =
                (try? String(contentsOfFile: directory + "/out/p3/web1.example.net.log", encoding: .utf8))?.split(
                    separator: "\n"
                ).count ?? 0
            let b =
                (try? String(contentsOfFile: directory + "/out/p3/db-2.log", encoding: .utf8))?.split(separator: "\n")
                .count ?? 0
            return a == 1500 && b == 1500
        }
        running.signal(SIGTERM)
        let result = try await running.wait()
        await publisher.close()
        #expect(result.status == 0, "\(result.stderr)")
        #expect(!FileManager.default.fileExists(atPath: directory + "/out/p4"))
        let first = try String(contentsOfFile: directory + "/out/p3/web1.example.net.log", encoding: .utf8).split(
            separator: "\n"
        ).prefix(2)
        #expect(first == ["line 0", "line 2"])
    }

    /// A wrong password or an unreachable server stops `logpipe run` with a
    /// clear message instead of hanging.
    @Test func wrongPasswordAndUnreachableServerFailClearly() async throws {
        let server = try await NATSServer(
            configuration: "authorization { user: ops, password: right, timeout: 60 }", jetstream: false)
        defer { server.stop() }
        let directory = try makeTemporaryDirectory()
        try write(
            """
            sources:
              demo: { type: demo_logs, count: 10 }
            sinks:
              bus: { type: nats, inputs: [demo], servers: ["\(server.url)"], auth: { user: ops, password: wrong } }
            """,
            to: directory + "/p.yaml"
        )
        let wrong = try await CLI.run(["run", directory + "/p.yaml"])
        #expect(wrong.status == 2)
        #expect(wrong.stderr.contains("stage 'bus' failed: \(server.url) rejected the credentials"), "\(wrong.stderr)")

        let port = server.port
        server.stop()
        let unreachable = try await CLI.run(["run", "--set", "bus.auth.password=right", directory + "/p.yaml"])
        #expect(unreachable.status == 2)
        #expect(unreachable.stderr.contains("cannot connect to nats://127.0.0.1:\(port)"), "\(unreachable.stderr)")
        #expect(unreachable.stderr.contains("Connection refused"))
    }
}
