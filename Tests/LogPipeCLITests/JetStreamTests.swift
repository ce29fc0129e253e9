import Foundation
import NATSClient
import NATSTestSupport
import NIOCore
import Testing

/// The reference scenario with the real binary and a real nats-server:
/// pipelines/ship-logs.yaml into the LOGS stream, pipelines/central.yaml out
/// of it, one file per host.
@Suite(.serialized) struct JetStreamTests {
    struct Scenario {
        let server: NATSServer
        let directory: String
        let lines: Int

        /// Sample logs for six fake hosts, made with logpipe's demo_logs.
        init(lines: Int) async throws {
            server = try await NATSServer()
            directory = try makeTemporaryDirectory()
            self.lines = lines
            try FileManager.default.createDirectory(atPath: directory + "/hosts", withIntermediateDirectories: true)
            // Exactly `lines` lines in three formats that carry their host.
            try write(
                """
                sources:
                  syslog: { type: demo_logs, count: \(lines / 2), hosts: 6, format: syslog, seed: 1 }
                  json: { type: demo_logs, count: \(lines / 4), hosts: 6, format: json, seed: 2 }
                  logfmt: { type: demo_logs, count: \(lines - lines / 2 - lines / 4), hosts: 6, format: logfmt, seed: 3 }
                sinks:
                  files: { type: file, inputs: [syslog, json, logfmt], path: "\(directory)/hosts/{host}.log" }
                """,
                to: directory + "/generate.yaml"
            )
            let result = try await CLI.run(["run", "--quiet", directory + "/generate.yaml"])
            #expect(result.status == 0, "\(result.stderr)")
        }

        var hostFiles: [String] {
            ((try? FileManager.default.contentsOfDirectory(atPath: directory + "/hosts")) ?? []).filter {
                $0.hasSuffix(".log")
            }.sorted()
        }

        var inputLines: Int {
            hostFiles.reduce(0) { total, file in
                total
                    + ((try? String(contentsOfFile: directory + "/hosts/" + file, encoding: .utf8))?.split(
                        separator: "\n"
                    ).count ?? 0)
            }
        }

        var shipEnvironment: [String: String] {
            [
                "NATS_URL": server.url, "LOG_FILES": directory + "/hosts/*.log", "ONCE": "true",
                "LOGPIPE_DATA": directory + "/ship", "PARTITIONS": "4", "DUPLICATE_WINDOW": "10m",
            ]
        }

        func ship() throws -> CLI.Running {
            try CLI.Running(["run", "pipelines/ship-logs.yaml"], environment: shipEnvironment)
        }

        func streamMessages() async throws -> Int64 {
            let connection = try await NATSConnection.connect(NATSOptions.forTests(server.url))
            defer { Task { await connection.close() } }
            return try await JetStreamContext(connection: connection).streamInfo("LOGS")?.state.messages ?? -1
        }

        func consumeAll(stopAfterIdle: String = "1s") async throws -> [CLI.Result] {
            try await withThrowingTaskGroup(of: CLI.Result.self) { group in
                for partition in 0..<4 {
                    group.addTask {
                        try await CLI.Running(
                            ["run", "pipelines/central.yaml"],
                            environment: [
                                "NATS_URL": server.url, "PARTITION": String(partition),
                                "STOP_AFTER_IDLE": stopAfterIdle,
                                "OUT": directory + "/central", "LOGPIPE_DATA": directory + "/central-\(partition)",
                                "ACK_WAIT": "2s",
                            ]
                        ).wait()
                    }
                }
                var results: [CLI.Result] = []
                for try await result in group { results.append(result) }
                return results
            }
        }

        /// Drains the stream with one central consumer per partition and
        /// compares every host file with its input.
        func consumeAllAndCompare() async throws {
            for result in try await consumeAll() {
                #expect(result.status == 0, "\(result.stderr)")
            }
            try expectCentralFilesEqualInput()
        }

        func expectCentralFilesEqualInput() throws {
            for file in hostFiles {
                let input = try Data(contentsOf: URL(fileURLWithPath: directory + "/hosts/" + file))
                let output = try? Data(contentsOf: URL(fileURLWithPath: directory + "/central/" + file))
                #expect(output == input, "\(file): \(output?.count ?? -1) bytes vs \(input.count)")
            }
        }
    }

    /// 1,000,000 lines shipped once and consumed per partition: the stream
    /// holds exactly 1,000,000 messages, and every host's central file equals
    /// its input byte for byte, in order.
    @Test func shipAndConsumeEveryLineExactlyOnce() async throws {
        let scenario = try await Scenario(lines: 1_000_000)
        defer { scenario.server.stop() }
        let expected = scenario.inputLines
        #expect(expected == 1_000_000)
        #expect(scenario.hostFiles.count == 6)
        let shipped = try await scenario.ship().wait()
        #expect(shipped.status == 0, "\(shipped.stderr)")
        #expect(try await scenario.streamMessages() == Int64(expected))
        // Shipping everything again (checkpoints gone): the message ids make
        // the stream drop every replayed line.
        try FileManager.default.removeItem(atPath: scenario.directory + "/ship")
        let again = try await scenario.ship().wait()
        #expect(again.status == 0, "\(again.stderr)")
        #expect(again.stderr.contains("store.duplicates=\(expected)"), "\(again.stderr)")
        #expect(try await scenario.streamMessages() == Int64(expected))

        try await scenario.consumeAllAndCompare()
        // Each consumer's exactly-once ledger forgot what its ack floor
        // covers: it keeps a window of recent sequences, not one range per
        // line of its partition (the other partitions' sequences fall between).
        var remembered = 0
        for partition in 0..<4 {
            let path = scenario.directory + "/central-\(partition)/central-p\(partition)/files/written.json"
            let ledger = try #require(
                try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: path))) as? [String: Any])
            let floors = try #require(ledger["floors"] as? [String: Int])
            #expect(floors["LOGS/central-p\(partition)", default: 0] > 0, "\(floors)")
            for case let file as [String: Any] in (ledger["files"] as? [String: Any] ?? [:]).values {
                for case let ranges as [Any] in (file["ranges"] as? [String: Any] ?? [:]).values {
                    remembered += ranges.count
                }
            }
        }
        #expect(remembered < expected / 5, "\(remembered) ranges kept")
    }

    /// `kill -9` of the shipper at random moments, then restarts: the stream
    /// ends up with every line exactly once.
    @Test func killNineTheShipperAndRestart() async throws {
        let scenario = try await Scenario(lines: 150_000)
        defer { scenario.server.stop() }
        let expected = scenario.inputLines
        var random = SystemRandomNumberGenerator()
        for _ in 0..<3 {
            let running = try scenario.ship()
            try await Task.sleep(for: .milliseconds(Int.random(in: 200...700, using: &random)))
            running.signal(SIGKILL)
            _ = try await running.wait()
        }
        let final = try await scenario.ship().wait()
        #expect(final.status == 0, "\(final.stderr)")
        #expect(try await scenario.streamMessages() == Int64(expected))
        try await scenario.consumeAllAndCompare()
    }

    /// nats-server restarts (same store) in the middle of shipping: the
    /// shipper reconnects, publishes again what was not acknowledged, and the
    /// stream holds every line exactly once.
    @Test func serverRestartWhileShipping() async throws {
        let scenario = try await Scenario(lines: 150_000)
        defer { scenario.server.stop() }
        let expected = scenario.inputLines
        let port = scenario.server.port
        let running = try scenario.ship()
        try await eventually { running.stderr.contains("stream LOGS ready") }
        try await Task.sleep(for: .milliseconds(200))
        scenario.server.kill()
        try await Task.sleep(for: .milliseconds(500))
        try await scenario.server.start(port: port)
        let result = try await running.wait(timeout: .seconds(120))
        #expect(result.status == 0, "\(result.stderr)")
        #expect(try await scenario.streamMessages() == Int64(expected))
    }

    /// 300,000 lines; the central consumers are killed with -9 twenty times
    /// at random moments, and once the server crashes (SIGKILL) and restarts
    /// under them. Lines delivered again (their acks died with a consumer or
    /// the server, or their delivery never arrived) must not overtake newer
    /// ones: every host's central file equals its input byte for byte, in
    /// order, every line once.
    @Test func killNineTheConsumersAndTheServerKeepsOrder() async throws {
        let scenario = try await Scenario(lines: 300_000)
        defer { scenario.server.stop() }
        let shipped = try await scenario.ship().wait()
        #expect(shipped.status == 0, "\(shipped.stderr)")
        var random = SystemRandomNumberGenerator()
        func startConsumers() throws -> [CLI.Running] {
            try (0..<4).map { partition in
                try CLI.Running(
                    ["run", "--quiet", "pipelines/central.yaml"],
                    environment: [
                        "NATS_URL": scenario.server.url, "PARTITION": String(partition), "STOP_AFTER_IDLE": "1s",
                        "OUT": scenario.directory + "/central",
                        "LOGPIPE_DATA": scenario.directory + "/central-\(partition)", "ACK_WAIT": "2s",
                    ])
            }
        }
        for round in 0..<20 {
            let running = try startConsumers()
            try await Task.sleep(for: .milliseconds(Int.random(in: 200...1500, using: &random)))
            if round == 10 {
                // The server crashes under the consumers and comes back.
                let port = scenario.server.port
                scenario.server.crash()
                try await Task.sleep(for: .milliseconds(Int.random(in: 100...500, using: &random)))
                try await scenario.server.start(port: port)
                try await Task.sleep(for: .milliseconds(Int.random(in: 500...1500, using: &random)))
            }
            // Each at a moment of its own.
            for process in running.shuffled(using: &random) {
                process.signal(SIGKILL)
                try await Task.sleep(for: .milliseconds(Int.random(in: 0...300, using: &random)))
            }
            for process in running { _ = try await process.wait() }
        }
        for result in try await scenario.consumeAll(stopAfterIdle: "3s") {
            #expect(result.status == 0, "\(result.stderr)")
        }
        try scenario.expectCentralFilesEqualInput()
    }

    /// A three-node cluster with an R3 stream: the shipper and the consumers
    /// keep going while one node is stopped and started again; every line is
    /// stored once and written once, in the stream's order. Run with the
    /// reference pipelines as docs/guarantees.md's cluster recipe says.
    @Test func threeNodeClusterSurvivesANodeRestart() async throws {
        let cluster = try await NATSCluster()
        defer { cluster.shutdown() }
        let directory = try makeTemporaryDirectory()
        try FileManager.default.createDirectory(atPath: directory + "/hosts", withIntermediateDirectories: true)
        try write(
            """
            sources:
              demo: { type: demo_logs, count: 80000, hosts: 4, format: syslog }
            sinks:
              files: { type: file, inputs: [demo], path: "\(directory)/hosts/{host}.log" }
            """,
            to: directory + "/generate.yaml")
        #expect(try await CLI.run(["run", "--quiet", directory + "/generate.yaml"]).status == 0)
        // The reference pipelines, configured only through their variables:
        // all three URLs in NATS_URL, REPLICAS=3.
        let urls = cluster.urls.joined(separator: ",")
        let shipEnvironment = [
            "NATS_URL": urls, "REPLICAS": "3", "LOG_FILES": directory + "/hosts/*.log", "ONCE": "true",
            "LOGPIPE_DATA": directory + "/ship", "PARTITIONS": "2",
        ]
        let shipper = try CLI.Running(["run", "pipelines/ship-logs.yaml"], environment: shipEnvironment)
        try await eventually { shipper.stderr.contains("stream LOGS ready") }
        try await Task.sleep(for: .milliseconds(300))
        cluster.stop(1)
        try await Task.sleep(for: .seconds(1))
        try cluster.start(1)
        let shipped = try await shipper.wait(timeout: .seconds(180))
        #expect(shipped.status == 0, "\(shipped.stderr)")
        // Without REPLICAS, the pipeline states no replicas: the existing R3
        // stream is accepted as it is.
        var unstated = shipEnvironment
        unstated["REPLICAS"] = nil
        let again = try await CLI.Running(["run", "pipelines/ship-logs.yaml"], environment: unstated).wait(
            timeout: .seconds(180))
        #expect(again.status == 0, "\(again.stderr)")

        let consumers = try (0..<2).map { partition in
            // Traced: a consumer that stalls says what it was doing.
            try CLI.Running(
                ["run", "--log-level", "trace", "pipelines/central.yaml"],
                environment: [
                    "NATS_URL": urls, "PARTITION": String(partition), "OUT": directory + "/central",
                    "LOGPIPE_DATA": directory + "/central", "STOP_AFTER_IDLE": "10s", "ACK_WAIT": "3s",
                ])
        }
        try await Task.sleep(for: .milliseconds(500))
        cluster.stop(2)
        try await Task.sleep(for: .seconds(1))
        try cluster.start(2)
        for consumer in consumers {
            let result = try await consumer.wait(timeout: .seconds(180))
            #expect(result.status == 0, "\(result.stderr.split(separator: "\n").suffix(150).joined(separator: "\n"))")
        }
        // The stream, read back per host: every line once. The central
        // files must hold exactly the stream's order (what in_order keeps
        // through the node restart under the consumers). That order is the
        // host's own unless the restart under the shipper made a publish
        // land after later ones (pipelined publishes that failed over to a
        // new stream leader).
        let connection = try await NATSConnection.connect(NATSOptions.forTests(cluster.urls[0]))
        let (reader, _) = try await PullConsumer.bind(
            JetStreamContext(connection: connection, timeout: .seconds(30)), stream: "LOGS",
            config: ConsumerConfig(durable: "check", filterSubject: nil),
            options: .init(batch: 5000, expires: .seconds(2)))
        // Keyed by stream sequence: a message this reader is given twice (a
        // redelivery, when an ack is lost while the cluster settles) is
        // one message of the stream, not two.
        var bySequence: [UInt64: (host: String, line: Substring)] = [:]
        var redelivered = 0
        while true {
            let fetched = try await reader.fetch()
            if fetched.empty { break }
            for message in fetched.messages {
                let host = message.subject.split(separator: ".").dropFirst(2).joined(separator: ".")
                let line = Substring(String(buffer: message.payload))
                if bySequence.updateValue((host + ".log", line), forKey: message.metadata.streamSequence) != nil {
                    redelivered += 1
                }
            }
            // Acknowledged, or the server stops at max_ack_pending.
            try await reader.acknowledge(fetched.messages.map(\.ackSubject))
        }
        var stored: [String: [Substring]] = [:]
        for sequence in bySequence.keys.sorted() {
            let (host, line) = bySequence[sequence]!
            stored[host, default: []].append(line)
        }
        // What a failure message needs to tell a shipper's duplicate from a
        // consumer's: how the stream and the three runs saw it.
        let evidence = """
            stream: \(bySequence.count) messages, sequences \(bySequence.keys.min() ?? 0)...\(bySequence.keys.max() ?? 0), \
            \(redelivered) redelivered to the check reader
            shipper: \(shipped.stderr.split(separator: "\n").suffix(6).joined(separator: "\n"))
            again: \(again.stderr.split(separator: "\n").suffix(4).joined(separator: "\n"))
            """
        await connection.close()
        for file in try FileManager.default.contentsOfDirectory(atPath: directory + "/hosts") {
            let input = try String(contentsOfFile: directory + "/hosts/" + file, encoding: .utf8).split(
                separator: "\n")
            let output =
                (try? String(contentsOfFile: directory + "/central/" + file, encoding: .utf8))?.split(separator: "\n")
                ?? []
            let streamed = stored[file] ?? []
            #expect(
                streamed.sorted() == input.sorted(),
                "\(file): \(streamed.count) of \(input.count) lines stored; \(evidence)")
            #expect(output == streamed, "\(file): the central file is not the stream's lines in the stream's order")
            if streamed == input { #expect(output == input, "\(file)") }
        }
    }

    /// Stream LOGS holding `count` lines ("line 0", "line 1", …) on
    /// logs.p0.web; returns the connection that stored them, still open.
    static func fillStream(on server: NATSServer, lines count: Int) async throws -> NATSConnection {
        let connection = try await NATSConnection.connect(NATSOptions.forTests(server.url))
        try await JetStreamContext(connection: connection).ensureStream(
            StreamConfig(name: "LOGS", subjects: ["logs.>"]))
        let publisher = try await JetStreamPublisher(connection: connection)
        let tracker = try await publisher.publish(
            (0..<count).map {
                .init(subject: "logs.p0.web", payload: ByteBuffer(string: "line \($0)"), messageID: nil)
            })
        await tracker.wait(timeout: .seconds(120))
        #expect(tracker.results.allSatisfy { if case .stored = $0 { true } else { false } })
        return connection
    }

    /// Writes `directory/p.yaml`: the `jetstream` source `logs` on stream
    /// LOGS of `server`, with the further options in `source` (YAML lines),
    /// into the sink `files` given as a flow mapping.
    func writeConsumerPipeline(_ directory: String, server: NATSServer, source: String, sink: String) throws {
        let options = source.split(separator: "\n").map { "    " + $0 }.joined(separator: "\n")
        try write(
            """
            data_dir: \(directory)/data
            sources:
              logs:
                type: jetstream
                servers: ["\(server.url)"]
                stream: LOGS
            \(options)
            sinks:
              files: \(sink)
            """,
            to: directory + "/p.yaml")
    }

    /// `stop_after_idle` ends after one empty long poll once the stream is
    /// drained, also when the sink was still busy with the last batches as
    /// the poll began (the server could deliver all along: nothing near
    /// `max_ack_pending`). It used to wait out a second poll.
    @Test func stopAfterIdleEndsAfterOneEmptyPoll() async throws {
        let server = try await NATSServer()
        defer { server.stop() }
        try await Self.fillStream(on: server, lines: 20_000).close()
        let directory = try makeTemporaryDirectory()
        try writeConsumerPipeline(
            directory, server: server,
            source: """
                consumer: { durable: idle, max_ack_pending: 100000 }
                batch: 2000
                in_order: true
                stop_after_idle: 1s
                """,
            sink: #"{ type: file, inputs: [logs], path: "\#(directory)/all.log", exactly_once: true }"#)
        let result = try await CLI.run(["run", "--log-level", "trace", directory + "/p.yaml"])
        #expect(result.status == 0, "\(result.stderr)")
        let lines = try String(contentsOfFile: directory + "/all.log", encoding: .utf8).split(separator: "\n")
        #expect(lines.count == 20_000)
        let emptyPolls = result.stderr.split(separator: "\n").filter { $0.contains("(empty: true)") }
        #expect(emptyPolls.count == 1, "\(emptyPolls)")
    }

    /// Pull requests the server refuses for a while (a consumer without a
    /// leader after a node restart; here: its max_waiting taken by another
    /// client's long poll) are reported after 2 s, then the source goes on
    /// by itself. They used to be retried silently, and a SIGTERM waited.
    @Test func refusedPullRequestsAreReportedThenResolved() async throws {
        let server = try await NATSServer()
        defer { server.stop() }
        let connection = try await Self.fillStream(on: server, lines: 0)
        let jetstream = JetStreamContext(connection: connection)
        // Another client holds the only waiting slot with a long poll of
        // 4 s on an empty stream.
        let (_, holder, holding) = try await jetstream.holdTheOnlyPullSlot(
            stream: "LOGS", consumer: "busy", expires: .seconds(4))
        let directory = try makeTemporaryDirectory()
        try writeConsumerPipeline(
            directory, server: server,
            source: """
                consumer: { durable: busy }
                stop_after_idle: 5s
                """,
            sink: #"{ type: file, inputs: [logs], path: "\#(directory)/all.log" }"#)
        let running = try CLI.Running(["run", directory + "/p.yaml"])
        try await eventually { running.stderr.contains("pull requests are refused or go unanswered (409") }
        _ = try await holding.value  // expired: the slot is free
        holder.close()
        let publisher = try await JetStreamPublisher(connection: connection)
        let tracker = try await publisher.publish(
            (0..<100).map { .init(subject: "logs.p0.web", payload: ByteBuffer(string: "line \($0)"), messageID: nil) })
        await tracker.wait(timeout: .seconds(120))
        let result = try await running.wait()
        await connection.close()
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stderr.contains("consumer busy on LOGS is there after"), "\(result.stderr)")
        let lines = try String(contentsOfFile: directory + "/all.log", encoding: .utf8).split(separator: "\n")
        #expect(lines == (0..<100).map { "line \($0)" })
    }

    /// A server that does not take the consumer's acknowledgements (here:
    /// the user may not publish acks; nats-server 2.9's replicated
    /// consumers did it after a node restart, and a central consumer of the
    /// cluster test got the same 875 messages every ack_wait until it was
    /// killed). With in_order the source restarts the consumer at its ack
    /// floor; without, it warns.
    @Test(arguments: [true, false]) func ignoredAcknowledgementsAreNoticed(inOrder: Bool) async throws {
        let server = try await NATSServer(
            configuration: """
                authorization {
                  users: [
                    { user: admin, password: admin }
                    { user: reader, password: reader, permissions: { publish: { deny: ["$JS.ACK.>"] } } }
                  ]
                }
                """)
        defer { server.stop() }
        let port = server.url.split(separator: ":").last!
        let connection = try await NATSConnection.connect(NATSOptions.forTests("nats://admin:admin@127.0.0.1:\(port)"))
        try await JetStreamContext(connection: connection).ensureStream(
            StreamConfig(name: "LOGS", subjects: ["logs.>"]))
        // Kept while its acks come (it unsubscribes from them when freed).
        let publisher = try await JetStreamPublisher(connection: connection)
        let tracker = try await publisher.publish(
            (0..<20).map { .init(subject: "logs.p0.web", payload: ByteBuffer(string: "line \($0)"), messageID: nil) })
        await tracker.wait(timeout: .seconds(120))
        #expect(tracker.results.allSatisfy { $0 != nil }, "the stream did not take the lines")
        await connection.close()
        let directory = try makeTemporaryDirectory()
        try write(
            """
            data_dir: \(directory)/data
            sources:
              logs:
                type: jetstream
                servers: ["nats://reader:reader@127.0.0.1:\(port)"]
                stream: LOGS
                consumer: { durable: c, ack_wait: 1s, ack_policy: \(inOrder ? "all" : "explicit") }
                in_order: \(inOrder)
            sinks:
              files: { type: file, inputs: [logs], path: "\(directory)/all.log", exactly_once: true }
            """, to: directory + "/p.yaml")
        let running = try CLI.Running(["run", directory + "/p.yaml"])
        let noticed = "consumer c on LOGS delivers acknowledged messages again"
        try await eventually { running.stderr.contains(noticed) }
        if inOrder {
            // Restarted, and then noticed again (the acks stay denied).
            try await eventually { running.stderr.components(separatedBy: "restarting consumer c").count > 2 }
        }
        running.signal(SIGTERM)
        let result = try await running.wait()
        #expect(result.status == 0, "\(result.stderr)")
        #expect(
            result.stderr.contains(
                inOrder ? "restarting consumer c at its first unacknowledged message" : "until logpipe restarts"),
            "\(result.stderr)")
        let lines = try String(contentsOfFile: directory + "/all.log", encoding: .utf8).split(separator: "\n")
        #expect(lines == (0..<20).map { "line \($0)"[...] })
    }

    /// A sink slower than the consumer's ack_wait: the source sends +WPI for
    /// the records still in the pipeline, so nothing is delivered twice.
    @Test func workInProgressKeepsSlowRecordsFromComingBack() async throws {
        let server = try await NATSServer()
        defer { server.stop() }
        try await Self.fillStream(on: server, lines: 100).close()
        let directory = try makeTemporaryDirectory()
        _ = FileManager.default.createFile(atPath: directory + "/out", contents: Data())  // the sink is stuck
        try writeConsumerPipeline(
            directory, server: server,
            source: """
                consumer: { durable: slow, ack_wait: 1s }
                stop_after_idle: 2s
                """,
            sink: #"{ type: file, inputs: [logs], path: "\#(directory)/out/all.log", max_retry_backoff: 200ms }"#)
        let running = try CLI.Running(["run", directory + "/p.yaml"])
        try await eventually { running.stderr.contains("cannot write") }
        try await Task.sleep(for: .seconds(3))  // three times ack_wait
        try FileManager.default.removeItem(atPath: directory + "/out")
        let result = try await running.wait(timeout: .seconds(120))
        #expect(result.status == 0, "\(result.stderr)")
        #expect(!result.stderr.contains("redeliveries"), "\(result.stderr)")
        let lines = try String(contentsOfFile: directory + "/out/all.log", encoding: .utf8).split(separator: "\n")
        #expect(lines == (0..<100).map { "line \($0)"[...] })
    }

    /// `ack_policy: all` (with `in_order`): one ack per completed prefix; afterwards nothing is
    /// pending on the server.
    @Test func cumulativeAcknowledgements() async throws {
        let server = try await NATSServer()
        defer { server.stop() }
        let connection = try await Self.fillStream(on: server, lines: 5000)
        let jetstream = JetStreamContext(connection: connection)
        let directory = try makeTemporaryDirectory()
        try writeConsumerPipeline(
            directory, server: server,
            source: """
                consumer: { durable: single, ack_policy: all }
                in_order: true
                stop_after_idle: 1s
                """,
            sink: #"{ type: file, inputs: [logs], path: "\#(directory)/all.log" }"#)
        // Without in_order a cumulative ack could cover a delivery lost on
        // its way: refused.
        let refused = try await CLI.run(["validate", directory + "/p.yaml", "--set", "logs.in_order=false"])
        #expect(refused.status == 1)
        #expect(refused.stderr.contains("ack_policy: all needs in_order: true"), "\(refused.stderr)")
        let result = try await CLI.run(["run", directory + "/p.yaml"])
        #expect(result.status == 0, "\(result.stderr)")
        #expect(
            try String(contentsOfFile: directory + "/all.log", encoding: .utf8).split(separator: "\n").count == 5000)
        let info = try #require(try await jetstream.consumerInfo(stream: "LOGS", name: "single"))
        #expect(info.config.ack_policy == "all")
        #expect(info.num_ack_pending == 0)
        #expect(info.num_pending == 0)
        await connection.close()
    }

    /// Messages the stream refuses (here: larger than its max_msg_size) fail
    /// the pipeline by default, naming the way out; with `on_rejected: drop`
    /// they are counted, written to the dead-letter file in order, and the
    /// others are stored.
    @Test func refusedMessagesFailOrGoToTheDeadLetterFile() async throws {
        let server = try await NATSServer()
        defer { server.stop() }
        let connection = try await NATSConnection.connect(NATSOptions.forTests(server.url))
        _ = try await connection.request(
            "$JS.API.STREAM.CREATE.LOGS",
            payload: ByteBuffer(string: #"{"name":"LOGS","subjects":["logs.>"],"storage":"file","max_msg_size":100}"#))
        let directory = try makeTemporaryDirectory()
        let lines = (0..<10).map { $0 % 3 == 1 ? String(repeating: "y", count: 200) + " \($0)" : "line \($0)" }
        try (lines.joined(separator: "\n") + "\n").write(
            toFile: directory + "/input.log", atomically: true, encoding: .utf8)
        func pipeline(_ policy: String) throws -> String {
            try write(
                """
                sources:
                  in: { type: stdin }
                sinks:
                  store:
                    type: jetstream
                    inputs: [in]
                    servers: ["\(server.url)"]
                    subject: logs.p0.web
                    stream: { name: LOGS, subjects: ["logs.>"] }
                    on_rejected: \(policy)
                    \(policy == "drop" ? "dead_letter_file: \(directory)/dead.log" : "")
                """,
                to: directory + "/\(policy).yaml")
            return directory + "/\(policy).yaml"
        }
        let failing = try await CLI.run(["run", try pipeline("fail")], stdinPath: directory + "/input.log")
        #expect(failing.status != 0)
        #expect(failing.stderr.contains("err_code 10054"), "\(failing.stderr)")
        #expect(failing.stderr.contains("on_rejected: drop"), "\(failing.stderr)")
        try await JetStreamContext(connection: connection).purgeStream("LOGS")

        let dropping = try await CLI.run(["run", try pipeline("drop")], stdinPath: directory + "/input.log")
        #expect(dropping.status == 0, "\(dropping.stderr)")
        #expect(dropping.stderr.contains("store.rejected=3"), "\(dropping.stderr)")
        #expect(dropping.stderr.contains("acknowledged=10 unacknowledged=0"), "\(dropping.stderr)")
        let dead = try String(contentsOfFile: directory + "/dead.log", encoding: .utf8)
        #expect(dead == lines.filter { $0.hasPrefix("y") }.map { $0 + "\n" }.joined())
        #expect(try await JetStreamContext(connection: connection).streamInfo("LOGS")?.state.messages == 7)
        await connection.close()
    }

    /// Only the settings a pipeline states are compared with an existing
    /// stream: one made by someone else with another max_age (or, in a
    /// cluster, three replicas) is used as it is.
    @Test func existingStreamWithOtherSettingsIsReported() async throws {
        let server = try await NATSServer()
        defer { server.stop() }
        let connection = try await NATSConnection.connect(NATSOptions.forTests(server.url))
        var config = StreamConfig(name: "LOGS", subjects: ["logs.>"])
        config.storage = "memory"
        config.max_age = 3_600_000_000_000
        try await JetStreamContext(connection: connection).ensureStream(config)
        await connection.close()
        let directory = try makeTemporaryDirectory()
        func pipeline(_ stream: String) throws -> String {
            try write(
                """
                sources:
                  demo: { type: demo_logs, count: 10 }
                sinks:
                  store: { type: jetstream, inputs: [demo], servers: ["\(server.url)"], subject: logs.x, stream: \(stream) }
                """,
                to: directory + "/p.yaml"
            )
            return directory + "/p.yaml"
        }
        let unstated = try await CLI.run(["run", try pipeline(#"{ name: LOGS, subjects: ["logs.>"] }"#)])
        #expect(unstated.status == 0, "\(unstated.stderr)")
        let result = try await CLI.run(["run", try pipeline(#"{ name: LOGS, subjects: ["logs.>"], storage: file }"#)])
        #expect(result.status == 2)
        #expect(
            result.stderr.contains(
                "stream LOGS exists with other settings (storage: file (pipeline) vs memory (server))"),
            "\(result.stderr)")
        #expect(result.stderr.contains("stream.update: true"))
    }

    /// A replay of the same stdin lines is dropped by the stream when the
    /// ids repeat (`msg_id` from the offset); with `deduplicate: false` it is
    /// stored again.
    @Test func deduplicateSwitchesMessageIDs() async throws {
        let server = try await NATSServer()
        defer { server.stop() }
        let directory = try makeTemporaryDirectory()
        try write((0..<200).map { "line \($0)\n" }.joined(), to: directory + "/in.log")
        // Watches the published messages for their ids.
        let watcher = try await NATSConnection.connect(NATSOptions.forTests(server.url))
        let published = try await watcher.subscribe("*.x")
        for (name, deduplicate) in [("DEDUP", true), ("PLAIN", false)] {
            try write(
                """
                sources:
                  in: { type: stdin }
                sinks:
                  store:
                    type: jetstream
                    inputs: [in]
                    servers: ["\(server.url)"]
                    subject: "\(name.lowercased()).x"
                    stream: { name: \(name), subjects: ["\(name.lowercased()).>"] }
                    \(deduplicate ? "msg_id: \"in:{offset}\"" : "deduplicate: false")
                """,
                to: directory + "/\(name).yaml")
            for _ in 0..<2 {
                let result = try await CLI.run(["run", directory + "/\(name).yaml"], stdinPath: directory + "/in.log")
                #expect(result.status == 0, "\(result.stderr)")
            }
        }
        var ids: [String: Set<String>] = [:]
        for _ in 0..<800 {
            guard let message = await published.next(timeout: .seconds(10)) else { break }
            ids[message.subject, default: []].insert(message.headers?["Nats-Msg-Id"] ?? "none")
        }
        #expect(ids["dedup.x"]?.count == 200)
        #expect(ids["plain.x"] == ["none"])
        await watcher.close()
        let connection = try await NATSConnection.connect(NATSOptions.forTests(server.url))
        let jetstream = JetStreamContext(connection: connection)
        #expect(try await jetstream.streamInfo("DEDUP")?.state.messages == 200)
        #expect(try await jetstream.streamInfo("PLAIN")?.state.messages == 400)
        await connection.close()
        try write(
            """
            sources:
              in: { type: stdin }
            sinks:
              store: { type: jetstream, inputs: [in], servers: ["\(server.url)"], stream: { name: X }, msg_id: "{offset}", deduplicate: false }
            """,
            to: directory + "/bad.yaml")
        let invalid = try await CLI.run(["validate", directory + "/bad.yaml"])
        #expect(invalid.status == 1)
        #expect(invalid.stderr.contains("msg_id"), "\(invalid.stderr)")
    }
}
