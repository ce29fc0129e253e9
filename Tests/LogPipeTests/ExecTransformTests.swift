import Foundation
import NIOCore
import Testing

@testable import LogPipe

/// The `exec` transform with real child processes (sh, sed, cat). Each
/// answers a line as soon as it reads it: Debian's awk (mawk) waits for
/// more input first unless given `-W interactive`, which a plugin must not.
@Suite struct ExecTransformTests {
    func yaml(_ options: String) -> String {
        """
        sources:
          in: { type: stdin }
        transforms:
          x: { type: exec, inputs: [in], \(options) }
        sinks:
          out: { type: collect, inputs: [x] }
        """
    }

    func run(_ options: String, lines: [String]) async throws -> (out: [String], summary: RunSummary) {
        let (records, summary) = try await runWithLines(yaml(options), lines: lines)
        return (records.map(\.text), summary)
    }

    func counter(_ summary: RunSummary, _ name: String) -> Int {
        summary.progress.stages.first { $0.name == "x" }?.counters[name] ?? 0
    }

    /// Every line comes back in order; an empty answer drops the record,
    /// acknowledged (the run is clean).
    @Test func answersReplaceLinesAndAnEmptyAnswerDrops() async throws {
        let lines = (0..<20_000).map { $0 % 10 == 0 ? "drop \($0)" : "line \($0)" }
        let (out, summary) = try await run(
            #"command: [sed, -u, -e, 's/^drop.*//', -e, 's/^line/LINE/']"#, lines: lines)
        #expect(out == lines.filter { !$0.hasPrefix("drop") }.map { "LINE" + $0.dropFirst(4) })
        #expect(summary.isClean)
    }

    /// A child that exits after 1,000 lines is restarted each time; the
    /// records it had not answered are sent to the next one: nothing lost,
    /// nothing doubled, the order kept.
    @Test func aChildThatExitsMidStreamIsRestartedAndNothingIsLost() async throws {
        let lines = (0..<5_000).map { "line \($0)" }
        let (out, summary) = try await run(
            #"command: [sh, -c, 'n=0; while IFS= read -r l; do printf "%s\n" "$l"; n=$((n+1)); [ $n -lt 1000 ] || exit 0; done'], max_in_flight: 300"#,
            lines: lines)
        #expect(out == lines)
        #expect(summary.isClean)
        #expect(counter(summary, "restarts") >= 4)
        #expect(counter(summary, "resent_records") > 0)
    }

    /// A child that hangs is killed after `timeout` and its records go to
    /// the next one (here the second child answers).
    @Test func aHungChildIsKilledAndTheNextOneAnswers() async throws {
        let marker = try temporaryDirectory() + "/started"
        let script = "if [ -e '\(marker)' ]; then exec cat; else touch '\(marker)'; sleep 600; fi"
        let (out, summary) = try await run(
            "command: [sh, -c, \"\(script)\"], timeout: 2s", lines: ["a", "b", "c"])
        #expect(out == ["a", "b", "c"])
        #expect(counter(summary, "timeouts") == 1)
        #expect(counter(summary, "restarts") == 1)
    }

    /// A record the child always dies on is given up after `max_attempts`:
    /// with `on_failure: drop` the others pass; with `fail` the stage fails
    /// and says why.
    @Test func aPoisonRecordFollowsOnFailure() async throws {
        let lines = ["ok 1", "poison", "ok 2"]
        let options =
            #"command: [sh, -c, 'while IFS= read -r l; do [ "$l" != poison ] || exit 1; printf "%s\n" "$l"; done'], max_attempts: 2"#
        let (out, summary) = try await run(options + ", on_failure: drop", lines: lines)
        #expect(out == ["ok 1", "ok 2"])
        #expect(counter(summary, "failed_records") == 1)
        #expect(summary.failure == nil && summary.progress.unacknowledged == 0)

        let (_, failed) = try await run(options, lines: lines)
        let failure = try #require(failed.failure)
        #expect("\(failure)".contains("stage 'x' failed"))
        #expect("\(failure)".contains("without answering the line 'poison'"), "\(failure)")
    }

    /// More answer lines than lines sent break the lines protocol: the stage
    /// fails with an error naming it.
    @Test func moreAnswersThanLinesIsAnError() async throws {
        let (_, summary) = try await run("command: [sed, -u, p]", lines: ["a", "b"])
        let failure = try #require(summary.failure)
        #expect("\(failure)".contains("stage 'x' failed"))
        #expect("\(failure)".contains("more line(s) than it was sent"), "\(failure)")
    }

    /// A command that does not exist fails at start, saying what to change.
    @Test func aMissingCommandIsAClearError() async throws {
        let (_, summary) = try await run("command: [no-such-plugin-xyz]", lines: ["a"])
        let failure = try #require(summary.failure)
        #expect("\(failure)".contains("command 'no-such-plugin-xyz' was not found on PATH"), "\(failure)")
        let script = try temporaryDirectory() + "/plugin.py"
        try "print('hi')\n".write(toFile: script, atomically: true, encoding: .utf8)  // mode 644
        let (_, notExecutable) = try await run("command: ['\(script)']", lines: ["a"])
        #expect("\(try #require(notExecutable.failure))".contains("cannot start the child"))
    }

    /// env and working_directory reach the child; a bad env entry is a
    /// validation error at the option.
    @Test func environmentAndWorkingDirectory() async throws {
        let directory = try temporaryDirectory()
        let (out, _) = try await run(
            "command: [sh, -c, 'while read l; do echo \"$GREETING $l $(pwd)\"; done'], env: [\"GREETING=hi\"], working_directory: '\(directory)'",
            lines: ["there"])
        let resolved = URL(fileURLWithPath: directory).resolvingSymlinksInPath().path
        #expect(out == ["hi there \(resolved)"] || out == ["hi there \(directory)"], "\(out)")
        let diagnostics = PipelineLoader(environment: [:]).load(
            yaml: yaml("command: [cat], env: [NOEQUALS]").replacingOccurrences(of: "collect", with: "stdout")
        ).diagnostics.map(\.description)
        #expect(diagnostics.contains { $0.contains("entry 'NOEQUALS' is not NAME=value") }, "\(diagnostics)")
    }

    /// The Python plugin that ships in examples/plugins does what docs/plugins.md says.
    @Test func theExamplePythonPluginRedactsAndDrops() async throws {
        let script = fixturesDirectory + "/../../examples/plugins/redact.py"
        let (out, summary) = try await run(
            "command: [python3, -u, '\(script)']",
            lines: ["user bob@example.com logged in", "GET /healthz 200", "Authorization: Bearer abc.def-123"])
        #expect(out == ["user <email> logged in", "Authorization: Bearer <token>"])
        #expect(summary.isClean)
    }

    /// A child that exits at once, every time, is not restarted forever:
    /// after `max_attempts` children the stage fails, quoting the line.
    @Test func aChildThatExitsAtOnceFailsTheStageAfterMaxAttempts() async throws {
        let (_, summary) = try await run("command: [\"false\"], max_attempts: 3", lines: ["first", "second"])
        let failure = try #require(summary.failure)
        #expect("\(failure)".contains("failed 3 times without answering the line 'first'"), "\(failure)")
        #expect(counter(summary, "restarts") == 2)
    }
}
