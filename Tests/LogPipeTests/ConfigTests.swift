import Foundation
import NIOCore
import Testing

@testable import LogPipe

@Suite struct ConfigTests {
    @Test func interpolation() throws {
        let environment = ["HOST": "web-1", "EMPTY": ""]
        #expect(try Interpolation.apply("logs.${HOST}", environment: environment) == "logs.web-1")
        #expect(try Interpolation.apply("${MISSING:-/var/lib/logpipe}", environment: environment) == "/var/lib/logpipe")
        #expect(try Interpolation.apply("${EMPTY:-fallback}", environment: environment) == "fallback")
        #expect(try Interpolation.apply("${EMPTY}", environment: environment) == "")
        #expect(try Interpolation.apply("price: $$5 and $x", environment: environment) == "price: $5 and $x")
        #expect(throws: Interpolation.Failure.self) { try Interpolation.apply("${MISSING}", environment: environment) }
        #expect(throws: Interpolation.Failure.self) { try Interpolation.apply("${HOST", environment: environment) }
        #expect(throws: Interpolation.Failure.self) { try Interpolation.apply("${1BAD}", environment: environment) }
    }

    /// As in YAML, a plain value that interpolates to nothing is null: the
    /// option is not stated and its default applies. Quoted, it stays an
    /// empty string.
    @Test func emptyPlainInterpolationIsNotStated() throws {
        let registry = StageRegistry.standard()
        func load(_ value: String) -> PipelineLoader.Result {
            PipelineLoader(registry: registry, environment: ["SET": "7"]).load(
                yaml: """
                    edge_capacity: \(value)
                    sources:
                      in: { type: stdin }
                    sinks:
                      out: { type: stdout, inputs: [in] }
                    """)
        }
        #expect(try #require(load("${CAPACITY:-}").pipeline).settings.edgeCapacity == 2)
        #expect(try #require(load("${SET:-}").pipeline).settings.edgeCapacity == 7)
        #expect(load("\"${CAPACITY:-}\"").errors.count == 1)
    }

    @Test func durations() {
        #expect(Units.duration("500ms") == .milliseconds(500))
        #expect(Units.duration("30s") == .seconds(30))
        #expect(Units.duration("5m") == .seconds(300))
        #expect(Units.duration("2h") == .seconds(7200))
        #expect(Units.duration("1d") == .seconds(86400))
        #expect(Units.duration("1h30m") == .seconds(5400))
        #expect(Units.duration("1.5s") == .milliseconds(1500))
        #expect(Units.duration("0") == .zero)
        #expect(Units.duration("10") == nil)
        #expect(Units.duration("10 parsecs") == nil)
        #expect(Units.duration("") == nil)
        #expect(Units.format(.seconds(30)) == "30s")
        #expect(Units.format(.milliseconds(1500)) == "1500ms")
        #expect(Units.format(.seconds(86400)) == "1d")
    }

    @Test func sizes() {
        #expect(Units.size("64KiB") == 65536)
        #expect(Units.size("1MiB") == 1_048_576)
        #expect(Units.size("2GiB") == 2_147_483_648)
        #expect(Units.size("500KB") == 500_000)
        #expect(Units.size("4096") == 4096)
        #expect(Units.size("1.5KiB") == 1536)
        #expect(Units.size("12 parsecs") == nil)
        #expect(Units.size("KiB") == nil)
    }

    @Test func templates() throws {
        var record = Record(
            bytes: ByteBuffer(string: "x"), source: "in", origin: "stdin", host: "web/1", receivedAt: .now())
        record.partition = 3
        record.fields["app"] = "billing"
        let template = try Template("logs.p{partition}.{host}.{app}.{severity} {{literal}}")
        #expect(template.render(record) == "logs.p3.web/1.billing.unknown {literal}")
        #expect(template.render(record, escape: FileSink.escapePathValue) == "logs.p3.web_1.billing.unknown {literal}")
        #expect(template.placeholders == ["partition", "host", "app", "severity"])
        #expect(try Template("/var/log/all.log").isConstant)
        #expect(throws: Template.ParseError.self) { try Template("/tmp/{host.log") }
        #expect(throws: Template.ParseError.self) { try Template("/tmp/{}.log") }
        #expect(throws: Template.ParseError.self) { try Template("/tmp/host}.log") }
        #expect(FileSink.escapePathValue("..") == "_")
        #expect(FileSink.escapePathValue("") == "_")
    }

    @Test func loadsTheIssueExampleWithDefaultsAndOverrides() throws {
        let registry = StageRegistry.standard()
        registry.register(
            .transform("regex", summary: "test stand-in", options: [OptionSpec("include", .string, "")]) { _ in
                PassTransform()
            })
        let yaml = """
            data_dir: ${LOGPIPE_DATA:-/var/lib/logpipe}
            shutdown_timeout: 5s
            sources:
              in:
                type: stdin
            transforms:
              important:
                type: regex
                inputs: [in]
                include: '\\b(ERROR|WARN)\\b'
            sinks:
              out:
                type: file
                inputs: [important]
                path: /tmp/out/{host}.log
            """
        let result = PipelineLoader(registry: registry, environment: [:]).load(
            yaml: yaml, file: "x.yaml", overrides: ["out.fsync=batch", "edge_capacity=9"])
        #expect(result.diagnostics.isEmpty, "\(result.diagnostics)")
        let pipeline = try #require(result.pipeline)
        #expect(pipeline.settings.dataDirectory == "/var/lib/logpipe")
        #expect(pipeline.settings.shutdownTimeout == .seconds(5))
        #expect(pipeline.settings.edgeCapacity == 9)
        #expect(pipeline.nodes.map(\.name) == ["in", "important", "out"])
        #expect(pipeline.nodes.map(\.typeName) == ["stdin", "regex", "file"])
        guard case .sink(let sink) = pipeline.node(named: "out")?.stage, let file = sink as? FileSink else {
            Issue.record("out is not a file sink")
            return
        }
        #expect(file.options.fsync == .batch)
        #expect(file.options.path.text == "/tmp/out/{host}.log")
        #expect(file.options.maxOpenFiles == 256)

        let unknown = PipelineLoader(registry: registry, environment: [:]).load(yaml: yaml, overrides: ["nope.path=1"])
        #expect(unknown.errors.map(\.message) == ["--set 'nope.path=1': no stage named 'nope'"])
    }

    @Test func customStageTypeFromAPipelineFile() async throws {
        let registry = StageRegistry.standard()
        registry.register(.transform("uppercase", summary: "Upper-cases every line.", options: []) { _ in Uppercase() })
        let directory = try temporaryDirectory()
        let yaml = """
            sources:
              demo: { type: demo_logs, count: 300, hosts: 3, format: plain }
            transforms:
              shout: { type: uppercase, inputs: [demo] }
            sinks:
              out: { type: file, inputs: [shout], path: "\(directory)/{host}.log" }
            """
        let pipeline = try #require(PipelineLoader(registry: registry, environment: [:]).load(yaml: yaml).pipeline)
        let summary = try await PipelineRunner(pipeline: pipeline).run()
        #expect(summary.isClean)
        let files = try FileManager.default.contentsOfDirectory(atPath: directory).sorted()
        #expect(files == ["api-01.log", "db-01.prod.example.com.log", "web-01.log"])
        var total = 0
        for file in files {
            let text = try String(contentsOfFile: directory + "/" + file, encoding: .utf8)
            let lines = text.split(separator: "\n")
            total += lines.count
            #expect(lines.allSatisfy { $0 == $0.uppercased() && $0.contains("[\(file.dropLast(4).uppercased())]") })
        }
        #expect(total == 300)
    }

    @Test func registryBuildsStagesFromCode() throws {
        let registry = StageRegistry.standard()
        let stage = try registry.makeStage(
            type: "stdin", kind: .source, name: "in", options: ["max_line_bytes": "64KiB", "strip_cr": "true"])
        guard case .source(let source) = stage, let stdin = source as? StdinSource else {
            Issue.record("not a stdin source")
            return
        }
        #expect(stdin.options.maxLineBytes == 65536)
        #expect(stdin.options.stripCarriageReturn)
        #expect(throws: PipelineFileError.self) {
            try registry.makeStage(type: "stdin", kind: .source, name: "in", options: ["max_lines": "1"])
        }
        #expect(throws: PipelineFileError.self) { try registry.makeStage(type: "nope", kind: .source, name: "x") }
    }
}

/// Each broken pipeline file says what it must produce in `# expect:` lines:
/// `# expect: LINE:COLUMN: message prefix`. The loader must report exactly
/// those errors and warnings, at those positions.
@Suite struct BrokenPipelineFileTests {
    static let files: [String] = {
        let directory = fixturesDirectory + "/broken"
        return ((try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []).filter {
            $0.hasSuffix(".yaml")
        }.sorted()
    }()

    @Test func thereAreBrokenFiles() {
        #expect(Self.files.count >= 10)
    }

    @Test(arguments: files)
    func reportsEachProblemWithLineAndColumn(file: String) throws {
        let path = fixturesDirectory + "/broken/" + file
        let text = try String(contentsOfFile: path, encoding: .utf8)
        let expected = text.split(separator: "\n").compactMap { line -> String? in
            guard line.hasPrefix("# expect: ") else { return nil }
            return String(line.dropFirst("# expect: ".count))
        }
        #expect(!expected.isEmpty, "\(file) has no '# expect:' lines")
        let result = PipelineLoader(environment: [:]).load(file: path)
        #expect(result.pipeline == nil)
        let actual = result.diagnostics.map { diagnostic in
            let location = diagnostic.location.map { "\($0.line):\($0.column): " } ?? "-: "
            #expect(diagnostic.location == nil || diagnostic.location?.file == path)
            #expect(diagnostic.hint != nil, "every diagnostic carries a hint: \(diagnostic)")
            return location + diagnostic.message
        }
        #expect(actual.count == expected.count, "\(file): got\n\(actual.joined(separator: "\n"))")
        for expectation in expected {
            #expect(
                actual.contains { $0.hasPrefix(expectation) },
                "\(file): expected '\(expectation)', got\n\(actual.joined(separator: "\n"))")
        }
    }
}
