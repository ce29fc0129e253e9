import NIOCore
import Testing

@testable import LogPipe

@Suite struct SeverityParserTests {
    static let cases: [(String, Severity?)] = [
        // syslog PRI, RFC 3164 and RFC 5424
        ("<11>Nov 26 10:00:00 web-01 sshd[12]: Accepted publickey", .error),
        ("<134>1 2026-11-26T10:00:00.026Z db-03 app8 4277 ID56 - INFO text", .info),
        ("<0>Nov 26 10:00:00 host kernel: panic", .emergency),
        ("<191>1 2026-11-26T10:00:00Z h a - - - x", .debug),
        // JSON: top-level keys only, any of the level keys, names or numbers
        (#"{"ts":"2026","level":"error","msg":"x"}"#, .error),
        (#"{"ts":"2026","level":"WARN","host":"h"}"#, .warning),
        (#"{"severity":"Critical"}"#, .critical),
        (#"{"lvl":"dbg?","x":1}"#, nil),
        (#"{"ctx":{"level":"debug","deep":[{"level":"info"}]},"level":"fatal"}"#, .critical),
        (#"{"msg":"ERROR in body","ctx":{"level":"debug"}}"#, nil),
        (#"{"msg":"he said \"level\":\"error\"","level":"info"}"#, .info),
        (#"{"level":50,"msg":"pino"}"#, .error),
        (#"{"level":30}"#, .info),
        (#"{"LogLevel" : "trace"}"#, .trace),
        (#"  {"level":"notice"}"#, .notice),
        // logfmt
        ("ts=2026-11-26T10:00:00Z level=warn host=web-01 msg=\"x\"", .warning),
        ("ts=1 msg=\"level=error inside\" level=info", .info),
        ("time=1 lvl=ERR caller=x.go:1", .error),
        ("ts=1 host=h msg=x", nil),
        // plain words, as tokens, first one wins
        ("2026-11-26T10:00:00.004Z ERROR [worker-3] c.a.err.Svc - failed", .error),
        ("2026-11-26 10:00:00 [WARNING] disk 91% full", .warning),
        ("INFO config reloaded: log level set to WARN (was INFO)", .info),
        ("job finished: processed=1 ERRORS=0 skipped=2", nil),
        ("health check ok error_count=0 NO_ERROR", nil),
        (#"10.0.0.1 - - [26/Nov/2026:10:00:00 +0000] "GET /api/error HTTP/1.1" 500 12"#, nil),
        ("debug: cache lookup", .debug),
        ("Fatal: out of memory", .critical),
        ("[crit] upstream gone", .critical),
        ("a line with no level at all", nil),
        ("", nil),
    ]

    @Test(arguments: cases)
    func recognises(line: String, expected: Severity?) {
        #expect(Array(line.utf8).withUnsafeBytes { SeverityParser.parse($0) } == expected, "\(line)")
    }

    @Test func plainWordsOnlyInTheFirstPartOfTheLine() {
        let line = String(repeating: "x ", count: 200) + "ERROR"
        #expect(Array(line.utf8).withUnsafeBytes { SeverityParser.parse($0, searchLimit: 256) } == nil)
        #expect(Array(line.utf8).withUnsafeBytes { SeverityParser.parse($0, searchLimit: 1024) } == .error)
    }

    @Test(arguments: [
        ("\tat com.acme.db.Pool.acquire(Pool.java:814)", true),
        ("    at Object.<anonymous> (/app/server.js:12:5)", true),
        ("Caused by: java.net.SocketTimeoutException: Read timed out", true),
        ("\t... 12 more", true),
        ("java.lang.IllegalStateException: request 4 failed", true),
        ("  File \"/app/x.py\", line 3, in <module>", true),
        ("at the start is not a frame", false),
        ("ERROR something", false),
        ("IllegalStateException: no package", false),
    ])
    func continuations(line: String, expected: Bool) {
        #expect(Array(line.utf8).withUnsafeBytes { SeverityParser.isContinuation($0) } == expected, "\(line)")
    }
}

@Suite struct SeverityFilterTests {
    func run(_ options: SeverityTransform.Options, _ lines: [String]) async throws -> [Record] {
        let (stream, continuation) = AsyncStream.makeStream(of: String.self)
        for line in lines { continuation.yield(line) }
        continuation.finish()
        let collected = LockedBox<[Record]>([])
        var pipeline = Pipeline()
        try pipeline.add("in", source: AsyncSequenceSource(lines: stream))
        try pipeline.add("level", transform: SeverityTransform(options: options), inputs: ["in"])
        try pipeline.add("out", sink: RecordCollector(collected: collected), inputs: ["level"])
        let summary = try await PipelineRunner(pipeline: pipeline).run()
        #expect(summary.isClean)
        return collected.withLock { $0 }
    }

    static let trace = [
        "2026-11-26 ERROR [w] request failed",
        "java.lang.IllegalStateException: request 4 failed",
        "\tat com.acme.db.Pool.acquire(Pool.java:814)",
        "Caused by: java.net.SocketTimeoutException: Read timed out",
        "2026-11-26 DEBUG [w] cache miss",
        "\tat com.acme.Cache.get(Cache.java:1)",
        "no level here",
    ]

    @Test func atLeastWarningKeepsUnknownByDefault() async throws {
        var options = SeverityTransform.Options()
        options.atLeast = .warning
        let kept = try await run(options, Self.trace)
        #expect(
            kept.map(\.text) == [
                Self.trace[0], Self.trace[1], Self.trace[2], Self.trace[3], Self.trace[5], Self.trace[6],
            ])
        #expect(kept[0].severity == .error)
        #expect(kept[1].severity == nil)
    }

    @Test func continuationsInheritTheirRecordsLevel() async throws {
        var options = SeverityTransform.Options()
        options.atLeast = .warning
        options.inheritContinuations = true
        options.unknown = .drop
        let kept = try await run(options, Self.trace)
        #expect(kept.map(\.text) == Array(Self.trace[0...3]))
        #expect(kept.allSatisfy { $0.severity == .error })
    }

    @Test func levelSetAndTaggingOnly() async throws {
        var options = SeverityTransform.Options()
        options.levels = [.debug, .info]
        let kept = try await run(options, ["INFO a", "ERROR b", "DEBUG c", "what"])
        #expect(kept.map(\.text) == ["INFO a", "DEBUG c", "what"])
        let tagged = try await run(SeverityTransform.Options(), ["INFO a", "ERROR b"])
        #expect(tagged.map(\.severity) == [.info, .error])
    }

    @Test func pipelineFileOptions() {
        let yaml = """
            sources:
              in: { type: stdin }
            transforms:
              level: { type: severity, inputs: [in], at_least: warn, levels: [info] }
              other: { type: severity, inputs: [level], levels: [info, loud] }
            sinks:
              out: { type: stdout, inputs: [other] }
            """
        let result = PipelineLoader(environment: [:]).load(yaml: yaml, file: "p.yaml")
        #expect(
            result.errors.map(\.message).sorted() == [
                "stage 'level': give either at_least or levels, not both",
                "stage 'other': 'loud' is not a level",
            ])
    }
}
