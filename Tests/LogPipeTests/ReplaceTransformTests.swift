import NIOCore
import Testing

@testable import LogPipe

@Suite struct ReplaceTransformTests {
    /// A pipeline file whose `replace` stage `r` has `options`.
    func yaml(_ options: String, sink: String = "collect") -> String {
        """
        sources:
          in: { type: stdin }
        transforms:
          r: { type: replace, inputs: [in], \(options) }
        sinks:
          out: { type: \(sink), inputs: [r] }
        """
    }

    /// Runs `lines` through the `replace` stage.
    func run(_ options: String, lines: [String]) async throws -> (out: [String], summary: RunSummary) {
        let (records, summary) = try await runWithLines(yaml(options), lines: lines)
        return (records.map(\.text), summary)
    }

    func errors(_ options: String) -> [String] {
        PipelineLoader(environment: [:]).load(yaml: yaml(options, sink: "stdout")).diagnostics.map(\.description)
    }

    @Test func groupsAndNamedGroupsAndEveryMatch() async throws {
        let (out, summary) = try await run(
            #"pattern: 'password=(?<secret>\S+)', with: 'password=*** (was $secret in $${1})'"#,
            lines: ["login password=hunter2 ok password=x", "no secret here"])
        #expect(
            out == [
                "login password=*** (was hunter2 in hunter2) ok password=*** (was x in x)", "no secret here",
            ])
        #expect(summary.progress.stages.first { $0.name == "r" }?.counters["replacements"] == 1)
    }

    @Test func onlyTheFirstMatchAndRemovingIt() async throws {
        let first = try await run(#"pattern: '\d+', with: 'N', all: false"#, lines: ["a1 b22 c333"])
        #expect(first.out == ["aN b22 c333"])
        let removed = try await run(#"pattern: ' ?DEBUG', with: '', case_insensitive: true"#, lines: ["x debug y"])
        #expect(removed.out == ["x y"])
    }

    /// A result longer than the scratch buffer grows it (PCRE2 reports the
    /// length it needs); a dollar sign is `$$$$` in a pipeline file (`$$`
    /// once the file's `${VAR}` interpolation is done, `$` for PCRE2).
    @Test func longResultsAndDollars() async throws {
        let line = String(repeating: "a", count: 5000)
        let (out, _) = try await run(#"pattern: 'a', with: '$$$$$$$$'"#, lines: [line])
        #expect(out == [String(repeating: "$$", count: 5000)])
    }

    @Test func badPatternsAndReplacementsAreErrorsWithHints() {
        #expect(errors(#"pattern: 'a(b', with: x"#).contains { $0.contains("cannot compile 'a(b'") })
        #expect(
            errors(#"pattern: 'a(b)', with: '$2'"#).contains { $0.contains("refers to group 2, but the pattern has 1") }
        )
        #expect(errors(#"pattern: 'a', with: '$who'"#).contains { $0.contains("group named 'who'") })
        #expect(errors(#"pattern: 'a', with: 'cost $'"#).contains { $0.contains("lone '$'") })
        #expect(errors(#"with: x"#).contains { $0.contains("pattern") })
    }
}
