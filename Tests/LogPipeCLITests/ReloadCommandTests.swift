import Foundation
import NATSTestSupport
import Testing

/// `logpipe run` reloading its pipeline file (SIGHUP, `POST /reload`): the
/// real binary on real files.
@Suite struct ReloadCommandTests {
    /// The lines of every file under `directory`, sorted by file name.
    func lines(in directory: String) -> [Substring] {
        let names = ((try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []).sorted()
        return names.flatMap { name in
            ((try? String(contentsOfFile: directory + "/" + name, encoding: .utf8)) ?? "").split(separator: "\n")
        }
    }

    func pipeline(_ directory: String, pattern: String, out: String) throws {
        try write(
            """
            data_dir: \(directory)/data
            sources:
              tail:
                type: file
                include: ['\(directory)/logs/app.log']
                scan_interval: 100ms
                poll_interval: 50ms
                checkpoint_interval: 50ms
            transforms:
              pick: { type: regex, inputs: [tail], include: ['\(pattern)'] }
            sinks:
              out: { type: file, inputs: [pick], path: "\(directory)/\(out)/all.log" }
            """,
            to: directory + "/pipeline.yaml")
    }

    /// Appends `x 0` ... `x 49999` or `y 50000` ... in chunks, as a busy logger does.
    func append(_ tag: String, _ range: Range<Int>, to path: String) async throws {
        let fd = open(path, O_WRONLY | O_CREAT | O_APPEND, 0o644)
        defer { close(fd) }
        for chunk in stride(from: range.lowerBound, to: range.upperBound, by: 500) {
            let text = (chunk..<min(chunk + 500, range.upperBound)).map { "\(tag) \($0)\n" }.joined()
            _ = text.utf8CString.withUnsafeBufferPointer { Glibc.write(fd, $0.baseAddress, $0.count - 1) }
            try await Task.sleep(for: .milliseconds(2))
        }
    }

    /// The issue's test: while 100,000 lines are tailed, SIGHUP swaps the
    /// filter's regex (it now also keeps `y` lines) and the file sink's path;
    /// the tail keeps running. Every line arrives exactly once and in order,
    /// the early ones in the old file, the rest in the new one.
    @Test func aSighupSwapsTheRegexAndTheSinkPathWithEveryLineOnce() async throws {
        let directory = try makeTemporaryDirectory()
        try FileManager.default.createDirectory(atPath: directory + "/logs", withIntermediateDirectories: true)
        let log = directory + "/logs/app.log"
        try write("", to: log)  // there from the start: no "matches no file yet" warning
        try pipeline(directory, pattern: "^x ", out: "out-a")
        let running = try CLI.Running(["run", directory + "/pipeline.yaml", "--log-level", "info"])
        let writer = Task { try await append("x", 0..<50_000, to: log) }
        try await eventually { lines(in: directory + "/out-a").count >= 5_000 }
        try pipeline(directory, pattern: "^(x|y) ", out: "out-b")
        running.signal(SIGHUP)
        try await eventually { running.stderr.contains("reloaded the pipeline") }
        #expect(running.stderr.contains("changed: pick, out; added: none; removed: none; unchanged: tail"))
        try await writer.value
        try await append("y", 50_000..<100_000, to: log)
        try await eventually(reaches: 100_000) {
            lines(in: directory + "/out-a").count + lines(in: directory + "/out-b").count
        }
        running.signal(SIGTERM)
        let result = try await running.wait()
        #expect(result.status == 0, "\(result.stderr)")

        let before = lines(in: directory + "/out-a")
        let after = lines(in: directory + "/out-b")
        let expected = (0..<50_000).map { "x \($0)" } + (50_000..<100_000).map { "y \($0)" }
        #expect((before + after).map(String.init) == expected)
        #expect(before.count >= 5_000 && !after.isEmpty)
        #expect(!result.stderr.contains("warning"), "\(result.stderr)")
    }

    static func request(_ method: String, _ address: String, _ path: String) async -> (status: Int, body: String)? {
        await Task.detached { httpRequest(method, address, path) }.value
    }

    /// A reload to a file with errors, to one that no longer parses, to a
    /// path the API does not know, or with GET: each a clear answer and a
    /// logged reason, the pipeline unharmed; then a good one applies.
    @Test func aBrokenReloadLeavesThePipelineRunning() async throws {
        let directory = try makeTemporaryDirectory()
        let file = directory + "/pipeline.yaml"
        func pipeline(rate: Int, extra: String = "", api: String = "127.0.0.1:0") throws {
            try write(
                """
                data_dir: \(directory)/data
                api: { address: "\(api)" }
                sources:
                  demo: { type: demo_logs, count: 0, rate: \(rate), hosts: 2 }
                sinks:
                  out: { type: file, inputs: [demo], path: "\(directory)/out/{host}.log"\(extra) }
                """,
                to: file)
        }
        try pipeline(rate: 500)
        let running = try CLI.Running(["run", file])
        let address = try await APIEndpointTests.apiAddress(running)
        try await eventually { await Self.request("GET", address, "/ready")?.status == 200 }
        #expect(running.stderr.contains("POST /reload"))

        // An unknown option: 422 naming it, logged, counted; still ready.
        try pipeline(rate: 500, extra: ", paht: x")
        let invalid = try #require(await Self.request("POST", address, "/reload"))
        #expect(invalid.status == 422)
        #expect(invalid.body.contains("paht"), "\(invalid.body)")
        #expect(invalid.body.contains("keeps running unchanged"))
        #expect(running.stderr.contains("reload failed: \(file) has 1 error(s); the pipeline keeps running unchanged"))

        // A file that no longer parses, by SIGHUP: logged and counted the same.
        try write("sources: [\n", to: file)
        running.signal(SIGHUP)
        try await eventually { running.stderr.components(separatedBy: "reload failed").count == 3 }

        // Mistakes of the caller.
        #expect(await Self.request("POST", address, "/reloads")?.status == 404)
        #expect(await Self.request("GET", address, "/reload")?.status == 405)

        let delivered = { (text: String) -> Int in
            let line = text.split(separator: "\n").first {
                $0.hasPrefix(#"logpipe_records_delivered_total{stage="out"}"#)
            }
            return line.flatMap { Int($0.split(separator: " ").last ?? "") } ?? 0
        }
        let metrics = try #require(await Self.request("GET", address, "/metrics")?.body)
        try await eventually {
            let now = await Self.request("GET", address, "/metrics")?.body ?? ""
            return now.contains(#"logpipe_reloads_total{result="failed"} 2"#) && delivered(now) > delivered(metrics)
        }
        #expect(await Self.request("GET", address, "/ready")?.status == 200)

        // A good file: the source is swapped, the sink keeps running; the
        // API stays where it is until a restart, and the answer says so.
        try pipeline(rate: 1000, api: "127.0.0.1:9")
        let applied = try #require(await Self.request("POST", address, "/reload"))
        #expect(applied.status == 200, "\(applied.body)")
        #expect(applied.body.contains(#""changed":["demo"]"#), "\(applied.body)")
        #expect(applied.body.contains(#""unchanged":["out"]"#))
        #expect(applied.body.contains("api.address changes at the next restart"))
        try await eventually {
            await Self.request("GET", address, "/metrics")?.body.contains(#"logpipe_reloads_total{result="applied"} 1"#)
                == true
        }

        running.signal(SIGTERM)
        let result = try await running.wait()
        #expect(result.status == 0, "\(result.stderr)")
    }
}
