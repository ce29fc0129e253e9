import Foundation
import Synchronization
import Testing

@Suite struct RunCommandTests {
    /// Lines a shipper meets in the wild: CRLF, invalid UTF-8, empty lines,
    /// long lines, multi-byte text.
    static func awkwardInput(lines: Int, seed: UInt64) -> Data {
        var state = seed
        func next() -> UInt64 {
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            return state >> 33
        }
        var data = Data()
        for index in 0..<lines {
            switch next() % 20 {
            case 0: data.append(contentsOf: Array("crlf line \(index)\r\n".utf8))
            case 1: data.append(contentsOf: [0x62, 0x61, 0x64, 0xFF, 0xC3, 0x28, 0x0A])  // invalid UTF-8
            case 2: data.append(0x0A)  // empty line
            case 3: data.append(contentsOf: Array("zoë 李雷 müller \(index)\n".utf8))
            default:
                let length = next() % 200
                data.append(contentsOf: Array("<13>Nov 26 10:00:00 web-01 app[1]: line \(index) ".utf8))
                data.append(contentsOf: (0..<length).map { _ in UInt8(0x61 + next() % 26) })
                data.append(0x0A)
            }
            if index % 20_000 == 0 {
                data.append(contentsOf: [UInt8](repeating: 0x4C, count: 700_000))  // long, under 1 MiB
                data.append(0x0A)
            }
        }
        return data
    }

    func stdinToFilePipeline(_ directory: String, extra: String = "") throws -> String {
        let path = directory + "/pipeline.yaml"
        try write(
            """
            sources:
              in:
                type: stdin
            \(extra)
            sinks:
              out:
                type: file
                inputs: [in]
                path: \(directory)/out/all.log
            """,
            to: path
        )
        return path
    }

    @Test func stdinToFileReproducesInputByteForByte() async throws {
        let directory = try makeTemporaryDirectory()
        let input = Self.awkwardInput(lines: 200_000, seed: 42)
        try input.write(to: URL(fileURLWithPath: directory + "/input.log"))
        let result = try await CLI.run(
            ["run", try stdinToFilePipeline(directory)], stdinPath: directory + "/input.log")
        #expect(result.status == 0, "\(result.stderr)")
        let output = try Data(contentsOf: URL(fileURLWithPath: directory + "/out/all.log"))
        #expect(output.count == input.count)
        #expect(output == input)
        #expect(result.stderr.contains("finished"))
        #expect(result.stderr.contains("unacknowledged=0"))
    }

    @Test func finalLineWithoutNewlineIsKept() async throws {
        let directory = try makeTemporaryDirectory()
        try write("first\r\nsecond\nno newline at end", to: directory + "/input.log")
        let result = try await CLI.run(
            ["run", "--quiet", try stdinToFilePipeline(directory)], stdinPath: directory + "/input.log")
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stderr.isEmpty)
        #expect(
            try String(contentsOfFile: directory + "/out/all.log", encoding: .utf8)
                == "first\r\nsecond\nno newline at end\n")

        let stripped = try await CLI.run(
            [
                "run", "--quiet", "--set", "in.strip_cr=true", "--set", "out.path=\(directory)/stripped.log",
                try stdinToFilePipeline(directory),
            ],
            stdinPath: directory + "/input.log"
        )
        #expect(stripped.status == 0, "\(stripped.stderr)")
        #expect(
            try String(contentsOfFile: directory + "/stripped.log", encoding: .utf8)
                == "first\nsecond\nno newline at end\n")
    }

    @Test(arguments: [
        ("split", ["0123456789", "0123456789", "01234", "short"]), ("truncate", ["0123456789", "short"]),
    ])
    func overlongLinesAreSplitOrTruncatedAndCounted(policy: String, expected: [String]) async throws {
        let directory = try makeTemporaryDirectory()
        try write("0123456789012345678901234\nshort\n", to: directory + "/input.log")
        let result = try await CLI.run(
            [
                "run", "--set", "in.max_line_bytes=10", "--set", "in.oversize=\(policy)",
                try stdinToFilePipeline(directory),
            ],
            stdinPath: directory + "/input.log"
        )
        #expect(result.status == 0, "\(result.stderr)")
        #expect(
            try String(contentsOfFile: directory + "/out/all.log", encoding: .utf8) == expected.joined(separator: "\n")
                + "\n")
        #expect(result.stderr.contains("in.oversize_lines=1"))
        #expect(result.stderr.contains("longer than max_line_bytes"))
    }

    @Test func sigtermDrainsInFlightRecordsAndExitsZero() async throws {
        let directory = try makeTemporaryDirectory()
        let pipeline = directory + "/pipeline.yaml"
        try write(
            """
            sources:
              demo: { type: demo_logs, count: 0, rate: 20000, hosts: 4 }
            sinks:
              out: { type: file, inputs: [demo], path: "\(directory)/out/{host}.log", fsync: batch }
            """,
            to: pipeline
        )
        let running = try CLI.Running(["run", pipeline])
        try await eventually { (try? FileManager.default.contentsOfDirectory(atPath: directory + "/out").count) == 4 }
        try await Task.sleep(for: .milliseconds(500))
        running.signal(SIGTERM)
        let result = try await running.wait(timeout: .seconds(120))
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stderr.contains("stopping: draining in-flight records"))
        // The summary's record count equals what reached the files.
        let summary = try #require(result.stderr.split(separator: "\n").first { $0.contains("finished in") })
        let emitted = Int(summary.split(separator: ": ")[2].split(separator: " ")[0])
        var written = 0
        for file in try FileManager.default.contentsOfDirectory(atPath: directory + "/out") {
            written += try String(contentsOfFile: directory + "/out/" + file, encoding: .utf8).split(separator: "\n")
                .count
        }
        #expect(emitted == written)
        #expect(written > 1000)
        #expect(summary.contains("unacknowledged=0"))
    }

    @Test func shutdownDeadlineWithAStuckSinkExitsNonZero() async throws {
        let directory = try makeTemporaryDirectory()
        // A regular file where the sink needs a directory: writes fail, even as root.
        _ = FileManager.default.createFile(atPath: directory + "/out", contents: Data())
        let pipeline = try stdinToFilePipeline(directory, extra: "shutdown_timeout: 1s")
        let running = try CLI.Running(["run", pipeline], pipeStdin: true)
        running.stdinPipe!.fileHandleForWriting.write(Data("one\ntwo\n".utf8))
        try await eventually { running.stderr.contains("cannot write") }
        running.signal(SIGTERM)
        let result = try await running.wait(timeout: .seconds(120))
        #expect(result.status == 3, "\(result.stderr)")
        #expect(result.stderr.contains("shutdown deadline (1s) passed with 2 record(s) unacknowledged"))
    }

    /// A sink that cannot write holds stdin back: the writer on the pipe
    /// blocks after a bounded amount; once the sink recovers, every byte
    /// arrives exactly once.
    @Test func stuckSinkBlocksTheStdinWriterThenEverythingArrives() async throws {
        let directory = try makeTemporaryDirectory()
        _ = FileManager.default.createFile(atPath: directory + "/out", contents: Data())
        let pipeline = try stdinToFilePipeline(directory, extra: "edge_capacity: 2")
        let running = try CLI.Running(["run", "--set", "out.max_retry_backoff=200ms", pipeline], pipeStdin: true)
        let line = Data((String(repeating: "x", count: 99) + "\n").utf8)
        let chunk = Data((0..<1000).flatMap { _ in line })  // 100 KB
        let chunks = 500  // 50 MB in all
        let written = Atomic<Int>(0)
        let writer = running.stdinPipe!.fileHandleForWriting
        let writerThread = Thread {
            for _ in 0..<chunks {
                writer.write(chunk)
                written.add(chunk.count, ordering: .relaxed)
            }
            try? writer.close()
        }
        writerThread.start()

        // Let the writer run into the full pipe.
        try await eventually { running.stderr.contains("cannot write") }
        var previous = -1
        while written.load(ordering: .relaxed) != previous {
            previous = written.load(ordering: .relaxed)
            try await Task.sleep(for: .milliseconds(500))
        }
        let stalledAt = written.load(ordering: .relaxed)
        // Bounded: pipe buffer + one read buffer + 2 edge slots + a suspended
        // send, each read being at most 256 KiB.
        #expect(stalledAt < 4 * 1024 * 1024, "stdin kept being read while the sink was stuck: \(stalledAt) bytes")

        try FileManager.default.removeItem(atPath: directory + "/out")
        let result = try await running.wait(timeout: .seconds(120))
        #expect(result.status == 0, "\(result.stderr)")
        #expect(written.load(ordering: .relaxed) == chunk.count * chunks)
        let attributes = try FileManager.default.attributesOfItem(atPath: directory + "/out/all.log")
        #expect((attributes[.size] as? Int) == chunk.count * chunks)
        #expect(result.stderr.contains("writing works again"))
    }

    @Test func invalidPipelineStartsNothing() async throws {
        let result = try await CLI.run(["run", CLI.packageRoot + "/Tests/Fixtures/broken/unknown-type.yaml"])
        #expect(result.status == 1)
        #expect(result.stderr.contains("unknown-type.yaml:4:11: error: unknown source type 'stdinn'"))
        #expect(result.stderr.contains("nothing was started"))

        let missing = try await CLI.run(["run", "/nonexistent/pipeline.yaml"])
        #expect(missing.status == 1)
        #expect(missing.stderr.contains("cannot read pipeline file /nonexistent/pipeline.yaml"))
    }

    @Test func shippedPipelinesAreValidAndTheDemoRuns() async throws {
        let pipelines = try FileManager.default.contentsOfDirectory(atPath: CLI.packageRoot + "/pipelines").filter {
            $0.hasSuffix(".yaml")
        }
        #expect(!pipelines.isEmpty)
        let validate = try await CLI.run(
            ["validate"] + pipelines.map { "pipelines/" + $0 }, environment: ["PARTITION": "0"])
        #expect(validate.status == 0, "\(validate.stdout)\(validate.stderr)")

        let directory = try makeTemporaryDirectory()
        let demo = try await CLI.run(
            ["run", "pipelines/demo.yaml"], environment: ["LOGPIPE_OUT": directory, "DEMO_LINES": "2000"])
        #expect(demo.status == 0, "\(demo.stderr)")
        let files = try FileManager.default.contentsOfDirectory(atPath: directory)
        #expect(files.count == 8)
        var total = 0
        for file in files {
            total += try String(contentsOfFile: directory + "/" + file, encoding: .utf8).split(separator: "\n").count
        }
        #expect(total == 2000)
    }

    @Test func embeddingExampleRuns() async throws {
        let result = try await CLI.Running([], executable: CLI.binary("EmbeddingExample")).wait()
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stdout.contains("user alice logged in password=*** from 10.0.0.1"))
        #expect(result.stdout.contains("in-code pipeline: 2 lines, 0 unacknowledged"))
        #expect(result.stdout.contains("pipeline-file run: 200 lines generated, clean: true"))
        #expect(result.stdout.contains("service run: 50 lines, clean: true"))
        let errorLines = result.stdout.split(separator: "\n").filter { $0.hasPrefix("ts=") }
        #expect(!errorLines.isEmpty)
        #expect(errorLines.allSatisfy { $0.contains("level=error") })
    }
}

@Suite struct StageFailureTests {
    /// stdout closed by its reader: the stdout sink fails, the run stops
    /// with exit status 2 and says which stage and why.
    @Test func closedStdoutFailsTheStageWithExitStatus2() async throws {
        let directory = try makeTemporaryDirectory()
        try write(
            """
            sources:
              demo: { type: demo_logs, count: 0 }
            sinks:
              out: { type: stdout, inputs: [demo] }
            """,
            to: directory + "/p.yaml"
        )
        let process = Process()
        process.executableURL = URL(fileURLWithPath: CLI.binary("logpipe"))
        process.arguments = ["run", directory + "/p.yaml"]
        let stdout = Pipe()
        process.standardOutput = stdout
        let stderrPath = directory + "/stderr"
        _ = FileManager.default.createFile(atPath: stderrPath, contents: nil)
        process.standardError = FileHandle(forWritingAtPath: stderrPath)
        try process.run()
        try stdout.fileHandleForReading.close()
        let deadline = ContinuousClock.now + .seconds(30)
        while process.isRunning, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(20)) }
        if process.isRunning { process.terminate() }
        process.waitUntilExit()
        let stderr = try String(contentsOfFile: stderrPath, encoding: .utf8)
        #expect(process.terminationStatus == 2, "\(stderr)")
        #expect(stderr.contains("logpipe: stage 'out' failed: write stdout: Broken pipe"))
    }
}

@Suite struct StatusLineTests {
    func pipeline() throws -> String {
        let directory = try makeTemporaryDirectory()
        try write(
            """
            sources:
              demo: { type: demo_logs, count: 3000, rate: 3000 }
            sinks:
              out: { type: blackhole, inputs: [demo] }
            """,
            to: directory + "/p.yaml"
        )
        return directory + "/p.yaml"
    }

    /// On a terminal, status lines appear while running; elsewhere only when
    /// asked for; the summary always.
    @Test func statusLinesOnATerminalOnly() async throws {
        let path = try pipeline()
        let command = "\(CLI.binary("logpipe")) run --status-interval 0.2 \(path)"
        // `script` gives the command a pseudo-terminal as stdout and stderr.
        let onTerminal = try await CLI.Running(["-qefc", command, "/dev/null"], executable: "/usr/bin/script").wait()
        #expect(onTerminal.status == 0, "\(onTerminal.stdout)")
        let statusLines = onTerminal.stdout.split(whereSeparator: \.isNewline).filter { $0.hasPrefix("logpipe: [") }
        #expect(statusLines.count >= 2, "\(onTerminal.stdout)")
        #expect(
            statusLines.allSatisfy {
                $0.contains("demo[out=") && $0.contains("out[in=") && $0.contains("unacknowledged=")
                    && $0.contains("/s")
            })
        #expect(onTerminal.stdout.contains("logpipe: finished in"))

        // Not on a terminal: only when --status-interval is given, and as
        // log lines (a journal or a file gets them with time and level).
        let piped = try await CLI.run(["run", "--status-interval", "0.2", path])
        #expect(piped.status == 0)
        #expect(!piped.stderr.split(separator: "\n").contains { $0.hasPrefix("logpipe: [") })
        #expect(piped.stderr.contains("info logpipe: [logpipe] ["), "\(piped.stderr)")
        let unasked = try await CLI.run(["run", path])
        #expect(!unasked.stderr.contains("unacknowledged=0;"), "\(unasked.stderr)")
        #expect(piped.stderr.contains("logpipe: finished in"))
        #expect(piped.stderr.contains("3000 records"))
    }
}

@Suite struct FilterPipelineTests {
    static let pattern = #"\b(ERROR|FATAL|CRIT(ICAL)?|WARN(ING)?)\b"#

    /// `stdin → regex → file` selects exactly what pcre2grep selects, byte for
    /// byte, invalid UTF-8 and CRLF lines included.
    @Test func regexFilterMatchesPcre2grep() async throws {
        let pcre2grep = ["/usr/bin/pcre2grep", "/usr/local/bin/pcre2grep", "/opt/homebrew/bin/pcre2grep"].first {
            FileManager.default.isExecutableFile(atPath: $0)
        }
        let grep = try #require(
            pcre2grep, "pcre2grep is needed as the reference (scripts/setup.sh installs pcre2-utils)")
        let directory = try makeTemporaryDirectory()
        var input = RunCommandTests.awkwardInput(lines: 100_000, seed: 7)
        let levels = ["ERROR", "WARN", "WARNING", "FATAL", "CRIT", "CRITICAL", "INFO", "ERRORS=1", "NO_ERROR", "xWARN"]
        for index in 0..<20_000 {
            input.append(contentsOf: Array("line \(index) \(levels[index % levels.count]): done\n".utf8))
            if index % 1000 == 0 { input.append(contentsOf: [0x57, 0x41, 0x52, 0x4E, 0x20, 0xFF, 0xFE, 0x0D, 0x0A]) }  // "WARN \xff\xfe\r\n"
        }
        try input.write(to: URL(fileURLWithPath: directory + "/input.log"))
        let reference = Process()
        reference.executableURL = URL(fileURLWithPath: grep)
        reference.arguments = [Self.pattern, directory + "/input.log"]
        _ = FileManager.default.createFile(atPath: directory + "/expected.log", contents: nil)
        reference.standardOutput = FileHandle(forWritingAtPath: directory + "/expected.log")
        try reference.run()
        while reference.isRunning { try await Task.sleep(for: .milliseconds(10)) }

        let result = try await CLI.run(
            ["run", "pipelines/filter-errors.yaml"], stdinPath: directory + "/input.log",
            environment: ["OUT": directory + "/selected.log"])
        #expect(result.status == 0, "\(result.stderr)")
        let expected = try Data(contentsOf: URL(fileURLWithPath: directory + "/expected.log"))
        let selected = try Data(contentsOf: URL(fileURLWithPath: directory + "/selected.log"))
        #expect(expected.count > 10_000)
        #expect(selected == expected)
    }

    /// demo_logs → severity → partition → file per partition and host: every
    /// kept line is at least a warning, and sits under the partition that
    /// CRC-32(host) mod 4 names.
    @Test func severityAndPartitionThroughTheCLI() async throws {
        let directory = try makeTemporaryDirectory()
        try write(
            """
            sources:
              demo: { type: demo_logs, count: 20000, hosts: 6 }
            transforms:
              important: { type: severity, inputs: [demo], at_least: warning }
              route: { type: partition, inputs: [important], partitions: 4 }
            sinks:
              out: { type: file, inputs: [route], path: "\(directory)/p{partition}/{host}-{severity}.log" }
            """,
            to: directory + "/p.yaml"
        )
        let result = try await CLI.run(["run", directory + "/p.yaml"])
        #expect(result.status == 0, "\(result.stderr)")
        // From Python: zlib.crc32(host) % 4.
        let expectedPartitions = [
            "web-01": 1, "api-01": 0, "db-01.prod.example.com": 1, "cache-01": 3, "worker-01": 2,
            "lb-01.prod.example.com": 1,
        ]
        var total = 0
        for partition in try FileManager.default.contentsOfDirectory(atPath: directory).filter({
            $0.hasPrefix("p") && !$0.hasSuffix(".yaml")
        }) {
            for file in try FileManager.default.contentsOfDirectory(atPath: directory + "/" + partition) {
                let severity = file.split(separator: "-").last!.dropLast(4)
                #expect(["warning", "error"].contains(severity), "\(file)")
                let host = String(file.dropLast(severity.count + 5))
                #expect(expectedPartitions[host].map { "p\($0)" } == partition, "\(host) in \(partition)")
                total += try String(contentsOfFile: directory + "/" + partition + "/" + file, encoding: .utf8).split(
                    separator: "\n"
                ).count
            }
        }
        // demo_logs makes about 10 % warnings and errors.
        #expect(total > 1000 && total < 3500)
        #expect(result.stderr.contains("important[in=20000 out=\(total)]"))
    }
}
