import NIOCore
import Testing

@testable import LogPipe

@Suite struct PCRE2RegexTests {
    func outcome(_ pattern: String, _ subject: [UInt8], options: PCRE2Regex.Options = .init()) throws
        -> PCRE2Matcher.Outcome
    {
        let matcher = try PCRE2Regex(pattern, options: options).makeMatcher()
        return subject.withUnsafeBytes { matcher.match($0) }
    }

    @Test func compilesWithJITAndMatchesBytes() throws {
        let regex = try PCRE2Regex(#"\b(ERROR|WARN(ING)?)\b"#)
        #expect(regex.isJIT)
        #expect(try outcome(#"\b(ERROR|WARN(ING)?)\b"#, Array("x ERROR: y".utf8)) == .match)
        #expect(try outcome(#"\b(ERROR|WARN(ING)?)\b"#, Array("x ERRORS=0 NO_ERROR".utf8)) == .noMatch)
        #expect(try outcome("^$", []) == .match)
    }

    @Test func compileErrorsCarryMessageAndOffset() {
        #expect {
            _ = try PCRE2Regex("abc(def")
        } throws: { error in
            guard let error = error as? RegexCompileError else { return false }
            return error.message.contains("missing closing parenthesis") && error.offset == 7
        }
    }

    /// Byte mode: invalid UTF-8 is just bytes. UTF mode with
    /// PCRE2_MATCH_INVALID_UTF: invalid sequences never match a character,
    /// but the rest of the line still matches, and nothing fails.
    @Test func invalidUTF8InBothModes() throws {
        let line: [UInt8] = Array("user=M".utf8) + [0xFC] + Array("ller ERROR".utf8)
        #expect(try outcome("M.ller", line) == .match)
        #expect(try outcome(#"\bERROR\b"#, line) == .match)
        var utf = PCRE2Regex.Options()
        utf.utf = true
        #expect(try outcome("M.ller", line, options: utf) == .noMatch)
        #expect(try outcome(#"\bERROR\b"#, line, options: utf) == .match)
        #expect(try outcome("ü", Array("Müller".utf8), options: utf) == .match)
        #expect(try outcome("^.{6}$", Array("Müller".utf8), options: utf) == .match)
        #expect(try outcome("^.{6}$", Array("Müller".utf8)) == .noMatch)  // 7 bytes
    }

    @Test func caseInsensitive() throws {
        var options = PCRE2Regex.Options()
        options.caseInsensitive = true
        #expect(try outcome("error", Array("An ERROR".utf8), options: options) == .match)
        #expect(try outcome("error", Array("An ERROR".utf8)) == .noMatch)
    }

    @Test func namedCaptures() throws {
        let regex = try PCRE2Regex(#"^(?<host>\S+) (?<app>\w+)(?:\[(?<pid>\d+)\])?:"#)
        #expect(regex.namedGroups.map(\.name) == ["host", "app", "pid"])
        let matcher = regex.makeMatcher()
        let line = Array("web-01 nginx: started".utf8)
        let captures = line.withUnsafeBytes { bytes -> [String: String] in
            guard matcher.match(bytes) == .match else { return [:] }
            return Dictionary(
                uniqueKeysWithValues: matcher.namedCaptures(in: bytes).map {
                    ($0.name, String(decoding: bytes[$0.range], as: UTF8.self))
                })
        }
        #expect(captures == ["host": "web-01", "app": "nginx"])  // pid did not take part
    }

    @Test func catastrophicPatternHitsTheMatchLimit() throws {
        var options = PCRE2Regex.Options()
        options.matchLimit = 10_000
        let subject = Array(repeating: UInt8(ascii: "a"), count: 40) + [UInt8(ascii: "!")]
        #expect(try outcome("^(a+)+$", subject, options: options) == .limitExceeded)
    }
}

@Suite struct RegexFilterTests {
    func run(_ yaml: String, lines: [String]) async throws -> (kept: [Record], summary: RunSummary) {
        let (records, summary) = try await runWithLines(yaml, lines: lines)
        return (records, summary)
    }

    static func yaml(_ regexOptions: String) -> String {
        """
        sources:
          in: { type: stdin }
        transforms:
          re:
            type: regex
            inputs: [in]
        \(regexOptions.split(separator: "\n").map { "    " + $0 }.joined(separator: "\n"))
        sinks:
          out: { type: collect, inputs: [re] }
        """
    }

    @Test func includeAnyOfAndExclude() async throws {
        let lines = ["a ERROR x", "b WARN y", "c INFO z", "d ERROR healthz", "e FATAL"]
        let (kept, summary) = try await run(
            Self.yaml("include: ['\\bERROR\\b', '\\bWARN\\b', '\\bFATAL\\b']\nexclude: healthz"), lines: lines)
        #expect(kept.map(\.text) == ["a ERROR x", "b WARN y", "e FATAL"])
        #expect(summary.isClean)
        #expect(summary.progress.acknowledged == 5)
        let excludeOnly = try await run(Self.yaml("exclude: [INFO, healthz]"), lines: lines)
        #expect(excludeOnly.kept.map(\.text) == ["a ERROR x", "b WARN y", "e FATAL"])
    }

    @Test func extractSetsFieldsAndHost() async throws {
        let (kept, _) = try await run(
            Self.yaml("extract: '^(?<host>\\S+) (?<app>[a-z]+)\\[(?<pid>\\d+)\\]'\ncase_insensitive: true"),
            lines: ["web-01 NGINX[12]: up", "no match here"])
        #expect(kept.count == 2)
        #expect(kept[0].fields == ["host": "web-01", "app": "NGINX", "pid": "12"])
        #expect(kept[0].host == "web-01")
        #expect(kept[1].fields.isEmpty)
        #expect(kept[1].host == "local")
    }

    @Test func matchOnAField() async throws {
        let yaml = """
            sources:
              in: { type: stdin }
            transforms:
              parse: { type: regex, inputs: [in], extract: '^(?<app>\\w+):' }
              only_billing: { type: regex, inputs: [parse], field: app, include: '^billing$' }
            sinks:
              out: { type: collect, inputs: [only_billing] }
            """
        let filtered = try await run(yaml, lines: ["billing: paid", "auth: ok", "no field"])
        #expect(filtered.kept.map(\.text) == ["billing: paid"])
    }

    @Test(arguments: [("keep", 1, false), ("drop", 0, false), ("fail", 0, true)])
    func matchLimitPolicy(policy: String, kept expectedKept: Int, fails: Bool) async throws {
        let line = String(repeating: "a", count: 40) + "!"
        let (kept, summary) = try await run(
            Self.yaml("include: '^(a+)+$'\nmatch_limit: 10000\non_limit: \(policy)"), lines: [line, "b"])
        #expect(kept.count == expectedKept)
        #expect((summary.failure != nil) == fails)
        if fails {
            #expect("\(summary.failure!)".contains("hit its match limit"))
        } else {
            #expect(summary.progress.stages.first { $0.name == "re" }?.counters["match_limit_hits"] == 1)
        }
    }

    @Test func badPatternsAreReportedAtTheirListItem() throws {
        let yaml = """
            sources:
              in: { type: stdin }
            transforms:
              re:
                type: regex
                inputs: [in]
                include:
                  - 'ok'
                  - 'broken(('
            sinks:
              out: { type: stdout, inputs: [re] }
            """
        let result = PipelineLoader(environment: [:]).load(yaml: yaml, file: "p.yaml")
        #expect(result.errors.count == 1)
        let error = try #require(result.errors.first)
        #expect(error.location == SourceLocation(file: "p.yaml", line: 9, column: 9))
        #expect(error.message.contains("cannot compile 'broken((': missing closing parenthesis at offset 8"))
    }

    @Test func aStageWithoutPatternsIsAnError() {
        let result = PipelineLoader(environment: [:]).load(
            yaml: Self.yaml("case_insensitive: true").replacingOccurrences(of: "collect", with: "stdout"))
        #expect(
            result.errors.map(\.message) == [
                "stage 're': a regex stage needs at least one of include, exclude or extract"
            ])
    }
}
