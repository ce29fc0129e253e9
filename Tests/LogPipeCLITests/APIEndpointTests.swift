import Foundation
import NATSTestSupport
import Testing

/// `logpipe run` with its API endpoint: the real binary, a real nats-server.
@Suite(.serialized) struct APIEndpointTests {
    /// The address the run's log says the API listens on.
    static func apiAddress(_ running: CLI.Running) async throws -> String {
        try await eventually { running.stderr.contains("API listening on http://") }
        let line = try #require(running.stderr.split(separator: "\n").first { $0.contains("API listening on http://") })
        let start = try #require(line.range(of: "http://"))
        return String(line[start.upperBound...].prefix { $0 != " " })
    }

    static func get(_ address: String, _ path: String) async -> (status: Int, body: String)? {
        await Task.detached { httpGet(address, path) }.value
    }

    /// Runs demo lines (500/s) into a nats sink `bus` on `server`, with the
    /// API on a free port: the run and the API's address.
    static func runDemoToNATS(_ server: NATSServer, settings: String = "") async throws -> (CLI.Running, String) {
        let directory = try makeTemporaryDirectory()
        try write(
            """
            \(settings)
            sources:
              demo: { type: demo_logs, count: 0, rate: 500, hosts: 2 }
            sinks:
              bus: { type: nats, inputs: [demo], servers: ["\(server.url)"], subject: "demo.{host}" }
            """,
            to: directory + "/p.yaml"
        )
        let running = try CLI.Running(["run", directory + "/p.yaml", "--api-address", "127.0.0.1:0"])
        return (running, try await apiAddress(running))
    }

    /// `/ready` follows the sink's connection: 503 naming the sink within
    /// seconds of the server going away, 200 again once it is back; the
    /// metrics count what went through.
    @Test func readyFollowsTheSinksConnection() async throws {
        let server = try await NATSServer(jetstream: false)
        defer { server.stop() }
        let port = server.port
        let (running, address) = try await Self.runDemoToNATS(server)
        try await eventually { await Self.get(address, "/ready")?.status == 200 }
        try await eventually {
            let metrics = await Self.get(address, "/metrics")?.body ?? ""
            return metrics.contains(#"logpipe_records_delivered_total{stage="bus"}"#)
                && !metrics.contains(#"logpipe_records_delivered_total{stage="bus"} 0"#)
                && metrics.contains(#"logpipe_nats_connected{stage="bus"} 1"#)
                && metrics.contains(#"logpipe_nats_rtt_seconds{stage="bus"}"#)
        }
        #expect(await Self.get(address, "/health")?.status == 200)

        server.kill()
        try await eventually {
            guard let ready = await Self.get(address, "/ready") else { return false }
            return ready.status == 503 && ready.body.contains("sink 'bus' waits for a NATS connection")
        }
        try await eventually {
            await Self.get(address, "/metrics")?.body.contains(#"logpipe_nats_connected{stage="bus"} 0"#) == true
        }
        try await server.start(port: port)
        try await eventually { await Self.get(address, "/ready")?.status == 200 }

        running.signal(SIGTERM)
        let result = try await running.wait()
        #expect(result.status == 0, "\(result.stderr)")
        #expect(await Self.get(address, "/health") == nil, "the endpoint closes with the run")
    }

    /// Scrapes during a long drain (SIGTERM while the sink's server is
    /// down) still answer: /health alive, /ready 503 saying it stops,
    /// /metrics with the unacknowledged records; once the server is back the
    /// drain ends and the run exits 0 with nothing lost.
    @Test func scrapesDuringALongDrainAnswer() async throws {
        let server = try await NATSServer(jetstream: false)
        defer { server.stop() }
        let port = server.port
        let (running, address) = try await Self.runDemoToNATS(server, settings: "shutdown_timeout: 10m")
        try await eventually { await Self.get(address, "/ready")?.status == 200 }
        server.kill()
        // Records wait for the server: the drain below has something to wait for.
        try await eventually {
            guard let body = await Self.get(address, "/ready")?.body,
                let object = try? JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: Any]
            else { return false }
            return body.contains("waits for a NATS connection: reconnecting")
                && (object["unacknowledged_records"] as? Int ?? 0) > 0
        }
        running.signal(SIGTERM)
        try await eventually { running.stderr.contains("stopping: draining in-flight records") }
        for _ in 0..<3 {
            let ready = try #require(await Self.get(address, "/ready"))
            #expect(ready.status == 503)
            #expect(ready.body.contains("the pipeline is stopping (draining in-flight records)"), "\(ready.body)")
            let health = try #require(await Self.get(address, "/health"))
            #expect(health.status == 200 && health.body.contains(#""phase":"stopping""#))
            let metrics = try #require(await Self.get(address, "/metrics"))
            #expect(metrics.status == 200 && metrics.body.contains("logpipe_records_unacknowledged"))
            #expect(await Self.get(address, "/reload")?.status == 405)
        }
        try await server.start(port: port)
        let result = try await running.wait()
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stderr.contains("unacknowledged=0"))
    }

    /// An address in use stops the run before anything starts, and says so.
    @Test func anAddressInUseIsAConfigurationError() async throws {
        let server = try await NATSServer(jetstream: false)
        defer { server.stop() }
        let directory = try makeTemporaryDirectory()
        try write(
            """
            api: { address: "127.0.0.1:\(server.port)" }
            sources:
              demo: { type: demo_logs, count: 10 }
            sinks:
              out: { type: stdout, inputs: [demo] }
            """,
            to: directory + "/p.yaml"
        )
        let result = try await CLI.run(["run", directory + "/p.yaml"])
        #expect(result.status == 1)
        #expect(result.stderr.contains("cannot listen on 127.0.0.1:\(server.port) for the API: Address already in use"))
        #expect(result.stdout.isEmpty, "nothing was started")
        let malformed = try await CLI.run(["run", directory + "/p.yaml", "--api-address", "localhost"])
        #expect(malformed.status == 1)
        #expect(malformed.stderr.contains("API address 'localhost' is not host:port"))
    }
}

/// `--log-format json` and status lines without a terminal.
@Suite struct LogFormatTests {
    /// Each line of `stderr` as a JSON object with time, level and message.
    static func objects(_ stderr: String) throws -> [[String: Any]] {
        try stderr.split(separator: "\n").map { line in
            let object = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any]
            let parsed = try #require(object, "not a JSON object: \(line)")
            #expect(parsed["time"] is String && parsed["level"] is String && parsed["message"] is String)
            return parsed
        }
    }

    /// A directory with `p.yaml`: `count` demo lines at 40 a second into `out.log`.
    static func demoToFile(count: Int) throws -> String {
        let directory = try makeTemporaryDirectory()
        try write(
            """
            sources:
              demo: { type: demo_logs, count: \(count), rate: 40 }
            sinks:
              out: { type: file, inputs: [demo], path: "\(directory)/out.log" }
            """,
            to: directory + "/p.yaml"
        )
        return directory
    }

    /// Every line on stderr is one JSON object; a stage's events name the
    /// stage; `--status-interval` given explicitly logs status lines although
    /// stderr is a file.
    @Test func jsonLogsAndStatusLinesWithoutATerminal() async throws {
        let directory = try Self.demoToFile(count: 40)
        let result = try await CLI.run([
            "run", directory + "/p.yaml", "--log-format", "json", "--status-interval", "0.2",
        ])
        #expect(result.status == 0, "\(result.stderr)")
        let objects = try Self.objects(result.stderr)
        #expect(
            objects.contains {
                ($0["message"] as? String)?.contains("unacknowledged=") == true && $0["level"] as? String == "info"
            })
        #expect(objects.contains { ($0["message"] as? String)?.hasPrefix("finished in") == true })

        // A stage's events name it; the failure at the end is JSON too.
        try write(
            """
            data_dir: \(directory)/data
            sources:
              tail: { type: file, include: ["\(directory)/none/*.log"], once: true }
            sinks:
              out: { type: file, inputs: [tail], path: "\(directory)/out.log" }
            """,
            to: directory + "/failing.yaml"
        )
        let failing = try await CLI.run(["run", directory + "/failing.yaml", "--log-format", "json"])
        #expect(failing.status == 2, "\(failing.stderr)")
        let events = try Self.objects(failing.stderr)
        #expect(events.contains { $0["stage"] as? String == "tail" && $0["level"] as? String == "warning" })
        #expect(
            events.contains {
                $0["level"] as? String == "error"
                    && ($0["message"] as? String)?.hasPrefix("stage 'tail' failed") == true
            })
        let bad = try await CLI.run(["run", directory + "/p.yaml", "--log-format", "xml"])
        #expect(bad.status != 0)
        #expect(bad.stderr.contains("unknown log format 'xml'; use text or json"))
    }

    /// Without a terminal and without --status-interval, no status lines.
    @Test func noStatusLinesUnlessAsked() async throws {
        let directory = try Self.demoToFile(count: 20)
        let result = try await CLI.run(["run", directory + "/p.yaml"])
        #expect(result.status == 0, "\(result.stderr)")
        #expect(!result.stderr.contains("unacknowledged=0;"), "\(result.stderr)")
        #expect(result.stderr.contains("logpipe: finished in"))
    }
}
